"""TF Serving's gRPC API beside the REST one: `mlcli serve RUN --grpc-port PORT`.

```
tensorflow.serving.PredictionService/Predict            one TensorProto per column in, the
                                                        signature's outputs back
tensorflow.serving.PredictionService/GetModelMetadata   the signature_def map (and `mlcli`)
tensorflow.serving.ModelService/GetModelStatus          the served version, AVAILABLE
```

A client written with `tensorflow_serving.apis.prediction_service_pb2_grpc.PredictionServiceStub`
works unchanged. The messages are read and written by `serving.tensors`. The server is grpcio's
`grpc.aio` on the event loop that runs the REST app (uvicorn's), started and stopped by the app's
lifespan (`with_grpc`), so that its calls share the REST side's `Batcher` (one model call for the
requests of both), its row limit, and its metrics (`protocol="grpc"`, `route` the method's path,
`status` the gRPC code's name) and access log. A message over `--max-body-bytes` is refused by
gRPC itself. Errors are gRPC status codes:

- INVALID_ARGUMENT: a bad input (column and row named), a signature other than
  `serving_default`, an unknown `output_filter` or metadata field;
- NOT_FOUND: a model name, version or version label this server does not serve;
- RESOURCE_EXHAUSTED: more rows than `--max-rows`, the batcher's queue full, a message over
  `--max-body-bytes`;
- UNAVAILABLE: the server is shutting down;
- UNIMPLEMENTED: Classify, Regress, MultiInference, HandleReloadConfigRequest;
- INTERNAL: the model failed (a request id in the message, the details in the server log).

With `--workers N` every worker binds the port with `SO_REUSEPORT` and the kernel spreads the
connections. grpcio and tensorflow-serving-api come with `mlcli[grpc]`; importing the latter
imports TensorFlow, which the server has already done quietly.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from mlcli._tensorflow import import_tensorflow, quiet_runtime
from mlcli.errors import ConfigError, missing_extra
from mlcli.reporting import Reporter
from mlcli.serving.payloads import BadRequestError

if TYPE_CHECKING:
    from mlcli.serving.batching import Batcher
    from mlcli.serving.metrics import ServerMetrics
    from mlcli.serving.servables import Servable

GRPC = "grpc"  # the metrics' protocol label
_CODES = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 413: "RESOURCE_EXHAUSTED"}


def require_grpc_packages() -> None:
    """Raises `ConfigError` unless the `grpc` extra is installed; imports nothing."""
    for module, package in (("grpc", "grpcio"), ("tensorflow_serving", "tensorflow-serving-api")):
        if importlib.util.find_spec(module) is None:
            raise missing_extra(
                "--grpc-port", f"grpcio and tensorflow-serving-api ({package} is missing)", "grpc"
            )


def check_grpc_options(*, port: int, grpc_port: int, workers: int) -> None:
    """Raises `ConfigError` for a `--grpc-port` that cannot work with the other options."""
    if grpc_port == port != 0:
        raise ConfigError(f"--grpc-port {grpc_port}: expected a port other than --port {port}")
    if grpc_port == 0 and workers > 1:
        raise ConfigError(
            f"--grpc-port 0 with --workers {workers}: each worker would take another free "
            "port; expected a fixed --grpc-port, which the workers share"
        )


def check_grpc_port(host: str, port: int) -> None:
    """Raises `ConfigError` when `host:port` is taken, before anything loads.

    gRPC binds when the app starts (on the server's event loop); this probe gives the early,
    one-line error that a busy REST port gets.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ConfigError(
                f"--host {host} --grpc-port {port}: cannot listen there "
                f"({error.strerror or error}); choose another --grpc-port"
            ) from None


def _peer(context: Any) -> str:
    peer = context.peer() or "-"
    return peer.split(":", 1)[1] if peer.startswith(("ipv4:", "ipv6:")) else peer


class GrpcServer:
    """The gRPC server of one app: binds, serves `servable` through `batcher`, and stops.

    Args:
        servable: the model, its name, version and signature.
        batcher: the REST app's batcher (started before `start`, stopped after `stop`).
        host, port: where to listen (port 0: any free port; `port` holds it once started).
        max_rows: the most rows in one Predict request (RESOURCE_EXHAUSTED above).
        max_message_bytes: the largest request message (gRPC refuses larger ones).
        reuse_port: bind with `SO_REUSEPORT`, for several worker processes on one port.
        grace_s: how long `stop` lets calls in flight finish.
        reporter: the access log (one `request` event per call) and failed model calls.
        metrics: the REST app's metrics, which count the calls with `protocol="grpc"`.
    """

    def __init__(
        self,
        servable: Servable,
        *,
        batcher: Batcher,
        host: str,
        port: int,
        max_rows: int,
        max_message_bytes: int,
        reuse_port: bool = False,
        grace_s: float = 10.0,
        reporter: Reporter | None = None,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.servable = servable
        self.batcher = batcher
        self.host = host
        self.port = port
        self.max_rows = max_rows
        self.max_message_bytes = max_message_bytes
        self.reuse_port = reuse_port
        self.grace_s = grace_s
        self.reporter = reporter or Reporter()
        self.metrics = metrics
        self.stopping = False
        self._server: Any = None

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def start(self) -> None:
        """Binds and starts serving on the running event loop.

        Raises `ConfigError` when the address cannot be bound.
        """
        # grpcio's C core logs to fd 2 (past the JSON log); it reads this once, at import
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
        import_tensorflow()  # tensorflow_serving's protos import TensorFlow: quietly first
        from grpc import aio
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        from mlcli.serving.grpc_services import ModelService, PredictionService

        server = aio.server(
            options=[
                ("grpc.so_reuseport", 1 if self.reuse_port else 0),
                ("grpc.max_receive_message_length", self.max_message_bytes),
            ]
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionService(self), server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(self), server)
        try:
            with quiet_runtime(verbose=False):
                self.port = server.add_insecure_port(self.address)
        except RuntimeError:
            raise ConfigError(
                f"--host {self.host} --grpc-port {self.port}: cannot listen there; "
                "choose another --grpc-port"
            ) from None
        await server.start()
        self._server = server
        name = self.servable.name
        self.reporter.event(
            "serving",
            f"model {name} over gRPC at {self.address}",
            model=name,
            grpc=self.address,
        )

    async def stop(self) -> None:
        """Refuses new calls (UNAVAILABLE) and lets those in flight finish, within `grace_s`."""
        self.stopping = True
        if self._server is not None:
            await self._server.stop(self.grace_s)
            self._server = None

    def observed(
        self, method: str, handler: Callable[[Any, Any], Awaitable[Any]]
    ) -> Callable[[Any, Any], Awaitable[Any]]:
        """`handler` answering errors with their gRPC codes, logged and counted as `method`."""
        from grpc import StatusCode

        from mlcli.serving.grpc_services import RpcError

        route = method

        @functools.wraps(handler)
        async def call(request: Any, context: Any) -> Any:
            start = time.perf_counter()
            code, message = "OK", ""
            try:
                if self.stopping:
                    raise RpcError("UNAVAILABLE", "the server is shutting down; retry elsewhere")
                return await handler(request, context)
            except asyncio.CancelledError:  # the client left or its deadline passed
                code = "CANCELLED"
                raise
            except RpcError as error:
                code, message = error.code, str(error)
            except BadRequestError as error:
                code, message = _CODES.get(error.status, "INVALID_ARGUMENT"), str(error)
            except Exception as error:  # a bug: this call fails, the server goes on
                identifier = uuid.uuid4().hex[:16]
                self.reporter.warning(
                    f"request {identifier}: internal error: {type(error).__name__}: {error}"
                )
                code = "INTERNAL"
                message = f"the server failed on this request; the server log names it {identifier}"
            finally:
                seconds = time.perf_counter() - start
                self.reporter.event(
                    "request",
                    client=_peer(context),
                    protocol=GRPC,
                    path=route,
                    status=code,
                    ms=round(seconds * 1000, 2),
                )
                if self.metrics is not None:
                    self.metrics.observe_request(route, GRPC, code, seconds)
            await context.abort(StatusCode[code], message)

        return call


def with_grpc(app: Any, server: GrpcServer) -> Any:
    """`app` (ASGI) whose lifespan also starts `server` once the app has started (its batcher
    running) and stops it when the app is asked to stop, before the app stops its batcher."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return

        async def receive_stopping() -> Any:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await server.stop()
            return message

        async def send_started(message: Any) -> None:
            if message["type"] == "lifespan.startup.complete":
                try:
                    await server.start()
                except ConfigError as error:
                    message = {"type": "lifespan.startup.failed", "message": f"error: {error}"}
            await send(message)

        await app(scope, receive_stopping, send_started)

    return wrapped
