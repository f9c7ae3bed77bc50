"""Reading tables with pyarrow: CSV/TSV (every quirk through the config) and Parquet.

A `TableSource` is one logical table: files from a path, a glob, a directory or a list, all of
one format and read with one set of CSV options. `read_table` loads it whole (fine for the
tables that fit in memory); `iter_batches` streams it in record batches with fixed column types.
"""

from __future__ import annotations

import glob
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from mlcli.config.messages import did_you_mean
from mlcli.config.schema import CsvOptions, DataConfig, Source, SourceSpec
from mlcli.data.dialect import repeats_names
from mlcli.errors import DataError

_COMPRESSION_SUFFIXES = {".gz", ".zst", ".zstd", ".bz2", ".lz4"}
_PARQUET_SUFFIXES = {".parquet", ".pq"}
_TABLE_SUFFIXES = {".csv", ".tsv", ".txt", ".data", ".test", ".parquet", ".pq"}

Format = Literal["csv", "parquet"]


@dataclass(frozen=True)
class TableSource:
    """One logical table: its files, their format and how to parse them."""

    paths: tuple[Path, ...]
    format: Format
    csv: CsvOptions = field(default_factory=CsvOptions)
    stdin: BinaryIO | None = None

    @property
    def name(self) -> str:
        """A short name for messages and folder names: the first file's stem."""
        if self.stdin is not None:
            return "stdin"
        first = self.paths[0].name
        for suffix in (*_COMPRESSION_SUFFIXES, *_TABLE_SUFFIXES):
            first = first.removesuffix(suffix)
        return first or "data"

    def describe(self) -> str:
        """The files, for messages."""
        if self.stdin is not None:
            return "<stdin>"
        if len(self.paths) == 1:
            return str(self.paths[0])
        return f"{self.paths[0]} (+{len(self.paths) - 1} more files)"


def _format_of(path: Path) -> Format:
    suffixes = [s.lower() for s in path.suffixes]
    while suffixes and suffixes[-1] in _COMPRESSION_SUFFIXES:
        suffixes.pop()
    return "parquet" if suffixes and suffixes[-1] in _PARQUET_SUFFIXES else "csv"


def expand_paths(patterns: str | Sequence[str]) -> tuple[Path, ...]:
    """Files named by a path, a glob or a directory (or a list of them).

    A config's paths are absolute once it is loaded; a relative one (from the command line) is
    taken from the working directory.
    """
    found: list[Path] = []
    for pattern in [patterns] if isinstance(patterns, str) else patterns:
        path = Path(pattern).expanduser()
        full = path
        if glob.has_magic(str(pattern)):
            matches = sorted(Path(p) for p in glob.glob(str(full), recursive=True))
            matches = [m for m in matches if m.is_file()]
            if not matches:
                raise DataError(f"{full}: no file matches this pattern")
            found.extend(matches)
        elif full.is_dir():
            inside = sorted(
                p
                for p in full.iterdir()
                if p.is_file()
                and any(s.lower() in _TABLE_SUFFIXES for s in p.suffixes)
                and not p.name.startswith((".", "_"))
            )
            if not inside:
                raise DataError(f"{full}: directory holds no .csv, .tsv or .parquet file")
            found.extend(inside)
        elif full.is_file():
            found.append(full)
        else:
            raise DataError(f"{full}: data file not found")
    return tuple(found)


def merged_csv_options(base: CsvOptions, overrides: Mapping[str, Any] | None) -> CsvOptions:
    """`base` with the keys set in `overrides` laid over it."""
    changes = {k: v for k, v in (overrides or {}).items() if v is not None}
    if not changes:
        return base
    return CsvOptions.model_validate({**base.model_dump(exclude_unset=True), **changes})


