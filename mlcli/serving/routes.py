"""The HTTP side of `mlcli serve`: TensorFlow Serving's REST routes as a Starlette app.

```
GET  /healthz                        {"status": "ok"}
GET  /v1/models/<name>               the model's status, as TF Serving reports it
GET  /v1/models/<name>/metadata      the signature: inputs with dtypes, outputs, classes
POST /v1/models/<name>:predict       {"instances": [...]} or {"inputs": {...}}, see payloads.py
```

Errors are `{"error": "..."}`: 400 for a bad request (naming the column), 404 for an unknown
model or path, 405 for a wrong method, 413 for a body over the limit, 503 when the batcher's
queue is full, 500 when the model itself fails. Starlette is imported by `create_app`, so this
module imports without the `serve` extra.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from mlcli.reporting import Reporter
from mlcli.serving.batching import Batcher, QueueFullError
from mlcli.serving.payloads import (
    BadRequestError,
    PayloadTooLargeError,
    model_metadata,
    model_status,
    parse_predict,
    predict_response,
)

if TYPE_CHECKING:
    from mlcli.serving.servables import Servable


def _json(body: Any, status: int = 200) -> Any:
    from starlette.responses import Response

    content = json.dumps(body, separators=(",", ":")).encode()
    return Response(content, status_code=status, media_type="application/json")


async def _read_body(request: Any, limit: int) -> bytes:
    """The body, refused with 413 as soon as its declared or received size passes `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequestError(f"Content-Length {declared!r} is not a number of bytes")
        if int(declared) > limit:
            raise PayloadTooLargeError(f"the body has {declared} bytes, the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"the body passes the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class AccessLog:
    """ASGI middleware: one `request` event per HTTP request through the reporter."""

    def __init__(self, app: Any, reporter: Reporter) -> None:
        self.app = app
        self.reporter = reporter

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            client = scope.get("client") or ("-", 0)
            self.reporter.event(
                "request",
                client=f"{client[0]}:{client[1]}",
                method=scope["method"],
                path=scope["path"],
                status=status,
                ms=round((time.perf_counter() - start) * 1000, 2),
            )


class ModelNotFoundError(BadRequestError):
    """A model name this server does not serve (404)."""

    status = 404


def create_app(servable: Servable, *, batcher: Batcher, max_body_bytes: int) -> Any:
    """The ASGI app serving `servable`; its lifespan starts and stops `batcher`."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.routing import Route

    signature = servable.signature

    def check_name(request: Any) -> None:
        name = request.path_params["name"]
        if name != servable.name:
            raise ModelNotFoundError(
                f"no model named {name!r}; this server serves {servable.name!r}"
            )

    async def healthz(request: Any) -> Any:
        return _json({"status": "ok"})

    async def status(request: Any) -> Any:
        check_name(request)
        return _json(model_status(servable.version))

    async def metadata(request: Any) -> Any:
        check_name(request)
        return _json(model_metadata(servable.name, servable.version, signature))

    async def predict(request: Any) -> Any:
        with batcher.arriving():
            check_name(request)
            body = await _read_body(request, max_body_bytes)
            parsed = parse_predict(body, signature)
        try:
            outputs = await batcher.submit(parsed.columns, rows=parsed.rows)
        except QueueFullError as error:
            return _json({"error": f"the server is overloaded: {error}; retry later"}, 503)
        except Exception as error:  # the model failed: this request fails, the server goes on
            return _json({"error": f"the model failed: {type(error).__name__}: {error}"}, 500)
        return _json(predict_response(outputs, signature, columnar=parsed.columnar))

    async def bad_request(request: Any, error: Exception) -> Any:
        return _json({"error": str(error)}, getattr(error, "status", 400))

    async def http_error(request: Any, error: Exception) -> Any:
        assert isinstance(error, HTTPException)
        return _json(
            {"error": f"{request.method} {request.url.path}: {error.detail}"}, error.status_code
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await batcher.start()
        await batcher.submit(servable.example(), rows=1)  # warms the model call's thread up
        yield
        await batcher.stop()

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/v1/models/{name}", status, methods=["GET"]),
            Route("/v1/models/{name}/metadata", metadata, methods=["GET"]),
            Route("/v1/models/{name}:predict", predict, methods=["POST"]),
        ],
        exception_handlers={BadRequestError: bad_request, HTTPException: http_error},
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    return app
