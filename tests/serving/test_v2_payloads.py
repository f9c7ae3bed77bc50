"""The Open Inference Protocol's tensors without a model: any column values decode alike from
JSON (flat or nested) and from the binary tensor data extension; each datatype a column takes is
converted as the model's dtype needs, and each it cannot take, or a value it cannot hold, is a
400 naming the input and row; outputs encode alike in JSON and binary."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlcli.exporting.signature import ServingSignature
from mlcli.features.schema import FeatureSchema
from mlcli.serving.payloads import BadRequestError, PayloadTooLargeError
from mlcli.serving.v2_payloads import (
    InferRequest,
    RequestedOutput,
    decompressed,
    infer_response,
    parse_infer,
)

INPUTS = {"x": "float32", "k": "int64", "c": "string"}


def _signature(task: str = "binary", classes: list = ["no", "yes"]) -> ServingSignature:  # noqa: B006
    target = FeatureSchema.from_dict(
        {"columns": [], "target": {"column": "y", "task": task, "classes": classes}}
    ).target
    return ServingSignature(inputs=dict(INPUTS), target=target)


def _bytes(texts: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in texts)


def _binary_body(tensors: list[tuple[str, str, list[int], bytes]]) -> tuple[bytes, str]:
    inputs = [
        {
            "name": name,
            "datatype": datatype,
            "shape": shape,
            "parameters": {"binary_data_size": len(raw)},
        }
        for name, datatype, shape, raw in tensors
    ]
    header = json.dumps({"inputs": inputs}).encode()
    return header + b"".join(raw for *_, raw in tensors), str(len(header))


def _same(left: dict[str, np.ndarray], right: dict[str, np.ndarray]) -> None:
    assert left.keys() == right.keys()
    for name in left:
        assert left[name].dtype == right[name].dtype, name
        assert left[name].shape == right[name].shape, name
        if left[name].dtype == object:
            assert left[name].tolist() == right[name].tolist(), name
        else:
            np.testing.assert_array_equal(left[name], right[name])


finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.one_of(finite32, st.none()),
            st.integers(min_value=-(2**63) + 1, max_value=2**63 - 1),
            st.text(max_size=12),
        ),
        min_size=1,
        max_size=20,
    ),
    nested=st.booleans(),
)
def test_json_and_binary_tensors_decode_to_the_same_columns(rows, nested):
    signature = _signature()
    floats = [x for x, _, _ in rows]
    integers = [k for _, k, _ in rows]
    texts = [c for _, _, c in rows]
    n = len(rows)
    shape = [n, 1] if nested else [n]

    def data(values: list) -> list:
        return [[v] for v in values] if nested else values

    as_json = parse_infer(
        json.dumps(
            {
                "inputs": [
                    {"name": "x", "datatype": "FP32", "shape": shape, "data": data(floats)},
                    {"name": "k", "datatype": "INT64", "shape": shape, "data": data(integers)},
                    {"name": "c", "datatype": "BYTES", "shape": shape, "data": data(texts)},
                    {"name": "ignored", "datatype": "FP32", "shape": [1], "data": [1.0]},
                ]
            }
        ).encode(),
        signature,
        max_rows=100,
    )
    raw_floats = np.array([np.nan if v is None else v for v in floats], "<f4").tobytes()
    body, length = _binary_body(
        [
            ("x", "FP32", shape, raw_floats),
            ("k", "INT64", shape, np.array(integers, "<i8").tobytes()),
            ("c", "BYTES", shape, _bytes(texts)),
        ]
    )
    as_binary = parse_infer(body, signature, header_length=length, max_rows=100)
    _same(as_json.columns, as_binary.columns)
    assert as_json.rows == as_binary.rows == n
    assert all(column.shape == (n, 1) for column in as_json.columns.values())


@pytest.mark.parametrize(
    ("column", "datatype", "raw", "expected"),
    [
        ("x", "FP64", np.array([1.5, np.nan], "<f8").tobytes(), [1.5, np.nan]),
        ("x", "INT32", np.array([3, -4], "<i4").tobytes(), [3.0, -4.0]),
        ("x", "BOOL", np.array([True, False]).tobytes(), [1.0, 0.0]),
        ("k", "INT32", np.array([3, -4], "<i4").tobytes(), [3, -4]),
        ("k", "FP64", np.array([2.0, -1.0], "<f8").tobytes(), [2, -1]),
        ("c", "BOOL", np.array([True, False]).tobytes(), ["true", "false"]),
        ("c", "INT64", np.array([7, -1], "<i8").tobytes(), ["7", "-1"]),
    ],
)
def test_each_datatype_a_column_takes_is_converted_to_its_dtype(column, datatype, raw, expected):
    others = {
        "x": ("FP32", np.zeros(2, "<f4").tobytes()),
        "k": ("INT64", np.zeros(2, "<i8").tobytes()),
        "c": ("BYTES", _bytes(["a", "b"])),
    }
    others[column] = (datatype, raw)
    body, length = _binary_body([(name, dt, [2], data) for name, (dt, data) in others.items()])
    parsed = parse_infer(body, _signature(), header_length=length, max_rows=10)
    got = parsed.columns[column].reshape(-1)
    assert got.dtype == np.dtype(object if INPUTS[column] == "string" else INPUTS[column])
    if got.dtype == object:
        assert got.tolist() == expected
    else:
        np.testing.assert_array_equal(got, np.array(expected, got.dtype))


@pytest.mark.parametrize(
    ("column", "datatype", "raw", "words"),
    [
        ("x", "FP64", np.array([1.0, 1e39], "<f8").tobytes(), "row 1: expected a finite number"),
        ("x", "FP64", np.array([np.inf, 1.0], "<f8").tobytes(), "row 0: expected a finite number"),
        ("x", "BYTES", _bytes(["1", "2"]), 'datatype "BYTES", expected one of FP32'),
        ("k", "UINT64", np.array([1, 2**63], "<u8").tobytes(), "row 1: expected a 64-bit integer"),
        ("k", "FP32", np.array([1.5, 2.0], "<f4").tobytes(), "row 0: expected a whole number"),
        ("k", "BOOL", np.array([True, False]).tobytes(), 'datatype "BOOL"'),
        (
            "c",
            "BYTES",
            _bytes(["ok"]) + struct.pack("<I", 2) + b"\xff\xfe",
            "row 1: expected UTF-8",
        ),
        ("c", "BYTES", _bytes(["ok"]) + struct.pack("<I", 9) + b"ab", "passes the end"),
        ("c", "BYTES", _bytes(["ok"]), "ends at element 1"),
        ("c", "FP32", np.zeros(2, "<f4").tobytes(), "input 'c': datatype \"FP32\""),
        ("x", "FP32", np.zeros(3, "<f4").tobytes(), "binary_data_size 12, its shape needs 2 FP32"),
    ],
)
def test_a_value_or_datatype_a_column_cannot_take_is_a_400_naming_it(column, datatype, raw, words):
    others = {
        "x": ("FP32", np.zeros(2, "<f4").tobytes()),
        "k": ("INT64", np.zeros(2, "<i8").tobytes()),
        "c": ("BYTES", _bytes(["a", "b"])),
    }
    others[column] = (datatype, raw)
    body, length = _binary_body([(name, dt, [2], data) for name, (dt, data) in others.items()])
    with pytest.raises(BadRequestError) as error:
        parse_infer(body, _signature(), header_length=length, max_rows=10)
    assert error.value.status == 400
    assert words in str(error.value)
    assert f"'{column}'" in str(error.value)


@pytest.mark.parametrize(
    ("data", "datatype", "words"),
    [
        (["a", 1.0], "FP32", "row 0: datatype FP32 expects a number"),
        ([1.5, 2], "INT64", "row 0: datatype INT64 expects an integer"),
        ([1, True], "FP32", "row 1: datatype FP32 expects a number"),
        ([1, 2, 3], "FP32", "data holds 3 values, its shape needs 2"),
        ([[1.0, 2.0], [3.0, 4.0]], "FP32", "row 0"),
    ],
)
def test_json_data_of_the_wrong_kind_or_length_is_a_400(data, datatype, words):
    body = {
        "inputs": [
            {"name": "x", "datatype": datatype, "shape": [2], "data": data},
            {"name": "k", "datatype": "INT64", "shape": [2], "data": [1, 2]},
            {"name": "c", "datatype": "BYTES", "shape": [2], "data": ["a", None]},
        ]
    }
    with pytest.raises(BadRequestError, match="input 'x'") as error:
        parse_infer(json.dumps(body).encode(), _signature(), max_rows=10)
    assert words in str(error.value)


def test_more_rows_than_the_limit_are_refused_before_any_value_is_read():
    body = {
        "inputs": [
            {"name": name, "datatype": "BYTES", "shape": [11], "data": "not read"}
            for name in INPUTS
        ]
    }
    with pytest.raises(PayloadTooLargeError, match="11 rows, the limit is 10"):
        parse_infer(json.dumps(body).encode(), _signature(), max_rows=10)


@settings(max_examples=40, deadline=None)
@given(
    probabilities=st.lists(st.floats(min_value=0, max_value=1, width=32), min_size=1, max_size=30),
    binary=st.lists(st.booleans(), min_size=2, max_size=2),
)
def test_outputs_encode_alike_in_json_and_binary(probabilities, binary):
    signature = _signature("binary", ["no", "sí"])
    outputs = np.array(probabilities, np.float32).reshape(-1, 1)
    requested = [RequestedOutput("label", binary[0]), RequestedOutput("probabilities", binary[1])]
    request = InferRequest(columns={}, rows=len(probabilities), outputs=requested, id="a")
    content, headers = infer_response(
        outputs, signature, request, model_name="m", model_version="1"
    )
    split = int(headers.get("inference-header-content-length", len(content)))
    header = json.loads(content[:split])
    assert header["id"] == "a" and header["model_name"] == "m"
    label, probability = header["outputs"]
    assert label["shape"] == [len(probabilities)] and probability["shape"] == [
        len(probabilities),
        2,
    ]
    rest = content[split:]
    if binary[0]:
        size = label["parameters"]["binary_data_size"]
        texts, at, blob, rest = [], 0, rest[:size], rest[size:]
        while at < len(blob):
            (length,) = struct.unpack_from("<I", blob, at)
            texts.append(blob[at + 4 : at + 4 + length].decode())
            at += 4 + length
    else:
        texts = label["data"]
    if binary[1]:
        got = np.frombuffer(rest, "<f4").reshape(-1, 2)
    else:
        got = np.array(probability["data"], np.float32).reshape(-1, 2)
    assert texts == ["sí" if p >= 0.5 else "no" for p in outputs.reshape(-1)]
    np.testing.assert_array_equal(got[:, 1], outputs.reshape(-1))
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(body=st.binary(max_size=2000), encoding=st.sampled_from(["gzip", "deflate"]))
def test_a_compressed_body_inflates_to_what_was_compressed(body, encoding):
    import gzip
    import zlib

    packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    assert decompressed(packed, encoding, limit=2000) == body
    assert decompressed(body, None, limit=10) == body  # no encoding: as sent


def test_a_compressed_body_past_the_limit_or_cut_or_of_another_encoding_is_refused():
    import gzip

    bomb = gzip.compress(b"\0" * 1_000_000)  # about 1 kB inflating to 1 MB
    with pytest.raises(PayloadTooLargeError, match="inflates past the limit of 4096"):
        decompressed(bomb, "gzip", limit=4096)
    with pytest.raises(BadRequestError, match="ends before its compressed data"):
        decompressed(gzip.compress(b"x" * 100)[:-12], "gzip", limit=4096)
    with pytest.raises(BadRequestError, match="not valid deflate data"):
        decompressed(b"plain", "deflate", limit=4096)
    with pytest.raises(BadRequestError, match="expected gzip, deflate or none"):
        decompressed(b"x", "br", limit=4096)
