"""`GET /openapi.json` and `GET /docs`: the description is valid OpenAPI 3.1 for every task,
names the run's own columns with their types, and tells the truth: its examples are answered,
and the server's answers (good and bad) fit the schemas it gives; the page loads nothing from
elsewhere and escapes the model's name; headless Chromium renders it (slow, where present)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from mlcli.exporting.signature import ServingSignature
from mlcli.features.schema import FeatureSchema
from mlcli.reporting import QuietReporter
from mlcli.serving.openapi import docs_page, openapi_document
from mlcli.serving.servables import Servable

JSON_TYPES = {"float32": "number", "int64": "integer", "string": "string"}


def _servable(run: Path, name: str = "m") -> Servable:
    """The run as the server describes it (no model call: the description needs none)."""
    schema = FeatureSchema.load(run / "schema.json")
    return Servable(
        name=name,
        version="1",
        signature=ServingSignature.from_schema(schema),
        call=lambda columns: np.zeros((1, 1)),
        source=run,
        columns=tuple(schema.columns),
    )


def _validator(document: dict[str, Any], component: str) -> jsonschema.Validator:
    root = {"$ref": f"#/components/schemas/{component}", "components": document["components"]}
    return jsonschema.Draft202012Validator(root)


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
@pytest.mark.parametrize("with_metrics", [True, False])
def test_the_description_is_valid_openapi_31(trained_runs, task, with_metrics):
    document = openapi_document(
        _servable(trained_runs[task]), max_rows=100, with_metrics=with_metrics
    )
    validate(document)  # raises on any fault
    assert document["openapi"].startswith("3.1")
    assert ("/metrics" in document["paths"]) is with_metrics


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_the_request_schema_has_the_runs_own_columns_and_types(trained_runs, task):
    schema = json.loads((trained_runs[task] / "schema.json").read_text())
    document = openapi_document(_servable(trained_runs[task]), max_rows=7, with_metrics=True)
    row = document["components"]["schemas"]["Row"]
    assert list(row["properties"]) == [column["name"] for column in schema["columns"]]
    assert row["required"] == [column["name"] for column in schema["columns"]]
    for column in schema["columns"]:
        value = row["properties"][column["name"]]
        assert value["anyOf"][0]["type"] == [JSON_TYPES[column["dtype"]], "null"]
        assert value["description"].startswith(column["type"])
    instances = document["components"]["schemas"]["RowsRequest"]["properties"]["instances"]
    assert instances["maxItems"] == 7


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_each_example_fits_the_request_schema(trained_runs, task):
    document = openapi_document(_servable(trained_runs[task]), max_rows=10, with_metrics=True)
    validator = _validator(document, "PredictRequest")
    content = document["paths"]["/v1/models/m:predict"]["post"]["requestBody"]["content"]
    for example in content["application/json"]["examples"].values():
        validator.validate(example["value"])


@settings(max_examples=25, deadline=None)  # validating a document takes ~0.1 s
@given(name=st.text(min_size=1, max_size=20))
def test_any_model_name_gives_a_valid_description_and_an_escaped_page(name):
    signature = ServingSignature(
        inputs={"x": "float32", "c": "string", "k": "int64"},
        target=FeatureSchema.from_dict(
            {"columns": [], "target": {"column": "y", "task": "binary", "classes": [0, 1]}}
        ).target,
    )
    servable = Servable(
        name=name, version="3", signature=signature, call=lambda c: c["x"], source=Path(".")
    )
    validate(openapi_document(servable, max_rows=1, with_metrics=False))
    page = docs_page(name)
    assert page.count("<script>") == 1  # a name such as "<script>" comes out as text
    assert "__TITLE__" not in page


def test_the_page_loads_nothing_from_elsewhere():
    page = docs_page("m")
    for outside in ("http://", "https://", "//cdn", "src=", "<link"):
        assert outside not in page, outside


@pytest.fixture(scope="module")
def client(trained_runs) -> Iterator[Any]:
    from starlette.testclient import TestClient

    from mlcli._tensorflow import import_tensorflow

    import_tensorflow()
    from mlcli.serving.servables import load_servable
    from mlcli.serving.server import ServeOptions, _app

    servable = load_servable(trained_runs["multiclass"], name="m")
    with TestClient(_app(servable, ServeOptions(max_rows=50), QuietReporter())) as test_client:
        yield test_client


def _answer_schema(document: dict[str, Any], path: str, method: str, status: int) -> Any:
    answer = document["paths"][path][method]["responses"][str(status)]
    if "$ref" in answer:
        answer = document["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
    schema = answer["content"]["application/json"]["schema"]
    return jsonschema.Draft202012Validator({**schema, "components": document["components"]})


def test_the_servers_answers_fit_the_description(client):
    document = client.get("/openapi.json").json()
    validate(document)
    predict = "/v1/models/m:predict"
    content = document["paths"][predict]["post"]["requestBody"]["content"]["application/json"]
    for example in content["examples"].values():
        response = client.post(predict, json=example["value"])
        assert response.status_code == 200, response.text
        _answer_schema(document, predict, "post", 200).validate(response.json())
    bad = client.post(predict, json={"instances": [{"nothing": 1}]})
    assert bad.status_code == 400
    _answer_schema(document, predict, "post", 400).validate(bad.json())
    versioned = "/v1/models/m/versions/1"
    for path in ("/v1/models/m", versioned, f"{versioned}/metadata", "/healthz"):
        response = client.get(path)
        assert response.status_code == 200, path
        _answer_schema(document, path, "get", 200).validate(response.json())
    page = client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert "mlcli serve: m" in page.text


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if found := shutil.which(name):
            return found
    return None


@pytest.fixture
def live_url(trained_runs) -> Iterator[str]:
    """The app of `mlcli serve` for the multiclass run (as `m`) on a free loopback port."""
    import uvicorn

    from mlcli._tensorflow import import_tensorflow

    import_tensorflow()
    from mlcli.serving.servables import load_servable
    from mlcli.serving.server import ServeOptions, _app

    app = _app(load_servable(trained_runs["multiclass"], name="m"), ServeOptions(), QuietReporter())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if server.started:
            break
        time.sleep(0.1)
    yield url
    server.should_exit = True
    thread.join(timeout=30)


@pytest.mark.slow
def test_headless_chromium_renders_the_page_and_sends_the_example(live_url, tmp_path):
    """A screenshot of /docs, and its DOM once its script has read openapi.json and listed
    the routes, with the predict examples' buttons."""
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium on this machine")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path}/profile"]
    screenshot = tmp_path / "docs.png"
    subprocess.run(
        [
            browser,
            *flags,
            f"--screenshot={screenshot}",
            "--window-size=1200,1600",
            f"{live_url}/docs",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert screenshot.stat().st_size > 10_000  # a page, not a blank image
    dom = subprocess.run(
        [browser, *flags, "--virtual-time-budget=10000", "--dump-dom", f"{live_url}/docs"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert "/v1/models/m:predict" in dom
    assert "example: rows (instances)" in dom  # the buttons that fill the body in
