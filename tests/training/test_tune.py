"""`mlcli tune`: two tiny trials, each a run of its own, the best config written and usable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mlcli.cli.app import app
from mlcli.config.loading import load_config

runner = CliRunner()

pytest.importorskip("optuna")


@pytest.mark.slow
def test_two_trials_write_runs_a_table_and_the_best_config(write_config, tmp_path):
    path = write_config(
        model={"hidden_units": [8], "dropout": 0.0},
        tune={
            "metric": "validation.accuracy",
            "parameters": {
                "model.dropout": {"low": 0.0, "high": 0.3},
                "model.hidden_units": {"choices": [[8], [16, 8]]},
                "training.learning_rate": {"low": 1e-3, "high": 1e-2, "log": True},
            },
        },
    )
    result = runner.invoke(app, ["tune", str(path), "--trials", "2"])
    assert result.exit_code == 0, result.output
    best_config = Path(result.stdout.strip().splitlines()[-1])
    assert best_config.name == "best-config.yaml" and best_config.is_file()
    assert "validation.accuracy" in result.stdout and "model.hidden_units" in result.stdout

    trials = json.loads((best_config.parent / "trials.json").read_text())
    assert [t["number"] for t in trials] == [0, 1]
    # the first trial is the config's own values; each trial is a complete run of its own
    assert trials[0]["values"]["model.dropout"] == 0.0
    assert trials[0]["values"]["model.hidden_units"] == [8]
    runs = {t["run"] for t in trials}
    assert len(runs) == 2 and all((Path(r) / "model.keras").is_file() for r in runs)
    for trial in trials:
        metrics = json.loads((Path(trial["run"]) / "metrics.json").read_text())
        assert trial["score"] == metrics["validation"]["accuracy"]

    best = max(trials, key=lambda t: t["score"])
    config = load_config(best_config)
    assert config.name == "tiny"
    assert config.model.hidden_units == best["values"]["model.hidden_units"]
    assert config.training.learning_rate == pytest.approx(best["values"]["training.learning_rate"])
    assert Path(str(config.data.train)).is_absolute()


def test_a_config_without_tune_section_is_a_config_error(write_config):
    result = runner.invoke(app, ["tune", str(write_config()), "--trials", "1"])
    assert result.exit_code == 2
    assert "`tune`" in result.stderr


def test_a_searched_key_that_is_not_a_config_key_is_named(write_config):
    path = write_config(tune={"parameters": {"model.dropuot": {"low": 0.0, "high": 0.2}}})
    result = runner.invoke(app, ["tune", str(path), "--trials", "1"])
    assert result.exit_code == 2
    assert "tune.parameters.model.dropuot" in result.stderr
    assert "dropout" in result.stderr


def test_a_range_with_low_above_high_is_rejected(write_config):
    path = write_config(tune={"parameters": {"model.dropout": {"low": 0.3, "high": 0.1}}})
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "tune.parameters.model.dropout" in result.stderr


def test_the_tune_section_round_trips_through_yaml(write_config):
    path = write_config(tune={"parameters": {"model.hidden_units": {"choices": [[4], [8]]}}})
    config = load_config(path)
    assert config.tune is not None
    assert yaml.safe_load(yaml.safe_dump(config.model_dump(mode="json")))["tune"]["parameters"]


def test_the_search_keeps_the_best_trial_by_the_metrics_direction(write_config, monkeypatch):
    """The runs are stand-ins here (the slow test above trains for real): a run's validation
    loss is its distance from dropout 0.2, so the best trial is the one closest to it."""
    import mlcli.training.train
    from mlcli.runs import directory as run_files
    from mlcli.training.tune import tune

    def fake_train(config, *, output_dir, device):
        run = Path(output_dir) / config.name
        run.mkdir(parents=True)
        loss = abs(config.model.dropout - 0.2)
        metrics = {"validation": {"loss": loss}, "test": {"loss": loss + 0.01}}
        (run / run_files.METRICS).write_text(json.dumps(metrics))
        return run

    monkeypatch.setattr(mlcli.training.train, "train", fake_train)
    path = write_config(tune={"parameters": {"model.dropout": {"low": 0.0, "high": 0.5}}})
    result = tune(path, trials=6)
    assert result.direction == "minimize" and len(result.trials) == 6
    scores = [t.score for t in result.trials]
    assert result.best.score == min(scores)
    assert result.trials[0].values == {"model.dropout": 0.0}  # the config's own value first
    written = load_config(result.best_config)
    assert written.model.dropout == pytest.approx(result.best.values["model.dropout"])
