"""`mlcli tune`: hyperparameter search over the ranges in a config's `tune:` section.

Optuna's TPE sampler (seeded with the config's `seed`) proposes values for the dotted config
keys of `tune.parameters`; every trial is a complete run of its own (`mlcli.training.train.train`),
scored by `tune.metric` from its metrics.json. The first trial is the config's own values
where they lie within the ranges, so the best trial is never worse than the config on that
metric. The best config is written out with absolute data paths, ready for `mlcli train`.
With `ray` (`mlcli tune --ray`), the same study runs its trials as Ray tasks, K at a time
(`mlcli.training.tune_ray`); one trial, wherever it runs, is `mlcli.training.trials.run_trial`.

```
runs/<name>-tune/<id>/
  trial-000/<run-id>/ ...   one complete run per trial
  trials.json               every trial: values, score, metrics, run, seconds, state
  best-config.yaml          the config with the best trial's values
```

Example:

```python
result = mlcli.tune("examples/adult/config-tune.yaml", trials=10)
print(result.best.score, result.best_config)
```
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlcli import files
from mlcli.config.loading import config_to_yaml, parse_config, read_document
from mlcli.config.overrides import get_dotted
from mlcli.config.schema import Config, TuneConfig, TuneRange
from mlcli.data.splits import check_headers
from mlcli.errors import ConfigError, MlcliErrorUsage, TrainingDivergedError, missing_extra
from mlcli.reporting import QuietReporter, Reporter
from mlcli.runs import directory as runs
from mlcli.training.devices import parse_device
from mlcli.training.trials import TrialPlan, TrialResult, run_trial, with_values, write_trials

__all__ = ["TrialResult", "TuneResult", "tune"]

_MAXIMIZED = ("accuracy", "auc", "r2")


@dataclass
class TuneResult:
    """A finished search: every trial, the best one and where the best config was written."""

    metric: str
    direction: str
    parameters: list[str]
    trials: list[TrialResult]
    best: TrialResult
    best_config: Path
    directory: Path


def _direction(tune: TuneConfig) -> str:
    if tune.direction != "auto":
        return tune.direction
    return "maximize" if tune.metric.rsplit(".", 1)[-1] in _MAXIMIZED else "minimize"


def _suggest(trial: Any, key: str, spec: TuneRange) -> Any:
    if spec.choices is not None:
        encoded = [json.dumps(choice) for choice in spec.choices]
        return json.loads(trial.suggest_categorical(key, encoded))
    assert spec.low is not None and spec.high is not None  # checked by TuneRange
    if isinstance(spec.low, int) and isinstance(spec.high, int):
        step = int(spec.step or 1)
        return trial.suggest_int(key, spec.low, spec.high, step=step, log=spec.log)
    return trial.suggest_float(key, spec.low, spec.high, step=spec.step, log=spec.log)


def _current_value(config: Config, key: str) -> Any:
    return get_dotted(config.model_dump(mode="json"), key)


def _starting_point(config: Config, tune: TuneConfig) -> dict[str, Any]:
    """The config's own values of the searched keys that lie within their ranges."""
    start: dict[str, Any] = {}
    for key, spec in tune.parameters.items():
        value = _current_value(config, key)
        if spec.choices is not None:
            if value in spec.choices:
                start[key] = json.dumps(value)
        elif (
            isinstance(value, int | float)
            and spec.low is not None
            and spec.high is not None
            and spec.low <= value <= spec.high
        ):
            start[key] = value
    return start


def _check_parameters(
    document: dict[str, Any], tune: TuneConfig, source: str, folder: Path
) -> None:
    """Every searched key must be a config key that accepts its range's values."""
    for key, spec in tune.parameters.items():
        samples = spec.choices if spec.choices is not None else [spec.low, spec.high]
        for sample in samples:
            try:
                with_values(document, {key: sample}, source, folder)
            except ConfigError as error:
                raise ConfigError(
                    f"{source}: config key `tune.parameters.{key}`: the value {sample!r} "
                    f"does not give a valid config: {error}"
                ) from error


def _import_optuna(verbose: bool) -> Any:
    try:
        import optuna
    except ImportError as error:
        raise missing_extra("mlcli tune", "Optuna", "tune") from error
    if not verbose:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _propose(trial: Any, tune_config: TuneConfig) -> dict[str, Any]:
    """The values Optuna proposes for `trial`, asked in the order of `tune.parameters`."""
    return {key: _suggest(trial, key, spec) for key, spec in tune_config.parameters.items()}


def _search_here(
    study: Any,
    plan: TrialPlan,
    tune_config: TuneConfig,
    *,
    trials: int,
    timeout: float | None,
    on_result: Callable[[TrialResult], None],
) -> list[TrialResult]:
    """Runs the trials one after another in this process."""
    import optuna

    results: list[TrialResult] = []

    def objective(trial: Any) -> float:
        result = run_trial(plan, trial.number, _propose(trial, tune_config))
        results.append(result)
        on_result(result)
        if result.score is None:
            raise optuna.TrialPruned(result.error)
        return result.score

    study.optimize(objective, n_trials=trials, timeout=timeout)
    return results


