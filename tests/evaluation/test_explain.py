"""`mlcli explain` through the CLI and the API: a generated table whose label depends on known
columns only, each task's folder and printout, SHAP attributions, and the failure paths."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest
from typer.testing import CliRunner

import mlcli
from mlcli.cli.app import app
from mlcli.features.schema import FeatureSchema

runner = CliRunner()


@pytest.fixture
def runs_copy(trained_runs, tmp_path) -> dict[str, Path]:
    """Copies of the shared runs: explain writes into a run, the shared ones stay untouched."""
    return {
        task: Path(shutil.copytree(trained_runs[task], tmp_path / task))
        for task in ("binary", "multiclass", "regression")
    }


def _explain(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["explain", *args])
    return result.exit_code, result.stdout, result.stderr


def _inputs(run: Path) -> list[str]:
    return FeatureSchema.load(run / "schema.json").input_names


def _generated(rows: int, seed: int) -> pa.Table:
    """`signal` (a number) and `group` (a category) decide the label; `static` and `tag` are
    noise, a number and a category drawn independently of it."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=rows)
    group = rng.choice(["north", "south", "east", "west"], rows)
    shift = np.select([group == "north", group == "south"], [2.0, -2.0], 0.0)
    label = np.where(2.0 * signal + shift + rng.normal(0, 0.3, rows) > 0, "yes", "no")
    return pa.table(
        {
            "signal": signal.round(4),
            "static": rng.normal(size=rows).round(4),
            "group": group,
            "tag": rng.choice(["a", "b", "c"], rows),
            "label": label,
        }
    )


@pytest.mark.slow
def test_generated_table_ranks_the_label_columns_first_and_noise_near_zero(tmp_path):
    from mlcli.config.loading import parse_config
    from mlcli.training.train import train

    pa_csv.write_csv(_generated(1500, seed=0), tmp_path / "train.csv")
    pa_csv.write_csv(_generated(1000, seed=1), tmp_path / "test.csv")
    config = parse_config(
        {
            "name": "known",
            "seed": 1,
            "data": {"train": str(tmp_path / "train.csv"), "validation": 0.2},
            "target": {"column": "label", "task": "binary"},
            "features": {"group": "categorical", "tag": "categorical"},
            "training": {"epochs": 15, "batch_size": 64},
            "output": {"dir": str(tmp_path / "runs")},
        }
    )
    run = train(config)
    code, stdout, stderr = _explain(str(run), "--data", str(tmp_path / "test.csv"), "--json")
    assert code == 0, stderr
    found = json.loads(stdout)
    ranking = [item["column"] for item in found["columns"]]
    assert set(ranking[:2]) == {"signal", "group"}, found["columns"]
    top = found["columns"][0]["importance"]
    for item in found["columns"][2:]:
        # within two spreads of zero, or under a twentieth of the top column's
        assert abs(item["importance"]) <= max(2 * item["std"], 0.05 * top), item


@pytest.mark.parametrize(("task", "metric"), [("binary", "log_loss"), ("regression", "rmse")])
def test_folder_and_plain_lines_rank_every_input_column(runs_copy, trained_runs, task, metric):
    run = runs_copy[task]
    data = str(trained_runs["data"])
    code, stdout, stderr = _explain(str(run), "--data", data, "--repeats", "2")
    assert code == 0, stderr
    lines = stdout.splitlines()
    inputs = _inputs(run)
    assert lines[0].startswith(f"{metric} ") and "400 rows" in lines[0]
    assert [line.split()[1] for line in lines[1:-1]] == [
        item["column"]
        for item in json.loads((Path(lines[-1]) / "importance.json").read_text())["columns"]
    ]
    folder = Path(lines[-1])
    assert folder.parent == run / "explanations" and folder.name.startswith("data-")
    assert {p.name for p in folder.iterdir()} == {"importance.json", "importance.png", "report.md"}
    saved = json.loads((folder / "importance.json").read_text())
    assert saved["metric"] == metric and saved["rows"] == 400 and saved["repeats"] == 2
    assert sorted(item["column"] for item in saved["columns"]) == sorted(inputs)
    means = [item["importance"] for item in saved["columns"]]
    assert means == sorted(means, reverse=True)
    # all 400 rows are used, so the baseline is training's own test metric on that file
    training = json.loads((run / "metrics.json").read_text())["test"]
    expected = training["loss"] if task == "binary" else training["rmse"]
    assert saved["baseline"] == pytest.approx(expected, rel=1e-3)
    report = (folder / "report.md").read_text()
    assert "![importance](importance.png)" in report
    assert all(f"| {name} |" in report for name in inputs)


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_rows_are_attributed_so_that_base_plus_values_is_the_output(runs_copy, trained_runs, task):
    pytest.importorskip("shap")
    run = runs_copy[task]
    args = ["--data", str(trained_runs["data"]), "--rows", "2", "--repeats", "1", "--json"]
    code, stdout, stderr = _explain(str(run), *args)
    assert code == 0, stderr
    found = json.loads(stdout)  # nothing but the JSON document on stdout
    records = found["attributions"]
    assert [record["row"] for record in records] == [0, 1]
    inputs = _inputs(run)
    for record in records:
        total = record["base"] + sum(record[name] for name in inputs)
        assert total == pytest.approx(record["output"], abs=1e-4)
        assert ("class" in record) == (task == "multiclass")
    written = pa_csv.read_csv(Path(found["folder"]) / "attributions.csv")
    assert written.num_rows == 2 and set(inputs) <= set(written.column_names)


