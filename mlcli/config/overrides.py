"""Dotted config keys (`training.early_stopping.patience`): the one place that walks them.

A dotted key is walked through a raw YAML document (`get_dotted`, `set_dotted`) and through
the schema (`walk_schema`: which sections a key leads into, and its field's type). On top of
those, `apply_overrides` applies `--set key.path=value` options, typed by the schema.

Example:

```python
document = apply_overrides(document, ["training.epochs=3", "model.hidden_units=[64, 32]"])
set_dotted(document, "training.learning_rate", 0.01)
```
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Mapping
from typing import Annotated, Any

import yaml
from pydantic import BaseModel

from mlcli.config.schema import (
    BinarySpec,
    CategoricalSpec,
    Config,
    FeaturesConfig,
    NumericSpec,
    TextSpec,
)
from mlcli.errors import ConfigError

_FEATURE_SPECS: tuple[type[BaseModel], ...] = (NumericSpec, CategoricalSpec, BinarySpec, TextSpec)


def _parent(
    document: Mapping[str, Any], key: str, *, create: bool
) -> tuple[Mapping[str, Any] | None, str]:
    """The mapping that holds a dotted key's last part, and that part.

    With `create`, missing or non-mapping sections on the way are replaced by empty mappings;
    without it, a missing section gives `None`.
    """
    *parents, last = key.split(".")
    node: Any = document
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            if not create:
                return None, last
            child = {}
            node[part] = child
        node = child
    return node, last


def get_dotted(document: Mapping[str, Any], key: str) -> Any:
    """The value at a dotted key of a raw config, or `None` where the key is not there."""
    node, last = _parent(document, key, create=False)
    return None if node is None else node.get(last)


def set_dotted(document: dict[str, Any], key: str, value: Any) -> None:
    """Sets a dotted key of a raw config in place, making the sections on the way as needed."""
    node, last = _parent(document, key, create=True)
    assert isinstance(node, dict)  # made on the way when missing
    node[last] = value


KeyPath = tuple[str | int, ...]  # a key's parts, list positions as integers: ("data", "train", 0)
MISSING: Any = object()  # what `get_path` returns where a document has no such key


def get_path(document: Any, path: KeyPath) -> Any:
    """The value at a key path of a raw config (lists walked by position), or `MISSING`."""
    node = document
    for part in path:
        in_list = isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node)
        in_mapping = isinstance(part, str) and isinstance(node, Mapping) and part in node
        if not (in_list or in_mapping):
            return MISSING
        node = node[part]
    return node


def set_path(document: Any, path: KeyPath, value: Any) -> None:
    """Sets the value at a key path that `get_path` finds in a raw config."""
    *parents, last = path
    node = document
    for part in parents:
        node = node[part]
    node[last] = value


def dotted_name(path: KeyPath) -> str:
    """A key path as users write it: `data.train[0]`."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def dotted_items(document: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every leaf of a raw config by its dotted key; an empty section is a leaf of its own."""
    flat: dict[str, Any] = {}
    for key, child in document.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(child, Mapping) and child:
            flat.update(dotted_items(child, dotted))
        else:
            flat[dotted] = child
    return flat


def copy_document(value: Any) -> Any:
    """A copy of a raw YAML document that shares nothing with it (YAML anchors included)."""
    if isinstance(value, dict):
        return {k: copy_document(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_document(v) for v in value]
    return value


def apply_overrides(document: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Returns a copy of a raw config with `key.path=value` overrides applied.

    Values are parsed as YAML (`3`, `true`, `[64, 32]`) unless the schema says the key is a
    string, in which case the text is kept as it is.
    """
    result: dict[str, Any] = copy_document(document)
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"--set {override!r}: expected KEY=VALUE with a dotted key, "
                "e.g. --set training.epochs=3"
            )
        key = key.strip()
        _, annotation = walk_schema(key.split("."))
        value: Any
        if annotation is str or annotation == str | None:
            value = text
        else:
            try:
                value = yaml.safe_load(text) if text != "" else ""
            except yaml.YAMLError:
                value = text
        set_dotted(result, key, value)
    return result


def walk_schema(path: Iterable[Any]) -> tuple[list[type[BaseModel]], Any]:
    """The config sections a key path leads into, and the annotation of its last field.

    Integers in the path (list positions, as pydantic reports them) are skipped; so is the
    tag of a tagged union (`model.ft_transformer.heads`); under `features` any name is a
    column, which leads into every feature spec.
    """
    candidates: list[type[BaseModel]] = [Config]
    annotation: Any = None
    for key in path:
        if isinstance(key, int):
            continue
        following: list[type[BaseModel]] = []
        annotation = None
        for model in candidates:
            field = model.model_fields.get(str(key))
            if field is not None:
                annotation = field.annotation
                following.extend(_models_in(field.annotation))
            elif key in _literal_tags(model):
                following.append(model)  # a tagged union names its member in the path
            elif model is FeaturesConfig:
                following.extend(_FEATURE_SPECS)  # a column name
        candidates = following
    return candidates, annotation


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    return [
        a
        for a in _flatten_annotation(annotation)
        if isinstance(a, type) and issubclass(a, BaseModel)
    ]


def _union_members(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _flatten_annotation(annotation: Any) -> list[Any]:
    found: list[Any] = []
    for member in _union_members(annotation):
        if typing.get_origin(member) is Annotated:
            found.extend(_flatten_annotation(typing.get_args(member)[0]))
        elif typing.get_origin(member) in (typing.Union, types.UnionType):
            found.extend(_flatten_annotation(member))
        elif typing.get_origin(member) in (list, dict):
            found.extend(_flatten_annotation(typing.get_args(member)[-1]))
        else:
            found.append(member)
    return found


def _literal_tags(model: type[BaseModel]) -> list[str]:
    field = model.model_fields.get("type")
    if field is None:
        return []
    return [str(a) for a in typing.get_args(field.annotation)]
