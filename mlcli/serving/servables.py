"""What `mlcli serve` serves: a run's model as one compiled TensorFlow function, or the
`serving_default` signature of a SavedModel that `mlcli export` wrote.

TensorFlow is imported (quietly, unless it already is) when a model loads. A run's model is
traced once with a fixed input signature (any number of rows), so batches of every size reuse
one graph; the server calls it once on `Servable.example()` before it accepts connections, in
the thread that runs every later call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlcli._tensorflow import import_tensorflow
from mlcli.errors import RunError
from mlcli.features.schema import INT_MISSING, TargetSchema
from mlcli.runs import directory as runs
from mlcli.serving.batching import Columns, ModelCall
from mlcli.serving.payloads import SIGNATURE_NAME, Signature

# TF Serving numbers model versions; a run directory holds exactly one.
VERSION = "1"
SAVED_MODEL_FILE = "saved_model.pb"
EXPORT_INFO = "export.json"  # written beside the SavedModel by `mlcli export`


@dataclass
class Servable:
    """A loaded model behind the REST API: its name, signature and compiled call."""

    name: str
    version: str
    signature: Signature
    call: ModelCall
    source: Path

    def example(self) -> dict[str, np.ndarray]:
        """One row with every value missing: what a warm-up call sends."""
        return _missing_row(self.signature)


def compiled_call(model: Any, signature: Signature) -> ModelCall:
    """The model as one traced `tf.function` over numpy columns, returning numpy outputs.

    The function takes one (rows, columns) tensor per dtype and slices the model's named
    (rows, 1) inputs out of them inside the graph: passing a dozen small tensors costs more
    in Python than running the whole model on a few rows.
    """
    tf = import_tensorflow()
    groups: dict[str, list[str]] = {}
    for name, dtype in signature.inputs.items():
        groups.setdefault(dtype, []).append(name)
    packing = list(groups.items())
    specs = [tf.TensorSpec(shape=(None, len(names)), dtype=dtype) for dtype, names in packing]

    def unpack_and_call(*packed: Any) -> Any:
        inputs = {}
        for (_, names), tensor in zip(packing, packed, strict=True):
            for index, name in enumerate(names):
                inputs[name] = tensor[:, index : index + 1]
        return model(inputs, training=False)

    concrete = tf.function(unpack_and_call, input_signature=specs).get_concrete_function()

    def call(columns: Columns) -> np.ndarray:
        packed = [
            tf.constant(np.concatenate([columns[name] for name in names], axis=1), dtype=dtype)
            for dtype, names in packing
        ]
        return np.asarray(concrete(*packed))

    return call


def _missing_row(signature: Signature) -> dict[str, np.ndarray]:
    fill = {"float32": np.nan, "int64": INT_MISSING, "string": ""}
    return {
        name: np.array([[fill[dtype]]], dtype=object if dtype == "string" else dtype)
        for name, dtype in signature.inputs.items()
    }


def load_servable(reference: str | Path, *, name: str | None = None) -> Servable:
    """A run (directory or name) or a SavedModel export, ready to serve.

    The model is named `name`, else after the run's config (or the export's model name).
    """
    export = saved_model_folder(Path(reference))
    if export is not None:
        return _export_servable(export, name=name)
    from mlcli.runs.loading import open_run

    loaded = open_run(reference)
    signature = Signature.from_schema(loaded.schema)
    return Servable(
        name=name or loaded.config.name,
        version=VERSION,
        signature=signature,
        call=compiled_call(loaded.model, signature),
        source=loaded.run.path,
    )


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


def export_description(folder: Path) -> tuple[Signature, dict[str, Any]]:
    """The signature and the rest of `export.json` beside an exported SavedModel."""
    path = folder / EXPORT_INFO
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        target = TargetSchema(
            column=str(info.get("target", "")), task=info["task"], classes=info["label_classes"]
        )
        inputs = {feature["name"]: feature["dtype"] for feature in info["features"]}
    except FileNotFoundError:
        raise RunError(
            f"{path}: missing; mlcli serves the SavedModels that `mlcli export` writes"
        ) from None
    except (ValueError, KeyError, TypeError) as error:
        raise RunError(f"{path}: not an mlcli export description ({error!r})") from None
    return Signature(inputs=inputs, target=target), info


def _export_servable(folder: Path, *, name: str | None) -> Servable:
    from mlcli.exporting.runtimes import python_keyword

    tf = import_tensorflow()
    signature, info = export_description(folder)
    target = signature.target
    try:
        saved_model = tf.saved_model.load(str(folder))
        function = saved_model.signatures[SIGNATURE_NAME]
    except (OSError, ValueError, KeyError) as error:
        raise RunError(f"{folder}: the SavedModel does not load: {error}") from error
    keywords = {column: python_keyword(column) for column in signature.inputs}

    def call(columns: Columns) -> np.ndarray:
        assert saved_model is not None  # the signature's variables live as long as it does
        outputs = function(
            **{
                keywords[column]: tf.constant(columns[column].reshape(-1), dtype=dtype)
                for column, dtype in signature.inputs.items()
            }
        )
        if target.task == "regression":
            return np.asarray(outputs["prediction"]).reshape(-1, 1)
        probabilities = np.asarray(outputs["probabilities"])
        return probabilities[:, 1:] if target.task == "binary" else probabilities

    return Servable(
        name=name or str(info.get("model_name") or folder.parent.name),
        version=str(info.get("version") or folder.name),
        signature=signature,
        call=call,
        source=folder,
    )
