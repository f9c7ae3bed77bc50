"""An unchanged `tritonclient.http` client against the app of `mlcli serve` on a loopback port:
health, model metadata and readiness, and infer with binary tensors (its default) and with
JSON tensors give `mlcli predict`'s numbers to 1e-6; errors come back with the protocol's
status codes."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pytest
from conftest import predict_with_cli

from mlcli.reporting import QuietReporter

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

NUMPY = {"FP32": np.float32, "INT64": np.int64, "BYTES": object}


@pytest.fixture(scope="module", params=["multiclass", "regression"])
def served(request, trained_runs) -> Iterator[tuple[str, str]]:
    """(task, "127.0.0.1:port") of a server of that task's run as model `m`."""
    import uvicorn

    from mlcli._tensorflow import import_tensorflow

    import_tensorflow()
    from mlcli.serving.servables import load_servable
    from mlcli.serving.server import ServeOptions, _app

    servable = load_servable(trained_runs[request.param], name="m")
    app = _app(servable, ServeOptions(max_rows=100), QuietReporter())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(600):
        if server.started:
            break
        time.sleep(0.1)
    yield request.param, f"127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def table(trained_runs) -> pa.Table:
    return pa_csv.read_csv(trained_runs["data"]).slice(0, 41)


def _column(table: pa.Table, name: str, datatype: str) -> np.ndarray:
    values = table.column(name).to_pylist()
    if datatype == "BYTES":
        return np.array(["" if v is None else str(v) for v in values], dtype=object)
    return np.array([np.nan if v is None else v for v in values], dtype=NUMPY[datatype])


def _inputs(client, table: pa.Table, *, binary: bool = True, **datatypes: str) -> list:
    """One InferInput per column of the model's metadata (`datatypes` overrides some)."""
    inputs = []
    for tensor in client.get_model_metadata("m")["inputs"]:
        datatype = datatypes.get(tensor["name"], tensor["datatype"])
        if tensor["name"] in datatypes:
            array = np.zeros(table.num_rows, NUMPY[datatype])
        else:
            array = _column(table, tensor["name"], datatype)
        infer_input = httpclient.InferInput(tensor["name"], [len(array)], datatype)
        inputs.append(infer_input.set_data_from_numpy(array, binary_data=binary))
    return inputs


def _infer(client, table: pa.Table, *, binary: bool) -> dict[str, np.ndarray]:
    names = [output["name"] for output in client.get_model_metadata("m")["outputs"]]
    outputs = [httpclient.InferRequestedOutput(name, binary_data=binary) for name in names]
    result = client.infer(
        "m",
        _inputs(client, table, binary=binary),
        outputs=None if binary else outputs,  # None: every output, as binary data
        request_id="r1",
    )
    assert result.get_response()["id"] == "r1"
    return {name: result.as_numpy(name) for name in names}


def _text(values: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values.reshape(-1)]


def test_tritonclient_gets_the_numbers_of_mlcli_predict(served, trained_runs, table, tmp_path):
    task, url = served
    client = httpclient.InferenceServerClient(url=url)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("m") and client.is_model_ready("m", "1")
    assert not client.is_model_ready("m", "2")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    # tritonclient writes JSON with rapidjson, which refuses NaN: JSON rows have every age
    complete = table.filter(pc.is_valid(table.column("age")))
    for rows, binary in ((table, True), (complete, False)):
        folder = tmp_path / ("binary" if binary else "json")
        folder.mkdir()
        expected = predict_with_cli(trained_runs[task], rows, folder)
        outputs = _infer(client, rows, binary=binary)
        predicted = expected.column("prediction").to_pylist()
        if task == "regression":
            assert outputs["value"].dtype == np.float32
            np.testing.assert_allclose(outputs["value"], predicted, rtol=1e-6, atol=1e-6)
            continue
        assert _text(outputs["label"]) == [str(value) for value in predicted]
        classes = client.get_model_metadata("m")["parameters"]["classes"]
        want = np.column_stack([expected.column(f"probability_{c}").to_pylist() for c in classes])
        assert outputs["probabilities"].shape == (rows.num_rows, len(classes))
        np.testing.assert_allclose(outputs["probabilities"], want, atol=1e-6)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_tritonclient_compressed_requests_get_the_same_answer(served, table, algorithm):
    _, url = served
    client = httpclient.InferenceServerClient(url=url)
    plain = client.infer("m", _inputs(client, table))
    packed = client.infer("m", _inputs(client, table), request_compression_algorithm=algorithm)
    for output in client.get_model_metadata("m")["outputs"]:
        assert np.array_equal(plain.as_numpy(output["name"]), packed.as_numpy(output["name"]))


def test_tritonclient_sees_the_protocols_error_statuses(served, table):
    _, url = served
    client = httpclient.InferenceServerClient(url=url)
    inputs = _inputs(client, table)
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("nope", inputs)
    assert unknown.value.status() == "404"
    assert "no model named 'nope'" in unknown.value.message()
    with pytest.raises(InferenceServerException) as missing:
        client.infer("m", inputs[1:])
    assert missing.value.status() == "400"
    assert "lacks input(s)" in missing.value.message()
    with pytest.raises(InferenceServerException) as datatype:
        client.infer("m", _inputs(client, table, review="FP32", color="FP32"))
    assert datatype.value.status() == "400"
    assert "input 'color': datatype \"FP32\", expected one of BYTES" in datatype.value.message()
    with pytest.raises(InferenceServerException) as too_many:
        client.infer("m", _inputs(client, pa.concat_tables([table] * 3)))  # 123 rows
    assert too_many.value.status() == "413"
    assert "the limit is 100 (--max-rows)" in too_many.value.message()
