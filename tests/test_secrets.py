"""Secrets never reach an artifact or a message.

`mask_secrets` (mlcli/errors.py) masks URI passwords, credential query values and every value
filled from `${VAR}`; the reporters mask every line they write. A run keeps `${VAR}` as written
(`config_to_yaml`): its files, `mlflow.json`, MLflow's parameters and the best config of a
tune hold no filled value, and `--resume` fills the reference again.
"""

from __future__ import annotations

import io
import json
import string
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from mlcli.cli.app import app
from mlcli.errors import MASK, SHORTEST_SECRET, mask_secrets, remember_secret
from mlcli.reporting import JsonReporter, Reporter

runner = CliRunner()


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("http://ann:s3cret@mlflow.example/", "http://ann:***@mlflow.example/"),
        ("https://ann:s3cret@mlflow.example:5000/api", "https://ann:***@mlflow.example:5000/api"),
        (
            "postgresql+psycopg2://ann:s3cret@db:5432/mlflow",
            "postgresql+psycopg2://ann:***@db:5432/mlflow",
        ),
        ("mysql://ann:s3cret@db/mlflow", "mysql://ann:***@db/mlflow"),
        ("http://:s3cret@host", "http://:***@host"),  # a token as the password alone
        ("http://ann:p@ss:w@host:80/", "http://ann:***@host:80/"),  # an unencoded @ and :
        ("MLflow at 'http://ann:s3cret@host/' refused", "MLflow at 'http://ann:***@host/' refused"),
        ("a http://a:x1@h/ and b https://b:y2@k/", "a http://a:***@h/ and b https://b:***@k/"),
        ("https://host/path?token=s3cret&x=1", "https://host/path?token=***&x=1"),
        ("https://host/?X-Amz-Signature=abc123", "https://host/?X-Amz-Signature=***"),
    ],
)
def test_uri_passwords_are_masked(text: str, masked: str):
    assert mask_secrets(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "http://ann@mlflow.example/",  # a user without a password
        "http://mlflow.example:5000/",  # a port is no password
        "sqlite:///runs/mlflow.db",
        "http://host:5000/a?user=ann@example.org",
        "[epoch] 1/2 loss=0.6931 val_loss=0.6920 (0.3s)",
        "config key `training.epocs` is not allowed (did you mean `epochs`?)",
    ],
)
def test_text_without_a_password_is_unchanged(text: str):
    assert mask_secrets(text) == text


_PASSWORD = st.text(string.ascii_letters + string.digits + "-._~!$&'()*+,;=%@:", min_size=1)
_NAME = st.text(string.ascii_lowercase + string.digits + "-", min_size=1, max_size=12)


@given(
    scheme=st.sampled_from(["http", "https", "postgresql+psycopg2", "mysql", "mssql+pyodbc"]),
    user=st.text(string.ascii_letters + string.digits + "._-", max_size=10),
    password=_PASSWORD,
    host=_NAME,
    port=st.sampled_from(["", ":5000", ":5432"]),
    path=st.sampled_from(["", "/", "/mlflow", "/api/2.0/mlflow/runs/create"]),
)
def test_any_password_of_any_uri_is_masked(scheme, user, password, host, port, path):
    uri = f"{scheme}://{user}:{password}@{host}{port}{path}"
    masked = mask_secrets(f"error: tracking.mlflow.uri: MLflow at {uri!r} refused the run")
    assert f"{scheme}://{user}:{MASK}@{host}{port}{path}" in masked
    assert f":{password}@" not in masked


def test_a_remembered_value_is_masked_a_short_one_is_not():
    secret = "tok-" + "7f3a9c" * 3
    remember_secret(secret)
    remember_secret("gpu")  # shorter than SHORTEST_SECRET: would mask ordinary words
    assert len("gpu") < SHORTEST_SECRET
    assert mask_secrets(f"refused {secret}, on gpu") == f"refused {MASK}, on gpu"


def test_the_reporters_mask_every_line():
    secret = "pw-" + "d41d8c" * 3 + '"\\'  # JSON escapes these two
    remember_secret(secret)
    text, records = io.StringIO(), io.StringIO()
    for reporter in (Reporter(text), JsonReporter(records)):
        reporter.event("mlflow", f"run 1 in http://ann:hunter2@host/ {secret}")
        reporter.event("data", path=f"/x?token={secret}")
        reporter.warning(f"could not reach http://ann:hunter2@host/ with {secret}")
    for output in (text.getvalue(), records.getvalue()):
        assert "hunter2" not in output and "d41d8c" not in output
        assert "http://ann:***@host/" in output
    assert all(json.loads(line) for line in records.getvalue().splitlines())


# -- a run, a tune and MLflow keep references -----------------------------------------------


def _grep(folder: Path, *secrets: str) -> list[str]:
    """The files under `folder` that hold any of `secrets`."""
    return [
        str(path)
        for path in folder.rglob("*")
        if path.is_file() and any(s.encode() in path.read_bytes() for s in secrets)
    ]


