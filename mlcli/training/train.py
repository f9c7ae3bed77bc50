"""`mlcli train`: a config and its tables in, a complete run directory out.

The flow: the training data (`training.data`: the tables read and checked, in memory or
streamed, the feature schema from the training rows, the splits encoded with Arrow where the
schema allows), then the fit (`training.fit`: the core network trained with `model.fit` over
`tf.data`, the preprocessing composed with the core so that `model.keras` takes raw values).
Everything is written into a partial run folder that is renamed only when complete.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from mlcli import __version__, files
from mlcli._tensorflow import start_import
from mlcli.config.loading import config_to_yaml, load_config
from mlcli.config.overrides import dotted_items
from mlcli.config.schema import Config
from mlcli.data.splits import check_headers
from mlcli.errors import (
    ConfigError,
    InterruptedRunError,
    MlcliError,
    RunError,
    SelfCheckError,
    TrainingDivergedError,
)
from mlcli.features.schema import FeatureSchema
from mlcli.reporting import QuietReporter, Reporter, TrainingSummary
from mlcli.runs import directory as runs
from mlcli.tracking.tracker import start_tracking, tracks_failures
from mlcli.training.calibration import check_calibration
from mlcli.training.cluster import cluster_role, worker_scratch_run
from mlcli.training.compile import check_monitor
from mlcli.training.data import TrainingData


def _git_commit(directory: Path) -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def _versions() -> dict[str, str]:
    import keras
    import pyarrow
    import tensorflow as tf

    return {
        "mlcli": __version__,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "pyarrow": pyarrow.__version__,
    }


def base_manifest(config: Config, data: TrainingData, run: runs.Run) -> dict[str, Any]:
    """What the manifest records before fitting starts."""
    from mlcli.data.tables import fingerprint

    return {
        "run_format_version": runs.RUN_FORMAT_VERSION,
        "name": config.name,
        "run_id": run.run_id,
        "status": "running",
        "pid": os.getpid(),  # `mlcli runs` tells a running run from an interrupted one
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seed": config.seed,
        "git_commit": _git_commit(Path.cwd()),
        "data": {
            role: [fingerprint(path) for path in source.paths]
            for role, source in data.sources.items()
        },
        "rows": data.rows,
        "dropped_unlabelled_rows": data.dropped_unlabelled,
    }


@tracks_failures
def train(
    config: Config | str | Path | None = None,
    *,
    overrides: list[str] | None = None,
    output_dir: Path | None = None,
    resume: Path | None = None,
    device: str | None = None,
    reporter: Reporter | None = None,
    verbose: bool = False,
) -> Path:
    """Trains a model from a config and returns the complete run directory.

    In a `TF_CONFIG` cluster a worker that is not the chief returns `<output>/<name>`, the
    folder where the chief writes the run.

    Nothing mlcli did not create is deleted: a new run that fails removes only the partial
    folder this call created; a resumed run that fails is left exactly as it was.

    Args:
        config: a `Config`, or the path of a YAML config file (`config.yaml` when left out).
            With `resume` it may be left out; given, it must equal the run's saved config.
        overrides: `key.path=value` overrides applied to a config file (with `resume`, they
            must leave the run's saved config as it is).
        output_dir: where runs go, instead of the config's `output.dir`.
        resume: a partial run directory to continue from its last completed epoch.
        device: auto, cpu, cpu:N, gpu or gpu:0,1 (`training.devices`), instead of training.device.
        reporter: where progress goes; nothing but warnings is reported by default.
        verbose: show TensorFlow's own logs.

    Raises:
        SelfCheckError: a check after training failed; the complete run is kept (exit 4).
    """
    reporter = reporter or QuietReporter()
    role = cluster_role()
    chief = role is None or role.is_chief
    resumed = _partial_run(resume) if resume is not None else None
    with ExitStack() as held:
        if resumed is not None:
            if chief:  # the workers of a cluster read the chief's run, which the chief locks
                held.enter_context(runs.lock_run(resumed))
            config = _resumed_config(resumed, config, overrides or [])
        elif not isinstance(config, Config):
            config = load_config(config or "config.yaml", overrides=overrides or [])
        started = time.monotonic()
        check_headers(config)  # a missing file or column fails before TensorFlow loads
        # TensorFlow loads on a thread while the data is read; devices are chosen before its
        # runtime starts
        start_import(verbose=verbose)
        data = TrainingData.load(config, reporter)  # while TensorFlow may still be loading
        check_monitor(config, data.schema.target.task)
        check_calibration(config, data.schema.target.task)
        run = resumed
        if not chief:  # the chief alone writes the run directory
            run = worker_scratch_run(config.name, resume=resumed.path if resumed else None)
        created = run is None
        if run is None:
            run = runs.create_partial_run(Path(output_dir or config.output.dir), config.name)
            held.enter_context(runs.lock_run(run))
        previous = _manifest_text(run) if resumed is not None else None
        try:
            manifest = _start_run(config, data, run, resumed=resumed is not None)
            reporter.event("run", str(run.path))
            tracker = start_tracking(config, run, reporter, enabled=chief)
            details = _fit(
                config, data, run, reporter=tracker.reporter, device=device, verbose=verbose
            )
        except (TrainingDivergedError, InterruptedRunError):
            raise  # the checkpoints are kept for --resume
        except MlcliError:
            if created and chief:
                runs.remove_partial_run(run)  # the folder this call made, nothing else
            elif resumed is not None and chief:
                _put_back_manifest(run, previous)  # the partial run is left as it was
            raise
        manifest.update(details)
        manifest["versions"] = _versions()
        manifest["seconds"] = {
            **data.seconds,
            **details.get("seconds", {}),
            "total": time.monotonic() - started,
        }
        manifest["status"] = "complete"
        manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        files.write_json(run.file(runs.MANIFEST), manifest)
        if not chief:
            return Path(output_dir or config.output.dir) / config.name  # where the chief's run is
        final = runs.complete_run(run)
    tracker.finish(final.path)
    tracker.reporter.summary(training_summary(final, manifest))
    tracker.reporter.event("complete", str(final.path))
    _raise_failed_checks(manifest.get("checks"), final, tracker.reporter)
    return final.path


def training_summary(run: runs.Run, manifest: dict[str, Any]) -> TrainingSummary:
    """The end-of-training summary of a complete run: metrics.json, the kept epoch, the time.

    The manifest's `seconds` are grouped into phases: `data` (reading, checking, statistics
    and Arrow encoding), `prepare` (devices, the layers' encoding if Arrow did not, the
    model), `fit`, `evaluate` (the final metrics of every split), `save_and_check`
    (model.keras and the composition self-check) and `other` (the rest of `total`: waiting
    for TensorFlow to load, the manifest, tracking).
    """
    written = json.loads(run.file(runs.METRICS).read_text(encoding="utf-8"))
    metrics = {split: values for split, values in written.items() if isinstance(values, dict)}
    recorded = manifest.get("seconds", {})
    phases = {
        "data": ("read_and_check", "encode"),
        "prepare": ("prepare",),
        "fit": ("fit",),
        "evaluate": ("evaluate",),
        "save_and_check": ("save", "check"),
    }
    seconds = {name: sum(recorded.get(key, 0.0) for key in keys) for name, keys in phases.items()}
    total = recorded.get("total", sum(seconds.values()))
    seconds["other"] = max(0.0, total - sum(seconds.values()))
    seconds["total"] = total
    return TrainingSummary(
        run=str(run.path),
        metrics=metrics,
        kept_epoch=manifest.get("kept_epoch", {}),
        seconds=seconds,
        threshold=written.get("threshold"),
    )


def _raise_failed_checks(checks: Any, run: runs.Run, reporter: Reporter) -> None:
    """`SelfCheckError` for the first check that failed; the run is complete and kept."""
    for name, check in (checks or {}).items():
        if not isinstance(check, dict) or check.get("passed", True):
            continue
        figure = check.get("max_relative_difference")
        shown = "NaN" if figure is None else f"{figure:.3g}"
        found = (
            f"it could not run ({check['error']})"
            if check.get("error")
            else f"max relative difference {shown} (tolerance {check.get('tolerance')})"
        )
        message = (
            f"{run.path}: the {name} check failed after training: {found}; the complete run "
            f"is kept, its figures are in manifest.json `checks.{name}`"
        )
        reporter.warning(message)
        raise SelfCheckError(message)


def _resumed_config(
    run: runs.Run, given: Config | str | Path | None, overrides: list[str]
) -> Config:
    """The run's saved config; a CONFIG or `--set` given with `--resume` must leave it as is."""
    saved = load_config(run.file(runs.CONFIG))
    if given is None and not overrides:
        return saved
    if isinstance(given, Config):
        candidate, source = given, "the config given"
    elif given is None:
        candidate, source = load_config(run.file(runs.CONFIG), overrides=overrides), "--set"
    else:
        candidate = load_config(given, overrides=overrides)
        source = f"{given}{' with --set' if overrides else ''}"
    before = dotted_items(saved.model_dump(mode="json"))
    after = dotted_items(candidate.model_dump(mode="json"))
    for key in [*before, *(k for k in after if k not in before)]:
        if before.get(key) != after.get(key):
            raise ConfigError(
                f"{source}: `{key}` is {after.get(key)!r} but run {run.path} was started with "
                f"{before.get(key)!r}; a resumed run keeps its own config. Resume without "
                "CONFIG and --set, or start a new run"
            )
    return saved


