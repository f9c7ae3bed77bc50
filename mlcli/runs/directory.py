"""The run directory: artifact names, atomic creation, `latest`, and finding a run again.

```
runs/<name>/<run-id>/      config.yaml manifest.json schema.json model.keras history.csv
                           metrics.json sample.parquet checkpoints/ plots/ evaluations/
                           explanations/ exports/ [threshold.json]
runs/<name>/latest         symlink to the newest complete run
runs/<name>/.<run-id>.partial   a run in progress (or interrupted: `--resume` continues it)
runs/<name>/.<run-id>.partial/.lock   held (`flock`) by the process that trains the run
```

A partial run is locked by the one process that trains it (`lock_run`): a new run from the
moment its folder exists, a resumed one for the whole resumed training. The lock is the
kernel's, so it dies with its process, `kill -9` included; it never goes stale.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlcli.errors import RunError

CONFIG = "config.yaml"
MANIFEST = "manifest.json"
SCHEMA = "schema.json"
MODEL = "model.keras"
HISTORY = "history.csv"
METRICS = "metrics.json"
THRESHOLD = "threshold.json"  # the decision threshold that `evaluate --choose-threshold --save` keeps
CORE_ONNX = "core.onnx"  # the core network for the light inference path (`inference.light`)
SAMPLE = "sample.parquet"  # validation rows, raw, that export checks use (runs before 0.2 lack it)
CHECKPOINTS = "checkpoints"
PLOTS = "plots"
LEARNING_CURVES = "plots/learning_curves.png"
EVALUATIONS = "evaluations"
EXPLANATIONS = "explanations"
EXPORTS = "exports"
LATEST = "latest"
PARTIAL_SUFFIX = ".partial"
LOCK = ".lock"
RUN_FORMAT_VERSION = 1

DEFAULT_RUNS_DIR = "runs"


@dataclass(frozen=True)
class Run:
    """A run directory on disk."""

    path: Path

    def file(self, name: str) -> Path:
        """The path of one of the run's artifacts."""
        return self.path / name

    @property
    def run_id(self) -> str:
        """The run's id: its folder name without the in-progress markers."""
        return self.path.name.removeprefix(".").removesuffix(PARTIAL_SUFFIX)

    @property
    def is_partial(self) -> bool:
        """True while the run is in progress or was interrupted."""
        return self.path.name.endswith(PARTIAL_SUFFIX)


def new_run_id() -> str:
    """A sortable, collision-safe id: UTC time plus random hex."""
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def create_partial_run(output_dir: Path, name: str) -> Run:
    """Creates `<output>/<name>/.<id>.partial`; two concurrent runs never share one."""
    parent = output_dir / name
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunError(f"{parent}: cannot create the run folder: {error.strerror}") from error
    for _ in range(10):
        path = parent / f".{new_run_id()}{PARTIAL_SUFFIX}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return Run(path)
    raise RunError(f"{parent}: could not create a unique run folder")


class RunLock:
    """An exclusive `flock` on a partial run's `.lock` file, held until `release`.

    Released by the kernel when the process ends however it ends, so a killed run never
    leaves a stale lock. Use `lock_run` to take one.
    """

    def __init__(self, run: Run, descriptor: int):
        self.run, self._descriptor = run, descriptor

    def release(self) -> None:
        """Releases the lock (closing its file); a second call does nothing."""
        if self._descriptor >= 0:
            os.close(self._descriptor)  # closing the last descriptor releases the flock
            self._descriptor = -1

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_run(run: Run) -> RunLock:
    """Locks a partial run for this process; `RunError` (exit 4) when another process holds it.

    After the lock is taken the lock file must still be the one in the run folder: a run that
    another process completed (and so renamed) meanwhile is not locked but refused.
    """
    path = run.file(LOCK)
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except FileNotFoundError as error:
        raise RunError(f"{run.path}: no such run directory (completed or moved?)") from error
    except OSError as error:
        raise RunError(f"{path}: cannot open the run's lock file: {error.strerror}") from error
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        os.close(descriptor)
        raise RunError(
            f"{run.path}: another process holds this run's lock (it is training or resuming "
            "it); wait for it to finish or stop it, then retry"
        ) from error
    try:
        same = os.path.samestat(os.fstat(descriptor), os.stat(path))
    except FileNotFoundError:
        same = False
    if not same:
        os.close(descriptor)
        raise RunError(f"{run.path}: the run was completed or moved by another process")
    return RunLock(run, descriptor)


