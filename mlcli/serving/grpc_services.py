"""The RPCs of `serving.grpc`: TF Serving's `PredictionService` and `ModelService`.

Each method asks the server's live versions (`serving.versions`) for the version the request's
`model_spec` names (the newest available one without a version; an unknown model or version is
`ModelNotFoundError`, NOT_FOUND), holds it until the answer is written (`acquire`), reads and
writes the messages with `serving.tensors`, and raises `RpcError` or `BadRequestError`, which
`GrpcServer.observed` answers with a gRPC status code, logs and counts. A version swapped in is
answered at once, as over REST; a request pinning a version gets that version. This module imports
`tensorflow_serving`'s generated code (and so TensorFlow): `GrpcServer.start` imports it, after
TensorFlow was imported quietly.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from mlcli.exporting.signature import SIGNATURE_KEY
from mlcli.serving.batching import QueueFullError
from mlcli.serving.payloads import signature_outputs
from mlcli.serving.tensors import (
    check_signature_name,
    metadata_fields,
    read_inputs,
    write_outputs,
)

if TYPE_CHECKING:
    from mlcli.reporting import Reporter
    from mlcli.serving.metrics import ServerMetrics
    from mlcli.serving.versions import LiveVersion, ModelVersions

PREDICTION_SERVICE = "/tensorflow.serving.PredictionService/"
MODEL_SERVICE = "/tensorflow.serving.ModelService/"
_UNIMPLEMENTED = "mlcli serves Predict, GetModelMetadata and GetModelStatus"


class GrpcServer(Protocol):
    """What the RPCs use of `serving.grpc.GrpcServer` (named here, so that the two modules do
    not import each other)."""

    versions: ModelVersions
    max_rows: int
    reporter: Reporter
    metrics: ServerMetrics | None

    def observed(
        self, method: str, handler: Callable[[Any, Any], Awaitable[Any]]
    ) -> Callable[[Any, Any], Awaitable[Any]]: ...


class RpcError(Exception):
    """A call answered with the gRPC status `code` (its name) and `message`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _requested(spec: Any) -> int | None:
    """The version `spec` pins (None: the newest available one).

    Raises `RpcError` (NOT_FOUND) for a version label: this server has none.
    """
    if spec.version_label:
        raise RpcError(
            "NOT_FOUND",
            f"model {spec.name!r} has no version label {spec.version_label!r}; "
            "ask for a version number or leave the version out",
        )
    return spec.version.value if spec.HasField("version") else None


def _model_spec(name: str, version: str, *, signature_name: str = "") -> Any:
    spec = model_pb2.ModelSpec(name=name, signature_name=signature_name)
    if version.isdigit():
        spec.version.value = int(version)
    return spec


async def _model_outputs(
    server: GrpcServer, live: LiveVersion, columns: dict[str, np.ndarray], rows: int
) -> Any:
    """The outputs of version `live` for `rows` rows, through its batcher (the REST app's)."""
    try:
        return await live.batcher.submit(columns, rows=rows)
    except QueueFullError as error:
        raise RpcError(
            "RESOURCE_EXHAUSTED", f"the server is overloaded: {error}; retry later"
        ) from None
    except Exception as error:  # the model failed: this call fails, the server goes on
        identifier = uuid.uuid4().hex[:16]
        server.reporter.warning(
            f"request {identifier}: the model failed: {type(error).__name__}: {error}"
        )
        raise RpcError(
            "INTERNAL", f"the model failed on this request; the server log names it {identifier}"
        ) from None


def _unimplemented(server: GrpcServer, method: str) -> Any:
    async def refuse(request: Any, context: Any) -> Any:
        raise RpcError("UNIMPLEMENTED", f"{method} is not served: {_UNIMPLEMENTED}")

    return server.observed(method, refuse)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """`Predict` and `GetModelMetadata`; Classify, Regress and MultiInference are UNIMPLEMENTED."""

    def __init__(self, server: GrpcServer) -> None:
        self.Predict = server.observed(PREDICTION_SERVICE + "Predict", self._predict)
        self.GetModelMetadata = server.observed(
            PREDICTION_SERVICE + "GetModelMetadata", self._metadata
        )
        for method in ("Classify", "Regress", "MultiInference"):
            setattr(self, method, _unimplemented(server, PREDICTION_SERVICE + method))
        self.server = server

    async def _predict(self, request: Any, context: Any) -> Any:
        server = self.server
        spec = request.model_spec
        version = _requested(spec)
        with server.versions.acquire(version, name=spec.name) as live:
            served = live.servable
            check_signature_name(spec.signature_name)
            with live.batcher.arriving():
                parsed = read_inputs(request.inputs, served.signature, max_rows=server.max_rows)
            outputs = await _model_outputs(server, live, parsed.columns, parsed.rows)
        named = signature_outputs(outputs, served.signature)
        tensors = write_outputs(named, request.output_filter)
        if server.metrics is not None:
            server.metrics.observe_predicted(served.name, served.version, parsed.rows)
        response = predict_pb2.PredictResponse(
            model_spec=_model_spec(served.name, served.version, signature_name=SIGNATURE_KEY)
        )
        for name, tensor in tensors.items():
            response.outputs[name].CopyFrom(tensor)
        return response

    async def _metadata(self, request: Any, context: Any) -> Any:
        spec = request.model_spec
        served = self.server.versions.get(_requested(spec), name=spec.name)
        fields = metadata_fields(
            served.name, served.version, served.signature, request.metadata_field
        )
        response = get_model_metadata_pb2.GetModelMetadataResponse(
            model_spec=_model_spec(served.name, served.version)
        )
        for field, message in fields.items():
            response.metadata[field].Pack(message)
        return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """`GetModelStatus`: every version the server knows (newest first), or the one asked for,
    in its state (START, LOADING, AVAILABLE, UNLOADING, END; a version that failed to load is
    END with its error); HandleReloadConfigRequest is UNIMPLEMENTED (the server follows its
    base folder instead)."""

    def __init__(self, server: GrpcServer) -> None:
        self.GetModelStatus = server.observed(MODEL_SERVICE + "GetModelStatus", self._status)
        self.HandleReloadConfigRequest = _unimplemented(
            server, MODEL_SERVICE + "HandleReloadConfigRequest"
        )
        self.server = server

    async def _status(self, request: Any, context: Any) -> Any:
        spec = request.model_spec
        entries = self.server.versions.status(_requested(spec), name=spec.name)
        return get_model_status_pb2.GetModelStatusResponse(
            model_version_status=[_version_status(entry) for entry in entries]
        )


def _version_status(entry: dict[str, Any]) -> Any:
    """A `model_version_status` entry (`VersionState.describe`) as TF Serving's message: the
    states and error codes have the same names in both."""
    status = entry["status"]
    return get_model_status_pb2.ModelVersionStatus(
        version=int(entry["version"]),
        state=entry["state"],
        status={"error_code": status["error_code"], "error_message": status["error_message"]},
    )
