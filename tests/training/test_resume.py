"""Interrupted training resumes to the same result; the same seed gives the same run."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.csv as pa_csv
import pytest
import yaml
from conftest import make_table
from typer.testing import CliRunner

from mlcli.cli.app import app
from mlcli.config.inheritance import presets_folder
from mlcli.errors import ConfigError, DataError, InterruptedRunError, RunError
from mlcli.reporting import QuietReporter
from mlcli.training.callbacks import KERAS_METADATA
from mlcli.training.train import train

MLCLI = [sys.executable, "-m", "mlcli"]
runner = CliRunner()


def _config(folder: Path, *, rows: int, epochs: int) -> Path:
    data = folder / "data.csv"
    pa_csv.write_csv(make_table(rows, seed=1), data)
    config = {
        "name": "resumable",
        "seed": 11,
        "data": {"train": "data.csv", "validation": 0.2},
        "target": {"column": "label", "task": "binary"},
        "features": {"review": "text", "grade": "categorical", "exclude": ["id", "tier", "value"]},
        "model": {"hidden_units": [32, 16], "dropout": 0.2},
        "training": {
            "epochs": epochs,
            "batch_size": 16,
            "steps_per_execution": 1,
            "early_stopping": {"monitor": "val_loss", "patience": 2},
        },
        "output": {"dir": str(folder / "runs")},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _train(*arguments: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MLCLI, "train", *arguments, "--quiet"], cwd=cwd, capture_output=True, text=True
    )


def _partial(folder: Path) -> Path | None:
    found = list((folder / "runs" / "resumable").glob(".*.partial"))
    return found[0] if found else None


def _epochs_logged(partial: Path) -> int:
    history = partial / "history.csv"
    return max(0, len(history.read_text().splitlines()) - 1) if history.exists() else 0


def _interrupt_after(folder: Path, config: Path, *, epochs: int, sig: int) -> Path:
    process = subprocess.Popen(
        [*MLCLI, "train", str(config), "--quiet"],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    partial = None
    while time.monotonic() < deadline and process.poll() is None:
        partial = _partial(folder)
        if partial is not None and _epochs_logged(partial) >= epochs:
            time.sleep(0.3)  # into the next epoch
            break
        time.sleep(0.05)
    assert process.poll() is None, "training ended before it could be interrupted"
    os.kill(process.pid, sig)
    _, stderr = process.communicate(timeout=120)
    assert partial is not None
    if sig == signal.SIGTERM:
        assert process.returncode == 130, stderr
        assert "--resume" in stderr and "Traceback" not in stderr
    else:
        assert process.returncode == -signal.SIGKILL
    assert not (partial.parent / "latest").exists(), "an interrupted run must not look complete"
    return partial


def _metrics(run: Path) -> bytes:
    return (run / "metrics.json").read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_killed_training_resumes_to_the_uninterrupted_result(tmp_path: Path, sig: int):
    reference_dir = tmp_path / "reference"
    reference_dir.mkdir()
    # 8 epochs, interrupted after 2: the signal must land while it still trains, even on a
    # busy CI machine (with 6, a run once finished before SIGTERM arrived, and exited 0)
    config = _config(reference_dir, rows=3000, epochs=8)
    finished = _train(str(config), cwd=reference_dir)
    assert finished.returncode == 0, finished.stderr
    reference = Path(finished.stdout.strip().splitlines()[-1])
    reference = reference if reference.is_absolute() else reference_dir / reference

    folder = tmp_path / "interrupted"
    folder.mkdir()
    config = _config(folder, rows=3000, epochs=8)
    partial = _interrupt_after(folder, config, epochs=2, sig=sig)
    resumed = _train("--resume", str(partial), cwd=folder)
    assert resumed.returncode == 0, resumed.stderr
    run = Path(resumed.stdout.strip().splitlines()[-1])
    assert run.name == partial.name.removeprefix(".").removesuffix(".partial")
    assert _metrics(run) == _metrics(reference)
    history = (run / "history.csv").read_text().splitlines()
    assert history == (reference / "history.csv").read_text().splitlines()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["resumed_after_epoch"] >= 2


@pytest.mark.slow  # three trainings in two processes: about 30 s
def test_same_seed_gives_identical_metrics_and_predictions(write_config, tmp_path: Path):
    import keras
    from conftest import make_table as table

    from mlcli.inference.predictor import Predictor
    from mlcli.runs.loading import open_run

    config = write_config(training={"epochs": 3, "batch_size": 32, "steps_per_execution": 2})
    first = _train(str(config), cwd=tmp_path)
    second = _train(str(config), cwd=tmp_path)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    runs = [Path(r.stdout.strip().splitlines()[-1]) for r in (first, second)]
    assert runs[0] != runs[1]
    assert _metrics(runs[0]) == _metrics(runs[1])
    rows = table(50, seed=5)
    outputs = []
    for run in runs:
        loaded = open_run(run)
        outputs.append(Predictor(loaded.model, loaded.schema).outputs(rows, source="t"))
    assert keras.ops.all(outputs[0] == outputs[1])


def test_resume_refuses_a_complete_run(trained_runs):
    result = _train("--resume", str(trained_runs["binary"]), cwd=Path.cwd())
    assert result.returncode == 4
    assert "already complete" in result.stderr


# In-process resume: a run interrupted after its first epoch (the reporter raises as a signal
# handler would), then resumed, failed, locked or refused.


class _StopAfterFirstEpoch(QuietReporter):
    """Raises KeyboardInterrupt once the first epoch is checkpointed, as Ctrl-C would."""

    def epoch(self, epoch: int, epochs: int, seconds: float, logs: dict[str, float]) -> None:
        raise KeyboardInterrupt


def _interrupted_run(config: Path) -> Path:
    with pytest.raises(InterruptedRunError):
        train(config, reporter=_StopAfterFirstEpoch())
    (partial,) = (config.parent / "runs" / "tiny").glob(".*.partial")
    assert (partial / "checkpoints").is_dir() and (partial / "history.csv").is_file()
    return partial


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file of a folder by relative path, with a digest of its bytes."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def interrupted(write_config) -> tuple[Path, Path]:
    """A 3-epoch run of the tiny table interrupted after epoch 1: (config, partial run)."""
    config = write_config(training={"epochs": 3, "batch_size": 32, "steps_per_execution": 1})
    return config, _interrupted_run(config)


def _failing_fit(error: Exception) -> Callable[..., Any]:
    def fit_run(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise error

    return fit_run


@pytest.mark.parametrize(
    ("arguments", "failure", "code"),
    [
        (["--device", "gpu:63"], None, 2),  # no such GPU, on any machine
        ([], DataError("data.csv: column 'age': unreadable"), 3),
        ([], RunError("model.keras: cannot be written"), 4),
    ],
    ids=["bad-device", "data-error", "run-error"],
)
def test_a_failed_resume_leaves_the_partial_run_as_it_was(
    interrupted, monkeypatch, arguments, failure, code
):
    _, partial = interrupted
    before = _snapshot(partial)
    if failure is not None:
        monkeypatch.setattr("mlcli.training.fit.fit_run", _failing_fit(failure))
    result = runner.invoke(app, ["train", "--resume", str(partial), "--quiet", *arguments])
    assert result.exit_code == code, result.output
    assert _snapshot(partial) == before  # checkpoints, history, manifest: byte for byte
    monkeypatch.undo()
    finished = runner.invoke(app, ["train", "--resume", str(partial), "--quiet"])
    assert finished.exit_code == 0, finished.output  # and it still resumes


def test_a_new_run_that_fails_removes_only_its_own_partial_folder(
    write_config, tmp_path, monkeypatch
):
    config = write_config()
    runs_dir = tmp_path / "runs" / "tiny"
    runs_dir.mkdir(parents=True)
    (runs_dir / ".20250101-000000-abcdef.partial").mkdir()  # someone else's run in progress
    (runs_dir / "notes.txt").write_text("mine")
    monkeypatch.setattr("mlcli.training.fit.fit_run", _failing_fit(DataError("bad column")))
    result = runner.invoke(app, ["train", str(config), "--quiet"])
    assert result.exit_code == 3, result.output
    assert sorted(p.name for p in runs_dir.iterdir()) == [
        ".20250101-000000-abcdef.partial",
        "notes.txt",
    ]


def test_a_tracker_that_fails_to_start_leaves_no_partial_run(write_config, tmp_path, monkeypatch):
    def refused(*args: Any, **kwargs: Any) -> Any:
        raise ConfigError("tracking.mlflow: MLflow at 'http://nowhere:1' refused the run")

    monkeypatch.setattr("mlcli.training.train.start_tracking", refused)
    result = runner.invoke(app, ["train", str(write_config()), "--quiet"])
    assert result.exit_code == 2, result.output
    assert "refused the run" in result.stderr
    assert list((tmp_path / "runs" / "tiny").iterdir()) == []


@pytest.mark.parametrize("spelling", ["dotdot", "symlink"])
def test_resume_compares_the_data_by_content_not_by_the_paths_spelling(
    interrupted, tmp_path, spelling
):
    """The data file replaced by a symlink to the same bytes, or reached through `..`."""
    _, partial = interrupted
    data = tmp_path / "data.csv"
    moved = tmp_path / "elsewhere" / "data.csv"
    moved.parent.mkdir()
    data.rename(moved)
    if spelling == "symlink":
        data.symlink_to(moved)
    else:  # the saved config's path now leads through `..` to the same bytes
        (tmp_path / "sub").mkdir()
        saved = yaml.safe_load((partial / "config.yaml").read_text())
        saved["data"]["train"] = str(tmp_path / "sub" / ".." / "elsewhere" / "data.csv")
        (partial / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    finished = runner.invoke(app, ["train", "--resume", str(partial), "--quiet"])
    assert finished.exit_code == 0, finished.output
    assert (Path(finished.stdout.strip().splitlines()[-1]) / "model.keras").is_file()


def test_resume_refuses_data_whose_content_changed(interrupted, tmp_path):
    _, partial = interrupted
    data = tmp_path / "data.csv"
    data.write_bytes(data.read_bytes().replace(b"red", b"rex", 1))  # same size, new bytes
    before = _snapshot(partial)
    result = runner.invoke(app, ["train", "--resume", str(partial), "--quiet"])
    assert result.exit_code == 4, result.output
    assert "train data changed" in result.stderr and "SHA-256" in result.stderr
    assert _snapshot(partial) == before


def test_a_run_being_trained_cannot_be_resumed_by_another_process(interrupted):
    _, partial = interrupted
    before = _snapshot(partial)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(partial)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        result = runner.invoke(app, ["train", "--resume", str(partial), "--quiet"])
        assert result.exit_code == 4, result.output
        assert str(partial) in result.stderr and "another process holds" in result.stderr
        assert _snapshot(partial) == before
    finally:
        holder.kill()  # kill -9: the kernel drops the lock with the process
        holder.wait()
    finished = runner.invoke(app, ["train", "--resume", str(partial), "--quiet"])
    assert finished.exit_code == 0, finished.output


_HOLD_LOCK = """
import sys, time
from pathlib import Path
from mlcli.runs.directory import Run, lock_run
held = lock_run(Run(Path(sys.argv[1])))
print("locked", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (["--set", "training.epochs=4"], "training.epochs"),
        (["--set", "model.dropout=0.5"], "model.dropout"),
        ({"training": {"epochs": 3, "batch_size": 64, "steps_per_execution": 1}}, "batch_size"),
        ({"seed": 8}, "seed"),
        (["--set", "training.learning_rate=0.5"], "training.learning_rate"),
    ],
    ids=["set-epochs", "set-dropout", "config-batch-size", "config-seed", "set-learning-rate"],
)
def test_resume_refuses_a_config_or_set_that_differs_from_the_runs(
    interrupted, write_config, change, key
):
    _, partial = interrupted
    other = isinstance(change, dict)
    arguments = [str(write_config("other.yaml", **change))] if other else change
    before = _snapshot(partial)
    result = runner.invoke(app, ["train", *arguments, "--resume", str(partial), "--quiet"])
    assert result.exit_code == 2, result.output
    assert key in result.stderr and str(partial) in result.stderr
    assert _snapshot(partial) == before


