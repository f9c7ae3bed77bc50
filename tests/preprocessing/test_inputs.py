"""The preprocessor's input values (missing ones per dtype, float32's range) and the one
injective rule that names columns inside models (`input_name`)."""

from __future__ import annotations

import math
import re

import numpy as np
import pyarrow as pa
import pytest
from e2e.strategies import ODD_NAMES
from hypothesis import given, settings
from hypothesis import strategies as st

from mlcli.errors import ConfigError, DataError
from mlcli.exporting.runtimes import python_keyword
from mlcli.features.schema import INT_MISSING, ColumnSchema, FeatureSchema, TargetSchema
from mlcli.preprocessing.inputs import (
    MISSING_VALUES,
    encoded_input_name,
    input_name,
    input_names,
    layer_name,
    model_inputs,
)

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


def test_numbers_beyond_float32_are_a_data_error_naming_column_and_row():
    table = pa.table({"age": [1.0, -1e39], "grade": [1, 2], "color": ["red", "red"]})
    with pytest.raises(DataError, match=r"t: column 'age' holds -1e\+39 at row 2"):
        model_inputs(table, SCHEMA, source="t")


@pytest.mark.parametrize("value", [3.4e38, -3.4e38, 1e-45, -1e30, 0.0])
def test_numbers_within_float32_pass_as_float32(value):
    table = pa.table({"age": [value], "grade": [1], "color": ["red"]})
    array = model_inputs(table, SCHEMA, source="t")["age"]
    assert array.dtype == np.float32 and np.isfinite(array).all()


PLAIN = ["age", "snake_case2", "isMember", "a_b", "A", "class", "n" * 48]
TF_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")  # within TF's op names; an identifier too


@pytest.mark.parametrize("column", PLAIN)
def test_a_plain_identifier_keeps_its_name(column):
    assert input_name(column) == column
    assert layer_name("lookup", column) == f"lookup_{column}"


def test_input_names_pinned():
    # saved models and exports hold these names: a change of the rule breaks them
    assert input_name("capital-gain") == "capital_gain__f0729bda9d"
    assert input_name("2nd") == "x2nd__c21365c7ea"


def test_odd_names_get_distinct_valid_names():
    names = input_names(ODD_NAMES)
    assert len(set(names.values())) == len(ODD_NAMES)
    for column, name in names.items():
        assert TF_NAME.fullmatch(name) and len(name) <= 60, (column, name)
        assert python_keyword(name) == name  # a loaded signature renames nothing


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80), st.text(max_size=80))
def test_input_name_is_injective_and_always_valid(first, second):
    for column in (first, second):
        name = input_name(column)
        assert TF_NAME.fullmatch(name) and len(name) <= 60
        assert python_keyword(name) == name
    if first != second:
        assert input_name(first) != input_name(second)


@given(st.text(alphabet=st.sampled_from("ab_-. /$€é🎉1"), min_size=1, max_size=6), st.data())
def test_names_that_differ_only_in_replaced_characters_stay_apart(column, data):
    replaced = column.translate(str.maketrans({c: "_" for c in "-. /$€é🎉"}))
    if replaced != column:
        assert input_name(column) != input_name(replaced)
    other = data.draw(st.text(alphabet=st.sampled_from("-. /$€é🎉"), min_size=1, max_size=1))
    swapped = "".join(other if c in "-. /$€é🎉" else c for c in column)
    if swapped != column:
        assert input_name(column) != input_name(swapped)


def test_two_columns_sharing_a_model_name_are_a_config_error(monkeypatch):
    import mlcli.preprocessing.inputs as inputs

    monkeypatch.setattr(inputs, "input_name", lambda column: "same")
    with pytest.raises(ConfigError, match="'a' and 'b' both take the model name 'same'"):
        inputs.input_names(["a", "b"])


def test_encoded_outputs_take_their_columns_input_names():
    assert encoded_input_name("numeric") == "numeric"
    assert encoded_input_name("categorical__a/b") == "categorical__" + input_name("a/b")
    assert encoded_input_name("text__a b") == "text__" + input_name("a b")
