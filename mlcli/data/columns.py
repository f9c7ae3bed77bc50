"""Column values as the data layer checks them: numbers, text and labels, with Arrow compute.

These are the checks every reader of a table shares (splits, streamed splits, `validate` and the
feature schema): a numeric column is float64 with NaN read as missing, text or infinity is a data
error naming the column and row, and labels get the config's `target.replace`.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from mlcli.errors import DataError


def is_numeric_type(data_type: pa.DataType) -> bool:
    """Integers and floats (not booleans)."""
    return pa.types.is_integer(data_type) or pa.types.is_floating(data_type)


def is_text_type(data_type: pa.DataType) -> bool:
    """Strings, as pyarrow reads them (`string` or `large_string`)."""
    return pa.types.is_string(data_type) or pa.types.is_large_string(data_type)


def _first_bad_row(column: pa.ChunkedArray, predicate: pa.ChunkedArray) -> int:
    return int(pc.index(predicate, True).as_py()) + 1


def numeric_values(column: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    """The column as float64 with NaN read as missing; text or infinities are data errors."""
    if not (is_numeric_type(column.type) or pa.types.is_boolean(column.type)):
        if is_text_type(column.type):
            bad = _first_non_number(column)
            raise DataError(
                f"column {name!r} is numeric but holds text: {bad[1]!r} at row {bad[0]}; "
                "declare it categorical, or add the marker to data.csv.na_values"
            )
        raise DataError(f"column {name!r} is numeric but has type {column.type}")
    # integers past 2**53 round to the nearest float64 (the model takes float32 anyway)
    values = pc.cast(column, pa.float64(), safe=False)
    infinite = pc.is_inf(values)
    if pc.any(infinite).as_py():
        row = _first_bad_row(values, infinite)
        raise DataError(
            f"column {name!r} holds an infinite value at row {row}; expected finite numbers"
        )
    return pc.if_else(pc.is_nan(values), pa.nulls(1, pa.float64())[0], values)  # no pandas


def _first_non_number(column: pa.ChunkedArray) -> tuple[int, str]:
    for row, value in enumerate(column.to_pylist(), start=1):
        if value is None:
            continue
        try:
            float(value)
        except ValueError:
            return row, str(value)
    return 0, ""


def label_values(column: pa.ChunkedArray, replace: dict[str, str]) -> pa.ChunkedArray:
    """The target column with the config's `target.replace` applied (on its text form)."""
    if not replace:
        return column
    text = pc.cast(column, pa.string()) if not is_text_type(column.type) else column
    replaced = text
    for old, new in replace.items():
        replaced = pc.if_else(pc.equal(replaced, old), new, replaced)
    if is_text_type(column.type):
        return replaced
    try:
        return pc.cast(replaced, column.type)
    except pa.ArrowInvalid:
        return replaced
