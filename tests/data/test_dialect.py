"""Sniffing how a CSV is written (`mlcli init`) and detecting a header that names the columns."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from conftest import uci_like as _uci_like
from hypothesis import given
from hypothesis import strategies as st

from mlcli.config.schema import CsvOptions
from mlcli.data.dialect import detect_header, read_head, read_head_bytes, repeats_names, sniff_csv
from mlcli.errors import DataError


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_sniffs_uci_style_files(tmp_path):
    dialect = sniff_csv(_uci_like(tmp_path))
    assert dialect.delimiter == ","
    assert (dialect.header, dialect.trim_whitespace, dialect.skip_rows) == (False, True, 1)
    assert dialect.na_values == ["?"]
    assert "?" in dialect.reasons["na_values"]


def test_sniffs_semicolons_quoted_header_and_unbalanced_quotes(tmp_path):
    quoted = _write(
        tmp_path / "a.csv", '"x";"kind"\n' + "".join(f'{i};"k{i % 3}"\n' for i in range(50))
    )
    dialect = sniff_csv(quoted)
    assert (dialect.delimiter, dialect.header, dialect.quoting) == (";", True, True)
    rows = "".join(f'{"ham" if i % 4 else "spam"}\t"hi" she said {i}\n' for i in range(60))
    dialect = sniff_csv(_write(tmp_path / "sms", rows))
    assert (dialect.delimiter, dialect.header, dialect.quoting) == ("\t", False, False)


def test_the_head_is_read_through_compression_and_cut_after_a_full_line(tmp_path):
    path = tmp_path / "table.csv.gz"
    path.write_bytes(gzip.compress(b"\xef\xbb\xbfa,b\n1,2\n3,4\n"))
    assert read_head_bytes(path, 4) == b"\xef\xbb\xbfa"
    assert read_head(path) == "a,b\n1,2\n3,4\n"  # the byte-order mark dropped
    assert read_head(path, limit=12) == "a,b\n1,2\n"  # "3,4" would be cut in half


def test_an_unreadable_empty_or_binary_head_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="cannot read the file"):
        read_head_bytes(tmp_path / "absent.csv")
    with pytest.raises(DataError, match="the file is empty"):
        read_head(_write(tmp_path / "empty.csv", "\n \n"))
    latin = tmp_path / "latin.csv"
    latin.write_bytes("café,b\n".encode("latin-1") + b"1,2\n" * 5)
    with pytest.raises(DataError, match="not UTF-8"):
        read_head(latin)


HEADERLESS = CsvOptions.model_validate({"header": False, "columns": ["a", "b", "y"]})


def test_a_first_line_that_names_the_columns_is_read_as_the_header():
    found = detect_header(HEADERLESS, b"b;y;a\nx;yes;1\n", ["a", "b"])
    assert (found.header, found.columns, found.delimiter) == (True, None, ";")
    found = detect_header(HEADERLESS, b"banner\n\n a ,b,y\n1,x,no\n", ["a", "b"])
    assert found.header is False, "the banner line is the first line when skip_rows is 0"
    skipping = HEADERLESS.model_copy(update={"skip_rows": 1})
    assert detect_header(skipping, b"banner\n\n a ,b,y\n1,x,no\n", ["a", "b"]).header is True


def test_a_first_line_of_data_leaves_the_options_alone():
    assert detect_header(HEADERLESS, b"1,x,yes\n2,z,no\n", ["a", "b"]) is HEADERLESS
    assert detect_header(HEADERLESS, b"", ["a", "b"]) is HEADERLESS
    named = CsvOptions()  # header: true and no column names
    assert detect_header(named, b"1,2\n", ["a"]) is named


@given(
    st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=6),
    st.sampled_from([",", ";", "\t", "|"]),
)
def test_a_header_naming_half_the_columns_is_found_with_any_usual_delimiter(fields, delimiter):
    names = ["a", "b", "c", "d"]
    head = (delimiter.join(fields) + "\n1\n").encode()
    found = detect_header(HEADERLESS, head, names)
    named = len(set(fields)) >= len(names) // 2
    assert found.header is named
    if named and len(fields) > 1:
        assert found.delimiter == delimiter


def test_a_row_that_repeats_the_names_is_a_header_read_as_data():
    assert repeats_names([" a", "b ", None], ["a", "b", ""])
    assert not repeats_names(["a", 1], ["a", "b"])
    assert not repeats_names(["a"], ["a", "b"])
