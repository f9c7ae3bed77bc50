"""`mlcli serve`: a trained model over TensorFlow Serving's REST API, on uvicorn.

The routes are in `serving.routes`, the JSON bodies in `serving.payloads`, the compiled model in
`serving.servables`; requests that arrive together share one model call (`serving.batching`).
A folder of numbered versions is watched, and new versions swapped in live (`serving.versions`).
This module runs the server: it binds 127.0.0.1 unless told otherwise, bounds slow and idle
clients (`serving.limits`: header timeout, connection limit; `serving.routes`: body timeout,
row limit), and SIGTERM or SIGINT stops accepting connections, answers the requests in flight
within `graceful_timeout_s` and returns normally (exit 0, where uvicorn alone re-raises the
signal for 143).
With `workers` above 1, uvicorn's supervisor runs that many processes on the one socket, each
with its own model and batcher, and their metrics add up in prometheus_client's multiprocess
mode (`serving.metrics`). Starlette, uvicorn and prometheus_client come with `mlcli[serve]`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlcli.errors import ConfigError, MlcliError, RunError
from mlcli.reporting import JsonReporter, QuietReporter, Reporter, make_reporter
from mlcli.serving.batching import Batcher
from mlcli.serving.metrics import ServerMetrics, multiprocess_dir, shared_metrics_folder
from mlcli.serving.options import ServeOptions, require_server_packages
from mlcli.serving.routes import AccessLog, create_app

if TYPE_CHECKING:
    from mlcli.serving.servables import Servable
    from mlcli.serving.version_folders import InitialVersions


def _app(model: Servable | InitialVersions, options: ServeOptions, reporter: Reporter) -> Any:
    from mlcli.serving.version_folders import InitialVersions
    from mlcli.serving.versions import ModelVersions

    initial = model if isinstance(model, InitialVersions) else InitialVersions([model])

    # the workers of one server share a folder; a lone process counts in its own registry
    shared = multiprocess_dir() if options.workers > 1 else None
    metrics = ServerMetrics(max_batch_size=options.max_batch_size, multiprocess_dir=shared)

    def batcher_for(servable: Servable) -> Batcher:
        return Batcher(
            servable.call,
            max_rows=options.max_batch_size,
            timeout_s=options.batch_timeout_ms / 1000,
            max_queue=options.max_queue,
            on_batch=metrics.observe_batch,
            on_queue=lambda _: metrics.set_queue_depth(versions.depth),
        )

    versions = ModelVersions(
        initial,
        batcher_for=batcher_for,
        keep=options.keep_versions,
        poll_seconds=options.poll_seconds,
        trust_export=options.trust_export,
        reporter=reporter,
        metrics=metrics,
    )
    app = create_app(
        versions.latest.servable,
        batcher=versions.latest.batcher,
        versions=versions,
        max_body_bytes=options.max_body_bytes,
        max_rows=options.max_rows,
        body_timeout_s=options.body_timeout_s,
        reporter=reporter,
        metrics=metrics,
    )
    app = AccessLog(app, reporter, metrics)
    if options.grpc_port is not None:
        from mlcli.serving.grpc import GrpcServer, with_grpc

        grpc_server = GrpcServer(
            versions,
            host=options.host,
            port=options.grpc_port,
            max_rows=options.max_rows,
            max_message_bytes=options.max_body_bytes,
            reuse_port=options.workers > 1,
            grace_s=options.graceful_timeout_s,
            reporter=reporter,
            metrics=metrics,
        )
        app = with_grpc(app, grpc_server)
    return app


def _single_threaded_ops() -> None:
    # A tabular model's call on a batch of a few hundred rows is a graph of many tiny ops:
    # TensorFlow's thread pools cost more (spinning, hand-offs) than they save, and the event
    # loop needs the other core. The environment can still say otherwise.
    for variable in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ.setdefault(variable, "1")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets; without it a response
    # written in two parts waits for a delayed ACK (about 40 ms a request)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise ConfigError(
            f"--host {host} --port {port}: cannot listen there ({error.strerror or error}); "
            "choose another --port"
        ) from None
    sock.set_inheritable(True)
    return sock


def _uvicorn_config(app: Any, options: ServeOptions, *, verbose: bool, **extra: Any) -> Any:
    import uvicorn

    from mlcli.serving.limits import configure

    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        log_config=None,
        log_level="info" if verbose else "warning",
        access_log=False,  # AccessLog writes one line per request in mlcli's format
        lifespan="on",
        timeout_graceful_shutdown=math.ceil(options.graceful_timeout_s),
        **extra,
    )
    configure(config, options.connection_limits())
    return config


def _graceful_server(config: Any) -> Any:
    import uvicorn

    class GracefulServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn re-raises the signal once it has shut down gracefully, so the process
            # would end with 143; a server asked to stop that stopped cleanly has succeeded.
            signals = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return GracefulServer(config)


def _listening(reporter: Reporter, name: str, sock: socket.socket, options: ServeOptions) -> None:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/v1/models/{name}"
    reporter.event(
        "serving", f"model {name} at {url}", model=name, url=url, workers=options.workers
    )


def serve(
    model: str | Path,
    *,
    options: ServeOptions | None = None,
    reporter: Reporter | None = None,
    verbose: bool = False,
) -> None:
    """Serves a run's model until SIGTERM or SIGINT, then answers the requests in flight.

    Args:
        model: a run directory or run name, a SavedModel folder from `mlcli export`, or a
            folder of numbered SavedModel versions (watched for new ones: `serving.versions`).
        options: how the server listens and batches; `ServeOptions()` by default.
        reporter: where the access log (one event per request) and the start and stop go;
            plain text lines on stderr by default. With `options.workers` above 1 each worker
            process writes with a reporter of the same kind (quiet, JSON or plain text).
        verbose: show TensorFlow's and uvicorn's own logs.

    Raises:
        ConfigError: an option is out of range, the `serve` extra is missing, or the address
            is taken.
        RunError: the model cannot be loaded (by any worker).

    Example:

    ```python
    mlcli.serve("runs/adult-income/latest", options=ServeOptions(port=8501))
    ```
    """
    options = options or ServeOptions()
    options.check()
    require_server_packages()
    if options.grpc_port is not None:
        from mlcli.serving.grpc import check_grpc_port, require_grpc_packages

        require_grpc_packages()
        check_grpc_port(options.host, options.grpc_port)
    reporter = reporter or Reporter()
    if options.workers > 1:
        _serve_workers(model, options, reporter=reporter, verbose=verbose)
        return
    from mlcli._tensorflow import set_verbose

    # the reference and the address are checked before anything heavy loads
    _checked_reference(model, options)
    sock = _bind(options.host, options.port)
    try:
        _single_threaded_ops()
        set_verbose(verbose)  # TensorFlow loads only for a Keras model or a SavedModel
        initial = _load_versions(model, options)
    except BaseException:
        sock.close()
        raise
    reporter.event("inference", initial.servables[0].inference)
    app = _app(initial, options, reporter)
    config = _uvicorn_config(app, options, verbose=verbose)
    name = initial.servables[0].name
    _listening(reporter, name, sock, options)
    server = _graceful_server(config)
    server.run(sockets=[sock])
    if not server.started:  # the app's startup failed (uvicorn logged why): not a clean stop
        raise ConfigError(f"model {name}: the server did not start (see above)")
    reporter.event("stopped", f"model {name}: stopped")


def _load_versions(model: str | Path, options: ServeOptions) -> InitialVersions:
    from mlcli.serving.version_folders import load_versions

    return load_versions(
        model, name=options.name, trust_export=options.trust_export, keep=options.keep_versions
    )


_WORKER_ENV = "MLCLI_SERVE_WORKER"


def _reporter_settings(reporter: Reporter) -> dict[str, Any]:
    """The `make_reporter` arguments of a reporter like `reporter`, for a worker process."""
    if isinstance(reporter, QuietReporter):
        return {"quiet": True, "log_format": "text"}
    return {"quiet": False, "log_format": "json" if isinstance(reporter, JsonReporter) else "text"}


def _checked_reference(model: str | Path, options: ServeOptions) -> tuple[Path, str]:
    """The run or export folder `model` names, and the model's name; nothing is loaded.

    Raises `RunError` for no such run, an incomplete one, or an export that is not mlcli's
    unchanged own (unless `options.trust_export`).
    """
    from mlcli.runs.loading import open_run
    from mlcli.serving.servables import check_export, export_description, saved_model_folder
    from mlcli.serving.version_folders import check_base, model_base

    base = model_base(Path(model))
    if base is not None:  # its versions are checked as they load (each worker's own)
        newest, info = max(check_base(base).items())[1], {}
        with contextlib.suppress(RunError):  # named as `load_versions` names it
            info = export_description(newest)[1]
        return base, options.name or str(info.get("model_name") or base.name)
    export = saved_model_folder(Path(model))
    if export is not None:
        if not options.trust_export:
            check_export(export)
        info = export_description(export)[1]
        return export, options.name or str(info.get("model_name") or export.parent.name)
    loaded = open_run(model, with_model=False)
    return loaded.run.path, options.name or loaded.config.name


def _serve_workers(
    model: str | Path, options: ServeOptions, *, reporter: Reporter, verbose: bool
) -> None:
    """Several processes on one socket, each with its own model and batcher (uvicorn's)."""
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    # a bad reference fails here, before any worker starts
    source, name = _checked_reference(model, options)
    from mlcli.serving.servables import inference_before_workers

    reporter.event("inference", inference_before_workers(source))
    settings = {
        "model": str(source),
        "options": {**asdict(options), "name": name},
        "reporter": _reporter_settings(reporter),
        "verbose": verbose,
    }
    os.environ[_WORKER_ENV] = json.dumps(settings)
    _single_threaded_ops()
    config = _uvicorn_config(
        "mlcli.serving.server:app_from_environment",
        options,
        verbose=verbose,
        factory=True,
        workers=options.workers,
    )
    sock = _bind(options.host, options.port)
    _listening(reporter, name, sock, options)
    supervisor = Multiprocess(config, sockets=[sock])
    with shared_metrics_folder():
        supervisor.run()
    # uvicorn ends a worker whose startup failed with STARTUP_FAILURE, and then the others
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        raise RunError(f"{source}: a worker could not load the model; run with --workers 1")
    reporter.event("stopped", f"model {name}: stopped")


class FailedStartup:
    """An ASGI app that fails its lifespan startup with a message, and serves nothing.

    A worker that cannot load its model returns this instead of ending its own process:
    uvicorn prints the message and ends the worker with its startup-failure code, which
    `_serve_workers` turns into `RunError`.
    """

    def __init__(self, message: str) -> None:
        self.message = message

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            raise RuntimeError(f"{self.message} (the app did not start)")
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.failed", "message": self.message})
            elif event["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def app_from_environment() -> Any:
    """The app of one worker process, from the settings `_serve_workers` left in the environment.

    A model that does not load gives a `FailedStartup` app naming the error.
    """
    settings = json.loads(os.environ[_WORKER_ENV])
    from mlcli._tensorflow import set_verbose

    set_verbose(settings["verbose"])
    options = ServeOptions(**settings["options"])
    reporter = make_reporter(**settings["reporter"], interactive=False)
    try:
        initial = _load_versions(settings["model"], options)
    except MlcliError as error:
        return FailedStartup(f"error: {error}")
    return _app(initial, options, reporter)
