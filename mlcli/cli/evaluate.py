"""`mlcli evaluate`: options in, `mlcli.evaluation.evaluate.run_evaluation` called, the metrics
printed; a missed `--fail-under`/`--fail-over` gate is exit 5 once they are printed."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from mlcli.cli.boundary import run_guarded
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
    from mlcli.evaluation.result import Evaluation

FailUnder = Annotated[
    list[str] | None,
    typer.Option("--fail-under", help="Exit 5 when METRIC falls under VALUE: auc=0.9."),
]
FailOver = Annotated[
    list[str] | None,
    typer.Option("--fail-over", help="Exit 5 when METRIC rises over VALUE: log_loss=0.4."),
]
JsonMetrics = Annotated[
    bool, typer.Option("--json", help="Print one flat JSON object of metrics, nothing else.")
]
Baseline = Annotated[
    str | None, typer.Option("--baseline", help="Another run to compare on the same data.")
]
ChooseThreshold = Annotated[
    str | None,
    typer.Option(
        "--choose-threshold",
        help="Binary: choose the threshold on this data: precision=P, recall=R, f1 or "
        "cost=FP:FN (exit 5 when none reaches P or R).",
    ),
]
SaveThreshold = Annotated[
    bool,
    typer.Option(
        "--save", help="Keep the chosen threshold in the run for predict, export and serve."
    ),
]
MaxRegression = Annotated[
    float | None,
    typer.Option("--max-regression", help="Exit 5 when the primary metric is this much worse."),
]


def evaluate(
    run: RunArgument,
    data: DataOption,
    fail_under: FailUnder = None,
    fail_over: FailOver = None,
    as_json: JsonMetrics = False,
    baseline: Baseline = None,
    max_regression: MaxRegression = None,
    fail_on_drift: FailOnDriftOption = None,
    threshold: ThresholdOption = None,
    choose_threshold: ChooseThreshold = None,
    save: SaveThreshold = False,
    delimiter: DelimiterOption = None,
    skip_rows: SkipRowsOption = None,
    header: HeaderOption = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
    log_format: LogFormatOption = "text",
) -> None:
    """Evaluate RUN on labelled data; writes evaluations/<data>-<time>/ in the run."""

    def action() -> Evaluation:
        progress = model_reporter(quiet, log_format, verbose=verbose)
        from mlcli.evaluation.evaluate import run_evaluation

        return run_evaluation(
            run,
            data=data,
            fail_under=fail_under or [],
            fail_over=fail_over or [],
            baseline=baseline,
            max_regression=max_regression,
            threshold=threshold,
            fail_on_drift=fail_on_drift,
            choose_threshold=choose_threshold,
            save_threshold=save,
            csv_overrides=csv_overrides(delimiter, skip_rows, header),
            stdin=sys.stdin.buffer,
            reporter=progress,
        )

    result = run_guarded(action, verbose=verbose)
    if as_json:
        print(json.dumps(result.flat()))
    else:
        if not quiet:
            from mlcli.cli import views

            views.stdout().print(views.evaluation_table(result))
            if result.chosen_threshold:
                views.stdout().print(views.threshold_table(result))
        print(result.folder)
    run_guarded(result.raise_for_gates, verbose=verbose)
