"""Column values as the data layer checks them: numbers, text and labels, with Arrow compute.

These are the checks every reader of a table shares (splits, streamed splits, `validate` and the
feature schema): a numeric column is float64 with NaN read as missing, text or infinity is a data
error naming the column and row, a number beyond float32's range (which the model would turn
into infinity) is a data error naming the file, column, row and value, and labels get the
config's `target.replace`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from mlcli.errors import DataError

# The largest finite float32 (3.4028235e38): the model computes in float32, so a number past it
# becomes infinity inside the model although it is finite as read (float64).
FLOAT32_MAX = float(np.finfo(np.float32).max)


def is_numeric_type(data_type: pa.DataType) -> bool:
    """Integers, floats and decimals (not booleans)."""
    return (
        pa.types.is_integer(data_type)
        or pa.types.is_floating(data_type)
        or pa.types.is_decimal(data_type)
    )


def is_text_type(data_type: pa.DataType) -> bool:
    """Strings, as pyarrow reads them (`string` or `large_string`)."""
    return pa.types.is_string(data_type) or pa.types.is_large_string(data_type)


def numeric_values(column: pa.ChunkedArray, name: str, *, row_offset: int = 0) -> pa.ChunkedArray:
    """The column as float64 with NaN read as missing; text or infinities are data errors.

    Rows in messages are 1-based and counted from `row_offset` (the data rows before
    `column[0]` in its file).
    """
    import pyarrow.compute as pc

    if not (is_numeric_type(column.type) or pa.types.is_boolean(column.type)):
        if is_text_type(column.type):
            bad = _first_non_number(column)
            raise DataError(
                f"column {name!r} is numeric but holds text: {bad[1]!r} at row "
                f"{row_offset + bad[0]}; declare it categorical, or add the marker to "
                "data.csv.na_values"
            )
        raise DataError(f"column {name!r} is numeric but has type {column.type}")
    # integers past 2**53 round to the nearest float64 (the model takes float32 anyway)
    values = pc.cast(column, pa.float64(), safe=False)
    infinite = pc.is_inf(values)
    if pc.any(infinite).as_py():
        row = row_offset + int(pc.index(infinite, True).as_py()) + 1
        raise DataError(
            f"column {name!r} holds an infinite value at row {row}; expected finite numbers"
        )
    return pc.if_else(pc.is_nan(values), pa.nulls(1, pa.float64())[0], values)  # no pandas


def check_numbers(
    table: pa.Table, names: Iterable[str], *, source: str, row_offset: int = 0
) -> None:
    """Checks the named columns as the model will read them: numbers, finite, within float32.

    Text in them, an infinity or a number beyond float32's range is a `DataError` naming
    `source`, the column and the file's 1-based data row (`row_offset` rows precede the table).
    """
    for name in names:
        column = table.column(name)
        try:
            numbers = numeric_values(column, name, row_offset=row_offset)
        except DataError as error:
            raise DataError(f"{source}: {error}") from error
        check_float32_range(numbers, column=name, source=source, row_offset=row_offset)


def check_float32_range(values: Any, *, column: str, source: str, row_offset: int = 0) -> None:
    """Raises `DataError` at the first value finite in float64 but beyond float32's range.

    Args:
        values: the column's numbers: a numpy array, or an Arrow array or chunked array of a
            numeric type (nulls and NaN are missing values and pass).
        column: the column's name, for the message.
        source: the file (or table) the values were read from, for the message.
        row_offset: data rows of the file before `values[0]`, so that the row named is the
            file's own 1-based data row.

    Example:
        `check_float32_range(np.array([1.0, 1e39]), column="x", source="a.csv")` raises
        `a.csv: column 'x' holds 1e+39 at row 2, beyond float32's range (|x| <= 3.4028235e+38)`.
    """
    import pyarrow.compute as pc

    if isinstance(values, np.ndarray):
        if values.dtype.kind != "f" or values.dtype.itemsize <= 4:
            return  # integers and float32 always fit
        with np.errstate(invalid="ignore"):
            beyond = np.isfinite(values) & (np.abs(values) > FLOAT32_MAX)
        found = np.flatnonzero(beyond)
        if len(found) == 0:
            return
        index, value = int(found[0]), float(values[found[0]])
    else:
        if not (pa.types.is_floating(values.type) or pa.types.is_decimal(values.type)):
            return  # integers (at most 2**64) and booleans always fit
        numbers = pc.cast(values, pa.float64(), safe=False)
        beyond = pc.and_(pc.is_finite(numbers), pc.greater(pc.abs(numbers), FLOAT32_MAX))
        if not pc.any(beyond).as_py():
            return
        index = int(pc.index(beyond, True).as_py())
        value = float(numbers[index].as_py())
    raise DataError(
        f"{source}: column {column!r} holds {value:.8g} at row {row_offset + index + 1}, beyond "
        f"float32's range (|x| <= {FLOAT32_MAX:.8g}) that the model computes in; "
        "rescale the column (target.scale for a target) or leave it out (features.exclude)"
    )


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
    """The target column with `target.replace` applied (on its text form), missing labels null.

    A missing label is a null, an empty string or a floating NaN (as Parquet and pandas write
    one); every reader of labels (training splits, `evaluate`) drops those rows.
    """
    import pyarrow.compute as pc

    labels = _replaced(column, replace) if replace else column
    if is_text_type(labels.type):
        return pc.if_else(pc.equal(labels, ""), pa.nulls(1, labels.type)[0], labels)
    if pa.types.is_floating(labels.type):
        return pc.if_else(pc.is_nan(labels), pa.nulls(1, labels.type)[0], labels)
    return labels


def _replaced(column: pa.ChunkedArray, replace: dict[str, str]) -> pa.ChunkedArray:
    import pyarrow.compute as pc

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


def require_unique_names(
    names: Sequence[str], *, source: str, fix: str, where: str = "table"
) -> None:
    """Raises `DataError` naming the column names that `names` holds more than once."""
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    if repeated:
        raise DataError(
            f"{source}: the {where} names {', '.join(repr(n) for n in repeated)} more than once; "
            f"expected one column per name ({fix})"
        )


def is_usable_type(data_type: pa.DataType) -> bool:
    """Whether a column of this type can be a feature or the target.

    Numbers, booleans, text, dates and times (read as categories by their text) and all-null
    columns can; binary, nested (list, struct, map, union) and extension types cannot.
    """
    types = pa.types
    return (
        is_numeric_type(data_type)
        or is_text_type(data_type)
        or types.is_string_view(data_type)
        or types.is_boolean(data_type)
        or types.is_null(data_type)
        or (types.is_temporal(data_type) and not types.is_interval(data_type))
    )


def check_usable(
    data_type: pa.DataType, *, column: str, source: str, role: str = "feature"
) -> None:
    """Raises `DataError` naming a column whose Arrow type mlcli cannot use, and the fix."""
    if is_usable_type(data_type):
        return
    if role == "target":
        fix = "choose another target.column, or write this one as numbers or text"
    elif pa.types.is_binary(data_type) or pa.types.is_large_binary(data_type):
        fix = f"write it as UTF-8 text, or leave it out: features.exclude: [{column!r}]"
    else:
        fix = f"leave it out (features.exclude: [{column!r}]) or drop it from the table"
    raise DataError(
        f"{source}: {role} column {column!r} has Arrow type {data_type}, which mlcli cannot "
        f"use as a {role}; {fix}"
    )
