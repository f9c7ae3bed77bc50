"""Interrupted training resumes to the same result; the same seed gives the same run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.csv as pa_csv
import pytest
import yaml
from conftest import make_table

MLCLI = [sys.executable, "-m", "mlcli"]


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
    config = _config(reference_dir, rows=3000, epochs=6)
    finished = _train(str(config), cwd=reference_dir)
    assert finished.returncode == 0, finished.stderr
    reference = Path(finished.stdout.strip().splitlines()[-1])
    reference = reference if reference.is_absolute() else reference_dir / reference

    folder = tmp_path / "interrupted"
    folder.mkdir()
    config = _config(folder, rows=3000, epochs=6)
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
