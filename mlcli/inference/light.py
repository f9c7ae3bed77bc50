"""The light inference path: the Arrow encoder and the run's core network in ONNX Runtime.

A run's `model.keras` is the preprocessing layers, then the core network over their encoded
outputs (then the calibration layer, if any). For numeric and categorical columns the encoding
is `mlcli.preprocessing.arrow`'s, checked against the layers by every training run; the core
(with its calibration) is converted once to ONNX, checked against the Keras model, and kept in
the run as `core.onnx` (`mlcli.inference.conversion`). ONNX Runtime imports and loads it in
about a tenth of a second, where TensorFlow takes five. `mlcli.inference.choice` decides
between this path and the Keras model (`mlcli.inference.predictor`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from mlcli.features.schema import FeatureSchema
from mlcli.preprocessing.arrow import encode_columns, encode_features

CHECK = "light"  # manifest.json `checks.light`
UNCALIBRATED_OUTPUT = 1  # a calibrated core's second ONNX output: the probabilities before it
DEFAULT_BATCH_ROWS = 8192
# The most rows one ONNX Runtime call takes, whatever `batch_rows`: its memory arena keeps the
# intermediates of the largest call made, which for a 4-member ensemble are ~12 KiB a row
# (predict's peak RSS 550 MiB with 17k-row calls, 375 MiB with 2,048), and smaller calls stay
# in the CPU's caches (CPU per row no higher at 1,024 to 4,096 rows than at 65,536).
CORE_CALL_ROWS = 2048

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
        """The core's outputs on encoded inputs, in calls of at most `CORE_CALL_ROWS` rows."""
        if prepared.rows == 0:
            return self.no_outputs()
        step = min(self.batch_rows, CORE_CALL_ROWS)
        parts = []
        for start in range(0, prepared.rows, step):
            stop = start + step
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
            feed = encode_columns(columns, self.schema)
            if feed is None:  # a value of another type: Arrow casts it as predict would
                table = pa.table({name: columns[name].reshape(-1) for name in names})
                return self.outputs(table, source="the request")
            rows = len(next(iter(feed.values()))) if feed else 0
            return self.run(Encoded(rows=rows, feed=feed))

        return call


def core_session(path: Path, *, threads: int | None = None) -> Any:
    """An ONNX Runtime session over `path` (CPU).

    `threads` bounds its intra-op threads: by default all cores but one, which predict's other
    stages (reading, encoding, writing) use meanwhile. Its threads never spin waiting for work:
    on a shared 2-core machine spinning cost a third more CPU per batch and was slower.
    """
    import os

    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: no warnings on stderr
    options.intra_op_num_threads = threads or max(1, (os.cpu_count() or 2) - 1)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )


def file_digest(path: Path) -> str:
    """The SHA-256 of a file's bytes, as `checks.light.sha256` records it."""
    return hashlib.sha256(path.read_bytes()).hexdigest()
