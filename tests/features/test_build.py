"""The schema of a table: statistics, vocabularies, label classes, and labels encoded."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlcli.config.schema import BinarySpec, CategoricalSpec, Config, NumericSpec, TextSpec
from mlcli.errors import DataError
from mlcli.features.build import (
    QUANTILE_POINTS,
    build_schema,
    build_target,
    drift_bins,
    encode_labels,
    ranked_vocabulary,
    text_tokens,
)
from mlcli.features.schema import TargetSchema

TARGET = TargetSchema(column="y", task="binary", classes=["no", "yes"])


def _config(**target: object) -> Config:
    document = {"name": "t", "data": {"train": "/t.csv"}, "target": {"column": "y", **target}}
    return Config.model_validate(document)


def _build(table: pa.Table, specs: dict, *, quantiles: bool = True):
    return build_schema(table, specs=specs, target=TARGET, excluded={}, quantiles=quantiles)


def test_numbers_get_moments_missing_flags_and_quantile_points():
    values = [1.0, 2.0, None, 3.0, float("nan"), 6.0]
    table = pa.table({"x": values, "n": [1, 2, 3, 4, 5, 6]})
    numeric = NumericSpec(type="numeric")
    x, n = _build(table, {"x": numeric, "n": numeric}).columns
    assert (x.type, x.dtype, x.has_missing, n.has_missing) == ("numeric", "float32", True, False)
    assert x.mean == pytest.approx(3.0) and x.variance == pytest.approx(3.5)
    assert len(x.quantiles) == QUANTILE_POINTS and (x.quantiles[0], x.quantiles[-1]) == (1, 6)
    assert _build(table, {"x": numeric}, quantiles=False).columns[0].quantiles == []
    quantile = NumericSpec(type="numeric", transform="quantile")
    column = _build(table, {"x": quantile}, quantiles=False).columns[0]
    assert len(column.quantiles) == QUANTILE_POINTS
    assert (column.mean, column.variance) == (0.0, 1.0)  # the transform's scores are standard


def test_the_log_transform_needs_values_above_minus_one():
    log = NumericSpec(type="numeric", transform="log")
    column = _build(pa.table({"x": [0.0, np.e - 1]}), {"x": log}).columns[0]
    assert column.mean == pytest.approx(0.5)
    with pytest.raises(DataError, match="transform `log` needs values above -1, found -1"):
        _build(pa.table({"x": [-1.0, 2.0]}), {"x": log})
    with pytest.raises(DataError, match="column 'x' has no values in the training split"):
        _build(pa.table({"x": pa.array([None, None], pa.float64())}), {"x": log})


def test_vocabularies_rank_by_frequency_then_text():
    assert ranked_vocabulary(
        ["b", "a", "", "c"], [2, 2, 9, 1], max_tokens=None, min_frequency=1
    ) == [
        "a",
        "b",
        "c",
    ]
    assert ranked_vocabulary([1, 2, 3], [5, 1, 3], max_tokens=2, min_frequency=1) == [1, 3]
    assert ranked_vocabulary([1, 2, 3], [5, 1, 3], max_tokens=None, min_frequency=3) == [1, 3]


def test_categories_keep_integers_and_choose_their_encoding():
    many = [f"v{i}" for i in range(40)]
    table = pa.table(
        {
            "grade": pa.array([3, 1, 3, None]),
            "few": ["b", "a", "b", "b"],
            "many": many[:4],
            "flag": [True, False, True, True],
        }
    )
    wide = pa.table({"many": many})
    auto = CategoricalSpec(type="categorical")
    grade, few = _build(table, {"grade": auto, "few": auto}).columns
    assert (grade.dtype, grade.vocabulary, grade.has_missing) == ("int64", [3, 1], True)
    assert (few.dtype, few.vocabulary, few.encoding) == ("string", ["b", "a"], "one_hot")
    (column,) = _build(wide, {"many": auto}).columns
    assert column.encoding == "embedding" and column.embedding_dim > 0
    (flag,) = _build(table, {"flag": BinarySpec(type="binary")}).columns
    assert (flag.type, flag.dtype, flag.vocabulary) == ("binary", "string", ["true", "false"])


def test_text_is_tokenised_as_text_vectorization_does():
    tokens = text_tokens(pa.chunked_array([["Good, GOOD day!", None, "a-b"]]))
    assert tokens.to_pylist() == ["good", "good", "day", "ab"]
    spec = TextSpec(type="text", max_tokens=4)
    (column,) = _build(pa.table({"t": ["Good, GOOD day!", "day one"]}), {"t": spec}).columns
    assert column.vocabulary == ["day", "good"]  # two of the four slots are reserved
    with pytest.raises(DataError, match="declared text but has type int64"):
        _build(pa.table({"t": [1, 2]}), {"t": spec})


def test_binary_classes_put_the_positive_class_last():
    labels = pa.chunked_array([["yes", "no", None, "yes"]])
    assert build_target(labels, _config()).classes == ["no", "yes"]
    target = build_target(labels, _config(positive_class="no"))
    assert (target.task, target.classes) == ("binary", ["yes", "no"])
    with pytest.raises(DataError, match="positive_class 'maybe' is not a class"):
        build_target(labels, _config(positive_class="maybe"))


def test_targets_that_cannot_be_learned_are_data_errors():
    with pytest.raises(DataError, match="every value is missing"):
        build_target(pa.chunked_array([pa.array([None], pa.string())]), _config())
    with pytest.raises(DataError, match="a single class 'a'"):
        build_target(pa.chunked_array([["a", "a"]]), _config())
    with pytest.raises(DataError, match="has 3 classes"):
        build_target(pa.chunked_array([["a", "b", "c"]]), _config(task="binary"))


def test_a_regression_target_is_scaled_and_standardised():
    target = build_target(pa.chunked_array([[1.0, 3.0]]), _config(task="regression", scale=2.0))
    assert (target.task, target.mean, target.std, target.scale) == ("regression", 4.0, 2.0, 2.0)
    labels = encode_labels(pa.chunked_array([[1.0, 3.0]]), target, source="t")
    assert labels.dtype == np.float32 and labels.tolist() == [2.0, 6.0]
    with pytest.raises(DataError, match="t: target 'y' has missing values"):
        encode_labels(pa.chunked_array([[1.0, None]]), target, source="t")


def test_labels_become_class_indices_and_unseen_ones_are_named():
    labels = encode_labels(pa.chunked_array([["yes", "no", "yes"]]), TARGET, source="t")
    assert labels.dtype == np.int32 and labels.tolist() == [1, 0, 1]
    numbers = TargetSchema(column="y", task="multiclass", classes=[1, 2, 3])
    assert encode_labels(pa.chunked_array([["3", "1"]]), numbers, source="t").tolist() == [2, 0]
    with pytest.raises(DataError, match=r"values not seen in training: \['maybe'\]"):
        encode_labels(pa.chunked_array([["maybe", "no"]]), TARGET, source="t")


@pytest.mark.parametrize(
    ("values", "spec"),
    [
        (pa.array([None, None, None], pa.string()), CategoricalSpec(type="categorical")),
        (pa.array([None, None, None], pa.int64()), CategoricalSpec(type="categorical")),
        (pa.array(["", None, ""], pa.string()), BinarySpec(type="binary")),
    ],
)
def test_a_category_column_without_a_value_is_named(values: pa.Array, spec) -> None:
    # Keras refuses an empty vocabulary ("Cannot set an empty vocabulary"): exit 3, not 1
    with pytest.raises(DataError, match="column 'c' has no values in the training split"):
        _build(pa.table({"c": values}), {"c": spec})


def test_a_category_column_whose_values_are_all_rare_is_named() -> None:
    spec = CategoricalSpec(type="categorical", min_frequency=5)
    with pytest.raises(DataError, match="column 'c' has no value frequent enough"):
        _build(pa.table({"c": ["a", "b", "a"]}), {"c": spec})


@given(
    st.lists(st.one_of(st.none(), st.floats(-1e6, 1e6), st.sampled_from([0.0, 1.0])), max_size=200)
)
def test_drift_bins_share_the_values_between_right_closed_bins(values):
    edges, fractions = drift_bins(pa.array(values, pa.float64()))
    present = np.array([v for v in values if v is not None])
    if len(present) == 0:
        assert (edges, fractions) == ([], [])
        return
    assert edges == sorted(set(edges)) and 1 <= len(edges) <= 9
    assert len(fractions) == len(edges) + 1 and sum(fractions) == pytest.approx(1.0)
    bounds = [-np.inf, *edges, np.inf]
    for index, fraction in enumerate(fractions):  # (low, high]: ties stay with their edge
        inside = (present > bounds[index]) & (present <= bounds[index + 1])
        assert fraction == pytest.approx(inside.mean())


def test_the_training_distribution_is_kept_in_raw_values_with_missing_rates():
    raw = [0.0] * 6 + [None, 3.0, 10.0, 99.0]
    table = pa.table({"g": pa.array(raw, pa.float64()), "c": ["a", "a", "b", None, "", *"aabab"]})
    logged, color = _build(
        table,
        {
            "g": NumericSpec(type="numeric", transform="log"),
            "c": CategoricalSpec(type="categorical"),
        },
    ).columns
    assert (logged.bins, logged.bin_fractions) == drift_bins(pa.array(raw, pa.float64()))
    assert logged.bins[0] == 0.0 and logged.bin_fractions[0] == pytest.approx(6 / 9)
    assert logged.missing_rate == pytest.approx(0.1) and color.missing_rate == pytest.approx(0.1)
    assert color.vocabulary == ["a", "b"]  # "" is outside the vocabulary, but not missing
    assert color.frequencies == pytest.approx([5 / 9, 3 / 9])
