"""`extends`: a config built on other configs, and the presets shipped with mlcli.

A config may name parents in `extends: [entry, ...]`. An entry ending in `.yaml` or `.yml`, or
starting with `.`, `/` or `~`, is a file, relative to the config that names it; any other entry
is a preset by name (`models/resnet`), a file of the `presets/` folder installed with mlcli (the
checkout's top-level `configs/` folder is a link to it). The parents are merged in order and the
config's own keys last: mappings merge key by key, anything else (lists, numbers, text, null)
replaces what came before, and a mapping that names another `type` than the one before it
(a `model:` of another family, a feature of another type) replaces it whole.

Reading the files and filling `${VAR}` is `mlcli.config.loading`; this module finds the parents
and merges them.

Example:

```python
merge_documents({"model": {"type": "mlp", "dropout": 0.1}}, {"model": {"dropout": 0.2}})
# {"model": {"type": "mlp", "dropout": 0.2}}
```
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from mlcli.config.messages import did_you_mean
from mlcli.config.overrides import KeyPath, copy_document, walk_schema
from mlcli.config.schema import EXTENDS
from mlcli.errors import ConfigError

_PRESET_NAME = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
_FILE_SUFFIXES = (".yaml", ".yml")


def presets_folder() -> Path:
    """The folder of the presets installed with mlcli (package data of `mlcli`)."""
    return Path(str(resources.files("mlcli") / "presets"))


def preset_names() -> list[str]:
    """Every shipped preset by the name `extends` takes (`models/resnet`), sorted."""
    folder = presets_folder()
    return sorted(
        path.relative_to(folder).with_suffix("").as_posix() for path in folder.rglob("*.yaml")
    )


@dataclass(frozen=True)
class Parent:
    """One `extends` entry, found: the entry as written and the file it names."""

    entry: str
    path: Path


def is_file_entry(entry: str) -> bool:
    """Whether an `extends` entry names a file (relative to its config), not a preset."""
    return entry.endswith(_FILE_SUFFIXES) or entry.startswith((".", "/", "~"))


def find_parent(entry: str, *, key: str, folder: Path, chain: Sequence[str]) -> Parent:
    """The file an `extends` entry names, a config error naming the chain where there is none.

    `key` is where the entry is written (`extends[0] of base.yaml`), `folder` the folder of the
    config that names it, `chain` the configs that led to it.
    """
    shown = " -> ".join([*chain, entry])
    if is_file_entry(entry):
        path = (folder / Path(entry).expanduser()).resolve()
        if path.is_file():
            return Parent(entry, path)
        stem = entry.removesuffix(".yml").removesuffix(".yaml")
        hint = f" (the preset is written `{stem}`)" if stem in preset_names() else ""
        raise ConfigError(f"config key `{key}`: no such file {path}{hint}; chain: {shown}")
    if not _PRESET_NAME.match(entry):
        raise ConfigError(
            f"config key `{key}`: {entry!r} is neither a preset name (models/resnet) nor a YAML "
            f"file (ending .yaml); chain: {shown}"
        )
    path = presets_folder() / f"{entry}.yaml"
    if path.is_file():
        return Parent(entry, path)
    names = preset_names()
    closest = did_you_mean(entry, names)
    raise ConfigError(
        f"config key `{key}`: no preset named {entry!r}"
        + (f" (did you mean {closest!r}?)" if closest else "")
        + f"; the presets are {', '.join(names)}; chain: {shown}"
    )


def pop_extends(document: dict[str, Any], *, source: str) -> list[str]:
    """Removes `extends` from a parsed YAML document and returns its entries, checked."""
    value = document.pop(EXTENDS, None)
    if value is None:
        return []
    entries = [value] if isinstance(value, str) else value
    if not isinstance(entries, list) or not all(
        isinstance(entry, str) and entry.strip() for entry in entries
    ):
        raise ConfigError(
            f"{source}: config key `{EXTENDS}` must be a list of preset names or YAML files, "
            f"e.g. [models/resnet, ../base.yaml], found {value!r}"
        )
    return [entry.strip() for entry in entries]


def check_not_circular(parent: Parent, ancestors: Sequence[Path], chain: Sequence[str]) -> None:
    """A config error when `parent` is already one of the configs that led to it."""
    if parent.path in ancestors:
        shown = " -> ".join([*chain, parent.entry])
        raise ConfigError(
            f"{chain[0]}: `{EXTENDS}` goes round in a circle: {shown}; remove one of these links"
        )


def merge_documents(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` laid on `base`: mappings merged key by key, every other value replaced.

    A mapping that names a `type` other than the one before it, where the schema takes one of
    several sections by their `type` (`model`, `features.<column>`), replaces it whole.
    """
    return _merge(base, over, ())


def _merge(base: Mapping[str, Any], over: Mapping[str, Any], path: KeyPath) -> dict[str, Any]:
    merged: dict[str, Any] = copy_document(dict(base))
    for key, value in over.items():
        before = merged.get(key)
        inner = (*path, str(key))
        if (
            isinstance(before, dict)
            and isinstance(value, dict)
            and not _replaces(before, value, inner)
        ):
            merged[key] = _merge(before, value, inner)
        else:
            merged[key] = copy_document(value)
    return merged


def _replaces(before: Mapping[str, Any], after: Mapping[str, Any], path: KeyPath) -> bool:
    """Whether `after` names another member of a tagged union than `before` (a missing `type`
    counts as another)."""
    if "type" not in after or after.get("type") == before.get("type"):
        return False
    sections, _ = walk_schema(path)
    return len(set(sections)) > 1
