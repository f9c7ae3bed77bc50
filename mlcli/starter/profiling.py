"""Profiling the columns of a sample: each one's feature type, and why, for `mlcli init`.

This extends `mlcli.features.types.infer_feature_type` (what `mlcli train` does for a column the
config leaves out) with what a person would notice looking at the table: identifiers, integer
codes with few values, dates, constant columns and heavy-tailed amounts. The reasons are
written into the generated config as comments.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlcli.data.columns import is_usable_type
from mlcli.features.types import infer_feature_type, infer_task

# Integers with at most this many distinct values are codes: one-hot categories.
INTEGER_CATEGORY_MAX = 12
# A date with at most this many distinct values is kept as a category, otherwise excluded.
DATE_CATEGORY_MAX = 50
# A non-negative number this skewed is log1p-transformed before normalising.
LOG_SKEWNESS = 3.0
_ID_NAME = re.compile(r"(^|[^a-z])(id|uuid|guid|key)$|^(id|uuid)([^a-z]|$)", re.IGNORECASE)
_DATE = re.compile(
    r"^(\d{4}-\d{1,2}-\d{1,2}([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?"
    r"|\d{1,2}/\d{1,2}/\d{2,4}( \d{1,2}:\d{2}(:\d{2})?)?)$"
)


@dataclass
class ColumnProfile:
    """One column of the sample, what it was inferred to be, and why."""

    name: str
    dtype: str
    rows: int
    missing: int
    distinct: int
    example: str
    kind: str = "excluded"  # numeric | categorical | binary | text | excluded | target
    transform: str = "none"
    sequence_length: int | None = None
    reason: str = ""

    @property
    def missing_share(self) -> float:
        """The share of the sample's rows where the value is missing."""
        return self.missing / self.rows if self.rows else 0.0


def _example(values: pa.ChunkedArray) -> str:
    present = values.drop_null()
    text = str(present[0].as_py()) if len(present) else ""
    return text if len(text) <= 30 else text[:27] + "..."


def _is_text(data_type: pa.DataType) -> bool:
    return pa.types.is_string(data_type) or pa.types.is_large_string(data_type)


def _looks_like_dates(values: pa.ChunkedArray) -> bool:
    if pa.types.is_temporal(values.type):
        return True
    if not _is_text(values.type):
        return False
    sample = values.drop_null().slice(0, 500).to_pylist()
    return bool(sample) and sum(bool(_DATE.match(v.strip())) for v in sample) >= 0.95 * len(sample)


def _is_identifier(name: str, values: pa.ChunkedArray, distinct: int) -> bool:
    """Every value differs, and the name says so, the values count up, or there are many."""
    present = len(values)
    if distinct < present or present < 20:
        return False
    if _ID_NAME.search(name) or present >= 1000:
        return True
    if pa.types.is_integer(values.type):
        numbers = values.to_numpy()
        return bool(np.all(np.diff(numbers) > 0))
    return False


def _skewness(values: pa.ChunkedArray) -> tuple[float, float]:
    numbers = pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
    numbers = numbers[np.isfinite(numbers)]
    if len(numbers) < 10 or float(np.std(numbers)) == 0.0:
        return 0.0, float(numbers.min()) if len(numbers) else 0.0
    centred = numbers - numbers.mean()
    return float(np.mean(centred**3) / np.std(numbers) ** 3), float(numbers.min())


def _numeric(profile: ColumnProfile, values: pa.ChunkedArray) -> None:
    profile.kind = "numeric"
    kind = "integer" if pa.types.is_integer(values.type) else "number"
    profile.reason = f"{kind}, {profile.distinct} distinct values"
    skewness, minimum = _skewness(values)
    if minimum >= 0 and skewness >= LOG_SKEWNESS:
        profile.transform = "log"
        profile.reason += f", skewed (skewness {skewness:.1f}): log1p before normalising"


def _text(profile: ColumnProfile, values: pa.ChunkedArray) -> None:
    counts = pc.list_value_length(pc.utf8_split_whitespace(values.slice(0, 5000))).to_numpy(
        zero_copy_only=False
    )
    mean = float(np.mean(counts)) if len(counts) else 0.0
    longest = float(np.percentile(counts, 95)) if len(counts) else 0.0
    profile.kind = "text"
    profile.sequence_length = int(min(256, max(16, 8 * math.ceil(longest / 8))))
    profile.reason = (
        f"free text, {mean:.1f} words on average; sequence_length covers 95% of the values"
    )


