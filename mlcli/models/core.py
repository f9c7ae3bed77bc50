"""The network: a core model over encoded features, and the saved model around it.

`build_core` takes the preprocessor's encoded outputs; `compose` puts the preprocessor in
front so that the saved model takes raw column values and returns the head's output:
the positive class's probability (binary), class probabilities (multiclass) or the value
(regression).
"""

from __future__ import annotations

from collections.abc import Mapping

import keras

from mlcli.config.training import ModelConfig
from mlcli.features.schema import FeatureSchema
from mlcli.models.architectures import build_body
from mlcli.preprocessing.inputs import NUMERIC, encoded_input_name
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
) -> keras.Model:
    """The configured network (`model.type`) from encoded features to the task's head."""
    inputs = core_inputs(encoded_shapes)
    x = build_body(schema, config, inputs)
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
    return keyed_model(inputs, output, name="core")


def compose(preprocessor: keras.Model, core: keras.Model, schema: FeatureSchema) -> keras.Model:
    """The saved model: raw columns through the preprocessor into the trained core."""
    inputs = raw_inputs(schema)
    outputs = core(preprocessor(inputs))
    return keyed_model(inputs, outputs, name="mlcli_model")
