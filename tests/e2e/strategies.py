"""Hypothesis strategies and names for tests of any table: column names a CSV header or a
Parquet schema can hold, and small tables of every feature type (`tests/e2e/test_properties`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from hypothesis import strategies as st

# Names a CSV header or a Parquet schema can hold, and pairs that differ only in what the
# sanitiser replaces (the issue's `price($)` / `price(€)`, `a b` / `a_b` / `a-b`).
ODD_NAMES = [
    "od280/od315_of_diluted_wines",
    "price($)",
    "price(€)",
    "a b",
    "a_b",
    "a-b",
    "a.b",
    "a__b",
    'say "hi"',
    "it's",
    "x[0]",
    "{k}",
    "Größe",
    "größe",
    "名前",
    "🎉",
    "🎊",
    "2nd",
    "_private",
    "",
    " ",
    "class",
    "A",
    "a",
    "n" * 300,
    "n" * 299 + "m",
    "n" * 48,
    "n" * 49,
]

FEATURE_TYPES = ("numeric", "categorical", "binary", "text")
TASKS = ("binary", "multiclass", "regression")
# Characters of column names: what CSV headers and Parquet schemas hold and Keras does not.
NAME_ALPHABET = "ab/ .'\"[](){}$€éß名🎉_-09,;:"
# Magnitudes of numeric columns: ordinary, tiny, huge, beyond float32 (a data error), negative.
SCALES = (1.0, 1e-30, 1e30, 1e39, -1e30)
MISSING_RATES = (0.0, 0.2, 0.9, 1.0)
WORDS = ("good", "bad", "fine", "très", "名前", "🎉", "a-b", "x/y")


@dataclass(frozen=True)
class FeatureSpec:
    """One generated feature column: its name, type, how it is filled and how often missing."""

    name: str
    type: str
    missing: float
    scale: float = 1.0  # numeric: the values' magnitude
    cardinality: int = 2  # categorical: distinct values (rows: all unique)
    integers: bool = False  # categorical: integers rather than strings


@dataclass(frozen=True)
class TableSpec:
    """A generated table: features, target, rows, file format and the seed of its values."""

    features: tuple[FeatureSpec, ...]
    target: str
    task: str
    target_scale: float
    rows: int
    fmt: str
    seed: int


def column_names() -> st.SearchStrategy[str]:
    """Column names from the odd list, from odd characters, or 300 characters long."""
    return st.one_of(
        st.sampled_from(ODD_NAMES[:-4]).filter(bool),
        st.text(alphabet=NAME_ALPHABET, min_size=1, max_size=12),
        st.builds(lambda c: c * 300, st.sampled_from("né/")),
    )


@st.composite
def table_specs(draw: st.DrawFn, *, max_features: int = 4, max_rows: int = 30) -> TableSpec:
    """A small table's spec: 1..max_features features of any type and a target of any task."""
    count = draw(st.integers(1, max_features))
    names = draw(
        st.lists(
            column_names().filter(lambda n: n != "exclude"),  # features.exclude is a key
            min_size=count + 1,
            max_size=count + 1,
            unique=True,
        )
    )
    rows = draw(st.integers(8, max_rows))
    features = []
    for name in names[1:]:
        kind = draw(st.sampled_from(FEATURE_TYPES))
        features.append(
            FeatureSpec(
                name=name,
                type=kind,
                missing=draw(st.sampled_from(MISSING_RATES)),
                scale=draw(st.sampled_from(SCALES)) if kind == "numeric" else 1.0,
                cardinality=draw(st.sampled_from((1, 2, 3, rows))),
                integers=kind == "categorical" and draw(st.booleans()),
            )
        )
    return TableSpec(
        features=tuple(features),
        target=names[0],
        task=draw(st.sampled_from(TASKS)),
        target_scale=draw(st.sampled_from((1.0, 1e-30, 1e30))),
        rows=rows,
        fmt=draw(st.sampled_from(("csv", "parquet"))),
        seed=draw(st.integers(0, 2**16)),
    )


def _values(feature: FeatureSpec, rows: int, rng: np.random.Generator) -> list[Any]:
    if feature.type == "numeric":
        values: list[Any] = (rng.normal(size=rows) * feature.scale).tolist()
    elif feature.type == "binary":
        values = rng.choice(["yes", "no"], size=rows).tolist()
    elif feature.type == "text":
        values = [" ".join(rng.choice(WORDS, size=rng.integers(0, 4))) for _ in range(rows)]
    else:
        codes = rng.integers(0, feature.cardinality, size=rows)
        codes = np.arange(rows) if feature.cardinality >= rows else codes
        values = codes.tolist() if feature.integers else [f"v{c}/é" for c in codes]
    missing = rng.random(rows) < feature.missing
    return [None if gone else value for value, gone in zip(values, missing, strict=True)]


def make_table(spec: TableSpec) -> pa.Table:
    """The table a spec describes (its target last), values drawn from `spec.seed`."""
    rng = np.random.default_rng(spec.seed)
    columns = {f.name: _values(f, spec.rows, rng) for f in spec.features}
    if spec.task == "regression":
        target: list[Any] = (rng.normal(size=spec.rows) * spec.target_scale).tolist()
    else:
        classes = ["no", "yes"] if spec.task == "binary" else ["a", "b", "c"]
        target = [classes[i % len(classes)] for i in rng.permutation(spec.rows)]
    columns[spec.target] = target
    return pa.table(columns)
