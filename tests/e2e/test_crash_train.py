"""Crash consistency of `mlcli train`: kill -9 at seeded random moments, then `--resume`.

Each seed picks a moment, from just after the run folder has its config to the final save
after the last epoch: it waits for a marker in the partial run (a file appearing, or a number
of epochs in history.csv) and then a seeded delay, and kills the process with SIGKILL. Nothing
may then look complete, `mlcli runs` must list the run as interrupted, and `--resume` must
finish it into a complete run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.csv as pa_csv
import pytest
import yaml
from conftest import make_table
from typer.testing import CliRunner

from mlcli.cli.app import app
from mlcli.runs.directory import Run, check_complete

MLCLI = [sys.executable, "-m", "mlcli"]
EPOCHS = 4
# (marker, how many history rows it needs): where each seed waits before its delay
MARKERS = [("config.yaml", 0), ("manifest.json", 0), ("history.csv", 1), ("history.csv", EPOCHS)]
SEEDS = [0, 1, 2, 3]


def _config(folder: Path) -> Path:
    pa_csv.write_csv(make_table(1200, seed=2), folder / "data.csv")
    config = {
        "name": "crash",
        "seed": 5,
        "data": {"train": "data.csv", "validation": 0.2},
        "target": {"column": "label", "task": "binary"},
        "features": {"review": "text", "grade": "categorical", "exclude": ["id", "tier", "value"]},
        "model": {"hidden_units": [16]},
        "training": {"epochs": EPOCHS, "batch_size": 32, "steps_per_execution": 1},
        "output": {"dir": str(folder / "runs")},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _partials(folder: Path) -> list[Path]:
    return sorted((folder / "runs" / "crash").glob(".*.partial"))


def _reached(partial: Path, marker: str, rows: int) -> bool:
    path = partial / marker
    if not path.is_file():
        return False
    return rows == 0 or len(path.read_text().splitlines()) - 1 >= rows


def _kill_at_a_seeded_moment(folder: Path, config: Path, seed: int) -> int | None:
    """Starts `mlcli train`, kills it (SIGKILL) at the seed's moment; None when it was killed."""
    rng = random.Random(seed)
    marker, rows = MARKERS[seed % len(MARKERS)]
    delay = rng.uniform(0.0, 0.4)
    process = subprocess.Popen(
        [*MLCLI, "train", str(config), "--quiet"],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        partials = _partials(folder)
        if partials and _reached(partials[0], marker, rows):
            time.sleep(delay)
            break
        time.sleep(0.01)
    if process.poll() is not None:
        return process.returncode  # finished (or failed) before the moment came
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    return None


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_a_train_killed_at_any_moment_looks_incomplete_and_resumes(tmp_path: Path, seed: int):
    config = _config(tmp_path)
    code = _kill_at_a_seeded_moment(tmp_path, config, seed)
    names = tmp_path / "runs" / "crash"
    if code is not None:  # it really finished: then it must be complete, and nothing partial
        assert code == 0
        (run,) = [p for p in names.iterdir() if not p.name.startswith(".") and p.is_dir()]
        check_complete(Run(run))
        return
    # nothing looks complete: one partial folder, no final folder, no `latest`
    assert [p.name for p in names.iterdir() if not p.name.startswith(".")] == []
    (partial,) = _partials(tmp_path)
    listed = CliRunner().invoke(app, ["runs", "--dir", str(tmp_path / "runs"), "--json"])
    assert listed.exit_code == 0, listed.output
    assert [r["status"] for r in json.loads(listed.stdout)] == ["interrupted"]

    resumed = subprocess.run(
        [*MLCLI, "train", "--resume", str(partial), "--quiet"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    run = Path(resumed.stdout.strip().splitlines()[-1])
    assert run.name == partial.name.removeprefix(".").removesuffix(".partial")
    check_complete(Run(run))
    assert (run / "model.keras").is_file() and (run / "metrics.json").is_file()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["epochs_run"] == EPOCHS
    assert len((run / "history.csv").read_text().splitlines()) == 1 + EPOCHS
    assert (names / "latest").resolve() == run.resolve()
    assert _partials(tmp_path) == []
