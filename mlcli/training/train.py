"""`mlcli train`: a config and its tables in, a complete run directory out.

The flow: read and check the tables (`splits`), compute the feature schema on the training
split (`features`), encode every split once with the Keras preprocessing layers, fit the core
network on dense tensors with `model.fit` over `tf.data`, then save the preprocessing composed
with the core so that `model.keras` takes raw values. Everything is written into a partial run
folder that is renamed only when complete.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from mlcli import __version__, files
from mlcli.config.schema import Config, config_to_yaml, load_config
from mlcli.data.splits import Splits, load_splits
from mlcli.data.streamed_splits import StreamedSplits, streaming_enabled
from mlcli.errors import (
    ConfigError,
    InterruptedRunError,
    MlcliError,
    RunError,
    TrainingDivergedError,
)
from mlcli.features.build import build_schema, build_target
from mlcli.features.schema import FeatureSchema
from mlcli.features.types import resolve_feature_specs
from mlcli.preprocessing.arrow import encode_splits
from mlcli.reporting import QuietReporter, Reporter
from mlcli.runs import directory as runs
from mlcli.tracking.tracker import start_tracking, tracks_failures
from mlcli.training.cluster import cluster_role, worker_scratch_run
from mlcli.training.data import load_streamed_splits

# What model.fit can log per task (mlcli.models.core.loss_and_metrics), with and without `val_`;
# binary AUC is logged when early stopping watches it (mlcli.models.core.epoch_auc).
_LOGGED_METRICS = {
    "binary": ("loss", "accuracy", "auc"),
    "multiclass": ("loss", "accuracy"),
    "regression": ("loss", "rmse", "mae"),
}


def check_monitor(config: Config, task: str) -> None:
    """Early stopping must watch a metric that training logs for this task."""
    stopping = config.training.early_stopping
    if stopping is None:
        return
    valid = [*_LOGGED_METRICS[task], *(f"val_{name}" for name in _LOGGED_METRICS[task])]
    if stopping.monitor not in valid:
        raise ConfigError(
            f"config key `training.early_stopping.monitor`: {stopping.monitor!r} is not logged "
            f"for a {task} task; expected one of {', '.join(valid)}"
        )


def prepare_schema(config: Config, splits: Splits) -> FeatureSchema:
    """The feature schema from the training split alone."""
    target = build_target(splits.train.column(config.target.column), config)
    check_monitor(config, target.task)
    specs, excluded = resolve_feature_specs(splits.train, config)
    return build_schema(
        splits.train,
        specs=specs,
        target=target,
        excluded=excluded,
        quantiles=config.model.numeric_embedding.type == "piecewise_linear",
    )


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


def base_manifest(config: Config, splits: Splits | StreamedSplits, run: runs.Run) -> dict[str, Any]:
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
            for role, source in splits.sources.items()
        },
        "rows": {
            "train": splits.train.num_rows,
            "validation": splits.validation.num_rows,
            "test": splits.test.num_rows if splits.test is not None else 0,
        },
        "dropped_unlabelled_rows": splits.dropped_unlabelled,
    }


@tracks_failures
def train(
    config: Config | str | Path,
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

    Args:
        config: a `Config`, or the path of a YAML config file.
        overrides: `key.path=value` overrides applied to a config file.
        output_dir: where runs go, instead of the config's `output.dir`.
        resume: a partial run directory to continue from its last completed epoch.
        device: auto, cpu, cpu:N, gpu or gpu:0,1 (`training.devices`), instead of training.device.
        reporter: where progress goes; nothing is reported by default.
        verbose: show TensorFlow's own logs.
    """
    reporter = reporter or QuietReporter()
    run: runs.Run | None = None
    if resume is not None:
        run = _partial_run(resume)
        config = load_config(run.file(runs.CONFIG))
    elif not isinstance(config, Config):
        config = load_config(config, overrides=overrides or [])
    started = time.monotonic()
    splits: Splits | StreamedSplits
    if streaming_enabled(config):  # one pass, record batch by batch
        splits, schema = load_streamed_splits(config)
        check_monitor(config, schema.target.task)
    else:
        splits = load_splits(config)
        schema = prepare_schema(config, splits)
    checked_at = time.monotonic()
    reporter.event(
        "data",
        f"train {splits.train.num_rows} rows, validation {splits.validation.num_rows}, "
        f"test {splits.test.num_rows if splits.test is not None else 0}",
    )
    encoded = None
    if isinstance(splits, Splits):  # with Arrow, while TensorFlow may still be loading
        parts = {"train": splits.train, "validation": splits.validation, "test": splits.test}
        encoded = encode_splits(parts, schema)
    encoded_at = time.monotonic()
    if encoded is not None:
        reporter.event(
            "encoded", f"{splits.train.num_rows} training rows in {encoded_at - checked_at:.1f}s"
        )
    role = cluster_role()
    if role is not None and not role.is_chief:  # the chief alone writes the run directory
        run = worker_scratch_run(config.name, resume=run.path if run else None)
    if run is None:
        run = runs.create_partial_run(Path(output_dir or config.output.dir), config.name)
        files.write_text(run.file(runs.CONFIG), config_to_yaml(config))
    manifest = base_manifest(config, splits, run)
    if resume is not None:
        manifest = _resumed_manifest(run, manifest, schema)
    files.write_json(run.file(runs.MANIFEST), manifest)
    schema.save(run.file(runs.SCHEMA))
    reporter.event("run", str(run.path))
    tracker = start_tracking(config, run, reporter, enabled=role is None or role.is_chief)
    reporter = tracker.reporter
    from mlcli.training.fit import fit_run  # waits for TensorFlow if the CLI began importing it

    try:
        details = fit_run(
            config,
            splits,
            schema,
            run,
            reporter=reporter,
            device=device,
            verbose=verbose,
            resuming=resume is not None,
            encoded=encoded,
        )
    except (KeyboardInterrupt, InterruptedRunError) as error:
        raise InterruptedRunError(
            f"training interrupted; the last completed epoch is kept in {run.path}; "
            f"continue with: mlcli train --resume {run.path}"
        ) from error
    except TrainingDivergedError:
        raise
    except MlcliError:
        shutil.rmtree(run.path, ignore_errors=True)
        raise
    manifest.update(details)
    manifest["versions"] = _versions()
    manifest["seconds"] = {
        "read_and_check": checked_at - started,
        "encode": encoded_at - checked_at,
        **details.get("seconds", {}),
        "total": time.monotonic() - started,
    }
    manifest["status"] = "complete"
    manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    files.write_json(run.file(runs.MANIFEST), manifest)
    if role is not None and not role.is_chief:
        return Path(output_dir or config.output.dir) / config.name  # where the chief's run is
    final = runs.complete_run(run)
    tracker.finish(final.path)
    reporter.event("complete", str(final.path))
    return final.path


