"""The training data behind one interface (`TrainingData`): tables in memory encoded with
Arrow where the schema allows, streamed tables read once for their schema, the class counts,
the first validation rows and the sample written from them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from conftest import make_table
from conftest import streamed_config as _config
from conftest import write_parts as _write_parts
from typer.testing import CliRunner

from mlcli.config.loading import load_config, parse_config
from mlcli.data.splits import labelled_rows, load_splits
from mlcli.data.streamed_splits import split_parts
from mlcli.data.tables import read_table
from mlcli.errors import DataError
from mlcli.features.build import build_schema, build_target
from mlcli.features.schema import FeatureSchema
from mlcli.features.types import resolve_feature_specs
from mlcli.reporting import QuietReporter
from mlcli.runs.directory import SAMPLE
from mlcli.training.data import CHECK_ROWS, SAMPLE_ROWS, TrainingData, load_streamed_splits

ROWS = 500


class Events(QuietReporter):
    """Keeps the names of the events reported."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def event(self, name: str, message: str = "", **fields: object) -> None:
        self.names.append(name)


def _counts(labels: pa.ChunkedArray, classes: list) -> list[int]:
    values = labels.to_pylist()
    return [values.count(c) for c in classes]


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
        # the training distribution that drift compares with
        assert got.missing_rate == pytest.approx(expected.missing_rate), got.name
        assert got.bins == pytest.approx(expected.bins, rel=1e-12), got.name
        assert got.bin_fractions == pytest.approx(expected.bin_fractions), got.name
        assert got.frequencies == pytest.approx(expected.frequencies), got.name
    labels = train.column("label").to_pylist()
    assert splits.class_counts == [labels.count(c) for c in whole.target.classes]


def test_tables_in_memory_are_encoded_with_arrow_when_the_schema_allows(write_config):
    features = {"review": "categorical", "grade": "categorical", "exclude": ["id", "tier", "value"]}
    config = load_config(write_config(features=features))
    events = Events()
    data = TrainingData.load(config, events)
    assert events.names == ["data", "encoded"]  # encoded before fitting needs TensorFlow
    assert data.arrow_encoded
    splits = load_splits(config)
    assert data.rows == {"train": 300, "validation": 100, "test": 0}
    assert data.class_counts == _counts(splits.train.column("label"), data.schema.target.classes)
    assert sum(data.class_counts) == 300
    assert set(data.seconds) == {"read_and_check", "encode"}
    assert list(data.sources) == ["train"]


def test_text_features_leave_the_encoding_to_the_layers(write_config):
    config = load_config(write_config())  # review: text
    events = Events()
    data = TrainingData.load(config, events)
    assert events.names == ["data"]
    assert not data.arrow_encoded
    splits = load_splits(config)
    assert data.class_counts == _counts(splits.train.column("label"), data.schema.target.classes)


def test_a_validation_file_without_a_feature_fails_while_loading(write_config, tmp_path):
    pa_csv.write_csv(make_table(50).drop_columns(["color"]), tmp_path / "validation.csv")
    config = load_config(write_config(data={"train": "data.csv", "validation": "validation.csv"}))
    with pytest.raises(DataError, match="validation split: missing column 'color'"):
        TrainingData.load(config, QuietReporter())


def test_the_sample_is_the_first_validation_rows_as_read(write_config, tmp_path):
    config = load_config(write_config())
    data = TrainingData.load(config, QuietReporter())
    data.write_sample(tmp_path / SAMPLE)
    sample = pq.read_table(tmp_path / SAMPLE)
    expected = [*data.schema.input_names, "label"]
    assert sample.column_names == expected  # raw inputs and the target; `id` is excluded
    validation = load_splits(config).validation
    assert validation.num_rows == 100 < SAMPLE_ROWS
    assert sample.equals(validation.select(expected))
    assert data.validation_head().num_rows == 100


def test_streamed_data_counts_classes_and_reads_only_the_first_validation_batches(tmp_path):
    table = make_table(2000, seed=6)
    config = _config(_write_parts(table, tmp_path / "parts", "parquet", files=4))
    events = Events()
    data = TrainingData.load(config, events)
    assert events.names == ["data"]  # encoded while read, during fit
    assert not data.arrow_encoded
    parts = split_parts(np.arange(2000), config)
    train = table.filter(pa.array(parts == 0))
    assert data.rows == {
        "train": train.num_rows,
        "validation": int(np.sum(parts == 1)),
        "test": int(np.sum(parts == 2)),
    }
    assert data.class_counts == _counts(train.column("label"), data.schema.target.classes)
    head = data.validation_head()
    first = np.flatnonzero(parts == 1)[:CHECK_ROWS]
    assert head.column("id").to_pylist() == first.tolist()
    data.write_sample(tmp_path / SAMPLE)
    sample = pq.read_table(tmp_path / SAMPLE)
    columns = [*data.schema.input_names, "label"]
    assert sample.equals(table.take(pa.array(first[:SAMPLE_ROWS])).select(columns))


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
    sample = pq.read_table(run / SAMPLE)  # the first validation rows, read from the stream
    columns = [*FeatureSchema.load(run / "schema.json").input_names, "label"]
    first = np.flatnonzero(parts == 1)[:SAMPLE_ROWS]
    assert sample.equals(table.take(pa.array(first)).select(columns))


