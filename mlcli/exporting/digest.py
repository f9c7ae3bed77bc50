"""The content digest of a SavedModel export: what `mlcli serve` checks before loading one.

`mlcli export` records `export_digest(folder)` in `export.json` (key `digest`); `mlcli serve`
recomputes it and refuses a folder whose digest is missing or differs, unless the user says they
trust the folder. The digest covers `saved_model.pb` and every file under `variables/` and
`assets/`, by relative path and content, so a renamed, added, removed or edited file changes it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

DIGEST_KEY = "digest"
ALGORITHM = "sha256"
_COVERED = ("saved_model.pb", "fingerprint.pb", "variables", "assets")
_CHUNK = 1 << 20


def _covered_files(folder: Path) -> list[Path]:
    found: list[Path] = []
    for name in _COVERED:
        path = folder / name
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(child for child in path.rglob("*") if child.is_file())
    return sorted(found, key=lambda child: child.relative_to(folder).as_posix())


def export_digest(folder: Path) -> str:
    """`sha256:<hex>` over the relative path and bytes of every file a SavedModel loads."""
    digest = hashlib.sha256()
    for path in _covered_files(folder):
        relative = path.relative_to(folder).as_posix().encode("utf-8")
        digest.update(len(relative).to_bytes(8, "big") + relative)
        digest.update(path.stat().st_size.to_bytes(8, "big"))
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return f"{ALGORITHM}:{digest.hexdigest()}"
