"""CSV reading's own checks: text that is not UTF-8 named by column and data row (in any block,
read whole or streamed, from a file or stdin) and compressed files cut short."""

from __future__ import annotations

import bz2
import gzip
import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlcli.config.schema import CsvOptions
from mlcli.data import csv_files
from mlcli.data.tables import TableSource, iter_batches, read_table
from mlcli.errors import DataError

ROWS = 400


def _csv_bytes(rows: int = ROWS, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    lines = [b"x,colour,note,y"]
    for i in range(rows):
        colour = rng.choice(["red", "gr\u00fcn", "\u9752", "\U0001f535"])
        lines.append(f"{rng.normal():.4f},{colour},n{i} caf\u00e9,{i % 2}".encode())
    return lines


def _read(mode: str, data: bytes, tmp_path: Path) -> None:
    if mode.startswith("stdin"):
        source = TableSource(paths=(), format="csv", csv=CsvOptions(), stdin=io.BytesIO(data))
    else:
        path = tmp_path / "t.csv"
        path.write_bytes(data)
        source = TableSource(paths=(path,), format="csv")
    if mode.endswith("whole"):
        read_table(source)
    else:
        for _ in iter_batches(source):
            pass


@pytest.mark.parametrize("mode", ["file-whole", "file-streamed", "stdin-whole", "stdin-streamed"])
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    row=st.integers(1, ROWS),
    column=st.sampled_from([1, 2]),
    bad=st.sampled_from([b"\x80", b"\xc3", b"\xe9t\xe9", b"\xff", b"\xfe\xfe", b"\xed\xa0\x80"]),
)
def test_text_that_is_not_utf8_names_its_column_and_data_row(
    tmp_path, monkeypatch, mode, row, column, bad
):
    monkeypatch.setattr(csv_files, "BLOCK_BYTES", 2048)  # many blocks: rows counted across them
    monkeypatch.setattr(csv_files, "STREAM_BLOCK_BYTES", 2048)
    lines = _csv_bytes()
    fields = lines[row].split(b",")
    fields[column] = fields[column][:2] + bad + fields[column][2:]
    lines[row] = b",".join(fields)
    name = ["x", "colour", "note", "y"][column]
    with pytest.raises(DataError) as raised:
        _read(mode, b"\n".join(lines) + b"\n", tmp_path)
    message = str(raised.value)
    assert f"column {name!r} holds bytes that are not UTF-8 text at data row {row} (" in message
    assert message.startswith("<stdin>: " if mode.startswith("stdin") else f"{tmp_path}")


@pytest.mark.parametrize("mode", ["file-whole", "file-streamed", "stdin-whole", "stdin-streamed"])
def test_utf8_text_of_every_script_reads(tmp_path, mode):
    _read(mode, b"\n".join(_csv_bytes()) + b"\n", tmp_path)


def _compress(kind: str, data: bytes, path: Path) -> None:
    if kind == "gzip":
        path.write_bytes(gzip.compress(data))
    elif kind == "bz2":
        path.write_bytes(bz2.compress(data))
    else:
        with pa.CompressedOutputStream(str(path), kind) as stream:
            stream.write(data)


@pytest.mark.parametrize(("kind", "suffix"), [("gzip", ".gz"), ("zstd", ".zst"), ("bz2", ".bz2")])
@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9, 0.99])
@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
def test_a_compressed_file_cut_short_is_a_data_error_naming_it(
    tmp_path, monkeypatch, kind, suffix, cut, streamed
):
    monkeypatch.setattr(csv_files, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(csv_files, "STREAM_BLOCK_BYTES", 4096)
    whole = tmp_path / f"whole.csv{suffix}"
    _compress(kind, b"\n".join(_csv_bytes(3000)) + b"\n", whole)
    data = whole.read_bytes()
    path = tmp_path / f"cut.csv{suffix}"
    path.write_bytes(data[: int(len(data) * cut)])
    source = TableSource(paths=(path,), format="csv")
    with pytest.raises(DataError, match=rf"^{path}: truncated or corrupt {kind} file \("):
        if streamed:
            list(iter_batches(source))
        else:
            read_table(source)
    assert read_table(TableSource(paths=(whole,), format="csv")).num_rows == 3000


@pytest.mark.parametrize("megabytes", [1, 3])
def test_a_streamed_csv_comes_in_blocks_of_at_most_a_mebibyte(tmp_path, megabytes):
    """pyarrow reads up to 32 blocks ahead: the block bounds what the read-ahead holds."""
    row = b"12345.5,some text here,7\n"
    path = tmp_path / "big.csv"
    path.write_bytes(b"x,note,y\n" + row * ((megabytes << 20) // len(row)))
    assert csv_files.STREAM_BLOCK_BYTES <= 1 << 20
    batches = list(iter_batches(TableSource(paths=(path,), format="csv")))
    assert max(batch.num_rows for batch in batches) * len(row) <= csv_files.STREAM_BLOCK_BYTES
    assert sum(batch.num_rows for batch in batches) == (megabytes << 20) // len(row)
