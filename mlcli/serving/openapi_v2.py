"""The Open Inference Protocol's (v2) part of `GET /openapi.json` (`serving.openapi` puts it in
the document): its paths for this server's model, and the schemas of its bodies with the
model's own columns: one input tensor per column, named by it, with the datatypes that column
takes (`serving.v2_tensors.ACCEPTED`) and the JSON values of its `data`; the outputs with their
datatypes and shapes. The binary tensor data extension is described as a second request body
type (`application/octet-stream`) and the `Inference-Header-Content-Length` header.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlcli.serving.v2_payloads import HEADER_LENGTH
from mlcli.serving.v2_tensors import ACCEPTED, DATATYPES, output_datatypes

if TYPE_CHECKING:
    from mlcli.serving.servables import Servable

TAG = ["Open Inference Protocol (v2)"]
_REF = "#/components/schemas/"
# the JSON values that a column's `data` may hold, over every datatype it takes
_DATA_TYPES = {
    "float32": ["number", "boolean", "null"],
    "int64": ["number", "null"],
    "string": ["string", "boolean", "integer", "null"],
}
_OUTPUT_VALUES = {"BYTES": {"type": "string"}, "FP32": {"type": "number"}}
_INFER_ERRORS = ("400", "404", "408", "413", "500", "503")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _answer(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: str) -> dict[str, Any]:
    return {code: {"$ref": f"#/components/responses/{code}"} for code in codes}


def _input(name: str, dtype: str, description: str, max_rows: int) -> dict[str, Any]:
    value = {"type": _DATA_TYPES[dtype]}
    return {
        "type": "object",
        "title": name,
        "description": f"{description}; datatype {DATATYPES[dtype]} in the model",
        "properties": {
            "name": {"const": name},
            "datatype": {"enum": list(ACCEPTED[dtype])},
            "shape": {
                "type": "array",
                "items": {"type": "integer", "minimum": 0},
                "minItems": 1,
                "maxItems": 2,
                "description": "[rows] or [rows, 1]",
            },
            "data": {
                "type": "array",
                "maxItems": max_rows,
                "items": {
                    "anyOf": [
                        value,
                        {"type": "array", "items": value, "minItems": 1, "maxItems": 1},
                    ]
                },
            },
            "parameters": {
                "type": "object",
                "properties": {
                    "binary_data_size": {
                        "type": "integer",
                        "minimum": 0,
                        "description": "the bytes of this input after the JSON (instead of data)",
                    }
                },
            },
        },
        "required": ["name", "datatype", "shape"],
    }


def _output(name: str, datatype: str, shape: list[int]) -> dict[str, Any]:
    return {
        "type": "object",
        "title": name,
        "properties": {
            "name": {"const": name},
            "datatype": {"const": datatype},
            "shape": {"type": "array", "items": {"type": "integer"}, "minItems": len(shape)},
            "data": {"type": "array", "items": _OUTPUT_VALUES[datatype]},
            "parameters": {
                "type": "object",
                "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
            },
        },
        "required": ["name", "datatype", "shape"],
    }


def _schemas(servable: Servable, descriptions: dict[str, str], max_rows: int) -> dict[str, Any]:
    inputs = servable.signature.inputs
    outputs = output_datatypes(servable.signature)
    tensor_metadata = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
        },
        "required": ["name", "datatype", "shape"],
    }
    requested = {
        "type": "object",
        "properties": {
            "name": {"enum": list(outputs)},
            "parameters": {
                "type": "object",
                "properties": {"binary_data": {"type": "boolean"}},
            },
        },
        "required": ["name"],
    }
    return {
        "V2InferRequest": {
            "type": "object",
            "description": "one input tensor per column of the model; other inputs are ignored",
            "properties": {
                "id": {"type": "string"},
                "parameters": {
                    "type": "object",
                    "properties": {"binary_data_output": {"type": "boolean"}},
                },
                "inputs": {
                    "type": "array",
                    "minItems": len(inputs),
                    "items": {
                        "oneOf": [
                            _input(name, dtype, descriptions[name], max_rows)
                            for name, dtype in inputs.items()
                        ]
                    },
                },
                "outputs": {"type": "array", "items": requested},
            },
            "required": ["inputs"],
        },
        "V2InferResponse": {
            "type": "object",
            "properties": {
                "model_name": {"const": servable.name},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "outputs": {
                    "type": "array",
                    "items": {
                        "oneOf": [
                            _output(name, datatype, shape)
                            for name, (datatype, shape) in outputs.items()
                        ]
                    },
                },
            },
            "required": ["model_name", "model_version", "outputs"],
        },
        "V2ModelMetadata": {
            "type": "object",
            "description": "one input per column, the outputs; parameters: task, target, classes",
            "properties": {
                "name": {"const": servable.name},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": tensor_metadata},
                "outputs": {"type": "array", "items": tensor_metadata},
                "parameters": {"type": "object"},
            },
            "required": ["name", "platform", "inputs", "outputs"],
        },
        "V2ServerMetadata": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "extensions": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["name", "version", "extensions"],
        },
    }


def _model_paths(prefix: str, where: str, examples: dict[str, Any]) -> dict[str, Any]:
    suffix = where and "_versioned"
    ready = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
        "required": ["ready"],
    }
    header = {
        "name": HEADER_LENGTH.title(),
        "in": "header",
        "required": False,
        "description": "binary tensor data extension: the length of the JSON at the body's "
        "start; the inputs' raw bytes follow it, in the order of their binary_data_size",
        "schema": {"type": "integer", "minimum": 0},
    }
    return {
        prefix: {
            "get": {
                "tags": TAG,
                "summary": f"the model's inputs, outputs and datatypes{where}",
                "operationId": f"v2_metadata{suffix}",
                "responses": {
                    "200": _answer("the model's metadata", _ref("V2ModelMetadata")),
                    **_errors("404"),
                },
            }
        },
        prefix + "/ready": {
            "get": {
                "tags": TAG,
                "summary": f"whether the model is ready{where}",
                "operationId": f"v2_model_ready{suffix}",
                "responses": {"200": _answer("ready", ready), **_errors("404")},
            }
        },
        prefix + "/infer": {
            "post": {
                "tags": TAG,
                "summary": f"outputs for input tensors, one per column{where}",
                "operationId": f"v2_infer{suffix}",
                "parameters": [header],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": _ref("V2InferRequest"),
                            "examples": {
                                "tensors": {"summary": "one row (v2 tensors)", "value": examples}
                            },
                        },
                        "application/octet-stream": {
                            "schema": {
                                "type": "string",
                                "contentMediaType": "application/octet-stream",
                            },
                        },
                    },
                },
                "responses": {
                    "200": {
                        "description": "the outputs; with binary outputs the JSON is followed by "
                        f"their bytes and the {HEADER_LENGTH.title()} header gives its length",
                        "content": {
                            "application/json": {"schema": _ref("V2InferResponse")},
                            "application/octet-stream": {
                                "schema": {
                                    "type": "string",
                                    "contentMediaType": "application/octet-stream",
                                }
                            },
                        },
                    },
                    **_errors(*_INFER_ERRORS),
                },
            }
        },
    }


def v2_description(
    servable: Servable,
    *,
    model_path: str,
    versioned_path: str,
    descriptions: dict[str, str],
    examples: dict[str, Any],
    max_rows: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The v2 paths and component schemas of a server of `servable`.

    Args:
        servable: the model: its name, version and signature.
        model_path: `/v2/models/<name>`, its name escaped for a path.
        versioned_path: the same with `/versions/<version>`.
        descriptions: each column's description (its feature type and categories).
        examples: a plausible value of each column.
        max_rows: the most rows an infer request may hold.
    """
    inputs = servable.signature.inputs
    example = {
        "inputs": [
            {"name": name, "datatype": DATATYPES[dtype], "shape": [1], "data": [examples[name]]}
            for name, dtype in inputs.items()
        ]
    }
    health = {
        "/v2": ("the server's name, version and protocol extensions", "v2_server"),
        "/v2/health/live": ("whether the server is live", "v2_live"),
        "/v2/health/ready": ("whether the server is ready to infer", "v2_ready"),
    }
    bodies = {"/v2": _ref("V2ServerMetadata"), "/v2/health/live": {}, "/v2/health/ready": {}}
    paths: dict[str, Any] = {
        path: {
            "get": {
                "tags": TAG,
                "summary": summary,
                "operationId": operation,
                "responses": {"200": _answer("yes", bodies[path] or {"type": "object"})},
            }
        }
        for path, (summary, operation) in health.items()
    }
    paths.update(_model_paths(model_path, "", example))
    paths.update(_model_paths(versioned_path, f" (version {servable.version})", example))
    return paths, _schemas(servable, descriptions, max_rows)
