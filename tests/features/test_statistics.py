"""Statistics merged over record batches give the schema that `build_schema` gives the table."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlcli.config.schema import (
    BinarySpec,
    CategoricalSpec,
    Config,
    FeatureSpec,
    NumericSpec,
    TextSpec,
)
from mlcli.errors import DataError
from mlcli.features.build import build_schema, build_target
from mlcli.features.schema import FeatureSchema
from mlcli.features.statistics import (
    SKETCH_FACTOR,
    Counts,
    Moments,
    SchemaStatistics,
    UniformSample,
)
from mlcli.features.types import resolve_feature_specs

SPECS: dict[str, FeatureSpec] = {
    "x": NumericSpec(type="numeric"),
    "q": NumericSpec(type="numeric", transform="quantile"),
    "g": NumericSpec(type="numeric", transform="log"),
    "grade": CategoricalSpec(type="categorical"),
    "color": CategoricalSpec(type="categorical", max_tokens=3),
    "flag": BinarySpec(type="binary"),
    "notes": TextSpec(type="text", max_tokens=6),
}
WORDS = ["Good", "bad,", "the", "a", "day!", "ok"]


def _config(task: str) -> Config:
    document = {"name": "t", "data": {"train": "/t.csv"}, "target": {"column": "y", "task": task}}
    return Config.model_validate(document)


@st.composite
def tables(draw: st.DrawFn) -> tuple[pa.Table, list[int]]:
    """A table with a column of every kind, missing values included, and batch boundaries."""
    rows = draw(st.integers(2, 40))

    def column(values: st.SearchStrategy) -> list:
        return draw(st.lists(st.one_of(st.none(), values), min_size=rows, max_size=rows))

    numbers = st.one_of(st.floats(-1e6, 1e6), st.just(float("nan")))
    texts = st.lists(st.sampled_from(WORDS), max_size=5).map(" ".join)
    labels = ["no", "yes", *draw(st.lists(st.sampled_from(["no", "yes"]), min_size=rows - 2))]
    table = pa.table(
        {
            "x": pa.array(column(numbers), pa.float64()),
            "q": pa.array(column(st.integers(-50, 50)), pa.int64()),
            "g": pa.array(column(st.sampled_from([0.0, 0.0, 3.0, 7.5, 1e5])), pa.float64()),
            "grade": pa.array(column(st.integers(0, 4)), pa.int64()),
            "color": pa.array(column(st.sampled_from(["red", "blue", "", "green"])), pa.string()),
            "flag": pa.array(column(st.booleans()), pa.bool_()),
            "notes": pa.array(column(texts), pa.string()),
            "y": labels[:rows],
            "v": np.linspace(0.0, 3.0, rows).round(2),
        }
    )
    cuts = sorted(draw(st.lists(st.integers(1, rows - 1), max_size=4, unique=True)))
    return table, cuts


def _batches(table: pa.Table, cuts: list[int]) -> list[pa.Table]:
    bounds = [0, *cuts, table.num_rows]
    return [table.slice(start, end - start) for start, end in itertools.pairwise(bounds)]


def _merged(table: pa.Table, cuts: list[int], task: str) -> FeatureSchema:
    statistics = SchemaStatistics(
        SPECS, target_column="y" if task != "regression" else "v", task=task, seed=0
    )
    for batch in _batches(table, cuts):
        statistics.update(batch)
    return statistics.finish(_config(task), excluded={})


def _whole(table: pa.Table, task: str) -> FeatureSchema:
    config = _config(task)
    column = "y" if task != "regression" else "v"
    target = build_target(table.column(column), config)
    return build_schema(table, specs=SPECS, target=target, excluded={})


def _assert_same(merged: FeatureSchema, whole: FeatureSchema) -> None:
    assert [c.name for c in merged.columns] == [c.name for c in whole.columns]
    for got, expected in zip(merged.columns, whole.columns, strict=True):
        exact = ("type", "dtype", "vocabulary", "has_missing", "encoding", "embedding_dim")
        assert {k: getattr(got, k) for k in exact} == {k: getattr(expected, k) for k in exact}
        assert got.mean == pytest.approx(expected.mean, rel=1e-9, abs=1e-6), got.name
        assert got.variance == pytest.approx(expected.variance, rel=1e-6, abs=1e-6), got.name
        assert got.quantiles == pytest.approx(expected.quantiles, rel=1e-12), got.name
        # the training distribution that drift compares with: raw values, `log` or not
        assert got.missing_rate == pytest.approx(expected.missing_rate), got.name
        assert got.bins == pytest.approx(expected.bins, rel=1e-12), got.name
        assert got.bin_fractions == pytest.approx(expected.bin_fractions), got.name
        assert got.frequencies == pytest.approx(expected.frequencies), got.name


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables())
def test_merged_statistics_equal_the_whole_tables(drawn):
    table, cuts = drawn
    for task in ("binary", "regression"):
        try:
            whole = _whole(table, task)
        except DataError as error:  # a column with no value at all: the same error streamed
            with pytest.raises(DataError, match=re.escape(str(error))):
                _merged(table, cuts, task)
            continue
        merged = _merged(table, cuts, task)
        _assert_same(merged, whole)
        if task == "binary":
            assert merged.target == whole.target
        else:
            assert merged.target.mean == pytest.approx(whole.target.mean)
            assert merged.target.std == pytest.approx(whole.target.std)


def test_class_counts_follow_the_classes():
    table = pa.table({"y": ["no", "yes", "yes", "yes"]})
    statistics = SchemaStatistics({}, target_column="y", task="binary", seed=0)
    for batch in _batches(table, [1, 3]):
        statistics.update(batch)
    assert statistics.class_counts(["yes", "no", "maybe"]) == [3, 1, 0]


def test_no_training_rows_is_a_data_error():
    statistics = SchemaStatistics(SPECS, target_column="y", task="binary", seed=0)
    with pytest.raises(DataError, match="no rows with a label"):
        statistics.finish(_config("binary"), excluded={})


def test_moments_merge_as_numpy_computes_them():
    values = np.random.default_rng(0).normal(5.0, 3.0, 1000)
    moments = Moments()
    for part in np.array_split(values, 7):
        moments.update(pa.array(part))
    moments.update(pa.array([None], pa.float64()))
    assert (moments.count, moments.mean) == (1000, pytest.approx(values.mean()))
    assert moments.variance == pytest.approx(values.var())


def test_the_quantile_sample_stays_uniform_and_bounded():
    sample = UniformSample(100, np.random.default_rng(0))
    for start in range(0, 10_000, 1000):
        sample.update(pa.array(np.arange(start, start + 1000, dtype=np.float64)))
    assert len(sample.values) == 100 and len(set(sample.values)) == 100
    assert 2500 < np.median(sample.values) < 7500


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(1, 60), min_size=1, max_size=80),
    capacity=st.integers(1, 12),
    batch=st.integers(1, 50),
    seed=st.integers(0, 2**16),
)
def test_the_vocabulary_sketch_is_bounded_and_keeps_every_heavy_value(
    counts, capacity, batch, seed
):
    # value i appears counts[i] times, in a shuffled stream cut into batches
    stream = np.random.default_rng(seed).permutation(np.repeat(np.arange(len(counts)), counts))
    sketch = Counts(capacity=capacity)
    for start in range(0, len(stream), batch):
        sketch.update(pa.array([f"v{i}" for i in stream[start : start + batch]]))
        assert sketch.size <= capacity
    assert sketch.offset <= len(stream) / (capacity + 1)
    values, estimates = sketch.lists()
    found = dict(zip(values, estimates, strict=True))
    for index, true in enumerate(counts):
        if true > sketch.offset:  # Misra-Gries: every such value is kept
            assert f"v{index}" in found
        if f"v{index}" in found:
            assert true <= found[f"v{index}"] <= true + sketch.offset
    if len(counts) <= capacity:
        assert sketch.offset == 0 and found == {f"v{i}": n for i, n in enumerate(counts)}


def test_identifier_like_columns_stream_in_bounded_memory_and_keep_the_frequent_values():
    rows, batch, cap = 200_000, 8192, 50
    rng = np.random.default_rng(0)
    frequent = rng.random(rows) < 0.3  # 30% of rows: 10 values of falling frequency
    ids = np.where(
        frequent,
        rng.choice(10, rows, p=np.arange(10, 0, -1) / 55),
        np.arange(rows) + 1000,  # the rest: a distinct value per row
    )
    specs: dict[str, FeatureSpec] = {"id": CategoricalSpec(type="categorical", max_tokens=cap)}
    statistics = SchemaStatistics(specs, target_column="y", task="binary", seed=0)
    largest = 0
    for start in range(0, rows, batch):
        chunk = ids[start : start + batch].astype(str)
        part = pa.table({"id": chunk, "y": np.where(np.arange(len(chunk)) % 2, "a", "b")})
        statistics.update(part)
        largest = max(largest, statistics.columns["id"].counts.size)
    assert largest <= SKETCH_FACTOR * cap  # never a count per distinct value (200k)
    column = statistics.finish(_config("binary"), excluded={}).columns[0]
    # the frequent values by falling frequency; values seen once are below the sketch's error
    assert column.vocabulary[:10] == [str(i) for i in range(10)]
    assert len(column.vocabulary) <= cap


def _streamed_vocabulary(values: list[str], max_tokens: int) -> list[str]:
    statistics = SchemaStatistics(
        {"c": CategoricalSpec(type="categorical", max_tokens=max_tokens)},
        target_column="y",
        task="binary",
        seed=0,
    )
    for start in range(0, len(values), 64):
        part = values[start : start + 64]
        statistics.update(pa.table({"c": part, "y": ["a", "b"] * (len(part) // 2)}))
    return statistics.finish(_config("binary"), excluded={}).columns[0].vocabulary


@pytest.mark.parametrize("distinct", [15, 300])
def test_vocabularies_are_deterministic_with_ties_broken_by_value(distinct):
    values = [f"v{i:03d}" for i in range(distinct)] * 4  # every value ties
    first = _streamed_vocabulary(values, 5)
    assert _streamed_vocabulary(values, 5) == first  # the same stream, the same vocabulary
    if distinct <= SKETCH_FACTOR * 5:  # exact counts: any order gives the first values
        assert first == _streamed_vocabulary(values[::-1], 5) == values[:5]
    assert len(first) == 5  # every value tied: the sketch still keeps a full vocabulary


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_streamed_identifier_column_keeps_a_full_vocabulary_and_its_frequent_values(seed):
    # every value once, far more of them than the sketch holds, plus a few frequent ones
    rng = np.random.default_rng(seed)
    frequent = [f"hot{i}" for i in range(3)]
    values = [f"id{i:05d}" for i in range(2000)] + frequent * 40
    values = [values[i] for i in rng.permutation(len(values))][: len(values) // 2 * 2]
    vocabulary = _streamed_vocabulary(values, 10)
    assert len(vocabulary) == 10
    assert sorted(vocabulary[:3]) == frequent  # first; their order is only approximate
    assert set(vocabulary) <= set(values)


@pytest.mark.parametrize(("own", "default", "kept"), [(None, 7, 7), (3, 7, 3), (None, 10000, 40)])
def test_the_in_memory_schema_applies_the_same_cap(own, default, kept):
    table = pa.table(
        {"id": [f"row-{i}" for i in range(40)] * 2, "y": ["a", "b"] * 40, "x": [1.0] * 80}
    )
    document = {
        "name": "t",
        "data": {"train": "/t.csv"},
        "target": {"column": "y"},
        "features": {"max_tokens": default, "id": {"type": "categorical", "max_tokens": own}},
    }
    config = Config.model_validate(document)
    specs, _ = resolve_feature_specs(table, config)
    assert specs["id"].max_tokens == (own or default)  # type: ignore[union-attr]
    target = build_target(table.column("y"), config)
    whole = build_schema(table, specs=specs, target=target, excluded={})
    assert len(whole.columns[0].vocabulary) == kept
    assert whole.columns[0].vocabulary == sorted(f"row-{i}" for i in range(40))[:kept]
