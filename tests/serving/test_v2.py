"""The Open Inference Protocol (v2) in-process (httpx's ASGI transport): a plain KServe v2 JSON
client and the binary tensor data extension get `mlcli predict`'s numbers for every task,
`outputs` and `id` are honoured, the metadata lists the run's columns with their datatypes,
every bad request gets the protocol's status and a message naming the input, and the requests
are counted under `protocol="v2"`."""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest
from conftest import predict_with_cli

from mlcli.features.schema import FeatureSchema

DATATYPES = {"float32": "FP32", "int64": "INT64", "string": "BYTES"}
MAX_ROWS = 40


@pytest.fixture(scope="module")
def table(trained_runs) -> pa.Table:
    """The first rows of the training data: missing ages included (rows 0 and 17)."""
    return pa_csv.read_csv(trained_runs["data"]).slice(0, 37)


def model_columns(run: Path) -> dict[str, str]:
    """The run's input columns and their dtypes (what the v2 metadata lists)."""
    schema = FeatureSchema.load(run / "schema.json")
    return {column.name: column.dtype for column in schema.columns}


def json_inputs(table: pa.Table, columns: dict[str, str]) -> list[dict[str, Any]]:
    """One JSON input tensor per column, shape [rows], as a KServe v2 JSON client sends."""
    return [
        {
            "name": name,
            "datatype": DATATYPES[dtype],
            "shape": [table.num_rows],
            "data": table.column(name).to_pylist(),
        }
        for name, dtype in columns.items()
    ]


def as_numpy(table: pa.Table, name: str, dtype: str) -> np.ndarray:
    """A column as the numpy array a tritonclient user would make of it."""
    values = table.column(name).to_pylist()
    if dtype == "string":
        return np.array(["" if v is None else str(v) for v in values], dtype=object)
    if dtype == "float32":
        return np.array([np.nan if v is None else v for v in values], dtype=np.float32)
    return np.array(values, dtype=np.int64)


def serialized(array: np.ndarray) -> bytes:
    """The binary tensor data extension's bytes of an array (BYTES: length-prefixed UTF-8)."""
    if array.dtype != object:
        return array.astype(array.dtype.newbyteorder("<")).tobytes()
    return b"".join(
        struct.pack("<I", len(text.encode())) + text.encode() for text in array.tolist()
    )


def binary_request(
    table: pa.Table, columns: dict[str, str], header: dict[str, Any] | None = None
) -> tuple[bytes, dict[str, str]]:
    """A body with every input as binary data after the JSON, and its headers."""
    inputs, blobs = [], []
    for name, dtype in columns.items():
        blob = serialized(as_numpy(table, name, dtype))
        inputs.append(
            {
                "name": name,
                "datatype": DATATYPES[dtype],
                "shape": [table.num_rows, 1],
                "parameters": {"binary_data_size": len(blob)},
            }
        )
        blobs.append(blob)
    content = json.dumps({**(header or {}), "inputs": inputs}).encode()
    return content + b"".join(blobs), {"Inference-Header-Content-Length": str(len(content))}


def read_outputs(response: httpx.Response) -> dict[str, np.ndarray]:
    """The outputs of an infer answer, JSON or binary, as tritonclient reads them."""
    length = response.headers.get("inference-header-content-length")
    content = response.content
    split = int(length) if length is not None else len(content)
    header = json.loads(content[:split])
    offset, found = split, {}
    for output in header["outputs"]:
        size = output.get("parameters", {}).get("binary_data_size")
        if size is None:
            dtype = object if output["datatype"] == "BYTES" else np.float32
            found[output["name"]] = np.array(output["data"], dtype).reshape(output["shape"])
            continue
        blob, offset = content[offset : offset + size], offset + size
        if output["datatype"] == "BYTES":
            texts, at = [], 0
            while at < len(blob):
                (length,) = struct.unpack_from("<I", blob, at)
                texts.append(blob[at + 4 : at + 4 + length].decode())
                at += 4 + length
            found[output["name"]] = np.array(texts, object).reshape(output["shape"])
        else:
            found[output["name"]] = np.frombuffer(blob, "<f4").reshape(output["shape"])
    assert offset == len(content)
    return found