def _resumed_manifest(
    run: runs.Run, manifest: dict[str, Any], schema: FeatureSchema
) -> dict[str, Any]:
    """The manifest of a resumed run, after checking that its data did not change."""
    before = runs.read_manifest(run)
    for role, fingerprints in manifest["data"].items():
        if before.get("data", {}).get(role) != fingerprints:
            changed = ", ".join(f["path"] for f in fingerprints)
            raise RunError(
                f"{run.path}: the {role} data changed since the run started ({changed}); "
                "a resumed run must see the same data. Start a new run instead."
            )
    if FeatureSchema.load(run.file(runs.SCHEMA)).to_dict() != schema.to_dict():
        raise RunError(f"{run.path}: the feature schema changed since the run started")
    return {
        **manifest,
        "started": before.get("started", manifest["started"]),
        "resumed": [*before.get("resumed", []), time.strftime("%Y-%m-%dT%H:%M:%S%z")],
    }


def _partial_run(path: Path) -> runs.Run:
    run = runs.Run(Path(path).resolve())
    if not run.path.is_dir():
        raise RunError(f"{path}: no such run directory to resume")
    if not run.is_partial:
        raise RunError(f"{path}: the run is already complete; there is nothing to resume")
    if not run.file(runs.CONFIG).is_file():
        raise RunError(f"{path}: holds no config.yaml; it cannot be resumed")
    return run
