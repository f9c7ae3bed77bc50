"""`mlcli tune --ray --parallel K`: the trials as Ray tasks on the session's local Ray.

The fast tests give `search_on_ray` stand-in trials (a score computed from the values, a
failed trial, a worker that dies, a trial that never ends) so that they take seconds; the
slow test at the bottom trains for real and compares with sequential tune.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mlcli.cli.app import app
from mlcli.errors import ConfigError, InterruptedRunError
from mlcli.training.trials import COMPLETE, FAILED, TrialPlan, TrialResult
from mlcli.training.tune_ray import search_on_ray, trial_shape

optuna = pytest.importorskip("optuna")
runner = CliRunner()

TUNED = {
    "metric": "validation.loss",
    "parameters": {
        "model.dropout": {"low": 0.0, "high": 0.5},
        "training.learning_rate": {"low": 1e-3, "high": 1e-2, "log": True},
    },
}


@pytest.fixture
def ray_here(ray_local: Any) -> Any:
    """The session's Ray, with this module's stand-in trials sent to its workers by value
    (the workers cannot import a test module)."""
    ray_local.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray_local
    ray_local.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _stand_in(values: dict[str, Any]) -> float:
    """A trial's score without training: the distance of its dropout from 0.2."""
    return abs(values["model.dropout"] - 0.2)


def scored(plan: TrialPlan, number: int, values: dict[str, Any], cpus: int) -> TrialResult:
    return TrialResult(number, values, COMPLETE, score=_stand_in(values), seconds=0.1)


def failing_second(plan: TrialPlan, number: int, values: dict[str, Any], cpus: int) -> TrialResult:
    """Trial 1 fails as a diverged run does (`run_trial` records it so)."""
    if number == 1:
        return TrialResult(number, values, FAILED, error="the loss became NaN at epoch 1")
    return scored(plan, number, values, cpus)


def crashing_second(plan: TrialPlan, number: int, values: dict[str, Any], cpus: int) -> TrialResult:
    """Trial 1's worker process dies."""
    if number == 1:
        os._exit(1)
    return scored(plan, number, values, cpus)


def wrong_metric_second(
    plan: TrialPlan, number: int, values: dict[str, Any], cpus: int
) -> TrialResult:
    """Trial 1 fails as a search does whose `tune.metric` is not in the run's metrics."""
    if number == 1:
        raise ConfigError("config.yaml: config key `tune.metric`: 'validation.nope' is not in")
    return scored(plan, number, values, cpus)


def endless_after_first(
    plan: TrialPlan, number: int, values: dict[str, Any], cpus: int
) -> TrialResult:
    if number > 0:
        time.sleep(120)
    return scored(plan, number, values, cpus)


def one_second(plan: TrialPlan, number: int, values: dict[str, Any], cpus: int) -> TrialResult:
    time.sleep(1.0)
    return scored(plan, number, values, cpus)


def _study() -> Any:
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=7))
    study.enqueue_trial({"model.dropout": 0.0, "training.learning_rate": 1e-3})
    return study


def _propose(trial: Any) -> dict[str, Any]:
    return {
        "model.dropout": trial.suggest_float("model.dropout", 0.0, 0.5),
        "training.learning_rate": trial.suggest_float(
            "training.learning_rate", 1e-3, 1e-2, log=True
        ),
    }


def _plan(folder: Path) -> TrialPlan:
    return TrialPlan({}, {}, "validation.loss", "config.yaml", folder, folder)


def _search(folder: Path, task: Any, **options: Any) -> list[TrialResult]:
    options = {"trials": 6, "parallel": 2, **options}
    return search_on_ray(
        _study(), _plan(folder), propose=_propose, address="local", task=task, **options
    )


def test_parallel_trials_get_the_values_sequential_optuna_proposes(ray_here, tmp_path):
    """6 trials, within TPE's 10 random start-up trials: the values do not depend on K."""
    study = _study()
    study.optimize(lambda trial: _stand_in(_propose(trial)), n_trials=6)
    sequential = [trial.params for trial in study.trials]

    results = sorted(_search(tmp_path, scored), key=lambda r: r.number)
    assert [r.number for r in results] == list(range(6))
    assert [r.values for r in results] == sequential
    assert results[0].values["model.dropout"] == 0.0  # the enqueued first trial


