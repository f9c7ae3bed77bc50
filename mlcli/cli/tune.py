"""`mlcli tune`: options in, `mlcli.training.tune.tune` called, the trials and the best
config's path printed. `--ray [ADDRESS] [--parallel K]` runs the trials on Ray
(`mlcli.training.tune_ray`); `--parallel` without `--ray` is a usage error (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlcli.cli.boundary import run_guarded
from mlcli.cli.options import (
    LogFormatOption,
    Overrides,
    Quiet,
    RayOption,
    RunsOutput,
    Verbose,
    reporter,
)

if TYPE_CHECKING:
    from mlcli.training.tune import TuneResult

TuneConfigArgument = Annotated[
    Path, typer.Argument(help="The YAML config, with a `tune:` section.")
]
TrialsOption = Annotated[int, typer.Option("--trials", min=1, help="How many trials.")]
TimeoutOption = Annotated[
    float | None,
    typer.Option("--timeout", min=1, help="Start no new trial after this many seconds."),
]
DeviceOption = Annotated[str | None, typer.Option("--device", help="auto, cpu or gpu.")]
ParallelOption = Annotated[
    int | None,
    typer.Option(
        "--parallel",
        min=1,
        help="With --ray: trials at once [default: one per CPU of the cluster, at most --trials].",
        show_default=False,
    ),
]


def tune(
    config: TuneConfigArgument,
    trials: TrialsOption = 10,
    timeout: TimeoutOption = None,
    overrides: Overrides = None,
    output: RunsOutput = None,
    device: DeviceOption = None,
    ray: RayOption = None,
    parallel: ParallelOption = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
    log_format: LogFormatOption = "text",
) -> None:
    """Search the ranges in CONFIG's `tune:` section, one run per trial; prints the best
    config's path as the last line. With --ray the trials run on Ray, K at a time."""

    def action() -> TuneResult:
        from mlcli.training.tune import tune as tune_config

        return tune_config(
            config,
            trials=trials,
            timeout=timeout,
            overrides=overrides or [],
            output_dir=output,
            device=device,
            ray=ray,
            parallel=parallel,
            reporter=reporter(quiet, log_format),
            verbose=verbose,
        )

    result = run_guarded(action, verbose=verbose)
    if log_format == "json":
        print(json.dumps({"best_config": str(result.best_config), "best": vars(result.best)}))
    elif not quiet:
        from mlcli.cli import views

        views.table_console().print(views.trials_table(result))
    print(result.best_config)
