"""The export check's sample and comparison: rows saved in the run (`sample.parquet`), the head
of the data a run names when it has none, rows made from the schema when that data is gone, and
the comparison of an export's outputs with the Keras model's."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from mlcli.runs import directory as runs


@pytest.fixture
def run_copy(trained_runs, tmp_path) -> Path:
    """A copy of the binary run without `sample.parquet` (as a run made before it existed)."""
    copy = Path(shutil.copytree(trained_runs["binary"], tmp_path / "run"))
    (copy / runs.SAMPLE).unlink(missing_ok=True)
    return copy


def _save_sample(run: Path, table: pa.Table) -> pa.Table:
    """Writes `sample.parquet` as training does: raw input columns and the target."""
    schema = json.loads((run / runs.SCHEMA).read_text())
    names = [c["name"] for c in schema["columns"]] + [schema["target"]["column"]]
    sample = table.select(names)
    pq.write_table(sample, run / runs.SAMPLE)
    return sample


def _without_data(loaded):
    data = loaded.config.data.model_copy(update={"train": "/nonexistent/data.csv"})
    loaded.config = loaded.config.model_copy(update={"data": data})
    return loaded


def test_sample_falls_back_to_the_schema_when_the_data_is_gone(run_copy):
    from mlcli.exporting.check import sample_columns
    from mlcli.features.schema import INT_MISSING
    from mlcli.runs.loading import open_run

    loaded = _without_data(open_run(run_copy, with_model=False))
    columns, source = sample_columns(loaded, rows=7)
    assert "7 rows of the rows made from schema.json" in source
    assert {len(values) for values in columns.values()} == {9}
    assert math.isnan(columns["age"][-2, 0]) and columns["color"][-2, 0] == ""
    assert columns["grade"][-2, 0] == INT_MISSING
    color = next(c for c in loaded.schema.columns if c.name == "color")
    assert columns["color"][-1, 0] not in color.vocabulary


def test_sample_is_the_rows_saved_in_the_run(run_copy, trained_runs):
    from mlcli.exporting.check import sample_columns
    from mlcli.runs.loading import open_run

    rows = pa_csv.read_csv(trained_runs["data"]).slice(100, 5)
    _save_sample(run_copy, rows)
    loaded = _without_data(open_run(run_copy, with_model=False))  # the data is not needed
    columns, source = sample_columns(loaded, rows=200)
    assert source.startswith(f"5 rows of the run's {runs.SAMPLE} + 1 all-missing row")
    assert {len(values) for values in columns.values()} == {7}
    assert columns["color"][:5, 0].tolist() == rows.column("color").to_pylist()
    assert columns["grade"][:5, 0].tolist() == rows.column("grade").to_pylist()
    np.testing.assert_allclose(
        columns["income"][:5, 0], rows.column("income").to_numpy(), rtol=1e-6
    )


def test_a_run_without_a_sample_reads_only_the_head_of_its_data(run_copy, monkeypatch):
    import mlcli.data.splits
    import mlcli.data.tables
    from mlcli.exporting.check import sample_columns
    from mlcli.runs.loading import open_run

    def whole_table(*args, **kwargs):
        raise AssertionError("the check read the whole table")

    monkeypatch.setattr(mlcli.data.tables, "read_table", whole_table)
    monkeypatch.setattr(mlcli.data.splits, "load_splits", whole_table)
    loaded = open_run(run_copy, with_model=False)
    columns, source = sample_columns(loaded, rows=7)
    data = Path(loaded.config.data.train)
    assert source.startswith(f"7 rows of the training data {data} + 1 all-missing row")
    head = pa_csv.read_csv(data).slice(0, 7)
    assert columns["color"][:7, 0].tolist() == head.column("color").to_pylist()


def test_a_validation_table_is_read_rather_than_the_training_one(run_copy, tmp_path):
    from conftest import make_table

    from mlcli.exporting.check import sample_columns
    from mlcli.runs.loading import open_run

    validation = tmp_path / "validation.csv"
    table = make_table(30, seed=9)
    pa_csv.write_csv(table, validation)
    loaded = open_run(run_copy, with_model=False)
    data = loaded.config.data.model_copy(update={"validation": str(validation)})
    loaded.config = loaded.config.model_copy(update={"data": data})
    columns, source = sample_columns(loaded, rows=12)
    assert source.startswith(f"12 rows of the validation data {validation}")
    assert columns["review"][:12, 0].tolist() == table.column("review").to_pylist()[:12]


def test_a_corrupt_sample_is_a_run_error(run_copy):
    from mlcli.errors import RunError
    from mlcli.exporting.check import sample_columns
    from mlcli.runs.loading import open_run

    (run_copy / runs.SAMPLE).write_bytes(b"not parquet")
    with pytest.raises(RunError, match=runs.SAMPLE):
        sample_columns(open_run(run_copy, with_model=False))


def test_export_is_checked_on_the_saved_sample(run_copy, trained_runs, tmp_path):
    from mlcli.exporting.export import export

    _save_sample(run_copy, pa_csv.read_csv(trained_runs["data"]).slice(0, 5))
    folder = export(run_copy, format="keras", output=tmp_path / "keras")
    check = json.loads((folder / "export.json").read_text())["check"]
    assert check["passed"] and check["rows"] == 7
    assert check["sample"].startswith(f"5 rows of the run's {runs.SAMPLE}")


def test_compare_counts_label_flips_and_nan_as_differences(trained_runs):
    from mlcli.exporting.check import compare
    from mlcli.runs.loading import open_run

    schema = open_run(trained_runs["binary"], with_model=False).schema
    classes = [str(c) for c in schema.target.classes]
    reference = np.array([[0.2], [0.9], [0.5]], dtype=np.float32)
    same = {
        "probabilities": np.hstack([1 - reference, reference]),
        "label": np.array([classes[0], classes[1], classes[1]]),
    }
    assert compare("saved_model", same, reference, schema) == (0.0, 0, 0, True)
    flipped = {**same, "label": np.array([classes[1], classes[1], classes[1]])}
    assert compare("saved_model", flipped, reference, schema)[2:] == (1, False)
    broken = {**same, "probabilities": same["probabilities"].copy()}
    broken["probabilities"][1, 1] = np.nan
    difference, row, _, passed = compare("saved_model", broken, reference, schema)
    assert (difference, row, passed) == (math.inf, 1, False)


def test_compare_scales_the_tolerance_with_the_outputs_and_fails_on_any_non_finite(
    trained_runs,
):
    from mlcli.exporting.check import ABSOLUTE_TOLERANCE, compare, tolerance
    from mlcli.runs.loading import open_run

    schema = open_run(trained_runs["regression"], with_model=False).schema
    reference = np.array([[2500.0], [0.0], [-3.0]], dtype=np.float32)
    # float32 rounding at 2500 is ~1e-4: a row near zero may differ by as much
    drift = reference + np.array([[2e-3], [5e-3], [-1e-3]], dtype=np.float32)
    assert compare("saved_model", {"prediction": drift}, reference, schema)[3] is True
    assert tolerance(np.array([[0.2], [0.0]]))[1, 0] == ABSOLUTE_TOLERANCE  # scale >= 1
    beyond = reference + np.array([[0.0], [0.5], [0.0]], dtype=np.float32)
    assert compare("saved_model", {"prediction": beyond}, reference, schema)[1:] == (1, 0, False)
    for bad in (np.nan, np.inf, -np.inf):
        both = reference.copy()
        both[2, 0] = bad
        # the same NaN or inf on both sides is a failure too: a model that outputs it is broken
        difference, row, _, passed = compare("saved_model", {"prediction": both}, both, schema)
        assert (difference, row, passed) == (math.inf, 2, False)