def resolve_source(
    spec: Source, *, data: DataConfig, format_override: str | None = None
) -> TableSource:
    """Turns a `data.train`/`data.test`-style entry of the config into a `TableSource`."""
    overrides: Mapping[str, Any] | None = None
    patterns: str | list[str]
    if isinstance(spec, SourceSpec):
        patterns = spec.path
        overrides = spec.csv.model_dump(exclude_unset=True)
    else:
        patterns = spec
    paths = expand_paths(patterns)
    chosen = format_override or data.format
    formats: set[Format] = {_format_of(p) for p in paths}
    if chosen in ("csv", "parquet"):
        formats = {"parquet" if chosen == "parquet" else "csv"}
    if len(formats) > 1:
        raise DataError(f"{paths[0]}: a table mixes CSV and Parquet files; use one format")
    fmt = formats.pop()
    csv = merged_csv_options(data.csv, overrides)
    tsv = all(".tsv" in [s.lower() for s in p.suffixes] for p in paths)
    if tsv and "delimiter" not in csv.model_fields_set:
        csv = merged_csv_options(csv, {"delimiter": "\t"})
    return TableSource(paths=paths, format=fmt, csv=csv)


def _csv_reader_options(
    csv: CsvOptions, *, column_types: Mapping[str, pa.DataType] | None = None
) -> tuple[pa_csv.ReadOptions, pa_csv.ParseOptions, pa_csv.ConvertOptions]:
    read = pa_csv.ReadOptions(
        skip_rows=csv.skip_rows + (1 if csv.header and csv.columns else 0),
        column_names=csv.columns,
        block_size=8 << 20,
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
    )
    return read, parse, convert


def _open(path: Path) -> pa.NativeFile:
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


def _clean_strings(table: pa.Table, csv: CsvOptions) -> pa.Table:
    """Trims text fields and re-reads numbers that only looked like text because of spaces."""
    if not csv.trim_whitespace:
        return table
    na = string_array(csv.na_values)
    columns = []
    for column in table.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            column = pc.utf8_trim_whitespace(column)
            missing = pa.nulls(1, column.type)[0]
            column = pc.if_else(pc.is_in(column, value_set=na), missing, column)
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def _check_csv(table: pa.Table, csv: CsvOptions, source: str, *, first: bool) -> None:
    """Catches bytes that are not UTF-8 and a header line read as data."""
    try:
        names = table.column_names
    except UnicodeDecodeError as error:  # pyarrow decodes column names only when asked
        raise DataError(
            f"{source}: the header holds bytes that are not UTF-8 text "
            f"({error.object[error.start : error.start + 4]!r}); expected a UTF-8 table"
        ) from error
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DataError(
            f"{source}: the header names {', '.join(repr(n) for n in repeated)} more than once; "
            "expected one column per name (rename them, or give data.csv.columns)"
        )
    for name, column in zip(names, table.columns, strict=True):
        if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            raise DataError(
                f"{source}: column {name!r} holds bytes that are not UTF-8 text; "
                "re-encode the file as UTF-8"
            )
    if not (first and not csv.header and csv.columns and table.num_rows):
        return
    if repeats_names(list(table.slice(0, 1).to_pylist()[0].values()), csv.columns):
        raise DataError(
            f"{source}: the first line repeats the column names but data.csv.header is "
            "false; set header: true"
        )


def _arrow_error(source: str, error: Exception) -> DataError:
    text = str(error).strip().splitlines()[0]
    if "invalid UTF8" in text or "UTF8" in text:
        return DataError(f"{source}: not UTF-8 text ({text})")
    return DataError(f"{source}: cannot read the table: {text}")


def _read_csv_file(path: Path, csv: CsvOptions, column_types: Mapping[str, pa.DataType] | None):
    read, parse, convert = _csv_reader_options(csv, column_types=column_types)
    try:
        with _open(path) as stream:
            table = pa_csv.read_csv(
                stream, read_options=read, parse_options=parse, convert_options=convert
            )
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as error:
        raise _arrow_error(str(path), error) from error
    except OSError as error:
        raise DataError(f"{path}: cannot read the file: {error}") from error
    if table.num_columns == 0:
        raise DataError(f"{path}: the file is empty, expected a table with a header or rows")
    _check_csv(table, csv, str(path), first=True)
    return _clean_strings(table, csv)


def _read_parquet_file(path: Path, columns: Sequence[str] | None) -> pa.Table:
    try:
        return pq.read_table(str(path), columns=list(columns) if columns else None)
    except (pa.ArrowInvalid, OSError) as error:
        raise _arrow_error(str(path), error) from error