def test_a_failed_trial_is_recorded_and_the_search_goes_on(ray_here, tmp_path):
    results = sorted(_search(tmp_path, failing_second, trials=4), key=lambda r: r.number)
    assert [r.state for r in results] == [COMPLETE, FAILED, COMPLETE, COMPLETE]
    assert results[1].score is None and "NaN" in (results[1].error or "")


def test_a_worker_that_dies_fails_its_trial_with_the_reason(ray_here, tmp_path):
    results = sorted(_search(tmp_path, crashing_second, trials=3), key=lambda r: r.number)
    assert [r.state for r in results] == [COMPLETE, FAILED, COMPLETE]
    assert "Ray worker died" in (results[1].error or "")
    assert results[1].values and results[1].score is None


def test_an_error_of_the_search_itself_ends_it_as_sequential_tune_does(ray_here, tmp_path):
    """Not a failed trial: the trial's own `ConfigError` (exit 2), not Ray's wrapper."""
    with pytest.raises(ConfigError) as raised:
        _search(tmp_path, wrong_metric_second, trials=4)
    assert type(raised.value) is ConfigError and raised.value.exit_code == 2
    assert str(raised.value).startswith("config.yaml: config key `tune.metric`")


def test_an_interrupt_cancels_the_running_trials_and_writes_the_finished(ray_here, tmp_path):
    def interrupt(result: TrialResult) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, as the first trial finishes
        time.sleep(1.0)  # the handler raises KeyboardInterrupt meanwhile

    started = time.monotonic()
    with pytest.raises(InterruptedRunError) as raised:
        _search(tmp_path, endless_after_first, trials=4, on_result=interrupt)
    assert raised.value.exit_code == 130
    assert time.monotonic() - started < 30  # the endless trial was cancelled
    written = json.loads((tmp_path / "trials.json").read_text())
    assert [t["number"] for t in written] == [0]


def test_no_trial_starts_after_the_timeout(ray_here, tmp_path):
    results = _search(tmp_path, one_second, trials=10, parallel=1, timeout=1.5)
    assert 1 <= len(results) <= 3


@pytest.mark.parametrize(
    ("cpus", "node", "trials", "parallel", "expected"),
    [
        (2, 2, 4, None, (2, 1)),  # one trial per CPU
        (2, 2, 4, 2, (2, 1)),
        (16, 16, 4, None, (4, 4)),  # fewer trials than CPUs: the CPUs shared among them
        (16, 16, 10, 2, (2, 8)),
        (64, 16, 2, None, (2, 16)),  # a trial never asks for more than one node has
        (2, 2, 10, 8, (8, 1)),  # more at once than CPUs: Ray queues them, one CPU each
        (2, 2, 1, 4, (1, 2)),
        (0.5, 0.5, 3, None, (1, 1)),
    ],
)
def test_trials_share_the_cluster_cpus(cpus, node, trials, parallel, expected):
    shape = trial_shape(cluster_cpus=cpus, node_cpus=node, trials=trials, parallel=parallel)
    assert shape == expected
    at_once, per_trial = shape
    assert 1 <= at_once <= trials and per_trial >= 1


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_parallel_without_ray_is_a_usage_error(write_config):
    result = runner.invoke(app, ["tune", str(write_config(tune=TUNED)), "--parallel", "2"])
    assert result.exit_code == 2
    assert "--parallel 2" in result.stderr and "--ray" in result.stderr


def test_an_unreachable_address_exits_2_within_seconds(write_config, tmp_path):
    path = write_config(tune=TUNED)
    address = f"127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    result = runner.invoke(app, ["tune", str(path), "--ray", address, "--parallel", "2"])
    assert result.exit_code == 2, result.output
    assert time.monotonic() - started < 10
    assert address in result.stderr
    assert not (tmp_path / "runs").exists()  # nothing written before the check


