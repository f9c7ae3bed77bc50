"""One server, every client: REST v1, v2 and gRPC interleaved, with a version swapped in mid-run.

The run is exported as a SavedModel (version 1) into a temporary base folder and served from
there with both APIs (`python -m mlcli serve BASE --grpc-port G --poll-seconds 0.2`, access log
on, to a file). `--concurrency` (32) asyncio clients send `--requests` (20,000) one-row
requests (rows of examples/adult/adult.test), taking turns over the three protocols (request
i goes by protocol i mod 3, about a third each):

- v1: `POST /v1/models/bench:predict` with `{"instances": [row]}` (serve_bench's keep-alive
  HTTP/1.1 client);
- v2: `POST /v2/models/bench/infer`, one JSON input per column with the datatype that
  `GET /v2/models/bench` gives (v2_bench's bodies);
- grpc: `tensorflow.serving.PredictionService/Predict`, grpc_bench's serialized
  PredictRequests, by grpcio's asyncio client (one channel, its own connection, per client).

After `--publish-at` requests (a third), version 2 is published as TF Serving's documentation
asks (version 1's folder copied under a hidden name in the base folder, renamed to `2`);
versions_bench's monitor watches `GET /v1/models/bench` every 20 ms. Each answer names the
version that gave it (`x-mlcli-model-version`, or the PredictResponse's `model_spec`).

It prints the failed requests (any error, non-200 or non-OK: must be 0), the seconds from the
rename to version 2 AVAILABLE, the versions that answered per protocol, p50/p99 per protocol
(at the client, and the server's own from its JSON access log), and the server's `/metrics`
`mlcli_requests_total` (status 200 or OK) per protocol's predict route against the requests
sent; it exits 1 unless there are no failures, the counts are
equal, version 2 answered, and the server exits 0 after SIGTERM.

Usage:

    python -m mlcli train examples/adult/config.yaml --quiet
    python benchmarks/mixed_load_bench.py --run runs/adult-income/latest [--json figures.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from grpc_bench import PREDICT, grpc_requests
from serve_bench import ADULT_TEST, NAME, free_port, launch, load_rows, raw_request
from v2_bench import raw, v2_json_body
from versions_bench import Swap, VersionedConnection, export_version_one, monitor, publish

PROTOCOLS = ("v1", "v2", "grpc")
# what `mlcli_requests_total` labels each protocol's predict route with, and its success
ROUTES = {
    "v1": ("rest", "/v1/models/{name}:predict", "200"),
    "v2": ("v2", "/v2/models/{name}/infer", "200"),
    "grpc": ("grpc", PREDICT, "OK"),
}


@dataclass
class Answer:
    protocol: str
    started: float
    seconds: float
    ok: bool
    version: str


def start(base: Path, port: int, grpc_port: int, log: Path, poll_seconds: float) -> Any:
    """`mlcli serve BASE` with both APIs, once it answers (REST health and a gRPC channel)."""
    import grpc

    command = [sys.executable, "-m", "mlcli", "serve", str(base), "--name", NAME]
    command += ["--port", str(port), "--grpc-port", str(grpc_port)]
    command += ["--poll-seconds", str(poll_seconds), "--log-format", "json"]
    process = launch(command, port, log)
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=60)
    return process


def prepared(run: str, port: int, rows: list[dict[str, Any]]) -> dict[str, list[bytes]]:
    """One prepared one-row request per row and protocol (HTTP requests and gRPC messages)."""
    inputs = httpx.get(f"http://127.0.0.1:{port}/v2/models/{NAME}", timeout=30).json()["inputs"]
    return {
        "v1": [raw_request(port, json.dumps({"instances": [row]}).encode()) for row in rows],
        "v2": [raw(port, f"/v2/models/{NAME}/infer", v2_json_body(row, inputs)) for row in rows],
        "grpc": grpc_requests(run, rows),
    }


class Client:
    """One client: a keep-alive HTTP connection for v1 and v2, a gRPC channel for grpc."""

    def __init__(self, port: int, grpc_port: int) -> None:
        import grpc
        from tensorflow_serving.apis import predict_pb2

        self.http = VersionedConnection(port)
        self.port = port
        options = [("grpc.use_local_subchannel_pool", 1)]  # a connection per client
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}", options=options)
        self.predict = self.channel.unary_unary(
            PREDICT, response_deserializer=predict_pb2.PredictResponse.FromString
        )

    async def send(self, protocol: str, request: bytes) -> tuple[bool, str]:
        """(answered OK, the version that answered)."""
        import grpc

        if protocol == "grpc":
            try:
                response = await self.predict(request, timeout=120)
            except grpc.aio.AioRpcError:
                return False, ""
            return True, str(response.model_spec.version.value)
        try:
            status, version, _ = await asyncio.wait_for(self.http.request(request), 120)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            self.http.close()
            self.http = VersionedConnection(self.port)
            return False, ""
        return status == 200, version

    async def close(self) -> None:
        self.http.close()
        await self.channel.close()


async def load(
    ports: tuple[int, int],
    base: Path,
    requests_of: dict[str, list[bytes]],
    *,
    requests: int,
    concurrency: int,
    publish_at: int,
) -> tuple[list[Answer], Swap, float]:
    port, grpc_port = ports
    answers: list[Answer] = []
    swap, done = Swap(), asyncio.Event()
    sent = 0
    clients = [Client(port, grpc_port) for _ in range(concurrency)]
    await asyncio.gather(*(client.channel.channel_ready() for client in clients))

    async def run(client: Client) -> None:
        nonlocal sent
        while sent < requests:
            index = sent
            sent += 1
            if index == publish_at:
                swap.renamed = await asyncio.to_thread(publish, base, 2)
            protocol = PROTOCOLS[index % len(PROTOCOLS)]
            prepared = requests_of[protocol]
            began = time.perf_counter()
            ok, version = await client.send(protocol, prepared[(index // 3) % len(prepared)])
            answers.append(Answer(protocol, began, time.perf_counter() - began, ok, version))

    watcher = asyncio.create_task(monitor(port, swap, done))
    start_time = time.perf_counter()
    await asyncio.gather(*(run(client) for client in clients))
    wall = time.perf_counter() - start_time
    while not swap.available and swap.renamed and time.perf_counter() - swap.renamed < 120:
        await asyncio.sleep(0.02)  # the load ended before the swap: wait for it anyway
    done.set()
    await watcher
    await asyncio.gather(*(client.close() for client in clients))
    return answers, swap, wall


async def warm_up(ports: tuple[int, int], requests_of: dict[str, list[bytes]]) -> None:
    """20 requests per protocol from one client, before the counts and timings start."""
    client = Client(*ports)
    for protocol in PROTOCOLS:
        for index in range(20):
            ok, _ = await client.send(protocol, requests_of[protocol][index])
            if not ok:
                raise SystemExit(f"the warm-up {protocol} request {index} failed")
    await client.close()


def counted(port: int) -> dict[str, float]:
    """Successful predict requests by protocol, from the server's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    wanted = {labels: protocol for protocol, labels in ROUTES.items()}
    totals = dict.fromkeys(PROTOCOLS, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != "mlcli_requests_total":
                continue
            labels = (sample.labels["protocol"], sample.labels["route"], sample.labels["status"])
            if labels in wanted:
                totals[wanted[labels]] += sample.value
    return totals


def server_ms(log: Path, since: float) -> dict[str, list[float]]:
    """The server's own milliseconds per predict request (its access log), by protocol, for
    the requests logged after `since` (a time.time())."""
    paths = {
        "v1": f"/v1/models/{NAME}:predict",
        "v2": f"/v2/models/{NAME}/infer",
        "grpc": PREDICT,
    }
    protocol_of = {path: protocol for protocol, path in paths.items()}
    found: dict[str, list[float]] = {protocol: [] for protocol in PROTOCOLS}
    for line in log.read_text().splitlines():
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        protocol = protocol_of.get(event.get("path", ""))
        if event.get("event") == "request" and protocol and event.get("time", since) >= since:
            found[protocol].append(float(event["ms"]))
    return found


def report(
    answers: list[Answer],
    swap: Swap,
    wall: float,
    metrics: dict[str, float],
    server: dict[str, list[float]],
) -> dict[str, Any]:
    sent = Counter(a.protocol for a in answers)
    failed = Counter(a.protocol for a in answers if not a.ok)
    per_protocol = {}
    for protocol in PROTOCOLS:
        ms = np.asarray([a.seconds for a in answers if a.protocol == protocol and a.ok]) * 1000
        ms = ms if ms.size else np.asarray([np.nan])
        per_protocol[protocol] = {
            "sent": sent[protocol],
            "failed": failed[protocol],
            "counted_in_metrics": metrics[protocol],
            "answered_by_version": dict(
                Counter(a.version for a in answers if a.protocol == protocol and a.ok)
            ),
            "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
        }
        inside = np.asarray(server[protocol] or [np.nan])
        per_protocol[protocol]["server_p50_ms"] = round(float(np.percentile(inside, 50)), 2)
        per_protocol[protocol]["server_p99_ms"] = round(float(np.percentile(inside, 99)), 2)
    figures = {
        "requests": len(answers),
        "failed": sum(failed.values()),
        "seconds": round(wall, 2),
        "requests_per_second": round(len(answers) / wall, 1) if wall else 0.0,
        "rename_to_available_s": round(swap.available - swap.renamed, 3)
        if swap.available
        else None,
        "status_seen": swap.states,
        "protocols": per_protocol,
        "metrics_equal_sent": all(metrics[p] == sent[p] for p in PROTOCOLS),
    }
    print(
        f"requests {figures['requests']}, failed {figures['failed']}, {wall:.1f} s "
        f"({figures['requests_per_second']} req/s)"
    )
    print(f"rename to version 2 AVAILABLE: {figures['rename_to_available_s']} s")
    print("statuses seen: " + " | ".join(swap.states))
    print(
        f"{'protocol':<8} {'sent':>6} {'failed':>6} {'/metrics':>8} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'server p50':>10} {'server p99':>10}  answered by version"
    )
    for protocol, row in per_protocol.items():
        print(
            f"{protocol:<8} {row['sent']:>6} {row['failed']:>6} "
            f"{row['counted_in_metrics']:>8.0f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f}"
            f" {row['server_p50_ms']:>10.2f} {row['server_p99_ms']:>10.2f}"
            f"  {row['answered_by_version']}"
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="runs/adult-income/latest")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--publish-at", type=int, help="the request index (default: a third)")
    parser.add_argument("--poll-seconds", type=float, default=0.2)
    parser.add_argument("--data", type=Path, default=ADULT_TEST)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    publish_at = args.requests // 3 if args.publish_at is None else args.publish_at
    rows = load_rows(args.run, 2000, args.data)
    with tempfile.TemporaryDirectory(prefix="mlcli-mixed-bench-") as scratch:
        folder = Path(scratch)
        base = export_version_one(args.run, folder / "serving")
        ports = (free_port(), free_port())
        process = start(base, *ports, folder / "serve.log", args.poll_seconds)
        try:
            requests_of = prepared(args.run, ports[0], rows)
            asyncio.run(warm_up(ports, requests_of))
            before = counted(ports[0])
            since = time.time()
            answers, swap, wall = asyncio.run(
                load(
                    ports,
                    base,
                    requests_of,
                    requests=args.requests,
                    concurrency=args.concurrency,
                    publish_at=publish_at,
                )
            )
            after = counted(ports[0])
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=120)
        server = server_ms(folder / "serve.log", since)
    metrics = {protocol: after[protocol] - before[protocol] for protocol in PROTOCOLS}
    figures = report(answers, swap, wall, metrics, server)
    figures["exit_code_after_sigterm"] = code
    figures["cpus"] = os.cpu_count()
    sent = {p: row["sent"] for p, row in figures["protocols"].items()}
    checks = {
        "0 failed": figures["failed"] == 0,
        f"/metrics counts equal the requests sent ({metrics} for {sent})": figures[
            "metrics_equal_sent"
        ],
        "version 2 answered every protocol": all(
            "2" in row["answered_by_version"] for row in figures["protocols"].values()
        ),
        f"the server exits 0 after SIGTERM ({code})": code == 0,
    }
    for check, passed in checks.items():
        print(f"{'PASS' if passed else 'FAIL'}  {check}")
    figures["checks"] = checks
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    if not all(checks.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
