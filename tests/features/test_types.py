"""Inferring a column's feature type and the target's task, and every input column's spec."""

from __future__ import annotations

import pyarrow as pa
import pytest

from mlcli.config.schema import Config, NumericSpec
from mlcli.errors import DataError
from mlcli.features.types import infer_feature_type, infer_task, resolve_feature_specs


def _column(values: list, data_type: pa.DataType | None = None) -> pa.ChunkedArray:
    return pa.chunked_array([pa.array(values, data_type)])


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([True, False, None], "binary"),
        ([1, 5, 9], "numeric"),
        ([1.5, None, 2.0], "numeric"),
        (["yes", "no", "yes", None], "binary"),
        (["red", "green", "blue"], "categorical"),
        (["a long message of words", "and another one right here"], "text"),
        (["two words", "and three more", "one"], "categorical"),
    ],
)
def test_feature_types_from_values(values, expected):
    assert infer_feature_type(_column(values)) == expected


def test_an_empty_column_has_no_type():
    assert infer_feature_type(_column([None, None], pa.string())) is None


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.5, 1.25, 2.0], "regression"),
        ([0.0, 1.0, 1.0, 0.0], "binary"),  # whole floats with few values are classes
        (["no", "yes", None], "binary"),
        (["a", "b", "c"], "multiclass"),
        (list(range(5)), "multiclass"),
        (list(range(21)), "regression"),
    ],
)
def test_the_task_from_the_target(values, expected):
    assert infer_task(_column(values)) == expected


def _config(features: dict) -> Config:
    document = {"name": "t", "data": {"train": "/t.csv"}, "target": {"column": "y"}}
    return Config.model_validate({**document, "features": features})


def test_declared_specs_win_and_the_rest_are_inferred():
    table = pa.table(
        {
            "y": ["a", "b", "a"],
            "code": [1, 2, 3],
            "color": ["red", "blue", "green"],
            "id": [1, 2, 3],
            "empty": pa.array([None, None, None], pa.string()),
        }
    )
    specs, excluded = resolve_feature_specs(
        table, _config({"code": "categorical", "exclude": ["id"]})
    )
    assert {name: spec.type for name, spec in specs.items()} == {
        "code": "categorical",
        "color": "categorical",
    }
    assert excluded == {"id": "excluded in the config", "empty": "every value is missing"}
    specs, _ = resolve_feature_specs(table.drop(["empty"]), _config({}))
    assert isinstance(specs["code"], NumericSpec) and "y" not in specs


def test_no_column_besides_the_target_is_a_data_error():
    table = pa.table({"y": [1, 2], "id": [1, 2]})
    with pytest.raises(DataError, match="no feature columns left besides the target 'y'"):
        resolve_feature_specs(table, _config({"exclude": ["id"]}))


_UNUSABLE = [
    pa.array([[1, 2], None, []], pa.list_(pa.int64())),
    pa.array([[1.0], None, []], pa.large_list(pa.float64())),
    pa.array([{"a": 1}, None, {"a": 2}], pa.struct([("a", pa.int64())])),
    pa.array([[("k", 1)], None, []], pa.map_(pa.string(), pa.int64())),
    pa.array([b"\xff", None, b"a"], pa.binary()),
    pa.array([b"ab", None, b"cd"], pa.binary(2)),
]


@pytest.mark.parametrize("column", _UNUSABLE, ids=lambda c: str(c.type))
def test_a_column_of_an_unusable_type_names_its_type_and_the_fix(column):
    table = pa.table({"x": [1.0, 2.0, 3.0], "odd/name": column, "y": ["a", "b", "a"]})
    config = _config({})
    with pytest.raises(DataError) as raised:
        resolve_feature_specs(table, config, source="t.parquet")
    assert str(raised.value).startswith(
        f"t.parquet: feature column 'odd/name' has Arrow type {column.type}, which mlcli "
        "cannot use as a feature; "
    )
    assert "features.exclude: ['odd/name']" in str(raised.value)
    specs, dropped = resolve_feature_specs(
        table, _config({"exclude": ["odd/name"]}), source="t.parquet"
    )
    assert list(specs) == ["x"] and "odd/name" in dropped
    as_target = table.rename_columns(["x", "y", "z"])
    target = _config({})
    with pytest.raises(DataError, match=r"^t.parquet: target column 'y' has Arrow type"):
        resolve_feature_specs(as_target, target, source="t.parquet")


@pytest.mark.parametrize(
    "column",
    [
        pa.array([1, 2, 3], pa.date32()),
        pa.array([1, 2, 3], pa.timestamp("ms", tz="UTC")),
        pa.array([1, 2, 3], pa.time32("s")),
        pa.array([1, 2, 3], pa.duration("s")),
        pa.array([None, None, None], pa.null()),
        pa.array([1, 2, 3], pa.decimal128(10, 2)),
    ],
    ids=str,
)
def test_dates_times_decimals_and_empty_columns_are_usable(column):
    table = pa.table({"x": [1.0, 2.0, 3.0], "c": column, "y": ["a", "b", "a"]})
    config = _config({})
    specs, excluded = resolve_feature_specs(table, config, source="t.parquet")
    assert "c" in specs or excluded.get("c") == "every value is missing"


@pytest.mark.parametrize(
    ("values", "task"),
    [(["1.5", "2.25"], "regression"), (["1", "0"], "binary"), (["1", "2", "3"], "multiclass")],
)
def test_a_decimal_target_is_inferred_as_a_float_one(values, task):
    from decimal import Decimal

    column = pa.chunked_array([pa.array([Decimal(v) for v in values] * 10)])
    assert infer_task(column) == task == infer_task(pa.chunked_array([column.cast(pa.float64())]))
