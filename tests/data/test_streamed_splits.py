"""Streamed tables: statistics merged over record batches, the hash split, the shuffle pool,
and a streamed training run whose saved model takes raw values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from conftest import make_table
from typer.testing import CliRunner

from mlcli.config.schema import Config, parse_config
from mlcli.data.splits import labelled_rows
from mlcli.data.streamed_splits import (
    split_parts,
    streaming_enabled,
    unit_hash,
)
from mlcli.data.tables import read_table
from mlcli.features.build import build_schema, build_target
from mlcli.features.types import resolve_feature_specs
from mlcli.training.data import load_streamed_splits

ROWS = 500


def _write_parts(table: pa.Table, folder: Path, fmt: str, files: int = 3) -> str:
    folder.mkdir()
    size = -(-table.num_rows // files)
    for index in range(files):
        part = table.slice(index * size, size)
        if fmt == "parquet":
            pq.write_table(part, folder / f"part-{index}.parquet")
        else:
            pa_csv.write_csv(part, folder / f"part-{index}.csv")
    return str(folder / f"*.{fmt}")


def _config(train: str, **data: object) -> Config:
    return parse_config(
        {
            "name": "streamed",
            "seed": 5,
            "data": {"train": train, "validation": 0.2, "test": 0.1, "streaming": True, **data},
            "target": {"column": "label", "task": "binary"},
            "features": {
                "review": "text",
                "grade": "categorical",
                "income": {"type": "numeric", "transform": "quantile"},
                "age": {"type": "numeric", "transform": "log"},
                "exclude": ["id"],
            },
        }
    )


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_streamed_statistics_equal_the_in_memory_ones(tmp_path, fmt):
    table = make_table(ROWS, seed=3)
    config = _config(_write_parts(table, tmp_path / "parts", fmt))
    splits, streamed = load_streamed_splits(config)

    # the same training rows, read whole: the hash split applied to the row numbers
    table = read_table(splits.sources["train"])
    parts = split_parts(np.arange(ROWS), config)
    train = labelled_rows(table.filter(pa.array(parts == 0)), config)[0]
    specs, excluded = resolve_feature_specs(train, config)
    whole = build_schema(
        train, specs=specs, target=build_target(train.column("label"), config), excluded=excluded
    )

    assert splits.train.num_rows == train.num_rows
    assert splits.validation.num_rows == int(np.sum(parts == 1))
    assert splits.test is not None and splits.test.num_rows == int(np.sum(parts == 2))
    assert streamed.target == whole.target
    assert [c.name for c in streamed.columns] == [c.name for c in whole.columns]
    for got, expected in zip(streamed.columns, whole.columns, strict=True):
        assert got.vocabulary == expected.vocabulary, got.name
        assert (got.type, got.dtype, got.encoding, got.has_missing) == (
            expected.type,
            expected.dtype,
            expected.encoding,
            expected.has_missing,
        )
        assert got.mean == pytest.approx(expected.mean, rel=1e-9, abs=1e-12)
        assert got.variance == pytest.approx(expected.variance, rel=1e-9)
        assert got.quantiles == pytest.approx(expected.quantiles, rel=1e-12)
    labels = train.column("label").to_pylist()
    assert splits.class_counts == [labels.count(c) for c in whole.target.classes]


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


def test_shuffle_pool_keeps_every_row_once_and_mixes_across_batches():
    from mlcli.training.streaming import shuffled

    batches = [pa.table({"n": np.arange(start, start + 100)}) for start in range(0, 1000, 100)]

    def run(seed: int) -> list[int]:
        chunks = shuffled(iter(batches), buffer=300, rng=np.random.default_rng(seed))
        return [v for chunk in chunks for v in chunk.column("n").to_pylist()]

    order = run(1)
    assert sorted(order) == list(range(1000))
    assert order == run(1) and order != run(2)
    assert any(abs(position - value) > 100 for position, value in enumerate(order[:300]))


def test_auto_streams_only_large_training_files(tmp_path):
    path = tmp_path / "small.parquet"
    pq.write_table(make_table(50), path)
    assert not streaming_enabled(_config(str(path), streaming="auto"))
    assert streaming_enabled(_config(str(path)))


def test_a_streamed_run_trains_and_its_model_takes_raw_values(tmp_path):
    from mlcli.cli.app import app

    table = make_table(400, seed=1)
    train = _write_parts(table, tmp_path / "parts", "parquet")
    config = tmp_path / "config.yaml"
    config.write_text(
        json.dumps(
            {
                "name": "streamed",
                "seed": 3,
                "data": {
                    "train": train,
                    "validation": 0.25,
                    "streaming": True,
                    "shuffle_buffer": 64,
                },
                "target": {"column": "label", "task": "binary"},
                "features": {
                    "review": "text",
                    "grade": "categorical",
                    "exclude": ["id", "tier", "value"],
                },
                "training": {"epochs": 2, "batch_size": 32, "steps_per_execution": 2},
                "output": {"dir": str(tmp_path / "runs")},
            }
        )
    )
    result = CliRunner().invoke(app, ["train", str(config), "--quiet"])
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip().splitlines()[-1])
    manifest = json.loads((run / "manifest.json").read_text())
    parts = split_parts(np.arange(400), parse_config(json.loads(config.read_text())))
    assert manifest["rows"]["validation"] == int(np.sum(parts == 1))
    assert manifest["epochs_run"] == 2
    assert manifest["composition_max_abs_difference"] <= 1e-5
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train"]["rows"] == int(np.sum(parts == 0))

    from mlcli.inference.predict import predict

    raw = tmp_path / "raw.csv"
    pa_csv.write_csv(table.drop_columns(["label"]), raw)
    predict(run, data=raw, output=tmp_path / "out.csv")
    written = pa_csv.read_csv(tmp_path / "out.csv")
    assert written.num_rows == table.num_rows
    predicted = written.column(0).to_pylist()
    assert set(predicted) <= {"high", "low"}
    agreement = np.mean(np.array(predicted) == np.array(table.column("label").to_pylist()))
    assert agreement > 0.6  # it learnt from the streamed batches
