"""`mlcli serve`: options in, `mlcli.serving.server.serve` called until SIGTERM or SIGINT."""

from __future__ import annotations

from typing import Annotated

import typer

from mlcli.cli.boundary import run_guarded
from mlcli.cli.options import LogFormatOption, Quiet, Verbose, reporter

ModelArgument = Annotated[
    str,
    typer.Argument(
        help="A run directory or run name, a SavedModel folder from `mlcli export`, or a "
        "folder of numbered versions (new versions are loaded and swapped in live)."
    ),
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
        "--batch-timeout-ms",
        help="Longest wait for requests being parsed to join a batch (never for a body "
        "still arriving).",
    ),
]
MaxBodyBytesOption = Annotated[
    int, typer.Option("--max-body-bytes", help="Largest request body (413 above).")
]
MaxRowsOption = Annotated[
    int, typer.Option("--max-rows", help="Most rows in one predict request (413 above).")
]
HeaderTimeoutOption = Annotated[
    float,
    typer.Option(
        "--header-timeout", help="Seconds a connection may take to send a request's headers."
    ),
]
BodyTimeoutOption = Annotated[
    float,
    typer.Option("--body-timeout", help="Seconds a request's body may take to arrive (408)."),
]
MaxConnectionsOption = Annotated[
    int,
    typer.Option(
        "--max-connections",
        help="Open connections; past it the one idle longest is closed to make room.",
    ),
]
ShutdownTimeoutOption = Annotated[
    float,
    typer.Option(
        "--shutdown-timeout", help="Seconds SIGTERM waits for requests in flight, at most."
    ),
]
GrpcPortOption = Annotated[
    int | None,
    typer.Option(
        "--grpc-port",
        help="Also serve TF Serving's gRPC API (Predict, GetModelMetadata, GetModelStatus) on "
        "this port of --host (0: any free port; needs mlcli[grpc]).",
    ),
]
TrustExportOption = Annotated[
    bool,
    typer.Option(
        "--trust-export",
        help="Serve a SavedModel that `mlcli export` did not write or that changed since: "
        "loading it runs its graph, so only for a folder you trust.",
    ),
]
KeepVersionsOption = Annotated[
    int,
    typer.Option(
        "--keep-versions",
        help="How many of the newest numbered versions stay loaded and can be pinned.",
    ),
]
PollSecondsOption = Annotated[
    float,
    typer.Option("--poll-seconds", help="How often a folder of numbered versions is looked at."),
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
    max_rows: MaxRowsOption = 10_000,
    header_timeout: HeaderTimeoutOption = 10.0,
    body_timeout: BodyTimeoutOption = 30.0,
    max_connections: MaxConnectionsOption = 512,
    shutdown_timeout: ShutdownTimeoutOption = 10.0,
    trust_export: TrustExportOption = False,
    grpc_port: GrpcPortOption = None,
    keep_versions: KeepVersionsOption = 1,
    poll_seconds: PollSecondsOption = 1.0,
    quiet: Quiet = False,
    verbose: Verbose = False,
    log_format: LogFormatOption = "text",
) -> None:
    """Serve MODEL on TF Serving's REST API (+ /metrics, /docs, --grpc-port) until SIGTERM."""

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
            max_rows=max_rows,
            header_timeout_s=header_timeout,
            body_timeout_s=body_timeout,
            max_connections=max_connections,
            graceful_timeout_s=shutdown_timeout,
            trust_export=trust_export,
            grpc_port=grpc_port,
            keep_versions=keep_versions,
            poll_seconds=poll_seconds,
        )
        serve_model(model, options=options, reporter=access_log, verbose=verbose)

    run_guarded(action, verbose=verbose)
