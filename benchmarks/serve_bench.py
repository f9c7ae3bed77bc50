"""Serving under load: `mlcli serve` against a naive server, same run, same rows, same client.

Both servers run as subprocesses on free 127.0.0.1 ports and speak TF Serving's REST API with
the same request parsing and response bodies (mlcli.serving.payloads); they differ only in how they
call the model:

- mlcli: `python -m mlcli serve RUN` (access log on, to a file): micro-batching into one
  compiled `tf.function` call per batch, in one model thread.
- naive: Starlette on uvicorn calling `model.predict` once per request in Starlette's thread
  pool, the way a first FastAPI/Starlette wrapper around a Keras model usually looks.

The load generator is a minimal asyncio HTTP/1.1 client (keep-alive connections, prepared
requests; see `Connection`), one row per request (rows from examples/adult/adult.test), on
loopback only, bounded in requests and in seconds:

- concurrency 1: single-row latency p50/p99;
- concurrency 32: rows/s and p99, and failed requests (any error or non-200) out of all sent.

Cold start (`--cold-starts N`, 3 by default; median shown): the seconds from starting
`python -m mlcli serve RUN` to the first 200 answer to a one-row predict request, which the
client sends again every 20 ms until one is answered.

Usage:

    python -m mlcli train examples/adult/config.yaml --quiet
    python benchmarks/serve_bench.py --run runs/adult-income/latest
    python benchmarks/serve_bench.py --run runs/adult-income/latest --cold-start-only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
ADULT_TEST = REPO / "examples" / "adult" / "adult.test"
NAME = "bench"


@dataclass
class Phase:
    """One load phase against one server."""

    server: str
    concurrency: int
    requests: int
    failed: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rows_per_second(self) -> float:
        return (self.requests - self.failed) / self.seconds if self.seconds else 0.0


def load_rows(run: str, limit: int, data: Path = ADULT_TEST) -> list[dict[str, Any]]:
    """Rows of `data` (adult.test) as JSON objects of the model's input columns (null when
    missing); `data` is read with the run's CSV settings for that file."""
    from mlcli.data.sources import source_for_run
    from mlcli.data.tables import read_table
    from mlcli.runs.loading import open_run

    loaded = open_run(run, with_model=False)
    names = loaded.schema.input_names
    source = source_for_run(loaded.config, data, names=names)
    return read_table(source, columns=names).slice(0, limit).to_pylist()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_command(kind: str, run: str, port: int) -> list[str]:
    if kind == "mlcli":
        command = [sys.executable, "-m", "mlcli", "serve", run, "--name", NAME]
    else:
        command = [sys.executable, __file__, "--naive-server", "--run", run]
    return [*command, "--port", str(port)]


def process_cpu_seconds(pid: int) -> float:
    """The user and system CPU seconds a running process has used (Linux's /proc; else NaN)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cold_start(run: str, body: bytes, log: Path) -> tuple[float, float]:
    """Seconds from starting `mlcli serve RUN` to its first 200 answer to a predict request,
    and the server's CPU seconds by then (steadier than the wall time on a busy machine)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/models/{NAME}:predict"
    with log.open("w") as stderr:
        started = time.monotonic()
        process = subprocess.Popen(
            server_command("mlcli", run, port), stdout=subprocess.DEVNULL, stderr=stderr, cwd=REPO
        )
    try:
        while time.monotonic() - started < 180:
            if process.poll() is not None:
                raise SystemExit(f"mlcli serve exited with {process.returncode}: {log.read_text()}")
            try:
                if httpx.post(url, content=body, timeout=60).status_code == 200:
                    return time.monotonic() - started, process_cpu_seconds(process.pid)
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        raise SystemExit("mlcli serve did not answer within 180 s")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)


