"""CSV files through pyarrow.csv: the config's options, and the checks every CSV read gets.

`read_csv` parses a whole stream (multithreaded) and `iter_csv` streams it in record batches;
both check what pyarrow lets through or reports in its own words: a header that repeats a name
or is not UTF-8, a header line read as data, text that is not UTF-8 (named by column and data
row: pyarrow is told not to check, so that a bad byte in a later block is found here rather
than failing a conversion without a row), and a compressed file cut short or corrupt.
`mlcli.data.tables` decides which files to read and calls these.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from mlcli.config.schema import CsvOptions
from mlcli.data.columns import is_text_type, require_unique_names
from mlcli.data.dialect import repeats_names
from mlcli.errors import DataError

# pyarrow parses this many bytes at a time: a streamed CSV's record batches are its blocks
BLOCK_BYTES = 8 << 20
# A streamed CSV's blocks: pyarrow's streaming reader reads up to 32 blocks ahead on its I/O
# thread (Arrow's background generator), so the block sets that read-ahead: 8 MiB blocks held
# 256 MiB of a file that is read slower than it loads (predict's RSS grew 1.4x from 1M to 4M
# rows until the read-ahead filled), 2 MiB blocks 64 MiB, 1 MiB blocks 32 MiB (predict's peak
# RSS 70 MiB lower than with 2 MiB, at the same CPU per row). A row must fit in one block.
STREAM_BLOCK_BYTES = 1 << 20
HEAD_BLOCK_BYTES = 256 << 10  # enough to name the columns of all but very wide tables
_COMPRESSION_NAMES = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2", ".lz4": "lz4"}


def reader_options(
    csv: CsvOptions, *, column_types: Mapping[str, pa.DataType] | None = None
) -> tuple[pa_csv.ReadOptions, pa_csv.ParseOptions, pa_csv.ConvertOptions]:
    """pyarrow's options for the config's `data.csv` (text is checked for UTF-8 here)."""
    read = pa_csv.ReadOptions(
        skip_rows=csv.skip_rows + (1 if csv.header and csv.columns else 0),
        column_names=csv.columns,
        block_size=BLOCK_BYTES,
    )
    parse = pa_csv.ParseOptions(
        delimiter=csv.delimiter,
        quote_char=csv.quote_char if csv.quoting else False,
        ignore_empty_lines=True,
    )
    nulls = list(csv.na_values)
    if csv.trim_whitespace:
        nulls += [f" {v}" for v in csv.na_values] + [f"{v} " for v in csv.na_values]
    convert = pa_csv.ConvertOptions(
        null_values=nulls,
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
        column_types=dict(column_types or {}),
        check_utf8=False,  # checked by `_check_utf8`, which names the column and row
    )
    return read, parse, convert


def open_file(path: Path) -> pa.NativeFile:
    """The file's bytes, decompressed by its suffix (.gz, .zst, .bz2, .lz4)."""
    return pa.input_stream(str(path), compression="detect")


def string_array(values: Sequence[str]) -> pa.Array:
    """A string array built from its buffers.

    `pa.array` on Python values imports pandas to check for pandas objects (0.3 s), which
    commands without TensorFlow such as `mlcli validate` avoid.
    """
    encoded = [value.encode("utf-8") for value in values]
    offsets = np.cumsum([0, *(len(value) for value in encoded)], dtype=np.int32)
    return pa.StringArray.from_buffers(
        len(encoded), pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(encoded))
    )


def clean_strings(table: pa.Table, csv: CsvOptions) -> pa.Table:
    """Trims text fields and re-reads numbers that only looked like text because of spaces."""
    import pyarrow.compute as pc

    if not csv.trim_whitespace:
        return table
    na = string_array(csv.na_values)
    columns = []
    for column in table.columns:
        if is_text_type(column.type):
            column = pc.utf8_trim_whitespace(column)
            missing = pa.nulls(1, column.type)[0]
            column = pc.if_else(pc.is_in(column, value_set=na), missing, column)
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def _first_invalid(column: pa.Array) -> int:
    """The index of the first value of a string array that is not UTF-8 (bisection)."""
    low, high = 0, len(column)  # the prefix [0, low) is valid, [0, high) is not
    while high - low > 1:
        middle = (low + high) // 2
        try:
            column.slice(0, middle).validate(full=True)
            low = middle
        except pa.ArrowInvalid:
            high = middle
    return low


def _check_utf8(table: pa.Table, source: str, row_offset: int) -> None:
    """Text that is not UTF-8, named by column, 1-based data row and its bytes."""
    import pyarrow.compute as pc

    for name, column in zip(table.column_names, table.columns, strict=True):
        if not is_text_type(column.type):
            continue
        rows = row_offset
        for chunk in column.chunks:
            try:
                chunk.validate(full=True)
            except pa.ArrowInvalid:
                index = _first_invalid(chunk)
                raw = pc.cast(chunk.slice(index, 1), pa.binary())[0].as_py()
                raise DataError(
                    f"{source}: column {name!r} holds bytes that are not UTF-8 text at data row "
                    f"{rows + index + 1} ({raw[:40]!r}); expected UTF-8: re-encode the file "
                    "(e.g. iconv -f latin1 -t utf-8)"
                ) from None
            rows += len(chunk)