def serving(run: Path, **options: Any) -> tuple[Any, Any, Any]:
    """The app serving `run` as model `m` (version 1), its batcher and its metrics."""
    from mlcli._tensorflow import import_tensorflow

    import_tensorflow()
    from mlcli.reporting import QuietReporter
    from mlcli.serving.batching import Batcher
    from mlcli.serving.metrics import ServerMetrics
    from mlcli.serving.routes import AccessLog, create_app
    from mlcli.serving.servables import load_servable

    servable = load_servable(run, name="m")
    metrics = ServerMetrics(max_batch_size=64)
    batcher = Batcher(servable.call, max_rows=64, timeout_s=0.0)
    app = create_app(
        servable,
        batcher=batcher,
        max_body_bytes=options.pop("max_body_bytes", 1 << 20),
        max_rows=MAX_ROWS,
        metrics=metrics,
        **options,
    )
    return AccessLog(app, QuietReporter(), metrics), batcher, metrics


def exchange(run: Path, requests: list[tuple[str, str, Any, dict[str, str] | None]]) -> list:
    """The responses of the app serving `run` to (method, path, body, headers)."""
    app, batcher, _ = serving(run)
    return asyncio.run(send(app, batcher, requests))


async def send(app: Any, batcher: Any, requests: list) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app)
    await batcher.start()
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://m") as client:
            answers = []
            for method, path, body, headers in requests:
                content = body if isinstance(body, bytes) else json.dumps(body).encode()
                answers.append(await client.request(method, path, content=content, headers=headers))
            return answers
    finally:
        await batcher.stop()


INFER = "/v2/models/m/infer"


def expected_outputs(run: Path, table: pa.Table, folder: Path) -> dict[str, Any]:
    """What `mlcli predict` writes for `table`, as the v2 outputs name it."""
    predicted = predict_with_cli(run, table, folder)
    probabilities = [c for c in predicted.column_names if c.startswith("probability_")]
    values = predicted.column("prediction").to_pylist()
    if not probabilities:
        return {"value": np.array(values, np.float64)}
    return {
        "label": [str(value) for value in values],
        "probabilities": np.column_stack(
            [np.array(predicted.column(c).to_pylist()) for c in probabilities]
        ),
        "classes": [c.removeprefix("probability_") for c in probabilities],
    }


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_json_and_binary_clients_get_the_numbers_of_mlcli_predict(
    trained_runs, table, task, tmp_path
):
    run = trained_runs[task]
    columns = model_columns(run)
    expected = expected_outputs(run, table, tmp_path)
    body, headers = binary_request(table, columns, {"parameters": {"binary_data_output": True}})
    as_json, as_binary, versioned, metadata = exchange(
        run,
        [
            ("POST", INFER, {"inputs": json_inputs(table, columns)}, None),
            ("POST", INFER, body, headers),
            ("POST", "/v2/models/m/versions/1/infer", body, headers),
            ("GET", "/v2/models/m", b"", None),
        ],
    )
    for response in (as_json, as_binary, versioned):
        assert response.status_code == 200, response.text
    assert as_json.headers["content-type"] == "application/json"
    assert "inference-header-content-length" in as_binary.headers
    assert versioned.content == as_binary.content
    answers = [read_outputs(as_json), read_outputs(as_binary)]
    assert as_json.json()["model_name"] == "m" and as_json.json()["model_version"] == "1"
    for outputs in answers:
        if task == "regression":
            assert set(outputs) == {"value"}
            assert outputs["value"].shape == (table.num_rows,)
            np.testing.assert_allclose(outputs["value"], expected["value"], rtol=1e-6, atol=1e-6)
            continue
        assert outputs["label"].tolist() == expected["label"]
        probabilities = outputs["probabilities"]
        if task == "binary":  # predict writes the positive class's; v2 answers both
            np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
            probabilities = probabilities[:, 1:]
        np.testing.assert_allclose(probabilities, expected["probabilities"], atol=1e-6)
    if task != "regression":
        classes = metadata.json()["parameters"]["classes"]
        assert classes[-len(expected["classes"]) :] == expected["classes"]


