"""The light inference path: the Arrow encoder and the run's core network in ONNX Runtime.

A run's `model.keras` is the preprocessing layers, then the core network over their encoded
outputs (then the calibration layer, if any). For numeric and categorical columns the encoding
is `mlcli.preprocessing.arrow`'s, checked against the layers by every training run; the core
(with its calibration) is converted once to ONNX, checked against the Keras model, and kept in
the run as `core.onnx` (`mlcli.inference.conversion`). ONNX Runtime imports and loads it in
about a tenth of a second, where TensorFlow takes five: predict, evaluate and serve then never
import TensorFlow.

`choose_predictor` is the one place that decides. The light path is taken unless:

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

import hashlib
import importlib.util
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from mlcli.errors import ConfigError, RunError
from mlcli.features.schema import FeatureSchema
from mlcli.preprocessing.arrow import encodable, encode_features
from mlcli.reporting import Reporter
from mlcli.runs import directory as runs

ENVIRONMENT = "MLCLI_INFERENCE"
CHOICES = ("auto", "keras", "onnxruntime")
CHECK = "light"  # manifest.json `checks.light`
UNCALIBRATED_OUTPUT = 1  # a calibrated core's second ONNX output: the probabilities before it
DEFAULT_BATCH_ROWS = 8192

Columns = Mapping[str, np.ndarray]


class Runner(Protocol):
    """What predict, evaluate and serve call: `Predictor` (Keras) or `LightPredictor`."""

    schema: FeatureSchema
    batch_rows: int

    def prepare(self, table: pa.Table, *, source: str) -> Any:
        """Checks and converts a table's columns, without calling the model."""

    def run(self, prepared: Any) -> np.ndarray:
        """The model's outputs on prepared inputs."""

    def outputs(self, table: pa.Table, *, source: str) -> np.ndarray:
        """The model's outputs on every row of `table`."""

    def no_outputs(self) -> np.ndarray:
        """The outputs of no rows, shaped as the model's."""

    def column_call(self) -> Callable[[Columns], np.ndarray]:
        """The model over numpy (rows, 1) columns, as a server calls it."""


@dataclass
class Encoded:
    """One table's encoding, as the core's ONNX inputs take it."""

    rows: int
    feed: dict[str, np.ndarray]


def no_outputs(schema: FeatureSchema) -> np.ndarray:
    """A (0, width) float32 array: the outputs of no rows."""
    width = len(schema.target.classes) if schema.target.task == "multiclass" else 1
    return np.zeros((0, width), np.float32)


class LightPredictor:
    """Calls a run's core in ONNX Runtime on Arrow tables encoded by the Arrow encoder.

    Example:

    ```python
    predictor = LightPredictor(core_session(run.file(runs.CORE_ONNX)), schema)
    outputs = predictor.outputs(table, source="new.csv")  # (rows, 1) or (rows, classes)
    ```
    """

    def __init__(
        self,
        session: Any,
        schema: FeatureSchema,
        *,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        output: int = 0,
    ) -> None:
        self.schema = schema
        self.batch_rows = batch_rows
        self._session = session
        self._inputs = [tensor.name for tensor in session.get_inputs()]
        self._output = session.get_outputs()[output].name

    def uncalibrated(self) -> LightPredictor | None:
        """The same core's outputs before its calibration (None: it has none)."""
        if len(self._session.get_outputs()) <= UNCALIBRATED_OUTPUT:
            return None
        return LightPredictor(
            self._session, self.schema, batch_rows=self.batch_rows, output=UNCALIBRATED_OUTPUT
        )

    def prepare(self, table: pa.Table, *, source: str) -> Encoded:
        """The table encoded (Arrow kernels and numpy, no model call)."""
        return Encoded(rows=table.num_rows, feed=encode_features(table, self.schema, source=source))

    def run(self, prepared: Encoded) -> np.ndarray:
        """The core's outputs on encoded inputs, in batches of `batch_rows`."""
        if prepared.rows == 0:
            return self.no_outputs()
        parts = []
        for start in range(0, prepared.rows, self.batch_rows):
            stop = start + self.batch_rows
            feed = {name: prepared.feed[name][start:stop] for name in self._inputs}
            parts.append(self._session.run([self._output], feed)[0])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def outputs(self, table: pa.Table, *, source: str) -> np.ndarray:
        """The core's outputs on every row of `table`: (rows, 1) or (rows, classes)."""
        return self.run(self.prepare(table, source=source))

    def no_outputs(self) -> np.ndarray:
        """A (0, width) float32 array: the outputs of no rows."""
        return no_outputs(self.schema)

    def column_call(self) -> Callable[[Columns], np.ndarray]:
        """The encoder and core over numpy (rows, 1) columns, as `mlcli serve` calls them."""
        names = self.schema.input_names

        def call(columns: Columns) -> np.ndarray:
            table = pa.table({name: columns[name].reshape(-1) for name in names})
            return self.outputs(table, source="the request")

        return call


def core_session(path: Path, *, threads: int | None = None) -> Any:
    """An ONNX Runtime session over `path` (CPU); `threads` bounds its intra-op threads."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: no warnings on stderr
    if threads is not None:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )


def file_digest(path: Path) -> str:
    """The SHA-256 of a file's bytes, as `checks.light.sha256` records it."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
        return Choice(None, "onnxruntime is not installed: pip install 'mlcli[onnx]'")
    path, note = run.file(runs.CORE_ONNX), ""
    check = conversion.recorded_check(run)
    if check is not None and not check.get("passed"):
        return Choice(None, f"core.onnx failed its check (manifest.json checks.{CHECK})")
    if not path.is_file():
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
