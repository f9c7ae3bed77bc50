"""Drift: how far a table's columns have moved from the training distribution in `schema.json`.

`DriftMonitor.update` takes the table one record batch at a time and keeps, per column, only a
count per bucket (numeric: the training deciles of `features.build.drift_bins`; categorical and
binary: each vocabulary entry plus one bucket for every value outside it), the missing values,
and at most `UNSEEN_EXAMPLES` values never seen in training: memory does not grow with the rows.
`finish` gives a `DriftReport` with each column's population stability index

    PSI = sum over buckets b of (a_b - e_b) * ln(a_b / e_b)

where `e_b` is the share of training rows in bucket `b` and `a_b` the share of the new table's
rows, both taken as at least `EPSILON` so that an empty bucket counts as rare, not impossible.
The buckets include one for missing values, so that a column that stops being filled drifts.
A common reading: under 0.1 no shift, 0.1 to 0.25 a moderate one, above 0.25 a large one.

Runs trained before the training distribution was kept have no bins or shares: their columns
get no PSI (`psi` None and a `reason`), only the missing rate and the share of unseen values.

```python
monitor = DriftMonitor(schema)
for batch in batches:
    monitor.update(batch)
report = monitor.finish()
report.over(0.2)  # the columns whose PSI passes 0.2
```
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlcli.data.columns import numeric_values
from mlcli.features.build import bin_indices, categorical_values
from mlcli.features.schema import ColumnSchema, FeatureSchema

EPSILON = 1e-4
UNSEEN_EXAMPLES = 5
MISSING = "(missing)"
OTHER = "(not in the vocabulary)"


@dataclass
class ColumnDrift:
    """One column's drift: its PSI (or why there is none), missing and unseen shares."""

    name: str
    type: str
    psi: float | None
    reason: str | None = None  # why `psi` is None
    missing_rate: float | None = None
    training_missing_rate: float | None = None
    unseen_rate: float | None = None  # categorical: share of values outside the vocabulary
    training_unseen_rate: float | None = None
    unseen_examples: list[Any] = field(default_factory=list)
    buckets: list[str] = field(default_factory=list)
    training_shares: list[float] = field(default_factory=list)
    shares: list[float] = field(default_factory=list)


@dataclass
class DriftReport:
    """The drift of every input column of a table against the training distribution."""

    rows: int
    columns: list[ColumnDrift]
    epsilon: float = EPSILON

    def over(self, bound: float) -> list[ColumnDrift]:
        """The columns whose PSI is above `bound`, the largest first."""
        found = [c for c in self.columns if c.psi is not None and c.psi > bound]
        return sorted(found, key=lambda c: -(c.psi or 0.0))

    def largest(self) -> ColumnDrift | None:
        """The column with the largest PSI; None when no column has one."""
        found = [c for c in self.columns if c.psi is not None]
        return max(found, key=lambda c: c.psi or 0.0) if found else None

    def psi(self) -> dict[str, float]:
        """Each column's PSI, leaving out those without one."""
        return {c.name: c.psi for c in self.columns if c.psi is not None}

    def summary(self) -> str:
        """One line: the largest PSI and its column, and how many columns have none."""
        largest = self.largest()
        if largest is None:
            return f"{self.rows} rows: PSI unavailable for every column"
        missing = [c.name for c in self.columns if c.psi is None]
        text = f"{self.rows} rows, largest PSI {largest.psi:.3f} ({largest.name})"
        return text + (f", {len(missing)} column(s) without PSI" if missing else "")

    def failure(self, bound: float) -> str | None:
        """A one-line message naming every column whose PSI passes `bound`; None if none."""
        over = self.over(bound)
        if not over:
            return None
        named = ", ".join(f"{c.name} (PSI {c.psi:.3f})" for c in over)
        return f"drift over --fail-on-drift {bound:g} in {len(over)} column(s): {named}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (`drift.json`)."""
        return {
            "rows": self.rows,
            "epsilon": self.epsilon,
            "formula": "sum((a - e) * ln(a / e)), shares floored at epsilon",
            "columns": [asdict(column) for column in self.columns],
        }


