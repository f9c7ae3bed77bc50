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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlcli.errors import RunError

if TYPE_CHECKING:
    import pyarrow as pa


def write_json(path: Path, data: Any) -> None:
    """Writes JSON atomically (a temporary file renamed over the target)."""
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def write_text(path: Path, text: str) -> None:
    """Writes text atomically (a temporary file renamed over the target)."""
    with _file_beside(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


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


@contextmanager
def atomic_directory(final: Path, *, force: bool = False) -> Iterator[Path]:
    """Yields a temporary folder beside `final`, renamed to `final` only if the block succeeds."""
    if final.exists() and not force:
        raise RunError(f"{final}: already exists; pass --force to replace it")
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        yield temporary
        if final.exists():
            shutil.rmtree(final)
        os.rename(temporary, final)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)
