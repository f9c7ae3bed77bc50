"""The serving app in-process (httpx's ASGI transport): multiclass and regression outputs
match `mlcli predict`; and `mlcli serve`'s own errors: no such run, a busy port, bad options,
a missing `serve` extra."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import sys
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest
from conftest import predict_with_cli
from typer.testing import CliRunner

from mlcli.cli.app import app

runner = CliRunner()


def _record_digest(folder: Path) -> None:
    """The digest in `export.json`, as `mlcli export` records it (kept where it did)."""
    from mlcli.exporting.digest import DIGEST_KEY, export_digest

    info = json.loads((folder / "export.json").read_text())
    info.setdefault(DIGEST_KEY, export_digest(folder))
    (folder / "export.json").write_text(json.dumps(info))


def _ask(run: Path, requests: list[tuple[str, str, dict | None]]) -> list[Any]:
    """The JSON answers of the app serving `run` (as model `m`) to (method, path, body)."""
    from mlcli._tensorflow import import_tensorflow

    import_tensorflow()
    from mlcli.serving.batching import Batcher
    from mlcli.serving.routes import create_app
    from mlcli.serving.servables import load_servable

    servable = load_servable(run, name="m")
    batcher = Batcher(servable.call, max_rows=16, timeout_s=0.001)
    transport = httpx.ASGITransport(create_app(servable, batcher=batcher, max_body_bytes=1 << 20))

    async def main() -> list[Any]:
        await batcher.start()  # what the app's lifespan does under uvicorn
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://m") as client:
                answers = []
                for method, path, body in requests:
                    response = await client.request(method, path, json=body)
                    assert response.status_code == 200, response.text
                    answers.append(response.json())
                return answers
        finally:
            await batcher.stop()

    return asyncio.run(main())


@pytest.fixture
def table(trained_runs) -> pa.Table:
    return pa_csv.read_csv(trained_runs["data"]).slice(0, 37)


def test_multiclass_rows_and_columns_match_predict(trained_runs, table, tmp_path):
    expected = predict_with_cli(trained_runs["multiclass"], table, tmp_path)
    rows, columns, metadata = _ask(
        trained_runs["multiclass"],
        [
            ("POST", "/v1/models/m:predict", {"instances": table.to_pylist()}),
            ("POST", "/v1/models/m:predict", {"inputs": table.to_pydict()}),
            ("GET", "/v1/models/m/metadata", None),
        ],
    )
    classes = metadata["metadata"]["mlcli"]["classes"]
    labels = [str(label) for label in expected.column("prediction").to_pylist()]
    assert [p["label"] for p in rows["predictions"]] == labels
    assert columns["outputs"]["label"] == labels
    for index, name in enumerate(classes):
        want = expected.column(f"probability_{name}").to_pylist()
        got = [p["probabilities"][index] for p in rows["predictions"]]
        assert got == pytest.approx(want, abs=1e-5)


def test_regression_returns_the_values_of_predict(trained_runs, table, tmp_path):
    expected = predict_with_cli(trained_runs["regression"], table, tmp_path)
    want = expected.column("prediction").to_pylist()
    rows, columns, metadata = _ask(
        trained_runs["regression"],
        [
            ("POST", "/v1/models/m:predict", {"instances": table.to_pylist()}),
            ("POST", "/v1/models/m:predict", {"inputs": table.to_pydict()}),
            ("GET", "/v1/models/m/metadata", None),
        ],
    )
    outputs = metadata["metadata"]["signature_def"]
    assert rows["predictions"] == pytest.approx(want, rel=1e-5, abs=1e-5)
    assert columns["outputs"] == pytest.approx(want, rel=1e-5, abs=1e-5)
    assert set(outputs["signature_def"]["serving_default"]["outputs"]) == {"prediction"}


def test_no_such_run_is_exit_4(tmp_path):
    result = runner.invoke(app, ["serve", str(tmp_path / "nothing"), "--port", "0"])
    assert result.exit_code == 4
    assert "no such run" in result.output


def test_a_busy_port_is_exit_2(trained_runs):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = runner.invoke(app, ["serve", str(trained_runs["binary"]), "--port", str(port)])
    assert result.exit_code == 2
    assert f"--port {port}" in result.output


@pytest.mark.parametrize(
    ("option", "value"),
    [("--workers", "0"), ("--max-batch-size", "0"), ("--port", "70000"), ("--log-format", "xml")],
)
def test_bad_options_are_exit_2(option, value):
    result = runner.invoke(app, ["serve", "any-run", option, value])
    assert result.exit_code == 2
    assert option in result.output


def test_a_missing_serve_extra_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    result = runner.invoke(app, ["serve", "any-run"])
    assert result.exit_code == 2
    assert "install mlcli[serve]" in result.output


def test_a_saved_model_export_serves_the_runs_answers(trained_runs, table, tmp_path):
    from mlcli.exporting.export import export

    export(trained_runs["binary"], format="saved_model", output=tmp_path / "exports")
    _record_digest(tmp_path / "exports" / "tiny-binary" / "1")
    requests = [
        ("POST", "/v1/models/m:predict", {"instances": table.to_pylist()}),
        ("GET", "/v1/models/m/metadata", None),
        ("GET", "/openapi.json", None),
    ]
    from_run = _ask(trained_runs["binary"], requests)
    from_export = _ask(tmp_path / "exports", requests)  # the version folder is found
    labels = [[p["label"] for p in answer[0]["predictions"]] for answer in (from_run, from_export)]
    assert labels[0] == labels[1]
    for ours, theirs in zip(from_run[0]["predictions"], from_export[0]["predictions"], strict=True):
        assert ours["probabilities"] == pytest.approx(theirs["probabilities"], abs=1e-5)
    assert from_export[1]["metadata"]["signature_def"] == from_run[1]["metadata"]["signature_def"]
    # the export's description has the run's columns, types and feature types
    rows = [
        answer[2]["components"]["schemas"]["Row"]["properties"]
        for answer in (from_run, from_export)
    ]
    assert list(rows[0]) == list(rows[1])
    for column, value in rows[1].items():
        assert value["anyOf"] == rows[0][column]["anyOf"]
        assert value["description"].split(":")[0] == rows[0][column]["description"].split(":")[0]


class Recorder:
    """A reporter that keeps its lines: the server log of an in-process app."""

    def __init__(self) -> None:
        from mlcli.reporting import Reporter

        self.stream = io.StringIO()
        self.reporter = Reporter(self.stream)

    @property
    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()


def _serving(run: Path, **options: Any) -> tuple[Any, Any, Recorder]:
    """The app serving `run` as model `m` (version 1), its servable and its server log."""
    from mlcli._tensorflow import import_tensorflow

    import_tensorflow()
    from mlcli.serving.batching import Batcher
    from mlcli.serving.routes import AccessLog, create_app
    from mlcli.serving.servables import load_servable

    servable = load_servable(run, name="m")
    if "call" in options:
        servable.call = options.pop("call")
    log = Recorder()
    batcher = Batcher(servable.call, max_rows=64, timeout_s=options.pop("batch_timeout_s", 0.0))
    app = create_app(
        servable, batcher=batcher, max_body_bytes=1 << 20, reporter=log.reporter, **options
    )
    return AccessLog(app, log.reporter), batcher, log


async def _exchange(app: Any, batcher: Any, requests: list[tuple[str, str, Any]]) -> list:
    transport = httpx.ASGITransport(app)
    await batcher.start()
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://m") as client:

            async def one(method: str, path: str, body: Any) -> httpx.Response:
                content = body if isinstance(body, bytes) else json.dumps(body).encode()
                return await client.request(method, path, content=content)

            return await asyncio.gather(*(one(*request) for request in requests))
    finally:
        await batcher.stop()


def test_the_versions_routes_answer_for_the_served_version_and_404_for_others(trained_runs, table):
    app, batcher, _ = _serving(trained_runs["binary"])
    body = {"instances": table.slice(0, 3).to_pylist()}
    plain, v1, v1_status, v1_metadata, v2, v2_status, text = asyncio.run(
        _exchange(
            app,
            batcher,
            [
                ("POST", "/v1/models/m:predict", body),
                ("POST", "/v1/models/m/versions/1:predict", body),
                ("GET", "/v1/models/m/versions/1", b""),
                ("GET", "/v1/models/m/versions/1/metadata", b""),
                ("POST", "/v1/models/m/versions/2:predict", body),
                ("GET", "/v1/models/m/versions/2", b""),
                ("POST", "/v1/models/m/versions/one:predict", body),
            ],
        )
    )
    assert v1.status_code == 200, v1.text
    assert v1.json() == plain.json()
    assert v1_status.json()["model_version_status"][0]["version"] == "1"
    assert v1_metadata.json()["model_spec"]["version"] == "1"
    for response in (v2, v2_status, text):
        assert response.status_code == 404, response.text
        assert "no version" in response.json()["error"]


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
@pytest.mark.parametrize("path", ["/v1/models/m:predict", "/v1/models/m/versions/1:predict"])
def test_a_wrong_method_on_predict_is_405(trained_runs, method, path):
    app, batcher, _ = _serving(trained_runs["binary"])
    (response,) = asyncio.run(_exchange(app, batcher, [(method, path, b"")]))
    assert response.status_code == 405, response.text
    assert "error" in response.json()


def test_a_failing_model_answers_500_without_its_internals_and_logs_them_under_an_id(
    trained_runs, table
):
    def failing(columns: Any) -> Any:
        raise ValueError("secret internal detail /srv/models/x.pb")

    app, batcher, log = _serving(trained_runs["binary"], call=failing)
    body = {"instances": table.slice(0, 2).to_pylist()}
    (response,) = asyncio.run(_exchange(app, batcher, [("POST", "/v1/models/m:predict", body)]))
    assert response.status_code == 500
    error = response.json()["error"]
    assert "secret" not in error and "ValueError" not in error
    identifier = response.headers["x-request-id"]
    assert identifier in error
    logged = [line for line in log.lines if identifier in line]
    assert any("secret internal detail" in line for line in logged), log.lines


def test_a_bug_in_a_handler_is_a_generic_500_and_one_log_line(trained_runs, table, monkeypatch):
    from mlcli.serving import routes

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("internal key")

    monkeypatch.setattr(routes, "predict_response", broken)
    app, batcher, log = _serving(trained_runs["binary"])
    body = {"instances": table.slice(0, 2).to_pylist()}
    (response,) = asyncio.run(_exchange(app, batcher, [("POST", "/v1/models/m:predict", body)]))
    assert response.status_code == 500
    assert "internal key" not in response.text
    identifier = response.json()["error"].rsplit(" ", 1)[-1]
    assert any(identifier in line and "internal key" in line for line in log.lines), log.lines
    assert not any("Traceback" in line for line in log.lines)


def test_a_bad_row_fails_only_its_own_request_among_concurrent_ones(trained_runs, table):
    rows = table.slice(0, 30).to_pylist()
    bad = {**rows[5], "color": "\ud800"}
    requests = [("POST", "/v1/models/m:predict", {"instances": [row]}) for row in rows]
    requests.insert(5, ("POST", "/v1/models/m:predict", {"instances": [bad]}))
    app, batcher, _ = _serving(trained_runs["binary"], batch_timeout_s=0.05)
    responses = asyncio.run(_exchange(app, batcher, requests))
    statuses = [response.status_code for response in responses]
    assert statuses == [200] * 5 + [400] + [200] * 25, statuses
    assert "column 'color', row 0" in responses[5].json()["error"]
    assert batcher.batches < len(rows)  # they were batched


@pytest.mark.parametrize(
    "path",
    ["/v1/models/m%0A[request] client=1.2.3.4 status=200", "/x%0D%0Ay z", "/%1B[31mred"],
)
def test_control_characters_and_spaces_in_the_path_are_escaped_in_the_access_log(
    trained_runs, path
):
    app, batcher, log = _serving(trained_runs["binary"])
    (response,) = asyncio.run(_exchange(app, batcher, [("GET", path, b"")]))
    assert response.status_code == 404
    assert len(log.lines) == 1, log.lines
    assert all(ch.isprintable() for ch in log.lines[0])
    logged_path = log.lines[0].split(" path=", 1)[1].split(" ")[0]
    assert logged_path.startswith(path.split("%", 1)[0]) and "%" in logged_path
    assert "\x1b" not in response.text and "\n" not in response.json()["error"]


def _raw_predict(app: Any, batcher: Any, receive: Any) -> list[dict[str, Any]]:
    """What `app` sends for a predict request whose body comes from `receive`."""
    body_bytes = b'{"instances": [{"age": 1'
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/models/m:predict",
        "raw_path": b"/v1/models/m:predict",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-length", str(len(body_bytes) + 100).encode())],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8501),
    }
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def main() -> None:
        await batcher.start()
        try:
            await app(scope, receive(body_bytes), send)
        finally:
            await batcher.stop()

    asyncio.run(main())
    return sent


def test_a_body_that_never_finishes_is_408_after_the_body_timeout(trained_runs):
    app, batcher, log = _serving(trained_runs["binary"], body_timeout_s=0.3)

    def receive(first: bytes) -> Any:
        chunks = [{"type": "http.request", "body": first, "more_body": True}]

        async def next_message() -> dict[str, Any]:
            if chunks:
                return chunks.pop()
            await asyncio.sleep(3600)  # the client never sends the rest
            raise AssertionError("unreachable")

        return next_message

    sent = _raw_predict(app, batcher, receive)
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]
    assert b"--body-timeout" in sent[1]["body"]
    assert "status=408" in log.lines[-1]


def test_a_client_leaving_mid_body_is_logged_as_one_line_without_a_traceback(trained_runs):
    app, batcher, log = _serving(trained_runs["binary"])

    def receive(first: bytes) -> Any:
        messages = [
            {"type": "http.disconnect"},
            {"type": "http.request", "body": first, "more_body": True},
        ]

        async def next_message() -> dict[str, Any]:
            return messages.pop()

        return next_message

    _raw_predict(app, batcher, receive)  # raises nothing
    assert len(log.lines) == 1, log.lines
    assert "status=499" in log.lines[0]


def test_too_many_rows_are_a_413_naming_the_limit(trained_runs, table):
    app, batcher, _ = _serving(trained_runs["binary"], max_rows=20)
    rows = table.slice(0, 21).to_pylist()
    over, at = asyncio.run(
        _exchange(
            app,
            batcher,
            [
                ("POST", "/v1/models/m:predict", {"instances": rows}),
                ("POST", "/v1/models/m:predict", {"instances": rows[:20]}),
            ],
        )
    )
    assert over.status_code == 413
    assert "21 rows, the limit is 20 (--max-rows)" in over.json()["error"]
    assert at.status_code == 200


@pytest.fixture(scope="module")
def exported_once(trained_runs, tmp_path_factory) -> Path:
    """A SavedModel export of the binary run, with the digest `mlcli export` records."""
    from mlcli.exporting.export import export

    output = tmp_path_factory.mktemp("exported") / "exports"
    export(trained_runs["binary"], format="saved_model", output=output)
    _record_digest(output / "tiny-binary" / "1")
    return output


@pytest.fixture
def exported(exported_once, tmp_path) -> Path:
    """A copy of the export's version folder that a test may change."""
    import shutil

    shutil.copytree(exported_once, tmp_path / "exports")
    return tmp_path / "exports" / "tiny-binary" / "1"


