"""The JSON bodies of TensorFlow Serving's REST API, read into model columns and written back.

A predict request holds rows, `{"instances": [{column: value, ...}, ...]}`, or columns,
`{"inputs": {column: [value, ...]}}`; a value may also come as a one-element list, as TF
Serving clients send a (batch, 1) input. `null` is a missing value in any column; a numeric
column also reads `NaN` as missing (as the model does), while infinities and `NaN` in other
columns are refused. Columns the model does not take are ignored. Responses follow the
request: rows get `{"predictions": [...]}`, columns `{"outputs": ...}`; a classifier gives
`label` (the user's class value, as a string) and `probabilities` (one per class, in the
metadata's `classes` order), a regression model the predicted value itself: what TF Serving
answers for the signature of `mlcli export --format saved_model`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlcli.exporting.signature import (
    LABEL,
    PREDICTION,
    PROBABILITIES,
    SIGNATURE_KEY,
    ServingSignature,
)
from mlcli.inference.labels import label_texts
from mlcli.preprocessing.inputs import MISSING_VALUES

_TF_DTYPES = {"float32": "DT_FLOAT", "int64": "DT_INT64", "string": "DT_STRING"}
_SHOWN = 40
_LISTED = 10
_FLOAT32_MAX = float(np.finfo(np.float32).max)
DEFAULT_MAX_ROWS = 10_000


class BadRequestError(Exception):
    """A request the server answers with `status` and `{"error": message}`."""

    status = 400


class PayloadTooLargeError(BadRequestError):
    """A body over the server's limit (413)."""

    status = 413


@dataclass
class PredictRequest:
    """A decoded predict request: one (rows, 1) array per input column."""

    columns: dict[str, np.ndarray]
    rows: int
    columnar: bool


def _show(value: Any) -> str:
    text = json.dumps(value, allow_nan=True, default=str)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _wrong(column: str, row: int, value: Any, expected: str) -> BadRequestError:
    return BadRequestError(
        f"column {column!r}, row {row}: expected {expected}, found {_show(value)}"
    )


def _floats(column: str, values: Sequence[Any]) -> np.ndarray:
    array = np.empty(len(values), np.float32)
    for row, value in enumerate(values):
        kind = type(value)
        if kind is list and len(value) == 1:
            value, kind = value[0], type(value[0])
        if kind is float or kind is int:
            # checked before the cast, exactly (Python compares an int with a float without
            # rounding): numpy would turn 1e39 into inf, with a warning; NaN compares false,
            # and is a missing value
            if abs(value) > _FLOAT32_MAX:
                raise _wrong(
                    column,
                    row,
                    value,
                    f"a finite number within float32's range (±{_FLOAT32_MAX:.6g}); "
                    "null when missing",
                )
            array[row] = value
        elif value is None:
            array[row] = MISSING_VALUES["float32"]
        else:
            raise _wrong(column, row, value, "a number or null")
    return array


def _integers(column: str, values: Sequence[Any]) -> np.ndarray:
    array = np.empty(len(values), np.int64)
    for row, value in enumerate(values):
        kind = type(value)
        if kind is list and len(value) == 1:
            value, kind = value[0], type(value[0])
        if kind is float and value.is_integer():
            value, kind = int(value), int
        if kind is int:
            try:
                array[row] = value
            except OverflowError:
                raise _wrong(column, row, value, "a 64-bit integer") from None
        elif value is None:
            array[row] = MISSING_VALUES["int64"]
        else:
            raise _wrong(column, row, value, "an integer or null")
    return array


def _strings(column: str, values: Sequence[Any]) -> np.ndarray:
    array = np.empty(len(values), object)
    for row, value in enumerate(values):
        kind = type(value)
        if kind is list and len(value) == 1:
            value, kind = value[0], type(value[0])
        if kind is str:
            if not value.isascii():  # the model takes UTF-8: a lone surrogate cannot be
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError as error:
                    raise _wrong(
                        column, row, value, f"text that encodes to UTF-8 ({error.reason})"
                    ) from None
            array[row] = value
        elif value is None:
            array[row] = MISSING_VALUES["string"]
        elif kind is bool:  # as Arrow writes booleans read from a CSV
            array[row] = "true" if value else "false"
        elif kind is int:
            array[row] = str(value)
        else:
            raise _wrong(column, row, value, "a string or null")
    return array


