"""Sniffing how a CSV is written (`mlcli init`) and detecting a header that names the columns."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from conftest import uci_like as _uci_like
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlcli.config.schema import CsvOptions
from mlcli.data.csv_files import csv_names
from mlcli.data.dialect import (
    detect_header,
    header_names,
    read_head,
    read_head_bytes,
    repeats_names,
    sniff_csv,
)
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


_NAME_CHARACTERS = st.sampled_from([*"ab Z_-.é名,;|\t\"'\\#?", "\r", "\n", "\ufeff"])


@st.composite
def _csv_files(draw: st.DrawFn) -> tuple[bytes, CsvOptions, list[str]]:
    """A CSV file's bytes with a header of odd names, the options it is read with, its names."""
    delimiter = draw(st.sampled_from([",", ";", "\t", "|", " "]))
    quote_char = draw(st.sampled_from(['"', "'"]))
    quoting = draw(st.booleans())
    names = draw(
        st.lists(
            st.text(_NAME_CHARACTERS, min_size=1, max_size=6), min_size=1, max_size=6, unique=True
        )
    )
    if not quoting:  # then a name cannot hold the delimiter or a line end
        names = [n for n in names if not set(n) & {delimiter, "\r", "\n"}] or ["x"]
    end = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    if names[0].startswith("\ufeff"):  # at the file's start that is its byte-order mark
        names = [name for name in names if not name.startswith("\ufeff")] or ["x"]
    special = {delimiter, quote_char, "\r", "\n"}

    def field(value: str) -> str:  # quoted when it must be, and sometimes when it need not be
        if quoting and (set(value) & special or draw(st.booleans())):
            return quote_char + value.replace(quote_char, quote_char * 2) + quote_char
        return value

    rows = [names] + [["1"] * len(names)] * draw(st.integers(0, 3))
    body = "".join(delimiter.join(field(value) for value in row) + end for row in rows)
    skip_rows = draw(st.integers(0, 2))
    banner = "".join(
        draw(st.text(st.sampled_from(list("x ,;'\"")), max_size=8)) + end for _ in range(skip_rows)
    )
    blank = end * draw(st.integers(0, 2))
    bom = "\ufeff" if draw(st.booleans()) else ""
    text = bom + banner + blank + body
    options = CsvOptions(
        delimiter=delimiter, quote_char=quote_char, quoting=quoting, skip_rows=skip_rows
    )
    return text.encode("utf-8"), options, names


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(_csv_files())
def test_header_names_are_the_names_pyarrow_reads(tmp_path, written):
    data, options, names = written
    path = tmp_path / "table.csv"
    path.write_bytes(data)
    found = header_names(path, options)
    assert found is None or found == csv_names(path, options)
    if not any({"\r", "\n"} & set(name) for name in names):  # one line: no need of pyarrow
        assert found == csv_names(path, options) == names


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty"),
        (b"\n\n", "only blank lines"),
        (b"a,b", "no line end after the header"),
        (b"a,a\n1,2\n", "a repeated name"),
        (b"caf\xe9,b\n1,2\n", "not UTF-8"),
        (b'a,"b\nc"\n1,2\n', "a line break in a quoted name"),
    ],
)
def test_header_names_leaves_what_it_cannot_tell_exactly_to_pyarrow(tmp_path, data, why):
    path = tmp_path / "table.csv"
    path.write_bytes(data)
    assert header_names(path, CsvOptions()) is None, why


def test_header_names_reads_no_compressed_file_and_gives_configured_names(tmp_path):
    packed = tmp_path / "table.csv.gz"
    packed.write_bytes(gzip.compress(b"a,b\n1,2\n"))
    assert header_names(packed, CsvOptions()) is None
    plain = _write(tmp_path / "plain.csv", "1,2\n")
    given_names = CsvOptions(header=False, columns=["p", "q"])
    assert header_names(plain, given_names) == ["p", "q"]
    assert header_names(_write(tmp_path / "none.csv", ""), given_names) is None