def launch(command: list[str], port: int, log: Path, what: str = "mlcli serve") -> subprocess.Popen:
    """Starts the server `command` (stderr to `log`) and returns it once `GET /healthz` on
    `port` answers 200; exits the benchmark if it stops or does not answer within 180 s."""
    with log.open("w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, cwd=REPO)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode}: {log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"{what} did not start within 180 s")


def start_server(kind: str, run: str, port: int, log: Path) -> subprocess.Popen:
    return launch(server_command(kind, run, port), port, log, what=f"{kind} server")


class Connection:
    """One keep-alive HTTP/1.1 connection that sends prepared requests and reads the answers.

    The load generator is this small asyncio client rather than httpx: on 2 shared cores
    httpx's own work per request (several milliseconds at concurrency 32) would be what the
    benchmark measured, not the server.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> int:
        """Sends one request; returns the response's status once its body is read."""
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, close = 0, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        await self.reader.readexactly(length)
        if close:
            self.writer.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def raw_request(port: int, body: bytes) -> bytes:
    head = (
        f"POST /v1/models/{NAME}:predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def run_load(
    port: int, requests_raw: list[bytes], *, concurrency: int, requests: int, max_seconds: float
) -> tuple[list[float], int, float]:
    """Latencies of answered requests, failures, and wall seconds for one phase."""
    latencies: list[float] = []
    failed = 0
    sent = 0
    start = time.perf_counter()
    deadline = start + max_seconds

    async def worker() -> None:
        nonlocal failed, sent
        connection = Connection("127.0.0.1", port)
        while sent < requests and time.perf_counter() < deadline:
            raw = requests_raw[sent % len(requests_raw)]
            sent += 1
            began = time.perf_counter()
            try:
                ok = await asyncio.wait_for(connection.request(raw), 120) == 200
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
                ok = False
                connection.close()
                connection = Connection("127.0.0.1", port)
            if ok:
                latencies.append(time.perf_counter() - began)
            else:
                failed += 1
        connection.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, failed, time.perf_counter() - start


def measure(
    kind: str, port: int, bodies: list[bytes], concurrency: int, requests: int, seconds: float
) -> Phase:
    raw = [raw_request(port, body) for body in bodies]
    latencies, failed, wall = asyncio.run(
        run_load(port, raw, concurrency=concurrency, requests=requests, max_seconds=seconds)
    )
    ms = np.asarray(latencies) * 1000 if latencies else np.asarray([np.nan])
    return Phase(
        server=kind,
        concurrency=concurrency,
        requests=len(latencies) + failed,
        failed=failed,
        seconds=wall,
        p50_ms=float(np.percentile(ms, 50)),
        p99_ms=float(np.percentile(ms, 99)),
    )


def naive_server(run: str, port: int) -> None:
    """The baseline: the same parsing and responses, `model.predict` once per request."""
    from mlcli._tensorflow import import_tensorflow

    tf = import_tensorflow()
    import uvicorn
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from mlcli.exporting.signature import ServingSignature
    from mlcli.inference.labels import decision_threshold
    from mlcli.runs.loading import open_run
    from mlcli.serving.payloads import BadRequestError, parse_predict, predict_response

    loaded = open_run(run)
    signature = ServingSignature.from_schema(
        loaded.schema, threshold=decision_threshold(saved=loaded.threshold)
    )

    def model_predict(columns: dict[str, np.ndarray]) -> np.ndarray:
        tensors = {n: tf.constant(columns[n], dtype=d) for n, d in signature.inputs.items()}
        return loaded.model.predict(tensors, verbose=0)

    async def predict(request: Request) -> JSONResponse:
        try:
            parsed = parse_predict(await request.body(), signature)
        except BadRequestError as error:
            return JSONResponse({"error": str(error)}, status_code=error.status)
        outputs = await run_in_threadpool(model_predict, parsed.columns)
        return JSONResponse(predict_response(outputs, signature, columnar=parsed.columnar))

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    routes = [
        Route("/healthz", healthz),
        Route(f"/v1/models/{NAME}:predict", predict, methods=["POST"]),
    ]
    uvicorn.run(Starlette(routes=routes), host="127.0.0.1", port=port, log_level="warning")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="runs/adult-income/latest")
    parser.add_argument("--requests", type=int, default=20_000, help="at concurrency 32")
    parser.add_argument("--latency-requests", type=int, default=2_000, help="at concurrency 1")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-seconds", type=float, default=240, help="per mlcli phase")
    parser.add_argument("--naive-seconds", type=float, default=30, help="per naive phase")
    parser.add_argument(
        "--data", type=Path, default=ADULT_TEST, help="the rows sent: adult.test as the run read it"
    )
    parser.add_argument("--cold-starts", type=int, default=3, help="mlcli serve starts timed")
    parser.add_argument("--cold-start-only", action="store_true", help="skip the load phases")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--naive-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args()


