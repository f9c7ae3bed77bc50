"""One trial of `mlcli tune` (`run_trial`), with stand-in runs: what a complete, a diverged and
a wrongly scored trial record, and trials.json in the order of the numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlcli.config.loading import read_document
from mlcli.errors import ConfigError, TrainingDivergedError
from mlcli.runs import directory as run_files
from mlcli.training.trials import (
    COMPLETE,
    FAILED,
    TrialPlan,
    TrialResult,
    run_trial,
    score,
    trial_name,
    write_trials,
)


@pytest.fixture
def plan(write_config: Any, tmp_path: Path) -> TrialPlan:
    path = write_config()
    document, references = read_document(path, overrides=[])
    return TrialPlan(
        document=document,
        references=references,
        metric="validation.loss",
        source=str(path),
        folder=path.parent,
        directory=tmp_path / "search",
    )


@pytest.fixture
def trained(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Stand-in `train`: dropout 0.5 diverges, any other writes a loss of 1 - dropout."""
    import mlcli.training.train

    configs: list[Any] = []

    def fake_train(config: Any, *, output_dir: Path, device: str | None) -> Path:
        configs.append(config)
        if config.model.dropout == 0.5:
            raise TrainingDivergedError("the loss became NaN at epoch 1")
        run = Path(output_dir) / config.name / "run-1"
        run.mkdir(parents=True)
        loss = 1.0 - config.model.dropout
        (run / run_files.METRICS).write_text(json.dumps({"validation": {"loss": loss}}))
        return run

    monkeypatch.setattr(mlcli.training.train, "train", fake_train)
    return configs


def test_a_trial_trains_its_values_under_its_own_folder(plan, trained):
    result = run_trial(plan, 3, {"model.dropout": 0.25})
    assert result.state == COMPLETE and result.score == pytest.approx(0.75)
    assert result.metrics == {"validation": {"loss": 0.75}}
    assert Path(result.run or "").parent == plan.directory / "trial-003"
    assert trained[0].name == "trial-003" and trained[0].model.dropout == 0.25


def test_a_diverged_trial_is_failed_with_its_reason(plan, trained):
    result = run_trial(plan, 0, {"model.dropout": 0.5})
    assert result.state == FAILED and result.score is None and result.run is None
    assert "NaN" in (result.error or "")


def test_a_metric_missing_from_the_run_is_a_config_error_naming_what_is_there(plan, trained):
    wrong = TrialPlan(**{**vars(plan), "metric": "validation.accuracy"})
    with pytest.raises(ConfigError) as raised:
        run_trial(wrong, 0, {"model.dropout": 0.1})
    assert "tune.metric" in str(raised.value) and "'loss'" in str(raised.value)


@pytest.mark.parametrize("metric", ["validation", "test.loss", "validation.loss.x", ""])
def test_score_names_the_metric_it_cannot_find(metric):
    with pytest.raises(ConfigError, match=r"tune\.metric"):
        score({"validation": {"loss": 0.3}}, metric, "config.yaml")


def test_trials_json_lists_the_trials_by_number(tmp_path):
    results = [TrialResult(n, {"model.dropout": n / 10}, COMPLETE, score=n) for n in (2, 0, 1)]
    write_trials(tmp_path, results)
    written = json.loads((tmp_path / "trials.json").read_text())
    assert [t["number"] for t in written] == [0, 1, 2]
    assert set(written[0]) == {
        "number",
        "values",
        "state",
        "score",
        "metrics",
        "run",
        "seconds",
        "error",
    }


def test_trial_names_sort_as_their_numbers():
    names = [trial_name(n) for n in (0, 9, 10, 99, 100)]
    assert names == sorted(names) and names[0] == "trial-000"


def test_the_plan_pickles_as_a_ray_task_argument(plan):
    import pickle

    assert pickle.loads(pickle.dumps(plan)) == plan
    assert yaml.safe_dump(plan.document)  # plain YAML values, no parsed objects
