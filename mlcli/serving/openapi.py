"""`GET /openapi.json`: an OpenAPI 3.1 description of what `mlcli serve` answers, written for
the model it serves; `GET /docs`: a page of the server's own that lists the routes and sends
requests from the browser (no script or style from anywhere else: the page works offline).

The request schemas name the model's own columns with their JSON types (a number for a numeric
column, a string for a categorical, binary or text column, an integer for an integer
category), each nullable, as the server reads `null` as a missing value in any column, and
each also as a one-element list, as TF Serving clients send a `[batch, 1]` input. Both forms of
TF Serving's predict request are described (`instances`: rows, `inputs`: columns) with their
answers, the status and metadata bodies, and the `{"error": ...}` body of every error status.
A run's model adds each column's feature type, its categories and an example row from the
training statistics; an export's model, the feature types that its export.json records. The
Open Inference Protocol's (v2) routes and bodies, with the same columns, are
`serving.openapi_v2`'s.

The paths are this server's own (its model's name and version), so that the description is
what a client of this server may call.
"""

from __future__ import annotations

import html
import math
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from mlcli.exporting.signature import SIGNATURE_KEY
from mlcli.inference.labels import as_text
from mlcli.serving.openapi_v2 import v2_description

if TYPE_CHECKING:
    from mlcli.features.schema import ColumnSchema
    from mlcli.serving.servables import Servable