def profile_column(name: str, column: pa.ChunkedArray) -> ColumnProfile:
    """The feature type of one column of the sample and the reason for it."""
    if not is_usable_type(column.type):  # lists, structs, maps, bytes: no kernel counts them
        return ColumnProfile(
            name=name,
            dtype=str(column.type),
            rows=len(column),
            missing=column.null_count,
            distinct=0,
            example="",
            reason=f"Arrow type {column.type}: mlcli cannot use it as a feature",
        )
    values = column.drop_null()
    distinct = int(pc.count_distinct(values).as_py()) if len(values) else 0
    profile = ColumnProfile(
        name=name,
        dtype=str(column.type),
        rows=len(column),
        missing=column.null_count,
        distinct=distinct,
        example=_example(values),
    )
    if distinct == 0:
        profile.reason = "every value is missing in the sample"
    elif distinct == 1 and column.null_count == 0:
        profile.reason = f"a single value ({profile.example!r}) in every row: nothing to learn"
    elif _looks_like_dates(values):
        if distinct <= DATE_CATEGORY_MAX:
            profile.kind = "categorical"
            profile.reason = f"dates, {distinct} distinct: kept as a category"
        else:
            profile.reason = (
                f"dates ({distinct} distinct): mlcli does not derive parts of a date; "
                "add year/month/weekday columns to the table to use them"
            )
    elif _is_identifier(name, values, distinct) and not _looks_like_free_text(values):
        profile.reason = "a different value in every row: an identifier, not a feature"
    else:
        _typed(profile, values)
    return profile


def _looks_like_free_text(values: pa.ChunkedArray) -> bool:
    return _is_text(values.type) and infer_feature_type(values) == "text"


def _typed(profile: ColumnProfile, values: pa.ChunkedArray) -> None:
    distinct = profile.distinct
    whole = pa.types.is_integer(values.type) or (
        pa.types.is_floating(values.type)
        and bool(pc.all(pc.equal(values, pc.round(values))).as_py())
    )
    base = infer_feature_type(values)
    if distinct <= 2:
        profile.kind = "binary"
        profile.reason = f"{distinct} distinct values" + (" (one, or missing)" * (distinct == 1))
    elif base == "numeric" and whole and distinct <= INTEGER_CATEGORY_MAX:
        profile.kind = "categorical"
        profile.reason = f"whole numbers with {distinct} distinct values: a code, one-hot"
    elif base == "numeric":
        _numeric(profile, values)
    elif base == "text":
        _text(profile, values)
    else:
        profile.kind = "categorical"
        share = distinct / len(values)
        profile.reason = f"{distinct} distinct values" + (
            ", mostly unique: consider excluding it" if share > 0.5 and distinct > 100 else ""
        )


@dataclass
class TargetProfile:
    """The target column: its task, classes and the reason for the task."""

    name: str
    task: str
    reason: str
    positive_class: Any = None
    classes: int = 0
    missing: int = 0


def profile_target(name: str, column: pa.ChunkedArray, *, task: str | None) -> TargetProfile:
    """The task of the target (inferred unless given) and, for binary, the rarer class."""
    values = column.drop_null()
    counts = pc.value_counts(values)
    classes = counts.field("values").to_pylist()
    frequencies = counts.field("counts").to_pylist()
    inferred = infer_task(values)
    chosen = task or inferred
    if task and task != inferred:
        reason = f"given with --task (mlcli would have guessed {inferred})"
    elif chosen == "regression":
        reason = f"numbers with {len(classes)} distinct values"
    else:
        ranked = sorted(zip(frequencies, classes, strict=True), reverse=True)
        shown = ", ".join(f"{value} ({count / len(values):.0%})" for count, value in ranked[:6])
        more = f" and {len(ranked) - 6} more" if len(ranked) > 6 else ""
        reason = f"{len(classes)} classes: {shown}{more}"
    profile = TargetProfile(
        name=name,
        task=chosen,
        reason=reason,
        classes=len(classes),
        missing=column.null_count,
    )
    if chosen == "binary" and len(classes) == 2:
        profile.positive_class = min(zip(frequencies, classes, strict=True))[1]
    return profile


@dataclass
class InitReport:
    """What `init` inferred and where it wrote the config."""

    config_path: Path
    data: Path
    sample_rows: int
    columns: list[ColumnProfile]
    target: TargetProfile
    csv: dict[str, Any] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
