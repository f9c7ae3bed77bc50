"""Reading a config: YAML (`yaml.safe_load`), its `extends` parents merged in
(`mlcli.config.inheritance`), `${VAR}` filled, `--set` applied, validated, and its data paths
resolved, once, here; and writing a config back out as YAML (resolved: no `extends`).

A value filled from the environment lives in memory only: `config_to_yaml` writes the
reference back as it was written (`${MLFLOW_TRACKING_URI}`), and the filled value is masked in
every message (`mlcli.errors.mask_secrets`). The keys that say where a run is (`name`,
`output.dir` and the data paths) are the exception: they are written as filled, since every
later command needs them and they name files, not credentials.

Example:

```python
config = load_config("examples/adult/config.yaml", overrides=["training.epochs=3"])
print(config_to_yaml(config))
```
"""

from __future__ import annotations

import os
import re
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mlcli.config.inheritance import (
    check_not_circular,
    find_parent,
    merge_documents,
    pop_extends,
)
from mlcli.config.messages import describe_validation_error
from mlcli.config.overrides import (
    MISSING,
    KeyPath,
    apply_overrides,
    dotted_name,
    get_path,
    set_path,
)
from mlcli.config.schema import EXTENDS, Config, SourceSpec
from mlcli.errors import SHORTEST_SECRET, ConfigError, remember_secret

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")
_DATA_PATHS = ("train", "validation", "test")


@dataclass(frozen=True)
class Reference:
    """A config value written with `${VAR}`: the text as written and the text it was filled to."""

    text: str
    filled: str


References = dict[KeyPath, Reference]

# Per parsed config: its references and the validated value each key had (object identity,
# not a field: two configs of equal values are equal whatever their references).
_references: dict[int, tuple[weakref.ref[Config], dict[KeyPath, tuple[str, Any]]]] = {}
# Every value filled from the environment, for configs that `parse_config` did not make.
_filled: dict[str, str] = {}


def is_location_key(path: KeyPath) -> bool:
    """Whether a key says where a run or its data is: written as filled, never masked."""
    return (
        path[:1] == ("name",)
        or path[:2] == ("output", "dir")
        or (
            path[:1] == ("data",)
            and len(path) > 1
            and path[1] in _DATA_PATHS
            and all(part == "path" or isinstance(part, int) for part in path[2:])
        )
    )


def _fill_env(value: Any, path: KeyPath, found: References, *, allow_unset: bool) -> Any:
    """Fills `${VAR}` and `${VAR:-default}` in every string of a parsed YAML document.

    Each string that held a reference is recorded in `found` by its key path; a value taken
    from the environment is remembered as a secret (masked in messages) unless the key says
    where the run is.
    """
    if isinstance(value, dict):
        return {
            k: _fill_env(v, (*path, str(k)), found, allow_unset=allow_unset)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            _fill_env(v, (*path, i), found, allow_unset=allow_unset) for i, v in enumerate(value)
        ]
    if not isinstance(value, str) or _ENV_PATTERN.search(value) is None:
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            filled = os.environ[name]
            if not is_location_key(path):
                remember_secret(filled)
                if len(filled) >= SHORTEST_SECRET:
                    _filled[filled] = f"${{{name}}}"
            return filled
        if default is not None:
            return default
        if allow_unset:
            return match.group(0)
        raise ConfigError(
            f"config key `{dotted_name(path)}`: environment variable ${{{name}}} is not set "
            f"(set it, or write ${{{name}:-default}})"
        )

    filled = _ENV_PATTERN.sub(substitute, value)
    found[path] = Reference(text=value, filled=filled)
    return filled


def _remember(config: Config, document: Any, references: References) -> None:
    """Keeps the references of a parsed config whose keys still hold the filled text."""
    dumped = config.model_dump(mode="json")
    kept: dict[KeyPath, tuple[str, Any]] = {}
    for path, reference in references.items():
        value = get_path(dumped, path)
        if (
            value is not MISSING
            and get_path(document, path) == reference.filled
            and not is_location_key(path)
        ):
            kept[path] = (reference.text, value)
    if kept:
        key = id(config)
        _references[key] = (weakref.ref(config, lambda _: _references.pop(key, None)), kept)


