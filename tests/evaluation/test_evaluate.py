"""`mlcli evaluate` on the tiny trained runs: each metric family, the gates, the baseline, the
evaluation folder, and reading data the way the run was trained (or by a header)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mlcli.cli.app import app
from mlcli.config.loading import parse_config
from mlcli.data.sources import source_for_run

runner = CliRunner()


@pytest.fixture
def runs_copy(trained_runs, tmp_path) -> dict[str, Path]:
    """Copies of the shared runs: evaluate writes into a run, the shared ones stay untouched."""
    copies = {}
    for task in ("binary", "multiclass", "regression"):
        copies[task] = Path(shutil.copytree(trained_runs[task], tmp_path / task))
    return copies


def _evaluate(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["evaluate", *args])
    return result.exit_code, result.stdout, result.stderr


def _training_metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())["test"]


@pytest.mark.parametrize(
    ("task", "names", "plots"),
    [
        (
            "binary",
            {"accuracy", "precision", "recall", "f1", "auc", "pr_auc", "log_loss", "threshold"},
            {"confusion_matrix.png", "roc.png", "pr.png", "calibration.png"},
        ),
        (
            "multiclass",
            {"accuracy", "f1_macro", "f1_weighted", "log_loss", "f1/0", "precision/1", "recall/2"},
            {"confusion_matrix.png", "roc.png"},
        ),
        ("regression", {"rmse", "mae", "r2", "mse"}, {"residuals.png", "predicted_vs_actual.png"}),
    ],
)
def test_each_task_reports_its_metrics_and_matches_training(
    runs_copy, trained_runs, task, names, plots
):
    run = runs_copy[task]
    code, stdout, stderr = _evaluate(str(run), "--data", str(trained_runs["data"]), "--json")
    assert code == 0, stderr
    metrics = json.loads(stdout)  # nothing but the JSON object on stdout
    assert names <= set(metrics)
    assert metrics["rows"] == 400
    training = _training_metrics(run)  # the runs' data.test is this same file
    if task == "regression":
        assert metrics["rmse"] == pytest.approx(training["rmse"], rel=1e-4)
        assert metrics["mae"] == pytest.approx(training["mae"], rel=1e-4)
    else:
        assert metrics["accuracy"] == training["accuracy"]
        assert metrics["log_loss"] == pytest.approx(training["loss"], rel=1e-4)
    if task == "binary":
        assert metrics["auc"] == pytest.approx(training["auc"], abs=0.01)
    folders = list((run / "evaluations").iterdir())
    assert len(folders) == 1 and folders[0].name.startswith("data-")
    saved = json.loads((folders[0] / "metrics.json").read_text())
    assert saved["metrics"] == metrics
    assert plots <= {p.name for p in folders[0].glob("*.png")}
    report = (folders[0] / "report.md").read_text()
    assert "| metric | value |" in report and str(task) in report


def test_gates_exit_5_naming_metric_value_and_bound(runs_copy, trained_runs):
    run, data = str(runs_copy["binary"]), str(trained_runs["data"])
    code, stdout, stderr = _evaluate(run, "--data", data, "--fail-under", "accuracy=1.01")
    assert code == 5
    assert "accuracy" in stderr and "1.01" in stderr and "under" in stderr
    assert Path(stdout.strip().splitlines()[-1]).is_dir()  # results are still written
    code, _, stderr = _evaluate(run, "--data", data, "--fail-over", "log_loss=0.0001", "-q")
    assert code == 5 and "log_loss" in stderr
    code, _, stderr = _evaluate(
        run, "--data", data, "--fail-under", "accuracy=0.01", "--fail-over", "log_loss=1000", "-q"
    )
    assert code == 0, stderr


def test_unknown_or_malformed_gate_is_a_usage_error(runs_copy, trained_runs):
    run, data = str(runs_copy["regression"]), str(trained_runs["data"])
    code, _, stderr = _evaluate(run, "--data", data, "--fail-under", "auc=0.9")
    assert code == 2
    assert "'auc'" in stderr and "rmse" in stderr and "r2" in stderr
    code, _, stderr = _evaluate(run, "--data", data, "--fail-under", "rmse")
    assert code == 2 and "METRIC=NUMBER" in stderr
    assert not (runs_copy["regression"] / "evaluations").exists()


def test_missing_columns_and_bad_runs(runs_copy, trained_runs, tmp_path):
    table = pa_csv.read_csv(trained_runs["data"]).drop(["color", "label"])
    pa_csv.write_csv(table, tmp_path / "partial.csv")
    code, _, stderr = _evaluate(str(runs_copy["binary"]), "--data", str(tmp_path / "partial.csv"))
    assert code == 3
    assert "'color'" in stderr and "'label'" in stderr
    code, _, stderr = _evaluate(str(tmp_path / "nowhere"), "--data", str(trained_runs["data"]))
    assert code == 4 and "no such run" in stderr


def test_parquet_data_and_unlabelled_rows(runs_copy, trained_runs, tmp_path):
    table = pa_csv.read_csv(trained_runs["data"])
    pq.write_table(table, tmp_path / "data.parquet")
    run = str(runs_copy["multiclass"])
    code, stdout, _ = _evaluate(run, "--data", str(tmp_path / "data.parquet"), "--json")
    assert code == 0
    assert json.loads(stdout)["accuracy"] == _training_metrics(runs_copy["multiclass"])["accuracy"]
    tiers = [None if i < 100 else t for i, t in enumerate(table.column("tier").to_pylist())]
    column = pa.array(tiers, table.column("tier").type)
    unlabelled = table.set_column(table.column_names.index("tier"), "tier", column)
    pq.write_table(unlabelled, tmp_path / "some.parquet")
    code, stdout, _ = _evaluate(run, "--data", str(tmp_path / "some.parquet"), "--json")
    assert code == 0 and json.loads(stdout)["rows"] == 300


def _flip_binary_head(run: Path) -> None:
    """Negates the sigmoid head: every probability p becomes 1 - p, so AUC becomes 1 - AUC."""
    from mlcli.runs.loading import load_model

    model = load_model(run / "model.keras")
    core = next(layer for layer in model.layers if layer.name == "core")
    head = core.get_layer("probability")
    head.set_weights([-w for w in head.get_weights()])
    (run / "model.keras").unlink()
    model.save(run / "model.keras")


def test_baseline_differences_and_max_regression(runs_copy, trained_runs, tmp_path):
    good, data = runs_copy["binary"], str(trained_runs["data"])
    worse = Path(shutil.copytree(good, tmp_path / "worse"))
    _flip_binary_head(worse)
    code, stdout, stderr = _evaluate(
        str(good), "--data", data, "--baseline", str(good), "--json", "--max-regression", "0"
    )
    assert code == 0, stderr
    metrics = json.loads(stdout)
    assert metrics["delta/auc"] == 0 and metrics["baseline/auc"] == metrics["auc"]
    code, stdout, stderr = _evaluate(
        str(worse), "--data", data, "--baseline", str(good), "--max-regression", "0.01", "--json"
    )
    assert code == 5
    assert "auc regressed" in stderr and "--max-regression 0.01" in stderr
    metrics = json.loads(stdout)
    assert metrics["delta/auc"] < -0.01
    assert metrics["auc"] == pytest.approx(1 - metrics["baseline/auc"], abs=1e-6)
    code, _, stderr = _evaluate(str(good), "--data", data, "--max-regression", "0.01")
    assert code == 2 and "--baseline" in stderr


def _headerless_config(tmp_path: Path, test_spec: object) -> object:
    return parse_config(
        {
            "name": "headerless",
            "data": {
                "train": str(tmp_path / "train.csv"),
                "test": test_spec,
                "csv": {"header": False, "columns": ["a", "b", "y"]},
            },
            "target": {"column": "y"},
        }
    )


def test_csv_options_come_from_the_run_or_a_detected_header(tmp_path):
    (tmp_path / "test.csv").write_text("banner line\n1,x,yes\n")
    (tmp_path / "named.csv").write_text("b;y;a\nx;yes;1\n")
    (tmp_path / "other.csv").write_text("banner\n1,x,yes\n")
    config = _headerless_config(
        tmp_path, {"path": str(tmp_path / "test.csv"), "csv": {"skip_rows": 1}}
    )
    test = source_for_run(config, tmp_path / "test.csv", names=["a", "b"])
    assert test.csv.skip_rows == 1 and test.csv.columns == ["a", "b", "y"]
    named = source_for_run(config, tmp_path / "named.csv", names=["a", "b"])
    assert named.csv.header and named.csv.columns is None and named.csv.delimiter == ";"
    other = source_for_run(config, tmp_path / "other.csv", names=["a", "b"])
    assert other.csv.skip_rows == 0 and not other.csv.header
    overridden = source_for_run(
        config, tmp_path / "other.csv", names=["a", "b"], csv_overrides={"skip_rows": 1}
    )
    assert overridden.csv.skip_rows == 1 and overridden.csv.columns == ["a", "b", "y"]


def test_binary_metrics_decide_a_probability_at_the_threshold_as_predict_does():
    import numpy as np

    from mlcli.evaluation.metrics import compute_metrics
    from mlcli.features.schema import FeatureSchema, TargetSchema
    from mlcli.inference.labels import predicted_labels

    target = TargetSchema(column="y", task="binary", classes=["no", "yes"])
    schema = FeatureSchema(columns=[], target=target)
    outputs = np.array([[0.5], [0.5], [0.2], [0.9]], np.float32)
    labels = np.array([1, 1, 0, 1])
    predicted = predicted_labels(outputs, target).to_pylist()
    expected = np.mean(
        [target.classes.index(p) == t for p, t in zip(predicted, labels, strict=True)]
    )
    metrics = compute_metrics(labels, outputs, schema, threshold=0.5)
    assert metrics["accuracy"] == expected == 1.0
    assert metrics["recall"] == 1.0


def test_drift_is_reported_in_the_json_the_folder_and_the_report_and_can_gate(
    runs_copy, trained_runs, tmp_path
):
    run = str(runs_copy["binary"])
    code, stdout, stderr = _evaluate(run, "--data", str(trained_runs["data"]), "--json")
    assert code == 0, stderr
    psi = {k: v for k, v in json.loads(stdout).items() if k.startswith("psi/")}
    assert set(psi) == {f"psi/{c}" for c in ("age", "income", "color", "grade", "member")}
    assert all(value < 0.1 for value in psi.values()), psi
    folder = next((runs_copy["binary"] / "evaluations").iterdir())
    saved = json.loads((folder / "metrics.json").read_text())
    assert [c["name"] for c in saved["drift"]["columns"]][:2] == ["age", "income"]
    report = (folder / "report.md").read_text()
    assert "## Drift from the training data" in report and "| review | unavailable |" in report

    table = pa_csv.read_csv(trained_runs["data"])
    older = pc.add(table.column("age"), 100.0)
    table = table.set_column(table.column_names.index("age"), "age", older)
    drifted = tmp_path / "older.csv"
    pa_csv.write_csv(table, drifted)
    code, stdout, stderr = _evaluate(run, "--data", str(drifted), "--fail-on-drift", "0.2")
    assert code == 5
    assert "--fail-on-drift 0.2" in stderr and "age (PSI" in stderr and "color" not in stderr
    assert "PSI" in stdout and Path(stdout.strip().splitlines()[-1]).is_dir()


def test_choose_threshold_reports_it_and_save_keeps_it_with_its_provenance(runs_copy, trained_runs):
    import hashlib

    run, data = runs_copy["binary"], trained_runs["data"]
    code, stdout, stderr = _evaluate(
        str(run), "--data", str(data), "--choose-threshold", "recall=0.8", "--json"
    )
    assert code == 0, stderr
    metrics = json.loads(stdout)
    assert metrics["chosen/recall"] >= 0.8
    assert {"chosen/threshold", "chosen/precision", "chosen/positives"} <= set(metrics)
    assert not (run / "threshold.json").exists()  # chosen, not saved
    code, stdout, stderr = _evaluate(
        str(run), "--data", str(data), "--choose-threshold", "precision=0.8", "--save"
    )
    assert code == 0, stderr
    assert "threshold chosen for precision=0.8" in stdout and "saved in" in stdout
    record = json.loads((run / "threshold.json").read_text())
    assert record["criterion"] == "precision=0.8"
    assert record["metrics"]["precision"] >= 0.8
    assert record["data"][0]["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert record["rows"] == 400 and record["chosen"]
    folder = max((run / "evaluations").iterdir())
    assert "## Threshold chosen for precision=0.8" in (folder / "report.md").read_text()
    # later evaluations decide with the saved threshold; --threshold still wins
    code, stdout, _ = _evaluate(str(run), "--data", str(data), "--json")
    assert json.loads(stdout)["threshold"] == record["threshold"]
    assert json.loads(stdout)["precision"] == pytest.approx(record["metrics"]["precision"])
    code, stdout, _ = _evaluate(str(run), "--data", str(data), "--json", "--threshold", "0.5")
    assert json.loads(stdout)["threshold"] == 0.5


def test_an_unreachable_criterion_exits_5_after_the_results_and_saves_nothing(
    runs_copy, trained_runs, tmp_path
):
    # every row labelled as the negative class's but one: precision 0.99 is out of reach
    table = pa_csv.read_csv(trained_runs["data"])
    classes = sorted(set(table.column("label").to_pylist()))
    labels = [classes[0]] * (table.num_rows - 1) + [classes[1]]
    table = table.set_column(table.schema.get_field_index("label"), "label", pa.array(labels))
    pa_csv.write_csv(table, tmp_path / "rare.csv")
    run = runs_copy["binary"]
    code, stdout, stderr = _evaluate(
        str(run),
        "--data",
        str(tmp_path / "rare.csv"),
        "--choose-threshold",
        "precision=0.99",
        "--save",
    )
    assert code == 5
    assert "no threshold reaches precision 0.99" in stderr and "nothing was saved" in stderr
    assert Path(stdout.strip().splitlines()[-1]).is_dir()  # the evaluation is still written
    assert not (run / "threshold.json").exists()


@pytest.mark.parametrize(
    ("task", "options", "message"),
    [
        ("multiclass", ["--choose-threshold", "f1"], "a threshold applies to a binary run only"),
        ("binary", ["--save"], "--save stores a chosen threshold: add --choose-threshold"),
        ("binary", ["--choose-threshold", "f2"], "expected one of precision=P"),
    ],
)
def test_threshold_options_that_cannot_apply_are_usage_errors(
    runs_copy, trained_runs, task, options, message
):
    run = runs_copy[task]
    code, _, stderr = _evaluate(str(run), "--data", str(trained_runs["data"]), *options)
    assert code == 2 and message in stderr
    assert not (run / "evaluations").exists()


def test_save_refuses_stdin_which_cannot_be_fingerprinted(runs_copy, trained_runs):
    result = runner.invoke(
        app,
        ["evaluate", str(runs_copy["binary"]), "--data", "-", "--choose-threshold", "f1", "--save"],
        input=trained_runs["data"].read_bytes(),
    )
    assert result.exit_code == 2 and "pass a file" in result.stderr
