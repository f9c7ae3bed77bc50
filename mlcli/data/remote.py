"""A table behind a URI (`s3://bucket/new/`, `gs://...`, `file:///data/new.csv`): its files, as
pyarrow's filesystems list them, and the CSV settings a run reads them with.

`mlcli predict --ray` reads such a table on every node of a cluster (Ray Data reads through
the same pyarrow filesystem). A folder's files are those a local folder would give (table
suffixes, not hidden, sorted by name); a CSV's header is detected from the first file's first
bytes, as `mlcli.data.sources.source_for_run` does for local files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from mlcli.config.schema import Config, CsvOptions
from mlcli.data.dialect import HEAD_BYTES, detect_header
from mlcli.data.sources import with_overrides
from mlcli.data.tables import TABLE_SUFFIXES, Format, format_of
from mlcli.errors import DataError


def is_uri(data: str) -> bool:
    """Whether `data` names a table through a filesystem URI (`scheme://...`)."""
    scheme, separator, _ = data.partition("://")
    return bool(separator) and scheme.isidentifier()


@dataclass(frozen=True)
class RemoteTable:
    """The files of a table behind a URI, in `filesystem`, with their format and CSV options."""

    uri: str
    paths: tuple[str, ...]
    filesystem: Any = field(compare=False)  # pyarrow.fs.FileSystem
    format: Format
    csv: CsvOptions

    def describe(self) -> str:
        """The table, for messages."""
        more = f" ({len(self.paths)} files)" if len(self.paths) > 1 else ""
        return self.uri + more


def remote_table(
    config: Config,
    uri: str,
    *,
    names: Sequence[str],
    csv_overrides: Mapping[str, Any] | None = None,
) -> RemoteTable:
    """The table at `uri` as the run would read it (raises `DataError` when it has no file)."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    try:
        filesystem, path = pafs.FileSystem.from_uri(uri)
        info = filesystem.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            found = filesystem.get_file_info(pafs.FileSelector(path))
            paths = sorted(
                item.path
                for item in found
                if item.type == pafs.FileType.File
                and not item.base_name.startswith((".", "_"))
                and any(s.lower() in TABLE_SUFFIXES for s in PurePosixPath(item.path).suffixes)
            )
        elif info.type == pafs.FileType.File:
            paths = [path]
        else:
            raise DataError(f"{uri}: data file not found")
        if not paths:
            raise DataError(f"{uri}: holds no .csv, .tsv or .parquet file")
        formats = {format_of(PurePosixPath(p)) for p in paths}
        if config.data.format in ("csv", "parquet"):
            formats = {"parquet" if config.data.format == "parquet" else "csv"}
        if len(formats) > 1:
            raise DataError(f"{uri}: a table mixes CSV and Parquet files; use one format")
        fmt = formats.pop()
        overrides = {k: v for k, v in (csv_overrides or {}).items() if v is not None}
        if overrides.get("header") is True:
            overrides.setdefault("columns", None)
        csv = with_overrides(config.data.csv, overrides)
        if fmt == "csv" and "header" not in overrides:
            with filesystem.open_input_stream(paths[0], compression="detect") as stream:
                csv = detect_header(csv, stream.read(HEAD_BYTES), names)
    except (pa.ArrowException, OSError) as error:  # an unknown scheme, no credentials
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise DataError(f"{uri}: cannot list or read it: {first}") from error
    return RemoteTable(uri=uri, paths=tuple(paths), filesystem=filesystem, format=fmt, csv=csv)
