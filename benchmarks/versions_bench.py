"""A live version swap under load: `mlcli serve BASE` while version 2 is published mid-run.

The run is exported as a SavedModel (version 1) into a temporary base folder, and served from
there (`python -m mlcli serve BASE`, access log on, to a file). 32 clients (a minimal asyncio
HTTP/1.1 client like `serve_bench.py`'s: keep-alive connections, prepared one-row requests
from adult.test) send 6000 predict requests, after 200 sent one at a time and not counted.
After the first sixth, version 2 is published the way TF Serving's documentation asks: the
version 1 folder copied under a hidden temporary name in the base folder, then renamed to `2`.
A monitor asks `GET /v1/models/NAME` every 20 ms.

It prints the failed requests (any error or non-200), the seconds from the rename to version 2
being AVAILABLE (the poll interval included), the versions that answered, and p50/p99 of the
requests started before the rename, during the load (rename to AVAILABLE) and after.

Usage:

    python -m mlcli train examples/adult/config.yaml --quiet
    python benchmarks/versions_bench.py --run runs/adult-income/latest [--json figures.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from serve_bench import ADULT_TEST, NAME, free_port, launch, load_rows, raw_request


@dataclass
class Answer:
    started: float
    seconds: float
    status: int
    version: str


@dataclass
class Swap:
    renamed: float = 0.0
    available: float = 0.0
    states: list[str] = field(default_factory=list)  # every distinct status the monitor saw


class VersionedConnection:
    """`serve_bench.Connection`, also reading the `x-mlcli-model-version` header."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, str, bytes]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length, version = 0, ""
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"x-mlcli-model-version":
                version = value.strip().decode()
        body = await self.reader.readexactly(length)
        return int(head[9:12]), version, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def export_version_one(run: str, folder: Path) -> Path:
    """The base folder holding the run's SavedModel as version 1."""
    from mlcli.exporting.export import export

    return export(run, format="saved_model", output=folder).parent


def start(base: Path, port: int, log: Path, poll_seconds: float) -> subprocess.Popen:
    command = [sys.executable, "-m", "mlcli", "serve", str(base), "--name", NAME]
    command += ["--port", str(port), "--poll-seconds", str(poll_seconds)]
    return launch(command, port, log)


def publish(base: Path, number: int) -> float:
    """Version 1 published as `number` (copy under a hidden name, rename); the rename's time."""
    temporary = base / f".{number}.copy.tmp"
    shutil.copytree(base / "1", temporary)
    temporary.rename(base / str(number))
    return time.perf_counter()


async def monitor(port: int, swap: Swap, done: asyncio.Event) -> None:
    """Watches the status every 20 ms, from the rename until version 2 is AVAILABLE."""
    connection = VersionedConnection(port)
    raw = f"GET /v1/models/{NAME} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    while not done.is_set():
        _, _, body = await connection.request(raw)
        states = ", ".join(
            f"{entry['version']}:{entry['state']}"
            for entry in json.loads(body)["model_version_status"]
        )
        if not swap.states or swap.states[-1] != states:
            swap.states.append(states)
        if swap.renamed and not swap.available and "2:AVAILABLE" in states:
            swap.available = time.perf_counter()
        await asyncio.sleep(0.02)
    connection.close()


async def load(
    port: int, base: Path, bodies: list[bytes], *, requests: int, concurrency: int, publish_at: int
) -> tuple[list[Answer], Swap, float]:
    raw = [raw_request(port, body) for body in bodies]
    answers: list[Answer] = []
    swap, done = Swap(), asyncio.Event()
    sent = 0

    async def client() -> None:
        nonlocal sent
        connection = VersionedConnection(port)
        while sent < requests:
            index = sent
            sent += 1
            if index == publish_at:
                swap.renamed = await asyncio.to_thread(publish, base, 2)
            began = time.perf_counter()
            try:
                status, version, _ = await asyncio.wait_for(
                    connection.request(raw[index % len(raw)]), 120
                )
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
                status, version = 0, ""
                connection.close()
            answers.append(Answer(began, time.perf_counter() - began, status, version))
        connection.close()

    warm_up = VersionedConnection(port)  # the server's first calls are not what is measured
    for index in range(200):
        await warm_up.request(raw[index % len(raw)])
    warm_up.close()
    watcher = asyncio.create_task(monitor(port, swap, done))
    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    while not swap.available and time.perf_counter() - swap.renamed < 120:
        await asyncio.sleep(0.02)  # the load ended before the swap: wait for it anyway
    done.set()
    await watcher
    return answers, swap, wall


def _percentiles(answers: list[Answer]) -> dict[str, float]:
    if not answers:
        return {"requests": 0, "p50_ms": float("nan"), "p99_ms": float("nan")}
    ms = np.asarray([a.seconds for a in answers]) * 1000
    return {
        "requests": len(answers),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def report(answers: list[Answer], swap: Swap, wall: float) -> dict[str, Any]:
    available = swap.available or float("inf")
    phases = {
        "before": [a for a in answers if a.started < swap.renamed],
        "during": [a for a in answers if swap.renamed <= a.started < available],
        "after": [a for a in answers if a.started >= available],
    }
    failed = [a for a in answers if a.status != 200]
    figures: dict[str, Any] = {
        "requests": len(answers),
        "failed": len(failed),
        "seconds": round(wall, 2),
        "rename_to_available_s": round(swap.available - swap.renamed, 3)
        if swap.available
        else None,
        "answered_by_version": dict(Counter(a.version for a in answers if a.status == 200)),
        "status_seen": swap.states,
        "phases": {name: _percentiles(group) for name, group in phases.items()},
    }
    print(f"requests {len(answers)}, failed {len(failed)}, {wall:.1f} s")
    print(f"rename to AVAILABLE: {figures['rename_to_available_s']} s")
    print(f"answered by version: {figures['answered_by_version']}")
    print("statuses seen: " + " | ".join(swap.states))
    print(f"{'phase':<7} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for name, values in figures["phases"].items():
        print(
            f"{name:<7} {values['requests']:>8} {values['p50_ms']:>8.2f} {values['p99_ms']:>8.2f}"
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="runs/adult-income/latest")
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--publish-at", type=int, default=1000, help="the request index")
    parser.add_argument("--poll-seconds", type=float, default=1.0)
    parser.add_argument("--data", type=Path, default=ADULT_TEST)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    rows = load_rows(args.run, 2000, args.data)
    bodies = [json.dumps({"instances": [row]}).encode() for row in rows]
    with tempfile.TemporaryDirectory(prefix="mlcli-versions-bench-") as scratch:
        folder = Path(scratch)
        base = export_version_one(args.run, folder / "serving")
        port = free_port()
        process = start(base, port, folder / "serve.log", args.poll_seconds)
        try:
            answers, swap, wall = asyncio.run(
                load(
                    port,
                    base,
                    bodies,
                    requests=args.requests,
                    concurrency=args.concurrency,
                    publish_at=args.publish_at,
                )
            )
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=120)
        events = [
            line for line in (folder / "serve.log").read_text().splitlines() if "[version" in line
        ]
    print("\n".join(events))
    figures = report(answers, swap, wall)
    figures["exit_code_after_sigterm"] = code
    print(f"server exit code after SIGTERM: {code}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
