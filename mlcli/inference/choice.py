"""Which model predict, evaluate and serve call: the light path or the Keras model.

`choose_predictor` is the one place that decides. The light path (`mlcli.inference.light`:
the Arrow encoder, the core in ONNX Runtime) is taken unless:

- `MLCLI_INFERENCE=keras` is set (`onnxruntime` requires the light path: exit 4 if not);
- a column needs a layer's own code (text, the quantile transform);
- onnxruntime is not installed;
- `core.onnx` cannot be written and checked (no tf2onnx, the check failed: recorded as
  `checks.light` in manifest.json, and not tried again), or it does not load or differs from
  the file that was checked.

Then the Keras model is loaded and called by `mlcli.inference.predictor`, and the command's
`inference` event says why.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

from mlcli.errors import ConfigError, RunError
from mlcli.features.schema import FeatureSchema
from mlcli.inference.light import (
    CHECK,
    DEFAULT_BATCH_ROWS,
    LightPredictor,
    Runner,
    core_session,
    file_digest,
)
from mlcli.preprocessing.arrow import encodable
from mlcli.reporting import Reporter
from mlcli.runs import directory as runs

ENVIRONMENT = "MLCLI_INFERENCE"
CHOICES = ("auto", "keras", "onnxruntime")


def requested() -> str:
    """`MLCLI_INFERENCE` (auto when unset); anything else is a `ConfigError`."""
    value = os.environ.get(ENVIRONMENT, "").strip().lower() or "auto"
    if value not in CHOICES:
        raise ConfigError(
            f"{ENVIRONMENT}={os.environ[ENVIRONMENT]!r}: expected one of {', '.join(CHOICES)}"
        )
    return value


def unencodable(schema: FeatureSchema) -> str | None:
    """Why the Arrow encoder cannot encode `schema` exactly (None: it can)."""
    if encodable(schema):
        return None
    for column in schema.columns:
        if column.type == "text":
            return f"text column {column.name!r}"
        if column.type == "numeric" and column.transform not in ("none", "log"):
            return f"{column.transform} transform of column {column.name!r}"
    return "a column that only the Keras layers encode"


@dataclass
class Choice:
    """The light predictor, or why the Keras model is used instead (and what was done)."""

    predictor: LightPredictor | None
    reason: str = ""
    note: str = ""  # e.g. that core.onnx was written and checked just now

    def describe(self) -> str:
        """The `inference` event's message."""
        if self.predictor is not None:
            return "onnxruntime" + (f" ({self.note})" if self.note else "")
        return f"keras ({self.reason})"


def light_choice(
    run: runs.Run,
    schema: FeatureSchema,
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    threads: int | None = None,
) -> Choice:
    """The light predictor for `run`, writing and checking `core.onnx` on first use."""
    from mlcli.inference import conversion

    if requested() == "keras":
        return Choice(None, f"{ENVIRONMENT}=keras")
    reason = unencodable(schema)
    if reason:
        return Choice(None, f"{reason}: the Arrow encoder does not reproduce its layer")
    if importlib.util.find_spec("onnxruntime") is None:
        return Choice(None, "onnxruntime is not installed (a dependency of mlcli: reinstall it)")
    path, note = run.file(runs.CORE_ONNX), ""
    check = conversion.recorded_check(run)
    if check is not None and not check.get("passed"):
        return Choice(None, f"core.onnx failed its check (manifest.json checks.{CHECK})")
    if not path.is_file():
        if not all(importlib.util.find_spec(name) for name in ("tensorflow", "tf2onnx")):
            return Choice(
                None,
                "core.onnx is not written yet, and writing it needs TensorFlow and tf2onnx: "
                "pip install 'mlcli[train]' (or run this once where they are installed)",
            )
        check, reason = conversion.convert_in_child(run)
        if check is None or not check.get("passed"):
            return Choice(None, reason or f"core.onnx failed its check (checks.{CHECK})")
        note = conversion.describe_check(check)
    try:
        if check is None or check.get("sha256") != file_digest(path):
            return Choice(None, "core.onnx is not the file that was checked (its SHA-256 differs)")
        session = core_session(path, threads=threads)
        predictor = LightPredictor(session, schema, batch_rows=batch_rows)
    except Exception as error:  # onnxruntime raises its own errors for a corrupt file
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return Choice(None, f"core.onnx does not load: {first}")
    return Choice(predictor, note=note)


def choose_predictor(
    run: runs.Run,
    schema: FeatureSchema,
    *,
    reporter: Reporter,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    threads: int | None = None,
    what: str = "",
) -> Runner:
    """The light predictor when the run allows it, else the Keras model's `Predictor`.

    Sends the `inference` event (`what` prefixes its message, e.g. `baseline`). With
    `MLCLI_INFERENCE=onnxruntime` a run that cannot take the light path is a `RunError`.
    """
    choice = light_choice(run, schema, batch_rows=batch_rows, threads=threads)
    prefix = f"{what}: " if what else ""
    if choice.predictor is None and requested() == "onnxruntime":
        raise RunError(
            f"{run.path}: {ENVIRONMENT}=onnxruntime, but the light path cannot be taken: "
            f"{choice.reason}; unset {ENVIRONMENT} to use the Keras model"
        )
    reporter.event(
        "inference",
        prefix + choice.describe(),
        runtime="onnxruntime" if choice.predictor is not None else "keras",
        reason=choice.reason or None,
    )
    if choice.predictor is not None:
        return choice.predictor
    return keras_predictor(run, schema, batch_rows=batch_rows)


def keras_predictor(run: runs.Run, schema: FeatureSchema, *, batch_rows: int) -> Runner:
    """The run's Keras model behind `Predictor` (imports TensorFlow, quietly)."""
    from mlcli.runs.loading import load_model

    model = load_model(run.file(runs.MODEL))
    from mlcli.inference.predictor import Predictor

    return Predictor(model, schema, batch_rows=batch_rows)
