"""Crash consistency: `mlcli predict` and `mlcli export` killed with SIGKILL at seeded random
moments never leave a half-written file or folder under the final name (temporary names only),
and the same command run again succeeds."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow

SEED = 15
ENVIRONMENT = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1"}


def _mlcli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mlcli", *args, "--quiet"]


def _killed_at(command: list[str], seconds: float) -> int | None:
    """Runs `command`, SIGKILLs it after `seconds`; its exit code if it ended before."""
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENVIRONMENT
    )
    try:
        return process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return None


def _complete_prediction(path: Path, rows: int) -> None:
    if path.suffix == ".parquet":
        assert pq.read_table(path).num_rows == rows
    elif path.suffix == ".jsonl":
        lines = path.read_text().splitlines()
        assert len(lines) == rows and all(json.loads(line) for line in lines)
    else:
        assert pa_csv.read_csv(path).num_rows == rows


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_killed_predict_never_leaves_a_half_written_file(trained_runs, tmp_path, suffix):
    rng = random.Random(f"{SEED}{suffix}")
    run, data = str(trained_runs["binary"]), str(trained_runs["data"])
    output = tmp_path / f"predictions{suffix}"
    command = _mlcli("predict", run, "--data", data, "-o", str(output), "--batch-size", "10")
    report = output.with_name(f"{output.name}.drift.json")  # written after the rename
    for moment in sorted(rng.uniform(2.0, 8.0) for _ in range(2)):
        code = _killed_at(command, moment)
        assert code in (None, 0)
        if output.exists():  # renamed only when complete (a kill may come after the rename)
            _complete_prediction(output, 400)
            output.unlink()
        if report.exists():  # only beside a complete output, and whole
            assert json.loads(report.read_text())["rows"] == 400
            report.unlink()
        for left in tmp_path.iterdir():  # nothing else but hidden temporaries
            hidden = left.name.startswith(f".{output.name}.")
            assert hidden and (left.name.endswith(".partial") or ".drift.json." in left.name)
    subprocess.run(command, check=True, capture_output=True, env=ENVIRONMENT, timeout=300)
    _complete_prediction(output, 400)


@pytest.mark.parametrize(
    ("export_format", "looks_complete"),
    [("saved_model", "saved_model.pb"), ("keras", "model.keras")],
)
def test_killed_export_never_leaves_a_half_written_folder(
    trained_runs, tmp_path, export_format, looks_complete
):
    rng = random.Random(f"{SEED}{export_format}")
    output = tmp_path / "exports"
    command = _mlcli("export", str(trained_runs["binary"]), "-f", export_format, "-o", str(output))
    final = output / "tiny-binary" / "1" if export_format == "saved_model" else output
    for moment in sorted(rng.uniform(2.0, 14.0) for _ in range(2)):
        code = _killed_at(command, moment)
        if final.exists():  # renamed only once written and checked (a kill may come after)
            assert code in (None, 0)
            info = json.loads((final / "export.json").read_text())
            assert info["check"]["passed"] and (final / looks_complete).is_file()
            break
        # nothing but hidden temporary folders beside where the export will go
        for left in final.parent.iterdir() if final.parent.exists() else []:
            assert left.name.startswith(f".{final.name}.") and left.name.endswith(".tmp")
    forced = [*command, "--force"] if final.exists() else command
    subprocess.run(forced, check=True, capture_output=True, env=ENVIRONMENT, timeout=300)
    info = json.loads((final / "export.json").read_text())
    assert info["check"]["passed"] and (final / looks_complete).is_file()
