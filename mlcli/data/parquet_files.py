"""Parquet files through pyarrow.parquet, their columns in the types the Arrow kernels take.

Parquet keeps Arrow types that CSV never produces. Dictionary columns (pandas `category`) are
decoded to their values when read, since many kernels (`count_distinct`, `index_in`, casts
between files) reject dictionaries, and half floats are widened to float32; nested and binary
columns stay as they are and are refused by name only where a column is used
(`mlcli.data.columns.check_usable`). A file that names a column twice is refused by name before
pyarrow's own error ("Multiple matches for FieldRef") can surface.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mlcli.data.columns import require_unique_names
from mlcli.errors import DataError

_FIX = "rename the columns where the file is written"


def _needs_plain(types: Sequence[pa.DataType]) -> bool:
    return any(pa.types.is_dictionary(t) or pa.types.is_float16(t) for t in types)


def _plain(column: Any) -> Any:
    if pa.types.is_dictionary(column.type):
        column = pc.cast(column, column.type.value_type)
    if pa.types.is_float16(column.type):
        column = pc.cast(column, pa.float32())
    return column


def plain_table(table: pa.Table) -> pa.Table:
    """`table` with dictionary columns decoded to their values and half floats as float32."""
    if not _needs_plain(table.schema.types):
        return table
    return pa.table([_plain(column) for column in table.columns], names=table.column_names)


def plain_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """`plain_table` for one record batch."""
    if not _needs_plain(batch.schema.types):
        return batch
    arrays = [_plain(column) for column in batch.columns]
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def _unreadable(path: Path, error: Exception) -> DataError:
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return DataError(f"{path}: cannot read the Parquet file: {text}")


def read_parquet(path: Path, columns: Sequence[str] | None = None) -> pa.Table:
    """A whole Parquet file (or the named columns), its columns plain."""
    try:
        require_unique_names(pq.read_schema(str(path)).names, source=str(path), fix=_FIX)
        return plain_table(pq.read_table(str(path), columns=list(columns) if columns else None))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as error:
        raise _unreadable(path, error) from error


def parquet_names(path: Path) -> list[str]:
    """The column names of a Parquet file, from its footer."""
    try:
        return list(pq.read_schema(str(path)).names)
    except (pa.ArrowInvalid, OSError) as error:
        raise _unreadable(path, error) from error


def iter_parquet(
    path: Path, *, columns: Sequence[str] | None = None, batch_rows: int = 65536
) -> Iterator[pa.RecordBatch]:
    """A Parquet file in record batches of at most `batch_rows` rows, their columns plain."""
    try:
        parquet = pq.ParquetFile(str(path))
        require_unique_names(parquet.schema_arrow.names, source=str(path), fix=_FIX)
        for batch in parquet.iter_batches(
            batch_size=batch_rows, columns=list(columns) if columns else None
        ):
            yield plain_batch(batch)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as error:
        raise _unreadable(path, error) from error
