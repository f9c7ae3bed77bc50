"""The RPCs of `serving.grpc`: TF Serving's `PredictionService` and `ModelService`.

Each method checks the request's `model_spec` against the served model, reads and writes the
messages with `serving.tensors`, and raises `RpcError` or `BadRequestError`, which
`GrpcServer.observed` answers with a gRPC status code, logs and counts. This module imports
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
    from mlcli.serving.batching import Batcher
    from mlcli.serving.metrics import ServerMetrics
    from mlcli.serving.servables import Servable

PREDICTION_SERVICE = "/tensorflow.serving.PredictionService/"
MODEL_SERVICE = "/tensorflow.serving.ModelService/"
_UNIMPLEMENTED = "mlcli serves Predict, GetModelMetadata and GetModelStatus"


class GrpcServer(Protocol):
    """What the RPCs use of `serving.grpc.GrpcServer` (named here, so that the two modules do
    not import each other)."""

    servable: Servable
    batcher: Batcher
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


def _check_model(server: GrpcServer, spec: Any) -> None:
    """Raises `RpcError` (NOT_FOUND) unless `spec` names the served model and version."""
    served = server.servable
    if spec.name != served.name:
        raise RpcError(
            "NOT_FOUND", f"no model named {spec.name!r}; this server serves {served.name!r}"
        )
    if spec.HasField("version") and str(spec.version.value) != served.version:
        raise RpcError(
            "NOT_FOUND",
            f"model {spec.name!r} has no version {spec.version.value}; "
            f"this server serves version {served.version}",
        )
    if spec.version_label:
        raise RpcError(
            "NOT_FOUND",
            f"model {spec.name!r} has no version label {spec.version_label!r}; "
            f"ask for version {served.version} or leave the version out",
        )


def _model_spec(server: GrpcServer, *, signature_name: str = "") -> Any:
    spec = model_pb2.ModelSpec(name=server.servable.name, signature_name=signature_name)
    if server.servable.version.isdigit():
        spec.version.value = int(server.servable.version)
    return spec


async def _model_outputs(server: GrpcServer, columns: dict[str, np.ndarray], rows: int) -> Any:
    """The model's outputs for `rows` rows, through the REST app's batcher."""
    try:
        return await server.batcher.submit(columns, rows=rows)
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
        _check_model(server, request.model_spec)
        check_signature_name(request.model_spec.signature_name)
        with server.batcher.arriving():
            parsed = read_inputs(
                request.inputs, server.servable.signature, max_rows=server.max_rows
            )
        outputs = await _model_outputs(server, parsed.columns, parsed.rows)
        named = signature_outputs(outputs, server.servable.signature)
        tensors = write_outputs(named, request.output_filter)
        if server.metrics is not None:
            served = server.servable
            server.metrics.observe_predicted(served.name, served.version, parsed.rows)
        response = predict_pb2.PredictResponse(
            model_spec=_model_spec(server, signature_name=SIGNATURE_KEY)
        )
        for name, tensor in tensors.items():
            response.outputs[name].CopyFrom(tensor)
        return response

    async def _metadata(self, request: Any, context: Any) -> Any:
        server = self.server
        _check_model(server, request.model_spec)
        served = server.servable
        fields = metadata_fields(
            served.name, served.version, served.signature, request.metadata_field
        )
        response = get_model_metadata_pb2.GetModelMetadataResponse(model_spec=_model_spec(server))
        for field, message in fields.items():
            response.metadata[field].Pack(message)
        return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """`GetModelStatus`: the served version, AVAILABLE; HandleReloadConfigRequest is
    UNIMPLEMENTED (the server serves what it was started with)."""

    def __init__(self, server: GrpcServer) -> None:
        self.GetModelStatus = server.observed(MODEL_SERVICE + "GetModelStatus", self._status)
        self.HandleReloadConfigRequest = _unimplemented(
            server, MODEL_SERVICE + "HandleReloadConfigRequest"
        )
        self.server = server

    async def _status(self, request: Any, context: Any) -> Any:
        server = self.server
        _check_model(server, request.model_spec)
        status = get_model_status_pb2.ModelVersionStatus(
            state=get_model_status_pb2.ModelVersionStatus.AVAILABLE
        )
        if server.servable.version.isdigit():
            status.version = int(server.servable.version)
        return get_model_status_pb2.GetModelStatusResponse(model_version_status=[status])