def test_without_ray_it_says_which_extra_to_install(write_config, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    result = runner.invoke(app, ["tune", str(write_config(tune=TUNED)), "--ray"])
    assert result.exit_code == 2
    assert "install mlcli[ray]" in result.stderr


@pytest.mark.parametrize("device", ["gpu", "gpu:0,1"])
def test_a_gpu_device_on_ray_is_a_config_error(write_config, device):
    path = write_config(tune=TUNED)
    result = runner.invoke(app, ["tune", str(path), "--ray", "--device", device])
    assert result.exit_code == 2
    assert f"--device {device}" in result.stderr


def _threads_after_limit(cpus: int) -> tuple[int, int]:
    import tensorflow as tf

    from mlcli.training.tune_ray import limit_threads

    limit_threads(cpus)
    tf.constant(0)  # the runtime starts with the limits
    threading = tf.config.threading
    return (
        threading.get_intra_op_parallelism_threads(),
        threading.get_inter_op_parallelism_threads(),
    )


@pytest.mark.slow
def test_ray_tune_finds_the_best_trial_of_sequential_tune(ray_here, write_config, tmp_path):
    """Real trials: `--ray --parallel 2` against sequential tune, same seed, 3 trials (within
    TPE's random start-up trials): the same values, scores and best trial, the same files."""
    path = write_config(model={"hidden_units": [8]}, tune=TUNED)

    def tuned(*extra: str) -> tuple[Path, list[dict[str, Any]]]:
        output = tmp_path / ("ray" if extra else "sequential")
        args = ["tune", str(path), "--trials", "3", "--output", str(output), *extra]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        best_config = Path(result.stdout.strip().splitlines()[-1])
        return best_config, json.loads((best_config.parent / "trials.json").read_text())

    sequential_best, sequential = tuned()
    ray_best, on_ray = tuned("--ray", "--parallel", "2")

    assert [t["number"] for t in on_ray] == [0, 1, 2]
    assert [set(t) for t in on_ray] == [set(t) for t in sequential]
    for here, there in zip(sequential, on_ray, strict=True):
        assert there["values"] == here["values"]
        assert there["state"] == here["state"] == COMPLETE
        assert there["score"] == pytest.approx(here["score"], rel=1e-3)
        run = Path(there["run"])
        assert run.parent.name == f"trial-{there['number']:03d}" and (run / "model.keras").is_file()
        assert run.parents[1] == ray_best.parent  # runs/<name>-tune/<id>/trial-NNN/<run-id>
    best = [min(trials, key=lambda t: t["score"])["number"] for trials in (sequential, on_ray)]
    assert best[0] == best[1]
    assert ray_best.read_text() == sequential_best.read_text()

    threads = ray_here.get(ray_here.remote(num_cpus=1)(_threads_after_limit).remote(1))
    assert threads == (1, 1)


@pytest.mark.slow
def test_sigterm_stops_the_search_with_exit_130_and_the_finished_trials(write_config, tmp_path):
    """The whole command in a child process with a Ray instance of its own: SIGTERM after the
    first trial finished cancels the others, writes trials.json and exits 130."""
    import subprocess
    import threading

    pytest.importorskip("ray")
    path = write_config(model={"hidden_units": [8]}, tune=TUNED)
    command = [sys.executable, "-m", "mlcli", "tune", str(path), "--trials", "6", "--ray"]
    child = subprocess.Popen(
        [*command, "--parallel", "1", "--output", str(tmp_path / "out")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    watchdog = threading.Timer(240, child.kill)  # never a hang, whatever happens
    watchdog.start()
    seen: list[str] = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            seen.append(line)
            if "1/6" in line:  # the first trial finished
                child.send_signal(signal.SIGTERM)
                break
        code = child.wait(timeout=60)  # Ray's own processes may hold the pipe: not read to EOF
    finally:
        watchdog.cancel()
        child.kill()
    assert code == 130, "".join(seen)
    trials = json.loads(next((tmp_path / "out").glob("tiny-tune/*/trials.json")).read_text())
    assert [t["number"] for t in trials] == [0]
