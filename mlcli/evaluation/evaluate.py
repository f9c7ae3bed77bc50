"""`mlcli evaluate`: a run's metrics on a labelled table, quality gates and a baseline.

The metrics are `evaluation.metrics`'s; the result is written to `evaluations/<data-name>-<time>/`
in the run (`mlcli.evaluation.report`).

```python
result = mlcli.evaluate("runs/adult-income", data="adult.test", fail_under=["auc=0.9"])
result.metrics["auc"]
```
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.compute as pc

from mlcli.data.columns import label_values
from mlcli.data.tables import TableSource
from mlcli.errors import ConfigError, DataError, QualityGateError, RunError
from mlcli.evaluation import thresholds
from mlcli.evaluation.metrics import (
    LOWER_IS_BETTER,
    PRIMARY_METRIC,
    compute_metrics,
    metric_names,
)
from mlcli.evaluation.result import Evaluation
from mlcli.evaluation.thresholds import Criterion, parse_criterion
from mlcli.features.build import encode_labels
from mlcli.features.drift import DriftMonitor
from mlcli.features.schema import FeatureSchema
from mlcli.inference.choice import choose_predictor, requested
from mlcli.inference.labels import BINARY_THRESHOLD, decision_threshold
from mlcli.inference.light import LightPredictor, Runner
from mlcli.reporting import QuietReporter, Reporter
from mlcli.runs.loading import LoadedRun, open_run


@dataclass(frozen=True)
class Bound:
    """A quality gate: `metric` must not fall under (or rise over) `value`."""

    metric: str
    value: float
    kind: str  # under | over

    @property
    def option(self) -> str:
        """How the bound was given on the command line."""
        return f"--fail-{self.kind} {self.metric}={self.value:g}"

    def missed_by(self, found: float) -> bool:
        """True when `found` misses this bound."""
        return found < self.value if self.kind == "under" else found > self.value


def parse_bounds(texts: Iterable[str], *, kind: str) -> list[Bound]:
    """`auc=0.9` strings as bounds; a malformed one is a `ConfigError`."""
    bounds = []
    for text in texts:
        name, sep, number = text.partition("=")
        try:
            value = float(number)
        except ValueError:
            value = math.nan
        if not sep or not name.strip() or not math.isfinite(value):
            raise ConfigError(
                f"--fail-{kind} {text!r}: expected METRIC=NUMBER, e.g. --fail-{kind} auc=0.9"
            )
        bounds.append(Bound(name.strip(), value, kind))
    return bounds


def check_bound_names(bounds: Sequence[Bound], schema: FeatureSchema) -> None:
    """Raises `ConfigError` listing the valid names when a bound names an unknown metric."""
    valid = metric_names(schema)
    unknown = [b for b in bounds if b.metric not in valid]
    if unknown:
        raise ConfigError(
            f"{unknown[0].option}: a {schema.target.task} run has no metric "
            f"{unknown[0].metric!r}; valid metrics: {', '.join(valid)}"
        )


def labelled_rows(table: pa.Table, loaded: LoadedRun, *, source: str) -> tuple[pa.Table, Any]:
    """The rows that have a label (after `target.replace`) and their label indices or values."""
    from mlcli.data.tables import require_columns

    target = loaded.schema.target.column
    require_columns(table.column_names, [*loaded.schema.input_names, target], source=source)
    labels = label_values(table.column(target), loaded.config.target.replace)
    if pa.types.is_string(labels.type) or pa.types.is_large_string(labels.type):
        labels = pc.if_else(pc.equal(labels, ""), None, labels)
    keep = pc.is_valid(labels)
    table, labels = table.filter(keep), labels.filter(keep)
    if table.num_rows == 0:
        raise DataError(f"{source}: no row has a label in column {target!r}; nothing to evaluate")
    return table, encode_labels(labels, loaded.schema.target, source=source)


def gate_failures(metrics: Mapping[str, float], bounds: Sequence[Bound]) -> list[str]:
    """A message for each bound that `metrics` misses (an undefined metric misses)."""
    failures = []
    for bound in bounds:
        found = metrics.get(bound.metric)
        if found is None:
            failures.append(f"{bound.metric} is undefined on this data ({bound.option})")
        elif bound.missed_by(found):
            side = "under" if bound.kind == "under" else "over"
            failures.append(f"{bound.metric} = {found:.6g} is {side} the bound {bound.value:g}")
    return failures


def regression_failure(
    metrics: Mapping[str, float], baseline: Mapping[str, float], *, task: str, limit: float
) -> str | None:
    """A message when the primary metric is worse than the baseline's by more than `limit`."""
    name = PRIMARY_METRIC[task]
    if name not in metrics or name not in baseline:
        return f"{name} is undefined on this data; --max-regression cannot be checked"
    new, old = metrics[name], baseline[name]
    worse = new - old if name in LOWER_IS_BETTER else old - new
    if worse > limit:
        return (
            f"{name} regressed by {worse:.6g} against the baseline ({old:.6g} -> {new:.6g}), "
            f"more than --max-regression {limit:g}"
        )
    return None


