"""The saved model on raw columns, batch by batch, as `evaluate` and `predict` run it.

Imported only after TensorFlow has been imported quietly. The model is called through one
`tf.function` with a fixed input signature (any number of rows), so batches of any size reuse
one traced graph; Keras's `model.predict` does not take string inputs from numpy.

String columns travel as Arrow dictionaries (the distinct values and an int32 index per row)
and are expanded with `tf.gather` inside the graph: the model still receives every raw string,
but millions of Python string objects are never made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlcli._tensorflow import import_tensorflow
from mlcli.data.tables import require_columns
from mlcli.features.schema import FeatureSchema
from mlcli.preprocessing.inputs import model_inputs

tf = import_tensorflow()

DEFAULT_BATCH_ROWS = 8192


@dataclass
class PreparedInputs:
    """One table's columns ready for the model: numbers as arrays, strings as dictionaries."""

    rows: int
    arrays: dict[str, np.ndarray]
    strings: dict[str, tuple[Any, np.ndarray]]  # column -> (distinct values tensor, indices)


def _dictionary(column: pa.ChunkedArray) -> tuple[Any, np.ndarray]:
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        column = pc.cast(column, pa.string())
    encoded = pc.dictionary_encode(pc.fill_null(column.combine_chunks(), ""))
    values = encoded.dictionary.to_numpy(zero_copy_only=False).astype(object)
    if len(values) == 0:
        values = np.array([""], dtype=object)  # an empty batch still needs a typed tensor
    indices = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32)
    return tf.constant(values, dtype=tf.string), indices


class Predictor:
    """Calls a run's model on Arrow tables of raw columns.

    Example:

    ```python
    predictor = Predictor(loaded.model, loaded.schema)
    outputs = predictor.outputs(table, source="new.csv")  # (rows, 1) or (rows, classes)
    ```
    """

    def __init__(
        self, model: Any, schema: FeatureSchema, *, batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> None:
        self.schema = schema
        self.batch_rows = batch_rows
        strings = [c for c in schema.columns if c.dtype == "string"]
        self._numeric = FeatureSchema(
            columns=[c for c in schema.columns if c.dtype != "string"], target=schema.target
        )
        signature: dict[str, Any] = {
            c.name: tf.TensorSpec(shape=(None, 1), dtype=c.dtype) for c in self._numeric.columns
        }
        for column in strings:
            signature[column.name] = (
                tf.TensorSpec(shape=(None,), dtype=tf.string),
                tf.TensorSpec(shape=(None,), dtype=tf.int32),
            )

        def call(inputs: dict[str, Any]) -> Any:
            raw = {c.name: inputs[c.name] for c in self._numeric.columns}
            for column in strings:
                values, indices = inputs[column.name]
                raw[column.name] = tf.reshape(tf.gather(values, indices), (-1, 1))
            return model(raw, training=False)

        self._call: Callable[[dict[str, Any]], Any] = tf.function(call, input_signature=[signature])

    def prepare(self, table: pa.Table, *, source: str) -> PreparedInputs:
        """Checks and converts a table's columns (Arrow and numpy work, no model call)."""
        require_columns(table.column_names, self.schema.input_names, source=source)
        arrays = model_inputs(table, self._numeric, source=source) if self._numeric.columns else {}
        strings = {
            c.name: _dictionary(table.column(c.name))
            for c in self.schema.columns
            if c.dtype == "string"
        }
        return PreparedInputs(rows=table.num_rows, arrays=arrays, strings=strings)

    def run(self, prepared: PreparedInputs) -> np.ndarray:
        """The model's outputs on prepared inputs, in batches of `batch_rows`."""
        parts = []
        for start in range(0, prepared.rows, self.batch_rows):
            stop = start + self.batch_rows
            batch: dict[str, Any] = {
                name: tf.constant(array[start:stop]) for name, array in prepared.arrays.items()
            }
            for name, (values, indices) in prepared.strings.items():
                batch[name] = (values, tf.constant(indices[start:stop]))
            parts.append(self._call(batch).numpy())
        if not parts:
            task = self.schema.target
            width = len(task.classes) if task.task == "multiclass" else 1
            return np.zeros((0, width), np.float32)
        return np.concatenate(parts)

    def outputs(self, table: pa.Table, *, source: str) -> np.ndarray:
        """The model's outputs on every row of `table`: (rows, 1) or (rows, classes)."""
        return self.run(self.prepare(table, source=source))


def predicted_labels(outputs: np.ndarray, schema: FeatureSchema, *, threshold: float) -> pa.Array:
    """The predicted labels in the user's own values (classification) or the values.

    A binary row is positive when its probability is above `threshold`, as Keras's
    `BinaryAccuracy` (training's accuracy) decides.
    """
    target = schema.target
    if target.task == "regression":
        return pa.array(outputs.reshape(-1).astype(np.float64))
    if target.task == "binary":
        indices = (outputs.reshape(-1) > threshold).astype(np.int64)
    else:
        indices = np.argmax(outputs, axis=1).astype(np.int64)
    return pc.take(pa.array(target.classes), pa.array(indices))
