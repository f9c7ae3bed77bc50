"""Drift against the training distribution: small on tables drawn like the training one, large on
shifted numbers, new categories or emptied columns; the same batch by batch as at once, in
bounded memory; runs trained before the distribution was kept get no PSI, not an error."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlcli.config.schema import BinarySpec, CategoricalSpec, FeatureSpec, NumericSpec, TextSpec
from mlcli.features.build import build_schema
from mlcli.features.drift import (
    EPSILON,
    UNSEEN_EXAMPLES,
    DriftMonitor,
    DriftReport,
    population_stability,
)
from mlcli.features.schema import FeatureSchema, TargetSchema

SPECS: dict[str, FeatureSpec] = {
    "amount": NumericSpec(type="numeric"),
    "count": NumericSpec(type="numeric", transform="log"),
    "color": CategoricalSpec(type="categorical"),
    "grade": CategoricalSpec(type="categorical"),
    "member": BinarySpec(type="binary"),
    "notes": TextSpec(type="text"),
}
COLORS = ["red", "green", "blue", "amber"]


@st.composite
def distributions(draw: st.DrawFn) -> dict:
    """Parameters of a table's distribution: a normal, a zero-heavy count, category shares."""
    weights = draw(st.lists(st.floats(0.1, 1.0), min_size=len(COLORS), max_size=len(COLORS)))
    return {
        "mean": draw(st.floats(-1e3, 1e3)),
        "std": draw(st.floats(0.01, 100.0)),
        "zeros": draw(st.floats(0.0, 0.9)),
        "colors": np.asarray(weights) / sum(weights),
        "missing": draw(st.floats(0.0, 0.3)),
    }


def draw_table(parameters: dict, rows: int, seed: int, *, shift: float = 0.0) -> pa.Table:
    """`rows` rows drawn from `parameters`' distribution (`amount` moved by `shift`)."""
    rng = np.random.default_rng(seed)
    amount = rng.normal(parameters["mean"], parameters["std"], rows) + shift
    count = np.where(rng.random(rows) < parameters["zeros"], 0, rng.integers(1, 50, rows))
    missing = rng.random(rows) < parameters["missing"]
    return pa.table(
        {
            "amount": pa.array(amount, mask=missing),
            "count": pa.array(count.astype(np.float64)),
            "color": pa.array(rng.choice(COLORS, rows, p=parameters["colors"]), mask=missing),
            "grade": pa.array(rng.integers(1, 4, rows), pa.int64()),
            "member": rng.choice(["yes", "no"], rows),
            "notes": pa.array(rng.choice(["fine day", "bad"], rows), mask=missing),
        }
    )


def trained_schema(table: pa.Table) -> FeatureSchema:
    target = TargetSchema(column="y", task="binary", classes=["no", "yes"])
    return build_schema(table, specs=SPECS, target=target, excluded={})


def drift_of(schema: FeatureSchema, *tables: pa.Table) -> DriftReport:
    monitor = DriftMonitor(schema)
    for table in tables:
        monitor.update(table)
    return monitor.finish()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(distributions(), st.integers(0, 2**32 - 1))
def test_a_table_drawn_like_the_training_one_has_a_small_psi(parameters, seed):
    schema = trained_schema(draw_table(parameters, 4000, seed))
    report = drift_of(schema, draw_table(parameters, 4000, seed + 1))
    # sampling noise alone: about (buckets - 1) * (1/4000 + 1/4000), far under 0.1
    assert all(psi < 0.1 for psi in report.psi().values()), report.psi()
    assert set(report.psi()) == {"amount", "count", "color", "grade", "member"}
    assert report.over(0.1) == []
    assert report.failure(0.1) is None


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(distributions(), st.integers(0, 2**32 - 1), st.floats(3.0, 50.0))
def test_a_shifted_number_has_a_large_psi(parameters, seed, sigmas):
    schema = trained_schema(draw_table(parameters, 2000, seed))
    shifted = draw_table(parameters, 2000, seed + 1, shift=sigmas * parameters["std"])
    report = drift_of(schema, shifted)
    assert report.psi()["amount"] > 1.0
    assert [c.name for c in report.over(0.2)] == ["amount"]
    assert "amount (PSI" in (report.failure(0.2) or "")


@given(st.floats(0.05, 1.0), st.integers(0, 2**32 - 1))
@settings(max_examples=15, deadline=None)
def test_new_categories_count_as_unseen_and_drift(share, seed):
    parameters = {"mean": 0.0, "std": 1.0, "zeros": 0.5, "colors": [0.25] * 4, "missing": 0.0}
    schema = trained_schema(draw_table(parameters, 2000, seed))
    table = draw_table(parameters, 2000, seed + 1)
    rng = np.random.default_rng(seed)
    new = rng.random(table.num_rows) < share
    colors = np.where(new, rng.choice(["violet", "teal", "ochre"], table.num_rows), "red")
    report = drift_of(schema, table.set_column(2, "color", pa.array(colors)))
    color = next(c for c in report.columns if c.name == "color")
    assert color.unseen_rate == pytest.approx(new.mean())
    assert color.training_unseen_rate == pytest.approx(0.0)
    assert set(color.unseen_examples) <= {"violet", "teal", "ochre"}
    assert color.psi is not None and color.psi > 0.2
    assert color.buckets[-2:] == ["(not in the vocabulary)", "(missing)"]
    assert sum(color.shares) == pytest.approx(1.0)


