"""`mlcli serve` as a real server on a free loopback port: TF Serving's REST API in rows and
columns gives `mlcli predict`'s numbers, every bad request gets its status and the server goes
on, the access log has a line per request, and SIGTERM finishes the request in flight and
exits 0. Multiclass and regression outputs are checked in-process through the same app."""

from __future__ import annotations

import json
import math
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest
from conftest import free_port, predict_with_cli

MAX_BODY = 65536
ROWS = 40
OPEN_FILES = 256
MAX_ROWS = 200
# short limits, so that the tests of slow clients take about a second each
LIMITS = ("--header-timeout", "1", "--body-timeout", "3", "--shutdown-timeout", "4")


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    port: int
    log: Path


def _few_open_files() -> None:
    """The server's open-file limit at 256, as on the host where slow clients exhausted it."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(OPEN_FILES, hard), hard))


def _start(run: Path, folder: Path, *options: str) -> Server:
    port = free_port()
    log = folder / "serve.log"
    command = [sys.executable, "-m", "mlcli", "serve", str(run), "--port", str(port)]
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [*command, "--log-format", "json", *options],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            preexec_fn=_few_open_files,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}: {log.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return Server(process, url, port, log)
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    pytest.fail(f"the server did not answer within 180 s: {log.read_text()}")


@pytest.fixture(scope="module")
def server(trained_runs, tmp_path_factory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("serve")
    started = _start(
        trained_runs["binary"],
        folder,
        *("--name", "tiny", "--max-body-bytes", str(MAX_BODY), "--max-rows", str(MAX_ROWS)),
        *("--batch-timeout-ms", "200", *LIMITS),
    )
    yield started
    if started.process.poll() is None:
        started.process.kill()
        started.process.wait()


@pytest.fixture(scope="module")
def table(trained_runs) -> pa.Table:
    """The first rows of the training data: missing ages included (rows 0 and 17)."""
    return pa_csv.read_csv(trained_runs["data"]).slice(0, ROWS)


def _post(server: Server, body: Any, *, model: str = "tiny") -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{server.url}/v1/models/{model}:predict", content=content, timeout=30)


def test_rows_and_columns_give_the_numbers_of_mlcli_predict(server, trained_runs, table, tmp_path):
    expected = predict_with_cli(trained_runs["binary"], table, tmp_path)
    positive = next(c for c in expected.column_names if c.startswith("probability_"))
    rows = _post(server, {"instances": table.to_pylist()})  # extra columns are ignored
    columns = _post(server, {"inputs": table.to_pydict()})
    assert rows.status_code == 200, rows.text
    assert columns.status_code == 200, columns.text
    predictions = rows.json()["predictions"]
    outputs = columns.json()["outputs"]
    labels = [str(label) for label in expected.column("prediction").to_pylist()]
    assert [p["label"] for p in predictions] == labels
    assert outputs["label"] == labels
    for index, probability in enumerate(expected.column(positive).to_pylist()):
        assert predictions[index]["probabilities"][1] == pytest.approx(probability, abs=1e-5)
        assert outputs["probabilities"][index][1] == pytest.approx(probability, abs=1e-5)
        assert math.fsum(predictions[index]["probabilities"]) == pytest.approx(1.0, abs=1e-5)


def test_status_metadata_and_health(server, trained_runs):
    status = httpx.get(f"{server.url}/v1/models/tiny").json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    metadata = httpx.get(f"{server.url}/v1/models/tiny/metadata").json()
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    schema = json.loads((trained_runs["binary"] / "schema.json").read_text())
    dtypes = {"float32": "DT_FLOAT", "int64": "DT_INT64", "string": "DT_STRING"}
    assert {k: v["dtype"] for k, v in signature["inputs"].items()} == {
        c["name"]: dtypes[c["dtype"]] for c in schema["columns"]
    }
    assert set(signature["outputs"]) == {"label", "probabilities"}
    assert metadata["metadata"]["mlcli"]["classes"] == schema["target"]["classes"]
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}


def test_nan_and_null_are_both_a_missing_number(server, table):
    row = table.slice(1, 1).to_pylist()[0]
    as_null = _post(server, {"instances": [{**row, "age": None}]}).json()
    as_nan = _post(server, b'{"instances": [%s]}' % json.dumps({**row, "age": math.nan}).encode())
    assert as_nan.status_code == 200, as_nan.text
    assert as_nan.json() == as_null
    as_list = _post(server, {"instances": [{k: [v] for k, v in row.items()}]})
    assert as_list.json() == _post(server, {"instances": [row]}).json()


def _row(table: pa.Table, **changes: Any) -> dict[str, Any]:
    return {**table.slice(2, 1).to_pylist()[0], **changes}


def _bad_requests(table: pa.Table) -> list[tuple[str, bytes, int, str]]:
    row = _row(table)
    without_color = {k: v for k, v in row.items() if k != "color"}
    columns = table.slice(0, 3).to_pydict()

    def body(value: Any) -> bytes:
        return json.dumps(value).encode()

    return [
        ("malformed JSON", b'{"instances": [', 400, "not valid JSON"),
        ("not an object", b"[1, 2]", 400, "JSON object"),
        ("both", body({"instances": [row], "inputs": columns}), 400, "found both"),
        ("neither", body({"rows": [row]}), 400, "found neither"),
        ("missing column", body({"instances": [row, without_color]}), 400, "'color'"),
        ("missing input", body({"inputs": {"age": [1.0]}}), 400, "'color'"),
        ("wrong type", body({"instances": [_row(table, age="old")]}), 400, "'age'"),
        ("row not object", body({"instances": [row, [1, 2]]}), 400, "instances[1]"),
        ("number for text", body({"instances": [_row(table, color=2.5)]}), 400, "'color'"),
        ("NaN for text", b'{"instances": [%s]}' % body(_row(table, color=math.nan)), 400, "NaN"),
        ("infinite", b'{"instances": [%s]}' % body(_row(table, age=math.inf)), 400, "'age'"),
        ("empty rows", body({"instances": []}), 400, "empty"),
        ("empty columns", body({"inputs": {k: [] for k in columns}}), 400, "empty"),
        ("ragged", body({"inputs": {**columns, "age": [1.0]}}), 400, "length"),
        ("signature", body({"signature_name": "x", "instances": [row]}), 400, "signature"),
        ("too large", b" " * (MAX_BODY + 1), 413, "limit"),
        ("too many rows", body({"instances": [row] * (MAX_ROWS + 1)}), 413, "--max-rows"),
        ("not UTF-8", body({"instances": [_row(table, color="\ud800")]}), 400, "'color', row 0"),
        ("beyond float32", body({"instances": [_row(table, age=1e39)]}), 400, "float32"),
    ]


def test_every_bad_request_gets_its_status_and_the_server_goes_on(server, table):
    good = {"instances": [_row(table)]}
    for case, body, status, needle in _bad_requests(table):
        response = _post(server, body)
        assert response.status_code == status, (case, response.text)
        assert needle in response.json()["error"], (case, response.text)
        assert _post(server, good).status_code == 200, case


def test_unknown_model_path_and_streamed_oversize_body(server, table):
    unknown = _post(server, {"instances": [_row(table)]}, model="other")
    assert unknown.status_code == 404
    assert "'other'" in unknown.json()["error"]
    assert httpx.get(f"{server.url}/v2/nothing").status_code == 404
    wrong_method = httpx.post(f"{server.url}/v1/models/tiny", content=b"{}")
    assert wrong_method.status_code == 405
    assert "error" in wrong_method.json()
    chunks = (b" " * 4096 for _ in range(MAX_BODY // 4096 + 2))  # no Content-Length
    streamed = httpx.post(f"{server.url}/v1/models/tiny:predict", content=chunks, timeout=30)
    assert streamed.status_code == 413
    assert _post(server, {"instances": [_row(table)]}).status_code == 200


def test_the_access_log_has_one_json_line_per_request(server, table):
    before = len(server.log.read_text().splitlines())
    _post(server, {"instances": [_row(table)]})
    _post(server, b"{")
    httpx.get(f"{server.url}/v1/models/none")
    time.sleep(0.2)
    lines = server.log.read_text().splitlines()[before:]
    events = [json.loads(line) for line in lines]
    assert [(e["event"], e["method"], e["status"]) for e in events] == [
        ("request", "POST", 200),
        ("request", "POST", 400),
        ("request", "GET", 404),
    ]
    assert events[0]["path"] == "/v1/models/tiny:predict"


def _predict_head(length: int) -> bytes:
    return (
        "POST /v1/models/tiny:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_connections_that_never_finish_their_headers_neither_stop_healthz_nor_stay(server):
    held = []
    for _ in range(300):  # more than the server's 256 open files
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        sock.sendall(b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\n")
        held.append(sock)
    try:
        for _ in range(5):
            started = time.perf_counter()
            assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
            assert time.perf_counter() - started < 1.0
        time.sleep(1.0)  # --header-timeout 1
        assert all(_closed_by_server(sock, within=2.0) for sock in held)
    finally:
        for sock in held:
            sock.close()


def _median_predict_ms(server: Server, table: pa.Table, count: int = 7) -> float:
    body = {"instances": [_row(table)]}
    times = []
    for _ in range(count):
        started = time.perf_counter()
        assert _post(server, body).status_code == 200
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def test_an_unfinished_body_holds_back_no_batch_and_ends_in_408(server, table):
    """--batch-timeout-ms 200: a request whose body is still arriving is not waited for."""
    body = json.dumps({"instances": [_row(table)]}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as slow:
        slow.sendall(_predict_head(len(body)) + body[:10])
        started = time.monotonic()
        assert _median_predict_ms(server, table) < 150
        response = _read_response(slow)
        waited = time.monotonic() - started
    assert response.startswith(b"HTTP/1.1 408"), response[:200]
    assert b"--body-timeout" in response
    assert 2.0 < waited < 6.0  # --body-timeout 3


def test_a_client_leaving_mid_body_is_one_log_line_and_no_traceback(server, table):
    body = json.dumps({"instances": [_row(table)]}).encode()
    before = len(server.log.read_text().splitlines())
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as leaving:
        leaving.sendall(_predict_head(len(body)) + body[:10])
        time.sleep(0.3)
    time.sleep(0.5)
    assert _post(server, {"instances": [_row(table)]}).status_code == 200
    lines = server.log.read_text().splitlines()[before:]
    assert not any("Traceback" in line or "Exception" in line for line in lines), lines
    events = [json.loads(line) for line in lines]
    assert [event["status"] for event in events] == [499, 200]


def test_a_path_with_an_encoded_newline_is_one_escaped_log_line(server):
    before = len(server.log.read_text().splitlines())
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"GET /x%0A%7B%22event%22:%22forged%22%7D HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(10)
        assert sock.recv(65536).startswith(b"HTTP/1.1 404")
    time.sleep(0.2)
    lines = server.log.read_text().splitlines()[before:]
    assert len(lines) == 1, lines
    assert json.loads(lines[0])["path"] == "/x%0A%7B%22event%22:%22forged%22%7D"


def _read_response(sock: socket.socket) -> bytes:
    sock.settimeout(60)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_sigterm_answers_the_request_in_flight_then_exits_0(server, table):
    body = json.dumps({"instances": [_row(table)]}).encode()
    head = (
        "POST /v1/models/tiny:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    stalled = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    stalled.sendall(head + body[:10])  # a body that never finishes
    headless = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    headless.sendall(head[:20])  # headers that never finish
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head + body[:10])
        time.sleep(0.5)  # the server is reading this request when the signal comes
        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        time.sleep(1.0)
        with pytest.raises(ConnectionRefusedError):  # no new connections once stopping
            socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
        sock.sendall(body[10:])
        response = _read_response(sock)
    assert response.startswith(b"HTTP/1.1 200"), response[:200]
    assert b'"predictions"' in response
    # the stalled body is cut (half of --shutdown-timeout 4), not waited for 30 s
    assert server.process.wait(timeout=60) == 0
    assert time.monotonic() - signalled < 4.0
    stalled.close()
    headless.close()
    log = server.log.read_text()
    assert '"event": "stopped"' in log
    assert "Traceback" not in log and "Exception" not in log, log


def _requests_counted(text: str) -> dict[tuple[str, str], float]:
    """(route, status) -> requests, from a /metrics scrape, by prometheus_client's parser."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.labels["route"], sample.labels["status"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "mlcli_requests_total"
    }


