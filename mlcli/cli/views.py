"""Rich tables for `mlcli runs` and `mlcli runs show`; the CLI prints them."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Group
from rich.table import Table

from mlcli.runs.listing import RunSummary

_STATUS_STYLE = {"complete": "green", "running": "cyan", "interrupted": "yellow", "failed": "red"}


def duration(seconds: float | None) -> str:
    """`1h02m`, `3m05s` or `12.3s`."""
    if seconds is None:
        return ""
    if seconds >= 3600:
        return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
    if seconds >= 60:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{seconds:.1f}s"


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
