"""The command line: each command parses its options, calls one library function, reports.

This is the only module that prints results or exits. `run_guarded` is the one error boundary:
mlcli's own errors become one line on stderr and their exit code (DESIGN.md), anything else
is exit 1 with a request for a bug report, and tracebacks show only with `--verbose`.
"""

from __future__ import annotations

import json
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from mlcli import __version__
from mlcli.errors import MlcliError
from mlcli.reporting import LogFormat, Reporter, make_reporter

app = typer.Typer(
    name="mlcli",
    help="Train, evaluate, predict, export and serve Keras models on tables, from one YAML config.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

T = TypeVar("T")

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


def _stderr() -> Console:
    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def _stdout() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _reporter(quiet: bool, log_format: str) -> Reporter:
    if log_format not in ("text", "json"):
        raise MlcliErrorUsage(f"--log-format: expected text or json, found {log_format!r}")
    fmt: LogFormat = "json" if log_format == "json" else "text"
    return make_reporter(quiet=quiet, log_format=fmt, interactive=sys.stdout.isatty())


class MlcliErrorUsage(MlcliError):
    """A bad command-line value (exit 2)."""

    exit_code = 2


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_guarded(action: Callable[[], T], *, verbose: bool) -> T:
    """Runs a command's action behind the error boundary."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return action()
    except MlcliError as error:
        if verbose:
            traceback.print_exc(file=sys.stderr)
        _stderr().print(f"error: {error}", markup=False)
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt:
        _stderr().print("error: interrupted", markup=False)
        raise typer.Exit(130) from None
    except typer.Exit:
        raise
    except Exception as error:
        if verbose:
            traceback.print_exc(file=sys.stderr)
        _stderr().print(
            f"internal error: {type(error).__name__}: {error}. This is a bug in mlcli; "
            "please report it with the output of the same command run with --verbose.",
            markup=False,
        )
        raise typer.Exit(1) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _version(value: bool) -> None:
    if value:
        print(f"mlcli {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """mlcli: from a YAML config and a table to a trained, served Keras model."""


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="The YAML config.")] = Path("config.yaml"),
    overrides: Overrides = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Runs folder instead of output.dir.")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue an interrupted (partial) run.")
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or gpu.")] = "auto",
    quiet: Quiet = False,
    verbose: Verbose = False,
    log_format: LogFormatOption = "text",
) -> None:
    """Train a model from CONFIG; prints the run directory as the last line."""

    def action() -> Path:
        from mlcli._tensorflow import import_tensorflow

        reporter = _reporter(quiet, log_format)
        if device not in ("auto", "cpu", "gpu") and not device.startswith("gpu:"):
            raise MlcliErrorUsage(f"--device: expected auto, cpu or gpu, found {device!r}")
        import_tensorflow(verbose=verbose)
        from mlcli.training import train as train_model

        return train_model(
            config,
            overrides=overrides or [],
            output_dir=output,
            resume=resume,
            device=device,
            reporter=reporter,
            verbose=verbose,
        )

    run = run_guarded(action, verbose=verbose)
    print(run)


@app.command()
def validate(
    config: Annotated[Path, typer.Argument(help="The YAML config.")],
    overrides: Overrides = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
    log_format: LogFormatOption = "text",
) -> None:
    """Check CONFIG and the header and first rows of its data; trains nothing."""
    from mlcli.validation import validate as validate_config

    report = run_guarded(
        lambda: validate_config(config, overrides=overrides or []), verbose=verbose
    )
    if log_format == "json":
        print(
            json.dumps(
                {
                    "config": str(config),
                    "valid": True,
                    "sample_rows": report.sample_rows,
                    "features": report.feature_types,
                    "excluded": report.excluded,
                }
            )
        )
        return
    if quiet:
        return
    table = Table(title=f"{config}: valid ({report.sample_rows} sample rows read)")
    table.add_column("column")
    table.add_column("feature type")
    for name, kind in report.feature_types.items():
        table.add_row(name, kind)
    for name, why in report.excluded.items():
        table.add_row(name, f"excluded: {why}")
    table.add_row(
        report.config.target.column, f"target ({report.config.target.task or 'inferred'})"
    )
    _stdout().print(table)


def main() -> None:
    """The console script's entry point."""
    app()