def test_a_column_that_stops_being_filled_drifts():
    parameters = {"mean": 0.0, "std": 1.0, "zeros": 0.5, "colors": [0.25] * 4, "missing": 0.0}
    schema = trained_schema(draw_table(parameters, 1000, 0))
    table = draw_table(parameters, 1000, 1)
    table = table.set_column(0, "amount", pa.nulls(table.num_rows, pa.float64()))
    amount = drift_of(schema, table).columns[0]
    assert amount.missing_rate == 1.0 and amount.training_missing_rate == 0.0
    assert amount.psi is not None and amount.psi > 1.0


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(distributions(), st.lists(st.integers(1, 599), max_size=6, unique=True))
def test_batch_by_batch_equals_the_whole_table(parameters, cuts):
    schema = trained_schema(draw_table(parameters, 600, 0))
    table = draw_table(parameters, 600, 1, shift=parameters["std"])
    bounds = [0, *sorted(cuts), table.num_rows]
    batches = [table.slice(a, b - a) for a, b in itertools.pairwise(bounds)]
    whole, streamed = drift_of(schema, table), drift_of(schema, *batches)
    assert streamed.rows == whole.rows
    for got, expected in zip(streamed.columns, whole.columns, strict=True):
        assert got.shares == pytest.approx(expected.shares)
        assert got.psi == pytest.approx(expected.psi)
        assert got.missing_rate == pytest.approx(expected.missing_rate)


def test_memory_stays_the_same_however_many_rows_are_counted():
    parameters = {"mean": 0.0, "std": 1.0, "zeros": 0.5, "colors": [0.25] * 4, "missing": 0.1}
    monitor = DriftMonitor(trained_schema(draw_table(parameters, 1000, 0)))
    sizes = []
    for seed in range(30):  # every batch brings 500 categories never seen before
        table = draw_table(parameters, 500, seed)
        fresh = pa.array([f"new-{seed}-{i}" for i in range(table.num_rows)])
        monitor.update(table.set_column(2, "color", fresh))
        state = [(t.counts.shape, len(t.examples)) for t in monitor.tallies]
        sizes.append((state, len(pickle.dumps(monitor))))
    # the counts' shapes stay; the pickle grows only by the bytes of larger counters
    assert len({repr(state) for state, _ in sizes[1:]}) == 1
    assert max(size for _, size in sizes) - sizes[0][1] < 64
    assert monitor.rows == 30 * 500
    color = next(c for c in monitor.finish().columns if c.name == "color")
    assert len(color.unseen_examples) == UNSEEN_EXAMPLES
    assert color.unseen_rate == 1.0


def test_a_run_without_a_training_distribution_has_no_psi_but_unseen_shares():
    parameters = {"mean": 0.0, "std": 1.0, "zeros": 0.5, "colors": [0.25] * 4, "missing": 0.0}
    schema = trained_schema(draw_table(parameters, 500, 0))
    for column in schema.columns:  # as schema.json was written before drift
        column.missing_rate, column.bins, column.bin_fractions, column.frequencies = (
            None,
            [],
            [],
            [],
        )
    old = FeatureSchema.from_dict(schema.to_dict())
    table = draw_table(parameters, 500, 1, shift=100.0)
    report = drift_of(old, table.set_column(2, "color", pa.array(["violet"] * 500)))
    assert report.psi() == {}
    assert report.over(0.0) == [] and report.failure(0.0) is None
    assert report.largest() is None and "unavailable" in report.summary()
    assert all("retrain" in (c.reason or "") for c in report.columns if c.type != "text")
    color = next(c for c in report.columns if c.name == "color")
    assert color.unseen_rate == 1.0 and color.unseen_examples == ["violet"]


def test_no_rows_gives_no_psi_and_text_columns_only_missing_rates():
    parameters = {"mean": 0.0, "std": 1.0, "zeros": 0.5, "colors": [0.25] * 4, "missing": 0.2}
    training = draw_table(parameters, 500, 0)
    report = drift_of(trained_schema(training), training.slice(0, 0))
    assert report.rows == 0 and report.psi() == {}
    notes = drift_of(trained_schema(training), training).columns[-1]
    assert notes.psi is None and "text" in (notes.reason or "")
    assert notes.missing_rate == pytest.approx(notes.training_missing_rate)


@given(
    st.lists(st.floats(0.0, 1.0), min_size=1, max_size=20).flatmap(
        lambda e: st.tuples(
            st.just(e), st.lists(st.floats(0.0, 1.0), min_size=len(e), max_size=len(e))
        )
    )
)
def test_psi_is_zero_on_equal_shares_and_never_negative(shares):
    expected, actual = shares
    assert population_stability(expected, expected) == 0.0
    assert population_stability(expected, actual) >= 0.0
    # an empty bucket counts as EPSILON: one share moving from nothing is finite
    assert np.isfinite(population_stability([0.0, 1.0], [0.5, 0.5]))
    assert population_stability([0.0, 1.0], [0.5, 0.5]) == pytest.approx(
        (0.5 - EPSILON) * np.log(0.5 / EPSILON) + (0.5 - 1.0) * np.log(0.5)
    )


def test_the_report_is_json_ready():
    import json

    parameters = {"mean": 0.0, "std": 1.0, "zeros": 0.5, "colors": [0.25] * 4, "missing": 0.1}
    report = drift_of(
        trained_schema(draw_table(parameters, 300, 0)), draw_table(parameters, 300, 1)
    )
    document = json.loads(json.dumps(report.to_dict()))
    assert document["rows"] == 300 and document["epsilon"] == EPSILON
    assert [c["name"] for c in document["columns"]] == list(SPECS)
