"""`mlcli serve --grpc-port`: an unchanged TF Serving gRPC client (`PredictionServiceStub`) gets
`mlcli predict`'s numbers; metadata and status; each bad call gets its status code and the
server goes on; calls are counted in /metrics with protocol="grpc" and logged as JSON lines;
SIGTERM stops both APIs with exit 0. Multiclass and regression, shutdown and the batcher's
errors are checked in-process on `GrpcServer`."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest
from conftest import free_port, predict_with_cli

grpc = pytest.importorskip("grpc", reason="needs the grpc extra")
pytest.importorskip("tensorflow_serving", reason="needs the grpc extra")

ROWS = 40
MAX_ROWS = 50
MAX_BODY = 65536
PREDICT = "/tensorflow.serving.PredictionService/Predict"
METADATA = "/tensorflow.serving.PredictionService/GetModelMetadata"
STATUS = "/tensorflow.serving.ModelService/GetModelStatus"


def _tf() -> Any:
    from mlcli._tensorflow import import_tensorflow

    return import_tensorflow()


def _apis() -> Any:
    _tf()
    from tensorflow_serving import apis
    from tensorflow_serving.apis import (  # noqa: F401
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    return apis


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    grpc_port: int
    log: Path


@pytest.fixture(scope="module")
def server(trained_runs, tmp_path_factory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("grpc") / "serve.log"
    port, grpc_port = free_port(), free_port()
    command = [sys.executable, "-m", "mlcli", "serve", str(trained_runs["binary"])]
    options = ["--name", "tiny", "--port", str(port), "--grpc-port", str(grpc_port)]
    limits = ["--max-rows", str(MAX_ROWS), "--max-body-bytes", str(MAX_BODY)]
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [*command, *options, *limits, "--log-format", "json", "--shutdown-timeout", "4"],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}: {log.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"the server did not answer within 180 s: {log.read_text()}")
            time.sleep(0.2)
    yield Server(process, url, grpc_port, log)
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def channel(server) -> Iterator[Any]:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as opened:
        grpc.channel_ready_future(opened).result(timeout=30)
        yield opened


@pytest.fixture(scope="module")
def table(trained_runs) -> pa.Table:
    """The first rows of the training data: missing ages included (rows 0 and 17)."""
    return pa_csv.read_csv(trained_runs["data"]).slice(0, ROWS)


def _request(table: pa.Table, *, name: str = "tiny") -> Any:
    """A PredictRequest as a TF Serving client writes it: `tf.make_tensor_proto` per column,
    every column of the table (the model ignores those it does not take); a missing number is
    NaN. Odd columns go as [rows, 1], the others as [rows]."""
    tf, apis = _tf(), _apis()
    request = apis.predict_pb2.PredictRequest()
    request.model_spec.name = name
    for index, column in enumerate(table.column_names):
        values = table.column(column).to_numpy(zero_copy_only=False)
        if values.dtype == object:
            values = values.astype(str).astype(object)
        values = values.reshape(-1, 1) if index % 2 else values
        request.inputs[column].CopyFrom(tf.make_tensor_proto(values))
    return request


def _predict(channel: Any, request: Any) -> dict[str, np.ndarray]:
    stub = _apis().prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = stub.Predict(request, timeout=60)
    return {name: _tf().make_ndarray(tensor) for name, tensor in response.outputs.items()}


def test_the_stub_gets_the_numbers_of_mlcli_predict(server, channel, trained_runs, table, tmp_path):
    expected = predict_with_cli(trained_runs["binary"], table, tmp_path)
    positive = next(c for c in expected.column_names if c.startswith("probability_"))
    outputs = _predict(channel, _request(table))
    labels = [str(label) for label in expected.column("prediction").to_pylist()]
    assert [label.decode() for label in outputs["label"]] == labels
    assert outputs["probabilities"].shape == (ROWS, 2)
    np.testing.assert_allclose(
        outputs["probabilities"][:, 1], expected.column(positive).to_numpy(), rtol=0, atol=1e-6
    )
    np.testing.assert_allclose(outputs["probabilities"].sum(axis=1), 1.0, atol=1e-6)


def test_metadata_and_status_as_tf_serving_answers_them(channel, trained_runs):
    apis = _apis()
    metadata = apis.get_model_metadata_pb2
    request = metadata.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "tiny"
    stub = apis.prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = stub.GetModelMetadata(request, timeout=30)
    assert response.model_spec.name == "tiny" and response.model_spec.version.value == 1
    signatures = metadata.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    signature = signatures.signature_def["serving_default"]
    schema = json.loads((trained_runs["binary"] / "schema.json").read_text())
    from tensorflow.core.framework import types_pb2

    dtypes = {"float32": "DT_FLOAT", "int64": "DT_INT64", "string": "DT_STRING"}
    assert {k: types_pb2.DataType.Name(v.dtype) for k, v in signature.inputs.items()} == {
        c["name"]: dtypes[c["dtype"]] for c in schema["columns"]
    }
    assert set(signature.outputs) == {"label", "probabilities"}
    assert signature.method_name == "tensorflow/serving/predict"
    models = apis.model_service_pb2_grpc.ModelServiceStub(channel)
    for version in (None, 1):
        ask = apis.get_model_status_pb2.GetModelStatusRequest()
        ask.model_spec.name = "tiny"
        if version is not None:
            ask.model_spec.version.value = version
        (status,) = models.GetModelStatus(ask, timeout=30).model_version_status
        assert (status.version, status.state) == (1, status.AVAILABLE)


def _bad_calls(table: pa.Table) -> list[tuple[str, str, Any, str, str]]:
    """(case, method, request, code, text in the details)."""
    tf, apis = _tf(), _apis()
    rows = table.slice(0, 2)

    def changed(**columns: Any) -> Any:
        request = _request(rows)
        for name, tensor in columns.items():
            if tensor is None:
                del request.inputs[name]
            else:
                request.inputs[name].CopyFrom(tensor)
        return request

    def spec(**fields: Any) -> Any:
        request = _request(rows)
        for field, value in fields.items():
            if field == "version":
                request.model_spec.version.value = value
            else:
                setattr(request.model_spec, field, value)
        return request

    def metadata(*fields: str) -> Any:
        request = apis.get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=fields)
        request.model_spec.name = "tiny"
        return request

    filtered = _request(rows)
    filtered.output_filter.append("scores")
    big = changed(review=tf.make_tensor_proto(["x" * MAX_BODY, "y"]))
    many = _request(pa.concat_tables([table, table]))  # 80 rows, over --max-rows 50
    text_age = changed(age=tf.make_tensor_proto(["a", "b"]))
    latin1 = changed(color=tf.make_tensor_proto([b"\xff", b"a"]))
    huge = changed(age=tf.make_tensor_proto(np.array([1e39, 1.0])))
    return [
        ("unknown model", PREDICT, spec(name="other"), "NOT_FOUND", "'other'"),
        ("unknown version", PREDICT, spec(version=7), "NOT_FOUND", "version '7'"),
        ("version label", PREDICT, spec(version_label="stable"), "NOT_FOUND", "'stable'"),
        ("signature", PREDICT, spec(signature_name="x"), "INVALID_ARGUMENT", "signature_name"),
        ("missing", PREDICT, changed(color=None), "INVALID_ARGUMENT", "'color'"),
        ("dtype", PREDICT, text_age, "INVALID_ARGUMENT", "'age'"),
        ("not UTF-8", PREDICT, latin1, "INVALID_ARGUMENT", "'color', row 0"),
        ("beyond float32", PREDICT, huge, "INVALID_ARGUMENT", "float32"),
        ("output filter", PREDICT, filtered, "INVALID_ARGUMENT", "'scores'"),
        ("too many rows", PREDICT, many, "RESOURCE_EXHAUSTED", "--max-rows"),
        ("too large", PREDICT, big, "RESOURCE_EXHAUSTED", "larger than max"),
        ("metadata field", METADATA, metadata("nope"), "INVALID_ARGUMENT", "'nope'"),
        ("no metadata field", METADATA, metadata(), "INVALID_ARGUMENT", "metadata_field"),
    ]


def _call(channel: Any, method: str, request: Any) -> Any:
    apis = _apis()
    answer = {
        PREDICT: apis.predict_pb2.PredictResponse,
        METADATA: apis.get_model_metadata_pb2.GetModelMetadataResponse,
    }[method]
    call = channel.unary_unary(
        method,
        request_serializer=type(request).SerializeToString,
        response_deserializer=answer.FromString,
    )
    return call(request, timeout=30)


def test_every_bad_call_gets_its_code_and_the_server_goes_on(channel, table):
    good = _request(table.slice(0, 1))
    for case, method, request, code, needle in _bad_calls(table):
        with pytest.raises(grpc.RpcError) as raised:
            _call(channel, method, request)
        assert raised.value.code().name == code, (case, raised.value.details())
        assert needle in raised.value.details(), (case, raised.value.details())
        assert "label" in _predict(channel, good), case
    stub = _apis().prediction_service_pb2_grpc.PredictionServiceStub(channel)
    with pytest.raises(grpc.RpcError) as raised:
        stub.Classify(_apis().classification_pb2.ClassificationRequest(), timeout=30)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


def _grpc_counts(server: Server) -> dict[tuple[str, str], float]:
    from prometheus_client.parser import text_string_to_metric_families

    scrape = httpx.get(f"{server.url}/metrics", timeout=30).text
    return {
        (sample.labels["route"], sample.labels["status"]): sample.value
        for family in text_string_to_metric_families(scrape)
        for sample in family.samples
        if sample.name == "mlcli_requests_total" and sample.labels["protocol"] == "grpc"
    }


def test_calls_are_counted_with_protocol_grpc_and_logged_as_json_lines(server, channel, table):
    before_counts = _grpc_counts(server)
    before_lines = len(server.log.read_text().splitlines())
    good = _request(table.slice(0, 3))
    for _ in range(3):
        _predict(channel, good)
    with pytest.raises(grpc.RpcError):
        _predict(channel, _request(table.slice(0, 1), name="other"))
    time.sleep(0.2)
    counts = _grpc_counts(server)
    assert counts[(PREDICT, "OK")] - before_counts.get((PREDICT, "OK"), 0) == 3
    assert counts[(PREDICT, "NOT_FOUND")] - before_counts.get((PREDICT, "NOT_FOUND"), 0) == 1
    log = server.log.read_text().splitlines()
    events = [json.loads(line) for line in log]  # every line of the log is JSON
    calls = [e for e in events[before_lines:] if e.get("protocol") == "grpc"]
    assert [(e["event"], e["path"], e["status"]) for e in calls] == [
        *[("request", PREDICT, "OK")] * 3,
        ("request", PREDICT, "NOT_FOUND"),
    ]
    assert any(e["event"] == "serving" and "grpc" in e for e in events)


def test_sigterm_stops_the_grpc_port_too_and_exits_0(server, channel, table):
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=60) == 0
    closed = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    with closed, pytest.raises(grpc.RpcError) as raised:
        _predict(closed, _request(table.slice(0, 1)))
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    log = server.log.read_text()
    assert '"event": "stopped"' in log
    assert "Traceback" not in log and "Exception" not in log, log
    assert all(json.loads(line) for line in log.splitlines())


async def _in_process(servable: Any, calls: Any, **options: Any) -> Any:
    """`calls(server)` against a `GrpcServer` over `servable` (or a `ModelVersions`) on this
    event loop."""
    from mlcli.reporting import QuietReporter
    from mlcli.serving.batching import Batcher
    from mlcli.serving.grpc import GrpcServer
    from mlcli.serving.versions import ModelVersions

    if isinstance(servable, ModelVersions):
        versions = servable
    else:
        batcher = Batcher(
            servable.call, max_rows=64, timeout_s=0.001, max_queue=options.pop("max_queue", 64)
        )
        versions = ModelVersions.single(servable, batcher)
    server = GrpcServer(
        versions,
        host="127.0.0.1",
        port=0,
        max_rows=1000,
        max_message_bytes=1 << 20,
        reporter=options.pop("reporter", QuietReporter()),
        **options,
    )
    # a lone servable's batcher is started as it is (a versions' start would warm it up)
    await (versions.start() if versions is servable else versions.latest.batcher.start())
    await server.start()
    try:
        return await calls(server)
    finally:
        await server.stop()
        await versions.stop()


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_multiclass_and_regression_outputs_match_predict(trained_runs, table, tmp_path, task):
    from mlcli.serving.servables import load_servable

    _tf()
    expected = predict_with_cli(trained_runs[task], table, tmp_path)
    servable = load_servable(trained_runs[task], name="tiny")
    request = _request(table)

    async def ask(server: Any) -> Any:
        async with grpc.aio.insecure_channel(server.address) as opened:
            stub = _apis().prediction_service_pb2_grpc.PredictionServiceStub(opened)
            return await stub.Predict(request, timeout=60)

    response = asyncio.run(_in_process(servable, ask))
    outputs = {name: _tf().make_ndarray(tensor) for name, tensor in response.outputs.items()}
    if task == "regression":
        assert set(outputs) == {"prediction"}
        np.testing.assert_allclose(
            outputs["prediction"], expected.column("prediction").to_numpy(), rtol=1e-6, atol=1e-6
        )
        return
    labels = [label.decode() for label in outputs["label"]]
    assert labels == [str(label) for label in expected.column("prediction").to_pylist()]
    classes = [c for c in expected.column_names if c.startswith("probability_")]
    wanted = np.stack([expected.column(c).to_numpy() for c in classes], axis=1)
    np.testing.assert_allclose(outputs["probabilities"], wanted, rtol=0, atol=1e-6)


def _slow_servable(delay_s: float, *, fail: bool = False) -> Any:
    from mlcli.exporting.signature import ServingSignature
    from mlcli.features.schema import TargetSchema
    from mlcli.serving.servables import Servable

    def call(columns: Any) -> np.ndarray:
        time.sleep(delay_s)
        if fail:
            raise ValueError("the model broke")
        return columns["x"]

    signature = ServingSignature(inputs={"x": "float32"}, target=TargetSchema("y", "regression"))
    return Servable(name="m", version="1", signature=signature, call=call, source=Path("."))


def _x_request(value: float) -> Any:
    request = _apis().predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.inputs["x"].CopyFrom(_tf().make_tensor_proto([value], dtype=_tf().float32))
    return request


def test_stopping_answers_the_call_in_flight_and_refuses_new_ones_as_unavailable():
    async def calls(server: Any) -> tuple[Any, Any]:
        async with grpc.aio.insecure_channel(server.address) as opened:
            stub = _apis().prediction_service_pb2_grpc.PredictionServiceStub(opened)
            in_flight = asyncio.ensure_future(stub.Predict(_x_request(2.5), timeout=30))
            await asyncio.sleep(0.3)  # the model is working on it
            stopping = asyncio.ensure_future(server.stop())
            await asyncio.sleep(0.05)
            try:
                await stub.Predict(_x_request(1.0), timeout=10)
                late = None
            except grpc.aio.AioRpcError as error:
                late = error.code()
            await stopping
            return await in_flight, late

    answered, late = asyncio.run(_in_process(_slow_servable(1.0), calls, grace_s=5))
    assert _tf().make_ndarray(answered.outputs["prediction"]).tolist() == [2.5]
    assert late == grpc.StatusCode.UNAVAILABLE


def test_a_full_queue_is_resource_exhausted_and_a_failing_model_internal():
    import io

    from mlcli.reporting import Reporter

    async def flood(server: Any) -> list[Any]:
        async with grpc.aio.insecure_channel(server.address) as opened:
            stub = _apis().prediction_service_pb2_grpc.PredictionServiceStub(opened)
            calls = [stub.Predict(_x_request(float(i)), timeout=30) for i in range(6)]
            answers = await asyncio.gather(*calls, return_exceptions=True)
        return [a.code() if isinstance(a, grpc.aio.AioRpcError) else "OK" for a in answers]

    codes = asyncio.run(_in_process(_slow_servable(0.3), flood, max_queue=1))
    assert "OK" in codes and grpc.StatusCode.RESOURCE_EXHAUSTED in codes

    log = io.StringIO()

    async def one(server: Any) -> Any:
        async with grpc.aio.insecure_channel(server.address) as opened:
            stub = _apis().prediction_service_pb2_grpc.PredictionServiceStub(opened)
            try:
                await stub.Predict(_x_request(1.0), timeout=30)
            except grpc.aio.AioRpcError as error:
                return error

    error = asyncio.run(_in_process(_slow_servable(0.0, fail=True), one, reporter=Reporter(log)))
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "the model broke" not in error.details()  # never the exception's text to the client
    identifier = error.details().rsplit(" ", 1)[-1]
    assert f"request {identifier}: the model failed: ValueError: the model broke" in log.getvalue()


def _version(number: int) -> Any:
    """A stand-in version `number` of model "m": it answers its own number for every row."""
    import dataclasses

    def call(columns: Any) -> np.ndarray:
        return np.full((len(columns["x"]), 1), float(number), np.float32)

    return dataclasses.replace(_slow_servable(0.0), version=str(number), call=call)


def test_grpc_follows_the_live_versions_a_swap_a_pin_and_a_failed_load(tmp_path):
    """A version swapped in answers the next call (model_spec says which), a pinned version
    still answers, metadata follows the pin, and GetModelStatus shows every version's state,
    a failed load as END with its error; an unknown version is NOT_FOUND."""
    from mlcli.errors import RunError
    from mlcli.serving.batching import Batcher
    from mlcli.serving.version_folders import InitialVersions
    from mlcli.serving.versions import ModelVersions

    apis = _apis()

    def publish(number: int) -> None:
        temporary = tmp_path / f".{number}.tmp"
        temporary.mkdir()
        (temporary / "saved_model.pb").write_bytes(b"graph")
        temporary.rename(tmp_path / str(number))

    def load(folder: Path, number: int) -> Any:
        if number == 3:
            raise RunError(f"{folder}: the SavedModel does not load: broken")
        return _version(number)

    publish(1)
    versions = ModelVersions(
        InitialVersions([_version(1)], tmp_path),
        batcher_for=lambda servable: Batcher(servable.call, max_rows=16, timeout_s=0.001),
        keep=2,
        poll_seconds=3600,  # the test calls refresh() itself
        loader=load,
    )

    async def calls(server: Any) -> dict[str, Any]:
        async with grpc.aio.insecure_channel(server.address) as opened:
            stub = apis.prediction_service_pb2_grpc.PredictionServiceStub(opened)
            models = apis.model_service_pb2_grpc.ModelServiceStub(opened)

            async def predict(version: int | None = None) -> tuple[int, float]:
                request = _x_request(0.0)
                if version is not None:
                    request.model_spec.version.value = version
                response = await stub.Predict(request, timeout=30)
                value = _tf().make_ndarray(response.outputs["prediction"]).ravel()[0]
                return response.model_spec.version.value, float(value)

            async def status(version: int | None = None) -> list[tuple[int, str, str, str]]:
                ask = apis.get_model_status_pb2.GetModelStatusRequest()
                ask.model_spec.name = "m"
                if version is not None:
                    ask.model_spec.version.value = version
                answer = await models.GetModelStatus(ask, timeout=30)
                state = apis.get_model_status_pb2.ModelVersionStatus.State.Name
                from tensorflow.core.protobuf import error_codes_pb2

                return [
                    (
                        entry.version,
                        state(entry.state),
                        error_codes_pb2.Code.Name(entry.status.error_code),
                        entry.status.error_message,
                    )
                    for entry in answer.model_version_status
                ]

            async def code_of(call: Any) -> Any:
                try:
                    await call
                except grpc.aio.AioRpcError as error:
                    return error.code(), error.details()
                return "OK", ""

            answers: dict[str, Any] = {"before": await predict()}
            publish(2)
            await versions.refresh()
            answers["after"], answers["pinned"] = await predict(), await predict(1)
            publish(3)  # does not load: versions 2 and 1 go on serving
            await versions.refresh()
            answers["still"] = await predict()
            answers["status"], answers["status 1"] = await status(), await status(1)
            ask = apis.get_model_metadata_pb2.GetModelMetadataRequest(
                metadata_field=["signature_def"]
            )
            ask.model_spec.name = "m"
            ask.model_spec.version.value = 1
            answers["metadata"] = (await stub.GetModelMetadata(ask, timeout=30)).model_spec
            answers["missing"] = await code_of(predict(7))
            answers["missing status"] = await code_of(status(9))
            return answers

    answers = asyncio.run(_in_process(versions, calls))
    assert answers["before"] == (1, 1.0)
    assert answers["after"] == (2, 2.0)
    assert answers["pinned"] == (1, 1.0)
    assert answers["still"] == (2, 2.0)
    (failed, two, one) = answers["status"]
    assert failed[:3] == (3, "END", "UNKNOWN") and "does not load: broken" in failed[3]
    assert two == (2, "AVAILABLE", "OK", "") and one == (1, "AVAILABLE", "OK", "")
    assert answers["status 1"] == [one]
    assert (answers["metadata"].name, answers["metadata"].version.value) == ("m", 1)
    code, details = answers["missing"]
    assert code == grpc.StatusCode.NOT_FOUND
    assert details == "model 'm' has no version '7' available; available: 2, 1"
    assert answers["missing status"][0] == grpc.StatusCode.NOT_FOUND


def test_a_missing_grpc_extra_says_what_to_install_before_loading(monkeypatch, trained_runs):
    from typer.testing import CliRunner

    from mlcli.cli.app import app
    from mlcli.serving import servables

    monkeypatch.setitem(sys.modules, "tensorflow_serving", None)
    monkeypatch.setattr(servables, "load_servable", lambda *a, **k: pytest.fail("loaded"))
    result = CliRunner().invoke(app, ["serve", str(trained_runs["binary"]), "--grpc-port", "0"])
    assert result.exit_code == 2
    assert "install mlcli[grpc]" in result.output
    assert "tensorflow-serving-api" in result.output


@pytest.mark.slow
def test_several_workers_share_the_grpc_port_and_count_together(trained_runs, table, tmp_path):
    port, grpc_port = free_port(), free_port()
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "mlcli", "serve", str(trained_runs["binary"]), "--name"]
    options = ["tiny", "--workers", "2", "--port", str(port), "--grpc-port", str(grpc_port)]
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [*command, *options, "--log-format", "json"], stdout=subprocess.DEVNULL, stderr=stderr
        )
    try:
        deadline = time.monotonic() + 300
        while log.read_text().count('"grpc": ') < 2:  # each worker names its gRPC address
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        request = _request(table.slice(0, 2))
        local = [("grpc.use_local_subchannel_pool", 1)]  # a new connection each time
        answers = []
        for _ in range(8):
            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}", options=local) as opened:
                answers.append(_predict(opened, request)["label"].tolist())
        counts = {}
        from prometheus_client.parser import text_string_to_metric_families

        scrape = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
        for family in text_string_to_metric_families(scrape):
            for sample in family.samples:
                if sample.name == "mlcli_requests_total":
                    counts[(sample.labels["protocol"], sample.labels["route"])] = sample.value
    finally:
        process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 0
    assert all(answer == answers[0] for answer in answers)
    assert counts[("grpc", PREDICT)] == 8
    assert all(json.loads(line) for line in log.read_text().splitlines())


def test_the_lifespan_starts_grpc_after_the_app_and_stops_it_before():
    """`with_grpc`: gRPC starts once the app's startup is complete (its batcher running) and
    stops before the app's own shutdown; a port it cannot bind fails the startup, named."""
    from mlcli.errors import ConfigError
    from mlcli.serving.grpc import with_grpc

    order: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "lifespan.startup"
        order.append("app started")
        await send({"type": "lifespan.startup.complete"})
        assert (await receive())["type"] == "lifespan.shutdown"
        order.append("app stopped")
        await send({"type": "lifespan.shutdown.complete"})

    class Fake:
        def __init__(self, fail: bool) -> None:
            self.fail = fail

        async def start(self) -> None:
            if self.fail:
                raise ConfigError("--grpc-port 1: cannot listen there")
            order.append("grpc started")

        async def stop(self) -> None:
            order.append("grpc stopped")

    def lifespan(server: Any) -> list[dict[str, Any]]:
        events = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return events.pop(0)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        asyncio.run(with_grpc(app, server)({"type": "lifespan"}, receive, send))
        return sent

    sent = lifespan(Fake(fail=False))
    assert order == ["app started", "grpc started", "grpc stopped", "app stopped"]
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    failed = lifespan(Fake(fail=True))[0]
    assert failed == {
        "type": "lifespan.startup.failed",
        "message": "error: --grpc-port 1: cannot listen there",
    }