def test_the_metadata_lists_the_runs_columns_with_their_datatypes(trained_runs):
    run = trained_runs["multiclass"]
    server, live, ready, model, versioned, model_ready = exchange(
        run,
        [
            ("GET", "/v2", b"", None),
            ("GET", "/v2/health/live", b"", None),
            ("GET", "/v2/health/ready", b"", None),
            ("GET", "/v2/models/m", b"", None),
            ("GET", "/v2/models/m/versions/1", b"", None),
            ("GET", "/v2/models/m/versions/1/ready", b"", None),
        ],
    )
    for response in (server, live, ready, model, versioned, model_ready):
        assert response.status_code == 200, response.text
    assert "binary_tensor_data" in server.json()["extensions"]
    metadata = model.json()
    assert metadata == versioned.json()
    assert metadata["name"] == "m" and metadata["versions"] == ["1"]
    assert [(i["name"], i["datatype"]) for i in metadata["inputs"]] == [
        (name, DATATYPES[dtype]) for name, dtype in model_columns(run).items()
    ]
    classes = len(metadata["parameters"]["classes"])
    assert metadata["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, classes]},
    ]
    assert model_ready.json() == {"name": "m", "ready": True}


def test_outputs_and_id_are_honoured(trained_runs, table):
    run = trained_runs["binary"]
    inputs = json_inputs(table.slice(0, 3), model_columns(run))
    chosen, every = exchange(
        run,
        [
            (
                "POST",
                INFER,
                {"id": "r-7", "inputs": inputs, "outputs": [{"name": "probabilities"}]},
                None,
            ),
            ("POST", INFER, {"inputs": inputs}, None),
        ],
    )
    assert chosen.json()["id"] == "r-7"
    assert [o["name"] for o in chosen.json()["outputs"]] == ["probabilities"]
    assert chosen.json()["outputs"][0]["shape"] == [3, 2]
    assert "id" not in every.json()
    assert [o["name"] for o in every.json()["outputs"]] == ["label", "probabilities"]


def _bad_requests(table: pa.Table, columns: dict[str, str]) -> list[tuple[Any, ...]]:
    """(what, path, body, headers, status, words in the error) for each kind of bad request."""
    rows = table.slice(0, 3)
    good = json_inputs(rows, columns)
    first = next(iter(columns))
    numeric = next(name for name, dtype in columns.items() if dtype == "float32")
    text = next(name for name, dtype in columns.items() if dtype == "string")

    def changed(name: str, **fields: Any) -> list[dict[str, Any]]:
        return [{**i, **fields} if i["name"] == name else i for i in good]

    body, headers = binary_request(rows, columns)
    inf = np.array([1.0, np.inf, 2.0]).tobytes()
    with_inf = changed(numeric, datatype="FP64", parameters={"binary_data_size": len(inf)})
    for tensor in with_inf:
        if tensor["name"] == numeric:
            del tensor["data"]
    inf_body = json.dumps({"inputs": with_inf}).encode()
    return [
        ("unknown model", "/v2/models/nope/infer", {"inputs": good}, None, 404, "no model"),
        (
            "unknown version",
            "/v2/models/m/versions/9/infer",
            {"inputs": good},
            None,
            404,
            "no version",
        ),
        ("unknown model metadata", "/v2/models/nope", b"", None, 404, "no model"),
        ("bad datatype", INFER, {"inputs": changed(text, datatype="FP32")}, None, 400, "datatype"),
        ("wrong shape", INFER, {"inputs": changed(first, shape=[3, 2])}, None, 400, "shape"),
        ("rows differ", INFER, {"inputs": changed(first, shape=[4])}, None, 400, "differ in rows"),
        ("short data", INFER, {"inputs": changed(numeric, data=[1.0, 2.0])}, None, 400, "holds 2"),
        (
            "text in a number",
            INFER,
            {"inputs": changed(numeric, data=["a", 1, 2])},
            None,
            400,
            "row 0",
        ),
        ("missing column", INFER, {"inputs": good[1:]}, None, 400, f"lacks input(s) {first!r}"),
        ("no inputs", INFER, {"id": "x"}, None, 400, '"inputs"'),
        ("bad id", INFER, {"id": 3, "inputs": good}, None, 400, '"id"'),
        (
            "unknown output",
            INFER,
            {"inputs": good, "outputs": [{"name": "x"}]},
            None,
            400,
            "no output",
        ),
        ("not JSON", INFER, b"{", None, 400, "not valid JSON"),
        (
            "too many rows",
            INFER,
            {
                "inputs": json_inputs(
                    pa.concat_tables([table, table]).slice(0, MAX_ROWS + 1), columns
                )
            },
            None,
            413,
            "--max-rows",
        ),
        ("binary size past the end", INFER, body[:-1], headers, 400, "passes the end"),
        ("binary bytes left over", INFER, body + b"\0", headers, 400, "add up to"),
        (
            "header length past the body",
            INFER,
            body,
            {"Inference-Header-Content-Length": "99999999"},
            400,
            "Inference-Header-Content-Length",
        ),
        (
            "binary infinity",
            INFER,
            inf_body + inf,
            {"Inference-Header-Content-Length": str(len(inf_body))},
            400,
            "float32's range",
        ),
    ]