def test_the_api_is_seeded_and_samples_rows(runs_copy, trained_runs):
    options = {"data": trained_runs["data"], "repeats": 2, "sample": 150, "seed": 4}
    first = mlcli.explain(runs_copy["regression"], **options)
    again = mlcli.explain(runs_copy["regression"], **options)
    assert first.rows == 150 and first.metric == "rmse"
    assert first.importances == again.importances
    assert first.baseline == again.baseline
    assert first.folder != again.folder and first.folder and again.folder
    assert first.folder.is_dir() and again.folder.is_dir()


def test_any_metric_of_the_task_can_be_chosen(runs_copy, trained_runs):
    data = str(trained_runs["data"])
    code, stdout, stderr = _explain(
        str(runs_copy["multiclass"]), "--data", data, "--metric", "accuracy", "--json"
    )
    assert code == 0, stderr
    found = json.loads(stdout)
    assert found["metric"] == "accuracy" and "decrease" in found["importance_is"]


def test_failures_name_the_cause_and_write_nothing(runs_copy, trained_runs, tmp_path, monkeypatch):
    run, data = runs_copy["binary"], str(trained_runs["data"])
    table = pa_csv.read_csv(trained_runs["data"]).drop(["color"])
    pa_csv.write_csv(table, tmp_path / "short.csv")
    code, _, stderr = _explain(str(run), "--data", str(tmp_path / "short.csv"))
    assert code == 3 and "'color'" in stderr
    code, _, stderr = _explain(str(tmp_path / "nowhere"), "--data", data)
    assert code == 4 and "no such run" in stderr
    partial = Path(shutil.copytree(run, tmp_path / "tiny" / ".20260101-000000-abcdef.partial"))
    manifest = json.loads((partial / "manifest.json").read_text())
    (partial / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    (partial / "model.keras").unlink()  # as a run still training has none yet
    code, _, stderr = _explain(str(partial), "--data", data)
    assert code == 4 and "incomplete" in stderr
    for option, value, named in (
        ("--rows", "-1", "--rows"),
        ("--rows", "two", "--rows"),
        ("--repeats", "0", "--repeats"),
        ("--sample", "0", "--sample"),
        ("--metric", "auc_roc", "valid metrics: accuracy"),
    ):
        code, _, stderr = _explain(str(run), "--data", data, option, value)
        assert code == 2 and named in stderr, (option, value, stderr)
    monkeypatch.setitem(sys.modules, "shap", None)  # the explain extra is not installed
    code, _, stderr = _explain(str(run), "--data", data, "--rows", "3")
    assert code == 2 and "install mlcli[explain]" in stderr
    assert not (run / "explanations").exists()


def test_a_binary_metric_is_measured_at_the_runs_saved_threshold(runs_copy, trained_runs):
    from mlcli.runs import directory as runs
    from mlcli.runs.threshold import write_threshold_record

    run, data = runs_copy["binary"], str(trained_runs["data"])
    write_threshold_record(runs.Run(run), {"threshold": 0.9, "criterion": "test"})
    evaluated = runner.invoke(app, ["evaluate", str(run), "--data", data, "--json"])
    at_half = runner.invoke(
        app, ["evaluate", str(run), "--data", data, "--json", "--threshold", "0.5"]
    )
    assert evaluated.exit_code == 0 and at_half.exit_code == 0, evaluated.stderr
    saved, default = json.loads(evaluated.stdout), json.loads(at_half.stdout)
    assert saved["threshold"] == 0.9 and saved["recall"] != default["recall"]
    code, stdout, stderr = _explain(
        str(run), "--data", data, "--metric", "recall", "--repeats", "1", "--json"
    )
    assert code == 0, stderr
    assert json.loads(stdout)["baseline"] == pytest.approx(saved["recall"])


@pytest.mark.parametrize("row", [0, 299, 399])
def test_a_number_beyond_float32_is_named_by_its_row_in_the_file_not_the_sample(
    runs_copy, trained_runs, tmp_path, row
):
    table = pa_csv.read_csv(trained_runs["data"])
    income = table.column("income").to_pylist()
    income[row] = 1e39
    index = table.column_names.index("income")
    table = table.set_column(index, "income", pa.array(income, pa.float64()))
    pa_csv.write_csv(table, tmp_path / "huge.csv")
    run = runs_copy["binary"]
    code, _, stderr = _explain(str(run), "--data", str(tmp_path / "huge.csv"), "--sample", "50")
    assert code == 3
    assert f"column 'income' holds 1e+39 at row {row + 1}," in stderr
    assert not (run / "explanations").exists()