def population_stability(expected: list[float], actual: list[float]) -> float:
    """PSI of `actual` shares against `expected` ones, both floored at `EPSILON`."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), EPSILON)
    a = np.maximum(np.asarray(actual, dtype=np.float64), EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


@dataclass
class _Tally:
    column: ColumnSchema
    counts: np.ndarray  # one per value bucket
    missing: int = 0
    examples: list[Any] = field(default_factory=list)
    vocabulary: pa.Array | None = None


def _tally(column: ColumnSchema) -> _Tally:
    if column.type == "numeric":
        return _Tally(column, np.zeros(len(column.bins) + 1, dtype=np.int64))
    if column.type == "text":
        return _Tally(column, np.zeros(0, dtype=np.int64))
    arrow_type = pa.int64() if column.dtype == "int64" else pa.string()
    vocabulary = pa.array(column.vocabulary, arrow_type)
    return _Tally(
        column, np.zeros(len(column.vocabulary) + 1, dtype=np.int64), vocabulary=vocabulary
    )


class DriftMonitor:
    """Counts a table's values per training bucket, batch by batch, in bounded memory.

    Args:
        schema: the run's feature schema, with the training distribution of each column.
    """

    def __init__(self, schema: FeatureSchema):
        self.tallies = [_tally(column) for column in schema.columns]
        self.rows = 0

    def update(self, table: pa.Table) -> None:
        """Counts one batch of rows (it must hold every input column)."""
        self.rows += table.num_rows
        for tally in self.tallies:
            values = table.column(tally.column.name)
            if tally.column.type == "numeric":
                self._numbers(tally, numeric_values(values, tally.column.name))
            elif tally.column.type == "text":
                tally.missing += values.null_count
            else:
                self._categories(tally, values)

    @staticmethod
    def _numbers(tally: _Tally, values: pa.ChunkedArray) -> None:
        tally.missing += values.null_count
        numbers = values.drop_null().to_numpy()
        tally.counts += np.bincount(
            bin_indices(numbers, tally.column.bins), minlength=len(tally.counts)
        )

    @staticmethod
    def _categories(tally: _Tally, column: pa.ChunkedArray) -> None:
        assert tally.vocabulary is not None
        _, values = categorical_values(column)
        vocabulary = tally.vocabulary
        try:
            values = pc.cast(values, vocabulary.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            values, vocabulary = pc.cast(values, pa.string()), pc.cast(vocabulary, pa.string())
        tally.missing += values.null_count
        present = values.drop_null()
        indices = pc.index_in(present, value_set=vocabulary)
        other = len(tally.counts) - 1
        filled = pc.fill_null(indices, other).to_numpy(zero_copy_only=False)
        tally.counts += np.bincount(filled, minlength=len(tally.counts))
        if len(tally.examples) < UNSEEN_EXAMPLES and indices.null_count:
            unseen = pc.unique(pc.filter(present, pc.is_null(indices))).to_pylist()
            for value in unseen:
                if value not in tally.examples and len(tally.examples) < UNSEEN_EXAMPLES:
                    tally.examples.append(value)

    def finish(self) -> DriftReport:
        """The report on the rows counted so far."""
        return DriftReport(rows=self.rows, columns=[self._drift(t) for t in self.tallies])

    def _drift(self, tally: _Tally) -> ColumnDrift:
        column, rows = tally.column, self.rows
        drift = ColumnDrift(
            name=column.name,
            type=column.type,
            psi=None,
            missing_rate=tally.missing / rows if rows else None,
            training_missing_rate=column.missing_rate,
        )
        present = int(tally.counts.sum())
        if column.type in ("categorical", "binary"):
            drift.unseen_rate = int(tally.counts[-1]) / present if present else None
            if column.frequencies:
                drift.training_unseen_rate = max(0.0, 1.0 - math.fsum(column.frequencies))
            drift.unseen_examples = list(tally.examples)
        shares = _training_shares(column)
        if column.type == "text":
            drift.reason = "text column: PSI is computed for numeric and categorical columns"
        elif shares is None:
            drift.reason = (
                "schema.json holds no training distribution for this column (a run trained "
                "before mlcli kept one); retrain for its PSI"
            )
        elif rows == 0:
            drift.reason = "no rows"
        else:
            drift.buckets = _bucket_names(column)
            drift.training_shares = shares
            drift.shares = [*(tally.counts / rows).tolist(), tally.missing / rows]
            drift.psi = population_stability(drift.training_shares, drift.shares)
        return drift


def _training_shares(column: ColumnSchema) -> list[float] | None:
    """The training share of each bucket (values, then missing), or None where not kept."""
    if column.missing_rate is None:
        return None
    present = 1.0 - column.missing_rate
    if column.type == "numeric":
        if not column.bin_fractions:
            return None
        values = column.bin_fractions
    elif column.type in ("categorical", "binary"):
        if not column.frequencies:
            return None
        values = [*column.frequencies, max(0.0, 1.0 - math.fsum(column.frequencies))]
    else:
        return None
    return [share * present for share in values] + [column.missing_rate]


def _bucket_names(column: ColumnSchema) -> list[str]:
    if column.type != "numeric":
        return [str(value) for value in column.vocabulary] + [OTHER, MISSING]
    edges = [f"{edge:.6g}" for edge in column.bins]
    lower = ["-inf", *edges]
    upper = [*edges, "inf"]
    return [f"({low}, {high}]" for low, high in zip(lower, upper, strict=True)] + [MISSING]
