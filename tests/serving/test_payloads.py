"""Predict bodies the model cannot take are refused before they reach it, naming the column
and the row: text that does not encode to UTF-8, numbers beyond float32's range, more rows
than the server's limit."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from mlcli.exporting.signature import ServingSignature
from mlcli.features.schema import TargetSchema
from mlcli.serving.payloads import BadRequestError, PayloadTooLargeError, parse_predict

SIGNATURE = ServingSignature(
    inputs={"x": "float32", "s": "string"},
    target=TargetSchema(column="y", task="binary", classes=["no", "yes"]),
)
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _body(rows: list[dict]) -> bytes:
    return json.dumps({"instances": rows}).encode()


@pytest.mark.parametrize("text", ["\ud800", "ab\udfffc", "é\udc80"])
def test_text_that_is_not_utf8_is_a_400_naming_column_and_row(text):
    body = _body([{"x": 1.0, "s": "fine"}, {"x": 2.0, "s": text}])
    with pytest.raises(BadRequestError, match=r"column 's', row 1: expected text that encodes"):
        parse_predict(body, SIGNATURE)


@pytest.mark.parametrize("text", ["plain", "Zürich", "東京", "🙂", "a\x00b"])
def test_any_text_that_encodes_to_utf8_is_taken(text):
    parsed = parse_predict(_body([{"x": 1.0, "s": text}]), SIGNATURE)
    assert parsed.columns["s"][0, 0] == text


@pytest.mark.parametrize("value", [1e39, -1e39, 10**39, -(10**400), 3.5e38])
def test_numbers_beyond_float32_are_a_400_naming_column_and_row(value):
    body = _body([{"x": 1.0, "s": "a"}, {"x": 1.0, "s": "a"}, {"x": value, "s": "a"}])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning on the way either
        with pytest.raises(BadRequestError, match=r"column 'x', row 2: .*float32's range"):
            parse_predict(body, SIGNATURE)


@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers()))
@example(int(FLOAT32_MAX) + 1)
@example(-int(FLOAT32_MAX))
@example(10**400)
def test_a_number_is_taken_exactly_when_float32_can_hold_it(value):
    body = json.dumps({"inputs": {"x": [value], "s": ["a"]}}, allow_nan=True).encode()
    # NaN is a missing value; exact comparison (a Python int is compared without rounding)
    holdable = (isinstance(value, float) and math.isnan(value)) or abs(value) <= FLOAT32_MAX
    if not holdable:
        with pytest.raises(BadRequestError, match="column 'x', row 0"):
            parse_predict(body, SIGNATURE)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parsed = parse_predict(body, SIGNATURE)
    got = parsed.columns["x"][0, 0]
    assert np.isfinite(got) or (isinstance(value, float) and math.isnan(value))


@pytest.mark.parametrize("columnar", [False, True])
def test_more_rows_than_the_limit_is_a_413_before_any_value_is_read(columnar):
    rows = [{"x": 1.0, "s": "a"}] * 11
    if columnar:
        body = json.dumps({"inputs": {"x": [1.0] * 11, "s": ["a"] * 11}}).encode()
    else:
        body = _body(rows)
    with pytest.raises(PayloadTooLargeError, match=r"11 rows, the limit is 10 \(--max-rows\)"):
        parse_predict(body, SIGNATURE, max_rows=10)
    assert parse_predict(_body(rows[:10]), SIGNATURE, max_rows=10).rows == 10
