"""Writers that append prediction batches to CSV, Parquet or JSON lines as they come.

Each writer opens its sink on the first batch (whose schema every later batch is cast to), and
`close` finishes the file (a Parquet footer, a compressed stream's trailer). `abort` releases
whatever is open after an error; the caller removes the partial file.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from mlcli.errors import DataError

if TYPE_CHECKING:  # pyarrow loads with the first batch: `predict` checks its arguments first
    import pyarrow as pa

FORMATS = ("csv", "parquet", "jsonl")


class BatchWriter:
    """Base writer: opens `sink` (a path, or a stream it does not own) on the first batch."""

    def __init__(self, sink: Path | BinaryIO, *, compression: str | None = None) -> None:
        self.sink = sink
        self.compression = compression
        self.schema: pa.Schema | None = None
        self._stream: Any = None
        self._writer: Any = None
        self._target: Any = None
        self._buffered: io.BufferedWriter | None = None

    def _open_stream(self) -> Any:
        import pyarrow as pa

        if isinstance(self.sink, Path):
            self._stream = pa.output_stream(str(self.sink), compression=self.compression)
            return self._stream
        if isinstance(self.sink, io.RawIOBase):
            # stdout under PYTHONUNBUFFERED: a raw write may take part of the bytes, and neither
            # pyarrow nor a single write() retries; a buffered writer writes all or raises
            self._buffered = io.BufferedWriter(self.sink)
            return self._buffered
        return self.sink

    def _conform(self, table: pa.Table) -> pa.Table:
        import pyarrow as pa

        if self.schema is None:
            self.schema = table.schema
            return table
        try:
            return table.cast(self.schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as error:
            raise DataError(
                f"a later batch's columns do not match the first one's ({error}); "
                "the input files must share one schema"
            ) from error

    def write(self, table: pa.Table) -> None:
        """Appends one batch of rows."""
        raise NotImplementedError

    def close(self) -> None:
        """Finishes the output; the file is complete afterwards."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        elif not isinstance(self.sink, Path):
            if self._buffered is not None:
                self._buffered.flush()
                self._buffered.detach()  # the sink (stdout) is not ours to close
                self._buffered = None
            self.sink.flush()

    def abort(self) -> None:
        """Releases what is still open, ignoring errors (the output is discarded)."""
        for handle in (self._writer, self._stream):
            if handle is not None:
                with contextlib.suppress(Exception):  # the partial output is removed next
                    handle.close()
        if self._buffered is not None:
            with contextlib.suppress(Exception):  # a closed pipe fails the final flush again
                self._buffered.detach()
        self._writer = self._stream = self._buffered = None


class CsvBatchWriter(BatchWriter):
    """CSV with a header row (pyarrow's CSV writer)."""

    def write(self, table: pa.Table) -> None:
        import pyarrow as pa
        import pyarrow.csv as pa_csv

        table = self._conform(table)
        if self._writer is None:
            for field in table.schema:
                if pa.types.is_nested(field.type):  # pyarrow's CSV writer has no cell for them
                    raise DataError(
                        f"column {field.name!r} has Arrow type {field.type}, which a CSV file "
                        "cannot hold; write .parquet or .jsonl, or leave it out of --keep"
                    )
            self._writer = pa_csv.CSVWriter(self._open_stream(), table.schema)
        self._writer.write_table(table)


class ParquetBatchWriter(BatchWriter):
    """Parquet, one row group per batch."""

    def write(self, table: pa.Table) -> None:
        import pyarrow.parquet as pq

        table = self._conform(table)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._open_stream(), table.schema)
        self._writer.write_table(table)


class JsonLinesBatchWriter(BatchWriter):
    """One JSON object per row (pandas' JSON writer; missing values are null)."""

    def write(self, table: pa.Table) -> None:
        table = self._conform(table)
        if self._target is None:
            self._target = self._open_stream()
        text = table.to_pandas().to_json(orient="records", lines=True, double_precision=15)
        if text and not text.endswith("\n"):
            text += "\n"
        _write_all(self._target, text.encode("utf-8"))


def _write_all(target: Any, data: bytes) -> None:
    """Writes every byte: a raw stream (stdout under PYTHONUNBUFFERED) may take only part.

    A reader that closed the pipe then raises `BrokenPipeError` on the next call instead of
    the rest being dropped silently.
    """
    view = memoryview(data)
    while view:
        written = target.write(view)
        if written is None:  # a non-blocking stream that took nothing: try again
            continue
        view = view[written:]


def open_writer(
    format: str, sink: Path | BinaryIO | None, *, compression: str | None = None
) -> BatchWriter:
    """The writer for `format` (csv, parquet, jsonl) into `sink`."""
    if sink is None:
        raise ValueError("open_writer needs a path or a stream")
    kinds: dict[str, type[BatchWriter]] = {
        "csv": CsvBatchWriter,
        "parquet": ParquetBatchWriter,
        "jsonl": JsonLinesBatchWriter,
    }
    return kinds[format](sink, compression=compression)