OPENAPI_VERSION = "3.1.0"
_JSON_TYPES = {"float32": "number", "int64": "integer", "string": "string"}
_EXAMPLES = {"float32": 0.0, "int64": 0, "string": ""}
_SHOWN_CATEGORIES = 5
_REF = "#/components/schemas/"
_ERRORS = {
    "400": "a malformed body, a missing column or a value of the wrong type (named)",
    "404": "a model or version this server does not serve",
    "408": "a body that did not arrive within --body-timeout",
    "413": "a body over --max-body-bytes, or more rows than --max-rows",
    "500": "the model failed on this request (the server log names the request id)",
    "503": "too many requests are waiting for the model; retry later",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _example(dtype: str, column: ColumnSchema | None) -> Any:
    """A plausible value: the training mean of a number, the most frequent category."""
    if column is None:
        return _EXAMPLES[dtype]
    if column.type == "numeric":
        mean = math.expm1(column.mean) if column.transform == "log" else column.mean
        return round(mean, 2) if math.isfinite(mean) else 0.0
    if column.vocabulary:
        if column.type == "text":
            return " ".join(str(word) for word in column.vocabulary[:3])
        return column.vocabulary[0]
    return _EXAMPLES[dtype]


def _describe(dtype: str, column: ColumnSchema | None) -> str:
    kind = {"float32": "a number", "int64": "an integer category", "string": "a string"}[dtype]
    parts = [f"{column.type} feature: {kind}" if column is not None else kind]
    if column is not None and column.type in ("categorical", "binary") and column.vocabulary:
        shown = ", ".join(repr(value) for value in column.vocabulary[:_SHOWN_CATEGORIES])
        more = ", ..." if len(column.vocabulary) > _SHOWN_CATEGORIES else ""
        parts.append(f"{len(column.vocabulary)} categories in training ({shown}{more})")
    parts.append("null when missing" + (" (NaN too)" if dtype == "float32" else ""))
    if dtype == "string":
        parts.append("booleans and integers are read as their text")
    return "; ".join(parts)


def _value(dtype: str, column: ColumnSchema | None, name: str) -> dict[str, Any]:
    scalar = {"type": [_JSON_TYPES[dtype], "null"]}
    return {
        "title": name,
        "description": _describe(dtype, column),
        "anyOf": [scalar, {"type": "array", "items": scalar, "minItems": 1, "maxItems": 1}],
        "examples": [_example(dtype, column)],
    }


def _request_schemas(servable: Servable, max_rows: int) -> dict[str, Any]:
    known = {column.name: column for column in servable.columns}
    inputs = servable.signature.inputs
    values = {name: _value(dtype, known.get(name), name) for name, dtype in inputs.items()}
    signature_name = {"const": SIGNATURE_KEY, "description": "the only signature"}
    rows = {"type": "array", "minItems": 1, "maxItems": max_rows}
    return {
        "Row": {
            "type": "object",
            "description": "one row: every input column of the model; other keys are ignored",
            "properties": values,
            "required": list(inputs),
        },
        "Columns": {
            "type": "object",
            "description": "one list of values per input column, all of one length",
            "properties": {name: {**rows, "items": value} for name, value in values.items()},
            "required": list(inputs),
        },
        "RowsRequest": {
            "type": "object",
            "properties": {
                "signature_name": signature_name,
                "instances": {**rows, "items": _ref("Row")},
            },
            "required": ["instances"],
        },
        "ColumnsRequest": {
            "type": "object",
            "properties": {"signature_name": signature_name, "inputs": _ref("Columns")},
            "required": ["inputs"],
        },
        "PredictRequest": {"oneOf": [_ref("RowsRequest"), _ref("ColumnsRequest")]},
    }


def _response_schemas(servable: Servable) -> dict[str, Any]:
    target = servable.signature.target
    if target.task == "regression":
        value = {"type": "number", "description": f"the predicted {target.column}"}
        predictions: dict[str, Any] = {"type": "array", "items": value}
        outputs: dict[str, Any] = {"type": "array", "items": value}
    else:
        classes = as_text(target.classes)
        label = {"type": "string", "enum": classes, "description": f"the predicted {target.column}"}
        probabilities = {
            "type": "array",
            "items": {"type": "number", "minimum": 0, "maximum": 1},
            "minItems": len(classes),
            "maxItems": len(classes),
            "description": f"one per class, in the order {classes}",
        }
        predictions = {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"label": label, "probabilities": probabilities},
                "required": ["label", "probabilities"],
            },
        }
        outputs = {
            "type": "object",
            "properties": {
                "label": {"type": "array", "items": label},
                "probabilities": {"type": "array", "items": probabilities},
            },
            "required": ["label", "probabilities"],
        }
    status = {
        "type": "object",
        "properties": {
            "version": {"type": "string"},
            "state": {"type": "string", "enum": ["AVAILABLE"]},
            "status": {
                "type": "object",
                "properties": {
                    "error_code": {"type": "string"},
                    "error_message": {"type": "string"},
                },
            },
        },
    }
    return {
        "RowsResponse": {
            "type": "object",
            "properties": {"predictions": predictions},
            "required": ["predictions"],
        },
        "ColumnsResponse": {
            "type": "object",
            "properties": {"outputs": outputs},
            "required": ["outputs"],
        },
        "PredictResponse": {"oneOf": [_ref("RowsResponse"), _ref("ColumnsResponse")]},
        "ModelStatus": {
            "type": "object",
            "properties": {"model_version_status": {"type": "array", "items": status}},
            "required": ["model_version_status"],
        },
        "ModelMetadata": {
            "type": "object",
            "description": "the serving_default signature as TF Serving shows it, and the "
            "task, target and classes under metadata.mlcli",
            "properties": {"model_spec": {"type": "object"}, "metadata": {"type": "object"}},
            "required": ["model_spec", "metadata"],
        },
        "Error": {
            "type": "object",
            "properties": {"error": {"type": "string"}},
            "required": ["error"],
        },
    }


def _json_answer(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: str) -> dict[str, Any]:
    return {code: {"$ref": f"#/components/responses/{code}"} for code in codes}


def _predict_examples(servable: Servable) -> dict[str, Any]:
    known = {column.name: column for column in servable.columns}
    row = {
        name: _example(dtype, known.get(name)) for name, dtype in servable.signature.inputs.items()
    }
    return {
        "rows": {"summary": "rows (instances)", "value": {"instances": [row]}},
        "columns": {
            "summary": "columns (inputs)",
            "value": {"inputs": {name: [value] for name, value in row.items()}},
        },
    }