def tune(
    config: str | Path,
    *,
    trials: int,
    timeout: float | None = None,
    overrides: list[str] | None = None,
    output_dir: Path | None = None,
    device: str | None = None,
    ray: str | None = None,
    parallel: int | None = None,
    reporter: Reporter | None = None,
    verbose: bool = False,
) -> TuneResult:
    """Searches the config's `tune.parameters` with Optuna, one training run per trial.

    Args:
        config: the path of a YAML config with a `tune:` section.
        trials: how many trials at most.
        timeout: no new trial starts after this many seconds.
        overrides: `key.path=value` overrides applied to the config first.
        output_dir: the runs folder instead of the config's `output.dir`.
        device: auto, cpu or gpu, for every trial (auto or cpu with `ray`).
        ray: run the trials as Ray tasks on this cluster (`mlcli._ray.connect`'s address:
            local, auto, HOST:PORT or ray://...); None runs them one by one here.
        parallel: with `ray`, how many trials run at once (`mlcli.training.tune_ray`).
        reporter: where one event per trial goes.
        verbose: show Optuna's and TensorFlow's own logs.

    Raises:
        MlcliErrorUsage: `parallel` without `ray` (exit 2).
        InterruptedRunError: SIGINT or SIGTERM stopped a search on Ray; trials.json holds the
            trials that finished (exit 130).
    """
    reporter = reporter or QuietReporter()
    if ray is not None:
        from mlcli.training.tune_ray import check_ray_arguments

        check_ray_arguments(ray, device=device)  # exit 2 before anything heavy
    elif parallel is not None:
        raise MlcliErrorUsage(
            f"--parallel {parallel}: trials run in parallel only on Ray; add --ray (alone, "
            "it starts a Ray instance on this machine) or leave --parallel out"
        )
    path = Path(config)
    source = str(path)
    document, references = read_document(path, overrides=overrides or [])
    folder = path.resolve().parent
    base = parse_config(document, source=source, relative_to=folder, references=references)
    if base.tune is None:
        raise ConfigError(
            f"{source}: config key `tune` is missing; add a `tune:` section with "
            "`parameters:` such as `model.dropout: {low: 0.0, high: 0.3}`"
        )
    tune_config = base.tune
    _check_parameters(document, tune_config, source, folder)
    if device is not None:
        parse_device(device)  # a bad value is exit 2 before TensorFlow loads
    check_headers(base)  # a missing table or column is exit 3 before TensorFlow loads
    optuna = _import_optuna(verbose)
    if ray is None:  # on Ray, the workers import TensorFlow and this process never does
        from mlcli._tensorflow import import_tensorflow

        import_tensorflow(verbose=verbose, start=False)  # each trial's run chooses the devices
    directory = Path(output_dir or base.output.dir) / f"{base.name}-tune" / runs.new_run_id()
    directory.mkdir(parents=True, exist_ok=False)
    direction = _direction(tune_config)
    study = optuna.create_study(
        direction=direction, sampler=optuna.samplers.TPESampler(seed=base.seed)
    )
    start = _starting_point(base, tune_config)
    if start:
        study.enqueue_trial(start)
    plan = TrialPlan(
        document=document,
        references=references,
        metric=tune_config.metric,
        source=source,
        folder=folder,
        directory=directory,
        device=device,
    )

    def report(result: TrialResult) -> None:
        shown = "failed" if result.score is None else f"{result.score:.4f}"
        reporter.event(
            "trial",
            f"{result.number + 1}/{trials}: {tune_config.metric} {shown} in {result.seconds:.0f}s",
        )

    if ray is None:
        results = _search_here(
            study, plan, tune_config, trials=trials, timeout=timeout, on_result=report
        )
    else:
        from mlcli.training.tune_ray import search_on_ray

        results = search_on_ray(
            study,
            plan,
            propose=lambda trial: _propose(trial, tune_config),
            address=ray,
            trials=trials,
            parallel=parallel,
            timeout=timeout,
            on_result=report,
        )
    results.sort(key=lambda r: r.number)
    complete = [r for r in results if r.score is not None]
    if not complete:
        raise TrainingDivergedError(f"every trial of {directory} diverged; narrow the ranges")
    pick = max if direction == "maximize" else min
    best = pick(complete, key=lambda r: r.score if r.score is not None else 0.0)
    best_config = with_values(document, best.values, source, folder, references)
    files.write_text(directory / "best-config.yaml", config_to_yaml(best_config))
    write_trials(directory, results)
    return TuneResult(
        metric=tune_config.metric,
        direction=direction,
        parameters=list(tune_config.parameters),
        trials=results,
        best=best,
        best_config=directory / "best-config.yaml",
        directory=directory,
    )