@pytest.mark.slow
def test_several_workers_answer_alike_and_stop_with_exit_0(trained_runs, table, tmp_path):
    server = _start(trained_runs["binary"], tmp_path, "--name", "tiny", "--workers", "2")
    try:
        answers = [_post(server, {"instances": [_row(table)]}).json() for _ in range(8)]
        assert _post(server, b"{").status_code == 400
        assert _post(server, {"instances": [_row(table)]}, model="other").status_code == 404
        # each scrape is answered by either worker, and counts the requests of both
        scrapes = [httpx.get(f"{server.url}/metrics", timeout=30) for _ in range(4)]
    finally:
        server.process.send_signal(signal.SIGTERM)
    assert all(answer == answers[0] for answer in answers)
    assert "predictions" in answers[0]
    assert server.process.wait(timeout=120) == 0
    predict = "/v1/models/{name}:predict"
    for earlier, scrape in enumerate(scrapes):
        counted = _requests_counted(scrape.text)
        assert counted[(predict, "200")] == 8
        assert counted[(predict, "400")] == counted[(predict, "404")] == 1
        assert counted.get(("/metrics", "200"), 0) == earlier


def _broken_copy(run: Path, folder: Path) -> Path:
    """A copy of `run` whose model.keras is not a model: it opens, but does not load."""
    import shutil

    broken = folder / "broken"
    shutil.copytree(run, broken)
    (broken / "model.keras").write_bytes(b"not a zip file")
    return broken


