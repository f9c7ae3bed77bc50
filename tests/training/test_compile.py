"""How the core is compiled: the metrics logged per task, the early-stopping monitor checked
against them before TensorFlow is needed, the optimizer and its weight decay."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mlcli.config.loading import parse_config
from mlcli.config.training import TrainingConfig
from mlcli.errors import ConfigError
from mlcli.training.compile import LOGGED_METRICS, check_monitor, loss_and_metrics, make_optimizer


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_the_logged_metrics_are_what_the_core_is_compiled_with(task):
    _, metrics = loss_and_metrics(task, auc=True)
    assert LOGGED_METRICS[task] == ("loss", *(metric.name for metric in metrics))


def _config(monitor: str):
    return parse_config(
        {
            "name": "monitor",
            "data": {"train": "data.csv"},
            "target": {"column": "y"},
            "training": {"early_stopping": {"monitor": monitor}},
        }
    )


def test_the_monitor_must_be_logged_for_the_task():
    check_monitor(_config("val_rmse"), "regression")
    check_monitor(_config("auc"), "binary")
    with pytest.raises(ConfigError) as raised:
        check_monitor(_config("val_rmse"), "binary")
    message = str(raised.value)
    assert "training.early_stopping.monitor" in message and "'val_rmse'" in message
    assert "val_auc" in message and "binary" in message


def test_optimizers_carry_the_configured_weight_decay():
    import keras

    optimizer = make_optimizer(TrainingConfig(optimizer="adamw", weight_decay=0.03))
    assert isinstance(optimizer, keras.optimizers.AdamW)
    assert optimizer.weight_decay == pytest.approx(0.03)


def test_training_modules_that_run_before_fit_do_not_import_tensorflow():
    code = (
        "import sys, mlcli.training.train, mlcli.training.compile, mlcli.training.data; "
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_learning_rate_schedules():
    from mlcli.training.compile import schedule_callbacks

    cosine = TrainingConfig(learning_rate_schedule="cosine", epochs=4, learning_rate=0.01)
    optimizer = make_optimizer(cosine, steps_per_epoch=10)
    schedule = optimizer._learning_rate
    assert float(schedule(0)) == pytest.approx(0.01)
    assert float(schedule(40)) == pytest.approx(0.0, abs=1e-7)
    assert schedule_callbacks(cosine) == []
    plateau = schedule_callbacks(TrainingConfig(learning_rate_schedule="reduce_on_plateau"))
    assert [type(c).__name__ for c in plateau] == ["ReduceLROnPlateau"]
    assert TrainingConfig().optimizer == "adamw"
    assert TrainingConfig().weight_decay > 0