def _open_for_evaluation(
    reference: str | Path, bounds: Sequence[Bound], criterion: Criterion | None
) -> LoadedRun:
    loaded = open_run(reference, with_model=False)
    check_bound_names(bounds, loaded.schema)
    if criterion is not None and loaded.schema.target.task != "binary":
        raise ConfigError(
            f"--choose-threshold {criterion}: a {loaded.schema.target.task} run decides by its "
            "most probable class or its value; a threshold applies to a binary run only"
        )
    return loaded


def _baseline_metrics(
    reference: str | Path,
    loaded: LoadedRun,
    table: pa.Table,
    *,
    source: str,
    threshold: float,
    reporter: Reporter,
) -> tuple[Path, dict[str, float]]:
    baseline = open_run(reference, with_model=False)
    ours, theirs = loaded.schema.target, baseline.schema.target
    if (theirs.task, theirs.classes) != (ours.task, ours.classes):
        raise RunError(
            f"{baseline.run.path}: the baseline predicts {theirs.task} {theirs.classes}, "
            f"this run {ours.task} {ours.classes}; compare runs of the same target"
        )
    rows, labels = labelled_rows(table, baseline, source=source)
    runner = choose_predictor(baseline.run, baseline.schema, reporter=reporter, what="baseline")
    outputs = runner.outputs(rows, source=source)
    return baseline.run.path, compute_metrics(labels, outputs, baseline.schema, threshold=threshold)


def run_evaluation(
    run: str | Path,
    *,
    data: str | Path,
    fail_under: Iterable[str] = (),
    fail_over: Iterable[str] = (),
    baseline: str | Path | None = None,
    max_regression: float | None = None,
    fail_on_drift: float | None = None,
    threshold: float | None = None,
    choose_threshold: str | None = None,
    save_threshold: bool = False,
    csv_overrides: Mapping[str, Any] | None = None,
    stdin: BinaryIO | None = None,
    reporter: Reporter | None = None,
) -> Evaluation:
    """Evaluates a run on a labelled table and writes `evaluations/<data>-<time>/`.

    Binary metrics are at `threshold`, else the run's saved threshold, else 0.5.
    `choose_threshold` (`precision=0.9`, `recall=0.8`, `f1`, `cost=1:5`:
    `mlcli.evaluation.thresholds`) chooses a threshold on this data and reports the metrics at
    it; `save_threshold` stores it in the run's `threshold.json`, with the data's SHA-256, for
    predict, export and serve. A calibrated run also reports `uncalibrated` figures. Every row
    read is also compared with the training distribution (`features.drift`); `fail_on_drift`
    makes a column's PSI above it a missed gate.

    Gates are checked but not raised: see `Evaluation.raise_for_gates` and `evaluate`; a
    criterion that no threshold reaches is such a failure, and then nothing is saved.
    """
    from mlcli.data.sources import source_for_run
    from mlcli.data.tables import check_header, read_table
    from mlcli.evaluation.report import write_evaluation
    from mlcli.runs.directory import resolve_run

    reporter = reporter or QuietReporter()
    if max_regression is not None and baseline is None:
        raise ConfigError("--max-regression needs --baseline RUN to compare against")
    if fail_on_drift is not None and not (math.isfinite(fail_on_drift) and fail_on_drift >= 0):
        raise ConfigError(
            f"--fail-on-drift: expected a PSI bound of 0 or more (e.g. 0.2), found {fail_on_drift}"
        )
    criterion = parse_criterion(choose_threshold) if choose_threshold is not None else None
    if save_threshold and criterion is None:
        raise ConfigError("--save stores a chosen threshold: add --choose-threshold, e.g. f1")
    if save_threshold and str(data) == "-":
        raise ConfigError(
            "--save records the data's SHA-256 with the threshold; --data - (stdin) cannot be "
            "read twice: pass a file"
        )
    bounds = [*parse_bounds(fail_under, kind="under"), *parse_bounds(fail_over, kind="over")]
    # every argument, path and the data's header are checked before TensorFlow loads
    loaded = _open_for_evaluation(run, bounds, criterion)
    requested()  # MLCLI_INFERENCE is checked with the arguments
    threshold = decision_threshold(threshold, loaded.threshold)
    if baseline is not None:
        resolve_run(baseline)
    names = [*loaded.schema.input_names, loaded.schema.target.column]
    source = source_for_run(
        loaded.config, data, names=names, csv_overrides=csv_overrides, stdin=stdin
    )
    check_header(source, names)
    runner = choose_predictor(loaded.run, loaded.schema, reporter=reporter)
    started = time.monotonic()
    table = read_table(source)
    rows, labels = labelled_rows(table, loaded, source=source.describe())
    reporter.event("data", f"{rows.num_rows} labelled rows of {table.num_rows} read")
    outputs = runner.outputs(rows, source=source.describe())
    metrics = compute_metrics(labels, outputs, loaded.schema, threshold=threshold)
    task = loaded.schema.target.task
    result = Evaluation(run=loaded.run.path, data=source.describe(), task=task, metrics=metrics)
    result.failures = gate_failures(metrics, bounds)
    monitor = DriftMonitor(loaded.schema)
    monitor.update(table)
    result.drift = monitor.finish()
    reporter.event("drift", result.drift.summary(), psi=result.drift.psi())
    drifted = result.drift.failure(fail_on_drift) if fail_on_drift is not None else None
    result.failures += [drifted] if drifted else []
    before = _uncalibrated_outputs(runner, rows, source=source.describe())
    if before is not None:
        result.calibration = loaded.config.training.calibration
        result.uncalibrated = _calibration_figures(labels, before, loaded.schema)
    if criterion is not None:
        _choose(result, criterion, labels, outputs, loaded, source, save=save_threshold)
    if baseline is not None:
        result.baseline_run, result.baseline = _baseline_metrics(
            baseline,
            loaded,
            table,
            source=source.describe(),
            threshold=threshold,
            reporter=reporter,
        )
        if max_regression is not None:
            failure = regression_failure(metrics, result.baseline, task=task, limit=max_regression)
            result.failures += [failure] if failure else []
    result.folder = write_evaluation(
        loaded, result, labels=labels, outputs=outputs, data_name=source.name, before=before
    )
    reporter.event("evaluated", f"{rows.num_rows} rows in {time.monotonic() - started:.1f}s")
    return result