@pytest.mark.slow
def test_a_run_holds_references_never_the_values(write_config, tmp_path, monkeypatch):
    """A secret in MLflow's URI and one in a CSV setting: absent from the run, `mlflow.json`,
    MLflow's parameters and every line the command wrote; `--resume` fills them again."""
    pytest.importorskip("mlflow")
    import mlcli.training.fit

    store = tmp_path / "vault-Zq8uTn4"
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    na_token = "NA-k3Y9pX2w"
    monkeypatch.setenv("MLFLOW_STORE_URI", uri)
    monkeypatch.setenv("NA_TOKEN", na_token)
    monkeypatch.chdir(tmp_path)  # a sqlite store keeps artifacts in ./mlruns
    path = write_config(
        data={"csv": {"na_values": ["", "${NA_TOKEN}"]}},
        tracking={"mlflow": {"uri": "${MLFLOW_STORE_URI}", "experiment": "secrets"}},
        training={"epochs": 2, "batch_size": 32, "steps_per_execution": 1},
    )
    secrets = (uri, "Zq8uTn4", na_token)

    real_fit = mlcli.training.fit.fit_run

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(mlcli.training.fit, "fit_run", interrupted)
    first = runner.invoke(app, ["train", str(path)])
    assert first.exit_code == 130, first.output
    partial = next((tmp_path / "runs" / "tiny").glob(".*.partial"))
    saved = yaml.safe_load((partial / "config.yaml").read_text())
    assert saved["tracking"]["mlflow"]["uri"] == "${MLFLOW_STORE_URI}"
    assert saved["data"]["csv"]["na_values"] == ["", "${NA_TOKEN}"]

    monkeypatch.setattr(mlcli.training.fit, "fit_run", real_fit)
    resumed = runner.invoke(app, ["train", str(path), "--resume", str(partial)])
    assert resumed.exit_code == 0, resumed.output
    run = Path(resumed.stdout.strip().splitlines()[-1])
    assert (run / "model.keras").is_file()
    assert _grep(run, *secrets) == []
    assert json.loads((run / "mlflow.json").read_text())["tracking_uri"] == "${MLFLOW_STORE_URI}"
    for output in (first.output, resumed.output):
        assert not any(secret in output for secret in secrets)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    (logged,) = client.search_runs([client.get_experiment_by_name("secrets").experiment_id])
    assert logged.info.status == "FINISHED"  # the resumed run reached the same MLflow run
    assert logged.data.params["tracking.mlflow.uri"] == "${MLFLOW_STORE_URI}"
    assert logged.data.params["data.csv.na_values"] == '["", "${NA_TOKEN}"]'
    values = [*logged.data.params.values(), *logged.data.tags.values()]
    assert not any(secret in value for value in values for secret in secrets)
    assert _grep(tmp_path / "mlruns", *secrets) == []  # MLflow's copies of the run's files


def test_a_tune_writes_references_in_every_trial_and_the_best_config(write_config, monkeypatch):
    """The trials' runs are stand-ins here: what matters is the config each one receives."""
    pytest.importorskip("optuna")
    import mlcli._tensorflow
    import mlcli.training.train
    from mlcli.config.loading import config_to_yaml, load_config
    from mlcli.training.tune import tune

    secret = "pw-9f8e7d6c5b"
    monkeypatch.setenv("TEAM_TOKEN", secret)
    written: list[str] = []

    def fake_train(config, *, output_dir, device):
        written.append(config_to_yaml(config))
        run = Path(output_dir) / config.name
        run.mkdir(parents=True)
        metrics = {"validation": {"loss": abs(config.model.dropout - 0.2)}}
        (run / "metrics.json").write_text(json.dumps(metrics))
        return run

    monkeypatch.setattr(mlcli.training.train, "train", fake_train)
    monkeypatch.setattr(mlcli._tensorflow, "import_tensorflow", lambda **kwargs: None)
    path = write_config(
        tracking={"mlflow": {"uri": "http://ann:${TEAM_TOKEN}@mlflow.example/"}},
        tune={"parameters": {"model.dropout": {"low": 0.0, "high": 0.5}}},
    )
    result = tune(path, trials=3)
    assert len(written) == 3
    assert all("http://ann:${TEAM_TOKEN}@mlflow.example/" in text for text in written)
    best = result.best_config.read_text()
    assert secret not in best and "${TEAM_TOKEN}" in best
    assert _grep(result.directory, secret) == []
    reloaded = load_config(result.best_config)  # the reference is filled again
    assert reloaded.tracking is not None and reloaded.tracking.mlflow is not None
    assert reloaded.tracking.mlflow.uri == f"http://ann:{secret}@mlflow.example/"
    assert reloaded.model.dropout == pytest.approx(result.best.values["model.dropout"])


def test_runs_show_diff_compares_references_as_written(tmp_path, monkeypatch):
    """Two runs whose configs differ in a reference and in a plain key: the diff shows both
    as written, never a filled value."""
    from mlcli.runs.listing import config_diff, read_config

    monkeypatch.setenv("TOKEN_A", "secret-aaaaaa")
    configs = []
    for name, variable, epochs in (("a", "${TOKEN_A}", 2), ("b", "${TOKEN_B:-x}", 3)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "data.csv").write_text("x,y\n1,0\n")
        (folder / "config.yaml").write_text(
            yaml.safe_dump(
                {
                    "name": "diff",
                    "data": {"train": "data.csv"},
                    "target": {"column": "y"},
                    "training": {"epochs": epochs},
                    "tracking": {"mlflow": {"experiment": variable}},
                }
            )
        )
        from mlcli.config.loading import config_to_yaml, load_config

        saved = config_to_yaml(load_config(folder / "config.yaml"))
        (folder / "config.yaml").write_text(saved)
        configs.append(read_config(folder))
    diff = {row["key"]: (row["run"], row["other"]) for row in config_diff(*configs)}
    assert diff["tracking.mlflow.experiment"] == ("${TOKEN_A}", "${TOKEN_B:-x}")
    assert diff["training.epochs"] == (2, 3)
    assert "secret-aaaaaa" not in json.dumps(diff)