_CONVERTERS = {"float32": _floats, "int64": _integers, "string": _strings}


def column_values(dtype: str, column: str, values: Sequence[Any]) -> np.ndarray:
    """JSON values of one column as a 1-D array of the model's `dtype`, by the rules above
    (`null` missing, one-element lists unwrapped, float32's range); also the Open Inference
    Protocol's JSON tensors' (`serving.v2_tensors`).

    Raises `BadRequestError` naming the column, the row, the value and what was expected.
    """
    return _CONVERTERS[dtype](column, values)


def _missing_message(missing: list[str], where: str) -> str:
    shown = ", ".join(repr(name) for name in missing[:_LISTED])
    more = f" and {len(missing) - _LISTED} more" if len(missing) > _LISTED else ""
    return f"{where} lacks column(s) {shown}{more}; the model takes every input of its metadata"


def _rows(instances: Any, signature: ServingSignature) -> dict[str, np.ndarray]:
    if type(instances) is not list:
        raise BadRequestError(
            f'"instances" must be a list of row objects, found {_show(instances)}'
        )
    for index, row in enumerate(instances):
        if type(row) is not dict:
            raise BadRequestError(
                f"instances[{index}] must be an object of column values, found {_show(row)}"
            )
    try:
        values = {name: [row[name] for row in instances] for name in signature.inputs}
    except KeyError:
        index, row = next(
            (i, r) for i, r in enumerate(instances) if signature.inputs.keys() - r.keys()
        )
        missing = sorted(signature.inputs.keys() - row.keys())
        raise BadRequestError(_missing_message(missing, f"instances[{index}]")) from None
    return {
        name: _CONVERTERS[dtype](name, values[name]).reshape(-1, 1)
        for name, dtype in signature.inputs.items()
    }


def _columns(inputs: Any, signature: ServingSignature) -> dict[str, np.ndarray]:
    if type(inputs) is not dict:
        raise BadRequestError(
            f'"inputs" must be an object of column value lists, found {_show(inputs)}'
        )
    missing = sorted(name for name in signature.inputs if name not in inputs)
    if missing:
        raise BadRequestError(_missing_message(missing, '"inputs"'))
    lengths: dict[str, int] = {}
    for name in signature.inputs:
        if type(inputs[name]) is not list:
            raise BadRequestError(
                f"inputs[{name!r}] must be a list of values, found {_show(inputs[name])}"
            )
        lengths[name] = len(inputs[name])
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{name!r}: {count}" for name, count in list(lengths.items())[:_LISTED])
        raise BadRequestError(f'"inputs" columns differ in length ({shown}); expected one length')
    return {
        name: _CONVERTERS[dtype](name, inputs[name]).reshape(-1, 1)
        for name, dtype in signature.inputs.items()
    }


def _check_row_count(payload: dict[str, Any], max_rows: int) -> None:
    """Refuses (413) more than `max_rows` rows before any value is converted."""
    if "instances" in payload:
        found = payload["instances"]
        count = len(found) if type(found) is list else 0
    else:
        found = payload["inputs"]
        lists = found.values() if type(found) is dict else ()
        count = max((len(values) for values in lists if type(values) is list), default=0)
    if count > max_rows:
        raise PayloadTooLargeError(
            f"the request has {count} rows, the limit is {max_rows} (--max-rows); "
            "split it into smaller requests"
        )


