"""Files and folders that must never look half-written: written aside, then renamed.

A reader (a person, a cron job, another mlcli process) sees either the old content or the new,
never part of it: a temporary file or folder beside the target is renamed over it with one
`os.replace` or `os.rename`, which is atomic on one filesystem.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlcli.errors import ConfigError, RunError

if TYPE_CHECKING:
    import pyarrow as pa


def write_json(path: Path, data: Any) -> None:
    """Writes JSON atomically (a temporary file renamed over the target)."""
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def write_text(path: Path, text: str) -> None:
    """Writes text atomically (a temporary file renamed over the target)."""
    with _file_beside(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_bytes(path: Path, data: bytes) -> None:
    """Writes bytes atomically (a temporary file renamed over the target)."""
    with _file_beside(path) as temporary:
        temporary.write_bytes(data)


def write_parquet(path: Path, table: pa.Table) -> None:
    """Writes an Arrow table as Parquet atomically (a temporary file renamed over the target)."""
    import pyarrow.parquet as pq

    with _file_beside(path) as temporary:
        pq.write_table(table, temporary)


@contextmanager
def _file_beside(path: Path) -> Iterator[Path]:
    """Yields an empty temporary file beside `path`, renamed over it if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide the run from a team's readers
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _protected(folder: Path) -> str | None:
    """Why `folder` may never be replaced (`/`, home, the working directory, its parents)."""
    resolved = folder.resolve()
    if resolved == Path(resolved.anchor):
        return "the root folder"
    if resolved == Path.home().resolve():
        return "the home directory"
    working = Path.cwd().resolve()
    if resolved == working:
        return "the working directory"
    if resolved in working.parents:
        return "a parent of the working directory"
    return None


def _listed(entry: Path, *, plain: set[str], folders: set[str]) -> bool:
    if entry.is_dir() and not entry.is_symlink():
        return entry.name in folders
    return entry.name in plain


def check_replaceable(folder: Path, *, owned: Collection[str], what: str) -> None:
    """Raises `ConfigError` unless `folder` holds nothing but `owned` and may be replaced.

    `owned` names the entries (relative to `folder`) that whatever wrote the folder put there;
    a name ending in `/` covers a subfolder and all it holds. `/`, the home directory, the working
    directory and its parents, links and plain files are never replaced.
    """
    if folder.is_symlink() or not folder.is_dir():
        kind = "a link" if folder.is_symlink() else "not a folder"
        raise ConfigError(f"{folder}: is {kind}; --force replaces only {what}")
    reason = _protected(folder)
    if reason is not None:
        raise ConfigError(f"{folder}: is {reason}; --force never replaces it")
    folders = {name.rstrip("/") for name in owned if name.endswith("/")}
    plain = {name for name in owned if not name.endswith("/")}
    foreign = sorted(
        entry.name + ("/" if entry.is_dir() and not entry.is_symlink() else "")
        for entry in folder.iterdir()
        if not _listed(entry, plain=plain, folders=folders)
    )
    if foreign:
        shown = ", ".join(foreign[:5]) + (
            f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        )
        raise ConfigError(
            f"{folder}: holds {shown}, which is not part of {what}; --force replaces only {what}: "
            "choose another --output"
        )


def check_destination(
    final: Path, *, force: bool = False, replaceable: Callable[[Path], None] | None = None
) -> None:
    """Raises unless `atomic_directory(final, force=..., replaceable=...)` may write `final`.

    Cheap: a command calls it before its heavy work (loading a model) to fail at once;
    `atomic_directory` calls it again when it starts writing.
    """
    if final.exists() or final.is_symlink():
        if not force:
            raise RunError(f"{final}: already exists; pass --force to replace it")
        if replaceable is not None:
            replaceable(final)
        else:
            check_replaceable(final, owned=(), what="an empty folder")


@contextmanager
def atomic_directory(
    final: Path,
    *,
    force: bool = False,
    replaceable: Callable[[Path], None] | None = None,
) -> Iterator[Path]:
    """Yields a temporary folder beside `final`, renamed to `final` only if the block succeeds.

    An existing `final` is an error unless `force`; with `force`, `replaceable(final)` must pass
    first (it raises to refuse; without it only an empty folder is replaced), before anything
    is written (`check_destination`). The old folder is renamed aside, the new one renamed
    in, then the old one removed: a kill at any moment leaves `final` complete (old or new) or
    absent, never half.
    Missing parent folders are created.
    """
    check_destination(final, force=force, replaceable=replaceable)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"{final}: cannot create the folder {final.parent} ({error.strerror or error}); "
            "expected a folder path that can be written"
        ) from error
    temporary = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        yield temporary
        if final.exists():
            old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".old"))
            os.rename(final, old / final.name)
            os.rename(temporary, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(temporary, final)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)
