"""One training worker of `mlcli train --ray`: a Ray actor that runs `mlcli train` as a child.

The driver (`mlcli.training.ray_train`) makes this class a Ray actor with the CPUs and GPUs of
one placement-group bundle. The actor says where it is (its node and a free port), then runs
the worker's `python -m mlcli train ...` with its `TF_CONFIG` as a child process: TensorFlow's
state stays in that process, and a stuck worker can be stopped (SIGTERM, then SIGKILL). The
child's stderr lines are kept until the driver polls for them. When the actor dies (killed,
or its Ray worker process lost), the child is sent SIGTERM by the kernel (`PR_SET_PDEATHSIG`
on Linux), so no orphan keeps training.

Nothing here imports Ray at module level: the class is importable without the extra.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import io
import os
import signal
import socket
import subprocess
import sys
import tarfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1  # prctl(2)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """In the child: SIGTERM when the actor's thread that started it ends (Linux only)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    """A TCP port that nothing on this machine listens on now (TensorFlow binds it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


class TrainingWorker:
    """A worker's child `mlcli train` process, its stderr lines and its exit code."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self._lines: collections.deque[str] = collections.deque()
        self._stdout: list[str] = []
        self._lock = threading.Lock()
        self._readers: list[threading.Thread] = []

    def where(self) -> tuple[str, int]:
        """(this actor's Ray node id, a free port on it)."""
        import ray

        return ray.get_runtime_context().get_node_id(), free_port()

    def start(self, command: Sequence[str], environ: dict[str, str], cwd: str | None) -> int:
        """Starts the child with `environ` laid over this actor's environment; its pid."""
        folder = cwd if cwd is not None and Path(cwd).is_dir() else None
        self._process = subprocess.Popen(
            list(command),
            env={**os.environ, **environ},
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,  # the driver's Ctrl-C reaches the driver, which stops it
            preexec_fn=_die_with_parent,
        )
        assert self._process.stdout is not None and self._process.stderr is not None
        self._readers = [
            self._read(self._process.stderr, self._keep_line),
            self._read(self._process.stdout, self._stdout.append),
        ]
        return self._process.pid

    def _keep_line(self, line: str) -> None:
        with self._lock:
            self._lines.append(line)

    @staticmethod
    def _read(stream: IO[str], keep: object) -> threading.Thread:
        def pump() -> None:
            for line in stream:
                keep(line.rstrip("\n"))  # type: ignore[operator]

        thread = threading.Thread(target=pump, daemon=True)
        thread.start()
        return thread

    def poll(self) -> tuple[list[str], int | None, list[str]]:
        """(stderr lines since the last poll, the exit code or None while running, stdout
        lines once it ended)."""
        if self._process is None:
            return [], None, []
        code = self._process.poll()
        if code is not None:
            for reader in self._readers:
                reader.join(timeout=5)  # the rest of its output
        with self._lock:
            lines = list(self._lines)
            self._lines.clear()
        return lines, code, list(self._stdout) if code is not None else []

    def pack(self, path: str) -> bytes:
        """The run directory at `path` on this node as a gzipped tar, for the driver."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            archive.add(path, arcname=".")
        return buffer.getvalue()

    def stop(self, grace_seconds: float) -> int | None:
        """SIGTERM to the child (it keeps its last epoch's checkpoint, exit 130), SIGKILL to
        its process group after `grace_seconds`; its exit code (None if it never started)."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=grace_seconds)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
        return process.returncode
