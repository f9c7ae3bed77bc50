"""Two `mlcli train` worker processes on loopback (`TF_CONFIG`, MultiWorkerMirroredStrategy) on a
table WITH a test split: both exit 0, the chief writes one complete run (model, metrics of every
split, plots), the worker writes nothing into the runs folder.

Keras's `evaluate` fails under the strategy (keras-team/keras#20585): the final evaluation of the
test split used to end both workers with exit 1 after training."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.csv as pa_csv
import pytest
from conftest import make_table

from mlcli.runs.directory import HISTORY, LEARNING_CURVES, MANIFEST, METRICS, MODEL

MLCLI = [sys.executable, "-m", "mlcli", "train"]


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _run_cluster(config: Path, folder: Path) -> list[tuple[int, str, str]]:
    """Starts two workers of one cluster; (exit code, stdout, stderr) of each."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    processes = []
    for index in range(2):
        environ = {
            **os.environ,
            "TF_CONFIG": json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}
            ),
            "TMPDIR": str(folder / "scratch"),  # where the worker's scratch run goes
        }
        processes.append(
            subprocess.Popen(
                [*MLCLI, str(config), "--quiet", "--device", "cpu"],
                cwd=folder,
                env=environ,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        outputs = [process.communicate(timeout=600) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    return [
        (process.returncode, stdout, stderr)
        for process, (stdout, stderr) in zip(processes, outputs, strict=True)
    ]


@pytest.mark.slow
@pytest.mark.parametrize("task", ["binary", "regression"])
def test_two_workers_complete_a_run_with_a_test_split(write_config, tmp_path, task):
    (tmp_path / "scratch").mkdir()
    target = {"binary": "label", "regression": "value"}[task]
    exclude = [column for column in ("id", "label", "tier", "value") if column != target]
    pa_csv.write_csv(make_table(120, seed=1), tmp_path / "test.csv")
    config = write_config(
        data={"train": "data.csv", "validation": 0.2, "test": "test.csv"},
        target={"column": target, "task": task},
        features={"review": "text", "grade": "categorical", "exclude": exclude},
        # several steps per call, as by default: Keras's evaluate then runs a while loop
        training={"epochs": 2, "batch_size": 16, "steps_per_execution": 4},
    )
    results = _run_cluster(config, tmp_path)
    for index, (code, _, stderr) in enumerate(results):
        assert code == 0, f"worker {index} exit {code}: {stderr[-3000:]}"

    runs_folder = tmp_path / "runs" / "tiny"
    run = Path(results[0][1].strip().splitlines()[-1])
    assert sorted(path.name for path in runs_folder.iterdir()) == sorted([run.name, "latest"])
    assert Path(results[1][1].strip().splitlines()[-1]) == runs_folder
    # the worker's scratch run is gone; TensorFlow's autograph also writes its generated
    # modules to TMPDIR and removes them, but not their bytecode where Python writes it
    left = [path.name for path in (tmp_path / "scratch").iterdir() if path.name != "__pycache__"]
    assert not left
    for artifact in (MODEL, METRICS, LEARNING_CURVES, HISTORY):
        assert (run / artifact).is_file(), artifact

    metrics = json.loads((run / METRICS).read_text())
    for split in ("train", "validation", "test"):
        assert metrics[split]["rows"] > 0
        assert all(math.isfinite(v) for v in metrics[split].values()), metrics[split]
    assert metrics["test"]["rows"] == 120  # every row counted once
    manifest = json.loads((run / MANIFEST).read_text())
    assert manifest["device"]["strategy"] == "MultiWorkerMirroredStrategy"
    assert manifest["checks"]["composition"]["passed"] is True