def _manifest_text(run: runs.Run) -> str | None:
    """The manifest's text as it is now (None without one)."""
    try:
        return run.file(runs.MANIFEST).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def _put_back_manifest(run: runs.Run, text: str | None) -> None:
    """Puts back the manifest a failed resume rewrote (removes it when there was none)."""
    if text is None:
        run.file(runs.MANIFEST).unlink(missing_ok=True)
    else:
        files.write_text(run.file(runs.MANIFEST), text)


def _start_run(
    config: Config, data: TrainingData, run: runs.Run, *, resumed: bool
) -> dict[str, Any]:
    """Writes the partial run's config (a new run), manifest, schema and sample."""
    if not run.file(runs.CONFIG).is_file():  # a new run (or a worker's scratch copy)
        files.write_text(run.file(runs.CONFIG), config_to_yaml(config))
    manifest = base_manifest(config, data, run)
    if resumed:
        manifest = _resumed_manifest(run, manifest, data.schema)
    files.write_json(run.file(runs.MANIFEST), manifest)
    data.schema.save(run.file(runs.SCHEMA))
    data.write_sample(run.file(runs.SAMPLE))
    return manifest


def _fit(
    config: Config,
    data: TrainingData,
    run: runs.Run,
    *,
    reporter: Reporter,
    device: str | None,
    verbose: bool,
) -> dict[str, Any]:
    """`fit_run`, with an interruption turned into a resumable stop."""
    from mlcli.training.fit import fit_run  # waits for TensorFlow if the CLI began importing it

    try:
        return fit_run(config, data, run, reporter=reporter, device=device, verbose=verbose)
    except (KeyboardInterrupt, InterruptedRunError) as error:
        raise InterruptedRunError(
            f"training interrupted; the last completed epoch is kept in {run.path}; "
            f"continue with: mlcli train --resume {run.path}"
        ) from error


