"""The rich tables that commands print, and the consoles they print on.

`validation_table` (`mlcli validate`), `evaluation_table` (`mlcli evaluate`),
`importance_table` and `importance_lines` (`mlcli explain`), `trials_table`
(`mlcli tune`), `runs_table` (`mlcli runs`) and `details_view` (`mlcli runs show`) build
renderables from what the library returned; the command prints them on `stdout()` or
`table_console()`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console, Group
from rich.table import Table

from mlcli.reporting import duration, kept_epoch_text

if TYPE_CHECKING:
    from mlcli.evaluation.explanation import Explanation
    from mlcli.evaluation.result import Evaluation
    from mlcli.runs.listing import RunSummary
    from mlcli.starter.profiling import InitReport
    from mlcli.training.tune import TuneResult
    from mlcli.training.validate import ValidationReport


def stdout() -> Console:
    """stdout, without highlighting, lines as long as the text."""
    return Console(highlight=False, soft_wrap=True)


def table_console() -> Console:
    """stdout for tables: as wide as the terminal, and 160 columns in a pipe or a file."""
    console = stdout()
    if not console.is_terminal:
        console.width = 160
    return console


def validation_table(config: Path, report: ValidationReport) -> Table:
    """`mlcli validate`: each column's feature type, the excluded ones and the target."""
    table = Table(title=f"{config}: valid ({report.sample_rows} sample rows read)")
    table.add_column("column")
    table.add_column("feature type")
    for name, kind in report.feature_types.items():
        table.add_row(name, kind)
    for name, why in report.excluded.items():
        table.add_row(name, f"excluded: {why}")
    target = report.config.target
    table.add_row(target.column, f"target ({target.task or 'inferred'})")
    return table