def bench_server(kind: str, args: argparse.Namespace, bodies: list[bytes], logs: Path) -> list:
    port = free_port()
    process = start_server(kind, args.run, port, logs / f"{kind}.log")
    seconds = args.max_seconds if kind == "mlcli" else args.naive_seconds
    try:
        measure(kind, port, bodies, 1, 50, seconds)  # warm-up
        phases = [
            measure(kind, port, bodies, 1, args.latency_requests, seconds),
            measure(kind, port, bodies, args.concurrency, args.requests, seconds),
        ]
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=120)
    print(f"{kind}: server exit code after SIGTERM: {code}", file=sys.stderr)
    return phases


def report(phases: list[Phase], args: argparse.Namespace) -> dict[str, Any]:
    print(
        f"{'server':<6} {'conc':>4} {'requests':>8} {'failed':>6} {'seconds':>8} "
        f"{'rows/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
    )
    for p in phases:
        print(
            f"{p.server:<6} {p.concurrency:>4} {p.requests:>8} {p.failed:>6} {p.seconds:>8.1f} "
            f"{p.rows_per_second:>9.1f} {p.p50_ms:>8.2f} {p.p99_ms:>8.2f}"
        )
    by = {(p.server, p.concurrency): p for p in phases}
    fast, slow = by[("mlcli", args.concurrency)], by[("naive", args.concurrency)]
    speedup = fast.rows_per_second / slow.rows_per_second if slow.rows_per_second else float("inf")
    checks = {
        "p50 at concurrency 1 under 5 ms": by[("mlcli", 1)].p50_ms < 5.0,
        f"rows/s at concurrency {args.concurrency} at least 5x naive ({speedup:.1f}x)": speedup
        >= 5,
        f"0 failed of {fast.requests}": fast.failed == 0 and fast.requests >= args.requests,
    }
    for check, passed in checks.items():
        print(f"{'PASS' if passed else 'FAIL'}  {check}")
    return {
        "phases": [{**asdict(p), "rows_per_second": p.rows_per_second} for p in phases],
        "speedup": speedup,
        "checks": checks,
        "cpus": os.cpu_count(),
    }


def main() -> None:
    args = _arguments()
    if args.naive_server:
        naive_server(args.run, args.port)
        return
    rows = load_rows(args.run, 5000, args.data)
    bodies = [json.dumps({"instances": [row]}).encode() for row in rows]
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as folder:
        starts = [
            cold_start(args.run, bodies[0], Path(folder) / f"cold-{i}.log")
            for i in range(args.cold_starts)
        ]
        phases = [
            phase
            for kind in (() if args.cold_start_only else ("mlcli", "naive"))
            for phase in bench_server(kind, args, bodies, Path(folder))
        ]
    figures: dict[str, Any] = {}
    if starts:
        walls, cpus = [wall for wall, _ in starts], [cpu for _, cpu in starts]
        shown = ", ".join(f"{s:.2f}" for s in walls)
        print(
            f"cold start (process start to the first 200 predict answer): median "
            f"{float(np.median(walls)):.2f} s of {len(walls)} ({shown}); the server's CPU by "
            f"then: median {float(np.median(cpus)):.2f} s ({', '.join(f'{c:.2f}' for c in cpus)})"
        )
        figures["cold_start_s"] = {"median": float(np.median(walls)), "runs": walls}
        figures["cold_start_cpu_s"] = {"median": float(np.median(cpus)), "runs": cpus}
    if phases:
        figures.update(report(phases, args))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
