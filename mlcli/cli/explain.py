"""`mlcli explain`: options in, `mlcli.evaluation.explain.explain` called, the ranking printed
(a rich table on a terminal, one plain line per column otherwise, one JSON document with
`--json`), then the folder written."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from mlcli.cli.boundary import run_guarded
from mlcli.cli.options import (
    DataOption,
    DelimiterOption,
    HeaderOption,
    LogFormatOption,
    Quiet,
    RunArgument,
    SkipRowsOption,
    Verbose,
    csv_overrides,
    model_reporter,
)

if TYPE_CHECKING:
    from mlcli.evaluation.explanation import Explanation

RowsOption = Annotated[
    int,
    typer.Option(
        "--rows", help="Also explain the first N rows one by one with SHAP (mlcli[explain])."
    ),
]
SampleOption = Annotated[
    int, typer.Option("--sample", help="Measure on at most this many labelled rows, at random.")
]
RepeatsOption = Annotated[int, typer.Option("--repeats", help="Shuffles of each column.")]
MetricOption = Annotated[
    str | None,
    typer.Option("--metric", help="The metric to worsen (default: log_loss, or rmse)."),
]
SeedOption = Annotated[
    int | None, typer.Option("--seed", help="Seeds the sample and the shuffles (the run's).")
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document of the results, nothing else.")
]


def explain(
    run: RunArgument,
    data: DataOption,
    rows: RowsOption = 0,
    sample: SampleOption = 2000,
    repeats: RepeatsOption = 5,
    metric: MetricOption = None,
    seed: SeedOption = None,
    as_json: JsonOption = False,
    delimiter: DelimiterOption = None,
    skip_rows: SkipRowsOption = None,
    header: HeaderOption = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
    log_format: LogFormatOption = "text",
) -> None:
    """Rank RUN's raw columns by permutation importance on labelled data; writes
    explanations/<data>-<time>/ in the run."""

    def action() -> Explanation:
        progress = model_reporter(quiet, log_format, verbose=verbose)
        from mlcli.evaluation.explain import explain as run_explain

        return run_explain(
            run,
            data=data,
            rows=rows,
            sample=sample,
            repeats=repeats,
            metric=metric,
            seed=seed,
            csv_overrides=csv_overrides(delimiter, skip_rows, header),
            stdin=sys.stdin.buffer,
            reporter=progress,
        )

    result = run_guarded(action, verbose=verbose)
    if as_json:
        print(json.dumps(result.as_dict()))
        return
    if not quiet:
        from mlcli.cli import views

        console = views.table_console()
        if console.is_terminal:
            console.print(views.importance_table(result))
        else:
            for line in views.importance_lines(result):
                print(line)
    print(result.folder)
