"""Every protocol at once, with a version swapped in (a small `benchmarks/mixed_load_bench.py`).

The server is `mlcli serve BASE --grpc-port 0 --poll-seconds 0.2` in-process: the app that
`serve` builds (`server._app`: REST v1, v2, gRPC, metrics, access log) under uvicorn on a free
port, on this event loop. 12 clients send 300 one-row requests interleaved over TF Serving REST
(`:predict`), v2 JSON (`/infer`, one input per column with the metadata's datatype) and gRPC
`Predict`; after the first 100, version 2 is published (copied under a hidden name, renamed);
the last 100 wait until it is AVAILABLE. No request fails, every protocol is answered by both
versions, and `/metrics` counts exactly the requests sent, per protocol, all 200 / OK.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pyarrow.csv as pa_csv
import pytest

grpc = pytest.importorskip("grpc", reason="needs the grpc extra")
pytest.importorskip("tensorflow_serving", reason="needs the grpc extra")
pytest.importorskip("uvicorn", reason="needs the serve extra")

REQUESTS, CLIENTS, PUBLISH_AT = 300, 12, 100
PROTOCOLS = ("v1", "v2", "grpc")
PREDICT = "/tensorflow.serving.PredictionService/Predict"
ROUTES = {  # the labels of `mlcli_requests_total` for each protocol's predict route
    "v1": ("rest", "/v1/models/{name}:predict"),
    "v2": ("v2", "/v2/models/{name}/infer"),
    "grpc": ("grpc", PREDICT),
}


def _grpc_request(row: dict[str, Any], columns: list[str]) -> bytes:
    """A serialized one-row PredictRequest; a missing number is NaN (gRPC has no null)."""
    from mlcli._tensorflow import import_tensorflow

    tf = import_tensorflow()
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tiny"
    for column in columns:
        value = row[column]
        request.inputs[column].CopyFrom(
            tf.make_tensor_proto([float("nan") if value is None else value])
        )
    return request.SerializeToString()


def _predict_counts(scrape: str) -> dict[tuple[str, str, str], float]:
    """`mlcli_requests_total` of the predict routes, by (protocol, route, status)."""
    from prometheus_client.parser import text_string_to_metric_families

    routes = set(ROUTES.values())
    return {
        (sample.labels["protocol"], sample.labels["route"], sample.labels["status"]): sample.value
        for family in text_string_to_metric_families(scrape)
        for sample in family.samples
        if sample.name == "mlcli_requests_total"
        and (sample.labels["protocol"], sample.labels["route"]) in routes
    }


class InProcessServer:
    """`serve`'s app for a base folder, under uvicorn on a free port of this event loop."""

    def __init__(self, base: Path) -> None:
        from mlcli.reporting import JsonReporter
        from mlcli.serving.options import ServeOptions
        from mlcli.serving.server import _app, _graceful_server, _uvicorn_config
        from mlcli.serving.version_folders import load_versions

        options = ServeOptions(port=0, grpc_port=0, name="tiny", poll_seconds=0.2)
        self.log = io.StringIO()
        app = _app(load_versions(base, name="tiny"), options, JsonReporter(self.log))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = _graceful_server(_uvicorn_config(app, options, verbose=False))
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> InProcessServer:
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        for _ in range(600):
            if self.server.started or self.task.done():
                break
            await asyncio.sleep(0.05)
        assert self.server.started, self.log.getvalue()
        return self

    async def __aexit__(self, *_: Any) -> None:
        self.server.should_exit = True
        assert self.task is not None
        await asyncio.wait_for(self.task, 60)
        self.sock.close()

    @property
    def grpc_address(self) -> str:
        events = [json.loads(line) for line in self.log.getvalue().splitlines()]
        return next(e["grpc"] for e in events if e["event"] == "serving" and "grpc" in e)


