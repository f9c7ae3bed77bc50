"""REST against gRPC: one `mlcli serve RUN --grpc-port G`, the same rows, 32 concurrent clients.

One server process serves both APIs on free 127.0.0.1 ports (one model, one batcher). Each
phase sends `--requests` one-row predict requests (rows of examples/adult/adult.test, as the
run reads them) from `--concurrency` clients, each with its own connection, and times each
request from send to the whole answer:

- rest: TF Serving's REST API, `POST /v1/models/bench:predict` with `{"instances": [row]}`,
  by serve_bench.py's small asyncio HTTP/1.1 client (keep-alive, prepared requests);
- grpc: `tensorflow.serving.PredictionService/Predict` with one `TensorProto` per column
  (`tf.make_tensor_proto`), by grpcio's asyncio client, one channel per client (each its own
  connection), the requests serialized beforehand and the answers left as bytes, as the REST
  client leaves its answers unparsed.

The phases alternate (`--rounds 2`: rest, grpc, grpc, rest) so that a change in the machine's
load falls on both. A failure is any error or non-OK answer. The server's exit code after
SIGTERM and its /metrics counts (which must equal the requests sent) are checked at the end.

Usage:

    python -m mlcli train examples/adult/config.yaml --quiet
    python benchmarks/grpc_bench.py --run runs/adult-income/latest [--json figures.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from serve_bench import REPO, free_port, launch, load_rows, raw_request, run_load

NAME = "bench"  # serve_bench's raw requests name this model
PREDICT = "/tensorflow.serving.PredictionService/Predict"


def start_server(run: str, port: int, grpc_port: int, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "mlcli", "serve", run, "--name", NAME]
    command += ["--port", str(port), "--grpc-port", str(grpc_port)]
    return launch(command, port, log)


def grpc_requests(run: str, rows: list[dict[str, Any]]) -> list[bytes]:
    """One serialized one-row PredictRequest per row; a missing value is the model's own (NaN,
    "" or the integer sentinel: gRPC has no null)."""
    from mlcli._tensorflow import import_tensorflow
    from mlcli.preprocessing.inputs import MISSING_VALUES
    from mlcli.runs.loading import open_run

    tf = import_tensorflow()
    from tensorflow_serving.apis import predict_pb2

    dtypes = {c.name: c.dtype for c in open_run(run, with_model=False).schema.columns}
    serialized = []
    for row in rows:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = NAME
        for column, value in row.items():
            if value is None:
                value = MISSING_VALUES[dtypes[column]]
            request.inputs[column].CopyFrom(tf.make_tensor_proto([value]))
        serialized.append(request.SerializeToString())
    return serialized


async def grpc_load(
    port: int, requests_raw: list[bytes], *, concurrency: int, requests: int
) -> tuple[list[float], int, float]:
    """Latencies of answered calls, failures, and wall seconds for one phase."""
    import grpc

    latencies: list[float] = []
    failed = sent = 0
    options = [("grpc.use_local_subchannel_pool", 1)]  # a connection per client
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) for _ in range(concurrency)
    ]
    await asyncio.gather(*(channel.channel_ready() for channel in channels))
    start = time.perf_counter()

    async def client(channel: Any) -> None:
        nonlocal failed, sent
        call = channel.unary_unary(PREDICT)  # bytes in, bytes out
        while sent < requests:
            raw = requests_raw[sent % len(requests_raw)]
            sent += 1
            began = time.perf_counter()
            try:
                await call(raw, timeout=120)
            except grpc.aio.AioRpcError:
                failed += 1
                continue
            latencies.append(time.perf_counter() - began)

    await asyncio.gather(*(client(channel) for channel in channels))
    wall = time.perf_counter() - start
    await asyncio.gather(*(channel.close() for channel in channels))
    return latencies, failed, wall


def phase(protocol: str, latencies: list[float], failed: int, wall: float) -> dict[str, Any]:
    ms = np.asarray(latencies) * 1000 if latencies else np.asarray([np.nan])
    return {
        "protocol": protocol,
        "requests": len(latencies) + failed,
        "failed": failed,
        "seconds": wall,
        "requests_per_second": len(latencies) / wall if wall else 0.0,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def run_phase(protocol: str, ports: dict[str, int], bodies: dict[str, list[bytes]], n: int, c: int):
    if protocol == "rest":
        raw = [raw_request(ports["rest"], body) for body in bodies["rest"]]
        load = run_load(ports["rest"], raw, concurrency=c, requests=n, max_seconds=600)
        found = asyncio.run(load)
    else:
        found = asyncio.run(grpc_load(ports["grpc"], bodies["grpc"], concurrency=c, requests=n))
    return phase(protocol, *found)


def counted(port: int) -> dict[str, float]:
    """Predict requests answered, by protocol, from the server's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            route = sample.labels.get("route", "")
            if sample.name == "mlcli_requests_total" and route.endswith(("predict", "Predict")):
                protocol = sample.labels["protocol"]
                totals[protocol] = totals.get(protocol, 0.0) + sample.value
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="runs/adult-income/latest")
    parser.add_argument("--requests", type=int, default=3000, help="per phase")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1, help="rest+grpc pairs, alternating")
    parser.add_argument("--data", type=Path, default=REPO / "examples" / "adult" / "adult.test")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    rows = load_rows(args.run, 5000, args.data)
    bodies = {
        "rest": [json.dumps({"instances": [row]}).encode() for row in rows],
        "grpc": grpc_requests(args.run, rows),
    }
    ports = {"rest": free_port(), "grpc": free_port()}
    order = [p for i in range(args.rounds) for p in (("rest", "grpc"), ("grpc", "rest"))[i % 2]]
    phases = []
    with tempfile.TemporaryDirectory(prefix="grpc-bench-") as folder:
        log = Path(folder) / "serve.log"
        process = start_server(args.run, ports["rest"], ports["grpc"], log)
        try:
            for protocol in ("rest", "grpc"):  # warm-up, not counted below
                run_phase(protocol, ports, bodies, 50, 4)
            before = counted(ports["rest"])
            for protocol in order:
                phases.append(run_phase(protocol, ports, bodies, args.requests, args.concurrency))
            after = counted(ports["rest"])
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=120)
    print(f"{'protocol':<8} {'requests':>8} {'failed':>6} {'seconds':>8} {'req/s':>8} "
          f"{'p50 ms':>8} {'p99 ms':>8}")  # fmt: skip
    for p in phases:
        print(
            f"{p['protocol']:<8} {p['requests']:>8} {p['failed']:>6} {p['seconds']:>8.1f} "
            f"{p['requests_per_second']:>8.1f} {p['p50_ms']:>8.2f} {p['p99_ms']:>8.2f}"
        )
    sent = {proto: sum(p["requests"] for p in phases if p["protocol"] == proto) for proto in bodies}
    metrics = {proto: after.get(proto, 0) - before.get(proto, 0) for proto in bodies}
    checks = {
        "0 failed": all(p["failed"] == 0 for p in phases),
        f"/metrics counts the requests sent ({metrics} for {sent})": metrics == sent,
        f"the server exits 0 after SIGTERM ({code})": code == 0,
    }
    for check, passed in checks.items():
        print(f"{'PASS' if passed else 'FAIL'}  {check}")
    if args.json:
        figures = {"phases": phases, "checks": checks, "cpus": os.cpu_count()}
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
