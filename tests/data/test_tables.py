"""Reading tables: every quirk of the shared datasets through the config alone, compression,
Parquet, globs and directories."""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from conftest import REPO, make_table
from hypothesis import given, settings
from hypothesis import strategies as st

from mlcli.config.loading import parse_config
from mlcli.config.schema import CsvOptions
from mlcli.data.splits import load_splits
from mlcli.data.tables import (
    TableSource,
    check_header,
    iter_batches,
    read_table,
    resolve_source,
)
from mlcli.errors import DataError

ADULT_COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
    "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week",
    "native-country", "income",
]  # fmt: skip


def _config(
    data: dict, target: str = "label", replace: dict | None = None, folder: Path | None = None
):
    target_section = {"column": target, "replace": replace or {}}
    document = {"name": "t", "data": data, "target": target_section}
    return parse_config(document, source="test", relative_to=folder)


def test_adult_quirks_are_read_through_the_config(shared_datasets: Path):
    config = _config(
        {
            "train": str(shared_datasets / "adult" / "adult.data"),
            "test": {
                "path": str(shared_datasets / "adult" / "adult.test"),
                "csv": {"skip_rows": 1},
            },
            "csv": {
                "header": False,
                "columns": ADULT_COLUMNS,
                "trim_whitespace": True,
                "na_values": ["?"],
            },
        },
        target="income",
        replace={">50K.": ">50K", "<=50K.": "<=50K"},
    )
    splits = load_splits(config)
    assert splits.train.num_rows + splits.validation.num_rows == 32561
    assert splits.test is not None and splits.test.num_rows == 16281
    labels = set(splits.test.column("income").to_pylist())
    assert labels == {">50K", "<=50K"}, "the trailing periods must be mapped away"
    assert splits.train.column("age").type == pa.int64()
    workclass = splits.train.column("workclass")
    assert workclass.null_count > 0, "'?' must read as missing"
    assert all(not v.startswith(" ") for v in workclass.drop_null().to_pylist()[:100])


def test_bank_marketing_semicolons_and_quotes(shared_datasets: Path):
    config = _config(
        {
            "train": str(shared_datasets / "bank_marketing" / "bank-full.csv"),
            "csv": {"delimiter": ";"},
        },
        target="y",
    )
    table = read_table(resolve_source(config.data.train, data=config.data))
    assert table.num_rows == 45211 and table.num_columns == 17
    assert set(table.column("y").to_pylist()) == {"yes", "no"}


def test_sms_spam_tabs_without_quoting(shared_datasets: Path):
    config = _config(
        {
            "train": str(shared_datasets / "sms_spam" / "SMSSpamCollection"),
            "csv": {
                "delimiter": "\t",
                "header": False,
                "columns": ["label", "message"],
                "quoting": False,
                "na_values": [],
            },
        }
    )
    table = read_table(resolve_source(config.data.train, data=config.data))
    assert table.num_rows == 5574
    assert set(table.column("label").to_pylist()) == {"ham", "spam"}
    assert any(m.startswith('"') for m in table.column("message").to_pylist())


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".csv.zst", ".parquet", ".tsv"])
def test_formats_and_compression(tmp_path: Path, suffix: str):
    table = make_table(50)
    path = tmp_path / f"data{suffix}"
    if suffix == ".parquet":
        pq.write_table(table, path)
    elif suffix == ".tsv":
        pa_csv.write_csv(table, path, write_options=pa_csv.WriteOptions(delimiter="\t"))
    elif suffix == ".csv.gz":
        plain = tmp_path / "plain.csv"
        pa_csv.write_csv(table, plain)
        path.write_bytes(gzip.compress(plain.read_bytes()))
    elif suffix == ".csv.zst":
        with pa.CompressedOutputStream(str(path), "zstd") as stream:
            pa_csv.write_csv(table, stream)
    else:
        pa_csv.write_csv(table, path)
    config = _config({"train": path.name}, folder=tmp_path)
    read = read_table(resolve_source(config.data.train, data=config.data))
    assert read.num_rows == 50
    assert read.column("label").to_pylist() == table.column("label").to_pylist()


