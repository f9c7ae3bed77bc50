"""The network: a core model over encoded features, and the saved model around it.

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

from mlcli.config.schema import ModelConfig, TrainingConfig
from mlcli.features.schema import FeatureSchema
from mlcli.models.architectures import build_body
from mlcli.preprocessing.inputs import NUMERIC
from mlcli.preprocessing.layers import raw_inputs, to_tensors


def core_inputs(encoded_shapes: Mapping[str, tuple[int, ...]]) -> dict[str, keras.KerasTensor]:
    """Inputs of the core network, matching the preprocessor's outputs by name."""
    inputs = {}
    for name, shape in encoded_shapes.items():
        dtype = "float32" if name == NUMERIC else "int64"
        inputs[name] = keras.Input(shape=shape, dtype=dtype, name=name)
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
    return keras.Model(inputs=inputs, outputs=output, name="core")


def loss_and_metrics(
    task: str, *, auc: bool = True
) -> tuple[keras.losses.Loss, list[keras.metrics.Metric]]:
    """The loss and the metrics that follow from the task (binary: AUC only if `auc`)."""
    if task == "binary":
        return keras.losses.BinaryCrossentropy(), [
            keras.metrics.BinaryAccuracy(name="accuracy"),
            *([keras.metrics.AUC(name="auc")] if auc else []),
        ]
    if task == "multiclass":
        return keras.losses.SparseCategoricalCrossentropy(), [
            keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
        ]
    return keras.losses.MeanSquaredError(), [
        keras.metrics.RootMeanSquaredError(name="rmse"),
        keras.metrics.MeanAbsoluteError(name="mae"),
    ]


def make_optimizer(
    config: TrainingConfig, *, steps_per_epoch: int = 1
) -> keras.optimizers.Optimizer:
    """The configured optimizer, learning rate (or cosine schedule) and weight decay."""
    optimizers: dict[str, Any] = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }
    learning_rate: Any = config.learning_rate
    if config.learning_rate_schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps=max(1, config.epochs * steps_per_epoch)
        )
    optimizer = optimizers[config.optimizer](
        learning_rate=learning_rate, weight_decay=config.weight_decay
    )
    # decay the weights only: not biases, norm scales and offsets, nor the [CLS] token
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta", "token"])
    return optimizer


def epoch_auc(config: TrainingConfig) -> bool:
    """Whether fit computes AUC every epoch: only when early stopping watches it.

    Keras updates AUC's 200 thresholds at every training step; here that cost about 2 s of a
    1M-row, 2-epoch run (tracing included). Final metrics include AUC either way.
    """
    stopping = config.early_stopping
    return stopping is not None and stopping.monitor.endswith("auc")


def compile_core(
    core: keras.Model,
    task: str,
    config: TrainingConfig,
    *,
    steps_per_epoch: int = 1,
    for_evaluation: bool = False,
) -> None:
    """Compiles the core with the task's loss and metrics, for fit or, after it, evaluation.

    For fit a binary task's AUC is left out unless `epoch_auc`; evaluation keeps the
    optimizer fit trained with.
    """
    loss, metrics = loss_and_metrics(task, auc=for_evaluation or epoch_auc(config))
    core.compile(
        optimizer=core.optimizer
        if for_evaluation
        else make_optimizer(config, steps_per_epoch=steps_per_epoch),
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


def schedule_callbacks(config: TrainingConfig) -> list[keras.callbacks.Callback]:
    """`reduce_on_plateau`: halve the learning rate when the monitored metric stalls."""
    if config.learning_rate_schedule != "reduce_on_plateau":
        return []
    stopping = config.early_stopping
    return [
        keras.callbacks.ReduceLROnPlateau(
            monitor=stopping.monitor if stopping else "val_loss",
            factor=0.5,
            patience=max(1, (stopping.patience if stopping else 4) // 2),
            min_delta=stopping.min_delta if stopping else 0.0,
            min_lr=config.learning_rate / 64,
        )
    ]
