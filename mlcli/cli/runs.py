"""`mlcli runs` (`runs list`) and `mlcli runs show`: options in, `mlcli.runs.listing` called,
a table or JSON printed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from mlcli.cli.boundary import run_guarded
from mlcli.cli.options import LogFormatOption, Quiet, Verbose


class RunsGroup(TyperGroup):
    """`mlcli runs [NAME]` lists runs (the `list` command); `mlcli runs show RUN` shows one."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["list", *args]
        return super().parse_args(ctx, args)


RunsDir = Annotated[
    Path | None, typer.Option("--dir", help="The runs folder (default: $MLCLI_RUNS_DIR or runs).")
]
JsonOutput = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
NameArgument = Annotated[str | None, typer.Argument(help="Only the runs of this name.")]
RunArgument = Annotated[
    str, typer.Argument(help="A run directory, a run name (its latest) or an id.")
]
DiffOption = Annotated[
    str | None, typer.Option("--diff", help="Another run: config and metric differences.")
]


def runs_list(
    name: NameArgument = None,
    runs_dir: RunsDir = None,
    as_json: JsonOutput = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    log_format: LogFormatOption = "text",
) -> None:
    """List runs: name, id, status, start, duration and headline metrics (`mlcli runs`)."""
    from mlcli.runs.listing import list_runs, runs_folder

    found = run_guarded(lambda: list_runs(runs_dir, name=name), verbose=verbose)
    if as_json or log_format == "json":
        print(json.dumps([run.to_dict() for run in found]))
    elif not quiet:
        from mlcli.cli import views

        title = f"{runs_folder(runs_dir)}: {len(found)} run{'s' * (len(found) != 1)}"
        views.table_console().print(views.runs_table(found, title=title))


def runs_show(
    run: RunArgument,
    diff: DiffOption = None,
    runs_dir: RunsDir = None,
    as_json: JsonOutput = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    log_format: LogFormatOption = "text",
) -> None:
    """Show one run's status, metrics and artifacts, and with --diff its differences."""
    from mlcli.runs.listing import run_details

    details = run_guarded(lambda: run_details(run, runs_dir=runs_dir, diff=diff), verbose=verbose)
    if as_json or log_format == "json":
        print(json.dumps(details, default=str))
    elif not quiet:
        from mlcli.cli import views

        views.table_console().print(views.details_view(details))
