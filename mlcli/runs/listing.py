"""`mlcli runs`: the runs under a runs folder, their status and headline metrics, and one run's
details or its differences from another. Reads only the files a run writes (`mlcli.runs.directory`).

A run's status:

- complete: renamed to its final folder with a complete manifest;
- running: a `.<id>.partial` folder whose training process is alive (or that changed in the
  last minutes when the manifest does not say which process writes it);
- interrupted: a partial folder nobody writes any more that `--resume` continues: it holds its
  config.yaml (a run killed before its first checkpoint resumes from the start);
- failed: a partial folder without a config.yaml, or whose manifest says it failed.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from mlcli.errors import RunError
from mlcli.runs import directory as runs

# A partial run whose files changed this recently may still be training.
RECENT_SECONDS = 600
_PRIMARY = ("accuracy", "auc", "rmse", "mae")


@dataclass
class RunSummary:
    """One run as `mlcli runs` lists it."""

    name: str
    run_id: str
    path: str
    status: str
    started: str | None
    seconds: float | None
    split: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def runs_folder(runs_dir: str | Path | None) -> Path:
    """The runs folder: the option, else $MLCLI_RUNS_DIR, else ./runs."""
    return Path(runs_dir or os.environ.get("MLCLI_RUNS_DIR", runs.DEFAULT_RUNS_DIR))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _started(manifest: dict[str, Any], run_id: str) -> datetime | None:
    text = manifest.get("started")
    if isinstance(text, str):
        try:
            return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z")
        except ValueError:
            pass
    try:  # run ids begin with their UTC start time
        return datetime.strptime(run_id[:15], "%Y%m%d-%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def _last_change(path: Path) -> float:
    times = [path.stat().st_mtime]
    for child in path.iterdir():
        times.append(child.stat().st_mtime)
        if child.is_dir():
            times.extend(grandchild.stat().st_mtime for grandchild in child.iterdir())
    return max(times)


def _alive(manifest: dict[str, Any]) -> bool | None:
    """Whether the process that writes the run lives; None when the manifest cannot say."""
    pid, host = manifest.get("pid"), manifest.get("host")
    if not isinstance(pid, int) or host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_status(run: runs.Run, manifest: dict[str, Any]) -> str:
    """complete, running, interrupted or failed (see the module's docstring)."""
    stated = manifest.get("status")
    if not run.is_partial:
        return "complete" if stated == "complete" else "failed"
    if stated in ("failed", "diverged"):
        return "failed"
    alive = _alive(manifest)
    if alive is None:
        alive = time.time() - _last_change(run.path) < RECENT_SECONDS and stated != "interrupted"
    if alive:
        return "running"
    return "interrupted" if run.file(runs.CONFIG).is_file() else "failed"


def headline_metrics(metrics: dict[str, Any]) -> tuple[str | None, dict[str, float]]:
    """The test (else validation, else train) split's accuracy, AUC, RMSE and MAE."""
    for split in ("test", "validation", "train"):
        values = metrics.get(split)
        if isinstance(values, dict):
            chosen = {
                k: float(values[k]) for k in _PRIMARY if isinstance(values.get(k), int | float)
            }
            if chosen:
                return split, chosen
    return None, {}


def summarize(path: Path) -> RunSummary:
    """The summary of one run folder (complete or partial)."""
    run = runs.Run(path)
    manifest = _read_json(run.file(runs.MANIFEST))
    status = run_status(run, manifest)
    started = _started(manifest, run.run_id)
    seconds = (manifest.get("seconds") or {}).get("total")
    if seconds is None and started is not None:
        seconds = max(0.0, _last_change(path) - started.timestamp())
    split, metrics = headline_metrics(_read_json(run.file(runs.METRICS)))
    return RunSummary(
        name=str(manifest.get("name") or path.parent.name),
        run_id=run.run_id,
        path=str(path),
        status=status,
        started=started.isoformat() if started else None,
        seconds=float(seconds) if seconds is not None else None,
        split=split,
        metrics=metrics,
    )


def _run_folders(name_dir: Path) -> list[Path]:
    return [
        child
        for child in name_dir.iterdir()
        if child.is_dir()
        and not child.is_symlink()
        and (not child.name.startswith(".") or child.name.endswith(runs.PARTIAL_SUFFIX))
    ]


def list_runs(runs_dir: str | Path | None = None, *, name: str | None = None) -> list[RunSummary]:
    """Every run under the runs folder (or of one name), newest first."""
    base = runs_folder(runs_dir)
    if not base.is_dir():
        raise RunError(f"{base}: no runs folder here; pass --dir or set MLCLI_RUNS_DIR")
    names = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if name is not None:
        if not (base / name).is_dir():
            known = ", ".join(p.name for p in names[:20]) or "none"
            raise RunError(f"{base / name}: no runs named {name!r}; the names there: {known}")
        names = [base / name]
    summaries = [summarize(folder) for name_dir in names for folder in _run_folders(name_dir)]
    return sorted(summaries, key=lambda s: (s.started or "", s.run_id), reverse=True)


def find_run(reference: str | Path, runs_dir: str | Path | None = None) -> Path:
    """A run folder, complete or not: a path, a run name (its latest), NAME/ID, or part of an id."""
    base = runs_folder(runs_dir)
    path = Path(reference)
    for candidate in (path, path / runs.LATEST, base / path / runs.LATEST, base / path):
        if candidate.is_dir() and (candidate / runs.MANIFEST).is_file():
            return candidate.resolve()
    matches = [
        folder
        for name_dir in (base.iterdir() if base.is_dir() else [])
        if name_dir.is_dir()
        for folder in _run_folders(name_dir)
        if str(reference) in runs.Run(folder).run_id
    ]
    if len(matches) == 1:
        return matches[0].resolve()
    found = "several runs" if matches else "no run"
    raise RunError(
        f"{reference}: {found} match; expected a run directory, a run name, NAME/ID or a run id "
        f"under {base}"
    )


def _artifacts(path: Path) -> list[dict[str, Any]]:
    found = []
    for child in sorted(path.iterdir()):
        if child.is_dir():
            files = [f for f in child.rglob("*") if f.is_file()]
            size = sum(f.stat().st_size for f in files)
            found.append({"path": child.name + "/", "bytes": size, "files": len(files)})
        elif child.is_file() and not child.name.startswith("."):
            found.append({"path": child.name, "bytes": child.stat().st_size, "files": 1})
    return found


def read_config(path: Path) -> dict[str, Any]:
    """A run's resolved config as a plain mapping (empty when it has none)."""
    try:
        document = yaml.safe_load(path.joinpath(runs.CONFIG).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return document if isinstance(document, dict) else {}


def config_diff(first: dict[str, Any], second: dict[str, Any]) -> list[dict[str, Any]]:
    """The dotted config keys whose values differ, with both values (None where absent)."""
    from mlcli.config.overrides import dotted_items  # pydantic only when a diff is asked for

    a, b = dotted_items(first), dotted_items(second)
    return [
        {"key": key, "run": a.get(key), "other": b.get(key)}
        for key in sorted(set(a) | set(b))
        if a.get(key) != b.get(key)
    ]


def run_details(
    reference: str | Path, *, runs_dir: str | Path | None = None, diff: str | Path | None = None
) -> dict[str, Any]:
    """One run: summary, manifest highlights, metrics, artifacts, and a diff against `diff`."""
    path = find_run(reference, runs_dir)
    manifest = _read_json(path / runs.MANIFEST)
    details: dict[str, Any] = {
        **summarize(path).to_dict(),
        "finished": manifest.get("finished"),
        "epochs_run": manifest.get("epochs_run"),
        "kept_epoch": manifest.get("kept_epoch"),
        "rows": manifest.get("rows"),
        "device": (manifest.get("device") or {}).get("type"),
        "git_commit": manifest.get("git_commit"),
        "metrics": _read_json(path / runs.METRICS),
        "artifacts": _artifacts(path),
    }
    if diff is not None:
        other = find_run(diff, runs_dir)
        details["diff"] = {
            "other": str(other),
            "config": config_diff(read_config(path), read_config(other)),
            "metrics": _metrics_diff(details["metrics"], _read_json(other / runs.METRICS)),
        }
    return details


def _metrics_diff(first: dict[str, Any], second: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for split in ("train", "validation", "test"):
        a, b = first.get(split) or {}, second.get(split) or {}
        for metric in sorted(set(a) | set(b)):
            if metric != "rows":
                rows.append(
                    {"split": split, "metric": metric, "run": a.get(metric), "other": b.get(metric)}
                )
    return rows
