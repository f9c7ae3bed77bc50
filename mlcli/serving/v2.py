"""The Open Inference Protocol (v2, REST), as KServe, Triton and MLServer clients speak it,
beside TensorFlow Serving's routes of `serving.routes`.

```
GET  /v2                                          the server: name, version, extensions
GET  /v2/health/live, /v2/health/ready            200 while the server runs (and can predict)
GET  /v2/models/<name>[/versions/<v>]             the model: inputs, outputs, datatypes, shapes
GET  /v2/models/<name>[/versions/<v>]/ready       200 when that model (version) is served
POST /v2/models/<name>[/versions/<v>]/infer       input tensors (one per column) -> outputs
```

The bodies are `serving.v2_payloads`'s, the tensors in them `serving.v2_tensors`'s. The
infer route shares the server's body limit and timeout, row limit, batcher (its rows join TF
Serving clients' in one model call) and metrics (`protocol="v2"`); errors are
`{"error": "..."}` with 400 (a bad request, naming the input), 404 (no such model or version),
408, 413, 503 and 500 as on the TF Serving routes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from mlcli import __version__
from mlcli.inference.labels import as_text
from mlcli.serving.batching import Columns
from mlcli.serving.v2_payloads import HEADER_LENGTH, decompressed, infer_response, parse_infer
from mlcli.serving.v2_tensors import DATATYPES, output_datatypes
from mlcli.serving.versions import VERSION_HEADER

if TYPE_CHECKING:
    from mlcli.serving.servables import Servable
    from mlcli.serving.versions import LiveVersion, ModelVersions

SERVER_NAME = "mlcli"
EXTENSIONS = ["binary_tensor_data"]
PREFIX = "/v2"


def server_metadata() -> dict[str, Any]:
    """`GET /v2`: the server's name, version and the protocol extensions it speaks."""
    return {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}


def model_metadata(servable: Servable) -> dict[str, Any]:
    """`GET /v2/models/<name>`: one input per column with its datatype, and the outputs;
    `parameters` adds the task, the target and (classifiers) the classes in the order of
    `probabilities`, and the binary decision threshold."""
    signature = servable.signature
    target = signature.target
    parameters: dict[str, Any] = {"task": target.task, "target": target.column}
    if target.task != "regression":
        parameters["classes"] = as_text(target.classes)
    if target.task == "binary":
        parameters["threshold"] = signature.threshold
    return {
        "name": servable.name,
        "versions": [servable.version],
        "platform": SERVER_NAME,
        "inputs": [
            {"name": column, "datatype": DATATYPES[dtype], "shape": [-1]}
            for column, dtype in signature.inputs.items()
        ],
        "outputs": [
            {"name": name, "datatype": datatype, "shape": shape}
            for name, (datatype, shape) in output_datatypes(signature).items()
        ],
        "parameters": parameters,
    }


def _json(body: Any, status: int = 200) -> Any:
    import json

    from starlette.responses import Response

    content = json.dumps(body, separators=(",", ":")).encode()
    return Response(content, status_code=status, media_type="application/json")


def v2_routes(
    route: Callable[..., Any],
    versions: ModelVersions,
    *,
    read_body: Callable[[Any], Awaitable[bytes]],
    run_model: Callable[[Any, LiveVersion, Columns, int], Awaitable[np.ndarray]],
    max_rows: int,
    max_body_bytes: int,
) -> list[Any]:
    """The v2 routes of a server of `versions`, for `serving.routes.create_app`.

    Args:
        route: the Route class (one that labels the metrics by its template).
        versions: the model's versions (`get` and `acquire` raise 404 for another model or an
            unknown version; the newest answers a path without one).
        read_body: a request's body within the server's size and time limits (413, 408).
        run_model: the model's outputs for a request's columns and rows (the shared batcher;
            503 when overloaded, 500 when the model fails, rows counted in the metrics).
        max_rows: the most rows in one request (413 above).
        max_body_bytes: the most bytes a compressed body may inflate to (413 above).
    """
    from starlette.responses import Response

    async def server(request: Any) -> Any:
        return _json(server_metadata())

    async def live(request: Any) -> Any:
        return _json({"live": True})

    async def ready(request: Any) -> Any:
        return _json({"ready": True})

    def requested(request: Any) -> tuple[str | None, str]:
        return request.path_params.get("version"), request.path_params["name"]

    async def metadata(request: Any) -> Any:
        version, name = requested(request)
        return _json(model_metadata(versions.get(version, name=name)))

    async def model_ready(request: Any) -> Any:
        version, name = requested(request)
        served = versions.get(version, name=name)
        return _json({"name": served.name, "ready": True})

    async def infer(request: Any) -> Any:
        version, name = requested(request)
        versions.get(version, name=name)  # an unknown model or version: 404 before the body
        body = await read_body(request)
        with versions.acquire(version, name=name) as live:
            served = live.servable
            with live.batcher.arriving():
                encoding = request.headers.get("content-encoding")
                parsed = parse_infer(
                    decompressed(body, encoding, limit=max_body_bytes),
                    served.signature,
                    header_length=request.headers.get(HEADER_LENGTH),
                    max_rows=max_rows,
                )
            outputs = await run_model(request, live, parsed.columns, parsed.rows)
        content, headers = infer_response(
            outputs,
            served.signature,
            parsed,
            model_name=served.name,
            model_version=served.version,
        )
        return Response(content, headers={**headers, VERSION_HEADER: served.version})

    model = PREFIX + "/models/{name:model}"
    versioned = model + "/versions/{version:model}"
    routes = [
        route(PREFIX, server, methods=["GET"]),
        route(PREFIX + "/health/live", live, methods=["GET"]),
        route(PREFIX + "/health/ready", ready, methods=["GET"]),
    ]
    for prefix in (model, versioned):
        routes += [
            route(prefix, metadata, methods=["GET"]),
            route(prefix + "/ready", model_ready, methods=["GET"]),
            route(prefix + "/infer", infer, methods=["POST"]),
        ]
    return routes
