"""Reading a config: YAML (`yaml.safe_load`), `${VAR}` filled, `--set` applied, validated, and
its data paths resolved, once, here; and writing a config back out as YAML.

Example:

```python
config = load_config("examples/adult/config.yaml", overrides=["training.epochs=3"])
print(config_to_yaml(config))
```
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mlcli.config.messages import describe_validation_error
from mlcli.config.overrides import apply_overrides
from mlcli.config.schema import Config, SourceSpec
from mlcli.errors import ConfigError

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def _fill_env(value: Any, path: str) -> Any:
    """Fills `${VAR}` and `${VAR:-default}` in every string of a parsed YAML document."""
    if isinstance(value, dict):
        return {k: _fill_env(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill_env(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(
            f"config key `{path}`: environment variable ${{{name}}} is not set "
            f"(set it, or write ${{{name}:-default}})"
        )

    return _ENV_PATTERN.sub(substitute, value)


def parse_config(
    document: Any, *, source: str = "config", relative_to: Path | None = None
) -> Config:
    """Validates a parsed YAML document into a `Config`, raising `ConfigError` on any problem.

    Relative data paths are resolved against `relative_to` (the working directory by default).
    """
    if not isinstance(document, Mapping):
        kind = "empty" if document is None else type(document).__name__
        raise ConfigError(f"{source}: the config must be a YAML mapping of keys, found {kind}")
    try:
        config = Config.model_validate(document)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, source)) from error
    return resolve_paths(config, relative_to or Path.cwd())


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
            return str((folder / Path(spec).expanduser()).resolve())
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
) -> Config:
    """Reads, fills and validates a config file; relative data paths are taken from its folder."""
    config_path = Path(path)
    document = load_document(config_path, overrides=overrides)
    return parse_config(document, source=str(config_path), relative_to=config_path.resolve().parent)


def load_document(path: Path, *, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """A config file as a raw mapping, `${VAR}` filled and overrides applied, not validated."""
    document = read_yaml(path)
    if document is not None and not isinstance(document, Mapping):
        raise ConfigError(
            f"{path}: the config must be a YAML mapping of keys, found {type(document).__name__}"
        )
    document = _fill_env(dict(document or {}), "")
    return apply_overrides(document, overrides)


def config_to_yaml(config: Config) -> str:
    """The config as YAML, in schema order, with unset defaults written out."""
    return yaml.safe_dump(
        config.model_dump(mode="json", exclude_none=False), sort_keys=False, allow_unicode=True
    )