def _lifespan(app: Any) -> list[dict[str, Any]]:
    """What `app` sends when uvicorn starts it and then stops it."""
    import asyncio

    events = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return events.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
    return sent


def _worker_app(monkeypatch: pytest.MonkeyPatch, model: Path, reporter: dict[str, Any]) -> Any:
    from mlcli.serving import server

    settings = {
        "model": str(model),
        "options": {"name": "tiny"},
        "reporter": reporter,
        "verbose": False,
    }
    monkeypatch.setenv(server._WORKER_ENV, json.dumps(settings))
    return server.app_from_environment()


def test_a_worker_reports_a_model_that_does_not_load_as_a_failed_startup(
    trained_runs, tmp_path, monkeypatch
):
    """The worker returns an app that fails uvicorn's startup, naming the error; it never
    exits its process itself (uvicorn does, with its startup-failure code)."""
    from mlcli.reporting import JsonReporter
    from mlcli.serving.routes import AccessLog

    broken = _broken_copy(trained_runs["binary"], tmp_path)
    sent = _lifespan(_worker_app(monkeypatch, broken, {"quiet": False, "log_format": "text"}))
    assert sent[0]["type"] == "lifespan.startup.failed"
    assert sent[0]["message"].startswith("error: ")
    assert "model.keras" in sent[0]["message"]
    assert sent[1:] == [{"type": "lifespan.shutdown.complete"}]
    working = _worker_app(
        monkeypatch, trained_runs["binary"], {"quiet": False, "log_format": "json"}
    )
    assert isinstance(working, AccessLog)
    assert isinstance(working.reporter, JsonReporter)  # the kind of reporter serve was given


def test_serve_takes_a_reporter_and_raises_instead_of_exiting(trained_runs):
    from mlcli.errors import ConfigError
    from mlcli.reporting import QuietReporter
    from mlcli.serving.server import ServeOptions, _reporter_settings, serve

    with pytest.raises(ConfigError, match="--workers"):
        serve(trained_runs["binary"], options=ServeOptions(workers=0), reporter=QuietReporter())
    assert _reporter_settings(QuietReporter()) == {"quiet": True, "log_format": "text"}


@pytest.mark.slow
def test_a_worker_that_cannot_load_the_model_stops_the_server_with_exit_4(trained_runs, tmp_path):
    broken = _broken_copy(trained_runs["binary"], tmp_path)
    command = [sys.executable, "-m", "mlcli", "serve", str(broken), "--workers", "2"]
    done = subprocess.run(
        [*command, "--port", str(free_port())], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 4, done.stderr
    assert "a worker could not load the model; run with --workers 1" in done.stderr
    assert "model.keras" in done.stderr
    assert "Traceback" not in done.stderr
