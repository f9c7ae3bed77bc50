"""`mlcli train`: a config and its tables in, a complete run directory out.

The flow: read and check the tables (`splits`), compute the feature schema on the training
split (`features`), encode every split once with the Keras preprocessing layers, fit the core
network on dense tensors with `model.fit` over `tf.data`, then save the preprocessing composed
with the core so that `model.keras` takes raw values. Everything is written into a partial run
folder that is renamed only when complete.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from mlcli import __version__, runs
from mlcli.config import Config, SourceSpec, config_to_yaml, load_config
from mlcli.errors import (
    InterruptedRunError,
    MlcliError,
    RunError,
    TrainingDivergedError,
)
from mlcli.features import FeatureSchema, build_schema, build_target, resolve_feature_specs
from mlcli.reporting import QuietReporter, Reporter
from mlcli.splits import Splits, load_splits


def resolved_config(config: Config, base_dir: Path) -> Config:
    """The config with data paths made absolute, as written to the run's config.yaml."""

    def absolute(spec: Any) -> Any:
        if isinstance(spec, SourceSpec):
            return spec.model_copy(update={"path": absolute(spec.path)})
        if isinstance(spec, list):
            return [absolute(p) for p in spec]
        if isinstance(spec, str):
            return str((base_dir / Path(spec).expanduser()).resolve())
        return spec

    data = config.data.model_copy(
        update={
            "train": absolute(config.data.train),
            "validation": absolute(config.data.validation),
            "test": absolute(config.data.test),
        }
    )
    return config.model_copy(update={"data": data})


def prepare_schema(config: Config, splits: Splits) -> FeatureSchema:
    """The feature schema from the training split alone."""
    target = build_target(splits.train.column(config.target.column), config)
    specs, excluded = resolve_feature_specs(splits.train, config)
    return build_schema(splits.train, specs=specs, target=target, excluded=excluded)


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


def base_manifest(config: Config, splits: Splits, run: runs.Run, base_dir: Path) -> dict[str, Any]:
    """What the manifest records before fitting starts."""
    from mlcli.data import fingerprint

    return {
        "run_format_version": runs.RUN_FORMAT_VERSION,
        "name": config.name,
        "run_id": run.run_id,
        "status": "running",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seed": config.seed,
        "git_commit": _git_commit(base_dir),
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


def train(
    config: Config | str | Path,
    *,
    overrides: list[str] | None = None,
    base_dir: Path | None = None,
    output_dir: Path | None = None,
    resume: Path | None = None,
    device: str | None = None,
    reporter: Reporter | None = None,
    verbose: bool = False,
) -> Path:
    """Trains a model from a config and returns the complete run directory.

    Args:
        config: a `Config`, or the path of a YAML config file.
        overrides: `key.path=value` overrides applied to a config file.
        base_dir: the folder relative data paths are taken from (the config's own folder).
        output_dir: where runs go, instead of the config's `output.dir`.
        resume: a partial run directory to continue from its last completed epoch.
        device: auto, cpu or gpu.
        reporter: where progress goes; nothing is reported by default.
        verbose: show TensorFlow's own logs.
    """
    from mlcli.fit import fit_run

    reporter = reporter or QuietReporter()
    run: runs.Run | None = None
    if resume is not None:
        run = _partial_run(resume)
        config, base_dir = load_config(run.file(runs.CONFIG))
    elif not isinstance(config, Config):
        config, base_dir = load_config(config, overrides=overrides or [])
    base_dir = base_dir or Path.cwd()
    started = time.monotonic()
    splits = load_splits(config, base_dir=base_dir)
    reporter.event(
        "data",
        f"train {splits.train.num_rows} rows, validation {splits.validation.num_rows}, "
        f"test {splits.test.num_rows if splits.test is not None else 0}",
    )
    schema = prepare_schema(config, splits)
    resolved = resolved_config(config, base_dir)
    if run is None:
        run = runs.create_partial_run(Path(output_dir or resolved.output.dir), config.name)
        runs.write_text(run.file(runs.CONFIG), config_to_yaml(resolved))
    manifest = base_manifest(config, splits, run, base_dir)
    runs.write_json(run.file(runs.MANIFEST), manifest)
    schema.save(run.file(runs.SCHEMA))
    reporter.event("run", str(run.path))
    try:
        details = fit_run(
            resolved,
            splits,
            schema,
            run,
            reporter=reporter,
            device=device,
            verbose=verbose,
            resuming=resume is not None,
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
    manifest["seconds"] = {**details.get("seconds", {}), "total": time.monotonic() - started}
    manifest["status"] = "complete"
    manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    runs.write_json(run.file(runs.MANIFEST), manifest)
    final = runs.complete_run(run)
    reporter.event("complete", str(final.path))
    return final.path


def _partial_run(path: Path) -> runs.Run:
    run = runs.Run(Path(path).resolve())
    if not run.path.is_dir():
        raise RunError(f"{path}: no such run directory to resume")
    if not run.is_partial:
        raise RunError(f"{path}: the run is already complete; there is nothing to resume")
    if not run.file(runs.CONFIG).is_file():
        raise RunError(f"{path}: holds no config.yaml; it cannot be resumed")
    return run