def evaluation_table(result: Evaluation) -> Table:
    """`mlcli evaluate`: one row per metric, with the baseline and the change when compared."""
    table = Table(title=f"{result.run.name} on {result.data}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    if result.baseline:
        table.add_column("baseline", justify="right")
        table.add_column("change", justify="right")
    if result.uncalibrated:
        table.add_column("before calibration", justify="right")
    for name, value in result.metrics.items():
        if "/" in name or name in ("rows", "threshold"):
            continue
        row = [name, f"{value:.4f}"]
        if result.baseline:
            old = result.baseline.get(name)
            row += ["", ""] if old is None else [f"{old:.4f}", f"{value - old:+.4f}"]
        if result.uncalibrated:
            before = result.uncalibrated.get(name)
            row += ["" if before is None else f"{before:.4f}"]
        table.add_row(*row)
    rows = f"{int(result.metrics['rows'])} rows"
    if "threshold" in result.metrics:
        rows += f", threshold {result.metrics['threshold']:g}"
    largest = result.drift.largest() if result.drift is not None else None
    if largest is not None:
        rows += f", largest drift PSI {largest.psi:.3f} ({largest.name})"
    if result.calibration:
        rows += f", {result.calibration} calibration"
    table.caption = rows
    return table


def importance_table(result: Explanation) -> Table:
    """`mlcli explain`: one row per raw column, most important first, with its spread."""
    table = Table(title=f"{result.run.name} on {result.data}: {result.worse} when shuffled")
    table.add_column("rank", justify="right")
    table.add_column("column")
    table.add_column("importance", justify="right")
    table.add_column("± std", justify="right")
    for rank, item in enumerate(result.importances, start=1):
        table.add_row(str(rank), item.column, f"{item.mean:.4f}", f"{item.std:.4f}")
    table.caption = (
        f"{result.metric} {result.baseline:.4f} on {result.rows} rows, "
        f"{result.repeats} shuffles per column, seed {result.seed}"
    )
    return table


def importance_lines(result: Explanation) -> list[str]:
    """`mlcli explain` in a pipe or cron: the same ranking, one plain line per column."""
    lines = [
        f"{result.metric} {result.baseline:.4f} on {result.rows} rows; importance is the "
        f"{result.worse} when shuffled (mean ± std of {result.repeats})"
    ]
    width = max((len(item.column) for item in result.importances), default=0)
    for rank, item in enumerate(result.importances, start=1):
        lines.append(f"{rank:>3} {item.column:<{width}} {item.mean:+.4f} ± {item.std:.4f}")
    return lines


def threshold_table(result: Evaluation) -> Table:
    """`mlcli evaluate --choose-threshold`: the threshold chosen and the metrics at it."""
    chosen = result.chosen_threshold
    table = Table(title=f"threshold chosen for {chosen['criterion']}")
    names = ("threshold", "precision", "recall", "f1", "accuracy", "positives")
    for name in names:
        table.add_column(name, justify="right")
    metrics = chosen["metrics"]
    table.add_row(*(str(metrics[n]) if n == "positives" else f"{metrics[n]:.4g}" for n in names))
    if result.threshold_saved is not None:
        table.caption = f"saved in {result.threshold_saved}"
    return table


def trials_table(result: TuneResult) -> Table:
    """`mlcli tune`: one row per trial, the best marked with `*`."""
    table = Table(title=f"{result.directory}: {result.metric} ({result.direction})")
    table.add_column("trial", justify="right")
    for key in result.parameters:
        table.add_column(key)
    table.add_column(result.metric, justify="right")
    metric = result.metric.partition(".")[2]
    table.add_column(f"test.{metric}", justify="right")
    table.add_column("seconds", justify="right")
    for trial in result.trials:
        test = trial.metrics.get("test", {}).get(metric)
        marker = " *" if trial is result.best else ""
        values = (trial.values.get(key) for key in result.parameters)
        table.add_row(
            f"{trial.number}{marker}",
            *[f"{v:.4g}" if isinstance(v, float) else str(v) for v in values],
            trial.state if trial.score is None else f"{trial.score:.4f}",
            "" if test is None else f"{test:.4f}",
            f"{trial.seconds:.0f}",
        )
    return table


_STATUS_STYLE = {"complete": "green", "running": "cyan", "interrupted": "yellow", "failed": "red"}


def _started(text: str | None) -> str:
    return (text or "")[:16].replace("T", " ")


def _metrics(split: str | None, metrics: dict[str, float]) -> str:
    shown = " ".join(f"{key}={value:.4g}" for key, value in metrics.items())
    return f"{split}: {shown}" if split else ""


def runs_table(summaries: list[RunSummary], *, title: str) -> Table:
    """One row per run, newest first."""
    table = Table(title=title, box=box.SIMPLE_HEAD)
    for heading in ("name", "id", "status", "started", "duration", "metrics"):
        table.add_column(heading, no_wrap=heading in ("id", "status", "started", "duration"))
    for run in summaries:
        style = _STATUS_STYLE.get(run.status, "")
        table.add_row(
            run.name,
            run.run_id,
            f"[{style}]{run.status}[/{style}]" if style else run.status,
            _started(run.started),
            duration(run.seconds),
            _metrics(run.split, run.metrics),
        )
    return table


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def details_view(details: dict[str, Any]) -> Group:
    """A run's summary, metrics and artifacts, and its diff against another run if asked."""
    summary = Table.grid(padding=(0, 2))
    for key in ("path", "status", "started", "finished", "epochs_run", "device", "git_commit"):
        if details.get(key) is not None:
            summary.add_row(key, _value(details[key]))
    kept = details.get("kept_epoch")
    if isinstance(kept, dict):
        summary.add_row("kept", kept_epoch_text(kept))
    summary.add_row("duration", duration(details.get("seconds")))
    parts: list[Any] = [summary]
    metrics = Table(title="metrics")
    metrics.add_column("split")
    names = sorted({k for v in details["metrics"].values() if isinstance(v, dict) for k in v})
    for name in names:
        metrics.add_column(name, justify="right")
    for split, values in details["metrics"].items():
        if isinstance(values, dict):
            metrics.add_row(split, *(_value(values.get(name)) for name in names))
    parts.append(metrics)
    artifacts = Table(title="artifacts")
    for heading in ("path", "files", "bytes"):
        artifacts.add_column(heading, justify="left" if heading == "path" else "right")
    for item in details["artifacts"]:
        artifacts.add_row(item["path"], str(item["files"]), f"{item['bytes']:,}")
    parts.append(artifacts)
    if "diff" in details:
        parts.extend(_diff_tables(details))
    return Group(*parts)


def _diff_tables(details: dict[str, Any]) -> list[Table]:
    diff = details["diff"]
    config = Table(title=f"config: this run vs {diff['other']}")
    for heading in ("key", "this run", "other"):
        config.add_column(heading, overflow="fold")
    for row in diff["config"]:
        config.add_row(row["key"], _value(row["run"]), _value(row["other"]))
    if not diff["config"]:
        config.add_row("(identical)", "", "")
    metrics = Table(title="metrics: this run vs other")
    for heading in ("split", "metric", "this run", "other", "change"):
        metrics.add_column(heading, justify="right" if heading != "split" else "left")
    for row in diff["metrics"]:
        a, b = row["run"], row["other"]
        numbers = isinstance(a, int | float) and isinstance(b, int | float)
        change = f"{a - b:+.4g}" if numbers else ""
        metrics.add_row(row["split"], row["metric"], _value(a), _value(b), change)
    return [config, metrics]


def init_table(report: InitReport) -> Table:
    """What `init` inferred, one row per column, for the terminal."""
    table = Table(title=f"{report.data.name}: {report.sample_rows} rows sampled")
    table.add_column("column", overflow="fold")
    table.add_column("inferred", no_wrap=True)
    table.add_column("distinct", justify="right")
    table.add_column("missing", justify="right")
    table.add_column("why", ratio=1)
    target = report.target
    table.add_row(target.name, f"target: {target.task}", str(target.classes), "", target.reason)
    for p in report.columns:
        kind = p.kind + (f" ({p.transform})" if p.transform != "none" else "")
        missing = f"{p.missing_share:.1%}" if p.missing else ""
        table.add_row(p.name, kind, str(p.distinct), missing, p.reason)
    return table
