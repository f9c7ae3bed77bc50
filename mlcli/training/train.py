"""`mlcli train`: a config and its tables in, a complete run directory out.

The flow: the training data (`training.data`: the tables read and checked, in memory or
streamed, the feature schema from the training rows, the splits encoded with Arrow where the
schema allows), then the fit (`training.fit`: the core network trained with `model.fit` over
`tf.data`, the preprocessing composed with the core so that `model.keras` takes raw values).
Everything is written into a partial run folder that is renamed only when complete.
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
from mlcli.config.loading import config_to_yaml, load_config
from mlcli.config.schema import Config
from mlcli.errors import InterruptedRunError, MlcliError, RunError, TrainingDivergedError
from mlcli.features.schema import FeatureSchema
from mlcli.reporting import QuietReporter, Reporter
from mlcli.runs import directory as runs
from mlcli.tracking.tracker import start_tracking, tracks_failures
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
    run = _partial_run(resume) if resume is not None else None
    if run is not None:
        config = load_config(run.file(runs.CONFIG))
    elif not isinstance(config, Config):
        config = load_config(config, overrides=overrides or [])
    started = time.monotonic()
    data = TrainingData.load(config, reporter)  # while TensorFlow may still be loading
    check_monitor(config, data.schema.target.task)
    role = cluster_role()
    chief = role is None or role.is_chief
    run, manifest = _start_run(config, data, run, output_dir=output_dir, chief=chief)
    reporter.event("run", str(run.path))
    tracker = start_tracking(config, run, reporter, enabled=chief)
    details = _fit(config, data, run, reporter=tracker.reporter, device=device, verbose=verbose)
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
    tracker.reporter.event("complete", str(final.path))
    return final.path


def _start_run(
    config: Config,
    data: TrainingData,
    resumed: runs.Run | None,
    *,
    output_dir: Path | None,
    chief: bool,
) -> tuple[runs.Run, dict[str, Any]]:
    """The partial run (new, resumed or a worker's scratch), its manifest, schema and sample."""
    run = resumed
    if not chief:  # the chief alone writes the run directory
        run = worker_scratch_run(config.name, resume=resumed.path if resumed else None)
    if run is None:
        run = runs.create_partial_run(Path(output_dir or config.output.dir), config.name)
        files.write_text(run.file(runs.CONFIG), config_to_yaml(config))
    manifest = base_manifest(config, data, run)
    if resumed is not None:
        manifest = _resumed_manifest(run, manifest, data.schema)
    files.write_json(run.file(runs.MANIFEST), manifest)
    data.schema.save(run.file(runs.SCHEMA))
    data.write_sample(run.file(runs.SAMPLE))
    return run, manifest


def _fit(
    config: Config,
    data: TrainingData,
    run: runs.Run,
    *,
    reporter: Reporter,
    device: str | None,
    verbose: bool,
) -> dict[str, Any]:
    """`fit_run`, with an interruption turned into a resumable stop and a failed run removed."""
    from mlcli.training.fit import fit_run  # waits for TensorFlow if the CLI began importing it

    try:
        return fit_run(config, data, run, reporter=reporter, device=device, verbose=verbose)
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
