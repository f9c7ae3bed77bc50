"""A run's saved model on raw columns: the one place that calls it on data.

`evaluate`, `predict` and the MLflow model call `Predictor.outputs` on an Arrow table of raw
columns; `mlcli serve` calls `Predictor.column_call` on the (rows, 1) numpy columns of a
request; training's check of the composed model and export's reference call
`Predictor.eager_outputs`, eagerly like the core they are compared with.

Imported only after TensorFlow has been imported quietly. The model is called through one
`tf.function` with a fixed input signature (any number of rows), so batches of any size reuse
one traced graph; Keras's `model.predict` does not take string inputs from numpy.

String columns travel as Arrow dictionaries (the distinct values and an int32 index per row)
and are expanded with `tf.gather` inside the graph: the model still receives every raw string,
but millions of Python string objects are never made.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlcli._tensorflow import import_tensorflow
from mlcli.data.columns import is_text_type
from mlcli.data.tables import require_columns
from mlcli.features.schema import FeatureSchema
from mlcli.inference.light import no_outputs
from mlcli.preprocessing.inputs import MISSING_VALUES, model_inputs
from mlcli.preprocessing.layers import to_tensors

tf = import_tensorflow()

DEFAULT_BATCH_ROWS = 8192

Columns = Mapping[str, np.ndarray]
ColumnCall = Callable[[Columns], np.ndarray]


@dataclass
class PreparedInputs:
    """One table's columns ready for the model: numbers as arrays, strings as dictionaries."""

    rows: int
    arrays: dict[str, np.ndarray]
    strings: dict[str, tuple[Any, np.ndarray]]  # column -> (distinct values tensor, indices)


def _dictionary(column: pa.ChunkedArray) -> tuple[Any, np.ndarray]:
    if not is_text_type(column.type):
        column = pc.cast(column, pa.string())
    encoded = pc.dictionary_encode(pc.fill_null(column.combine_chunks(), MISSING_VALUES["string"]))
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
    call = predictor.column_call()  # numpy (rows, 1) columns in, outputs out
    ```
    """

    def __init__(
        self, model: Any, schema: FeatureSchema, *, batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> None:
        self.schema = schema
        self.batch_rows = batch_rows
        self._model = model
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
        return np.concatenate(parts) if parts else self.no_outputs()

    def outputs(self, table: pa.Table, *, source: str) -> np.ndarray:
        """The model's outputs on every row of `table`: (rows, 1) or (rows, classes)."""
        return self.run(self.prepare(table, source=source))

    def eager_outputs(self, columns: Columns) -> np.ndarray:
        """The model called eagerly, op by op, on numpy columns as `model_inputs` makes them.

        Training calls its core the same way, so its composition check and export's reference
        compare like with like: a traced graph may fuse ops and round differently, and periodic
        numeric embeddings amplify float32 rounding.
        """
        dataset = tf.data.Dataset.from_tensor_slices(to_tensors(columns, self.schema))
        parts = [
            np.asarray(self._model(batch, training=False))
            for batch in dataset.batch(self.batch_rows)
        ]
        return np.concatenate(parts) if parts else self.no_outputs()

    @property
    def model(self) -> Any:
        """The Keras model this predictor calls."""
        return self._model

    def no_outputs(self) -> np.ndarray:
        """A (0, width) float32 array: the outputs of no rows."""
        return no_outputs(self.schema)

    def column_call(self) -> ColumnCall:
        """The model as one traced `tf.function` over numpy columns, as a server calls it.

        The call takes one (rows, 1) array per input column and returns the model's outputs
        as numpy. Inside, one (rows, columns) tensor per dtype is sliced into the model's
        named inputs: passing a dozen small tensors costs more in Python than running the
        whole model on a few rows. It is traced here, once.
        """
        model = self._model
        groups: dict[str, list[str]] = {}
        for column in self.schema.columns:
            groups.setdefault(column.dtype, []).append(column.name)
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
