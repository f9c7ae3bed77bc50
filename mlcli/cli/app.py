"""The command line: the Typer app and its commands, in the order `mlcli --help` lists them.

Each command lives in a module of its own (`mlcli.cli.train`, ...) that parses its options and
calls one library function behind the error boundary of `mlcli.cli.boundary`; `main` is the
console script's entry point.
"""

from __future__ import annotations

from typing import Annotated

import typer

from mlcli import __version__
from mlcli.cli import (
    boundary,
    config,
    evaluate,
    explain,
    export,
    init,
    predict,
    runs,
    serve,
    train,
    tune,
    validate,
)
from mlcli.cli.options import RayCommand

app = typer.Typer(
    name="mlcli",
    help="Train, evaluate, predict, export and serve Keras models on tables, from one YAML config.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


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


app.command(cls=RayCommand)(train.train)
app.command()(validate.validate)
app.command()(evaluate.evaluate)
app.command(cls=RayCommand)(predict.predict)
app.command()(explain.explain)
app.command()(init.init)
app.command()(serve.serve)
app.command(cls=RayCommand)(tune.tune)
app.command(name="export")(export.export_model)

runs_app = typer.Typer(
    cls=runs.RunsGroup, help="List runs, newest first, and show or compare one run.", name="runs"
)
runs_app.command("list")(runs.runs_list)
runs_app.command("show")(runs.runs_show)
app.add_typer(runs_app)

config_app = typer.Typer(
    name="config",
    help="The config's JSON Schema, and a config as mlcli reads it.",
    no_args_is_help=True,
)
config_app.command("schema")(config.config_schema)
config_app.command("show")(config.config_show)
app.add_typer(config_app)


def main() -> None:
    """The console script's entry point: runs the app, then ends the process."""
    boundary.exit_process(app)
