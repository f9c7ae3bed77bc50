"""Reading tables with pyarrow: CSV/TSV (every quirk through the config) and Parquet.

A `TableSource` is one logical table: files from a path, a glob, a directory or a list, all of
one format and read with one set of CSV options. `read_table` loads it whole (fine for the
tables that fit in memory); `iter_batches` streams it in record batches with fixed column types.
Each format's own reading and checks are in `mlcli.data.csv_files` and `mlcli.data.parquet_files`.
"""

from __future__ import annotations

import glob
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from mlcli.config.messages import did_you_mean
from mlcli.config.schema import CsvOptions, DataConfig, Source, SourceSpec
from mlcli.data.dialect import header_names
from mlcli.errors import DataError

if TYPE_CHECKING:  # pyarrow (and numpy) load when a table is read, not to check its header
    import pyarrow as pa

_COMPRESSION_SUFFIXES = {".gz", ".zst", ".zstd", ".bz2", ".lz4"}
_PARQUET_SUFFIXES = {".parquet", ".pq"}
TABLE_SUFFIXES = {".csv", ".tsv", ".txt", ".data", ".test", ".parquet", ".pq"}

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
        for suffix in (*_COMPRESSION_SUFFIXES, *TABLE_SUFFIXES):
            first = first.removesuffix(suffix)
        return first or "data"

    def describe(self) -> str:
        """The files, for messages."""
        if self.stdin is not None:
            return "<stdin>"
        if len(self.paths) == 1:
            return str(self.paths[0])
        return f"{self.paths[0]} (+{len(self.paths) - 1} more files)"


def format_of(path: PurePath) -> Format:
    """parquet for .parquet/.pq (compressed or not), else csv."""
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
                and any(s.lower() in TABLE_SUFFIXES for s in p.suffixes)
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
    formats: set[Format] = {format_of(p) for p in paths}
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


def read_table(
    source: TableSource,
    *,
    columns: Sequence[str] | None = None,
    column_types: Mapping[str, pa.DataType] | None = None,
) -> pa.Table:
    """Reads a whole table into memory (multithreaded parsing), columns cast to one schema."""
    import pyarrow as pa

    from mlcli.data.csv_files import open_file, read_csv, unreadable
    from mlcli.data.parquet_files import read_parquet

    tables: list[pa.Table] = []
    if source.stdin is not None:
        tables.append(
            read_csv(source.stdin, source.csv, source="<stdin>", column_types=column_types)
        )
    for path in source.paths:
        if source.format == "parquet":
            tables.append(read_parquet(path, columns))
            continue
        try:
            with open_file(path) as stream:
                tables.append(
                    read_csv(
                        stream, source.csv, source=str(path), path=path, column_types=column_types
                    )
                )
        except OSError as error:  # opening it, or a compressed stream cut short
            raise unreadable(str(path), error, path=path) from error
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
    from mlcli.data.csv_files import iter_csv, open_file, unreadable
    from mlcli.data.parquet_files import iter_parquet, parquet_names

    if source.stdin is not None:
        yield from iter_csv(source.stdin, source.csv, source="<stdin>", column_types=column_types)
        return
    for path in source.paths:
        if source.format == "parquet":
            if columns is not None:
                require_columns(parquet_names(path), columns, source=str(path))
            yield from iter_parquet(path, columns=columns, batch_rows=batch_rows)
            continue
        try:
            with open_file(path) as stream:
                yield from iter_csv(
                    stream, source.csv, source=str(path), path=path, column_types=column_types
                )
        except OSError as error:
            raise unreadable(str(path), error, path=path) from error


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


def check_header(source: TableSource, needed: Sequence[str]) -> None:
    """Raises `DataError` (as `require_columns`) when the table's header lacks a needed column.

    Cheap, so that a command checks it before loading a model: a Parquet file's footer, a CSV's
    first line (the first file of several; the rest are checked as they are read). Standard
    input cannot be read twice: its first batch is checked when it is read.
    """
    if source.stdin is not None:
        return
    if source.format == "parquet":
        from mlcli.data.parquet_files import parquet_names  # pyarrow.parquet only for Parquet

        for path in source.paths:
            require_columns(parquet_names(path), needed, source=str(path))
        return
    path = source.paths[0]
    names = header_names(path, source.csv)  # the standard library: no numpy, no pyarrow
    if names is None:  # compressed, not UTF-8, a name repeated: pyarrow reads it, or says why
        from mlcli.data.csv_files import csv_names

        names = csv_names(path, source.csv)
    require_columns(names, needed, source=str(path))


def fingerprint(path: Path) -> dict[str, Any]:
    """Size and SHA-256 of a file, for the run manifest."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def read_sample(source: TableSource, rows: int) -> pa.Table:
    """The first rows of a table (one block of the first file), read without loading the rest."""
    import pyarrow as pa

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
