"""`mlcli.data.splits.check_headers`: every configured table's header checked before reading."""

from __future__ import annotations

from pathlib import Path

import pyarrow.csv as pa_csv
import pytest
from conftest import make_table

from mlcli.config.loading import parse_config
from mlcli.data.splits import check_headers, load_splits
from mlcli.errors import DataError


def _config(folder: Path, **data: object):
    document = {"name": "t", "data": data, "target": {"column": "label"}}
    return parse_config(document, source="test", relative_to=folder)


@pytest.mark.parametrize("role", ["train", "validation", "test"])
def test_a_table_lacking_what_reading_it_would_lack_fails_the_same_way(tmp_path: Path, role):
    table = make_table(60)
    pa_csv.write_csv(table, tmp_path / "full.csv")
    pa_csv.write_csv(table.drop_columns(["label"]), tmp_path / "unlabelled.csv")
    tables = {"train": "full.csv", "validation": "full.csv", "test": "full.csv"}
    tables[role] = "unlabelled.csv"
    config = _config(tmp_path, **tables)
    with pytest.raises(DataError) as early:
        check_headers(config)
    with pytest.raises(DataError) as read:
        load_splits(config)
    assert "unlabelled.csv" in str(early.value) and "'label'" in str(early.value)
    assert str(early.value) == str(read.value)


def test_fractions_and_complete_tables_pass(tmp_path: Path):
    pa_csv.write_csv(make_table(60), tmp_path / "full.csv")
    check_headers(_config(tmp_path, train="full.csv", validation=0.25, test=0.25))
    with pytest.raises(DataError, match=r"nowhere\.csv"):
        check_headers(_config(tmp_path, train="full.csv", validation="nowhere.csv"))
