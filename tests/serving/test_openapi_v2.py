"""The Open Inference Protocol's part of `GET /openapi.json`: it names the run's own columns
with the datatypes each takes, and tells the truth: its infer example is answered, and the
server's v2 answers (good and bad) fit the schemas it gives."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from openapi_spec_validator import validate

from mlcli.exporting.signature import ServingSignature
from mlcli.features.schema import FeatureSchema
from mlcli.reporting import QuietReporter
from mlcli.serving.openapi import openapi_document
from mlcli.serving.servables import Servable
from mlcli.serving.v2_tensors import ACCEPTED, DATATYPES


def _servable(run: Path) -> Servable:
    schema = FeatureSchema.load(run / "schema.json")
    return Servable(
        name="m",
        version="1",
        signature=ServingSignature.from_schema(schema),
        call=lambda columns: np.zeros((1, 1)),
        source=run,
        columns=tuple(schema.columns),
    )


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_the_v2_request_schema_has_the_runs_columns_and_their_datatypes(trained_runs, task):
    schema = FeatureSchema.load(trained_runs[task] / "schema.json")
    document = openapi_document(_servable(trained_runs[task]), max_rows=7, with_metrics=False)
    validate(document)
    for path in ("/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/m/ready"):
        assert "get" in document["paths"][path]
    for prefix in ("/v2/models/m", "/v2/models/m/versions/1"):
        assert "post" in document["paths"][f"{prefix}/infer"]
    request = document["components"]["schemas"]["V2InferRequest"]
    tensors = request["properties"]["inputs"]["items"]["oneOf"]
    assert [t["properties"]["name"]["const"] for t in tensors] == [c.name for c in schema.columns]
    for tensor, column in zip(tensors, schema.columns, strict=True):
        assert tensor["properties"]["datatype"]["enum"] == list(ACCEPTED[column.dtype])
        assert tensor["description"].startswith(column.type)
        assert DATATYPES[column.dtype] in tensor["description"]
        assert tensor["properties"]["data"]["maxItems"] == 7


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


def _fits(document: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    answer = document["paths"][path][method]["responses"][str(status)]
    if "$ref" in answer:
        answer = document["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
    schema = answer["content"]["application/json"]["schema"]
    root = {**schema, "components": document["components"]}
    jsonschema.Draft202012Validator(root).validate(body)


def test_the_servers_v2_answers_fit_the_description(client):
    document = client.get("/openapi.json").json()
    validate(document)
    infer = "/v2/models/m/infer"
    content = document["paths"][infer]["post"]["requestBody"]["content"]["application/json"]
    request_schema = {**content["schema"], "components": document["components"]}
    for example in content["examples"].values():
        jsonschema.Draft202012Validator(request_schema).validate(example["value"])
        response = client.post(infer, json=example["value"])
        assert response.status_code == 200, response.text
        _fits(document, infer, "post", 200, response.json())
    bad = client.post(infer, json={"inputs": [{"name": "nothing"}]})
    assert bad.status_code == 400
    _fits(document, infer, "post", 400, bad.json())
    unknown = client.get("/v2/models/other")
    assert unknown.status_code == 404
    _fits(document, "/v2/models/m", "get", 404, unknown.json())
    for path in (
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/m",
        "/v2/models/m/ready",
    ):
        response = client.get(path)
        assert response.status_code == 200, path
        _fits(document, path, "get", 200, response.json())