def test_resume_accepts_the_runs_own_config_and_a_set_that_changes_nothing(
    interrupted, tmp_path, monkeypatch
):
    config, partial = interrupted
    (tmp_path / "configs").mkdir()
    relative = tmp_path / "configs" / "same.yaml"  # data.train spelt `../data.csv` from here
    document = yaml.safe_load(config.read_text())
    document["data"]["train"] = "../data.csv"
    relative.write_text(yaml.safe_dump(document))
    monkeypatch.chdir(tmp_path / "configs")
    arguments = [str(relative), "--set", "training.epochs=3", "--resume", str(partial)]
    finished = runner.invoke(app, ["train", *arguments, "--quiet"])
    assert finished.exit_code == 0, finished.output


def test_a_config_that_extends_others_resumes_and_its_run_keeps_the_merged_config(
    write_config, tmp_path
):
    write_config("base.yaml", training={"epochs": 3, "batch_size": 32, "steps_per_execution": 1})
    config = tmp_path / "config.yaml"
    config.write_text("extends: [base.yaml, models/mlp]\nmodel: {hidden_units: [16]}\n")
    partial = _interrupted_run(config)
    saved = yaml.safe_load((partial / "config.yaml").read_text())
    preset = yaml.safe_load((presets_folder() / "models" / "mlp.yaml").read_text())["model"]
    assert "extends" not in saved  # the run records the config as merged
    assert saved["model"]["hidden_units"] == [16]
    assert saved["model"]["dropout"] == preset["dropout"]
    assert saved["training"]["epochs"] == 3
    finished = runner.invoke(app, ["train", str(config), "--resume", str(partial), "--quiet"])
    assert finished.exit_code == 0, finished.output


