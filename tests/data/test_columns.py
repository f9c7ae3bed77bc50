"""Column values as every reader checks them: numbers (NaN missing, text and infinity refused)
and labels with `target.replace`."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlcli.data.columns import (
    FLOAT32_MAX,
    check_float32_range,
    is_numeric_type,
    is_text_type,
    label_values,
    numeric_values,
)
from mlcli.errors import DataError


def _column(values: list, data_type: pa.DataType | None = None) -> pa.ChunkedArray:
    return pa.chunked_array([pa.array(values, data_type)])


def test_numbers_are_float64_with_nan_read_as_missing():
    values = numeric_values(_column([1, None, 3]), "n")
    assert values.type == pa.float64() and values.to_pylist() == [1.0, None, 3.0]
    assert numeric_values(_column([1.5, float("nan")]), "x").to_pylist() == [1.5, None]
    assert numeric_values(_column([True, False]), "b").to_pylist() == [1.0, 0.0]
    assert numeric_values(_column([2**53 + 1]), "id").to_pylist() == [2.0**53]  # rounded


def test_text_and_infinity_are_data_errors_naming_the_column_and_row():
    with pytest.raises(DataError, match=r"column 'x' is numeric but holds text: '\?' at row 3"):
        numeric_values(_column(["1", None, "?", "2"]), "x")
    with pytest.raises(DataError, match="column 'x' holds an infinite value at row 2"):
        numeric_values(_column([1.0, -math.inf]), "x")
    with pytest.raises(DataError, match="column 'd' is numeric but has type date32"):
        numeric_values(_column([0], pa.int32()).cast(pa.date32()), "d")


@given(
    st.one_of(
        st.lists(st.one_of(st.none(), st.floats()), max_size=20).map(
            lambda v: _column(v, pa.float64())
        ),
        st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), max_size=20).map(
            lambda v: _column(v, pa.int64())
        ),
        st.lists(st.one_of(st.none(), st.text(max_size=8)), max_size=20).map(
            lambda v: _column(v, pa.string())
        ),
        st.lists(st.one_of(st.none(), st.booleans()), max_size=20).map(
            lambda v: _column(v, pa.bool_())
        ),
    )
)
def test_numeric_values_raise_nothing_but_data_errors(column):
    try:
        values = numeric_values(column, "c")
    except DataError as error:
        assert "column 'c'" in str(error)
        return
    assert values.type == pa.float64() and len(values) == len(column)
    present = [v for v in values.to_pylist() if v is not None]
    assert all(math.isfinite(v) for v in present)


def test_labels_are_replaced_on_their_text_and_keep_their_type():
    replace = {">50K.": ">50K", "<=50K.": "<=50K"}
    labels = label_values(_column([">50K.", "<=50K", None]), replace)
    assert labels.to_pylist() == [">50K", "<=50K", None]
    assert label_values(_column([1, 2, 3]), {"3": "2"}).to_pylist() == [1, 2, 2]
    assert label_values(_column([1, 2]), {"2": "two"}).to_pylist() == ["1", "two"]
    column = _column(["a"])
    assert label_values(column, {}).equals(column)


@pytest.mark.parametrize(
    ("values", "data_type"),
    [
        ([1.0, math.nan, None, 0.0], pa.float64()),
        ([1.0, math.nan, None, 0.0], pa.float32()),
        (["yes", "", None, "no"], pa.string()),
        (["yes", "", None, "no"], pa.large_string()),
    ],
)
@pytest.mark.parametrize("replace", [{}, {"maybe": "yes"}])
def test_nan_and_empty_labels_are_missing_whatever_the_type(values, data_type, replace):
    labels = label_values(_column(values, data_type), replace)
    assert labels.null_count == 2
    assert [v is None for v in labels.to_pylist()] == [False, True, True, False]


def test_type_predicates():
    assert is_numeric_type(pa.int8()) and is_numeric_type(pa.float32())
    assert not is_numeric_type(pa.bool_()) and not is_numeric_type(pa.string())
    assert is_text_type(pa.large_string()) and not is_text_type(pa.binary())


def _as(kind: str, values: list) -> object:
    """`values` as a numpy array, an Arrow array, or a chunked array split in two chunks."""
    if kind == "numpy":
        return np.array([math.nan if v is None else v for v in values], dtype=np.float64)
    array = pa.array(values, pa.float64())
    if kind == "arrow":
        return array
    return pa.chunked_array([array.slice(0, 1), array.slice(1)])


@pytest.mark.parametrize("kind", ["numpy", "arrow", "chunked"])
@given(
    before=st.lists(
        st.one_of(st.none(), st.just(math.nan), st.floats(-FLOAT32_MAX, FLOAT32_MAX)),
        max_size=8,
    ),
    bad=st.floats(min_value=3.41e38, max_value=1.7e308).flatmap(lambda x: st.sampled_from([x, -x])),
    after=st.lists(st.one_of(st.none(), st.floats(allow_nan=True)), max_size=4),
    offset=st.integers(0, 10**6),
)
def test_beyond_float32_is_a_data_error_naming_file_column_row_and_value(
    kind, before, bad, after, offset
):
    values = _as(kind, [*before, bad, *after])
    row = offset + len(before) + 1
    with pytest.raises(DataError) as raised:
        check_float32_range(values, column="price ($)", source="data/a.csv", row_offset=offset)
    message = str(raised.value)
    assert message.startswith("data/a.csv: column 'price ($)' holds ")
    assert f" at row {row}, beyond float32's range" in message
    assert float(message.split(" holds ")[1].split(" at row")[0]) == pytest.approx(bad, rel=1e-7)


@pytest.mark.parametrize("kind", ["numpy", "arrow", "chunked"])
@given(
    values=st.lists(
        st.one_of(
            st.none(),
            st.floats(-FLOAT32_MAX, FLOAT32_MAX),
            st.sampled_from([math.inf, -math.inf, math.nan]),
        ),
        max_size=12,
    )
)
def test_numbers_within_float32_and_non_finite_ones_pass(kind, values):
    # infinity and NaN are another check's business (numeric_values): this one passes them
    check_float32_range(_as(kind, [*values, 0.0]), column="x", source="a.csv")


@pytest.mark.parametrize(
    "values",
    [
        np.array([2**63 - 1, -(2**63)], dtype=np.int64),
        np.array([3e38], dtype=np.float32),
        pa.array([2**64 - 1], pa.uint64()),
        pa.array([True, None]),
        pa.array(["1e39"]),
    ],
)
def test_integers_float32_booleans_and_text_always_pass(values):
    check_float32_range(values, column="x", source="a.csv")
