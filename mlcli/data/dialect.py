"""How a delimited text file is written, and whether its first line is a header: the one place.

`sniff_csv` guesses, for `mlcli init`, the delimiter, whether quote characters quote, whether
the first line is a header, leading banner lines, spaces after separators and missing-value
markers such as `?`, from the file's first megabyte. Every guess comes with the reason it was
made, which `mlcli init` writes into the config as a comment.

`detect_header` answers the narrower question that `evaluate` and `predict` ask of new data for
a trained run: does the first line name the model's columns? Then the table is read by those
names, whatever the run's own CSV options say; `repeats_names` catches, when a table is read,
a header line that the config reads as data. `header_names` reads the names a CSV is read
with from its first lines, as pyarrow.csv would, so that a command names a missing column
before numpy and pyarrow load. The standard library's `csv` module does the parsing here.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mlcli.config.schema import CsvOptions
from mlcli.errors import DataError

# A file's head (for sniffing, and for the first line in header detection) is this many bytes.
HEAD_BYTES = 1 << 20
_SNIFF_ROWS = 2000
_DELIMITERS = (",", ";", "\t", "|")
_DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
# Values that mean "missing" wherever they stand alone in a field.
_ALWAYS_MISSING = {"?", "#N/A", "n/a", "NAN", "None", "<NA>"}
# Values that mean "missing" when they interrupt an otherwise numeric column.
_MISSING_IN_NUMBERS = {"-", "--", ".", "none", "missing", "na", "NULL", "null", "nil"}
DEFAULT_NA_VALUES: list[str] = CsvOptions.model_validate({}).na_values
# The suffixes pyarrow's `compression="detect"` decompresses: other files are read as they are.
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".zst", ".lz4", ".br")
_LINE_END = re.compile(rb"\r\n|\r|\n")  # pyarrow.csv's line ends


@dataclass
class CsvDialect:
    """How a CSV file is written, with the reason of each guess (key -> why)."""

    delimiter: str = ","
    header: bool = True
    quoting: bool = True
    trim_whitespace: bool = False
    skip_rows: int = 0
    na_values: list[str] = field(default_factory=list)
    first_row: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)


def read_head_bytes(path: Path, limit: int = HEAD_BYTES) -> bytes:
    """The first `limit` bytes of a (possibly compressed) file, as they are.

    A file without a compression suffix is read by the standard library, so that checking a
    header imports neither pyarrow nor numpy; a compressed one through pyarrow's codecs.
    """
    if not path.name.lower().endswith(COMPRESSED_SUFFIXES):
        try:
            with path.open("rb") as handle:
                return handle.read(limit)
        except OSError as error:
            raise DataError(f"{path}: cannot read the file: {error}") from error
    import pyarrow as pa

    try:
        with pa.input_stream(str(path), compression="detect") as stream:
            return bytes(stream.read(limit))
    except (OSError, pa.ArrowInvalid) as error:
        raise DataError(f"{path}: cannot read the file: {error}") from error


def read_head(path: Path, limit: int = HEAD_BYTES) -> str:
    """The first `limit` bytes of a (possibly compressed) file as text, cut after a full line."""
    data = read_head_bytes(path, limit + 1)
    if len(data) > limit:
        data = data[: data.rfind(b"\n") + 1] or data[:limit]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(data) - 4:  # not just a character cut in half at the end
            raise DataError(f"{path}: not UTF-8 text (byte {error.start})") from error
        text = data[: error.start].decode("utf-8")
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise DataError(f"{path}: the file is empty, expected a table")
    return text


def _rows(text: str, delimiter: str, *, quoting: bool) -> list[list[str]]:
    reader = csv.reader(
        io.StringIO(text),
        delimiter=delimiter,
        quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE,
        strict=False,
    )
    rows: list[list[str]] = []
    try:
        for row in reader:
            if row:
                rows.append(row)
            if len(rows) >= _SNIFF_ROWS:
                break
    except csv.Error:
        pass  # a quote left open at the end of the sample
    return rows


def _consistency(rows: list[list[str]]) -> tuple[float, int]:
    """The share of rows with the most common field count, and that count."""
    if not rows:
        return 0.0, 0
    count, times = Counter(len(row) for row in rows[1:] or rows).most_common(1)[0]
    return times / max(len(rows) - 1, 1), count


def _choose_delimiter(text: str) -> tuple[str, bool, str]:
    """The delimiter and quoting that split the sample into the most regular rows."""
    best: tuple[float, int, str, bool] = (0.0, 1, ",", True)
    for delimiter in _DELIMITERS:
        for quoting in (True, False):
            share, fields = _consistency(_rows(text, delimiter, quoting=quoting))
            if fields >= 2 and (share, fields) > best[:2]:
                best = (share, fields, delimiter, quoting)
    share, fields, delimiter, quoting = best
    if fields < 2:
        return ",", True, "one column: no delimiter splits the lines"
    raw = _rows(text, delimiter, quoting=False)
    if _consistency(raw)[0] >= share:
        # Both read the sample alike; quote characters that open a field without closing it
        # are text (SMS messages), and reading them as quotes would swallow later lines.
        opened = [v for row in raw for v in row if v.startswith('"')]
        quoting = not any(len(v) < 2 or not v.endswith('"') for v in opened)
    name = _DELIMITER_NAMES[delimiter]
    return delimiter, quoting, f"{name}: {share:.0%} of the sampled lines have {fields} fields"


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return value.strip().lower() not in ("nan", "inf", "-inf", "infinity")


def _leading_banner(rows: list[list[str]], fields: int) -> int:
    """How many first lines (at most 5) have a different field count from the rest."""
    banner = 0
    while banner < min(5, len(rows) - 1) and len(rows[banner]) != fields:
        banner += 1
    return banner


def _has_header(rows: list[list[str]], text: str) -> tuple[bool, str]:
    first, body = rows[0], rows[1:]
    if not body:
        return True, "a single line: read as the header"
    if any(_is_number(value) for value in first):
        return False, "the first line holds numbers: it is data"
    for index, value in enumerate(first):
        column = [row[index] for row in body if len(row) > index and row[index].strip()]
        if column and all(_is_number(v) for v in column):
            return True, f"the first line is text above numbers (column {value.strip()!r})"
    for value, index in zip(first, range(len(first)), strict=True):
        if any(len(row) > index and row[index] == value for row in body):
            return False, f"the first line's {value.strip()!r} recurs below it: it is data"
    try:
        sniffed = csv.Sniffer().has_header(text[:65536])
    except csv.Error:
        sniffed = True
    return sniffed, "the first line's values never recur below it" if sniffed else "csv.Sniffer"


def _trims(rows: list[list[str]]) -> bool:
    later = [value for row in rows for value in row[1:] if value.strip()]
    spaced = sum(value.startswith(" ") for value in later)
    return bool(later) and spaced / len(later) > 0.5


def _missing_markers(rows: list[list[str]]) -> tuple[list[str], str]:
    """Values that stand for missing data: `?` anywhere, `-`/`.` and the like among numbers."""
    found: Counter[str] = Counter()
    width = max((len(row) for row in rows), default=0)
    for index in range(width):
        values = [row[index].strip() for row in rows if len(row) > index]
        values = [v for v in values if v]
        numbers = sum(_is_number(v) for v in values)
        numeric = bool(values) and numbers / len(values) >= 0.9
        for value in set(values):
            if value in _ALWAYS_MISSING or (numeric and value in _MISSING_IN_NUMBERS):
                found[value] += values.count(value)
    extra = [value for value, _ in found.most_common() if value not in DEFAULT_NA_VALUES]
    if not extra:
        return [], ""
    shown = ", ".join(f"{value!r} ({found[value]} times)" for value in extra)
    return extra, f"{shown} in the sample read as missing"


def sniff_csv(path: Path) -> CsvDialect:
    """Guesses how a delimited text file is written from its first megabyte."""
    text = read_head(path)
    delimiter, quoting, why_delimiter = _choose_delimiter(text)
    rows = _rows(text, delimiter, quoting=quoting)
    _, fields = _consistency(rows)
    dialect = CsvDialect(delimiter=delimiter, quoting=quoting)
    dialect.reasons["delimiter"] = why_delimiter
    if not quoting:
        dialect.reasons["quoting"] = "quote characters occur inside fields: read as plain text"
    dialect.skip_rows = _leading_banner(rows, fields)
    if dialect.skip_rows:
        shown = delimiter.join(rows[0])[:40]
        dialect.reasons["skip_rows"] = f"the first line(s) do not fit the table: {shown!r}"
    rows = rows[dialect.skip_rows :]
    dialect.trim_whitespace = _trims(rows)
    if dialect.trim_whitespace:
        dialect.reasons["trim_whitespace"] = f"fields follow a {_DELIMITER_NAMES.get(delimiter)}"
        dialect.reasons["trim_whitespace"] += " and a space"
        rows = [[value.strip() for value in row] for row in rows]
    dialect.header, dialect.reasons["header"] = _has_header(rows, text)
    dialect.first_row = rows[0]
    dialect.na_values, why_missing = _missing_markers(rows[1:] if dialect.header else rows)
    if why_missing:
        dialect.reasons["na_values"] = why_missing
    return dialect


def _first_line(head: bytes, skip_rows: int) -> str | None:
    """The first non-blank line of `head` after `skip_rows` such lines, or None."""
    lines = [line for line in head.decode("utf-8", errors="replace").splitlines() if line.strip()]
    return lines[skip_rows] if len(lines) > skip_rows else None


def _header_delimiter(line: str | None, options: CsvOptions, names: Sequence[str]) -> str | None:
    """The delimiter with which `line` names at least half of `names`, or None.

    The configured delimiter is tried first, then the usual ones.
    """
    if line is None:
        return None
    wanted = set(names)
    for delimiter in dict.fromkeys((options.delimiter, *_DELIMITERS)):
        quote = options.quote_char if options.quoting else None
        fields = next(csv.reader([line], delimiter=delimiter, quotechar=quote or '"'))
        found = wanted & {value.strip() for value in fields}
        if len(found) >= max(1, len(wanted) // 2):
            return delimiter
    return None


def detect_header(options: CsvOptions, head: bytes, names: Sequence[str]) -> CsvOptions:
    """`options` with `header: true` (and the delimiter found) when the first line names columns.

    Args:
        options: the options the table would be read with.
        head: the first bytes of the table (`read_head_bytes`).
        names: the columns the reader needs; the first line must name at least half of them.
    """
    if options.header and not options.columns:
        return options
    delimiter = _header_delimiter(_first_line(head, options.skip_rows), options, names)
    if delimiter is None:
        return options
    changed = options.model_dump(exclude_unset=True)
    changed.update(header=True, columns=None, delimiter=delimiter)
    return CsvOptions.model_validate(changed)


def repeats_names(row: Sequence[object], names: Sequence[str]) -> bool:
    """Whether a row read as data is the column names themselves: a header line read as data."""
    values = ["" if value is None else str(value).strip() for value in row]
    return values == [name.strip() for name in names]


def header_names(path: Path, options: CsvOptions) -> list[str] | None:
    """The column names pyarrow.csv reads `path` with under `options`, by the standard library.

    Given names (`options.columns`) are the names of a file that is not empty. Otherwise the
    header is the first record after `skip_rows` lines (line ends `\\n`, `\\r\\n` or `\\r`; blank
    lines skipped; a byte-order mark dropped), split by the delimiter and quote character as
    pyarrow splits it. None when that cannot be told cheaply and exactly: a compressed file,
    bytes that are not UTF-8, a header that does not end within the file's head or holds a
    quoted line break, a name repeated. Then `mlcli.data.csv_files.csv_names` asks pyarrow,
    which raises the error in its own words.
    """
    if path.name.lower().endswith(COMPRESSED_SUFFIXES):
        return None
    if options.columns:  # pyarrow reads an empty file (only) as no table at all
        return list(options.columns) if read_head_bytes(path, 1) else None
    lines = _LINE_END.split(read_head_bytes(path).removeprefix(b"\xef\xbb\xbf"))
    rest = [line for line in lines[options.skip_rows :][:-1] if line]  # whole lines, not blank
    if not rest:  # no header, or one that the head (or the file) cuts before its line end
        return None
    try:
        first = [rest[0].decode("utf-8"), *(line.decode("utf-8", "replace") for line in rest[1:2])]
    except UnicodeDecodeError:
        return None
    reader = csv.reader(
        first,
        delimiter=options.delimiter,
        quotechar=options.quote_char,
        quoting=csv.QUOTE_MINIMAL if options.quoting else csv.QUOTE_NONE,
        doublequote=True,
        strict=False,
    )
    try:
        names = next(reader)
    except (csv.Error, StopIteration):
        return None
    if reader.line_num != 1 or len(set(names)) != len(names):
        return None  # a quoted line break in a name (pyarrow keeps its `\\r`); a name repeats
    return names