def test_a_resumed_run_keeps_the_best_epoch_of_both_sessions(interrupted):
    """Early stopping's best epoch and weights come back from the checkpoint; the summary says
    which epoch of the whole run was kept, and shows metrics.json."""
    _, partial = interrupted
    result = runner.invoke(app, ["train", "--resume", str(partial), "--log-format", "json"])
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip().splitlines()[-1])
    (summary,) = [
        event
        for event in map(json.loads, result.stderr.splitlines())
        if event["event"] == "summary"
    ]
    rows = (run / "history.csv").read_text().splitlines()
    column = rows[0].split(",").index("val_loss")
    val_loss = [float(row.split(",")[column]) for row in rows[1:]]
    kept = json.loads((run / "manifest.json").read_text())["kept_epoch"]
    assert summary["kept_epoch"] == kept
    assert (kept["epoch"], kept["epochs_run"]) == (val_loss.index(min(val_loss)) + 1, 3)
    metrics = json.loads((run / "metrics.json").read_text())
    assert summary["metrics"]["validation"] == metrics["validation"]


def test_a_checkpoint_save_cut_short_resumes_from_the_previous_one(interrupted):
    """SIGTERM or a kill during Keras's `save_weights` can leave a weights file that opens but
    holds no variables (Keras falls back to its previous copy only when the file does not open):
    the resume falls back to the previous checkpoint and finishes the run."""
    import h5py

    _, partial = interrupted
    checkpoints = partial / "checkpoints"
    weights, metadata = checkpoints / "latest.weights.h5", checkpoints / KERAS_METADATA
    # what the double-buffered save leaves when cut short: the previous copies in place, the
    # metadata not yet rewritten, the weights file begun but empty
    shutil.copyfile(weights, f"{weights}.bkp")
    shutil.copyfile(metadata, f"{metadata}.bkp")
    h5py.File(weights, "w").close()
    result = runner.invoke(app, ["train", "--resume", str(partial), "--quiet"])
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip().splitlines()[-1])
    assert len((run / "history.csv").read_text().strip().splitlines()) == 1 + 3