def _out_of_float32_config(train: str, *, where: str, streamed: bool):
    target = (
        {"column": "value", "task": "regression"}
        if where == "target"
        else {"column": "label", "task": "binary"}
    )
    exclude = ["id", "tier", "review", "label" if where == "target" else "value"]
    return parse_config(
        {
            "name": "range",
            "data": {"train": train, "validation": 0.2, "streaming": streamed},
            "target": target,
            "features": {"exclude": exclude},
        }
    )


@pytest.mark.parametrize("streamed", [False, True], ids=["in_memory", "streamed"])
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("where", ["feature", "target"])
@pytest.mark.parametrize("seed", [0, 1])
def test_a_number_beyond_float32_fails_loading_naming_file_column_and_row(
    tmp_path, streamed, fmt, where, seed
):
    rng = np.random.default_rng(seed)
    table = make_table(300, seed=seed)
    column = "age" if where == "feature" else "value"
    row = int(rng.integers(0, 300))
    values = table.column(column).to_pylist()
    values[row] = float(rng.choice([1e39, -3.5e38, 1.7e308]))
    table = table.set_column(table.column_names.index(column), column, pa.array(values))
    files = 3 if streamed else 1
    train = _write_parts(table, tmp_path / "parts", fmt, files=files)
    config = _out_of_float32_config(train, where=where, streamed=streamed)
    size = -(-300 // files)
    part, file_row = divmod(row, size)  # the file it is in, its data row there
    with pytest.raises(DataError) as raised:
        TrainingData.load(config, QuietReporter())
    assert str(raised.value).startswith(
        f"{tmp_path / 'parts' / f'part-{part}.{fmt}'}: column {column!r} holds {values[row]:.8g} "
        f"at row {file_row + 1}, beyond float32's range"
    )


@pytest.mark.parametrize("streamed", [False, True], ids=["in_memory", "streamed"])
def test_a_validation_file_beyond_float32_fails_loading(tmp_path, streamed):
    pa_csv.write_csv(make_table(), tmp_path / "train.csv")
    bad = make_table(50).to_pydict()
    bad["age"][9] = 2e39
    pa_csv.write_csv(pa.table(bad), tmp_path / "validation.csv")
    config = _out_of_float32_config(str(tmp_path / "train.csv"), where="feature", streamed=streamed)
    config.data.validation = str(tmp_path / "validation.csv")
    with pytest.raises(DataError, match=r"validation.csv: column 'age' holds 2e\+39 at row 10,"):
        TrainingData.load(config, QuietReporter())


def test_an_excluded_column_beyond_float32_or_infinite_does_not_stop_loading(tmp_path):
    table = make_table().to_pydict()
    table["value"][3], table["value"][4] = 1e39, float("inf")
    pa_csv.write_csv(pa.table(table), tmp_path / "train.csv")
    config = _out_of_float32_config(str(tmp_path / "train.csv"), where="feature", streamed=False)
    assert TrainingData.load(config, QuietReporter()).rows["train"] == 320


@pytest.mark.parametrize("streamed", [False, True], ids=["in_memory", "streamed"])
@pytest.mark.parametrize(
    ("column", "task"), [("value", "regression"), ("flag", "binary"), ("flag", None)]
)
@pytest.mark.parametrize("seed", [0, 1])
def test_nan_labels_in_parquet_are_dropped_and_counted(tmp_path, streamed, column, task, seed):
    rows = sorted({int(r) for r in np.random.default_rng(seed).integers(0, 300, 7)})
    table = make_table(300, seed=seed)
    table = table.append_column("flag", pa.array((table.column("value").to_numpy() > 0) * 1.0))
    values = table.column(column).to_pylist()
    for row in rows:
        values[row] = float("nan")
    table = table.set_column(table.column_names.index(column), column, pa.array(values))
    pq.write_table(table, tmp_path / "train.parquet")
    other = "flag" if column == "value" else "value"
    config = parse_config(
        {
            "name": "nan-labels",
            "data": {
                "train": str(tmp_path / "train.parquet"),
                "validation": 0.2,
                "streaming": streamed,
            },
            "target": {"column": column, **({"task": task} if task else {})},
            "features": {"exclude": ["id", "label", "tier", "review", other]},
        }
    )
    data = TrainingData.load(config, QuietReporter())
    assert data.dropped_unlabelled == {"train": len(rows)}
    assert sum(data.rows.values()) == 300 - len(rows)


@pytest.mark.parametrize("streamed", [False, True], ids=["in_memory", "streamed"])
@pytest.mark.parametrize("infinity", [float("inf"), float("-inf")])
def test_an_infinite_regression_target_names_column_and_row(tmp_path, streamed, infinity):
    table = make_table(300).to_pydict()
    table["value"][41] = infinity
    pq.write_table(pa.table(table), tmp_path / "train.parquet")
    config = _out_of_float32_config(
        str(tmp_path / "train.parquet"), where="target", streamed=streamed
    )
    with pytest.raises(
        DataError,
        match=r"train.parquet: column 'value' holds an infinite value "
        r"at row 42; expected finite numbers",
    ):
        TrainingData.load(config, QuietReporter())


@pytest.mark.parametrize("streamed", [False, True], ids=["in_memory", "streamed"])
def test_pandas_categories_load_and_an_excluded_list_column_does_not_stop_loading(
    tmp_path, streamed
):
    import pandas as pd

    frame = make_table(300, seed=2).to_pandas()
    frame["color"] = frame["color"].astype("category")
    frame["label"] = frame["label"].astype("category")
    frame["tags"] = [[i % 3] * (i % 4) for i in range(len(frame))]
    frame.to_parquet(tmp_path / "train.parquet")
    assert isinstance(frame["color"].dtype, pd.CategoricalDtype)
    document = {
        "name": "categories",
        "data": {
            "train": str(tmp_path / "train.parquet"),
            "validation": 0.2,
            "streaming": streamed,
        },
        "target": {"column": "label"},
        "features": {"exclude": ["id", "tier", "review", "value", "tags"]},
    }
    data = TrainingData.load(parse_config(document), QuietReporter())
    color = next(c for c in data.schema.columns if c.name == "color")
    assert color.type == "categorical" and sorted(color.vocabulary) == ["blue", "green", "red"]
    assert data.schema.target.classes == ["high", "low"]
    document["features"]["exclude"].remove("tags")
    with pytest.raises(DataError, match=r"feature column 'tags' has Arrow type list<"):
        TrainingData.load(parse_config(document), QuietReporter())


ODD_NAMES = [
    "od280/od315_of_diluted_wines",
    "price ($)",
    "price($)",
    "price(€)",
    "a.b.c",
    'say "hi"',
    "it's",
    "[bracket]{brace}",
    "naïve café",
    "日本語",
    "emoji 🎉",
    "1st",
    " padded ",
    "x" * 300,
]


@pytest.mark.parametrize("streamed", [False, True], ids=["in_memory", "streamed"])
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_any_column_name_is_read_typed_and_counted_as_written(tmp_path, streamed, fmt):
    rng = np.random.default_rng(4)
    rows = 120
    columns: dict[str, object] = {}
    for index, name in enumerate(ODD_NAMES):
        if index % 3 == 0:
            columns[name] = rng.normal(size=rows)
        elif index % 3 == 1:
            columns[name] = rng.choice(["a", "b", "c"], rows)
        else:
            columns[name] = rng.integers(0, 4, rows)
    columns["目标 / target"] = rng.choice(["yes", "no"], rows)
    table = pa.table(columns)
    path = tmp_path / f"odd.{fmt}"
    if fmt == "csv":
        pa_csv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    config = parse_config(
        {
            "name": "odd",
            "data": {"train": str(path), "validation": 0.25, "streaming": streamed},
            "target": {"column": "目标 / target"},
            "features": {ODD_NAMES[2]: "categorical", ODD_NAMES[5]: "categorical"},
        }
    )
    data = TrainingData.load(config, QuietReporter())
    assert data.schema.input_names == ODD_NAMES
    assert data.schema.target.column == "目标 / target"
    for column in data.schema.columns:
        if column.type != "numeric":
            assert sorted(map(str, column.vocabulary)) == sorted(
                map(str, set(table.column(column.name).to_pylist()))
            )
    data.write_sample(tmp_path / SAMPLE)
    assert pq.read_schema(tmp_path / SAMPLE).names == [*ODD_NAMES, "目标 / target"]


@pytest.mark.parametrize("streamed", [False, True], ids=["in_memory", "streamed"])
def test_a_decimal_regression_target_splits_like_a_float_one(tmp_path, streamed):
    from decimal import Decimal

    table = make_table(200, seed=5)
    values = [Decimal(f"{v:.4f}") for v in table.column("value").to_pylist()]
    table = table.set_column(table.column_names.index("value"), "value", pa.array(values))
    pq.write_table(table, tmp_path / "train.parquet")
    config = parse_config(
        {
            "name": "decimal",
            "data": {
                "train": str(tmp_path / "train.parquet"),
                "validation": 0.2,
                "streaming": streamed,
            },
            "target": {"column": "value"},
            "features": {"exclude": ["id", "label", "tier", "review"]},
        }
    )
    data = TrainingData.load(config, QuietReporter())
    assert data.schema.target.task == "regression"
    assert 0 < data.rows["validation"] < 200
