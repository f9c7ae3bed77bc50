"""`mlcli init`: options in, `mlcli.starter.init.init` called, what it inferred printed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mlcli.cli.boundary import run_guarded
from mlcli.cli.options import LogFormatOption, Quiet, Verbose

DataArgument = Annotated[Path, typer.Argument(help="A CSV/TSV (maybe compressed) or Parquet file.")]
TargetOption = Annotated[
    str, typer.Option("--target", "-t", help="The column to predict, or its 0-based number.")
]
TaskOption = Annotated[
    str | None, typer.Option("--task", help="binary, multiclass or regression (inferred).")
]
OutputOption = Annotated[Path, typer.Option("--output", "-o", help="Where the config is written.")]
ColumnsOption = Annotated[
    str | None, typer.Option("--columns", help="Comma-separated names for a headerless CSV.")
]
PresetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--preset",
        "-p",
        help="A preset (models/resnet, training/fast, data/tsv, ...) or a YAML file, relative "
        "to the written config, that it extends; repeatable. The keys it sets are left out.",
    ),
]
ForceOption = Annotated[bool, typer.Option("--force", help="Overwrite an existing config.")]


def init(
    data: DataArgument,
    target: TargetOption,
    task: TaskOption = None,
    output: OutputOption = Path("config.yaml"),
    columns: ColumnsOption = None,
    preset: PresetOption = None,
    force: ForceOption = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    log_format: LogFormatOption = "text",
) -> None:
    """Write a commented starting config for DATA from a sample of its rows; trains nothing."""
    from mlcli.starter.init import init as init_config
    from mlcli.starter.init import report_dict

    names = [name.strip() for name in columns.split(",")] if columns else None
    report = run_guarded(
        lambda: init_config(
            data,
            target=target,
            task=task,
            output=output,
            columns=names,
            presets=preset or [],
            force=force,
        ),
        verbose=verbose,
    )
    if log_format == "json":
        print(json.dumps(report_dict(report), default=str))
        return
    if not quiet:
        from mlcli.cli import views

        views.table_console().print(views.init_table(report))
    print(report.config_path)
