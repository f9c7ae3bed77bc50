"""The HTTP side of `mlcli serve`: TensorFlow Serving's REST routes as a Starlette app.

```
GET  /healthz                                       {"status": "ok"}
GET  /v1/models/<name>[/versions/<n>]               the model's status, as TF Serving reports it
GET  /v1/models/<name>[/versions/<n>]/metadata      the signature: inputs, outputs, classes
POST /v1/models/<name>[/versions/<n>]:predict       {"instances": [...]} or {"inputs": {...}}
GET  /metrics                                       Prometheus' text format (`serving.metrics`)
GET, POST /v2/...                                   the Open Inference Protocol (`serving.v2`)
GET  /openapi.json, /docs                           OpenAPI 3.1, and a page to try requests
```

A predict request is answered by the newest available version, or by the one its path pins,
which `serving.versions` holds for it until it is answered; its answer names that version in
the `x-mlcli-model-version` header.

Errors are `{"error": "..."}`: 400 for a bad request (naming the column), 404 for an unknown
model, version or path, 405 for a wrong method, 408 for a body that does not arrive in time, 413
for a body or a row count over the limit, 503 when the batcher's queue is full, 500 when the
model itself fails (a generic message and a request id; the details go to the server log, never
to the client). Starlette is imported by `create_app`, so this module imports without the
`serve` extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np

from mlcli.reporting import Reporter
from mlcli.serving.batching import Batcher, Columns, QueueFullError
from mlcli.serving.metrics import REST, UNMATCHED, V2, ServerMetrics
from mlcli.serving.payloads import (
    DEFAULT_MAX_ROWS,
    BadRequestError,
    PayloadTooLargeError,
    model_metadata,
    parse_predict,
    predict_response,
)
from mlcli.serving.versions import VERSION_HEADER, LiveVersion, ModelVersions

if TYPE_CHECKING:
    from mlcli.serving.servables import Servable


DEFAULT_BODY_TIMEOUT_S = 30.0
_REQUEST_ID = "mlcli.request_id"  # the scope key AccessLog sets and the error answers read
_ROUTE = "mlcli.route"  # the scope key of the matched route's template, for the metrics
# /docs: its own inline script and style, and requests to this server; nothing from elsewhere
_DOCS_POLICY = "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'"
# a path is logged percent-encoded: no control character, space or quote reaches the log
_LOGGED_PATH_SAFE = "/:@!$&'()*+,;=~"


class RequestTimeoutError(BadRequestError):
    """A body that did not arrive within the body read timeout (408)."""

    status = 408


class ClientGoneError(BadRequestError):
    """The client closed its connection before its body arrived (499, never sent)."""

    status = 499


class OverloadedError(BadRequestError):
    """The batcher's queue is full (503)."""

    status = 503


class ModelFailedError(Exception):
    """The model failed on a request (500); the server log names it by `identifier`."""

    def __init__(self, identifier: str) -> None:
        super().__init__(identifier)
        self.identifier = identifier


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Any:
    from starlette.responses import Response

    content = json.dumps(body, separators=(",", ":")).encode()
    return Response(content, status_code=status, media_type="application/json", headers=headers)


def request_id(scope: Any) -> str:
    """The id of `scope`'s request in the server log, made when a failure first asks for it."""
    if _REQUEST_ID not in scope:
        scope[_REQUEST_ID] = uuid.uuid4().hex[:16]
    return str(scope[_REQUEST_ID])


def logged_path(path: str) -> str:
    """`path` percent-encoded, so that a decoded newline or space cannot forge a log line."""
    return quote(path, safe=_LOGGED_PATH_SAFE)


async def read_body(request: Any, limit: int, timeout_s: float) -> bytes:
    """The body, refused with 413 as soon as its declared or received size passes `limit`,
    and with 408 when it has not all arrived `timeout_s` after the request's headers."""
    from starlette.requests import ClientDisconnect

    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequestError(f"Content-Length {declared!r} is not a number of bytes")
        if int(declared) > limit:
            raise PayloadTooLargeError(f"the body has {declared} bytes, the limit is {limit}")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLargeError(f"the body passes the limit of {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeoutError(
            f"the body did not arrive within {timeout_s:g} s (--body-timeout); {size} bytes came"
        ) from None
    except ClientDisconnect:
        raise ClientGoneError("the client closed the connection before its body arrived") from None
    return b"".join(chunks)


