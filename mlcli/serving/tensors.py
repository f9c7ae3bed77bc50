"""TF Serving's gRPC messages, read into model columns and written back (`serving.grpc`).

A `PredictRequest` holds one `TensorProto` per input column, keyed by the column's own name (as
the REST API and the metadata name it) or by its signature input name (as a client of TF Serving
serving `mlcli export`'s SavedModel keys it); its shape is `[rows]` or `[rows, 1]`. A column
takes these dtypes:

- numeric (`float32`): `DT_FLOAT`, `DT_DOUBLE`, `DT_INT32`, `DT_INT64`; NaN is missing;
- integer categorical (`int64`): `DT_INT64`, `DT_INT32`, and `DT_FLOAT`, `DT_DOUBLE` holding
  integers; `INT_MISSING` is missing;
- string (`string`): `DT_STRING` (UTF-8), `DT_BOOL` (`"true"`/`"false"`), `DT_INT32`,
  `DT_INT64` (their digits); `""` is missing;

as the JSON values of `serving.payloads` are read: infinities and numbers beyond float32's range
are refused in a numeric column, and a string must be UTF-8. Each tensor must hold exactly as
many values as its shape says (TensorFlow would repeat the last value to fill a short one; here
that is refused). The response holds the signature's outputs (`label` and `probabilities`, or
`prediction`) as TF Serving answers for the exported SavedModel, in the fields that
`tf.make_tensor_proto` fills.

The tensors are read and written here with one NumPy call per column rather than with
`tf.make_ndarray` and `tf.make_tensor_proto`: those take any dtype and shape, and cost 25 to 200
µs a call (NumPy version checks, shape arithmetic), about 1 ms for a one-row request of a dozen
columns, five times the whole JSON path; the tests read and write with TensorFlow's helpers
against these. The protos come with the `grpc` extra (`tensorflow-serving-api`), which imports
TensorFlow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from mlcli._tensorflow import import_tensorflow
from mlcli.exporting.signature import SIGNATURE_KEY, ServingSignature
from mlcli.serving.payloads import (
    BadRequestError,
    PayloadTooLargeError,
    PredictRequest,
    model_metadata,
)

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_INT64_LIMIT = float(2**63)
SIGNATURE_DEF = "signature_def"  # the one metadata field TF Serving (and mlcli) answers
MLCLI_FIELD = "mlcli"  # mlcli's own: task, target, classes and threshold, as a Struct

# each dtype's NumPy type, and the repeated field of TensorProto that holds its values when
# tensor_content is empty
_VALUE_FIELDS = {
    "DT_FLOAT": (np.float32, "float_val"),
    "DT_DOUBLE": (np.float64, "double_val"),
    "DT_INT32": (np.int32, "int_val"),
    "DT_INT64": (np.int64, "int64_val"),
    "DT_STRING": (object, "string_val"),
    "DT_BOOL": (np.bool_, "bool_val"),
}
_ACCEPTED = {
    "float32": ("DT_FLOAT", "DT_DOUBLE", "DT_INT32", "DT_INT64"),
    "int64": ("DT_INT64", "DT_INT32", "DT_FLOAT", "DT_DOUBLE"),
    "string": ("DT_STRING", "DT_BOOL", "DT_INT32", "DT_INT64"),
}


def _protos() -> tuple[Any, Any, Any]:
    """TensorFlow's `types_pb2`, `tensor_pb2` and `tensor_shape_pb2` (TensorFlow is imported
    quietly first: the protos import it)."""
    import_tensorflow()
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    return types_pb2, tensor_pb2, tensor_shape_pb2


def _rows(column: str, tensor: Any) -> int:
    """The rows of a `[rows]` or `[rows, 1]` tensor, read from its shape alone."""
    dims = [dim.size for dim in tensor.tensor_shape.dim]
    if tensor.tensor_shape.unknown_rank or not (len(dims) == 1 or dims[1:] == [1]):
        raise BadRequestError(f"input {column!r}: expected shape [rows] or [rows, 1], found {dims}")
    if dims[0] < 0:
        raise BadRequestError(f"input {column!r}: expected a number of rows, found {dims[0]}")
    return dims[0]


def _values(column: str, tensor: Any, rows: int, dtype_name: str) -> np.ndarray:
    """The tensor's values as a flat array, once their count is checked against `rows`."""
    numpy_type, field = _VALUE_FIELDS[dtype_name]
    content = tensor.tensor_content
    if content and numpy_type is not object:
        width = np.dtype(numpy_type).itemsize
        count = len(content) // width if len(content) % width == 0 else -1
    else:
        count = len(getattr(tensor, field))
    if count != rows:
        raise BadRequestError(
            f"input {column!r}: the shape says {rows} values, the tensor holds "
            f"{count if count >= 0 else 'a partial number of'}; expected one value per row"
        )
    if content and numpy_type is not object:
        return np.frombuffer(content, numpy_type)
    return np.array(getattr(tensor, field), numpy_type)


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _wrong(column: str, row: int, value: Any, expected: str) -> BadRequestError:
    shown = repr(value.item() if isinstance(value, np.generic) else value)
    return BadRequestError(f"input {column!r}, row {row}: expected {expected}, found {shown[:40]}")


