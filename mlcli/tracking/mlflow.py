"""MLflow calls for `mlcli.tracking.tracker`, imported only when `tracking.mlflow` is configured.

The client API (`MlflowClient`) addresses the run by id, so nothing depends on MLflow's
process-wide active run or tracking URI.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlcli import __version__, files
from mlcli.config.loading import config_document
from mlcli.config.schema import Config, MlflowConfig
from mlcli.errors import ConfigError, mask_secrets
from mlcli.reporting import Reporter, TrainingSummary
from mlcli.runs import directory as runs

MODEL_NAME = "model"
_BATCH = 100  # MLflow accepts at most 100 parameters per call
_MLFLOW_TYPES = {"float32": "double", "int64": "long", "string": "string"}
MLFLOW_RUN = "mlflow.json"  # the MLflow run id of a run directory, for --resume


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

    def summary(self, summary: TrainingSummary) -> None:
        self.inner.summary(summary)  # the final metrics reach MLflow with the run's files


def _metrics(values: dict[str, Any], *, step: int) -> list[Any]:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [
        Metric(key=k, value=float(v), timestamp=now, step=step)
        for k, v in values.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    ]


def mlflow_tags(run: runs.Run) -> dict[str, str]:
    """Tags that lead from an MLflow run back to its run directory."""
    return {
        "mlcli.run_dir": str(run.path),
        "mlcli.run_id": run.run_id,
        "mlcli.version": __version__,
    }


def open_mlflow_run(
    settings: MlflowConfig, config: Config, run: runs.Run, *, params: dict[str, str]
) -> tuple[MlflowClient, str]:
    """Creates the MLflow run of a training run, or reopens it when the run is resumed.

    Any failure to reach the store is a `ConfigError` (exit 2) whose one line names the URI
    with its password masked.
    """
    uri = settings.uri or mlflow.get_tracking_uri()
    saved = run.file(MLFLOW_RUN)
    try:
        client = MlflowClient(tracking_uri=uri)
        if saved.is_file():
            run_id = str(json.loads(saved.read_text(encoding="utf-8"))["run_id"])
            client.update_run(run_id, status="RUNNING")
            return client, run_id
        name = settings.experiment or config.name
        experiment = client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
        created = client.create_run(
            experiment_id, run_name=f"{config.name}-{run.run_id}", tags=mlflow_tags(run)
        )
        run_id = created.info.run_id
        items = [Param(key, value) for key, value in params.items()]
        for start in range(0, len(items), _BATCH):
            client.log_batch(run_id, params=items[start : start + _BATCH])
    except Exception as error:  # MLflow, its HTTP client, a database driver: all the store's
        raise ConfigError(mask_secrets(_refused(uri, error))) from error
    written = config_document(config)["tracking"]["mlflow"]["uri"] if settings.uri else uri
    files.write_json(saved, {"run_id": run_id, "tracking_uri": mask_secrets(written)})
    return client, run_id


def _refused(uri: str, error: Exception) -> str:
    """One line: which store refused the run, and why (its first line)."""
    lines = str(error).strip().splitlines()
    reason = lines[0] if lines else ""
    if isinstance(error, ModuleNotFoundError) and error.name:
        reason = f"it needs the {error.name} package, which is not installed"
    elif not isinstance(error, MlflowException):
        reason = f"{type(error).__name__}: {reason}"
    return f"tracking.mlflow.uri: MLflow at {uri!r} did not start the run: {reason}"


def log_complete_run(client: MlflowClient, run_id: str, path: Path) -> None:
    """The final metrics, the run directory's files (not checkpoints) and the model."""
    metrics = json.loads((path / runs.METRICS).read_text(encoding="utf-8"))
    final = {
        f"{split}_{name}": value
        for split, values in metrics.items()
        if isinstance(values, dict)
        for name, value in values.items()
    }
    client.log_batch(run_id, metrics=_metrics(final, step=0))
    for child in sorted(path.iterdir()):
        if child.name == runs.CHECKPOINTS or child.name.startswith("."):
            continue
        if child.is_dir():
            client.log_artifacts(run_id, str(child), artifact_path=child.name)
        else:
            client.log_artifact(run_id, str(child))
    log_model(client, run_id, path)


def signature(path: Path) -> Any:
    """The model's input columns as an MLflow signature (every column may be missing)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    schema = json.loads((path / runs.SCHEMA).read_text(encoding="utf-8"))
    columns: list[Any] = [
        ColSpec(_MLFLOW_TYPES[c["dtype"]], c["name"], required=False) for c in schema["columns"]
    ]
    return ModelSignature(inputs=Schema(columns))


def _requirements() -> list[str]:
    import keras
    import pandas
    import pyarrow
    import tensorflow as tf

    return [
        f"mlcli=={__version__}",
        f"tensorflow=={tf.__version__}",
        f"keras=={keras.__version__}",
        f"pyarrow=={pyarrow.__version__}",
        f"pandas=={pandas.__version__}",
    ]


def log_model(client: MlflowClient, run_id: str, path: Path) -> None:
    """The run's model as an MLflow pyfunc model from code (`mlcli/tracking/mlflow_model.py`).

    Saved to a temporary folder and logged as the run's `model` artifact, so that
    `runs:/<run id>/model` loads it, without touching MLflow's process-wide active run.
    """
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep stderr plain
    with tempfile.TemporaryDirectory(prefix="mlcli-mlflow-") as folder, warnings.catch_warnings():
        # an input example would make MLflow run the model while saving it
        warnings.filterwarnings("ignore", message="An input example was not provided")
        saved = Path(folder) / MODEL_NAME
        mlflow.pyfunc.save_model(
            path=str(saved),
            python_model=str(Path(__file__).with_name("mlflow_model.py")),
            artifacts={"model": str(path / runs.MODEL), "schema": str(path / runs.SCHEMA)},
            signature=signature(path),
            pip_requirements=_requirements(),
        )
        client.log_artifacts(run_id, str(saved), artifact_path=MODEL_NAME)