def parse_config(
    document: Any,
    *,
    source: str = "config",
    relative_to: Path | None = None,
    references: References | None = None,
) -> Config:
    """Validates a parsed YAML document into a `Config`, raising `ConfigError` on any problem.

    Relative data paths are resolved against `relative_to` (the working directory by default).
    `references` are the `${VAR}` texts of the document (`read_document`): `config_to_yaml`
    writes them back where the key still holds the value they were filled to.
    """
    if not isinstance(document, Mapping):
        kind = "empty" if document is None else type(document).__name__
        raise ConfigError(f"{source}: the config must be a YAML mapping of keys, found {kind}")
    try:
        config = Config.model_validate(document)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, source)) from error
    config = resolve_paths(config, relative_to or Path.cwd())
    if references:
        _remember(config, document, references)
    return config


def _absolute_path(path: str, folder: Path) -> str:
    """A data path made absolute, a relative one taken from `folder` (`~` expanded)."""
    return str((folder / Path(path).expanduser()).resolve())


def resolve_paths(config: Config, folder: Path) -> Config:
    """The config with its data paths made absolute, relative ones taken from `folder`.

    Called once, when a config is parsed: everything below `config/` sees absolute paths.
    """

    def absolute(spec: Any) -> Any:
        if isinstance(spec, SourceSpec):
            return spec.model_copy(update={"path": absolute(spec.path)})
        if isinstance(spec, list):
            return [absolute(p) for p in spec]
        if isinstance(spec, str):
            return _absolute_path(spec, folder)
        return spec

    data = config.data.model_copy(
        update={
            "train": absolute(config.data.train),
            "validation": absolute(config.data.validation),
            "test": absolute(config.data.test),
        }
    )
    return config.model_copy(update={"data": data})


