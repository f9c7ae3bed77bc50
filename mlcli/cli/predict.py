"""`mlcli predict`: options in, `mlcli.inference.predict.predict` called, the output printed."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from mlcli.cli.boundary import run_guarded, stdout_closed
from mlcli.cli.options import (
    DataOption,
    DelimiterOption,
    FailOnDriftOption,
    HeaderOption,
    LogFormatOption,
    Quiet,
    RunArgument,
    SkipRowsOption,
    ThresholdOption,
    Verbose,
    csv_overrides,
    model_reporter,
)

if TYPE_CHECKING:
    from mlcli.inference.predict import PredictionSummary

OutputOption = Annotated[
    str, typer.Option("--output", "-o", help="File (.csv .parquet .jsonl) or - for stdout.")
]
KeepOption = Annotated[
    list[str] | None,
    typer.Option("--keep", help="An input column copied to the output (repeatable)."),
]
BatchSizeOption = Annotated[
    int,
    typer.Option(
        "--batch-size",
        help="Rows per batch and per Keras model call (ONNX Runtime: 2,048 at most).",
    ),
]
FormatOption = Annotated[
    str | None, typer.Option("--format", help="csv, parquet or jsonl (default: by suffix).")
]
ForceOption = Annotated[bool, typer.Option("--force", help="Replace an existing output.")]


def predict(
    run: RunArgument,
    data: DataOption,
    output: OutputOption,
    keep: KeepOption = None,
    batch_size: BatchSizeOption = 65536,
    threshold: ThresholdOption = None,
    output_format: FormatOption = None,
    force: ForceOption = False,
    fail_on_drift: FailOnDriftOption = None,
    delimiter: DelimiterOption = None,
    skip_rows: SkipRowsOption = None,
    header: HeaderOption = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
    log_format: LogFormatOption = "text",
) -> None:
    """Predict every row of the data with RUN, streaming; writes OUTPUT as it goes.

    The drift of each input column from the training data goes to OUTPUT.drift.json.
    """

    def action() -> PredictionSummary:
        # predictions may go to stdout: the progress bar follows stderr
        interactive = sys.stderr.isatty() and output != "-"
        progress = model_reporter(quiet, log_format, verbose=verbose, interactive=interactive)
        from mlcli.inference.predict import predict as predict_rows

        try:
            return predict_rows(
                run,
                data=data,
                output=sys.stdout.buffer if output == "-" else output,
                keep=keep or [],
                batch_size=batch_size,
                threshold=threshold,
                format=output_format,
                force=force,
                fail_on_drift=fail_on_drift,
                csv_overrides=csv_overrides(delimiter, skip_rows, header),
                stdin=sys.stdin.buffer,
                reporter=progress,
            )
        except BrokenPipeError:  # `| head` closed stdout: stop quietly, as Unix tools do
            stdout_closed()

    summary = run_guarded(action, verbose=verbose)
    if output != "-":
        print(summary.output)