def test_every_bad_request_gets_the_protocols_status_and_names_what_is_wrong(trained_runs, table):
    run = trained_runs["binary"]
    cases = _bad_requests(table, model_columns(run))
    methods = ["GET" if body == b"" else "POST" for _, _, body, _, _, _ in cases]
    responses = exchange(
        run,
        [(method, c[1], c[2], c[3]) for method, c in zip(methods, cases, strict=True)],
    )
    for (what, _, _, _, status, words), response in zip(cases, responses, strict=True):
        assert response.status_code == status, (what, response.text)
        assert words in response.json()["error"], (what, response.text)


def test_v2_requests_are_counted_under_their_protocol(trained_runs, table):
    from prometheus_client.parser import text_string_to_metric_families

    run = trained_runs["binary"]
    inputs = json_inputs(table.slice(0, 4), model_columns(run))
    app, batcher, metrics = serving(run)
    requests = [("POST", INFER, {"inputs": inputs}, None)] * 3
    requests += [("POST", "/v2/models/nope/infer", {"inputs": inputs}, None)]
    requests += [("GET", "/v2/health/ready", b"", None)]
    asyncio.run(send(app, batcher, requests))
    body, _ = metrics.exposition()
    counted = {
        (s.labels["route"], s.labels["protocol"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
        if s.name == "mlcli_requests_total"
    }
    assert counted == {
        ("/v2/models/{name}/infer", "v2", "200"): 3,
        ("/v2/models/{name}/infer", "v2", "404"): 1,
        ("/v2/health/ready", "v2", "200"): 1,
    }


def test_a_saved_model_export_answers_v2_as_its_run_does(trained_runs, table, tmp_path):
    from mlcli.exporting.digest import DIGEST_KEY, export_digest
    from mlcli.exporting.export import export

    run = trained_runs["binary"]
    export(run, format="saved_model", output=tmp_path / "exports")
    folder = tmp_path / "exports" / "tiny-binary" / "1"
    info = json.loads((folder / "export.json").read_text())
    info.setdefault(DIGEST_KEY, export_digest(folder))
    (folder / "export.json").write_text(json.dumps(info))
    body, headers = binary_request(table, model_columns(run))
    requests = [("POST", INFER, body, headers), ("GET", "/v2/models/m", b"", None)]
    from_run = exchange(run, requests)
    from_export = exchange(tmp_path / "exports", requests)
    assert from_export[1].json() == from_run[1].json()  # export.json gives the same metadata
    ours, theirs = read_outputs(from_run[0]), read_outputs(from_export[0])
    assert ours["label"].tolist() == theirs["label"].tolist()
    np.testing.assert_allclose(ours["probabilities"], theirs["probabilities"], atol=1e-6)
