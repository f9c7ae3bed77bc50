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
    RayOption,
    RunArgument,
    SkipRowsOption,
    ThresholdOption,
    Verbose,
    csv_overrides,
    model_reporter,
)

if TYPE_CHECKING:
    from mlcli.inference.predict import PredictionSummary
    from mlcli.inference.ray_predict import RayPredictionSummary

OutputOption = Annotated[
    str,
    typer.Option(
        "--output", "-o", help="File (.csv .parquet .jsonl) or - for stdout; with --ray a folder."
    ),
]
ActorsOption = Annotated[
    int | None,
    typer.Option("--actors", help="With --ray: predicting actors (default: CPUs but one a node)."),
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
    ray: RayOption = None,
    actors: ActorsOption = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
    log_format: LogFormatOption = "text",
) -> None:
    """Predict every row of the data with RUN, streaming; writes OUTPUT as it goes.

    The drift of each input column from the training data goes to OUTPUT.drift.json.
    With --ray, a Ray cluster predicts into the folder OUTPUT, one part file per write task.
    """
    if ray is not None:
        _predict_on_ray(
            run,
            data=data,
            output=output,
            ray=ray,
            keep=keep or [],
            batch_size=batch_size,
            threshold=threshold,
            output_format=output_format,
            force=force,
            actors=actors,
            fail_on_drift=fail_on_drift,
            csv_options=csv_overrides(delimiter, skip_rows, header),
            quiet=quiet,
            verbose=verbose,
            log_format=log_format,
        )
        return
    if actors is not None:
        run_guarded(_actors_without_ray, verbose=verbose)

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


def _actors_without_ray() -> None:
    from mlcli.errors import ConfigError

    raise ConfigError("--actors: only with --ray (the local predict runs in this process)")


def _predict_on_ray(
    run: str,
    *,
    data: str,
    output: str,
    ray: str,
    keep: list[str],
    batch_size: int,
    threshold: float | None,
    output_format: str | None,
    force: bool,
    actors: int | None,
    fail_on_drift: float | None,
    csv_options: dict[str, object],
    quiet: bool,
    verbose: bool,
    log_format: str,
) -> None:
    def action() -> RayPredictionSummary:
        from mlcli.errors import ConfigError

        if output == "-":
            raise ConfigError("--output -: --ray writes a folder of part files, not stdout")
        if fail_on_drift is not None:
            raise ConfigError("--fail-on-drift: not with --ray (no drift report is computed)")
        progress = model_reporter(quiet, log_format, verbose=verbose)
        from mlcli.inference.ray_predict import predict_on_ray

        return predict_on_ray(
            run,
            data=data,
            output=output,
            address=ray,
            keep=keep,
            batch_size=batch_size,
            threshold=threshold,
            format=output_format,
            force=force,
            actors=actors,
            csv_overrides=csv_options,
            reporter=progress,
        )

    summary = run_guarded(action, verbose=verbose)
    print(summary.output)
