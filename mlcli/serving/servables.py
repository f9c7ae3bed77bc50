"""What `mlcli serve` serves: a run's model on the light path (the Arrow encoder and its core in
ONNX Runtime, `mlcli.inference.light`) or as one compiled TensorFlow function, or the
`serving_default` signature of a SavedModel that `mlcli export` wrote.

TensorFlow is imported (quietly, unless it already is) when a Keras model loads. A run's model is
traced once with a fixed input signature (any number of rows) by `inference.predictor`, so
batches of every size reuse one graph; the server calls it once on `Servable.example()` before
it accepts connections, in the thread that runs every later call. The signature and
`export.json` are `exporting.signature`'s.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mlcli._tensorflow import import_tensorflow
from mlcli.errors import RunError
from mlcli.exporting.digest import DIGEST_KEY, export_digest
from mlcli.exporting.signature import (
    EXPORT_INFO,
    SIGNATURE_KEY,
    ServingSignature,
    read_export_info,
)
from mlcli.features.schema import ColumnSchema
from mlcli.inference.labels import decision_threshold
from mlcli.inference.light import DEFAULT_BATCH_ROWS
from mlcli.preprocessing.inputs import MISSING_VALUES
from mlcli.runs import directory as runs
from mlcli.serving.batching import Columns, ModelCall

# TF Serving numbers model versions; a run directory holds exactly one.
VERSION = "1"
SAVED_MODEL_FILE = "saved_model.pb"


@dataclass
class Servable:
    """A loaded model behind the REST API: its name, signature and compiled call.

    `columns` are the column schemas that the OpenAPI description shows: a run's in full
    (feature types, vocabularies, statistics), an export's feature types only (export.json's);
    `load_seconds` is how long `load_servable` took.
    """

    name: str
    version: str
    signature: ServingSignature
    call: ModelCall
    source: Path
    columns: tuple[ColumnSchema, ...] = ()
    load_seconds: float = 0.0
    inference: str = "tensorflow (a SavedModel export)"  # the `inference` event's message

    def example(self) -> dict[str, np.ndarray]:
        """One row with every value missing: what a warm-up call sends."""
        return _missing_row(self.signature)


def _missing_row(signature: ServingSignature) -> dict[str, np.ndarray]:
    return {
        name: np.array([[MISSING_VALUES[dtype]]], dtype=object if dtype == "string" else dtype)
        for name, dtype in signature.inputs.items()
    }


def load_servable(
    reference: str | Path, *, name: str | None = None, trust_export: bool = False
) -> Servable:
    """A run (directory or name) or a SavedModel export, ready to serve.

    The model is named `name`, else after the run's config (or the export's model name). A
    SavedModel is loaded only when `mlcli export` wrote it and it is unchanged since (see
    `check_export`), or when `trust_export` says the user trusts the folder: loading a
    SavedModel runs its graph. A run's `model.keras` loads in Keras's safe mode.

    Raises:
        RunError: no such run, or an export that is not mlcli's, changed, or does not load.
    """
    start = time.perf_counter()
    export = saved_model_folder(Path(reference))
    if export is not None:
        if not trust_export:
            check_export(export)
        servable = _export_servable(export, name=name)
    else:
        servable = _run_servable(reference, name=name)
    return replace(servable, load_seconds=time.perf_counter() - start)


def _run_servable(reference: str | Path, *, name: str | None) -> Servable:
    from mlcli.inference.choice import keras_predictor, light_choice
    from mlcli.runs.loading import open_run

    loaded = open_run(reference, with_model=False)
    # one ONNX Runtime thread, as TensorFlow's ops are single-threaded here: the event loop
    # needs the other core
    choice = light_choice(loaded.run, loaded.schema, threads=1)
    runner = choice.predictor or keras_predictor(
        loaded.run, loaded.schema, batch_rows=DEFAULT_BATCH_ROWS
    )
    return Servable(
        name=name or loaded.config.name,
        version=VERSION,
        signature=ServingSignature.from_schema(
            loaded.schema, threshold=decision_threshold(saved=loaded.threshold)
        ),
        call=runner.column_call(),
        source=loaded.run.path,
        columns=tuple(loaded.schema.columns),
        inference=choice.describe(),
    )


def inference_before_workers(source: Path) -> str:
    """Writes a run's `core.onnx` once (when it can), before several workers start and each
    loads it; returns the `inference` event's message."""
    from mlcli.inference.choice import light_choice
    from mlcli.runs.loading import open_run

    if saved_model_folder(source) is not None:
        return Servable.inference
    loaded = open_run(source, with_model=False)
    return light_choice(loaded.run, loaded.schema, threads=1).describe()


