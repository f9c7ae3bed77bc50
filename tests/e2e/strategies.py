"""Hypothesis strategies and names for tests of any table: column names a CSV header or a
Parquet schema can hold, and small tables of every feature type (`tests/e2e/test_properties`).
"""

from __future__ import annotations

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