def test_globs_lists_and_directories(tmp_path: Path):
    folder = tmp_path / "parts"
    folder.mkdir()
    table = make_table(90)
    for index in range(3):
        pq.write_table(table.slice(index * 30, 30), folder / f"part-{index}.parquet")
    for spec in [
        "parts/*.parquet",
        "parts",
        ["parts/part-0.parquet", "parts/part-1.parquet", "parts/part-2.parquet"],
    ]:
        config = _config({"train": spec}, folder=tmp_path)
        read = read_table(resolve_source(config.data.train, data=config.data))
        assert read.column("id").to_pylist() == list(range(90))


def test_shipped_examples_carry_their_data():
    for config_path in sorted((REPO / "examples").glob("*/config.yaml")):
        from mlcli.config.loading import load_config

        config = load_config(config_path)
        source = resolve_source(config.data.train, data=config.data)
        assert all(path.is_file() for path in source.paths), config_path
        assert all(REPO in path.parents for path in source.paths), "examples must not use ../shared"


def test_a_header_line_read_as_data_is_named(tmp_path: Path):
    path = tmp_path / "named.csv"
    path.write_text("a, b\n1,2\n")
    csv = CsvOptions.model_validate({"header": False, "columns": ["a", "b"]})
    source = TableSource(paths=(path,), format="csv", csv=csv)
    with pytest.raises(DataError, match=r"repeats the column names but data\.csv\.header is false"):
        read_table(source)
    with pytest.raises(DataError, match="repeats the column names"):
        list(iter_batches(source))
    path.write_text("1,2\na,b\n")
    assert read_table(source).column("a").to_pylist() == ["1", "a"]


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet", ".tsv"])
def test_check_header_agrees_with_reading_the_table(tmp_path: Path, suffix: str):
    table = make_table(50)
    path = tmp_path / f"data{suffix}"
    if suffix == ".parquet":
        pq.write_table(table, path)
    elif suffix == ".csv.gz":
        plain = tmp_path / "plain.csv"
        pa_csv.write_csv(table, plain)
        path.write_bytes(gzip.compress(plain.read_bytes()))
    else:
        delimiter = "\t" if suffix == ".tsv" else ","
        pa_csv.write_csv(table, path, write_options=pa_csv.WriteOptions(delimiter=delimiter))
    config = _config({"train": path.name}, folder=tmp_path)
    source = resolve_source(config.data.train, data=config.data)
    check_header(source, read_table(source).column_names)  # every column read is found
    with pytest.raises(DataError, match=r"missing column 'agee' \(did you mean 'age'\?\)"):
        check_header(source, ["age", "agee"])


@settings(max_examples=15, deadline=None)
@given(width=st.integers(1, 3000), cell=st.integers(1, 400))
def test_check_header_names_a_row_wider_than_its_first_block(tmp_path_factory, width, cell):
    names = [f"c{i}" for i in range(width)]
    path = tmp_path_factory.mktemp("wide") / "wide.csv"
    path.write_text(",".join(names) + "\n" + ",".join(["x" * cell] * width) + "\n")
    source = TableSource(paths=(path,), format="csv")
    check_header(source, names)
    with pytest.raises(DataError, match="missing column 'absent'"):
        check_header(source, [*names[:3], "absent"])


def test_check_header_names_a_missing_file_and_an_unreadable_one(tmp_path: Path):
    with pytest.raises(DataError, match=r"nowhere\.csv"):
        check_header(
            resolve_source(str(tmp_path / "nowhere.csv"), data=_config({"train": "x.csv"}).data),
            ["a"],
        )
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.csv"):
        check_header(TableSource(paths=(tmp_path / "empty.csv",), format="csv"), ["a"])