def saved_model_folder(path: Path) -> Path | None:
    """The SavedModel in `path`: the folder itself, or its highest numbered version.

    `mlcli export --format saved_model --output OUT` writes `OUT/<name>/<version>/`; each of
    those three levels may be given, as TF Serving's `--model_base_path` is the middle one.
    """
    if (path / SAVED_MODEL_FILE).is_file():
        return path
    if not path.is_dir() or (path / runs.MANIFEST).is_file():
        return None
    children = [child for child in path.iterdir() if child.is_dir()]
    versions = [c for c in children if c.name.isdigit() and (c / SAVED_MODEL_FILE).is_file()]
    if versions:
        return max(versions, key=lambda folder: int(folder.name))
    if len(children) == 1:
        return saved_model_folder(children[0])
    return None


def check_export(folder: Path) -> None:
    """Raises `RunError` unless `folder` holds the digest that `mlcli export` recorded.

    A SavedModel's graph is code that TensorFlow runs when it loads the folder: this check
    reads only `export.json` and the files' bytes, and so comes before anything is loaded.
    """
    path = folder / EXPORT_INFO
    try:
        recorded = json.loads(path.read_text(encoding="utf-8")).get(DIGEST_KEY)
    except FileNotFoundError:
        problem = f"it has no {EXPORT_INFO}, so `mlcli export` did not write it"
    except (OSError, ValueError, AttributeError) as error:
        problem = f"its {EXPORT_INFO} does not read ({error})"
    else:
        if not recorded:
            problem = f"its {EXPORT_INFO} records no {DIGEST_KEY!r} (an older or foreign export)"
        elif recorded != export_digest(folder):
            problem = f"its files changed since `mlcli export` wrote it ({DIGEST_KEY} differs)"
        else:
            return
    raise RunError(
        f"{folder}: not served: {problem}; loading a SavedModel runs its graph, so mlcli serves "
        "only its own unchanged exports. If you trust this folder, pass --trust-export "
        "(or export the run again)"
    )


def export_description(folder: Path) -> tuple[ServingSignature, dict[str, Any]]:
    """The signature and the rest of `export.json` beside an exported SavedModel."""
    return read_export_info(folder)


def _export_servable(folder: Path, *, name: str | None) -> Servable:
    tf = import_tensorflow()
    signature, info = read_export_info(folder)
    try:
        saved_model = tf.saved_model.load(str(folder))
        function = saved_model.signatures[SIGNATURE_KEY]
    except (OSError, ValueError, KeyError) as error:
        raise RunError(f"{folder}: the SavedModel does not load: {error}") from error
    keywords = signature.keywords()

    def call(columns: Columns) -> np.ndarray:
        assert saved_model is not None  # the signature's variables live as long as it does
        outputs = function(
            **{
                keywords[column]: tf.constant(columns[column].reshape(-1), dtype=dtype)
                for column, dtype in signature.inputs.items()
            }
        )
        return signature.model_outputs(outputs)

    return Servable(
        name=name or str(info.get("model_name") or folder.parent.name),
        version=str(info.get("version") or folder.name),
        signature=signature,
        call=call,
        source=folder,
        columns=_export_columns(info),
    )


def _export_columns(info: dict[str, Any]) -> tuple[ColumnSchema, ...]:
    """The columns' feature types that export.json records (no training statistics)."""
    features = info.get("features") or []
    return tuple(
        ColumnSchema(name=str(f["name"]), type=str(f["type"]), dtype=str(f["dtype"]))
        for f in features
        if isinstance(f, dict) and {"name", "type", "dtype"} <= f.keys()
    )
