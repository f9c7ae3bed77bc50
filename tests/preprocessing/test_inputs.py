"""The preprocessor's input values (missing ones per dtype) and the names of its layers."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from mlcli.errors import DataError
from mlcli.features.schema import INT_MISSING, ColumnSchema, FeatureSchema, TargetSchema
from mlcli.preprocessing.inputs import MISSING_VALUES, layer_name, model_inputs

SCHEMA = FeatureSchema(
    columns=[
        ColumnSchema(name="age", type="numeric", dtype="float32"),
        ColumnSchema(name="grade", type="categorical", dtype="int64", vocabulary=[1, 2]),
        ColumnSchema(name="color", type="categorical", dtype="string", vocabulary=["red"]),
    ],
    target=TargetSchema(column="label", task="binary", classes=["no", "yes"]),
)


def test_each_dtype_has_its_missing_value():
    assert math.isnan(MISSING_VALUES["float32"])
    assert MISSING_VALUES["int64"] == INT_MISSING
    assert MISSING_VALUES["string"] == ""


def test_missing_values_are_filled_by_dtype():
    table = pa.table(
        {
            "age": pa.array([1.5, None, float("nan")]),
            "grade": pa.array([1, None, 2]),
            "color": pa.array(["red", None, "blue"]),
            "label": ["no", "yes", "no"],
        }
    )
    arrays = model_inputs(table, SCHEMA, source="t")
    assert {name: array.shape for name, array in arrays.items()} == {
        "age": (3, 1),
        "grade": (3, 1),
        "color": (3, 1),
    }
    assert arrays["age"].dtype == np.float32 and np.isnan(arrays["age"][1:, 0]).all()
    assert arrays["grade"][:, 0].tolist() == [1, MISSING_VALUES["int64"], 2]
    assert arrays["color"][:, 0].tolist() == ["red", MISSING_VALUES["string"], "blue"]


def test_integers_read_as_text_are_cast_or_named():
    table = pa.table({"age": [1.0], "grade": ["2"], "color": [3]})
    arrays = model_inputs(table, SCHEMA, source="t")
    assert arrays["grade"].tolist() == [[2]] and arrays["color"].tolist() == [["3"]]
    with pytest.raises(DataError, match="column 'grade' held integers in training"):
        model_inputs(pa.table({"age": [1.0], "grade": ["x"], "color": ["r"]}), SCHEMA, source="t")


@pytest.mark.parametrize(
    ("column", "expected"),
    [
        ("capital-gain", "lookup_capital_gain"),
        ("a/b c", "lookup_a_b_c"),
        ("snake_case2", "lookup_snake_case2"),
        ("2nd", "lookup_2nd"),
    ],
)
def test_layer_names_keep_letters_digits_and_underscores(column, expected):
    assert layer_name("lookup", column) == expected
