"""A model base folder of numbered versions, as `mlcli export` writes it and TF Serving reads it.

```
BASE/1/saved_model.pb export.json variables/ ...     version 1
BASE/2/...                                           version 2
BASE/.2.x1y2.tmp/                                    an export being written: not a version
```

`mlcli export --format saved_model` writes a version under a hidden temporary name beside its
final one and renames it into place when it is complete and checked (`mlcli.files`), so a
folder named by digits only that holds `saved_model.pb` is a complete version, as TF Serving
takes it; hidden, temporary and other names are never versions. `load_versions` makes the first
load, before the server listens; `serving.versions` watches the folder afterwards.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from mlcli.errors import RunError
from mlcli.exporting.signature import EXPORT_INFO
from mlcli.runs import directory as runs
from mlcli.serving.servables import SAVED_MODEL_FILE, Servable, load_servable

_VERSION_NAME = re.compile(r"[0-9]{1,18}")

# TF Serving's version states (ManagedVersion / ServableState)
START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"

# The identity of a version folder's content: a folder renamed over it, or rewritten, differs.
Fingerprint = tuple[int, ...]


@dataclass
class VersionState:
    """One version's state as `model_version_status` reports it."""

    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""

    def describe(self) -> dict[str, object]:
        """The entry of `GET /v1/models/<name>`'s `model_version_status`, in TF Serving's shape."""
        return {
            "version": str(self.version),
            "state": self.state,
            "status": {"error_code": self.error_code, "error_message": self.error_message},
        }


@dataclass
class InitialVersions:
    """What the server serves when it starts: `servables` newest first.

    `base` is the folder to watch for new versions (None for a run or a single SavedModel
    folder, which are served as one fixed version); `failed` are the versions that did not
    load, with the fingerprint of the folder that failed (not tried again until it changes).
    """

    servables: list[Servable]
    base: Path | None = None
    failed: dict[int, tuple[Fingerprint, VersionState]] = field(default_factory=dict)


def model_base(path: Path) -> Path | None:
    """The folder of numbered versions that `path` names, or None.

    That is `path` itself when it holds a folder named by digits, or the one model folder in it
    (`mlcli export --output OUT` writes `OUT/<model-name>/<version>/`). A run directory or a
    single SavedModel folder (one version, served as it is) is None.
    """
    if not path.is_dir() or (path / SAVED_MODEL_FILE).is_file() or (path / runs.MANIFEST).is_file():
        return None
    children = [c for c in path.iterdir() if c.is_dir() and not c.name.startswith(".")]
    if any(_VERSION_NAME.fullmatch(child.name) for child in children):
        return path
    if len(children) == 1:
        return model_base(children[0])
    return None


def complete_versions(base: Path) -> dict[int, Path]:
    """The complete version folders in `base` by number (see the module's docstring)."""
    try:
        entries = list(base.iterdir())
    except OSError:  # the folder went away: no versions now, and the server keeps serving
        return {}
    return {
        int(entry.name): entry
        for entry in entries
        if _VERSION_NAME.fullmatch(entry.name) and (entry / SAVED_MODEL_FILE).is_file()
    }


def check_base(base: Path) -> dict[int, Path]:
    """`complete_versions(base)`; raises `RunError` (before anything loads) if there is none."""
    found = complete_versions(base)
    if not found:
        raise RunError(
            f"{base}: holds no complete version folder (a number holding {SAVED_MODEL_FILE}); "
            "expected what `mlcli export --format saved_model` writes"
        )
    return found


def fingerprint(folder: Path) -> Fingerprint:
    """Changes when `folder` is replaced or its model files are rewritten."""
    found: list[int] = []
    for path in (folder, folder / SAVED_MODEL_FILE, folder / EXPORT_INFO):
        try:
            status = path.stat()
        except OSError:
            found += [0, 0]
        else:
            found += [status.st_ino, status.st_mtime_ns]
    return tuple(found)


def load_version(folder: Path, number: int, *, name: str | None, trust_export: bool) -> Servable:
    """The SavedModel in the version folder `folder`, numbered by its folder's name (a copy of
    version 1 published as 2 is version 2, whatever its export.json says)."""
    servable = load_servable(folder, name=name, trust_export=trust_export)
    return replace(servable, version=str(number))


def failure(number: int, error: BaseException) -> VersionState:
    """The END state of a version that did not load, with the error that stopped it."""
    message = str(error) if isinstance(error, RunError) else f"{type(error).__name__}: {error}"
    return VersionState(number, END, error_code="UNKNOWN", error_message=message)


def load_versions(
    reference: str | Path, *, name: str | None = None, trust_export: bool = False, keep: int = 1
) -> InitialVersions:
    """The `keep` newest versions that load, of a base folder; or the one model of a run or a
    SavedModel folder.

    A newest version that does not load is reported (`InitialVersions.failed`) and the next
    older one is tried, as a running server keeps serving the old version.

    Raises:
        RunError: no such run, a base folder without a complete version, or no version loads
            (the newest one's error).
    """
    base = model_base(Path(reference))
    if base is None:
        return InitialVersions([load_servable(reference, name=name, trust_export=trust_export)])
    found = check_base(base)
    loaded: list[Servable] = []
    failed: dict[int, tuple[Fingerprint, VersionState]] = {}
    errors: list[BaseException] = []
    for number in sorted(found, reverse=True):
        if len(loaded) == keep:
            break
        folder = found[number]
        try:
            servable = load_version(folder, number, name=name, trust_export=trust_export)
        except RunError as error:
            failed[number] = (fingerprint(folder), failure(number, error))
            errors.append(error)
            continue
        name = name or servable.name  # every version is served under the newest one's name
        loaded.append(servable)
    if not loaded:
        raise errors[0]
    return InitialVersions(loaded, base, failed)