def read_yaml(path: Path) -> Any:
    """Reads a YAML file with `yaml.safe_load`, reporting the line and column of a syntax error."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise ConfigError(f"{path}: config file not found") from error
    except IsADirectoryError as error:
        raise ConfigError(f"{path}: is a directory, expected a YAML config file") from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start})") from error
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config: {error.strerror}") from error
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path}: YAML does not parse{where}: {problem}") from error


def load_config(
    path: str | Path,
    *,
    overrides: Iterable[str] = (),
    allow_unset: bool = False,
) -> Config:
    """Reads, fills and validates a config file; relative data paths are taken from its folder.

    With `allow_unset`, a `${VAR}` whose variable is not set (and has no default) stays as
    written instead of being an error: for a run's saved config read where such a value is not
    used (evaluate, predict, export, serve).
    """
    config_path = Path(path)
    document, references = read_document(config_path, overrides=overrides, allow_unset=allow_unset)
    return parse_config(
        document,
        source=str(config_path),
        relative_to=config_path.resolve().parent,
        references=references,
    )


def read_document(
    path: Path, *, overrides: Iterable[str] = (), allow_unset: bool = False
) -> tuple[dict[str, Any], References]:
    """A config file as a raw mapping, its `extends` merged, `${VAR}` filled and overrides
    applied, not validated, with the references it held by key path (for `parse_config`)."""
    document, references = _extend(
        _read_mapping(path),
        source=str(path),
        folder=path.resolve().parent,
        chain=(str(path),),
        ancestors=(path.resolve(),),
        allow_unset=allow_unset,
    )
    return apply_overrides(document, overrides), references


def extend_document(
    document: Mapping[str, Any],
    *,
    source: str,
    folder: Path,
    allow_unset: bool = False,
) -> tuple[dict[str, Any], References]:
    """A parsed config with its `extends` parents merged in (`mlcli.config.inheritance`) and
    `${VAR}` filled, with the references it held by key path.

    Each file's `${VAR}` are filled before the merge, and a parent's relative data paths are
    made absolute from the parent's own folder; the config's own relative paths are resolved
    from `folder` when it is parsed (`parse_config`).
    """
    return _extend(
        dict(document),
        source=source,
        folder=folder,
        chain=(source,),
        ancestors=(),
        allow_unset=allow_unset,
    )


def _read_mapping(path: Path) -> dict[str, Any]:
    document = read_yaml(path)
    if document is not None and not isinstance(document, Mapping):
        raise ConfigError(
            f"{path}: the config must be a YAML mapping of keys, found {type(document).__name__}"
        )
    return dict(document or {})


def _extend(
    document: dict[str, Any],
    *,
    source: str,
    folder: Path,
    chain: tuple[str, ...],
    ancestors: tuple[Path, ...],
    allow_unset: bool,
) -> tuple[dict[str, Any], References]:
    """`_fill_env` of one file, its parents merged in before it (depth first, in order)."""
    entries = pop_extends(document, source=source)
    merged: dict[str, Any] = {}
    references: References = {}
    for index, entry in enumerate(entries):
        parent = find_parent(
            entry, key=f"{EXTENDS}[{index}]` of `{source}", folder=folder, chain=chain
        )
        check_not_circular(parent, ancestors, chain)
        layer, found = _extend(
            _read_mapping(parent.path),
            source=str(parent.path),
            folder=parent.path.parent,
            chain=(*chain, parent.entry),
            ancestors=(*ancestors, parent.path),
            allow_unset=allow_unset,
        )
        merged = merge_documents(merged, _absolute_data_paths(layer, parent.path.parent))
        references.update(found)
    own: References = {}
    document = _fill_env(document, (), own, allow_unset=allow_unset)
    references.update(own)
    return merge_documents(merged, document), references


def _absolute_data_paths(document: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A parent's raw document with its relative data paths taken from its own folder."""
    data = document.get("data")
    if not isinstance(data, dict):
        return document

    def absolute(spec: Any) -> Any:
        if isinstance(spec, dict) and "path" in spec:
            return {**spec, "path": absolute(spec["path"])}
        if isinstance(spec, list):
            return [absolute(p) for p in spec]
        if isinstance(spec, str):
            return _absolute_path(spec, folder)
        return spec

    paths = {key: absolute(data[key]) for key in _DATA_PATHS if key in data}
    return {**document, "data": {**data, **paths}}


def load_document(path: Path, *, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """A config file as a raw mapping, `${VAR}` filled and overrides applied, not validated."""
    return read_document(path, overrides=overrides)[0]


def config_document(config: Config) -> dict[str, Any]:
    """The config as a plain mapping for files and trackers: `${VAR}` references as written.

    A key keeps its reference while it holds the value it was filled to; any other text that
    holds a value filled from the environment gets `${VAR}` in its place.
    """
    document: dict[str, Any] = config.model_dump(mode="json", exclude_none=False)
    entry = _references.get(id(config))
    kept = entry[1] if entry is not None and entry[0]() is config else {}
    for path, (text, value) in kept.items():
        if get_path(document, path) == value:
            set_path(document, path, text)
    return _unfill(document, (), set(kept))


def _unfill(value: Any, path: KeyPath, written: set[KeyPath]) -> Any:
    if isinstance(value, dict):
        return {k: _unfill(v, (*path, k), written) for k, v in value.items()}
    if isinstance(value, list):
        return [_unfill(v, (*path, i), written) for i, v in enumerate(value)]
    if not isinstance(value, str) or path in written or is_location_key(path):
        return value
    for filled in sorted(_filled, key=len, reverse=True):
        value = value.replace(filled, _filled[filled])
    return value


def config_to_yaml(config: Config) -> str:
    """The config as YAML, in schema order, with unset defaults written out and `${VAR}`
    references as written (`config_document`)."""
    return yaml.safe_dump(config_document(config), sort_keys=False, allow_unicode=True)
