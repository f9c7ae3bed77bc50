"""Reading new data for a trained run: the run's own CSV settings, or a header that names columns.

`evaluate` and `predict` read tables that were not part of training. A CSV is read with the
run's `data.csv` options (and a training table's per-file overrides when it is that same file,
such as adult.test's banner line), with command-line overrides laid on top. Whatever the run
was trained on, a Parquet file or a CSV whose first row names the model's columns is read by
those names: the header is detected (`mlcli.data.dialect.detect_header`), so one exported table
works for every run.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from mlcli.config.schema import Config, CsvOptions, Source, SourceSpec
from mlcli.data.dialect import HEAD_BYTES, detect_header, read_head_bytes
from mlcli.data.tables import TableSource, expand_paths, resolve_source
from mlcli.errors import ConfigError, DataError

STDIN = "-"


class _Prefixed(io.RawIOBase):
    """A binary stream that replays bytes already read from it (stdin cannot seek)."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        super().__init__()
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            count = min(len(view), len(self._head))
            view[:count] = self._head[:count]
            self._head = self._head[count:]
            return count
        data = self._rest.read(len(view))
        view[: len(data)] = data
        return len(data)


def _training_source(config: Config, path: Path) -> Source | None:
    """The config's table entry (train, validation or test) that reads this very file."""
    data = config.data
    target = path.resolve()
    for spec in (data.test, data.validation, data.train):
        if spec is None or isinstance(spec, float):
            continue
        patterns = spec.path if isinstance(spec, SourceSpec) else spec
        try:
            paths = expand_paths(patterns)
        except DataError:
            continue  # the training files moved: the run's defaults still apply
        if target in {p.resolve() for p in paths}:
            return spec
    return None


def source_for_run(
    config: Config,
    data: str | Path,
    *,
    names: Sequence[str],
    csv_overrides: Mapping[str, Any] | None = None,
    stdin: BinaryIO | None = None,
) -> TableSource:
    """The table at `data` (a path, or `-` for CSV on stdin) as the run would read it.

    Args:
        config: the run's resolved config.
        data: the file, glob or folder to read; `-` reads CSV from `stdin`.
        names: the columns the model needs, for detecting a header row.
        csv_overrides: CSV options from the command line (`delimiter`, `skip_rows`, `header`).
        stdin: the stream that `-` reads.
    """
    overrides = {k: v for k, v in (csv_overrides or {}).items() if v is not None}
    if overrides.get("header") is True:
        overrides.setdefault("columns", None)
    if str(data) == STDIN:
        if stdin is None:
            raise DataError("--data -: no standard input to read")
        csv = with_overrides(config.data.csv, overrides)
        head = b""
        while b"\n" not in head and len(head) < HEAD_BYTES:
            chunk = stdin.read(65536)
            if not chunk:
                break
            head += chunk
        if head.startswith((b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"BZh")):
            raise DataError(
                "--data -: standard input holds compressed bytes (gzip, zstd or bz2); "
                "expected CSV text: decompress it first (zcat FILE | mlcli ...) or pass the file"
            )
        if "header" not in overrides:
            csv = detect_header(csv, head, names)
        stream = io.BufferedReader(_Prefixed(head, stdin), buffer_size=1 << 20)
        return TableSource(paths=(), format="csv", csv=csv, stdin=stream)
    path = Path(data).expanduser()
    spec = _training_source(config, path) if path.is_file() else None
    if isinstance(spec, SourceSpec):  # that file alone, with its per-file CSV settings
        spec = SourceSpec(path=str(path), csv=spec.csv)
    source = resolve_source(spec or str(path), data=config.data)
    if source.format == "parquet":
        return source
    csv = with_overrides(source.csv, overrides)
    if "header" not in overrides:
        csv = detect_header(csv, read_head_bytes(source.paths[0]), names)
    return TableSource(paths=source.paths, format=source.format, csv=csv)


def with_overrides(csv: CsvOptions, overrides: Mapping[str, Any]) -> CsvOptions:
    """`csv` with command-line CSV options laid over (`ConfigError` when they do not fit)."""
    if not overrides:
        return csv
    options = {**csv.model_dump(exclude_unset=True), **overrides}
    if options.get("columns") is None:
        options.pop("columns", None)
    try:
        return CsvOptions.model_validate(options)
    except ValueError as error:
        raise ConfigError(f"CSV options from the command line do not fit: {error}") from error