class AccessLog:
    """ASGI middleware: one `request` event per HTTP request through the reporter, and (given
    `metrics`) the request counted by route, protocol and status with its latency.

    It gives each request its id, and turns an error no handler answered into one warning line
    naming that id (uvicorn would print a traceback): the server goes on.
    """

    def __init__(self, app: Any, reporter: Reporter, metrics: ServerMetrics | None = None) -> None:
        self.app = app
        self.reporter = reporter
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        started = False

        async def send_status(message: Any) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except Exception as error:  # a bug in a handler: this request fails, the server goes on
            identifier = request_id(scope)
            self.reporter.warning(
                f"request {identifier}: internal error: {type(error).__name__}: {error}"
            )
            if not started:
                await _internal_error(identifier)(scope, receive, send_status)
        finally:
            seconds = time.perf_counter() - start
            client = scope.get("client") or ("-", 0)
            self.reporter.event(
                "request",
                client=f"{client[0]}:{client[1]}",
                method=scope["method"],
                path=logged_path(scope["path"]),
                status=status,
                ms=round(seconds * 1000, 2),
                **({"request_id": request_id(scope)} if status >= 500 else {}),
            )
            if self.metrics is not None:
                route = scope.get(_ROUTE, UNMATCHED)
                protocol = V2 if route.startswith("/v2") else REST
                self.metrics.observe_request(route, protocol, status, seconds)


def _internal_error(identifier: str, what: str = "the server failed") -> Any:
    return _json(
        {"error": f"{what} on this request; the server log names it {identifier}"},
        500,
        headers={"x-request-id": identifier},
    )


def _labelled_route() -> Any:
    """Starlette's `Route`, leaving its template in the scope of each request it takes (also
    those it answers 405), where `AccessLog` reads it for the metrics."""
    from starlette.routing import Match, Route

    class LabelledRoute(Route):
        def matches(self, scope: Any) -> tuple[Match, Any]:
            match, child_scope = super().matches(scope)
            if match is not Match.NONE:
                child_scope[_ROUTE] = self.path_format
            return match, child_scope

    return LabelledRoute


class _ModelName:
    """A model name or version in a path: anything but `/` and `:` (`name:predict` is a verb)."""

    regex = "[^/:]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


