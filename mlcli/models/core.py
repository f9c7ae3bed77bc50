"""The network: a core model over encoded features, and the saved model around it.

`build_core` takes the preprocessor's encoded outputs; `compose` puts the preprocessor in
front so that the saved model takes raw column values and returns the head's output:
the positive class's probability (binary), class probabilities (multiclass) or the value
(regression), for an ensemble (`model.ensemble`) the mean over its members; with
`training.calibration`, through a calibration layer fitted on the
validation split (`mlcli.layers.TemperatureScaling`, `PiecewiseLinearCalibration`).
"""

from __future__ import annotations

from collections.abc import Mapping

import keras

from mlcli.config.training import ModelConfig
from mlcli.ensemble_layers import EnsembleHead, MemberMean
from mlcli.features.schema import FeatureSchema
from mlcli.models.architectures import build_body
from mlcli.models.embeddings import BinEdges
from mlcli.preprocessing.inputs import CALIBRATION_LAYER, CORE_MODEL, NUMERIC, encoded_input_name
from mlcli.preprocessing.layers import keyed_model, raw_inputs


def core_inputs(encoded_shapes: Mapping[str, tuple[int, ...]]) -> dict[str, keras.KerasTensor]:
    """Inputs of the core network, keyed by the preprocessor's outputs' names.

    Their Keras names are `encoded_input_name`s: a column's name may hold what Keras cannot.
    """
    inputs = {}
    for name, shape in encoded_shapes.items():
        dtype = "float32" if name == NUMERIC else "int64"
        inputs[name] = keras.Input(shape=shape, dtype=dtype, name=encoded_input_name(name))
    return inputs


def build_core(
    schema: FeatureSchema,
    config: ModelConfig,
    *,
    encoded_shapes: Mapping[str, tuple[int, ...]],
    bin_edges: BinEdges | None = None,
) -> keras.Model:
    """The configured network (`model.type`) from encoded features to the task's head.

    `bin_edges`: piecewise-linear bins fitted on the training split (`model.numeric_embedding.
    binning: tree`), per numeric column in encoded units; None: the schema's quantiles.
    """
    inputs = core_inputs(encoded_shapes)
    x = build_body(schema, config, inputs, bin_edges=bin_edges)
    if getattr(config, "ensemble", 1) > 1:
        return keyed_model(inputs, _ensemble_head(schema, x), name=CORE_MODEL)
    target = schema.target
    # the head computes in float32 under mixed precision (training.precision) too
    if target.task == "binary":
        output = keras.layers.Dense(1, activation="sigmoid", name="probability", dtype="float32")(x)
    elif target.task == "multiclass":
        output = keras.layers.Dense(
            len(target.classes), activation="softmax", name="probabilities", dtype="float32"
        )(x)
    else:
        # the head learns a standardised target; Rescaling puts it back in the user's units
        standard = keras.layers.Dense(1, name="standardized", dtype="float32")(x)
        output = keras.layers.Rescaling(
            target.std, offset=target.mean, name="prediction", dtype="float32"
        )(standard)
    return keyed_model(inputs, output, name=CORE_MODEL)


def _ensemble_head(schema: FeatureSchema, x: keras.KerasTensor) -> keras.KerasTensor:
    """Each member's head on (rows, k, units), then the mean of their outputs (`MemberMean`)."""
    target = schema.target
    if target.task == "binary":
        logits = EnsembleHead(1, name="member_logits", dtype="float32")(x)
        members = keras.layers.Activation("sigmoid", dtype="float32")(logits)
        return MemberMean(name="probability", dtype="float32")(members)
    if target.task == "multiclass":
        logits = EnsembleHead(len(target.classes), name="member_logits", dtype="float32")(x)
        members = keras.layers.Softmax(axis=-1, dtype="float32")(logits)
        return MemberMean(name="probabilities", dtype="float32")(members)
    standard = EnsembleHead(1, name="standardized", dtype="float32")(x)
    members = keras.layers.Rescaling(target.std, offset=target.mean, dtype="float32")(standard)
    return MemberMean(name="prediction", dtype="float32")(members)


def compose(
    preprocessor: keras.Model,
    core: keras.Model,
    schema: FeatureSchema,
    *,
    calibration: keras.layers.Layer | None = None,
) -> keras.Model:
    """The saved model: raw columns through the preprocessor into the trained core, and its
    output through the fitted `calibration` layer (named `calibration`) when there is one."""
    inputs = raw_inputs(schema)
    outputs = core(preprocessor(inputs))
    if calibration is not None:
        outputs = calibration(outputs)
    return keyed_model(inputs, outputs, name="mlcli_model")


def calibrated_core(core: keras.Model, calibration: keras.layers.Layer) -> keras.Model:
    """The core with `calibration` on its output, over the core's own encoded inputs: what
    training evaluates and checks the saved model against when `training.calibration` is set."""
    return keyed_model(core.input, calibration(core.output), name="calibrated_core")


def uncalibrated(model: keras.Model) -> keras.Model | None:
    """The saved model without its calibration layer (the probabilities before calibration),
    or None when the model has none."""
    try:
        layer = model.get_layer(CALIBRATION_LAYER)
    except ValueError:
        return None
    return keyed_model(model.input, layer.input, name="uncalibrated")