def _resumed_manifest(
    run: runs.Run, manifest: dict[str, Any], schema: FeatureSchema
) -> dict[str, Any]:
    """The manifest of a resumed run, after checking that its data did not change.

    Data is compared by content (each file's size and SHA-256, in order), not by how its path
    is spelled: a symlink, `..` or a moved folder holding the same bytes resumes. A run killed
    before it wrote its manifest has no checkpoint either: it starts over, nothing to compare.
    """
    if not run.file(runs.MANIFEST).is_file() and not run.file(runs.CHECKPOINTS).exists():
        return {**manifest, "resumed": [time.strftime("%Y-%m-%dT%H:%M:%S%z")]}
    before = runs.read_manifest(run)
    for role, fingerprints in manifest["data"].items():
        recorded = before.get("data", {}).get(role)
        if not isinstance(recorded, list) or _contents(recorded) != _contents(fingerprints):
            changed = ", ".join(f["path"] for f in fingerprints)
            raise RunError(
                f"{run.path}: the {role} data changed since the run started ({changed}: "
                "different size or SHA-256); a resumed run must see the same data. "
                "Start a new run instead."
            )
    saved_schema = run.file(runs.SCHEMA)
    if saved_schema.is_file() and FeatureSchema.load(saved_schema).to_dict() != schema.to_dict():
        raise RunError(f"{run.path}: the feature schema changed since the run started")
    return {
        **manifest,
        "started": before.get("started", manifest["started"]),
        "resumed": [*before.get("resumed", []), time.strftime("%Y-%m-%dT%H:%M:%S%z")],
    }


def _contents(fingerprints: list[Any]) -> list[tuple[Any, Any]]:
    """The size and SHA-256 of each file, in order: what a data comparison looks at."""
    return [
        (f.get("bytes"), f.get("sha256")) if isinstance(f, dict) else (None, None)
        for f in fingerprints
    ]


def _partial_run(path: Path) -> runs.Run:
    run = runs.Run(Path(path).resolve())
    if not run.path.is_dir():
        raise RunError(f"{path}: no such run directory to resume")
    if not run.is_partial:
        raise RunError(f"{path}: the run is already complete; there is nothing to resume")
    if not run.file(runs.CONFIG).is_file():
        raise RunError(f"{path}: holds no config.yaml; it cannot be resumed")
    return run
