"""`mlcli runs`: listing complete, running, interrupted and failed runs; showing and diffing."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from mlcli.cli.app import app
from mlcli.runs import directory as runs

runner = CliRunner()
HOUR = 3600.0


def _fake_run(
    folder: Path,
    *,
    started: str,
    status: str,
    epochs: int = 5,
    accuracy: float | None = None,
    checkpoint: bool = False,
    age: float = 0.0,
    with_config: bool = True,
    **manifest: Any,
) -> Path:
    """A run folder with the artifacts `mlcli runs` reads, named as `runs.directory` names them."""
    folder.mkdir(parents=True)
    config = {"name": folder.parent.name, "training": {"epochs": epochs, "batch_size": 32}}
    if with_config:
        (folder / runs.CONFIG).write_text(yaml.safe_dump(config))
    document = {"name": folder.parent.name, "status": status, "started": started, **manifest}
    (folder / runs.MANIFEST).write_text(json.dumps(document))
    if accuracy is not None:
        metrics = {
            "validation": {"loss": 0.5, "accuracy": accuracy, "auc": 0.9, "rows": 100},
            "test": {"loss": 0.4, "accuracy": accuracy - 0.01, "auc": 0.88, "rows": 200},
        }
        (folder / runs.METRICS).write_text(json.dumps(metrics))
    if checkpoint:
        (folder / runs.CHECKPOINTS).mkdir()
        (folder / runs.CHECKPOINTS / "training_metadata.json").write_text('{"epoch": 2}')
    if age:
        stamp = time.time() - age
        for path in [*folder.rglob("*"), folder]:
            os.utime(path, (stamp, stamp))
    return folder


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    """Two complete runs, one interrupted and one failed, of two names."""
    base = tmp_path / "runs"
    income = base / "income"
    _fake_run(
        income / "20250101-100000-aaaaaa",
        started="2025-01-01T10:00:00+0000",
        status="complete",
        seconds={"total": 65.0},
        accuracy=0.84,
    )
    _fake_run(
        income / "20250102-100000-bbbbbb",
        started="2025-01-02T10:00:00+0000",
        status="complete",
        seconds={"total": 3725.0},
        epochs=20,
        accuracy=0.86,
    )
    os.symlink("20250102-100000-bbbbbb", income / runs.LATEST)
    _fake_run(
        income / ".20250103-100000-cccccc.partial",
        started="2025-01-03T10:00:00+0000",
        status="running",
        checkpoint=True,
        age=2 * HOUR,
    )
    _fake_run(
        base / "housing" / ".20250104-100000-dddddd.partial",
        started="2025-01-04T10:00:00+0000",
        status="running",
        age=2 * HOUR,
        with_config=False,  # nothing to resume it from
    )
    return base


def _listed(*args: str) -> list[dict[str, Any]]:
    result = runner.invoke(app, ["runs", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_lists_runs_newest_first_with_status_and_metrics(runs_dir):
    listed = _listed("--dir", str(runs_dir))
    assert [(r["run_id"][-6:], r["status"]) for r in listed] == [
        ("dddddd", "failed"),
        ("cccccc", "interrupted"),
        ("bbbbbb", "complete"),
        ("aaaaaa", "complete"),
    ]
    newest_complete = listed[2]
    assert newest_complete["split"] == "test"
    assert newest_complete["metrics"] == {"accuracy": pytest.approx(0.85), "auc": 0.88}
    assert newest_complete["seconds"] == 3725.0


def test_table_and_name_filter(runs_dir):
    result = runner.invoke(app, ["runs", "income", "--dir", str(runs_dir)])
    assert result.exit_code == 0, result.output
    assert "interrupted" in result.stdout and "housing" not in result.stdout
    assert "1h02m" in result.stdout and "accuracy=0.85" in result.stdout
    assert [r["status"] for r in _listed("housing", "--dir", str(runs_dir))] == ["failed"]


def test_unknown_name_or_folder_is_exit_4(runs_dir, tmp_path):
    result = runner.invoke(app, ["runs", "incme", "--dir", str(runs_dir)])
    assert result.exit_code == 4
    assert "income" in result.stderr
    result = runner.invoke(app, ["runs", "--dir", str(tmp_path / "nowhere")])
    assert result.exit_code == 4


def test_a_live_partial_run_is_running(runs_dir):
    _fake_run(
        runs_dir / "income" / ".20250105-100000-eeeeee.partial",
        started="2025-01-05T10:00:00+0000",
        status="running",
        checkpoint=True,
        age=2 * HOUR,  # stale files, but its process is alive
        pid=os.getpid(),
        host=socket.gethostname(),
    )
    assert _listed("income", "--dir", str(runs_dir))[0]["status"] == "running"


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.parametrize("checkpoint", [True, False], ids=["checkpointed", "before-epoch-1"])
def test_a_killed_run_is_interrupted_with_or_without_a_checkpoint(runs_dir, checkpoint):
    """`--resume` continues a killed run from its checkpoint, or from the start without one."""
    _fake_run(
        runs_dir / "income" / ".20250105-100000-ffffff.partial",
        started="2025-01-05T10:00:00+0000",
        status="running",
        checkpoint=checkpoint,
        pid=_dead_pid(),
        host=socket.gethostname(),
    )
    assert _listed("income", "--dir", str(runs_dir))[0]["status"] == "interrupted"


def test_a_partial_run_stated_failed_is_failed(runs_dir):
    _fake_run(
        runs_dir / "income" / ".20250105-100000-ffffff.partial",
        started="2025-01-05T10:00:00+0000",
        status="failed",
        checkpoint=True,
        pid=_dead_pid(),
        host=socket.gethostname(),
    )
    assert _listed("income", "--dir", str(runs_dir))[0]["status"] == "failed"


def test_show_by_name_id_and_diff(runs_dir):
    result = runner.invoke(
        app,
        ["runs", "show", "income", "--dir", str(runs_dir), "--diff", "aaaa", "--json"],
    )
    assert result.exit_code == 0, result.output
    details = json.loads(result.stdout)
    assert details["run_id"] == "20250102-100000-bbbbbb"
    assert {a["path"] for a in details["artifacts"]} >= {"config.yaml", "metrics.json"}
    assert details["diff"]["config"] == [{"key": "training.epochs", "run": 20, "other": 5}]
    test_accuracy = [
        row
        for row in details["diff"]["metrics"]
        if (row["split"], row["metric"]) == ("test", "accuracy")
    ]
    assert test_accuracy[0]["run"] == pytest.approx(0.85)
    assert test_accuracy[0]["other"] == pytest.approx(0.83)
    text = runner.invoke(app, ["runs", "show", "cccccc", "--dir", str(runs_dir)])
    assert text.exit_code == 0, text.output
    assert "interrupted" in text.stdout and "checkpoints/" in text.stdout


def test_show_unknown_run_is_exit_4(runs_dir):
    result = runner.invoke(app, ["runs", "show", "zzz", "--dir", str(runs_dir)])
    assert result.exit_code == 4
    assert "zzz" in result.stderr


def test_show_a_real_trained_run(trained_runs):
    run = trained_runs["binary"]
    result = runner.invoke(app, ["runs", "show", str(run), "--json"])
    assert result.exit_code == 0, result.output
    details = json.loads(result.stdout)
    assert details["status"] == "complete"
    assert details["metrics"]["validation"]["rows"] > 0
    assert {"model.keras", "schema.json", "history.csv"} <= {
        a["path"] for a in details["artifacts"]
    }
    history = (run / runs.HISTORY).read_text().splitlines()
    column = history[0].split(",").index("val_loss")
    val_loss = [float(row.split(",")[column]) for row in history[1:]]
    kept = details["kept_epoch"]  # early stopping restored the best val_loss's epoch
    assert (kept["epoch"], kept["reason"]) == (val_loss.index(min(val_loss)) + 1, "best_epoch")
    text = runner.invoke(app, ["runs", "show", str(run)])
    assert text.exit_code == 0, text.output
    shown = f"kept +epoch {kept['epoch']} of {kept['epochs_run']}: early stopping restored"
    assert re.search(shown, text.stdout), text.stdout
    listed = _listed("--dir", str(run.parent.parent))
    assert {r["name"] for r in listed} >= {"tiny-binary", "tiny-regression"}
    assert next(r for r in listed if r["name"] == "tiny-regression")["metrics"].keys() >= {"rmse"}


def test_config_schema_and_show(write_config, tmp_path):
    result = runner.invoke(app, ["config", "schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    assert "training" in schema["properties"] and schema["additionalProperties"] is False
    output = tmp_path / "schema.json"
    assert runner.invoke(app, ["config", "schema", "-o", str(output)]).exit_code == 0
    assert json.loads(output.read_text()) == schema
    config = write_config()
    shown = runner.invoke(app, ["config", "show", str(config), "--set", "training.epochs=7"])
    assert shown.exit_code == 0, shown.output
    assert yaml.safe_load(shown.stdout)["training"]["epochs"] == 7
