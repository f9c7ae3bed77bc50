"""The names and values at the preprocessor's two ends: raw inputs in, encoded outputs out.

The saved model takes one input per raw column, named as the column, shaped (rows, 1), of the
dtype the schema gives it (`float32`, `int64` or `string`); a missing value is NaN, the
`INT_MISSING` sentinel or "" (`MISSING_VALUES`): the model maps each to its missing-value
handling. The preprocessor hands the core a `numeric` matrix and one `categorical__<column>` or
`text__<column>` tensor per such column. Everything that builds inputs for a model (training,
inference, the export check, the server) takes them from here. Inside the preprocessor, each
column's layers are named by `layer_name`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlcli.data.columns import is_text_type, numeric_values
from mlcli.data.tables import require_columns
from mlcli.errors import DataError
from mlcli.features.schema import INT_MISSING, FeatureSchema

NUMERIC = "numeric"
CATEGORICAL_PREFIX = "categorical__"
TEXT_PREFIX = "text__"

MISSING_VALUES: dict[str, float | int | str] = {
    "float32": float("nan"),
    "int64": INT_MISSING,
    "string": "",
}


def layer_name(kind: str, column: str) -> str:
    """The name of a column's preprocessing layer: `lookup_capital_gain` for `capital-gain`.

    Keras layer names cannot hold `/` (nor, here, any character but letters, digits and `_`),
    so every other character of the column's name becomes `_`. Saved models hold these names:
    changing the rule breaks loading the runs that were written with it.
    """
    return f"{kind}_" + "".join(ch if ch.isalnum() or ch in "_" else "_" for ch in column)


def model_inputs(table: pa.Table, schema: FeatureSchema, *, source: str) -> dict[str, np.ndarray]:
    """Raw column values as numpy arrays of shape (rows, 1), as the saved model takes them.

    Missing numbers become NaN, missing strings "" and missing integers a sentinel: the
    model maps each to its missing-value handling.
    """
    require_columns(table.column_names, schema.input_names, source=source)
    arrays: dict[str, np.ndarray] = {}
    for column in schema.columns:
        values = table.column(column.name)
        if column.dtype == "float32":
            numbers = numeric_values(values, column.name)
            array = numbers.to_numpy().astype(np.float32)
        elif column.dtype == "int64":
            if not pa.types.is_integer(values.type):
                try:
                    values = pc.cast(values, pa.int64())
                except pa.ArrowInvalid as error:
                    raise DataError(
                        f"{source}: column {column.name!r} held integers in training, "
                        f"found {values.type}"
                    ) from error
            filled = pc.fill_null(pc.cast(values, pa.int64()), MISSING_VALUES["int64"])
            array = filled.to_numpy()
        else:
            if not is_text_type(values.type):
                values = pc.cast(values, pa.string())
            filled = pc.fill_null(values, MISSING_VALUES["string"])
            array = filled.to_numpy(zero_copy_only=False).astype(object)
        arrays[column.name] = array.reshape(-1, 1)
    return arrays