def _floats(column: str, values: np.ndarray) -> np.ndarray:
    as_double = values.astype(np.float64)
    beyond = np.abs(as_double) > _FLOAT32_MAX  # NaN compares false: a missing value
    if beyond.any():
        row = _first(beyond)
        raise _wrong(
            column,
            row,
            values[row],
            f"a finite number within float32's range (±{_FLOAT32_MAX:.6g}); NaN when missing",
        )
    return as_double.astype(np.float32)


def _integers(column: str, values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        whole = np.isfinite(values) & (np.floor(values) == values) & (np.abs(values) < _INT64_LIMIT)
        if not whole.all():
            row = _first(~whole)
            raise _wrong(column, row, values[row], "an integer")
    return values.astype(np.int64)


def _strings(column: str, values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "b":  # as Arrow writes booleans read from a CSV
        return np.where(values, "true", "false").astype(object)
    if values.dtype.kind in "iu":
        return values.astype(str).astype(object)
    texts = np.empty(len(values), object)
    for row, value in enumerate(values):
        try:
            texts[row] = value.decode("utf-8")
        except UnicodeDecodeError as error:
            raise _wrong(column, row, value, f"UTF-8 text ({error.reason})") from None
    return texts


_CONVERTERS = {"float32": _floats, "int64": _integers, "string": _strings}


def _listed(names: Iterable[str], limit: int = 10) -> str:
    names = sorted(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(repr(name) for name in names[:limit]) + more


def read_inputs(
    inputs: Mapping[str, Any], signature: ServingSignature, *, max_rows: int
) -> PredictRequest:
    """The columns of a `PredictRequest`'s inputs, checked against the signature.

    Raises:
        BadRequestError: a missing column, a wrong dtype or shape, values that do not fill
            the shape, a value the column cannot take (column and row named), differing
            row counts, or no rows.
        PayloadTooLargeError: more than `max_rows` rows (read from the shapes, before any
            value is converted).
    """
    types_pb2 = _protos()[0]
    tensors: dict[str, Any] = {}
    for column in signature.inputs:
        for key in (column, signature.names[column]):
            if key in inputs:
                tensors[column] = inputs[key]
                break
    missing = [column for column in signature.inputs if column not in tensors]
    if missing:
        raise BadRequestError(
            f"the request lacks input(s) {_listed(missing)}; the model takes every input of "
            "its metadata, one tensor per column"
        )
    rows = {column: _rows(column, tensor) for column, tensor in tensors.items()}
    if len(set(rows.values())) > 1:
        shown = ", ".join(f"{name!r}: {count}" for name, count in list(rows.items())[:10])
        raise BadRequestError(f"the inputs differ in rows ({shown}); expected one row count")
    count = next(iter(rows.values()), 0)
    if count > max_rows:
        raise PayloadTooLargeError(
            f"the request has {count} rows, the limit is {max_rows} (--max-rows); "
            "split it into smaller requests"
        )
    if count == 0:
        raise BadRequestError("the batch is empty: send at least one row")
    columns = {}
    for column, dtype in signature.inputs.items():
        tensor = tensors[column]
        dtype_name = types_pb2.DataType.Name(tensor.dtype)
        if dtype_name not in _ACCEPTED[dtype]:
            raise BadRequestError(
                f"input {column!r}: expected dtype {' or '.join(_ACCEPTED[dtype])}, "
                f"found {dtype_name}"
            )
        values = _values(column, tensor, count, dtype_name)
        columns[column] = _CONVERTERS[dtype](column, values).reshape(-1, 1)
    return PredictRequest(columns=columns, rows=count, columnar=True)


def _tensor_proto(values: np.ndarray) -> Any:
    """`values` (float32 numbers or text) as `tf.make_tensor_proto` writes them."""
    types_pb2, tensor_pb2, tensor_shape_pb2 = _protos()
    dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in values.shape]
    shape = tensor_shape_pb2.TensorShapeProto(dim=dims)
    if values.dtype == object:
        return tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING,
            tensor_shape=shape,
            string_val=[str(value).encode("utf-8") for value in values.reshape(-1)],
        )
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT,
        tensor_shape=shape,
        tensor_content=np.ascontiguousarray(values, np.float32).tobytes(),
    )


