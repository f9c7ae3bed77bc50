"""Writes docs/config.md, the config reference, from the pydantic schema (mlcli.config.schema).

Run it after adding, renaming or describing a config field:

    python docs/gen_config.py

Every key is listed by its dotted path (what `--set` takes), in the schema's order, with its
type, default and description; a field without a description stops the script, naming it.
tests/config/test_reference.py fails while docs/config.md is stale.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import BaseModel
from pydantic.fields import FieldInfo

DOCS = Path(__file__).resolve().parent
REFERENCE = DOCS / "config.md"
COMMAND = "python docs/gen_config.py"

_HEADER = (
    f"<!-- Generated from mlcli.config.schema by `{COMMAND}`: edit the schema, not this file. -->"
)
_INTRO = """\
# The config

Every key of an mlcli config, by its dotted path: the path `--set KEY=VALUE` takes
(`--set training.epochs=3`) and error messages name. Keys not listed here are rejected with the
closest valid name. `${VAR}` and `${VAR:-default}` in any value are filled from the environment;
relative data paths are taken from the config file's folder. `mlcli config show CONFIG` prints
a config with every default written out, and `mlcli config schema` prints this schema as JSON
Schema for editors. `extends` names presets and other configs merged in before the file's own
keys ([presets.md](presets.md)): the keys below are those of the merged config.