def parse_predict(
    body: bytes, signature: ServingSignature, *, max_rows: int = DEFAULT_MAX_ROWS
) -> PredictRequest:
    """The columns of a predict request's JSON body, checked against the signature.

    Raises:
        BadRequestError: the body is not a predict request the model can take: each
            message names the column and row, the value found and what was expected.
        PayloadTooLargeError: it holds more than `max_rows` rows.
    """
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as error:
        raise BadRequestError(f"the body is not valid JSON: {error}") from None
    if type(payload) is not dict:
        raise BadRequestError(
            f'expected a JSON object with "instances" or "inputs", found {_show(payload)}'
        )
    name = payload.get("signature_name", SIGNATURE_KEY)
    if name != SIGNATURE_KEY:
        raise BadRequestError(f"signature_name {_show(name)}: the only one is {SIGNATURE_KEY!r}")
    has_rows, has_columns = "instances" in payload, "inputs" in payload
    if has_rows == has_columns:
        found = "both" if has_rows else "neither"
        raise BadRequestError(
            f'expected exactly one of "instances" (rows) or "inputs" (columns), found {found}'
        )
    _check_row_count(payload, max_rows)
    if has_rows:
        columns = _rows(payload["instances"], signature)
    else:
        columns = _columns(payload["inputs"], signature)
    rows = len(next(iter(columns.values()))) if columns else 0
    if rows == 0:
        raise BadRequestError("the batch is empty: send at least one row")
    return PredictRequest(columns=columns, rows=rows, columnar=has_columns)


def signature_outputs(outputs: np.ndarray, signature: ServingSignature) -> dict[str, np.ndarray]:
    """The model's outputs for its rows as the signature names them: a classifier's `label`
    (text, as the exported SavedModel's `label` output and so TF Serving give it) and
    `probabilities` (rows, classes), a regression model's `prediction` (rows,)."""
    target = signature.target
    if target.task == "regression":
        return {PREDICTION: outputs.reshape(-1)}
    labels = label_texts(outputs, target, threshold=signature.threshold)
    if target.task == "binary":
        outputs = np.concatenate([1.0 - outputs, outputs], axis=1)
    return {LABEL: np.array(labels, dtype=object), PROBABILITIES: outputs}


def predict_response(outputs: np.ndarray, signature: ServingSignature, *, columnar: bool) -> dict:
    """The body answering a predict request, from the model's outputs for its rows."""
    named = signature_outputs(outputs, signature)
    if PREDICTION in named:
        values = named[PREDICTION].tolist()
        return {"outputs": values} if columnar else {"predictions": values}
    labels, probabilities = named[LABEL].tolist(), named[PROBABILITIES].tolist()
    if columnar:
        return {"outputs": {"label": labels, "probabilities": probabilities}}
    return {
        "predictions": [
            {"label": label, "probabilities": row}
            for label, row in zip(labels, probabilities, strict=True)
        ]
    }


def _tensor(dtype: str, dims: Sequence[int], name: str) -> dict[str, Any]:
    return {
        "dtype": _TF_DTYPES[dtype],
        "tensor_shape": {
            "dim": [{"size": str(size), "name": ""} for size in dims],
            "unknown_rank": False,
        },
        "name": name,
    }


def model_metadata(name: str, version: str, signature: ServingSignature) -> dict[str, Any]:
    """`GET /v1/models/<name>/metadata`: the signature in TF Serving's shape, plus classes."""
    inputs = {
        column: _tensor(dtype, [-1], f"{column}:0") for column, dtype in signature.inputs.items()
    }
    target = signature.target
    outputs = {  # sorted, as TF Serving lists a SignatureDef's outputs
        name: _tensor(
            spec["dtype"], [-1 if size is None else size for size in spec["shape"]], f"{name}:0"
        )
        for name, spec in sorted(signature.outputs().items())
    }
    signature_def = {
        "inputs": inputs,
        "outputs": outputs,
        "method_name": "tensorflow/serving/predict",
    }
    return {
        "model_spec": {"name": name, "signature_name": "", "version": version},
        "metadata": {
            "signature_def": {"signature_def": {SIGNATURE_KEY: signature_def}},
            "mlcli": {
                "task": target.task,
                "target": target.column,
                "classes": target.classes,
                **({"threshold": signature.threshold} if target.task == "binary" else {}),
            },
        },
    }