def write_outputs(named: Mapping[str, np.ndarray], output_filter: Iterable[str]) -> dict[str, Any]:
    """The signature's outputs as `TensorProto`s: those `output_filter` names, or all.

    Raises `BadRequestError` for a name in `output_filter` that the signature lacks.
    """
    wanted = list(output_filter) or list(named)
    unknown = [name for name in wanted if name not in named]
    if unknown:
        raise BadRequestError(
            f"output_filter names {_listed(unknown)}; the signature's outputs are {_listed(named)}"
        )
    return {name: _tensor_proto(named[name]) for name in wanted}


def metadata_fields(
    name: str, version: str, signature: ServingSignature, fields: Iterable[str]
) -> dict[str, Any]:
    """`GetModelMetadata`'s answer per field, each a message to pack into an `Any`: the
    `signature_def` map as the REST metadata shows it, and mlcli's own description (`mlcli`).

    Raises `BadRequestError` for no field or an unknown one (as TF Serving does).
    """
    from google.protobuf import json_format, struct_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2

    fields = list(fields)
    if not fields:
        raise BadRequestError(
            f"metadata_field is empty; expected {SIGNATURE_DEF!r} (or {MLCLI_FIELD!r})"
        )
    described = model_metadata(name, version, signature)["metadata"]
    answers: dict[str, Any] = {}
    for field in fields:
        if field == SIGNATURE_DEF:
            answers[field] = json_format.ParseDict(
                described[SIGNATURE_DEF], get_model_metadata_pb2.SignatureDefMap()
            )
        elif field == MLCLI_FIELD:
            answers[field] = json_format.ParseDict(described[MLCLI_FIELD], struct_pb2.Struct())
        else:
            raise BadRequestError(
                f"metadata_field {field!r} is not supported; expected {SIGNATURE_DEF!r} "
                f"(or {MLCLI_FIELD!r})"
            )
    return answers


def check_signature_name(signature_name: str) -> None:
    """Raises `BadRequestError` unless the request names the one signature (or none)."""
    if signature_name not in ("", SIGNATURE_KEY):
        raise BadRequestError(
            f"signature_name {signature_name!r}: the only one is {SIGNATURE_KEY!r}"
        )
