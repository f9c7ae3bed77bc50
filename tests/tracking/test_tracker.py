"""TensorBoard logs in the run, and an MLflow round trip against a temporary sqlite store."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pyarrow.csv as pa_csv
import pytest

from mlcli.config.loading import parse_config
from mlcli.errors import ConfigError, TrainingDivergedError
from mlcli.runs.directory import Run
from mlcli.tracking.tensorboard import tensorboard_callbacks
from mlcli.tracking.tracker import flatten


def test_tensorboard_without_the_package_names_the_extra(monkeypatch):
    config = parse_config(
        {
            "name": "x",
            "data": {"train": "t.csv"},
            "target": {"column": "y"},
            "training": {"tensorboard": True},
        }
    )
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name)
    )
    with pytest.raises(ConfigError, match=r"mlcli\[tensorboard\]"):
        tensorboard_callbacks(config, Run(Path("run")))


def test_flatten_gives_dotted_text_parameters():
    flat = flatten({"training": {"epochs": 3, "early_stopping": None}, "model": {"units": [8, 4]}})
    assert flat == {
        "training.epochs": "3",
        "training.early_stopping": "None",
        "model.units": "[8, 4]",
    }


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One sqlite store for the module: creating its tables is the slow part."""
    pytest.importorskip("mlflow")
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture
def mlflow_uri(mlflow_store: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(mlflow_store)  # a sqlite store keeps artifacts in ./mlruns
    return f"sqlite:///{mlflow_store / 'mlflow.db'}"


def _only_run(uri: str, experiment: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(found) == 1
    return client, found[0]


def test_mlflow_round_trip(write_config, tiny_csv, mlflow_uri):
    import mlflow

    tensorboard = importlib.util.find_spec("tensorboard") is not None  # checked when installed

    from mlcli.training.train import train

    path = write_config(
        tracking={"mlflow": {"uri": mlflow_uri, "experiment": "tiny-exp"}},
        training={
            "epochs": 2,
            "batch_size": 32,
            "steps_per_execution": 1,
            "tensorboard": tensorboard,
        },
    )
    run = train(path)
    assert not tensorboard or any((run / "logs" / "train").iterdir())  # TensorBoard's events
    assert json.loads((run / "mlflow.json").read_text())["tracking_uri"] == mlflow_uri

    client, logged = _only_run(mlflow_uri, "tiny-exp")
    assert logged.info.status == "FINISHED"
    assert logged.data.params["training.epochs"] == "2"
    assert logged.data.params["target.column"] == "label"
    assert logged.data.tags["mlcli.run_dir"] == str(run)
    history = client.get_metric_history(logged.info.run_id, "val_loss")
    assert [m.step for m in history] == [1, 2]
    metrics = json.loads((run / "metrics.json").read_text())
    assert logged.data.metrics["validation_accuracy"] == pytest.approx(
        metrics["validation"]["accuracy"]
    )
    artifacts = {a.path for a in client.list_artifacts(logged.info.run_id)}
    assert {"model.keras", "schema.json", "metrics.json", "plots"} <= artifacts
    assert ("logs" in artifacts) == tensorboard
    assert "checkpoints" not in artifacts

    artifacts = mlflow.artifacts.download_artifacts(
        run_id=logged.info.run_id, artifact_path="model", tracking_uri=mlflow_uri
    )
    model = mlflow.pyfunc.load_model(artifacts)
    frame = pa_csv.read_csv(tiny_csv).to_pandas().head(20)
    predicted = model.predict(frame.drop(columns=["label"]))
    assert set(predicted["prediction"]) <= {"high", "low"}
    probabilities = predicted["probability_low"].to_numpy()
    assert np.all((probabilities >= 0) & (probabilities <= 1))
    accuracy = float(np.mean(predicted["prediction"].to_numpy() == frame["label"].to_numpy()))
    assert accuracy > 0.5


def test_mlflow_run_is_marked_failed_when_training_fails(write_config, mlflow_uri, monkeypatch):
    import mlcli.training.fit
    from mlcli.training.train import train

    def diverge(*args: object, **kwargs: object) -> None:
        raise TrainingDivergedError("the training loss became nan at epoch 1")

    monkeypatch.setattr(mlcli.training.fit, "fit_run", diverge)
    path = write_config(tracking={"mlflow": {"uri": mlflow_uri, "experiment": "failing"}})
    with pytest.raises(TrainingDivergedError):
        train(path)
    _, logged = _only_run(mlflow_uri, "failing")
    assert logged.info.status == "FAILED"
    assert "nan at epoch 1" in logged.data.tags["mlcli.error"]


@pytest.mark.parametrize(
    "uri",
    [
        "http://ann:s3cret-pw@127.0.0.1:9/",  # nothing listens on the discard port
        "https://ann:s3cret-pw@127.0.0.1:9",
        "postgresql+psycopg2://ann:s3cret-pw@127.0.0.1:9/mlflow",  # a driver, or no server
        "nosuchscheme://ann:s3cret-pw@host/",
    ],
)
def test_a_store_that_cannot_start_the_run_is_one_masked_config_error(uri, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlcli.reporting import QuietReporter
    from mlcli.tracking.tracker import start_tracking

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    config = parse_config(
        {
            "name": "x",
            "data": {"train": "t.csv"},
            "target": {"column": "y"},
            "tracking": {"mlflow": {"uri": uri}},
        }
    )
    run = Run(tmp_path / "run")
    run.path.mkdir()
    with pytest.raises(ConfigError) as raised:
        start_tracking(config, run, QuietReporter())
    message = str(raised.value)
    assert message.startswith("tracking.mlflow.uri: MLflow at ")
    assert "\n" not in message and "s3cret-pw" not in message
    assert "ann:***@" in message
    assert not (run.path / "mlflow.json").exists()