def remove_partial_run(run: Run) -> None:
    """Removes a partial run folder (one this process created and that failed).

    Refuses anything but a `.<id>.partial` folder, so a complete run is never removed.
    """
    if not (run.is_partial and run.path.name.startswith(".")):
        raise RunError(f"{run.path}: not a partial run folder; nothing was removed")
    shutil.rmtree(run.path, ignore_errors=True)


def complete_run(run: Run) -> Run:
    """Renames a finished partial run to its final name and points `latest` at it.

    Its lock file goes first (the lock itself stays held by the open descriptor): a process
    waiting to resume the run finds, once it gets the lock, that the file is no longer there.
    """
    final = run.path.parent / run.run_id
    if final.exists():
        raise RunError(f"{final}: already exists; nothing was overwritten")
    run.file(LOCK).unlink(missing_ok=True)
    os.rename(run.path, final)
    link = final.parent / LATEST
    temporary = final.parent / f".{LATEST}.{secrets.token_hex(4)}"
    os.symlink(final.name, temporary)
    os.replace(temporary, link)  # atomic: `latest` always names a complete run
    return Run(final)


def resolve_run(reference: str | Path, *, runs_dir: Path | None = None) -> Run:
    """A complete run from a run directory, a `runs/<name>` folder, or a run name."""
    path = Path(reference)
    candidates = [path, path / LATEST]
    if not path.is_absolute() and len(path.parts) == 1:
        base = runs_dir or Path(os.environ.get("MLCLI_RUNS_DIR", DEFAULT_RUNS_DIR))
        candidates.append(base / path / LATEST)
    for candidate in candidates:
        if (candidate / MANIFEST).is_file() or (candidate / MODEL).exists():
            run = Run(candidate.resolve())
            check_complete(run)
            return run
    if path.is_dir() and path.name.endswith(PARTIAL_SUFFIX):
        raise RunError(f"{path}: the run is incomplete (interrupted?); `mlcli train --resume` it")
    raise RunError(
        f"{reference}: no such run; expected a run directory as `mlcli train` prints it, "
        "or a run name under ./runs"
    )


def check_complete(run: Run) -> None:
    """Raises `RunError` unless the run holds every artifact and a compatible manifest."""
    missing = [name for name in (MANIFEST, SCHEMA, MODEL, CONFIG) if not run.file(name).exists()]
    if missing:
        raise RunError(f"{run.path}: the run is incomplete, missing {', '.join(missing)}")
    manifest = read_manifest(run)
    if manifest.get("status") != "complete":
        raise RunError(f"{run.path}: the run's status is {manifest.get('status')!r}, not complete")
    version = manifest.get("run_format_version")
    if version != RUN_FORMAT_VERSION:
        raise RunError(
            f"{run.path}: run format version {version}, this mlcli reads {RUN_FORMAT_VERSION}"
        )


def read_manifest(run: Run) -> dict[str, Any]:
    """The run's manifest.json."""
    try:
        data = json.loads(run.file(MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise RunError(f"{run.file(MANIFEST)}: missing; the run is incomplete") from error
    except ValueError as error:
        raise RunError(f"{run.file(MANIFEST)}: not valid JSON ({error})") from error
    if not isinstance(data, dict):
        raise RunError(f"{run.file(MANIFEST)}: expected a JSON object")
    return data
