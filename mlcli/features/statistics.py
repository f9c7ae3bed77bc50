"""Feature statistics merged over record batches: the schema of a table read in one pass.

`SchemaStatistics.update` takes the training rows one record batch at a time and keeps only
what the schema needs: running counts, means and squared deviations of numbers (merged with
Chan et al.'s parallel formula), value counts of categories and of text tokens (merged with an
Arrow group-by into a Misra-Gries sketch of a few times the vocabulary cap, so that an
identifier-like column never holds a count per row: `Counts`), and a uniform sample of each
numeric column for its quantile points. `finish` hands these to the same functions that
`features.build.build_schema` uses on a whole table, so both give the same schema; only the
quantile points are approximate (on columns with more than `QUANTILE_SAMPLE_ROWS` values), and
vocabularies, on columns with more than `SKETCH_FACTOR` times `max_tokens` distinct values.

Example:

```python
statistics = SchemaStatistics(specs, target_column="income", task="binary", seed=42)
for batch in training_batches:
    statistics.update(batch)
schema = statistics.finish(config, excluded={})
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlcli.config.schema import CategoricalSpec, Config, FeatureSpec, NumericSpec, TextSpec
from mlcli.data.columns import is_text_type, numeric_values
from mlcli.errors import DataError
from mlcli.features.build import (
    build_target,
    categorical_schema,
    categorical_values,
    drift_bins,
    missing_rate,
    numeric_schema,
    quantile_points,
    text_schema,
    text_tokens,
    transformed_numbers,
)
from mlcli.features.schema import ColumnSchema, FeatureSchema, TargetSchema

# Numeric columns keep a uniform sample of this many values for their quantile points: exact
# below it, within about 1/sqrt(sample) of the true probability above it.
QUANTILE_SAMPLE_ROWS = 200_000
# Category and token counts hold this many times the vocabulary cap (`max_tokens`) between
# batches: memory stays bounded on identifier-like columns, and the values that make the
# vocabulary are kept with their counts unless the column is close to uniform.
SKETCH_FACTOR = 4


@dataclass
class Moments:
    """Count, mean and sum of squared deviations of the values seen, merged batch by batch."""

    count: int = 0
    mean: float = 0.0
    squares: float = 0.0

    def update(self, values: pa.ChunkedArray | pa.Array) -> None:
        """Merges the non-missing `values` in."""
        count = len(values) - values.null_count
        if count == 0:
            return
        mean = float(pc.mean(values).as_py())
        squares = float(pc.variance(values, ddof=0).as_py()) * count
        total = self.count + count
        delta = mean - self.mean
        self.squares += squares + delta * delta * self.count * count / total
        self.mean += delta * count / total
        self.count = total

    @property
    def variance(self) -> float | None:
        """The population variance (ddof 0), None before any value."""
        return self.squares / self.count if self.count else None


@dataclass
class Counts:
    """Value counts merged over batches (categories, text tokens, labels), bounded if asked.

    With a `capacity` the counts are a Misra-Gries summary, merged batch by batch as in Agarwal
    et al.'s mergeable summaries: after adding a batch's counts, when more than `capacity`
    values are held, the (capacity+1)-th largest count is taken off every count and the values
    left at zero or below are dropped, except that values tied at that count fill what room is
    left, the smallest first (so that a column where every value ties, an identifier, keeps
    `capacity` values rather than none). At most `capacity` values are held between batches
    (plus one batch's distinct values while merging), every value seen more than
    rows / (capacity + 1) times is kept, and the order of the kept values by count is the
    order of their true counts up to that error. Until a merge first overflows the counts are
    exact. `lists` reports each kept count plus what was taken off (`offset`), an upper bound
    of its true count.
    """

    capacity: int | None = None
    table: pa.Table | None = None
    offset: int = 0

    def update(self, values: pa.ChunkedArray | pa.Array) -> None:
        """Adds the counts of the non-missing `values`."""
        counted = pc.value_counts(values.drop_null())
        batch = pa.table({"values": counted.field("values"), "counts": counted.field("counts")})
        if self.table is None:
            self.table = self._bounded(batch)
            return
        merged = pa.concat_tables([self.table, batch], promote_options="permissive")
        summed = merged.group_by("values").aggregate([("counts", "sum")])
        self.table = self._bounded(summed.rename_columns(["values", "counts"]))

    def _bounded(self, table: pa.Table) -> pa.Table:
        if self.capacity is None or table.num_rows <= self.capacity:
            return table
        counts = table.column("counts").to_numpy()
        threshold = int(np.partition(counts, -(self.capacity + 1))[-(self.capacity + 1)])
        self.offset += threshold
        kept = table.filter(pc.greater(table.column("counts"), threshold))
        room = self.capacity - kept.num_rows
        if room > 0:  # fill up with values tied at the threshold, the smallest first: with every
            # value tied (an identifier column) plain Misra-Gries would keep nothing at all
            tied = table.filter(pc.equal(table.column("counts"), threshold))
            tied = tied.take(pc.sort_indices(tied, sort_keys=[("values", "ascending")])[:room])
            kept = pa.concat_tables([kept, tied])
        reduced = pc.subtract(kept.column("counts"), pa.scalar(threshold, pa.int64()))
        return kept.set_column(1, "counts", reduced)

    @property
    def size(self) -> int:
        """How many distinct values are held."""
        return 0 if self.table is None else self.table.num_rows

    def lists(self) -> tuple[list[Any], list[int]]:
        """(values, counts) as Python lists; counts are upper bounds once the sketch overflowed."""
        if self.table is None:
            return [], []
        counts = self.table.column("counts").to_pylist()
        return self.table.column("values").to_pylist(), [c + self.offset for c in counts]


@dataclass
class UniformSample:
    """A uniform sample without replacement of at most `size` values (bottom-k random keys)."""

    size: int
    rng: np.random.Generator
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0))
    values: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def update(self, values: pa.ChunkedArray | pa.Array) -> None:
        """Offers the non-missing `values` to the sample."""
        present = values.drop_null().to_numpy()
        keys = np.concatenate([self.keys, self.rng.random(len(present))])
        values_ = np.concatenate([self.values, present])
        if len(keys) > self.size:
            kept = np.argpartition(keys, self.size)[: self.size]
            keys, values_ = keys[kept], values_[kept]
        self.keys, self.values = keys, values_


def sketch_capacity(spec: FeatureSpec) -> int | None:
    """How many values a column's counts hold between batches: `SKETCH_FACTOR` times its cap."""
    if isinstance(spec, CategoricalSpec | TextSpec) and spec.max_tokens is not None:
        return SKETCH_FACTOR * spec.max_tokens
    return None


@dataclass
class _Column:
    spec: FeatureSpec
    moments: Moments = field(default_factory=Moments)
    counts: Counts = field(default_factory=Counts)
    sample: UniformSample | None = None
    raw_sample: UniformSample | None = None  # `log` columns: drift bins are in raw values
    dtype: str = ""
    nulls: int = 0


class SchemaStatistics:
    """The statistics of every feature and of the target, from record batches of training rows.

    Args:
        specs: the type of every input column (declared or inferred).
        target_column: the label column.
        task: binary, multiclass or regression.
        seed: seeds the quantile samples.
    """

    def __init__(self, specs: dict[str, FeatureSpec], *, target_column: str, task: str, seed: int):
        rng = np.random.default_rng(seed)
        self.columns = {
            name: _Column(
                spec,
                sample=UniformSample(QUANTILE_SAMPLE_ROWS, rng)
                if isinstance(spec, NumericSpec)
                else None,
                raw_sample=UniformSample(QUANTILE_SAMPLE_ROWS, rng)
                if isinstance(spec, NumericSpec) and spec.transform == "log"
                else None,
                counts=Counts(capacity=sketch_capacity(spec)),
            )
            for name, spec in specs.items()
        }
        self.target_column = target_column
        self.task = task
        self.labels = Counts()
        self.label_moments = Moments()
        self.rows = 0

    @property
    def numeric_columns(self) -> list[str]:
        """The numeric features' names."""
        return [n for n, c in self.columns.items() if isinstance(c.spec, NumericSpec)]

    def update(self, table: pa.Table, *, scale: float = 1.0) -> None:
        """Merges one batch of labelled training rows in."""
        self.rows += table.num_rows
        for name, column in self.columns.items():
            values = table.column(name)
            if isinstance(column.spec, NumericSpec):
                raw = numeric_values(values, name)
                numbers = transformed_numbers(raw, column.spec, name)
                column.nulls += numbers.null_count  # NaN counts as missing
                column.moments.update(numbers)
                assert column.sample is not None
                column.sample.update(numbers)
                if column.raw_sample is not None:
                    column.raw_sample.update(raw)
            elif isinstance(column.spec, TextSpec):
                if not is_text_type(values.type):
                    raise DataError(f"column {name!r} is declared text but has type {values.type}")
                column.nulls += values.null_count
                column.counts.update(text_tokens(values))
            else:
                column.nulls += values.null_count
                column.dtype, values = categorical_values(values)
                column.counts.update(values)
        labels = table.column(self.target_column)
        if self.task == "regression":
            numbers = numeric_values(labels, self.target_column)
            self.label_moments.update(pc.multiply(numbers, scale))
        else:
            self.labels.update(labels)

    def finish(self, config: Config, *, excluded: dict[str, str]) -> FeatureSchema:
        """The feature schema, as `features.build.build_schema` would give on the same rows."""
        if self.rows == 0:
            raise DataError("the training split has no rows with a label")
        columns = [self._column(name, column) for name, column in self.columns.items()]
        return FeatureSchema(columns=columns, target=self._target(config), excluded=excluded)

    def class_counts(self, classes: list[Any]) -> list[int]:
        """How many training rows hold each class, in the order of `classes`."""
        found = dict(zip(*self.labels.lists(), strict=True))
        return [int(found.get(value, 0)) for value in classes]

    def _column(self, name: str, column: _Column) -> ColumnSchema:
        spec = column.spec
        if isinstance(spec, NumericSpec):
            assert column.sample is not None
            sample = column.sample.values
            schema = numeric_schema(
                name,
                spec,
                mean=column.moments.mean if column.moments.count else None,
                variance=column.moments.variance,
                quantiles=quantile_points(pa.array(sample, pa.float64())),
                has_missing=column.nulls > 0,
            )
            raw = column.raw_sample.values if column.raw_sample is not None else sample
            # approximate past QUANTILE_SAMPLE_ROWS values, as the quantile points are
            schema.bins, schema.bin_fractions = drift_bins(pa.array(raw, pa.float64()))
        else:
            values, frequencies = column.counts.lists()
            if isinstance(spec, TextSpec):
                schema = text_schema(
                    name, spec, values=values, frequencies=frequencies, has_missing=column.nulls > 0
                )
            else:
                schema = categorical_schema(
                    name,
                    spec,
                    dtype=column.dtype or "string",
                    values=values,
                    frequencies=frequencies,
                    has_missing=column.nulls > 0,
                    present=self.rows - column.nulls,
                )
        schema.missing_rate = missing_rate(column.nulls, self.rows)
        return schema

    def _target(self, config: Config) -> TargetSchema:
        name = self.target_column
        if self.task != "regression":
            values, _ = self.labels.lists()
            task_config = config.model_copy(deep=True)
            task_config.target.task = self.task  # type: ignore[assignment]
            return build_target(pa.chunked_array([pa.array(values)]), task_config)
        moments = self.label_moments
        std = float(np.sqrt(moments.variance or 1.0)) or 1.0
        return TargetSchema(
            column=name, task="regression", mean=moments.mean, std=std, scale=config.target.scale
        )
