"""The options that several commands share, declared once, and the Reporter they choose.

Every command takes `--quiet`, `--verbose` and `--log-format` (DESIGN.md): the `Quiet`,
`Verbose` and `LogFormatOption` aliases below are those options, and `reporter` turns them into
the `Reporter` that the command hands to its library function.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from mlcli.errors import MlcliErrorUsage
from mlcli.reporting import LogFormat, Reporter, make_reporter

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but results and errors.")]
Verbose = Annotated[
    bool, typer.Option("--verbose", "-v", help="Show TensorFlow's logs and tracebacks.")
]
LogFormatOption = Annotated[
    str, typer.Option("--log-format", help="Progress events as `text` or `json` lines.")
]
Overrides = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key: --set training.epochs=3 (repeatable)."),
]

# train, tune, validate and config show
ConfigArgument = Annotated[Path, typer.Argument(help="The YAML config.")]
RunsOutput = Annotated[
    Path | None, typer.Option("--output", "-o", help="Runs folder instead of output.dir.")
]

# evaluate, predict and export: a run; evaluate and predict: the data it reads, and how to
# read a CSV unlike the run's own
RunArgument = Annotated[str, typer.Argument(help="A run directory, or a run name under ./runs.")]
DataOption = Annotated[
    str, typer.Option("--data", "-d", help="CSV or Parquet file (or glob, folder); - is stdin.")
]
DelimiterOption = Annotated[
    str | None, typer.Option("--delimiter", help="CSV delimiter, instead of the run's.")
]
SkipRowsOption = Annotated[
    int | None, typer.Option("--skip-rows", help="Lines to skip before the header or data.")
]
HeaderOption = Annotated[
    bool | None,
    typer.Option(
        "--header/--no-header",
        help="Whether the CSV's first row names the columns (detected when not given).",
    ),
]
FailOnDriftOption = Annotated[
    float | None,
    typer.Option(
        "--fail-on-drift",
        metavar="PSI",
        help="Exit 5 when a column's population stability index passes PSI (e.g. 0.2).",
    ),
]
ThresholdOption = Annotated[
    float | None,
    typer.Option(
        "--threshold",
        help="Binary: positive when the probability is at or above it "
        "[default: the run's saved threshold, else 0.5].",
        show_default=False,
    ),
]


def csv_overrides(
    delimiter: str | None, skip_rows: int | None, header: bool | None
) -> dict[str, Any]:
    """`--delimiter`, `--skip-rows` and `--header` as the library's `csv_overrides`."""
    return {"delimiter": delimiter, "skip_rows": skip_rows, "header": header}


def log_format(value: str) -> LogFormat:
    """`--log-format`, checked: text or json."""
    if value not in ("text", "json"):
        raise MlcliErrorUsage(f"--log-format: expected text or json, found {value!r}")
    return "json" if value == "json" else "text"


def reporter(quiet: bool, log_format_value: str, *, interactive: bool | None = None) -> Reporter:
    """The reporter for the flags; a progress bar only when a person watches stdout.

    Raises `MlcliErrorUsage` (exit 2) for a `--log-format` other than text or json.
    """
    watched = sys.stdout.isatty() if interactive is None else interactive
    return make_reporter(quiet=quiet, log_format=log_format(log_format_value), interactive=watched)


def model_reporter(
    quiet: bool, log_format_value: str, *, verbose: bool, interactive: bool | None = None
) -> Reporter:
    """The reporter of a command that runs a model; TensorFlow is not imported here.

    The command's library function checks its arguments, paths and data's header first and
    imports TensorFlow only where it loads the model, quietly unless `verbose`.
    """
    from mlcli._tensorflow import set_verbose

    chosen = reporter(quiet, log_format_value, interactive=interactive)
    set_verbose(verbose)
    return chosen


# predict, tune and train: `--ray [ADDRESS]`. Typer has no option whose value may be left out,
# so the commands that take it parse with `RayCommand`, which reads a bare `--ray` (followed by
# nothing, another option or a word that is no address) as `--ray local`.
RayOption = Annotated[
    str | None,
    typer.Option(
        "--ray",
        metavar="[ADDRESS]",
        help="Run on Ray: alone (or `local`) a Ray instance on this machine; `auto` the "
        "cluster RAY_ADDRESS names; HOST:PORT or ray://HOST:PORT a cluster's head. "
        "Needs mlcli[ray].",
        show_default=False,
    ),
]


def bare_ray_flag(args: list[str]) -> list[str]:
    """`args` with every bare `--ray` written as `--ray=local` (see `RayOption`)."""
    from mlcli._ray import LOCAL, looks_like_address

    out: list[str] = []
    for index, arg in enumerate(args):
        following = args[index + 1] if index + 1 < len(args) else None
        if arg == "--ray" and (following is None or not looks_like_address(following)):
            out.append(f"--ray={LOCAL}")
        else:
            out.append(arg)
    return out


class RayCommand(TyperCommand):
    """A command with `--ray [ADDRESS]`: a bare `--ray` means `--ray local`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, bare_ray_flag(list(args)))
