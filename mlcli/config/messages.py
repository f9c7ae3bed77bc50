"""Config problems as one line each: the dotted key, what is wrong, and a "did you mean".

Pydantic reports a location such as `("model", "ft_transformer", "heads")` with the tags of
the unions it tried; `describe_validation_error` turns each problem into
``config key `model.heads`: ...`` and joins them on one line, as the CLI prints errors.
"""

from __future__ import annotations

import difflib
import re
import typing
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from mlcli.config.overrides import walk_schema
from mlcli.config.schema import FeatureType
from mlcli.config.training import MODEL_TYPES

# Pydantic names the member of a union it tried inside the location; those are not keys.
_UNION_MEMBER_NAMES = {
    "str",
    "int",
    "float",
    "bool",
    "list[str]",
    "SourceSpec",
    "constrained-float",
}
_SHOWN = 5  # problems spelt out; the rest are counted


def did_you_mean(name: str, options: Iterable[str]) -> str | None:
    """The option closest to a misspelt name, or `None` when none is close enough."""
    matches = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return matches[0] if matches else None


def allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The valid keys of the config section that holds `loc`'s last key, sorted."""
    sections, _ = walk_schema(loc[:-1])
    return sorted({name for section in sections for name in section.model_fields})


def format_loc(loc: tuple[Any, ...]) -> str:
    """A pydantic location as a dotted key (`data.csv.columns[2]`), union members left out."""
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif str(item) in _UNION_MEMBER_NAMES or str(item).startswith(
            ("function-", "tagged-union", "literal[")
        ):
            continue
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def _located(problems: Iterable[Any]) -> list[tuple[str, tuple[Any, ...], Any]]:
    """Each problem with its dotted key (as shown) and its location (for the valid keys)."""
    located = []
    for problem in problems:
        loc = tuple(
            item
            for item in problem["loc"]
            if not str(item).startswith(("tagged-union[", "literal[", "function-"))
        )
        if len(loc) >= 3 and loc[0] == "features" and loc[2] in typing.get_args(FeatureType):
            loc = loc[:2] + loc[3:]  # the tag pydantic adds inside a feature spec
        displayed = loc
        if len(loc) >= 2 and loc[0] == "model" and loc[1] in MODEL_TYPES:
            displayed = loc[:1] + loc[2:]  # the model family's tag (kept in loc for valid keys)
        located.append((format_loc(displayed), loc, problem))
    return located


def _describe(key: str, loc: tuple[Any, ...], problem: Any) -> str:
    """One problem as `config key `a.b`: what is wrong`."""
    found = problem.get("input")
    where = f"config key `{key}`" if loc else "config"
    if problem["type"] == "extra_forbidden":
        allowed = allowed_keys(loc)
        hint = did_you_mean(str(loc[-1]), allowed)
        message = f"{where} is not allowed"
        message += f" (did you mean `{hint}`?)" if hint else ""
        if allowed:
            message += f"; valid keys here: {', '.join(allowed)}"
        return message
    if problem["type"] == "missing":
        return f"{where} is required but missing"
    if problem["type"] == "literal_error":
        options = re.findall(r"'([^']*)'", problem.get("ctx", {}).get("expected", ""))
        hint = did_you_mean(str(found), options)
        message = f"{where}: expected one of {', '.join(options)}, found {found!r}"
        return message + (f" (did you mean {hint!r}?)" if hint else "")
    if problem["type"] == "union_tag_invalid":
        tag = str(problem.get("ctx", {}).get("tag"))
        hint = did_you_mean(tag, MODEL_TYPES)
        message = f"config key `{key}.type`: expected one of {', '.join(MODEL_TYPES)}, "
        message += f"found {tag!r}"
        return message + (f" (did you mean {hint!r}?)" if hint else "")
    if problem["type"] == "value_error":
        return f"{where}: {problem['msg'].removeprefix('Value error, ')}"
    shown = repr(found) if not isinstance(found, dict | list) else type(found).__name__
    return f"{where}: {problem['msg']} (found {shown})"


def describe_validation_error(error: ValidationError, source: str) -> str:
    """One line per problem: `file: config key `a.b`: what is wrong (did you mean ...)`."""
    problems = _located(error.errors())
    keys = [key for key, _, _ in problems]
    lines: list[str] = []
    reported: set[str] = set()
    for key, loc, problem in problems:
        found = problem.get("input")
        deeper = any(other.startswith(key + ".") for other in keys)
        if problem["type"] != "extra_forbidden" and (
            (isinstance(found, dict | list) and deeper) or key in reported
        ):
            continue  # another member of a union that did not fit; one problem is enough
        reported.add(key)
        message = _describe(key, loc, problem)
        if message not in lines:
            lines.append(message)
    extra = f" (+{len(lines) - _SHOWN} more)" if len(lines) > _SHOWN else ""
    return f"{source}: " + "; ".join(lines[:_SHOWN]) + extra
