"""The tensors of the Open Inference Protocol (v2): one input tensor's values read into a
model column, and the model's outputs as the protocol's named tensors and their bytes.

An input tensor per column (`serving.v2_payloads` reads the request around them), with a
`datatype` the column can take:

| column dtype | datatypes it takes |
| --- | --- |
| float32 (numeric) | `FP32`, `FP64`, `FP16`, `INT64`..`INT8`, `UINT64`..`UINT8`, `BOOL` (0 and 1) |
| int64 (integer category) | `INT64`..`INT8`, `UINT64`..`UINT8`, whole `FP32`/`FP64`/`FP16` |
| string (categorical, binary, text) | `BYTES` (UTF-8), `BOOL` (`"true"`/`"false"`), integers |

Values come as JSON `data` (flat, or nested as `[[v], [v], ...]`; `null` is a missing value,
as in `serving.payloads`), or as raw bytes (the binary tensor data extension): little-endian
numbers, and for `BYTES` each element as a 4-byte little-endian length and its bytes. A
numeric column reads NaN as missing; a value beyond float32's range, or an infinity, is
refused.

A classifier answers `label` (`BYTES`, `[rows]`, the user's class as text) and
`probabilities` (`FP32`, `[rows, classes]`, in the metadata's class order); a regression model
`value` (`FP32`, `[rows]`).
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

from mlcli.exporting.signature import ServingSignature
from mlcli.inference.labels import label_texts
from mlcli.serving.payloads import BadRequestError, column_values

BYTES = "BYTES"
LABEL = "label"
PROBABILITIES = "probabilities"
VALUE = "value"
# the model's dtype -> the datatype its metadata shows
DATATYPES = {"float32": "FP32", "int64": "INT64", "string": BYTES}
_NUMPY = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
_INTEGERS = ("INT64", "INT32", "INT16", "INT8", "UINT64", "UINT32", "UINT16", "UINT8")
_FLOATS = ("FP32", "FP64", "FP16")
ACCEPTED = {
    "float32": (*_FLOATS, *_INTEGERS, "BOOL"),
    "int64": (*_INTEGERS, *_FLOATS),
    "string": (BYTES, "BOOL", *_INTEGERS),
}
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_INT64_MAX = int(np.iinfo(np.int64).max)
_SHOWN = 40


def _show(value: Any) -> str:
    text = json.dumps(value, allow_nan=True, default=str)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def output_datatypes(signature: ServingSignature) -> dict[str, tuple[str, list[int]]]:
    """The outputs a model answers: name -> (datatype, shape with -1 for the rows)."""
    if signature.target.task == "regression":
        return {VALUE: ("FP32", [-1])}
    return {LABEL: (BYTES, [-1]), PROBABILITIES: ("FP32", [-1, len(signature.target.classes)])}


def json_values(column: str, dtype: str, datatype: str, data: Any, rows: int) -> np.ndarray:
    """A JSON input tensor's `data` as a 1-D array of the column's `dtype`.

    Raises `BadRequestError` for data of another length than `rows`, an element whose JSON
    kind is not `datatype`'s, or a value the column cannot hold (`payloads.column_values`).
    """
    if type(data) is not list or len(data) != rows:
        count = len(data) if type(data) is list else "no list"
        raise BadRequestError(
            f"input {column!r}: data holds {count} values, its shape needs {rows} "
            "(a flat list, or one one-element list per row)"
        )
    kinds: tuple[type, ...]
    if datatype == BYTES:
        expected, kinds = "a string", (str,)
    elif datatype == "BOOL":
        expected, kinds = "true or false", (bool,)
    elif datatype in _INTEGERS:
        expected, kinds = "an integer", (int,)
    else:
        expected, kinds = "a number", (int, float)
    for row, value in enumerate(data):
        element = value[0] if type(value) is list and len(value) == 1 else value
        if element is not None and type(element) not in kinds:
            raise BadRequestError(
                f"input {column!r}, row {row}: datatype {datatype} expects {expected} "
                f"or null, found {_show(value)}"
            )
    if datatype == "BOOL" and dtype == "float32":
        data = [_unwrapped(value) for value in data]
        data = [None if value is None else float(value) for value in data]
    return column_values(dtype, column, data)


def _unwrapped(value: Any) -> Any:
    return value[0] if type(value) is list and len(value) == 1 else value


def _strings(column: str, raw: bytes, rows: int) -> np.ndarray:
    """`BYTES` elements: each a 4-byte little-endian length and that many bytes of UTF-8."""
    array = np.empty(rows, object)
    offset = 0
    for row in range(rows):
        if offset + 4 > len(raw):
            raise BadRequestError(
                f"input {column!r}: the binary BYTES data ends at element {row}, "
                f"its shape needs {rows}"
            )
        (length,) = struct.unpack_from("<I", raw, offset)
        start, offset = offset + 4, offset + 4 + length
        if offset > len(raw):
            raise BadRequestError(
                f"input {column!r}, row {row}: element of {length} bytes passes the end of the "
                f"binary data ({len(raw)} bytes)"
            )
        try:
            array[row] = raw[start:offset].decode("utf-8")
        except UnicodeDecodeError as error:
            raise BadRequestError(
                f"input {column!r}, row {row}: expected UTF-8 text ({error.reason})"
            ) from None
    if offset != len(raw):
        raise BadRequestError(
            f"input {column!r}: binary_data_size {len(raw)}, but its {rows} BYTES elements "
            f"take {offset}"
        )
    return array


def _refuse(column: str, bad: np.ndarray, values: np.ndarray, expected: str) -> None:
    if bad.any():
        row = int(np.argmax(bad))
        raise BadRequestError(
            f"input {column!r}, row {row}: expected {expected}, found {values[row].item()!r}"
        )


def binary_values(column: str, dtype: str, datatype: str, raw: bytes, rows: int) -> np.ndarray:
    """A binary input tensor's bytes as a 1-D array of the column's `dtype`.

    Raises `BadRequestError` for bytes that are not `rows` elements of `datatype`, or a value
    the column cannot hold (an infinity, a number past float32 or int64, a fraction for an
    integer, text that is not UTF-8), naming the row.
    """
    if datatype == BYTES:
        return _strings(column, raw, rows)
    numpy_type = _NUMPY[datatype]
    if len(raw) != rows * numpy_type.itemsize:
        raise BadRequestError(
            f"input {column!r}: binary_data_size {len(raw)}, its shape needs {rows} {datatype} "
            f"values ({rows * numpy_type.itemsize} bytes)"
        )
    values = np.frombuffer(raw, numpy_type)
    if dtype == "string":
        if datatype == "BOOL":
            return np.where(values, "true", "false").astype(object)
        return values.astype(str).astype(object)
    if dtype == "int64":
        if datatype in _FLOATS:
            _refuse(
                column,
                ~np.isfinite(values) | (values != np.round(values)),
                values,
                "a whole number",
            )
            _refuse(column, np.abs(values) >= 2.0**63, values, "a 64-bit integer")
        elif datatype == "UINT64":
            _refuse(column, values > _INT64_MAX, values, "a 64-bit integer")
        return values.astype(np.int64)
    if datatype in _FLOATS:  # NaN is a missing value; an infinity or past float32 is refused
        with np.errstate(invalid="ignore"):
            _refuse(
                column,
                np.abs(values.astype(np.float64)) > _FLOAT32_MAX,
                values,
                f"a finite number within float32's range (±{_FLOAT32_MAX:.6g}); NaN when missing",
            )
    return values.astype(np.float32)


def output_tensors(outputs: np.ndarray, signature: ServingSignature) -> dict[str, np.ndarray]:
    """The model's outputs for its rows as the protocol's named tensors."""
    target = signature.target
    if target.task == "regression":
        return {VALUE: outputs.reshape(-1).astype(np.float32)}
    labels = label_texts(outputs, target, threshold=signature.threshold)
    if target.task == "binary":
        outputs = np.concatenate([1.0 - outputs, outputs], axis=1)
    return {
        LABEL: np.array(labels, dtype=object),
        PROBABILITIES: np.asarray(outputs, dtype=np.float32),
    }


def serialized(tensor: np.ndarray) -> bytes:
    if tensor.dtype != object:
        return tensor.astype(tensor.dtype.newbyteorder("<")).tobytes()
    parts = []
    for value in tensor.reshape(-1):
        encoded = value.encode("utf-8")
        parts += [struct.pack("<I", len(encoded)), encoded]
    return b"".join(parts)