def _model_paths(servable: Servable, prefix: str, where: str) -> dict[str, Any]:
    tag = ["TensorFlow Serving REST"]
    return {
        prefix: {
            "get": {
                "tags": tag,
                "summary": f"the model's status{where}",
                "operationId": f"status{where and '_versioned'}",
                "responses": {
                    "200": _json_answer("the served version", _ref("ModelStatus")),
                    **_errors("404"),
                },
            }
        },
        prefix + "/metadata": {
            "get": {
                "tags": tag,
                "summary": f"the model's signature: inputs, outputs, classes{where}",
                "operationId": f"metadata{where and '_versioned'}",
                "responses": {
                    "200": _json_answer("the signature", _ref("ModelMetadata")),
                    **_errors("404"),
                },
            }
        },
        prefix + ":predict": {
            "post": {
                "tags": tag,
                "summary": f"predictions for rows or columns{where}",
                "operationId": f"predict{where and '_versioned'}",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": _ref("PredictRequest"),
                            "examples": _predict_examples(servable),
                        }
                    },
                },
                "responses": {
                    "200": _json_answer(
                        "rows get predictions, columns get outputs", _ref("PredictResponse")
                    ),
                    **_errors(*_ERRORS),
                },
            }
        },
    }


def _server_paths(with_metrics: bool) -> dict[str, Any]:
    tag = ["server"]
    paths: dict[str, Any] = {
        "/healthz": {
            "get": {
                "tags": tag,
                "summary": "whether the server answers",
                "operationId": "health",
                "responses": {
                    "200": _json_answer(
                        "the server is up",
                        {
                            "type": "object",
                            "properties": {"status": {"const": "ok"}},
                            "required": ["status"],
                        },
                    )
                },
            }
        },
        "/openapi.json": {
            "get": {
                "tags": tag,
                "summary": "this description",
                "operationId": "openapi",
                "responses": {"200": _json_answer("OpenAPI 3.1", {"type": "object"})},
            }
        },
        "/docs": {
            "get": {
                "tags": tag,
                "summary": "a page to read this description and try requests",
                "operationId": "docs",
                "responses": {
                    "200": {
                        "description": "HTML",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }
    if with_metrics:
        paths["/metrics"] = {
            "get": {
                "tags": tag,
                "summary": "Prometheus metrics: requests, latency, batches, queue, rows, load",
                "operationId": "metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus' text format 0.0.4",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        }
    return paths


def openapi_document(servable: Servable, *, max_rows: int, with_metrics: bool) -> dict[str, Any]:
    """The OpenAPI 3.1 description of a server of `servable` (a JSON-ready dict).

    Args:
        servable: the model: its name, version, signature and (for a run) its columns.
        max_rows: the most rows a predict request may hold (`--max-rows`).
        with_metrics: whether the server has `GET /metrics`.
    """
    name = quote(servable.name, safe="-._~!$&'()*+,;=@")
    model = f"/v1/models/{name}"
    versioned = f"{model}/versions/{quote(servable.version, safe='')}"
    target = servable.signature.target
    known = {column.name: column for column in servable.columns}
    v2_paths, v2_schemas = v2_description(
        servable,
        model_path=f"/v2/models/{name}",
        versioned_path=f"/v2/models/{name}/versions/{quote(servable.version, safe='')}",
        descriptions={
            column: _describe(dtype, known.get(column))
            for column, dtype in servable.signature.inputs.items()
        },
        examples={
            column: _example(dtype, known.get(column))
            for column, dtype in servable.signature.inputs.items()
        },
        max_rows=max_rows,
    )
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": f"mlcli serve: {servable.name}",
            "version": servable.version,
            "description": (
                f"The {target.task} model {servable.name!r} (target {target.column!r}) over "
                "TensorFlow Serving's REST API and the Open Inference Protocol (v2)."
            ),
        },
        "paths": {
            **_model_paths(servable, model, ""),
            **_model_paths(servable, versioned, f" (version {servable.version})"),
            **v2_paths,
            **_server_paths(with_metrics),
        },
        "components": {
            "schemas": {
                **_request_schemas(servable, max_rows),
                **_response_schemas(servable),
                **v2_schemas,
            },
            "responses": {
                code: _json_answer(description, _ref("Error"))
                for code, description in _ERRORS.items()
            },
        },
    }


def docs_page(title: str) -> str:
    """`GET /docs`: the page (`docs.html` beside this module) titled after the model."""
    page = resources.files(__package__).joinpath("docs.html").read_text(encoding="utf-8")
    return page.replace("__TITLE__", html.escape(f"mlcli serve: {title}"))
