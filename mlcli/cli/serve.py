"""`mlcli serve`: options in, `mlcli.serving.server.serve` called until SIGTERM or SIGINT."""

from __future__ import annotations

from typing import Annotated

import typer

from mlcli.cli.boundary import run_guarded
from mlcli.cli.options import LogFormatOption, Quiet, Verbose, reporter

ModelArgument = Annotated[
    str,
    typer.Argument(help="A run directory or run name, or a SavedModel folder from `mlcli export`."),
]
HostOption = Annotated[str, typer.Option("--host", help="Address to listen on.")]
PortOption = Annotated[int, typer.Option("--port", help="Port (0: any free port).")]
NameOption = Annotated[
    str | None, typer.Option("--name", help="Model name in URLs (default: the run's name).")
]
WorkersOption = Annotated[
    int, typer.Option("--workers", help="Server processes, each with its own model.")
]
MaxBatchSizeOption = Annotated[
    int, typer.Option("--max-batch-size", help="Most rows per model call.")
]
BatchTimeoutOption = Annotated[
    float,
    typer.Option(
        "--batch-timeout-ms", help="Longest wait for requests being read to join a batch."
    ),
]
MaxBodyBytesOption = Annotated[
    int, typer.Option("--max-body-bytes", help="Largest request body (413 above).")
]


def serve(
    model: ModelArgument,
    host: HostOption = "127.0.0.1",
    port: PortOption = 8501,
    name: NameOption = None,
    workers: WorkersOption = 1,
    max_batch_size: MaxBatchSizeOption = 256,
    batch_timeout_ms: BatchTimeoutOption = 1.0,
    max_body_bytes: MaxBodyBytesOption = 4 * 1024 * 1024,
    quiet: Quiet = False,
    verbose: Verbose = False,
    log_format: LogFormatOption = "text",
) -> None:
    """Serve MODEL on TensorFlow Serving's REST API until SIGTERM; one log line per request."""

    def action() -> None:
        from mlcli.serving.server import ServeOptions
        from mlcli.serving.server import serve as serve_model

        # the access log is one line per request, never a progress bar
        access_log = reporter(quiet, log_format, interactive=False)
        options = ServeOptions(
            host=host,
            port=port,
            name=name,
            workers=workers,
            max_batch_size=max_batch_size,
            batch_timeout_ms=batch_timeout_ms,
            max_body_bytes=max_body_bytes,
        )
        serve_model(model, options=options, reporter=access_log, verbose=verbose)

    run_guarded(action, verbose=verbose)