def create_app(
    servable: Servable,
    *,
    batcher: Batcher,
    max_body_bytes: int,
    max_rows: int = DEFAULT_MAX_ROWS,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    reporter: Reporter | None = None,
    metrics: ServerMetrics | None = None,
    versions: ModelVersions | None = None,
) -> Any:
    """The ASGI app serving `servable`; its lifespan starts and stops `batcher`.

    With `versions`, the app serves those (`servable` and `batcher` are then its newest
    version's): its lifespan starts them, with their poller, and stops them.

    Args:
        servable: the model, its name, version and signature.
        batcher: gathers the predict requests into model calls.
        max_body_bytes: the largest body (413 above).
        max_rows: the most rows in one predict request (413 above).
        body_timeout_s: how long after its headers a body may take to arrive (408 after).
        reporter: where a failed model call is logged, under the request's id.
        metrics: what `GET /metrics` shows (that route is there only with them); the app
            records the rows predicted, its versions the load and warm-up times.
        versions: the model's live versions (`serving.versions`); by default `servable`
            alone, answered by `batcher`.
    """
    from starlette.applications import Starlette
    from starlette.convertors import register_url_convertor
    from starlette.exceptions import HTTPException
    from starlette.responses import HTMLResponse, Response

    from mlcli.serving.openapi import docs_page, openapi_document
    from mlcli.serving.v2 import v2_routes

    register_url_convertor("model", _ModelName())  # type: ignore[arg-type]
    log = reporter or Reporter()
    versions = versions or ModelVersions.single(servable, batcher, reporter=log, metrics=metrics)
    descriptions: dict[str, bytes] = {}  # by version: a new version may have other columns
    page = docs_page(servable.name)

    def requested(request: Any) -> tuple[str | None, str]:
        """The version the path pins (None: the newest), and the model's name."""
        return request.path_params.get("version"), request.path_params["name"]

    def check_model(request: Any) -> Servable:
        version, name = requested(request)
        return versions.get(version, name=name)

    async def healthz(request: Any) -> Any:
        return _json({"status": "ok"})

    async def status(request: Any) -> Any:
        version, name = requested(request)
        return _json({"model_version_status": versions.status(version, name=name)})

    async def metadata(request: Any) -> Any:
        served = check_model(request)
        return _json(
            model_metadata(served.name, served.version, served.signature),
            headers={VERSION_HEADER: served.version},
        )

    async def body_of(request: Any) -> bytes:
        # read before it counts as arriving: a slow body never holds a batch back
        return await read_body(request, max_body_bytes, body_timeout_s)

    async def run_model(request: Any, live: LiveVersion, columns: Columns, rows: int) -> np.ndarray:
        """The outputs of version `live` for a request's rows, through its batcher; every
        protocol's."""
        try:
            outputs = await live.batcher.submit(columns, rows=rows)
        except QueueFullError as error:
            raise OverloadedError(f"the server is overloaded: {error}; retry later") from None
        except Exception as error:  # the model failed: this request fails, the server goes on
            identifier = request_id(request.scope)
            log.warning(f"request {identifier}: the model failed: {type(error).__name__}: {error}")
            raise ModelFailedError(identifier) from None
        if metrics is not None:
            metrics.observe_predicted(live.servable.name, live.servable.version, rows)
        return outputs

    async def predict(request: Any) -> Any:
        check_model(request)  # an unknown model or version is refused before its body is read
        body = await body_of(request)
        version, name = requested(request)
        with versions.acquire(version, name=name) as live:
            served = live.servable
            with live.batcher.arriving():
                parsed = parse_predict(body, served.signature, max_rows=max_rows)
            outputs = await run_model(request, live, parsed.columns, parsed.rows)
        return _json(
            predict_response(outputs, served.signature, columnar=parsed.columnar),
            headers={VERSION_HEADER: served.version},
        )

    async def scrape(request: Any) -> Any:
        assert metrics is not None
        body, content_type = metrics.exposition(request.headers.get("accept", ""))
        return Response(body, media_type=content_type)

    async def openapi(request: Any) -> Any:
        served = versions.get()
        if served.version not in descriptions:
            document = openapi_document(served, max_rows=max_rows, with_metrics=metrics is not None)
            descriptions[served.version] = json.dumps(document).encode()
        return Response(descriptions[served.version], media_type="application/json")

    async def docs(request: Any) -> Any:
        return HTMLResponse(page, headers={"content-security-policy": _DOCS_POLICY})

    async def bad_request(request: Any, error: Exception) -> Any:
        code = getattr(error, "status", 400)
        # a body left unread (or cut) cannot be followed by another request on the connection
        closing = {"connection": "close"} if code in (408, 413, 499) else None
        return _json({"error": str(error)}, code, headers=closing)

    async def http_error(request: Any, error: Exception) -> Any:
        assert isinstance(error, HTTPException)
        path = logged_path(request.url.path)
        return _json({"error": f"{request.method} {path}: {error.detail}"}, error.status_code)

    async def model_failed(request: Any, error: Exception) -> Any:
        assert isinstance(error, ModelFailedError)
        return _internal_error(error.identifier, "the model failed")

    async def server_error(request: Any, error: Exception) -> Any:
        return _internal_error(request_id(request.scope))

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await versions.start()  # warms each version's model thread up, then watches for more
        yield
        await versions.stop()
        if metrics is not None:
            metrics.close()

    Route = _labelled_route()
    model = "/v1/models/{name:model}"
    versioned = model + "/versions/{version:model}"
    routes = [Route("/healthz", healthz, methods=["GET"])]
    for prefix in (model, versioned):
        routes += [
            Route(prefix, status, methods=["GET"]),
            Route(prefix + "/metadata", metadata, methods=["GET"]),
            Route(prefix + ":predict", predict, methods=["POST"]),
        ]
    routes += v2_routes(
        Route,
        versions,
        read_body=body_of,
        run_model=run_model,
        max_rows=max_rows,
        max_body_bytes=max_body_bytes,
    )
    routes += [
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
    ]
    if metrics is not None:
        routes.append(Route("/metrics", scrape, methods=["GET"]))
    app = Starlette(
        routes=routes,
        exception_handlers={
            BadRequestError: bad_request,
            ModelFailedError: model_failed,
            HTTPException: http_error,
            Exception: server_error,
        },
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    app.state.versions = versions
    return app
