"""Training on tiny generated tables: every task and feature type, the run directory, and the
saved model's predictions on raw values (unseen categories and missing numbers included)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mlcli.cli.app import app
from mlcli.runs.directory import (
    CHECKPOINTS,
    CONFIG,
    HISTORY,
    LEARNING_CURVES,
    MANIFEST,
    METRICS,
    MODEL,
    SAMPLE,
    SCHEMA,
)

runner = CliRunner()


def _train(config: Path, *extra: str) -> Path:
    result = runner.invoke(app, ["train", str(config), "--quiet", *extra])
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip().splitlines()[-1])
    assert run.is_dir()
    return run


@pytest.mark.parametrize(
    ("target", "task", "metric"),
    [
        ("label", "binary", "auc"),
        ("tier", "multiclass", "accuracy"),
        ("value", "regression", "rmse"),
    ],
)
def test_each_task_trains_a_complete_run(write_config, target, task, metric):
    exclude = [c for c in ("id", "label", "tier", "value") if c != target]
    config = write_config(
        target={"column": target, "task": task},
        features={"review": "text", "grade": "categorical", "exclude": exclude},
    )
    run = _train(config)
    for name in (CONFIG, MANIFEST, SCHEMA, MODEL, HISTORY, METRICS, LEARNING_CURVES, CHECKPOINTS):
        assert (run / name).exists(), name
    assert (run.parent / "latest").resolve() == run.resolve()
    metrics = json.loads((run / METRICS).read_text())
    assert math.isfinite(metrics["validation"][metric])
    manifest = json.loads((run / MANIFEST).read_text())
    assert manifest["status"] == "complete"
    assert manifest["rows"]["train"] + manifest["rows"]["validation"] == 400
    assert len((run / HISTORY).read_text().strip().splitlines()) == 1 + manifest["epochs_run"]
    schema = json.loads((run / SCHEMA).read_text())
    types = {c["name"]: c["type"] for c in schema["columns"]}
    assert types == {
        "age": "numeric",
        "income": "numeric",
        "color": "categorical",
        "grade": "categorical",
        "member": "binary",
        "review": "text",
    }
    assert schema["target"]["task"] == task


def test_classification_learns_the_signal(write_config):
    config = write_config(training={"epochs": 15, "batch_size": 32, "steps_per_execution": 4})
    run = _train(config)
    metrics = json.loads((run / METRICS).read_text())
    # the label is a deterministic function of the features: far above the 0.5 of chance
    # (100 validation rows: seeds 7-10 give 0.74-0.82, so the bar leaves room for the seed)
    assert metrics["validation"]["accuracy"] > 0.7


def test_labels_keep_the_users_values_and_positive_class(write_config):
    config = write_config(target={"column": "label", "task": "binary", "positive_class": "low"})
    run = _train(config)
    schema = json.loads((run / SCHEMA).read_text())
    assert schema["target"]["classes"] == ["high", "low"]
    config = write_config(target={"column": "label", "task": "binary", "positive_class": "high"})
    run = _train(config)
    assert json.loads((run / SCHEMA).read_text())["target"]["classes"] == ["low", "high"]


def test_saved_model_takes_raw_values_and_reloads_identically(write_config):
    import keras
    import tensorflow as tf

    from mlcli.features.schema import FeatureSchema

    run = _train(write_config())
    model = keras.saving.load_model(run / MODEL, safe_mode=True)
    schema = FeatureSchema.load(run / SCHEMA)
    rows = {
        "age": [[35.0], [float("nan")], [70.0]],
        "income": [[20000.0], [30000.0], [float("nan")]],
        "color": [["red"], ["never-seen-colour"], [""]],
        "grade": [[1], [99], [3]],
        "member": [["yes"], ["no"], ["maybe"]],
        "review": [["good great fine"], [""], ["unseen words only"]],
    }
    tensors = {c.name: tf.constant(rows[c.name], dtype=c.dtype) for c in schema.columns}
    first = keras.ops.convert_to_numpy(model(tensors))
    assert first.shape == (3, 1)
    assert np.all(np.isfinite(first)) and np.all((first >= 0) & (first <= 1))
    again = keras.saving.load_model(run / MODEL, safe_mode=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(again(tensors)), first, atol=1e-6)


def test_missing_column_exits_3_and_leaves_no_run(write_config, tmp_path):
    config = write_config(target={"column": "labell", "task": "binary"})
    result = runner.invoke(app, ["train", str(config), "--quiet"])
    assert result.exit_code == 3
    assert "'labell'" in result.stderr and "did you mean 'label'" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_validation_file_and_test_file(write_config, tiny_csv):
    config = write_config(
        data={"train": tiny_csv.name, "validation": tiny_csv.name, "test": tiny_csv.name}
    )
    run = _train(config)
    metrics = json.loads((run / METRICS).read_text())
    assert metrics["test"]["rows"] == 400 and metrics["validation"]["rows"] == 400


def test_a_run_keeps_its_first_validation_rows_raw_as_the_sample(write_config, tiny_csv):
    import pyarrow.parquet as pq

    from mlcli.config.loading import load_config
    from mlcli.data.splits import load_splits

    config = write_config(data={"train": tiny_csv.name, "validation": tiny_csv.name})
    run = _train(config)
    sample = pq.read_table(run / SAMPLE)
    columns = ["age", "income", "color", "grade", "member", "review", "label"]
    assert sample.column_names == columns  # the raw inputs and the target, not `id`
    validation = load_splits(load_config(config)).validation  # the 400 rows of the file
    assert validation.num_rows == 400
    assert sample.equals(validation.select(columns).slice(0, 200))


def test_stdout_last_line_is_the_run_and_plain_epoch_lines(write_config):
    result = runner.invoke(app, ["train", str(write_config())])
    assert result.exit_code == 0, result.output
    assert "[epoch] 1/2" in result.stderr
    run = Path(result.stdout.strip().splitlines()[-1])
    assert run.is_dir()
    # the summary in plain lines, before the complete event: one per split, kept, time
    lines = result.stderr.strip().splitlines()
    summary = [line for line in lines if line.startswith("[summary] ")]
    assert lines[-len(summary) - 1 : -1] == summary and lines[-1].startswith("[complete] ")
    assert [line.split(":")[0] for line in summary[:2]] == [
        "[summary] train",
        "[summary] validation",
    ]
    kept = json.loads((run / MANIFEST).read_text())["kept_epoch"]
    assert f"[summary] kept epoch {kept['epoch']} of 2: " in result.stderr
    assert summary[-1].startswith("[summary] time ") and "fit " in summary[-1]
    json_result = runner.invoke(app, ["train", str(write_config()), "--log-format", "json"])
    events = [json.loads(line) for line in json_result.stderr.splitlines() if line.startswith("{")]
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1, 2]
    assert [e["event"] for e in events][-2:] == ["summary", "complete"]
    quiet = runner.invoke(app, ["train", str(write_config()), "--quiet"])
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stderr == "" and Path(quiet.stdout.strip()).is_dir()  # the result alone


def test_the_summary_holds_metrics_json_and_the_epoch_of_the_lowest_val_loss(
    write_config, monkeypatch
):
    """Early stopping restores its best epoch: the summary, the manifest and the plot say which."""
    from mlcli.training import plots

    drawn: list[int | None] = []
    real_plot = plots.plot_learning_curves

    def plot(history: Path, output: Path, *, kept_epoch: int | None = None) -> None:
        drawn.append(kept_epoch)
        real_plot(history, output, kept_epoch=kept_epoch)

    monkeypatch.setattr(plots, "plot_learning_curves", plot)
    training = {"epochs": 10, "batch_size": 32, "steps_per_execution": 4, "learning_rate": 0.1}
    config = write_config(
        data={"test": "data.csv"}, training={**training, "early_stopping": {"patience": 3}}
    )
    result = runner.invoke(app, ["train", str(config), "--log-format", "json"])
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip().splitlines()[-1])
    events = [json.loads(line) for line in result.stderr.splitlines()]
    (summary,) = [event for event in events if event["event"] == "summary"]
    metrics = json.loads((run / METRICS).read_text())
    assert summary["metrics"] == {k: v for k, v in metrics.items() if isinstance(v, dict)}
    assert set(summary["metrics"]) == {"train", "validation", "test"}
    assert summary["threshold"] == metrics["threshold"]
    history = (run / HISTORY).read_text().splitlines()
    column = history[0].split(",").index("val_loss")
    val_loss = [float(row.split(",")[column]) for row in history[1:]]
    manifest = json.loads((run / MANIFEST).read_text())
    kept = manifest["kept_epoch"]
    assert kept["epoch"] == int(np.argmin(val_loss)) + 1
    assert (kept["epochs_run"], kept["reason"]) == (len(val_loss), "best_epoch")
    assert summary["kept_epoch"] == kept and drawn == [kept["epoch"]]
    assert summary["run"] == str(run)
    seconds = summary["seconds"]
    assert list(seconds) == [
        "data",
        "prepare",
        "fit",
        "evaluate",
        "save_and_check",
        "other",
        "total",
    ]
    assert seconds["total"] == pytest.approx(manifest["seconds"]["total"])
    assert sum(v for k, v in seconds.items() if k != "total") == pytest.approx(seconds["total"])


def _train_process(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`mlcli train` in its own process, where TensorFlow loads on a thread meanwhile."""
    command = [sys.executable, "-m", "mlcli", "train", str(config), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_a_train_process_reports_events_while_tensorflow_loads(write_config):
    config = write_config(features={"review": "categorical"}, training={"epochs": 1})
    process = _train_process(config, "--log-format", "json")
    assert process.returncode == 0, process.stderr
    # every stderr line is an event: none lost to, and no TensorFlow noise from, the import
    events = [json.loads(line)["event"] for line in process.stderr.splitlines()]
    assert events[:2] == ["data", "encoded"]  # the table is read and encoded before TF is needed
    assert events[-1] == "complete" and "epoch" in events
    run = Path(process.stdout.strip().splitlines()[-1])
    assert json.loads((run / MANIFEST).read_text())["status"] == "complete"


def test_a_train_process_reports_a_data_error_while_tensorflow_loads(write_config):
    process = _train_process(write_config(target={"column": "nothere"}))
    assert process.returncode == 3
    assert "missing column 'nothere'" in process.stderr
    assert process.stdout == ""


def test_auc_is_logged_per_epoch_only_when_early_stopping_watches_it(write_config):
    plain = _train(write_config())
    watched = _train(
        write_config(
            "watched.yaml", training={"early_stopping": {"monitor": "val_auc", "patience": 2}}
        )
    )

    def columns(run: Path) -> list[str]:
        return (run / HISTORY).read_text().splitlines()[0].split(",")

    assert "val_accuracy" in columns(plain) and "val_auc" not in columns(plain)
    assert {"auc", "val_auc"} <= set(columns(watched))
    for run in (plain, watched):  # the final metrics have AUC either way
        validation = json.loads((run / METRICS).read_text())["validation"]
        assert 0.0 <= validation["auc"] <= 1.0


@pytest.mark.parametrize(
    ("difference", "shown"),
    [(0.25, "0.25"), (None, "NaN")],  # a NaN difference is written as null, and fails
    ids=["too-large", "nan"],
)
def test_a_failed_self_check_keeps_the_complete_run_and_exits_4(
    write_config, monkeypatch, difference, shown
):
    from mlcli.runs.directory import Run, check_complete, read_manifest
    from mlcli.training import fit

    check = {"max_relative_difference": difference, "tolerance": 1e-4, "passed": False}
    real_fit_run = fit.fit_run

    def fit_run(*args: object, **kwargs: object) -> dict[str, object]:
        details = real_fit_run(*args, **kwargs)
        return {**details, "checks": {"composition": check}}

    monkeypatch.setattr(fit, "fit_run", fit_run)
    result = runner.invoke(app, ["train", str(write_config()), "--quiet"])
    assert result.exit_code == 4, result.output
    (line,) = [text for text in result.stderr.splitlines() if text.startswith("error")]
    assert "composition" in line and shown in line and "0.0001" in line
    run = Run(
        next(p for p in (write_config().parent / "runs" / "tiny").iterdir() if not p.is_symlink())
    )
    assert str(run.path) in line and not run.is_partial
    check_complete(run)  # complete, model.keras and all
    assert read_manifest(run)["checks"] == {"composition": check}
    assert (run.path.parent / "latest").resolve() == run.path.resolve()
    assert "warning:" in result.stderr  # reported as a warning before the error line
