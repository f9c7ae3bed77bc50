"""mlcli.training.ray_worker.TrainingWorker outside Ray: its child's lines, exit code and
environment, and `stop` (SIGTERM, then SIGKILL after the grace) on small Python children."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

from mlcli.training.ray_worker import TrainingWorker, free_port


def _until_ended(worker: TrainingWorker, seconds: float = 30) -> tuple[list[str], int, list[str]]:
    lines: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        new, code, stdout = worker.poll()
        lines += new
        if code is not None:
            return lines, code, stdout
        time.sleep(0.02)
    raise AssertionError("the child did not end")


CHILD = """
import os, sys
for index in range(int(sys.argv[1])):
    print(f"line {index}", file=sys.stderr, flush=True)
print(os.environ.get("TF_CONFIG", "-"), os.getcwd())
sys.exit(int(sys.argv[2]))
"""


@pytest.mark.parametrize(("lines", "code"), [(0, 0), (3, 3), (500, 130)])
def test_every_stderr_line_the_exit_code_and_stdout_come_back(
    tmp_path: Path, lines: int, code: int
) -> None:
    worker = TrainingWorker()
    assert worker.poll() == ([], None, [])  # not started
    pid = worker.start(
        [sys.executable, "-c", CHILD, str(lines), str(code)], {"TF_CONFIG": "{}"}, str(tmp_path)
    )
    assert pid > 0
    found, ended, stdout = _until_ended(worker)
    assert found == [f"line {index}" for index in range(lines)]
    assert ended == code
    assert stdout == [f"{{}} {tmp_path}"]
    assert worker.poll()[0] == []  # each line comes back once


def test_a_folder_missing_on_this_node_leaves_the_actors_own(tmp_path: Path) -> None:
    worker = TrainingWorker()
    worker.start([sys.executable, "-c", CHILD, "0", "0"], {}, str(tmp_path / "nowhere"))
    _, code, stdout = _until_ended(worker)
    assert code == 0
    assert stdout == [f"- {Path.cwd()}"]


STUBBORN = """
import signal, sys, time
if sys.argv[1] == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
print("ready", file=sys.stderr, flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize(("mode", "expected"), [("exit", 130), ("ignore", -9)])
def test_stop_sends_sigterm_then_sigkill_after_the_grace(mode: str, expected: int) -> None:
    worker = TrainingWorker()
    worker.start([sys.executable, "-c", STUBBORN, mode], {}, None)
    while worker.poll()[0] != ["ready"]:
        time.sleep(0.02)
    started = time.monotonic()
    assert worker.stop(grace_seconds=1.0) == expected
    assert time.monotonic() - started < 10
    assert worker.poll()[1] == expected
    assert worker.stop(grace_seconds=1.0) == expected  # a second stop changes nothing


def test_stop_before_start_is_none() -> None:
    assert TrainingWorker().stop(1.0) is None


def test_a_free_port_can_be_bound() -> None:
    with socket.socket() as sock:
        sock.bind(("", free_port()))
