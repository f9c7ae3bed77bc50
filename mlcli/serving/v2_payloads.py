"""The bodies of the Open Inference Protocol's (v2) infer route: a request read into model
columns, and the answer written back, in JSON or with the binary tensor data extension.

A request names one input tensor per column (`name` is the column's own name), of shape
`[rows]` or `[rows, 1]`; their values are `serving.v2_tensors`'s. An input whose
`parameters.binary_data_size` is given takes that many raw bytes after the JSON, in the order of
the inputs (the request's `Inference-Header-Content-Length` header gives the JSON's own length).
Inputs the model does not take are ignored, as in TF Serving's API. The request's `outputs`
picks some of the model's outputs, and an output's `parameters.binary_data` (or the request's
`binary_data_output`) asks for it as raw bytes after the answer's JSON, as tritonclient does by
default; `id` comes back in the answer. A body compressed as tritonclient's
`request_compression_algorithm` does (`Content-Encoding: gzip` or `deflate`) is inflated within
the server's body limit.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlcli.exporting.signature import ServingSignature
from mlcli.serving.payloads import BadRequestError, PayloadTooLargeError
from mlcli.serving.v2_tensors import (
    ACCEPTED,
    DATATYPES,
    binary_values,
    json_values,
    output_datatypes,
    output_tensors,
    serialized,
)

HEADER_LENGTH = "inference-header-content-length"
_SHOWN = 40


@dataclass(frozen=True)
class RequestedOutput:
    """An output the answer holds, and whether as raw bytes after the JSON."""

    name: str
    binary: bool


@dataclass
class InferRequest:
    """A decoded infer request: one (rows, 1) array per model column, and what to answer."""

    columns: dict[str, np.ndarray]
    rows: int
    outputs: list[RequestedOutput]
    id: str | None = None


def _show(value: Any) -> str:
    text = json.dumps(value, allow_nan=True, default=str)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _header_length(value: str | None, size: int) -> int:
    if value is None:
        return size
    if not value.isdigit() or int(value) > size:
        raise BadRequestError(
            f"Inference-Header-Content-Length {value!r}: expected a number of bytes up to the "
            f"body's {size}"
        )
    return int(value)


def _object(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if type(value) is not dict:
        raise BadRequestError(f"{where} must be an object, found {_show(value)}")
    return value


def _binary_size(tensor: dict[str, Any], where: str) -> int | None:
    parameters = _object(tensor.get("parameters"), f"{where}.parameters")
    for unsupported in ("shared_memory_region", "classification"):
        if unsupported in parameters:
            raise BadRequestError(f"{where}.parameters.{unsupported}: not supported by mlcli serve")
    size = parameters.get("binary_data_size")
    if size is None:
        return None
    if type(size) is not int or size < 0:
        raise BadRequestError(
            f"{where}.parameters.binary_data_size: expected a number of bytes, found {_show(size)}"
        )
    return size


def _rows_of(name: str, tensor: dict[str, Any]) -> int:
    shape = tensor.get("shape")
    if (
        type(shape) is not list
        or not 1 <= len(shape) <= 2
        or any(type(size) is not int or size < 0 for size in shape)
        or (len(shape) == 2 and shape[1] != 1)
    ):
        raise BadRequestError(
            f"input {name!r}: shape {_show(shape)}, expected [rows] or [rows, 1] (one value a row)"
        )
    return int(shape[0])


def _inputs(
    payload: dict[str, Any], binary: bytes
) -> dict[str, tuple[dict[str, Any], bytes | None]]:
    """Each named input tensor and its raw bytes (None when its values are in the JSON)."""
    inputs = payload.get("inputs")
    if type(inputs) is not list or not inputs:
        raise BadRequestError(f'"inputs" must be a list of input tensors, found {_show(inputs)}')
    found: dict[str, tuple[dict[str, Any], bytes | None]] = {}
    offset = 0
    for index, tensor in enumerate(inputs):
        where = f"inputs[{index}]"
        if type(tensor) is not dict or type(tensor.get("name")) is not str:
            raise BadRequestError(
                f"{where} must be a tensor object with a name, found {_show(tensor)}"
            )
        name = tensor["name"]
        if name in found:
            raise BadRequestError(f"{where}: input {name!r} is given twice")
        size = _binary_size(tensor, where)
        if size is None:
            if "data" not in tensor:
                raise BadRequestError(
                    f"input {name!r} has neither data nor parameters.binary_data_size"
                )
            found[name] = (tensor, None)
        else:
            if offset + size > len(binary):
                raise BadRequestError(
                    f"input {name!r}: binary_data_size {size} passes the end of the binary data "
                    f"({len(binary)} bytes after the JSON, {offset} used before it)"
                )
            found[name] = (tensor, binary[offset : offset + size])
            offset += size
    if offset != len(binary):
        raise BadRequestError(
            f"the body has {len(binary)} bytes after the JSON, the inputs' binary_data_size "
            f"add up to {offset}"
        )
    return found


def _outputs(payload: dict[str, Any], signature: ServingSignature) -> list[RequestedOutput]:
    parameters = _object(payload.get("parameters"), '"parameters"')
    binary_default = parameters.get("binary_data_output", False)
    if type(binary_default) is not bool:
        raise BadRequestError(
            f"parameters.binary_data_output: expected true or false, found {_show(binary_default)}"
        )
    known = output_datatypes(signature)
    requested = payload.get("outputs")
    if requested is None:
        return [RequestedOutput(name, binary_default) for name in known]
    if type(requested) is not list:
        raise BadRequestError(
            f'"outputs" must be a list of output objects, found {_show(requested)}'
        )
    chosen = []
    for index, output in enumerate(requested):
        where = f"outputs[{index}]"
        if type(output) is not dict or output.get("name") not in known:
            found = output.get("name") if type(output) is dict else output
            raise BadRequestError(
                f"{where}: no output named {_show(found)}; the model answers {list(known)}"
            )
        parameters = _object(output.get("parameters"), f"{where}.parameters")
        for unsupported in ("shared_memory_region", "classification"):
            if unsupported in parameters:
                raise BadRequestError(
                    f"{where}.parameters.{unsupported}: not supported by mlcli serve"
                )
        binary = parameters.get("binary_data", binary_default)
        if type(binary) is not bool:
            raise BadRequestError(
                f"{where}.parameters.binary_data: expected true or false, found {_show(binary)}"
            )
        chosen.append(RequestedOutput(output["name"], binary))
    return chosen


_WINDOW_BITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def decompressed(body: bytes, encoding: str | None, *, limit: int) -> bytes:
    """`body` inflated as its `Content-Encoding` says (gzip, deflate or none), refused with 413
    as soon as it passes `limit` bytes (so a small bomb cannot fill the memory)."""
    if encoding is None or encoding.strip().lower() in ("", "identity"):
        return body
    name = encoding.strip().lower()
    if name not in _WINDOW_BITS:
        raise BadRequestError(
            f"Content-Encoding {encoding!r}: expected gzip, deflate or none (identity)"
        )
    inflater = zlib.decompressobj(wbits=_WINDOW_BITS[name])
    try:
        inflated = inflater.decompress(body, limit + 1)
    except zlib.error as error:
        raise BadRequestError(f"the body is not valid {name} data ({error})") from None
    if len(inflated) > limit:
        raise PayloadTooLargeError(
            f"the {name} body inflates past the limit of {limit} bytes (--max-body-bytes)"
        )
    if not inflater.eof:
        raise BadRequestError(f"the {name} body ends before its compressed data does")
    return inflated


def parse_infer(
    body: bytes,
    signature: ServingSignature,
    *,
    header_length: str | None = None,
    max_rows: int,
) -> InferRequest:
    """The columns of an infer request, checked against the signature.

    Args:
        body: the request's body: JSON, then any binary tensor data.
        signature: the model's inputs and outputs.
        header_length: the `Inference-Header-Content-Length` header, when sent.
        max_rows: the most rows a request may hold (413 above).

    Raises:
        BadRequestError: not an infer request the model can take; the message names the input
            (column), the row, the value found and what was expected.
        PayloadTooLargeError: more than `max_rows` rows.
    """
    split = _header_length(header_length, len(body))
    try:
        payload = json.loads(body[:split])
    except (ValueError, RecursionError) as error:
        raise BadRequestError(f"the inference header is not valid JSON: {error}") from None
    if type(payload) is not dict:
        raise BadRequestError(f'expected a JSON object with "inputs", found {_show(payload)}')
    identifier = payload.get("id")
    if identifier is not None and type(identifier) is not str:
        raise BadRequestError(f'"id" must be a string, found {_show(identifier)}')
    tensors = _inputs(payload, body[split:])
    outputs = _outputs(payload, signature)
    missing = [name for name in signature.inputs if name not in tensors]
    if missing:
        shown = ", ".join(repr(name) for name in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise BadRequestError(
            f"the request lacks input(s) {shown}{more}; the model takes one input per column "
            "of its metadata"
        )
    lengths = {name: _rows_of(name, tensors[name][0]) for name in signature.inputs}
    rows = max(lengths.values())
    if rows > max_rows:
        raise PayloadTooLargeError(
            f"the request has {rows} rows, the limit is {max_rows} (--max-rows); "
            "split it into smaller requests"
        )
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{name!r}: {count}" for name, count in list(lengths.items())[:10])
        raise BadRequestError(f"the inputs differ in rows ({shown}); expected one number of rows")
    if rows == 0:
        raise BadRequestError("the batch is empty: send at least one row")
    columns = {}
    for name, dtype in signature.inputs.items():
        tensor, raw = tensors[name]
        datatype = tensor.get("datatype")
        if datatype not in ACCEPTED[dtype]:
            raise BadRequestError(
                f"input {name!r}: datatype {_show(datatype)}, expected one of "
                f"{', '.join(ACCEPTED[dtype])} (the model takes {DATATYPES[dtype]})"
            )
        if raw is None:
            values = json_values(name, dtype, datatype, tensor["data"], rows)
        else:
            values = binary_values(name, dtype, datatype, raw, rows)
        columns[name] = values.reshape(-1, 1)
    return InferRequest(columns=columns, rows=rows, outputs=outputs, id=identifier)


def infer_response(
    outputs: np.ndarray,
    signature: ServingSignature,
    request: InferRequest,
    *,
    model_name: str,
    model_version: str,
) -> tuple[bytes, dict[str, str]]:
    """The body answering an infer request, and its headers (the content type, and the
    `Inference-Header-Content-Length` when an output goes as raw bytes)."""
    tensors = output_tensors(outputs, signature)
    datatypes = output_datatypes(signature)
    answered, blobs = [], []
    for output in request.outputs:
        tensor = tensors[output.name]
        entry: dict[str, Any] = {
            "name": output.name,
            "datatype": datatypes[output.name][0],
            "shape": list(tensor.shape),
        }
        if output.binary:
            blob = serialized(tensor)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = tensor.reshape(-1).tolist()
        answered.append(entry)
    header: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        header["id"] = request.id
    header["outputs"] = answered
    content = json.dumps(header, separators=(",", ":")).encode()
    if not blobs:
        return content, {"content-type": "application/json"}
    headers = {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(content))}
    return content + b"".join(blobs), headers
