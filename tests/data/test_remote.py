"""mlcli.data.remote: a table behind a URI, listed and read as a local folder would be."""

from __future__ import annotations

import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from conftest import make_table

from mlcli.config.loading import parse_config
from mlcli.data.remote import is_uri, remote_table
from mlcli.errors import DataError

NAMES = ["age", "color", "grade"]


def _config(**data: object):
    return parse_config(
        {
            "name": "remote",
            "data": {"train": "/unused.csv", **data},
            "target": {"column": "label", "task": "binary"},
        }
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("s3://bucket/new/", True),
        ("file:///tmp/x.csv", True),
        ("gs://b/x", True),
        ("new/x.csv", False),
        ("C:\\data\\x.csv", False),
        ("-", False),
        ("://x", False),
    ],
)
def test_what_is_a_uri(text, expected):
    assert is_uri(text) is expected


def test_a_folder_lists_its_tables_sorted_without_hidden_files(tmp_path):
    table = make_table(20)
    for name in ("b.parquet", "a.parquet", ".hidden.parquet", "_SUCCESS", "notes.md"):
        (tmp_path / name).write_bytes(b"")
    for name in ("b.parquet", "a.parquet"):
        pq.write_table(table, tmp_path / name)
    found = remote_table(_config(), f"file://{tmp_path}", names=NAMES)
    assert [p.rsplit("/", 1)[-1] for p in found.paths] == ["a.parquet", "b.parquet"]
    assert found.format == "parquet"
    assert "2 files" in found.describe()


@pytest.mark.parametrize("header", [True, False])
def test_a_csv_header_is_detected_from_the_first_bytes(tmp_path, header):
    path = tmp_path / "new.csv"
    pa_csv.write_csv(make_table(20), path, pa_csv.WriteOptions(include_header=header))
    columns = make_table(1).column_names
    found = remote_table(
        _config(csv={"header": False, "columns": columns}), f"file://{path}", names=NAMES
    )
    assert found.format == "csv"
    assert found.csv.header is header


@pytest.mark.parametrize("uri", ["file:///no/such/folder", "nosuchscheme://bucket/x.csv"])
def test_nothing_there_or_an_unknown_scheme_is_a_data_error(uri):
    with pytest.raises(DataError) as raised:
        remote_table(_config(), uri, names=NAMES)
    assert uri in str(raised.value)
