"""The `training:` section's learning rate: `auto` by task, numbers as given."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mlcli.config.training import (
    AUTO_LEARNING_RATES,
    TrainingConfig,
    learning_rate_of,
    resolved_learning_rate,
)

TASKS = ("binary", "multiclass", "regression")


def test_auto_is_the_default_and_every_task_has_a_rate():
    assert TrainingConfig().learning_rate == "auto"
    assert set(AUTO_LEARNING_RATES) == set(TASKS)
    assert all(0.0 < rate <= 10.0 for rate in AUTO_LEARNING_RATES.values())


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd", "rmsprop"])
def test_auto_resolves_to_the_tasks_rate_for_every_optimizer(task, optimizer):
    training = TrainingConfig(optimizer=optimizer)
    assert resolved_learning_rate(training, task) == AUTO_LEARNING_RATES[task]


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("rate", [1e-6, 0.003, 10.0])
def test_a_number_is_kept_whatever_the_task(task, rate):
    training = TrainingConfig(learning_rate=rate)
    assert resolved_learning_rate(training, task) == rate
    assert learning_rate_of(training) == rate


def test_an_unresolved_auto_cannot_reach_the_optimizer():
    with pytest.raises(ValueError, match=r"training\.learning_rate is `auto`"):
        learning_rate_of(TrainingConfig())


@pytest.mark.parametrize("value", [0.0, -0.001, 10.5, "fast", "AUTO", None])
def test_anything_but_auto_or_a_rate_in_range_is_rejected(value):
    with pytest.raises(ValidationError, match="learning_rate"):
        TrainingConfig(learning_rate=value)
