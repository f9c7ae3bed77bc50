"""`mlcli export`: options in, `mlcli.exporting.export.export` called, the folder printed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlcli.cli.boundary import run_guarded
from mlcli.cli.options import (
    LogFormatOption,
    Quiet,
    RunArgument,
    Verbose,
    model_reporter,
)

FormatOption = Annotated[
    str, typer.Option("--format", "-f", help="saved_model, keras, tflite or onnx.")
]
OutputOption = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="Export folder (default: RUN/exports/FORMAT)."),
]
VersionOption = Annotated[
    int, typer.Option("--version", help="saved_model: the version folder (TF Serving).")
]
ForceOption = Annotated[bool, typer.Option("--force", help="Replace an existing export.")]


def export_model(
    run: RunArgument,
    export_format: FormatOption,
    output: OutputOption = None,
    version: VersionOption = 1,
    force: ForceOption = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    log_format: LogFormatOption = "text",
) -> None:
    """Export RUN's model and check it in its own runtime; prints the export folder."""

    def action() -> Path:
        progress = model_reporter(quiet, log_format, verbose=verbose)
        from mlcli.exporting.export import export

        return export(
            run,
            format=export_format,
            output=output,
            version=version,
            force=force,
            reporter=progress,
            verbose=verbose,
        )

    print(run_guarded(action, verbose=verbose))