A default of `{}` is a section whose keys take their own defaults. `<column>` and `<key>` stand
for a name of your choosing: a column of the table, a dotted config key."""

# Keys a section takes beyond its fields (pydantic's `extra="allow"`), and what each one is.
_EXTRA_KEYS = {
    "features": (
        "<column>",
        "A column's feature type: a type name, or a mapping with `type` and that type's options.",
    ),
}
_MAPPING_KEYS = {"tune.parameters": "<key>"}


@dataclass
class _Row:
    key: str
    type: str
    default: str
    description: str


@dataclass
class _Table:
    title: str
    text: str
    rows: list[_Row]
    level: int


def _members(annotation: Any) -> list[tuple[Any, list[Any]]]:
    """The members of a union, each with the constraints annotated on it."""
    if typing.get_origin(annotation) is Annotated:
        inner, *extras = typing.get_args(annotation)
        constraints = [m for e in extras if isinstance(e, FieldInfo) for m in e.metadata]
        return [(member, constraints + more) for member, more in _members(inner)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [found for member in typing.get_args(annotation) for found in _members(member)]
    return [(annotation, [])]


def _models(annotation: Any) -> list[type[BaseModel]]:
    return [m for m, _ in _members(annotation) if isinstance(m, type) and issubclass(m, BaseModel)]


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _bounds(constraints: list[Any]) -> str:
    low = next((c for c in constraints if isinstance(c, Ge | Gt)), None)
    high = next((c for c in constraints if isinstance(c, Le | Lt)), None)
    if low is not None and high is not None:
        left = f"[{_number(low.ge)}" if isinstance(low, Ge) else f"({_number(low.gt)}"
        right = f"{_number(high.le)}]" if isinstance(high, Le) else f"{_number(high.lt)})"
        return f" in {left}, {right}"
    if low is not None:
        return f" ≥ {_number(low.ge)}" if isinstance(low, Ge) else f" > {_number(low.gt)}"
    if high is not None:
        return f" ≤ {_number(high.le)}" if isinstance(high, Le) else f" < {_number(high.lt)}"
    return ""


def _lengths(name: str, constraints: list[Any]) -> str:
    shortest = next((c.min_length for c in constraints if isinstance(c, MinLen)), None)
    longest = next((c.max_length for c in constraints if isinstance(c, MaxLen)), None)
    pattern = next((c.pattern for c in constraints if getattr(c, "pattern", None)), None)
    if name == "string" and shortest == longest == 1:
        text = "one character"
    elif name == "string" and longest is not None:
        text = f"string of at most {longest} characters"
    elif shortest:
        text = f"non-empty {name}"
    else:
        text = name
    # a table cell ends at any `|`, inside backticks too, unless it is escaped
    return text + (f" matching `{pattern.replace('|', chr(92) + '|')}`" if pattern else "")


def _is_section(annotation: Any) -> bool:
    """Only sections (and null) fit: one section, or a tagged union of them."""
    members = [m for m, _ in _members(annotation) if m is not type(None)]
    return bool(members) and all(isinstance(m, type) and issubclass(m, BaseModel) for m in members)


def _type_name(annotation: Any, constraints: list[Any], *, section: bool) -> str:
    """A member's type in words: `integer in [1, 1024]`, `list of string`, `"a" | "b"`."""
    basic = {str: "string", int: "integer", float: "number", bool: "boolean"}
    origin = typing.get_origin(annotation)
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any value"
    if origin is Literal:
        return " \\| ".join(json.dumps(value) for value in typing.get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section" if section else "mapping"
    if origin is list:
        (item,) = typing.get_args(annotation)
        return _lengths(f"list of {_describe_type(item)}", constraints)
    if origin is dict:
        key, value = typing.get_args(annotation)
        return _lengths(f"mapping of {_describe_type(key)} to {_describe_type(value)}", constraints)
    if annotation in basic:
        name = basic[annotation]
        return _lengths(name, constraints) + (_bounds(constraints) if name != "string" else "")
    raise TypeError(f"docs/gen_config.py cannot describe the type {annotation!r}")


def _describe_type(annotation: Any, constraints: tuple[Any, ...] = ()) -> str:
    """A field's type in words, its own constraints applied to each member but null."""
    section = _is_section(annotation)
    names: list[str] = []
    for member, own in _members(annotation):
        applied = [*own, *constraints] if member is not type(None) else []
        name = _type_name(member, applied, section=section)
        if name not in names:
            names.append(name)
    return " \\| ".join(names)


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "`{}`"  # a section whose keys take their defaults
    return f"`{json.dumps(value)}`"


def _description(text: str | None, where: str) -> str:
    if not text:
        raise SystemExit(f"{where} has no description: add one in the schema, then run {COMMAND}")
    return " ".join(text.split()).replace("|", "\\|")


def _summary(model: type[BaseModel]) -> str:
    """The first paragraph of a section's docstring, on one line."""
    return " ".join((model.__doc__ or "").strip().split("\n\n")[0].split())


def _field_row(model: type[BaseModel], name: str, path: str) -> _Row:
    field = model.model_fields[name]
    return _Row(
        key=path,
        type=_describe_type(field.annotation, tuple(field.metadata)),
        default=_default(field),
        description=_description(field.description, f"{model.__name__}.{name}"),
    )


def _walk(
    model: type[BaseModel], prefix: str, rows: list[_Row], tables: list[_Table], level: int
) -> None:
    """Appends the rows of a section's keys (nested sections inline) and the tables of unions."""
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        rows.append(_field_row(model, name, path))
        default = field.get_default(call_default_factory=True)
        _nested(field.annotation, path, rows, tables, level, default=default)
    if model.model_config.get("extra") == "allow":
        placeholder, text = _EXTRA_KEYS[prefix.rstrip(".")]
        path = f"{prefix}{placeholder}"
        annotation = typing.get_type_hints(model, include_extras=True)["__pydantic_extra__"]
        _, values = typing.get_args(annotation)
        rows.append(_Row(path, _describe_type(values), "", text))
        _nested(values, path, rows, tables, level, default=None)


def _nested(
    annotation: Any,
    path: str,
    rows: list[_Row],
    tables: list[_Table],
    level: int,
    *,
    default: Any,
) -> None:
    """The keys inside a field: one section inline, a tagged union's sections a table each."""
    mappings = [
        typing.get_args(m)[1] for m, _ in _members(annotation) if typing.get_origin(m) is dict
    ]
    if mappings:
        for model in _models(mappings[0]):  # a mapping of names to sections
            inner = f"{path}.{_MAPPING_KEYS[path]}"
            rows.append(_Row(inner, "section", "", _description(_summary(model), inner)))
            _walk(model, f"{inner}.", rows, tables, level)
        return
    models = _models(annotation)
    if len(models) == 1:
        _walk(models[0], f"{path}.", rows, tables, level)
        return
    chosen = type(default) if isinstance(default, BaseModel) else None
    for member in models:
        tag = typing.get_args(member.model_fields["type"].annotation)[0]
        title = f"`{path}` with `type: {tag}`" + (" (the default)" if member is chosen else "")
        table = _Table(title, _summary(member), [], level + 1)
        tables.append(table)
        _walk(member, f"{path}.", table.rows, tables, level + 1)


def _sections() -> list[_Table]:
    """The top level's table, then a table per section, in the schema's order."""
    from mlcli.config.schema import EXTENDS, EXTENDS_DESCRIPTION, Config

    top = _Table("The top level", _summary(Config), [], 2)
    tables = [top]
    # merged away before the config is validated, so not a field of `Config`
    top.rows.append(_Row(EXTENDS, "string \\| list of string", "`[]`", EXTENDS_DESCRIPTION))
    for name, field in Config.model_fields.items():
        top.rows.append(_field_row(Config, name, name))
        models = _models(field.annotation)
        if not models:
            continue
        text = _summary(models[0]) if len(models) == 1 else top.rows[-1].description
        table = _Table(f"`{name}`", text, [], 2)
        tables.append(table)
        default = field.get_default(call_default_factory=True)
        _nested(field.annotation, name, table.rows, tables, 2, default=default)
    return tables


def _markdown(table: _Table) -> str:
    lines = [f"{'#' * table.level} {table.title}", "", table.text, ""]
    if table.rows:
        lines += ["| key | type | default | description |", "| --- | --- | --- | --- |"]
        lines += [f"| `{r.key}` | {r.type} | {r.default} | {r.description} |" for r in table.rows]
        lines.append("")
    return "\n".join(lines)


def reference() -> str:
    """The Markdown reference of every config key."""
    sys.path.insert(0, str(DOCS.parent))  # this checkout's mlcli, installed or not
    body = "\n".join(_markdown(table) for table in _sections())
    return f"{_HEADER}\n\n{_INTRO}\n\n{body.rstrip()}\n"


def main(argv: list[str] | None = None) -> None:
    """Writes the reference to docs/config.md, or to `--output`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REFERENCE, help="default: docs/config.md")
    output = parser.parse_args(argv).output
    output.write_text(reference(), encoding="utf-8")
    print(output)


if __name__ == "__main__":
    main()
