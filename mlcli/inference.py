"""The saved model on raw columns, batch by batch, as `evaluate` and `predict` run it.

Imported only after TensorFlow has been imported quietly. The model is called through one
`tf.function` with a fixed input signature (any number of rows), so batches of any size
reuse one traced graph; Keras's `model.predict` does not take string inputs from numpy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlcli._tensorflow import import_tensorflow
from mlcli.features import FeatureSchema, model_inputs

tf = import_tensorflow()

DEFAULT_BATCH_ROWS = 8192


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
        signature = {
            column.name: tf.TensorSpec(shape=(None, 1), dtype=column.dtype, name=column.name)
            for column in schema.columns
        }
        self._call: Callable[[dict[str, Any]], Any] = tf.function(
            lambda inputs: model(inputs, training=False),
            input_signature=[signature],
        )

    def outputs(self, table: pa.Table, *, source: str) -> np.ndarray:
        """The model's outputs on every row of `table`, in batches of `batch_rows`."""
        arrays = model_inputs(table, self.schema, source=source)
        return self.outputs_of_arrays(arrays, rows=table.num_rows)

    def outputs_of_arrays(self, arrays: Mapping[str, np.ndarray], *, rows: int) -> np.ndarray:
        """The model's outputs on raw numpy columns as `features.model_inputs` makes them."""
        parts = []
        for start in range(0, rows, self.batch_rows):
            batch = {
                column.name: tf.constant(
                    arrays[column.name][start : start + self.batch_rows], dtype=column.dtype
                )
                for column in self.schema.columns
            }
            parts.append(self._call(batch).numpy())
        if not parts:
            width = (
                len(self.schema.target.classes) if self.schema.target.task == "multiclass" else 1
            )
            return np.zeros((0, width), np.float32)
        return np.concatenate(parts)


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
