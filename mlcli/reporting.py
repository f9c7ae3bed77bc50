"""Where progress goes: a rich progress bar on a terminal, one plain line per event in cron
and CI, JSON lines for pipelines, or nothing with `--quiet`.

The CLI picks a reporter; library code only calls its methods. Events go to stderr so that
stdout carries nothing but results (the run directory, JSON, predictions). Every line, and
every text of a JSON line, is masked (`mlcli.errors.mask_secrets`): a password in a URI or a
value filled from `${VAR}` reads `***`.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import PurePath
from typing import Any, Literal, TextIO

from rich.console import Console, Group
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from mlcli.errors import mask_secrets

LogFormat = Literal["text", "json"]


def _format_logs(logs: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in logs.items())


def duration(seconds: float | None) -> str:
    """`1h02m`, `3m05s` or `12.3s`."""
    if seconds is None:
        return ""
    if seconds >= 3600:
        return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
    if seconds >= 60:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{seconds:.1f}s"


def kept_epoch_text(kept: dict[str, Any]) -> str:
    """A manifest's `kept_epoch` as text: `epoch 9 of 12: early stopping restored ...`."""
    return f"epoch {kept.get('epoch')} of {kept.get('epochs_run')}: {kept.get('why', '')}"


@dataclass(frozen=True)
class TrainingSummary:
    """What a finished training run reports once: its final metrics, kept epoch and time.

    Attributes:
        run: the complete run directory.
        metrics: metrics.json's splits: `{"train": {"loss": ..., "rows": ...}, ...}`.
        kept_epoch: manifest.json's `kept_epoch`: `epoch`, `epochs_run`, `reason`, `why`...
        seconds: where the time went, by phase (`data`, `prepare`, `fit`, `evaluate`,
            `save_and_check`, `other`), and `total`.
        threshold: the binary decision threshold of metrics.json (None for other tasks).
    """

    run: str
    metrics: dict[str, dict[str, float]]
    kept_epoch: dict[str, Any]
    seconds: dict[str, float]
    threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain JSON values."""
        return asdict(self)

    def kept_text(self) -> str:
        """`epoch 9 of 12: early stopping restored ...`."""
        return kept_epoch_text(self.kept_epoch)

    def time_text(self) -> str:
        """`25.0s: data 2.6s (10%), fit 11.0s (44%), ...`."""
        total = self.seconds.get("total") or 0.0
        parts = [
            f"{PHASES.get(name, name)} {duration(value)}"
            + (f" ({value / total:.0%})" if total > 0 else "")
            for name, value in self.seconds.items()
            if name != "total"
        ]
        return f"{duration(total)}: {', '.join(parts)}"

    def metric_names(self) -> list[str]:
        """Every metric of any split, in the order first seen, without `rows`."""
        names: dict[str, None] = {}
        for values in self.metrics.values():
            names.update((key, None) for key in values if key != "rows")
        return list(names)


# How the phases of `TrainingSummary.seconds` read in text.
PHASES = {
    "data": "reading, statistics and encoding",
    "prepare": "devices and model",
    "fit": "fit",
    "evaluate": "final evaluation",
    "save_and_check": "saving and self-checks",
    "other": "other (TensorFlow start-up, run files)",
}


def _masked(value: Any) -> Any:
    """A JSON record's texts masked, at any depth (numbers and the rest as they are)."""
    if isinstance(value, str):
        return mask_secrets(value)
    if isinstance(value, dict):
        return {str(k): _masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(v) for v in value]
    return value