def _without_digest(folder: Path) -> None:
    info = json.loads((folder / "export.json").read_text())
    del info["digest"]
    (folder / "export.json").write_text(json.dumps(info))


def _changed_variables(folder: Path) -> None:
    index = folder / "variables" / "variables.index"
    index.write_bytes(index.read_bytes() + b"\0")


def _changed_graph(folder: Path) -> None:
    graph = folder / "saved_model.pb"
    graph.write_bytes(graph.read_bytes() + b"\0")


def _added_asset(folder: Path) -> None:
    (folder / "assets").mkdir(exist_ok=True)
    (folder / "assets" / "extra.txt").write_text("x")


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (_without_digest, "records no 'digest'"),
        (_changed_variables, "changed since"),
        (_changed_graph, "changed since"),
        (_added_asset, "changed since"),
        (lambda folder: (folder / "export.json").unlink(), "has no export.json"),
    ],
)
def test_an_export_not_written_by_mlcli_or_changed_is_refused_before_tf_loads_it(
    exported, tamper, reason, monkeypatch
):
    from mlcli._tensorflow import import_tensorflow

    tf = import_tensorflow()

    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the SavedModel's graph was loaded")

    monkeypatch.setattr(tf.saved_model, "load", never)
    tamper(exported)
    for reference in (exported, exported.parent.parent):  # the version folder, or the output
        result = runner.invoke(app, ["serve", str(reference), "--port", "0"])
        assert result.exit_code == 4, result.output
        line = result.output.strip()
        assert reason in line and "--trust-export" in line and str(exported) in line
        assert "\n" not in line


