"""One trial of `mlcli tune`: a config with the trial's values, trained as a complete run.

`run_trial` is what every trial runs, in the tuning process itself (sequential tune) or in a
Ray worker (`mlcli.training.tune_ray`): the `TrialPlan` it takes holds the config as a YAML
document with its `${VAR}` references, so that it pickles, and each worker parses it again
exactly as the tuning process would. A trial whose training diverges is a failed trial;
any other error is the search's own and ends it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlcli import files
from mlcli.config.loading import References, parse_config
from mlcli.config.overrides import copy_document, set_dotted
from mlcli.config.schema import Config
from mlcli.errors import ConfigError, TrainingDivergedError, mask_secrets
from mlcli.runs import directory as runs

COMPLETE = "complete"
FAILED = "failed"
TRIALS = "trials.json"


@dataclass
class TrialResult:
    """One trial: the values it tried and what its run scored."""

    number: int
    values: dict[str, Any]
    state: str  # complete | failed
    score: float | None = None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    run: str | None = None
    seconds: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class TrialPlan:
    """What every trial of one search shares: the config document, the metric, the folders."""

    document: dict[str, Any]
    references: References
    metric: str  # <split>.<metric> of metrics.json
    source: str  # the config's path, as errors name it
    folder: Path  # the config's folder: relative data paths are resolved against it
    directory: Path  # runs/<name>-tune/<id>/
    device: str | None = None


def with_values(
    document: dict[str, Any],
    values: dict[str, Any],
    source: str,
    folder: Path,
    references: References | None = None,
) -> Config:
    """The config with searched keys set; its `${VAR}` references are kept for the others."""
    trial = copy_document(document)
    for key, value in values.items():
        set_dotted(trial, key, value)
    return parse_config(trial, source=source, relative_to=folder, references=references)


def trial_name(number: int) -> str:
    """The trial's folder (and its config's `name`): trial-000, trial-001, ..."""
    return f"trial-{number:03d}"


def score(metrics: dict[str, Any], metric: str, source: str) -> float:
    """The run's `metric` (<split>.<metric>) from its metrics.json; `ConfigError` if absent."""
    split, _, name = metric.partition(".")
    try:
        return float(metrics[split][name])
    except (KeyError, TypeError, ValueError) as error:
        found = {s: sorted(v) for s, v in metrics.items() if isinstance(v, dict)}
        raise ConfigError(
            f"{source}: config key `tune.metric`: {metric!r} is not in the run's metrics; "
            f"expected <split>.<metric> among {found}"
        ) from error


def run_trial(plan: TrialPlan, number: int, values: dict[str, Any]) -> TrialResult:
    """Trains trial `number` with `values` under `plan.directory`/trial-NNN/ and scores it.

    A diverged training is a failed trial (its error recorded); any other error is raised.
    """
    from mlcli.training.train import train

    name = trial_name(number)
    config = with_values(
        plan.document,
        {**values, "name": name},
        f"{plan.source} ({name})",
        plan.folder,
        plan.references,
    )
    started = time.monotonic()
    result = TrialResult(number=number, values=values, state=FAILED)
    try:
        run = train(config, output_dir=plan.directory, device=plan.device)
    except TrainingDivergedError as error:
        result.error = mask_secrets(str(error))
    else:
        metrics = json.loads((run / runs.METRICS).read_text(encoding="utf-8"))
        result.metrics = {k: v for k, v in metrics.items() if isinstance(v, dict)}
        result.score = score(metrics, plan.metric, plan.source)
        result.run, result.state = str(run), COMPLETE
    result.seconds = time.monotonic() - started
    return result


def write_trials(directory: Path, results: list[TrialResult]) -> None:
    """`trials.json` in `directory`: every trial given, in the order of their numbers."""
    ordered = sorted(results, key=lambda r: r.number)
    files.write_json(directory / TRIALS, [asdict(r) for r in ordered])
