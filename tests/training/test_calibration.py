"""`training.calibration`: the fits on generated probabilities, the tasks each method suits,
and a tiny run whose saved model carries its calibration into evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mlcli.cli.app import app
from mlcli.config.loading import parse_config
from mlcli.errors import ConfigError
from mlcli.training.calibration import (
    check_calibration,
    fit_isotonic,
    fit_temperature,
    temperature_log_loss,
)

runner = CliRunner()


def _over_confident(rows: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from true probabilities, and outputs with the true logits tripled."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.0, (rows, classes))
    true = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(classes, p=p) for p in true])
    sharp = np.exp(3 * logits) / np.exp(3 * logits).sum(axis=1, keepdims=True)
    if classes == 2:
        return sharp[:, 1:], labels
    return sharp, labels


@pytest.mark.parametrize(("classes", "seed"), [(2, 0), (2, 1), (4, 2)])
def test_temperature_reduces_the_log_loss_of_an_over_confident_model(classes, seed):
    from mlcli.training.calibration import _logits

    outputs, labels = _over_confident(3000, classes, seed)
    temperature = fit_temperature(outputs, labels)
    logits = _logits(outputs)
    assert temperature == pytest.approx(3.0, rel=0.2)  # it undoes the tripling
    fitted = temperature_log_loss(logits, labels, temperature)
    assert fitted < temperature_log_loss(logits, labels, 1.0) - 0.05
    for nearby in (temperature * 0.9, temperature * 1.1):  # a minimum
        assert fitted <= temperature_log_loss(logits, labels, nearby)


def test_isotonic_breakpoints_increase_and_stay_probabilities():
    outputs, labels = _over_confident(2000, 2, 3)
    x, y = fit_isotonic(outputs, labels)
    assert np.all(np.diff(x) > 0)
    assert np.all(np.diff(y) >= 0)
    assert 0.0 <= min(y) <= max(y) <= 1.0


def _config(task: str, calibration: str):
    return parse_config(
        {
            "name": "c",
            "target": {"column": "label", "task": task},
            "data": {"train": "x.csv"},
            "training": {"calibration": calibration},
        }
    )


@pytest.mark.parametrize(
    ("task", "calibration", "message"),
    [
        ("regression", "temperature", "'temperature' does not apply to a regression task"),
        ("multiclass", "isotonic", "expected temperature or none"),
        ("regression", "isotonic", "expected none"),
    ],
)
def test_a_method_that_does_not_suit_the_task_is_a_config_error(task, calibration, message):
    with pytest.raises(ConfigError, match=message) as raised:
        check_calibration(_config(task, calibration), task)
    assert "training.calibration" in str(raised.value)
    assert raised.value.exit_code == 2


@pytest.mark.parametrize(
    ("task", "calibration"),
    [("binary", "temperature"), ("binary", "isotonic"), ("multiclass", "temperature")],
)
def test_methods_that_suit_the_task_pass(task, calibration):
    check_calibration(_config(task, calibration), task)
    check_calibration(_config("regression", "none"), "regression")


@pytest.mark.parametrize(
    ("target", "task", "calibration"),
    [
        ("label", "binary", "isotonic"),
        pytest.param("tier", "multiclass", "temperature", marks=pytest.mark.slow),
    ],
)
def test_a_calibrated_run_keeps_the_layer_and_evaluate_reports_before_and_after(
    write_config, tiny_csv, tmp_path, target, task, calibration
):
    from mlcli.training.train import train

    exclude = [c for c in ("id", "tier", "value", "label") if c != target]
    config = write_config(
        target={"column": target, "task": task},
        features={"review": "text", "grade": "categorical", "exclude": exclude},
        training={"epochs": 2, "batch_size": 32, "calibration": calibration},
    )
    run = Path(train(config))
    manifest = json.loads((run / "manifest.json").read_text())
    record = manifest["calibration"]
    assert record["method"] == calibration
    assert record["rows"] == 100  # the validation split
    assert record["after"]["log_loss"] <= record["before"]["log_loss"] + 1e-9
    assert manifest["checks"]["composition"]["passed"] is True
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(tiny_csv), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout.splitlines()[-1])
    for name in ("ece", "brier", "log_loss"):
        assert f"uncalibrated/{name}" in metrics
    folder = max((run / "evaluations").iterdir())
    report = (folder / "report.md").read_text()
    assert f"calibration: {calibration}" in report
    assert "| ece |" in report
