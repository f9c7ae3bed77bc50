"""The splits as the core network sees them: in memory (`EncodedSplit`) and streamed
(`StreamedSplit`) give the same encoded rows; epochs are shuffled by (seed, epoch) alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from conftest import make_table

from mlcli.config.loading import parse_config
from mlcli.data.splits import Splits
from mlcli.data.streamed_splits import StreamedTable
from mlcli.data.tables import resolve_source
from mlcli.features.build import encode_labels
from mlcli.preprocessing.layers import build_preprocessor
from mlcli.training.data import prepare_schema
from mlcli.training.datasets import EncodedSplit, StreamedSplit, encode_split, shuffled

ROWS = 300


def _setting(folder: Path):
    """A table in two Parquet files, its schema, preprocessor, and the split both ways."""
    table = make_table(ROWS, seed=8)
    folder.mkdir()
    pq.write_table(table.slice(0, 120), folder / "part-0.parquet")
    pq.write_table(table.slice(120), folder / "part-1.parquet")
    config = parse_config(
        {
            "name": "datasets",
            "data": {"train": str(folder / "*.parquet"), "shuffle_buffer": 50},
            "target": {"column": "label", "task": "binary"},
            "features": {
                "review": "text",
                "grade": "categorical",
                "exclude": ["id", "tier", "value"],
            },
        }
    )
    schema = prepare_schema(config, Splits(table, table, None))
    preprocessor = build_preprocessor(schema)
    labels = encode_labels(table.column("label"), schema.target, source="test")
    in_memory = encode_split(preprocessor, table, schema, labels=labels, source="test")
    source = resolve_source(config.data.train, data=config.data)
    streamed_table = StreamedTable(source, config, "all", file_rows=[120, 180], num_rows=ROWS)
    return table, in_memory, StreamedSplit(streamed_table, preprocessor, schema)


def _rows(dataset) -> tuple[dict[str, np.ndarray], np.ndarray]:
    batches = list(dataset.as_numpy_iterator())
    features = {name: np.concatenate([b[0][name] for b in batches]) for name in batches[0][0]}
    return features, np.concatenate([b[1] for b in batches])


def test_in_memory_and_streamed_splits_encode_the_same_rows(tmp_path):
    table, in_memory, streamed = _setting(tmp_path / "parts")
    assert in_memory.rows == streamed.rows == ROWS
    assert in_memory.shapes == streamed.shapes
    features, labels = _rows(in_memory.dataset(batch_size=64))
    streamed_features, streamed_labels = _rows(streamed.dataset(batch_size=64))
    assert np.array_equal(labels, streamed_labels)
    assert len(labels) == ROWS
    for name, values in features.items():
        np.testing.assert_allclose(streamed_features[name], values, atol=1e-6, err_msg=name)
    head = table.slice(0, 40)
    for split in (in_memory, streamed):
        encoded = split.encoded_head(head)
        for name, values in features.items():
            np.testing.assert_allclose(encoded[name], values[:40], atol=1e-6, err_msg=name)


@pytest.mark.parametrize("kind", ["in_memory", "streamed"])
def test_an_epoch_is_every_row_once_in_an_order_fixed_by_seed_and_epoch(tmp_path, kind):
    _, in_memory, streamed = _setting(tmp_path / "parts")
    split = in_memory if kind == "in_memory" else streamed

    def order(seed: int, epoch: int) -> list[float]:
        batches = split.epoch_batches(batch_size=32, seed=seed)(tf.constant(epoch, tf.int64))
        features, _ = _rows(batches)
        return features["numeric"][:, 0].tolist()  # the standardised age: a row's identity

    first = order(1, 0)
    assert len(first) == ROWS
    assert sorted(first) == sorted(order(1, 1))
    assert first == order(1, 0)
    assert first != order(1, 1) and first != order(2, 0)


def test_encoded_split_batches_in_order_for_evaluation():
    split = EncodedSplit({"numeric": np.arange(10, dtype=np.float32).reshape(-1, 1)}, np.arange(10))
    batches = list(split.dataset(batch_size=4).as_numpy_iterator())
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    assert np.concatenate([b[1] for b in batches]).tolist() == list(range(10))


def test_shuffle_pool_keeps_every_row_once_and_mixes_across_batches():
    batches = [pa.table({"n": np.arange(start, start + 100)}) for start in range(0, 1000, 100)]

    def run(seed: int) -> list[int]:
        chunks = shuffled(iter(batches), buffer=300, rng=np.random.default_rng(seed))
        return [v for chunk in chunks for v in chunk.column("n").to_pylist()]

    order = run(1)
    assert sorted(order) == list(range(1000))
    assert order == run(1) and order != run(2)
    assert any(abs(position - value) > 100 for position, value in enumerate(order[:300]))