class Reporter:
    """Plain text: one line per event, no colour, for cron and CI."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    @property
    def stream(self) -> TextIO:
        """The stream given, or whatever `sys.stderr` is when an event is written.

        Looked up on every write: while TensorFlow loads in the background
        (`mlcli._tensorflow.start_import`), `sys.stderr` is a copy of the terminal's stderr.
        """
        return self._stream or sys.stderr

    def event(self, name: str, message: str = "", **fields: Any) -> None:
        """One event, such as `data_read` or `run_complete`, with a message and fields."""
        text = message or _format_logs(fields)
        print(mask_secrets(f"[{name}] {text}"), file=self.stream, flush=True)

    def warning(self, message: str) -> None:
        """Something the user should know that does not stop the command."""
        print(mask_secrets(f"warning: {message}"), file=self.stream, flush=True)

    def start_progress(self, description: str, total: int | None) -> None:
        """A task with `total` steps starts (epochs of training, rows of prediction)."""

    def advance(self, steps: int = 1, **fields: Any) -> None:
        """The current task moved on by `steps`; fields are live values (loss, rows/s)."""

    def stop_progress(self) -> None:
        """The current task ended."""

    def epoch(self, epoch: int, epochs: int, seconds: float, logs: dict[str, float]) -> None:
        """An epoch ended."""
        self.event("epoch", f"{epoch}/{epochs} {_format_logs(logs)} ({seconds:.1f}s)")  # masked

    def summary(self, summary: TrainingSummary) -> None:
        """Training ended: one `summary` line per split, then the kept epoch and the time."""
        for split, values in summary.metrics.items():
            shown = _format_logs({k: v for k, v in values.items() if k != "rows"})
            rows = values.get("rows")
            self.event("summary", f"{split}: {shown}" + (f" ({rows:.0f} rows)" if rows else ""))
        if summary.threshold is not None:
            self.event("summary", f"threshold {summary.threshold:g}")
        self.event("summary", f"kept {summary.kept_text()}")
        self.event("summary", f"time {summary.time_text()}")


class QuietReporter(Reporter):
    """Nothing but warnings."""

    def event(self, name: str, message: str = "", **fields: Any) -> None:
        return

    def epoch(self, epoch: int, epochs: int, seconds: float, logs: dict[str, float]) -> None:
        return

    def summary(self, summary: TrainingSummary) -> None:
        return


class JsonReporter(Reporter):
    """One JSON object per line: `{"event": ..., "time": ..., ...}`."""

    def _write(self, record: dict[str, Any]) -> None:
        record = {"event": record.pop("event"), "time": round(time.time(), 3), **record}
        text = json.dumps(_masked(json.loads(json.dumps(record, default=str))))
        print(text, file=self.stream, flush=True)

    def event(self, name: str, message: str = "", **fields: Any) -> None:
        self._write({"event": name, **({"message": message} if message else {}), **fields})

    def warning(self, message: str) -> None:
        self._write({"event": "warning", "message": message})

    def epoch(self, epoch: int, epochs: int, seconds: float, logs: dict[str, float]) -> None:
        self._write(
            {"event": "epoch", "epoch": epoch, "epochs": epochs, "seconds": seconds, **logs}
        )

    def summary(self, summary: TrainingSummary) -> None:
        """One `summary` event holding all of it."""
        self._write({"event": "summary", **summary.to_dict()})


class RichReporter(Reporter):
    """A live progress bar with the latest loss and metrics, for a terminal."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        # without a stream, rich looks sys.stderr up on every write too
        self.console = Console(file=stream) if stream else Console(stderr=True)
        self._progress: Progress | None = None
        self._task: Any = None

    def event(self, name: str, message: str = "", **fields: Any) -> None:
        text = mask_secrets(message or _format_logs(fields))
        self.console.print(f"[dim]{name}[/dim] {text}", highlight=False)

    def warning(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/yellow] {mask_secrets(message)}", highlight=False)

    def start_progress(self, description: str, total: int | None) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[live]}"),
            console=self.console,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task(description, total=total, live="")

    def advance(self, steps: int = 1, **fields: Any) -> None:
        if self._progress is not None:
            live = mask_secrets(_format_logs(fields))
            self._progress.update(self._task, advance=steps, live=live)

    def stop_progress(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def epoch(self, epoch: int, epochs: int, seconds: float, logs: dict[str, float]) -> None:
        line = mask_secrets(f"epoch {epoch}/{epochs} {_format_logs(logs)} ({seconds:.1f}s)")
        if self._progress is not None:
            self._progress.console.print(line, highlight=False)
        else:
            self.console.print(line, highlight=False)

    def summary(self, summary: TrainingSummary) -> None:
        """A table of the final metrics by split, then the kept epoch and the time."""
        self.console.print(summary_view(summary), highlight=False)


def summary_view(summary: TrainingSummary) -> Group:
    """The rich form of a `TrainingSummary`: metrics by split, kept epoch, time."""
    names = summary.metric_names()
    run = PurePath(summary.run)
    table = Table(title=mask_secrets(f"{run.parent.name}/{run.name}: final metrics"))
    table.add_column("split")
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("rows", justify="right")
    for split, values in summary.metrics.items():
        shown = [f"{values[name]:.4f}" if name in values else "" for name in names]
        rows = values.get("rows")
        table.add_row(split, *shown, "" if rows is None else f"{rows:.0f}")
    if summary.threshold is not None:
        table.caption = f"threshold {summary.threshold:g}"
    details = Table.grid(padding=(0, 2))
    details.add_column(style="bold", no_wrap=True)
    details.add_column()
    details.add_row("kept", mask_secrets(summary.kept_text()))
    details.add_row("time", summary.time_text())
    return Group(table, details)


def make_reporter(*, quiet: bool, log_format: LogFormat, interactive: bool) -> Reporter:
    """The reporter for the command line's flags and whether a person is watching."""
    if quiet:
        return QuietReporter()
    if log_format == "json":
        return JsonReporter()
    return RichReporter() if interactive else Reporter()