def _uncalibrated_outputs(runner: Runner, rows: pa.Table, *, source: str) -> Any:
    """The outputs before the model's calibration layer (None for a model without one)."""
    if isinstance(runner, LightPredictor):
        light = runner.uncalibrated()
        return None if light is None else light.outputs(rows, source=source)
    from mlcli.inference.predictor import Predictor
    from mlcli.models.core import uncalibrated

    model = uncalibrated(getattr(runner, "model", None))
    return None if model is None else Predictor(model, runner.schema).outputs(rows, source=source)


def _calibration_figures(labels: Any, outputs: Any, schema: FeatureSchema) -> dict[str, float]:
    """log_loss, ece and brier of outputs (a calibrated model's, before its calibration)."""
    every = compute_metrics(labels, outputs, schema, threshold=BINARY_THRESHOLD)
    return {name: every[name] for name in ("log_loss", "ece", "brier") if name in every}


def _choose(
    result: Evaluation,
    criterion: Criterion,
    labels: Any,
    outputs: Any,
    loaded: LoadedRun,
    source: TableSource,
    *,
    save: bool,
) -> None:
    """Chooses the threshold into `result` (or a failure into its gates) and saves it."""
    try:
        choice = thresholds.choose_threshold(labels, outputs, criterion)
    except QualityGateError as error:
        result.failures.append(str(error))
        return
    result.chosen_threshold = {"criterion": str(criterion), "metrics": choice.metrics}
    if save:
        from mlcli import __version__
        from mlcli.data.tables import fingerprint
        from mlcli.runs import directory as runs
        from mlcli.runs.threshold import write_threshold_record

        write_threshold_record(
            loaded.run,
            {
                "threshold": choice.threshold,
                "criterion": str(criterion),
                "data": [fingerprint(path) for path in source.paths],
                "rows": int(choice.metrics["rows"]),
                "metrics": choice.metrics,
                "chosen": datetime.now(UTC).isoformat(timespec="seconds"),
                "mlcli": __version__,
            },
        )
        result.threshold_saved = loaded.run.file(runs.THRESHOLD)


def evaluate(run: str | Path, **options: Any) -> Evaluation:
    """Evaluates a run (as `run_evaluation`) and raises `QualityGateError` on a missed gate.

    Example: `mlcli.evaluate("runs/adult-income", data="adult.test", fail_under=["auc=0.9"])`.
    """
    result = run_evaluation(run, **options)
    result.raise_for_gates()
    return result