def _checked_names(schema: pa.Schema, source: str) -> list[str]:
    """The header's names; raises `DataError` when they are not UTF-8 or one repeats."""
    try:
        names = list(schema.names)
    except UnicodeDecodeError as error:  # pyarrow decodes column names only when asked
        raise DataError(
            f"{source}: the header holds bytes that are not UTF-8 text "
            f"({error.object[error.start : error.start + 4]!r}); expected a UTF-8 table"
        ) from error
    require_unique_names(
        names, source=source, fix="rename them, or give data.csv.columns", where="header"
    )
    return names


def _check(table: pa.Table, csv: CsvOptions, source: str, *, first: bool, row_offset: int) -> None:
    """Catches a header that is not UTF-8 or repeats a name, bad text, a header read as data."""
    _checked_names(table.schema, source)
    _check_utf8(table, source, row_offset)
    if not (first and not csv.header and csv.columns and table.num_rows):
        return
    if repeats_names(list(table.slice(0, 1).to_pylist()[0].values()), csv.columns):
        raise DataError(
            f"{source}: the first line repeats the column names but data.csv.header is "
            "false; set header: true"
        )


def unreadable(source: str, error: Exception, *, path: Path | None = None) -> DataError:
    """The one-line data error for what pyarrow raised reading `source`."""
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    compression = _COMPRESSION_NAMES.get(path.suffix.lower()) if path is not None else None
    if compression and (isinstance(error, OSError) or "compress" in text.lower()):
        return DataError(
            f"{source}: truncated or corrupt {compression} file ({text}); expected a complete "
            f"{compression} stream: copy or download the file again"
        )
    if isinstance(error, OSError) and not isinstance(error, pa.ArrowException):
        return DataError(f"{source}: cannot read the file: {text}")
    if "UTF8" in text:
        return DataError(f"{source}: not UTF-8 text ({text})")
    return DataError(f"{source}: cannot read the table: {text}")


_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError)


def read_csv(
    stream: Any,
    csv: CsvOptions,
    *,
    source: str,
    path: Path | None = None,
    column_types: Mapping[str, pa.DataType] | None = None,
) -> pa.Table:
    """A whole CSV stream as one checked table (`path` names the file for its compression)."""
    read, parse, convert = reader_options(csv, column_types=column_types)
    try:
        table = pa_csv.read_csv(
            stream, read_options=read, parse_options=parse, convert_options=convert
        )
    except _ARROW_ERRORS as error:
        raise unreadable(source, error, path=path) from error
    if table.num_columns == 0:
        raise DataError(f"{source}: the file is empty, expected a table with a header or rows")
    _check(table, csv, source, first=True, row_offset=0)
    return clean_strings(table, csv)


def csv_names(path: Path, csv: CsvOptions) -> list[str]:
    """The column names a CSV file is read with (checked as `iter_csv` checks them), from its
    first rows only.

    pyarrow parses one small block (`HEAD_BLOCK_BYTES`) to name the columns; a first row longer
    than that (a very wide table) is read again with one ordinary block.
    """
    read, parse, convert = reader_options(csv)
    for block_size in (HEAD_BLOCK_BYTES, BLOCK_BYTES):
        read.block_size = block_size
        try:
            with open_file(path) as stream:
                reader = pa_csv.open_csv(
                    stream, read_options=read, parse_options=parse, convert_options=convert
                )
                schema = reader.schema
        except _ARROW_ERRORS as error:
            if "straddling" in str(error) and block_size < BLOCK_BYTES:
                continue
            raise unreadable(str(path), error, path=path) from error
        return _checked_names(schema, str(path))
    raise AssertionError("unreachable")  # pragma: no cover


def iter_csv(
    stream: Any,
    csv: CsvOptions,
    *,
    source: str,
    path: Path | None = None,
    column_types: Mapping[str, pa.DataType] | None = None,
) -> Iterator[pa.RecordBatch]:
    """A CSV stream in checked record batches, memory flat whatever its size."""
    read, parse, convert = reader_options(csv, column_types=column_types)
    read.block_size = STREAM_BLOCK_BYTES
    rows = 0
    try:
        reader = pa_csv.open_csv(
            stream, read_options=read, parse_options=parse, convert_options=convert
        )
        for batch in reader:
            table = pa.Table.from_batches([batch])
            _check(table, csv, source, first=rows == 0, row_offset=rows)
            rows += table.num_rows
            yield from clean_strings(table, csv).to_batches()
    except StopIteration:
        return
    except _ARROW_ERRORS as error:
        raise unreadable(source, error, path=path) from error
