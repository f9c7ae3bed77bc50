"""Tables too large for memory: splits by a hash of the row number, read in record batches.

With `data.streaming: true` (or `auto` and training files over `STREAMING_THRESHOLD_BYTES` on
disk) no table is ever loaded whole. A row's split follows from its row number in the training
files (counted from 0 across the files in sorted order, unlabelled rows included) and a seed:
it is a test row when `unit_hash(row, TEST_SPLIT_SEED)` is below `data.test`, otherwise a
validation row when `unit_hash(row, seed)` is below `data.validation`. The same files and seed
always give the same split, whatever the batch sizes; there is no stratification by class.

`training.data.load_streamed_splits` reads the training files once to count and check them and to
build the schema; undeclared feature types and the task are inferred from `first_rows`, the
first `SAMPLE_ROWS` rows, as `mlcli validate` does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import pyarrow as pa

from mlcli.config.schema import Config
from mlcli.data.splits import TEST_SPLIT_SEED, labelled_rows
from mlcli.data.tables import TableSource, iter_batches, resolve_source
from mlcli.errors import DataError

STREAMING_THRESHOLD_BYTES = 1 << 30
SAMPLE_ROWS = 10_000
BATCH_ROWS = 65_536

Part = Literal["train", "validation", "test", "all"]


def streaming_enabled(config: Config) -> bool:
    """`data.streaming`, with `auto` deciding by the training files' size on disk."""
    setting = config.data.streaming
    if setting != "auto":
        return bool(setting)
    source = resolve_source(config.data.train, data=config.data)
    return sum(path.stat().st_size for path in source.paths) > STREAMING_THRESHOLD_BYTES


def _mix(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a fixed, well-spread permutation of 64-bit integers."""
    with np.errstate(over="ignore"):
        x = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def unit_hash(rows: np.ndarray, salt: int) -> np.ndarray:
    """A number in [0, 1) for each row number, fixed by the row number and the salt."""
    key = _mix(np.array([salt], dtype=np.int64).astype(np.uint64))
    return (_mix(rows.astype(np.uint64) ^ key) >> np.uint64(11)).astype(np.float64) / 2.0**53


def split_parts(rows: np.ndarray, config: Config) -> np.ndarray:
    """Each row's part of the training files: 0 train, 1 validation, 2 test."""
    parts = np.zeros(len(rows), dtype=np.int8)
    if isinstance(config.data.validation, float):
        # even salts for the seed and an odd one for the test split: never the same hash
        parts[unit_hash(rows, 2 * config.seed) < config.data.validation] = 1
    if isinstance(config.data.test, float):
        parts[unit_hash(rows, 2 * TEST_SPLIT_SEED + 1) < config.data.test] = 2
    return parts


_PART_CODES = {"train": 0, "validation": 1, "test": 2}


@dataclass
class StreamedTable:
    """One split of a streamed table: its files and which of their rows belong to it."""

    source: TableSource
    config: Config
    part: Part
    column_types: dict[str, pa.DataType] | None = None
    file_rows: list[int] = field(default_factory=list)  # rows in each file (all parts)
    num_rows: int = 0  # labelled rows of this part

    def batches(self, *, file_order: Sequence[int] | None = None) -> Iterator[pa.Table]:
        """This split's labelled rows, one record batch at a time, the files in `file_order`."""
        starts = np.concatenate([[0], np.cumsum(self.file_rows)]).astype(np.int64)
        for index in file_order if file_order is not None else range(len(self.source.paths)):
            one_file = replace(self.source, paths=(self.source.paths[index],))
            offset = int(starts[index]) if self.file_rows else 0
            for batch in iter_batches(one_file, column_types=self.column_types):
                table = pa.Table.from_batches([batch])
                rows = np.arange(offset, offset + table.num_rows, dtype=np.int64)
                offset += table.num_rows
                if self.part != "all":
                    keep = split_parts(rows, self.config) == _PART_CODES[self.part]
                    table = table.filter(pa.array(keep))
                yield labelled_rows(table, self.config)[0]


@dataclass
class StreamedSplits:
    """The splits of a streamed training run (the counterpart of `mlcli.data.splits.Splits`)."""

    train: StreamedTable
    validation: StreamedTable
    test: StreamedTable | None
    sources: dict[str, TableSource]
    dropped_unlabelled: dict[str, int]
    class_counts: list[int] = field(default_factory=list)


def unified_column_types(source: TableSource) -> dict[str, pa.DataType] | None:
    """One type per CSV column for every file (from their first blocks); None for Parquet."""
    if source.format == "parquet":
        return None
    schemas = []
    for path in source.paths:
        first = next(iter_batches(replace(source, paths=(path,))), None)
        if first is not None:
            schemas.append(first.schema)
    if not schemas:
        raise DataError(f"{source.describe()}: the table has no rows")
    try:
        unified = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise DataError(
            f"{source.describe()}: the files do not share one schema: {error}"
        ) from error
    # a column empty in every first block could hold anything later: read it as text
    return {f.name: pa.string() if pa.types.is_null(f.type) else f.type for f in unified}


def first_rows(table: StreamedTable) -> pa.Table:
    """The first `SAMPLE_ROWS` labelled rows of a streamed table (of all its parts)."""
    found, count = [], 0
    for batch in StreamedTable(table.source, table.config, "all", table.column_types).batches():
        found.append(batch)
        count += batch.num_rows
        if count >= SAMPLE_ROWS:
            break
    if not found or count == 0:
        raise DataError(f"{table.source.describe()}: the table has no rows with a label")
    return pa.concat_tables(found, promote_options="permissive").slice(0, SAMPLE_ROWS)