def test_a_mixed_load_over_every_protocol_with_a_swap_fails_nothing_and_is_counted(
    trained_runs, tmp_path
):
    from mlcli.exporting.export import export

    base = export(trained_runs["binary"], format="saved_model", output=tmp_path).parent
    rows = pa_csv.read_csv(trained_runs["data"]).slice(0, 30).to_pylist()  # missing ages too

    async def main() -> tuple[list[tuple[str, bool, str]], dict[Any, float]]:
        answers: list[tuple[str, bool, str]] = []  # (protocol, answered OK, version)
        available = asyncio.Event()  # version 2 is AVAILABLE
        sent = 0
        async with InProcessServer(base) as served:
            limits = httpx.Limits(max_connections=CLIENTS)
            async with (
                httpx.AsyncClient(base_url=served.url, timeout=60, limits=limits) as http,
                grpc.aio.insecure_channel(served.grpc_address) as channel,
            ):
                inputs = (await http.get("/v2/models/tiny")).json()["inputs"]
                columns = [tensor["name"] for tensor in inputs]
                grpc_requests = [_grpc_request(row, columns) for row in rows]
                predict = channel.unary_unary(PREDICT, response_deserializer=_response_of)

                async def send(protocol: str, row: int) -> tuple[bool, str]:
                    if protocol == "grpc":
                        try:
                            response = await predict(grpc_requests[row], timeout=60)
                        except grpc.aio.AioRpcError as error:
                            return False, f"{error.code().name}: {error.details()}"
                        return True, str(response.model_spec.version.value)
                    if protocol == "v1":
                        body = {"instances": [rows[row]]}
                        answer = await http.post("/v1/models/tiny:predict", json=body)
                    else:
                        tensors = [
                            {**tensor, "shape": [1], "data": [rows[row][tensor["name"]]]}
                            for tensor in inputs
                        ]
                        answer = await http.post("/v2/models/tiny/infer", json={"inputs": tensors})
                    if answer.status_code != 200:
                        return False, f"{answer.status_code}: {answer.text}"
                    return True, answer.headers["x-mlcli-model-version"]

                async def watch() -> None:
                    while not available.is_set():
                        status = (await http.get("/v1/models/tiny")).json()
                        states = {e["version"]: e["state"] for e in status["model_version_status"]}
                        if states.get("2") == "AVAILABLE":
                            available.set()
                        await asyncio.sleep(0.05)

                async def client() -> None:
                    nonlocal sent
                    while sent < REQUESTS:
                        index = sent
                        sent += 1
                        if index == PUBLISH_AT:
                            await asyncio.to_thread(_publish, base, 2)
                        if index >= 2 * PUBLISH_AT:
                            await asyncio.wait_for(available.wait(), 120)
                        protocol = PROTOCOLS[index % 3]
                        ok, version = await send(protocol, index % len(rows))
                        answers.append((protocol, ok, version))

                watcher = asyncio.create_task(watch())
                await asyncio.gather(*(client() for _ in range(CLIENTS)))
                await asyncio.wait_for(watcher, 120)
                counts = _predict_counts((await http.get("/metrics")).text)
        return answers, counts

    answers, counts = asyncio.run(main())
    failures = [(protocol, detail) for protocol, ok, detail in answers if not ok]
    assert failures == []
    sent = Counter(protocol for protocol, _, _ in answers)
    assert sent == {"v1": 100, "v2": 100, "grpc": 100}
    versions = {p: Counter(v for q, _, v in answers if q == p) for p in PROTOCOLS}
    for protocol, answered in versions.items():
        assert set(answered) == {"1", "2"}, (protocol, answered)
        assert answered["2"] >= 33, (protocol, answered)  # the last 100 wait for version 2
    success = {"v1": "200", "v2": "200", "grpc": "OK"}
    assert counts == {(*ROUTES[p], success[p]): float(sent[p]) for p in PROTOCOLS}


def _response_of(data: bytes) -> Any:
    from tensorflow_serving.apis import predict_pb2

    return predict_pb2.PredictResponse.FromString(data)


def _publish(base: Path, number: int) -> None:
    """Version 1 published as `number`: copied under a hidden name, then renamed."""
    temporary = base / f".{number}.copy.tmp"
    shutil.copytree(base / "1", temporary)
    temporary.rename(base / str(number))
