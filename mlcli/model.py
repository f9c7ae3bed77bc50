"""The network: a core MLP over encoded features, and the saved model around it.

`build_core` takes the preprocessor's encoded outputs; `compose` puts the preprocessor in
front so that the saved model takes raw column values and returns the head's output:
the positive class's probability (binary), class probabilities (multiclass) or the value
(regression).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mlcli.config import ModelConfig, TrainingConfig
from mlcli.features import FeatureSchema
from mlcli.preprocessing import CATEGORICAL_PREFIX, NUMERIC, TEXT_PREFIX, raw_inputs, to_tensors


def core_inputs(encoded_shapes: Mapping[str, tuple[int, ...]]) -> dict[str, keras.KerasTensor]:
    """Inputs of the core network, matching the preprocessor's outputs by name."""
    inputs = {}
    for name, shape in encoded_shapes.items():
        dtype = "float32" if name == NUMERIC else "int64"
        inputs[name] = keras.Input(shape=shape, dtype=dtype, name=name)
    return inputs


def _encoded_features(
    schema: FeatureSchema, inputs: Mapping[str, keras.KerasTensor]
) -> list[keras.KerasTensor]:
    parts: list[keras.KerasTensor] = []
    if NUMERIC in inputs:
        parts.append(inputs[NUMERIC])
    for column in schema.columns:
        if column.type == "text":
            tokens = inputs[TEXT_PREFIX + column.name]
            # no mask: an empty text (all padding) must still average to a finite vector
            embedded = keras.layers.Embedding(len(column.vocabulary) + 2, column.embedding_dim)(
                tokens
            )
            parts.append(keras.layers.GlobalAveragePooling1D()(embedded))
        elif column.type in ("categorical", "binary"):
            index = inputs[CATEGORICAL_PREFIX + column.name]
            size = len(column.vocabulary) + 1  # slot 0 is out-of-vocabulary
            if column.encoding == "embedding":
                embedded = keras.layers.Embedding(size, column.embedding_dim)(index)
                parts.append(keras.layers.Flatten()(embedded))
            else:
                parts.append(keras.layers.CategoryEncoding(size, output_mode="one_hot")(index))
    return parts


def build_core(
    schema: FeatureSchema,
    config: ModelConfig,
    *,
    encoded_shapes: Mapping[str, tuple[int, ...]],
) -> keras.Model:
    """The MLP from encoded features to the task's head."""
    inputs = core_inputs(encoded_shapes)
    parts = _encoded_features(schema, inputs)
    x = parts[0] if len(parts) == 1 else keras.layers.Concatenate()(parts)
    regularizer = keras.regularizers.L2(config.l2) if config.l2 > 0 else None
    for units in config.hidden_units:
        x = keras.layers.Dense(units, kernel_regularizer=regularizer)(x)
        if config.batch_norm:
            x = keras.layers.BatchNormalization()(x)
        x = keras.layers.Activation(config.activation)(x)
        if config.dropout > 0:
            x = keras.layers.Dropout(config.dropout)(x)
    target = schema.target
    if target.task == "binary":
        output = keras.layers.Dense(1, activation="sigmoid", name="probability")(x)
    elif target.task == "multiclass":
        output = keras.layers.Dense(
            len(target.classes), activation="softmax", name="probabilities"
        )(x)
    else:
        # the head learns a standardised target; Rescaling puts it back in the user's units
        standard = keras.layers.Dense(1, name="standardized")(x)
        output = keras.layers.Rescaling(target.std, offset=target.mean, name="prediction")(standard)
    return keras.Model(inputs=inputs, outputs=output, name="core")


def loss_and_metrics(task: str) -> tuple[keras.losses.Loss, list[keras.metrics.Metric]]:
    """The loss and the metrics that follow from the task."""
    if task == "binary":
        return keras.losses.BinaryCrossentropy(), [
            keras.metrics.BinaryAccuracy(name="accuracy"),
            keras.metrics.AUC(name="auc"),
        ]
    if task == "multiclass":
        return keras.losses.SparseCategoricalCrossentropy(), [
            keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
        ]
    return keras.losses.MeanSquaredError(), [
        keras.metrics.RootMeanSquaredError(name="rmse"),
        keras.metrics.MeanAbsoluteError(name="mae"),
    ]


def make_optimizer(config: TrainingConfig) -> keras.optimizers.Optimizer:
    """The configured optimizer at the configured learning rate."""
    optimizers: dict[str, Any] = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }
    return optimizers[config.optimizer](learning_rate=config.learning_rate)


def compile_core(core: keras.Model, task: str, config: TrainingConfig) -> None:
    """Compiles the core with the task's loss and metrics."""
    loss, metrics = loss_and_metrics(task)
    core.compile(
        optimizer=make_optimizer(config),
        loss=loss,
        metrics=metrics,
        steps_per_execution=config.steps_per_execution,
        jit_compile=config.jit_compile,
    )


def compose(preprocessor: keras.Model, core: keras.Model, schema: FeatureSchema) -> keras.Model:
    """The saved model: raw columns through the preprocessor into the trained core."""
    inputs = raw_inputs(schema)
    outputs = core(preprocessor(inputs))
    return keras.Model(inputs=inputs, outputs=outputs, name="mlcli_model")


def predict_raw(
    model: keras.Model,
    arrays: Mapping[str, np.ndarray],
    schema: FeatureSchema,
    *,
    batch_size: int = 8192,
) -> np.ndarray:
    """The model's outputs on raw columns (strings included), batched through tf.data."""
    dataset = tf.data.Dataset.from_tensor_slices(to_tensors(arrays, schema)).batch(batch_size)
    parts = [keras.ops.convert_to_numpy(model(batch, training=False)) for batch in dataset]
    return np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)
