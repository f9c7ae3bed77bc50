"""Streamed tables: the hash split, each part's rows read back in record batches, and when a
table is streamed. (The streamed schema pass is tested in tests/training/test_data.py, the
shuffle pool in tests/training/test_datasets.py.)"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import make_table
from conftest import streamed_config as _config
from conftest import write_parts as _write_parts

from mlcli.data.streamed_splits import (
    StreamedTable,
    split_parts,
    streaming_enabled,
    unified_column_types,
    unit_hash,
)
from mlcli.data.tables import resolve_source

ROWS = 500


def test_hash_split_is_deterministic_and_independent_of_batching():
    config = _config("unused.parquet")
    rows = np.arange(100_000)
    whole = split_parts(rows, config)
    in_pieces = np.concatenate(
        [split_parts(rows[i : i + 777], config) for i in range(0, 100_000, 777)]
    )
    assert np.array_equal(whole, in_pieces)
    assert np.array_equal(whole, split_parts(rows, config))
    shares = np.bincount(whole, minlength=3) / len(rows)
    assert shares[2] == pytest.approx(0.1, abs=0.01)  # test: 10% of all rows
    assert shares[1] == pytest.approx(0.9 * 0.2, abs=0.01)  # validation: 20% of the rest
    reseeded = split_parts(rows, config.model_copy(update={"seed": 6}))
    assert np.array_equal(reseeded == 2, whole == 2)  # the test rows never depend on the seed
    assert not np.array_equal(reseeded == 1, whole == 1)
    values = unit_hash(rows, 0)
    assert values.min() >= 0.0 and values.max() < 1.0


def test_auto_streams_only_large_training_files(tmp_path):
    path = tmp_path / "small.parquet"
    pq.write_table(make_table(50), path)
    assert not streaming_enabled(_config(str(path), streaming="auto"))
    assert streaming_enabled(_config(str(path)))


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_part_reads_back_its_own_rows_in_file_order(tmp_path, fmt):
    table = make_table(ROWS, seed=4)
    config = _config(_write_parts(table, tmp_path / "parts", fmt, files=4))
    source = resolve_source(config.data.train, data=config.data)
    parts = split_parts(np.arange(ROWS), config)
    for part, code in (("train", 0), ("validation", 1), ("test", 2)):
        streamed = StreamedTable(source, config, part, unified_column_types(source))
        streamed.file_rows = [125, 125, 125, 125]
        ids = [i for batch in streamed.batches() for i in batch.column("id").to_pylist()]
        assert ids == np.flatnonzero(parts == code).tolist(), part
