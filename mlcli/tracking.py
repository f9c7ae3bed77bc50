"""Sending runs to the tools a team already uses: TensorBoard logs and MLflow tracking.

TensorBoard is Keras's own callback writing under `<run>/logs` (`training.tensorboard`).
MLflow (`tracking.mlflow`, the `mlcli[mlflow]` extra) receives the flattened config as
parameters, every epoch's metrics, the final metrics, the run directory's files and the model
as an MLflow pyfunc model that `mlflow models serve` loads (`mlcli/mlflow_model.py`). A run
that fails or is interrupted is marked FAILED or KILLED; `--resume` continues the same
MLflow run, whose id is kept in the run directory.

`training.train` calls `start_tracking` once the run directory exists, trains through the
returned reporter, and calls `Tracker.finish` with the complete run; the `tracks_failures`
decorator ends a started MLflow run when training raises.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

from mlcli import __version__, runs
from mlcli.config import Config, MlflowConfig
from mlcli.errors import ConfigError, InterruptedRunError
from mlcli.reporting import Reporter

LOGS = "logs"
MLFLOW_RUN = "mlflow.json"  # the MLflow run id of a run directory, for --resume
_PARAM_LIMIT = 6000  # MLflow's longest parameter value
F = TypeVar("F", bound=Callable[..., Any])


def _require(module: str, extra: str, key: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{key} needs the {module} package: pip install 'mlcli[{extra}]'")


def tensorboard_callbacks(config: Config, run: runs.Run) -> list[Any]:
    """Keras's TensorBoard callback writing under `<run>/logs`, when the config asks for it."""
    if not config.training.tensorboard:
        return []
    _require("tensorboard", "tensorboard", "training.tensorboard")
    import keras

    return [keras.callbacks.TensorBoard(log_dir=str(run.file(LOGS)))]


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """A nested config as dotted keys and text values, as MLflow parameters."""
    if isinstance(value, dict) and value:
        flat: dict[str, str] = {}
        for key, child in value.items():
            flat.update(flatten(child, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    text = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return {prefix: text[:_PARAM_LIMIT]}


class TrackingReporter(Reporter):
    """Passes every event on to the user's reporter and each epoch's metrics to MLflow."""

    def __init__(self, inner: Reporter, client: Any, run_id: str) -> None:
        super().__init__(inner.stream)
        self.inner, self.client, self.run_id = inner, client, run_id

    def event(self, name: str, message: str = "", **fields: Any) -> None:
        self.inner.event(name, message, **fields)

    def warning(self, message: str) -> None:
        self.inner.warning(message)

    def start_progress(self, description: str, total: int | None) -> None:
        self.inner.start_progress(description, total)

    def advance(self, steps: int = 1, **fields: Any) -> None:
        self.inner.advance(steps, **fields)

    def stop_progress(self) -> None:
        self.inner.stop_progress()

    def epoch(self, epoch: int, epochs: int, seconds: float, logs: dict[str, float]) -> None:
        self.inner.epoch(epoch, epochs, seconds, logs)
        metrics = {**logs, "epoch_seconds": seconds}
        self.client.log_batch(self.run_id, metrics=_metrics(metrics, step=epoch))


def _metrics(values: dict[str, Any], *, step: int) -> list[Any]:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [
        Metric(key=k, value=float(v), timestamp=now, step=step)
        for k, v in values.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    ]


class Tracker:
    """The trackers of one training run (a no-op without `tracking.mlflow`)."""

    def __init__(self, reporter: Reporter, client: Any = None, run_id: str | None = None):
        self.client, self.run_id = client, run_id
        self.reporter = TrackingReporter(reporter, client, run_id) if run_id else reporter

    def finish(self, run: Path) -> None:
        """Logs the final metrics, the run's files and the model, and marks the run FINISHED."""
        if self.client is None or self.run_id is None:
            return
        from mlcli.mlflow_logging import log_complete_run

        self.client.set_tag(self.run_id, "mlcli.run_dir", str(run))  # renamed when complete
        log_complete_run(self.client, self.run_id, run)
        self.client.set_terminated(self.run_id, "FINISHED")
        _active.set(None)

    def fail(self, error: BaseException) -> None:
        """Marks the MLflow run FAILED (KILLED when interrupted)."""
        if self.client is None or self.run_id is None:
            return
        interrupted = isinstance(error, KeyboardInterrupt | InterruptedRunError)
        self.client.set_tag(self.run_id, "mlcli.error", f"{type(error).__name__}: {error}"[:5000])
        self.client.set_terminated(self.run_id, "KILLED" if interrupted else "FAILED")
        _active.set(None)


_active: ContextVar[Tracker | None] = ContextVar("mlcli_tracker", default=None)


def start_tracking(
    config: Config, run: runs.Run, reporter: Reporter, *, enabled: bool = True
) -> Tracker:
    """Starts (or, for a resumed run, reopens) the MLflow run of a training run.

    `enabled` is False on the workers of a cluster: the chief alone tracks the run.
    """
    settings: MlflowConfig | None = config.tracking.mlflow if config.tracking else None
    if settings is None or not enabled:
        return Tracker(reporter)
    _require("mlflow", "mlflow", "tracking.mlflow")
    from mlcli.mlflow_logging import open_mlflow_run

    client, run_id = open_mlflow_run(settings, config, run, params=flatten(_plain(config)))
    tracker = Tracker(reporter, client, run_id)
    _active.set(tracker)
    reporter.event("mlflow", f"run {run_id} in {client.tracking_uri}")
    return tracker


def _plain(config: Config) -> dict[str, Any]:
    data: dict[str, Any] = config.model_dump(mode="json")
    return data


def tracks_failures(function: F) -> F:
    """Ends the MLflow run a training call started when that call raises."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        token = _active.set(None)
        try:
            return function(*args, **kwargs)
        except BaseException as error:
            tracker = _active.get()
            if tracker is not None:
                tracker.fail(error)
            raise
        finally:
            _active.reset(token)

    return wrapper  # type: ignore[return-value]


def mlflow_tags(run: runs.Run) -> dict[str, str]:
    """Tags that lead from an MLflow run back to its run directory."""
    return {
        "mlcli.run_dir": str(run.path),
        "mlcli.run_id": run.run_id,
        "mlcli.version": __version__,
    }
