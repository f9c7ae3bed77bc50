"""Sending runs to the tools a team already uses: TensorBoard logs and MLflow tracking.

TensorBoard is Keras's own callback writing under `<run>/logs` (`training.tensorboard`).
MLflow (`tracking.mlflow`, the `mlcli[mlflow]` extra) receives the flattened config as
parameters, every epoch's metrics, the final metrics, the run directory's files and the model
as an MLflow pyfunc model that `mlflow models serve` loads (`mlcli/tracking/mlflow_model.py`). A run
that fails or is interrupted is marked FAILED or KILLED; `--resume` continues the same
MLflow run, whose id is kept in the run directory.

`training.train` calls `start_tracking` once the run directory exists, trains through the
returned reporter, and calls `Tracker.finish` with the complete run; the `tracks_failures`
decorator ends a started MLflow run when training raises.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

from mlcli.config.loading import config_document
from mlcli.config.overrides import dotted_items
from mlcli.config.schema import Config, MlflowConfig
from mlcli.errors import InterruptedRunError, mask_secrets, require_extra
from mlcli.reporting import Reporter
from mlcli.runs import directory as runs

_PARAM_LIMIT = 6000  # MLflow's longest parameter value
F = TypeVar("F", bound=Callable[..., Any])


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """A nested config as dotted keys and text values, as MLflow parameters."""
    flat = dotted_items(value, prefix) if isinstance(value, dict) and value else {prefix: value}
    return {
        key: (json.dumps(leaf) if isinstance(leaf, list | dict) else str(leaf))[:_PARAM_LIMIT]
        for key, leaf in flat.items()
    }


class Tracker:
    """The trackers of one training run (a no-op without `tracking.mlflow`)."""

    def __init__(self, reporter: Reporter, client: Any = None, run_id: str | None = None):
        self.client, self.run_id = client, run_id
        self.reporter = reporter

    def finish(self, run: Path) -> None:
        """Logs the final metrics, the run's files and the model, and marks the run FINISHED."""
        if self.client is None or self.run_id is None:
            return
        from mlcli.tracking.mlflow import log_complete_run

        self.client.set_tag(self.run_id, "mlcli.run_dir", str(run))  # renamed when complete
        log_complete_run(self.client, self.run_id, run)
        self.client.set_terminated(self.run_id, "FINISHED")
        _active.set(None)

    def fail(self, error: BaseException) -> None:
        """Marks the MLflow run FAILED (KILLED when interrupted)."""
        if self.client is None or self.run_id is None:
            return
        interrupted = isinstance(error, KeyboardInterrupt | InterruptedRunError)
        message = mask_secrets(f"{type(error).__name__}: {error}")
        self.client.set_tag(self.run_id, "mlcli.error", message[:5000])
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
    require_extra("mlflow", "mlflow", "tracking.mlflow")
    from mlcli.tracking.mlflow import TrackingReporter, open_mlflow_run

    client, run_id = open_mlflow_run(settings, config, run, params=flatten(_plain(config)))
    tracker = Tracker(TrackingReporter(reporter, client, run_id), client, run_id)
    _active.set(tracker)
    reporter.event("mlflow", mask_secrets(f"run {run_id} in {client.tracking_uri}"))
    return tracker


def _plain(config: Config) -> dict[str, Any]:
    """The config as MLflow receives it: `${VAR}` references as written, never their values."""
    return config_document(config)


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