def read_table(
    source: TableSource,
    *,
    columns: Sequence[str] | None = None,
    column_types: Mapping[str, pa.DataType] | None = None,
) -> pa.Table:
    """Reads a whole table into memory (multithreaded parsing), columns cast to one schema."""
    tables: list[pa.Table] = []
    if source.stdin is not None:
        read, parse, convert = _csv_reader_options(source.csv, column_types=column_types)
        try:
            table = pa_csv.read_csv(
                source.stdin, read_options=read, parse_options=parse, convert_options=convert
            )
        except pa.ArrowInvalid as error:
            raise _arrow_error("<stdin>", error) from error
        tables.append(_clean_strings(table, source.csv))
    for path in source.paths:
        if source.format == "parquet":
            tables.append(_read_parquet_file(path, columns))
        else:
            tables.append(_read_csv_file(path, source.csv, column_types))
    if len(tables) == 1:
        table = tables[0]
    else:
        try:
            table = pa.concat_tables(tables, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            raise DataError(
                f"{source.describe()}: the files do not share one schema: {error}"
            ) from error
    if columns is not None and source.format != "parquet":
        require_columns(table.column_names, columns, source=source.describe())
        table = table.select(list(columns))
    return table


def iter_batches(
    source: TableSource,
    *,
    columns: Sequence[str] | None = None,
    column_types: Mapping[str, pa.DataType] | None = None,
    batch_rows: int = 65536,
) -> Iterator[pa.RecordBatch]:
    """Streams a table in record batches; memory stays flat whatever the file size.

    `column_types` fixes the types of CSV columns (inference on the first block alone could
    otherwise disagree with later blocks).
    """
    if source.stdin is not None:
        yield from _iter_csv(source.stdin, source.csv, "<stdin>", column_types)
        return
    for path in source.paths:
        if source.format == "parquet":
            try:
                parquet = pq.ParquetFile(str(path))
                if columns is not None:
                    require_columns(parquet.schema_arrow.names, columns, source=str(path))
                yield from parquet.iter_batches(
                    batch_size=batch_rows, columns=list(columns) if columns else None
                )
            except (pa.ArrowInvalid, OSError) as error:
                raise _arrow_error(str(path), error) from error
        else:
            with _open(path) as stream:
                yield from _iter_csv(stream, source.csv, str(path), column_types)


def _iter_csv(
    stream: Any,
    csv: CsvOptions,
    name: str,
    column_types: Mapping[str, pa.DataType] | None,
) -> Iterator[pa.RecordBatch]:
    read, parse, convert = _csv_reader_options(csv, column_types=column_types)
    try:
        reader = pa_csv.open_csv(
            stream, read_options=read, parse_options=parse, convert_options=convert
        )
        first = True
        for batch in reader:
            table = pa.Table.from_batches([batch])
            _check_csv(table, csv, name, first=first)
            first = False
            yield from _clean_strings(table, csv).to_batches()
    except StopIteration:
        return
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise _arrow_error(name, error) from error


def require_columns(found: Sequence[str], needed: Sequence[str], *, source: str) -> None:
    """Raises `DataError` listing the needed columns a table lacks (sorted, with hints)."""
    present = set(found)
    missing = sorted({c for c in needed if c not in present})
    if not missing:
        return
    hints = []
    for column in missing[:5]:
        close = did_you_mean(column, found)
        hints.append(f"{column!r}" + (f" (did you mean {close!r}?)" if close else ""))
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    shown = ", ".join(repr(c) for c in list(found)[:20])
    raise DataError(
        f"{source}: missing column{'s' if len(missing) > 1 else ''} {', '.join(hints)}{more}; "
        f"the table has {shown}{' ...' if len(found) > 20 else ''}"
    )


def fingerprint(path: Path) -> dict[str, Any]:
    """Size and SHA-256 of a file, for the run manifest."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def read_sample(source: TableSource, rows: int) -> pa.Table:
    """The first rows of a table (one block of the first file), read without loading the rest."""
    batches = []
    count = 0
    for batch in iter_batches(source, batch_rows=rows):
        batches.append(batch)
        count += batch.num_rows
        if count >= rows:
            break
    if not batches:
        raise DataError(f"{source.describe()}: the table has no rows")
    return pa.Table.from_batches(batches).slice(0, rows)