def test_trust_export_serves_a_changed_export_and_an_unchanged_one_needs_no_flag(exported):
    from mlcli.errors import RunError
    from mlcli.serving.servables import load_servable

    assert load_servable(exported).name == "tiny-binary"
    _without_digest(exported)
    with pytest.raises(RunError, match="--trust-export"):
        load_servable(exported)
    assert load_servable(exported, trust_export=True).name == "tiny-binary"


def _with_saved_threshold(run: Path, table: pa.Table, folder: Path) -> float:
    """A copy of `run` keeping a threshold that splits the rows of `table` unlike 0.5 would
    (the middle of their positive-class probabilities); returns it."""
    import shutil

    import numpy as np

    from mlcli.runs import directory as runs
    from mlcli.runs.threshold import write_threshold_record

    shutil.copytree(run, folder)
    probability = np.asarray(predict_with_cli(folder, table, folder).column(1).to_pylist())
    threshold = float(np.median(probability))
    assert np.sum((probability >= 0.5) != (probability >= threshold)) > 0
    write_threshold_record(runs.Run(folder), {"threshold": threshold, "criterion": "test"})
    return threshold


def test_the_runs_saved_threshold_decides_served_labels_as_predict_and_the_export(
    trained_runs, table, tmp_path
):
    from mlcli.exporting.export import export

    run = tmp_path / "run"
    threshold = _with_saved_threshold(trained_runs["binary"], table, run)
    expected = predict_with_cli(run, table, tmp_path)  # predict uses the saved threshold
    positive_class = expected.column_names[1].removeprefix("probability_")
    predicted = [str(v) for v in expected.column("prediction").to_pylist()]
    for label, probability in zip(predicted, expected.column(1).to_pylist(), strict=True):
        assert (label == positive_class) == (probability >= threshold)
    export(run, format="saved_model", output=tmp_path / "exports")
    info = json.loads((tmp_path / "exports" / "tiny-binary" / "1" / "export.json").read_text())
    assert info["binary_threshold"] == threshold
    assert info["binary_threshold_source"]["criterion"] == "test"
    requests = [
        ("POST", "/v1/models/m:predict", {"instances": table.to_pylist()}),
        ("GET", "/v1/models/m/metadata", None),
    ]
    for served in (run, tmp_path / "exports"):
        answer, metadata = _ask(served, requests)
        labels = [p["label"] for p in answer["predictions"]]
        assert labels == predicted
        assert metadata["metadata"]["mlcli"]["threshold"] == threshold
    # the SavedModel's own `label` output, as TF Serving would answer, decides the same way
    import tensorflow as tf

    from mlcli.exporting.signature import read_export_info
    from mlcli.preprocessing.inputs import MISSING_VALUES

    folder = tmp_path / "exports" / "tiny-binary" / "1"
    signature, _ = read_export_info(folder)
    function = tf.saved_model.load(str(folder)).signatures["serving_default"]
    columns = {
        signature.keywords()[c]: tf.constant(
            [MISSING_VALUES[dtype] if v is None else v for v in table.column(c).to_pylist()],
            dtype=dtype,
        )
        for c, dtype in signature.inputs.items()
    }
    own = [v.decode() for v in function(**columns)["label"].numpy()]
    assert own == predicted


def test_a_request_id_is_made_once_per_request_and_only_when_asked_for():
    from mlcli.serving.routes import request_id

    first: dict[str, Any] = {}
    second: dict[str, Any] = {}
    assert request_id(first) == request_id(first)  # the log and the answer name one id
    assert request_id(first) != request_id(second)
    assert len(request_id(second)) == 16 and len(first) == 1
