"""Reading new data for a trained run: the run's CSV options, or a header detected in the file."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import make_table

from mlcli.config.schema import Config
from mlcli.data.sources import source_for_run
from mlcli.data.tables import read_table
from mlcli.errors import ConfigError, DataError


def _headerless(tmp_path: Path) -> Config:
    return Config.model_validate(  # the paths are absolute already
        {
            "name": "headerless",
            "data": {
                "train": str(tmp_path / "train.csv"),
                "csv": {"header": False, "columns": ["a", "b", "y"]},
            },
            "target": {"column": "y"},
        }
    )


def test_standard_input_is_read_whole_after_its_header_is_detected(tmp_path):
    stdin = io.BytesIO(b"y\tb\ta\n" + b"".join(b"no\tx\t%d\n" % i for i in range(5000)))
    source = source_for_run(_headerless(tmp_path), "-", names=["a", "b"], stdin=stdin)
    assert (source.csv.header, source.csv.delimiter, source.csv.columns) == (True, "\t", None)
    table = read_table(source)
    assert table.column_names == ["y", "b", "a"]
    assert table.column("a").to_pylist() == list(range(5000)), "the head read must be replayed"


def test_standard_input_without_a_header_takes_the_run_columns(tmp_path):
    stdin = io.BytesIO(b"1,x,yes\n2,z,no\n")
    source = source_for_run(_headerless(tmp_path), "-", names=["a", "b"], stdin=stdin)
    assert source.csv.columns == ["a", "b", "y"] and not source.csv.header
    assert read_table(source).column("a").to_pylist() == [1, 2]
    with pytest.raises(DataError, match="no standard input"):
        source_for_run(_headerless(tmp_path), "-", names=["a"])


def test_a_header_override_is_taken_as_given(tmp_path):
    path = tmp_path / "new.csv"
    path.write_text("a,b,y\n1,x,yes\n")
    config = _headerless(tmp_path)
    detected = source_for_run(config, path, names=["a", "b"])
    assert detected.csv.header and detected.csv.columns is None
    told = source_for_run(config, path, names=["a", "b"], csv_overrides={"header": False})
    assert told.csv.columns == ["a", "b", "y"] and not told.csv.header
    with pytest.raises(ConfigError, match="command line"):
        source_for_run(config, path, names=["a"], csv_overrides={"skip_rows": -1})


def test_parquet_is_read_by_its_own_names(tmp_path):
    pq.write_table(make_table(10), tmp_path / "new.parquet")
    source = source_for_run(_headerless(tmp_path), tmp_path / "new.parquet", names=["age"])
    assert source.format == "parquet"
    assert read_table(source).num_rows == 10


@pytest.mark.parametrize("kind", ["gzip", "zstd", "bz2"])
def test_compressed_bytes_on_standard_input_are_a_data_error(tmp_path, kind):
    import bz2
    import gzip

    import pyarrow as pa

    data = b"a,b\n" + b"".join(b"%d,x\n" % i for i in range(100))
    if kind == "gzip":
        packed = gzip.compress(data)
    elif kind == "bz2":
        packed = bz2.compress(data)
    else:
        packed = pa.Codec("zstd").compress(data, asbytes=True)
    with pytest.raises(DataError, match=r"^--data -: standard input holds compressed bytes"):
        source_for_run(_headerless(tmp_path), "-", names=["a", "b"], stdin=io.BytesIO(packed))
