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
from typing import Any, Literal, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from mlcli.errors import mask_secrets

LogFormat = Literal["text", "json"]


def _format_logs(logs: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in logs.items())


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


class QuietReporter(Reporter):
    """Nothing but warnings."""

    def event(self, name: str, message: str = "", **fields: Any) -> None:
        return

    def epoch(self, epoch: int, epochs: int, seconds: float, logs: dict[str, float]) -> None:
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


def make_reporter(*, quiet: bool, log_format: LogFormat, interactive: bool) -> Reporter:
    """The reporter for the command line's flags and whether a person is watching."""
    if quiet:
        return QuietReporter()
    if log_format == "json":
        return JsonReporter()
    return RichReporter() if interactive else Reporter()
