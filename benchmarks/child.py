"""Running a benchmark contender as a child process and reading what it cost."""

from __future__ import annotations

import os
import subprocess
import time


def run_measured(command: list[str], *, expect: int = 0) -> tuple[dict[str, float], str]:
    """Wall and CPU seconds and peak RSS (MiB) of a child process, and its stderr.

    A child that exits other than `expect` ends the benchmark with its command and the end of
    its stderr.
    """
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = process.stderr.read().decode() if process.stderr else ""
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != expect:
        raise SystemExit(f"{' '.join(command[:4])} did not exit {expect}:\n{stderr[-3000:]}")
    cost = {
        "wall": time.monotonic() - started,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_mib": usage.ru_maxrss / 1024,  # Linux reports KiB
    }
    return cost, stderr
