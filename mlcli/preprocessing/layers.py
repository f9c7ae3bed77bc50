"""Keras preprocessing layers built from the feature schema, and encoding data once with them.

The preprocessor is a Keras model from raw columns (one input per column, keyed by the column)
to dense encoded tensors. Training runs it once over the data in large chunks and fits the
core network on the result, which avoids string lookups at every step; the saved model is the
preprocessor composed with the trained core, so it still takes raw values.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mlcli.data.columns import FLOAT32_MAX
from mlcli.features.schema import ColumnSchema, FeatureSchema
from mlcli.layers import QuantileTransform
from mlcli.preprocessing.arrow import ROBUST_LIMIT, SMOOTH_CLIP, robust_scaling
from mlcli.preprocessing.inputs import (
    CATEGORICAL_PREFIX,
    NUMERIC,
    TEXT_PREFIX,
    input_names,
    layer_name,
)

ENCODE_CHUNK_ROWS = 1 << 16


def raw_inputs(schema: FeatureSchema) -> dict[str, keras.KerasTensor]:
    """One Keras input per raw column, keyed by the column, shape (rows, 1).

    The key is the column's own name (callers pass columns by the names users see); the
    input's Keras name is its `input_name`, which Keras and TensorFlow accept whatever the
    column is called.
    """
    names = input_names(column.name for column in schema.columns)
    return {
        column.name: keras.Input(shape=(1,), dtype=column.dtype, name=names[column.name])
        for column in schema.columns
    }


def keyed_model(inputs: Mapping[str, keras.KerasTensor], outputs: Any, *, name: str) -> keras.Model:
    """A functional model over inputs keyed by column names, their Keras names sanitised.

    Keras warns when a dict key differs from its input's name; here that is the point (the
    key is what callers pass, the name is what Keras and TensorFlow can hold), so the warning
    is silenced for this call only.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="When providing `inputs` as a dict")
        return keras.Model(inputs=dict(inputs), outputs=outputs, name=name)


def _numeric(column: ColumnSchema, value: keras.KerasTensor) -> list[keras.KerasTensor]:
    missing = keras.ops.isnan(value)
    if column.transform == "log":
        value = keras.ops.log1p(keras.ops.maximum(value, -1.0 + 1e-7))
    elif column.transform == "quantile":
        value = QuantileTransform(column.quantiles, name=layer_name("quantile", column.name))(value)
    elif column.transform == "robust":  # `preprocessing.arrow.robust_scores` computes the same
        center, factor = robust_scaling(column.quantiles)
        scaled = keras.ops.multiply(keras.ops.subtract(value, center), factor)
        scaled = keras.ops.clip(scaled, -ROBUST_LIMIT, ROBUST_LIMIT)
        value = scaled / keras.ops.sqrt(1.0 + keras.ops.square(scaled / SMOOTH_CLIP))
    filled = keras.ops.where(missing, keras.ops.full_like(value, column.mean), value)
    # (value - mean) / std as `keras.layers.Normalization` computes it, but from the standard
    # deviation: a column of magnitude 1e30 has a variance (1e60) that float32 cannot hold
    deviation = min(max(math.sqrt(column.variance), keras.backend.epsilon()), FLOAT32_MAX)
    normalised = keras.ops.divide(keras.ops.subtract(filled, column.mean), deviation)
    if not column.has_missing:
        return [normalised]
    return [normalised, keras.ops.cast(missing, "float32")]


def _lookup(column: ColumnSchema) -> keras.layers.Layer:
    name = layer_name("lookup", column.name)
    if column.dtype == "int64":
        return keras.layers.IntegerLookup(
            vocabulary=np.asarray(column.vocabulary, dtype=np.int64),
            num_oov_indices=1,
            mask_token=None,
            name=name,
        )
    return keras.layers.StringLookup(
        vocabulary=[str(v) for v in column.vocabulary],
        num_oov_indices=1,
        mask_token=None,
        name=name,
    )


def build_preprocessor(schema: FeatureSchema) -> keras.Model:
    """Raw columns in; `numeric`, `categorical__<col>` and `text__<col>` tensors out."""
    inputs = raw_inputs(schema)
    numeric: list[keras.KerasTensor] = []
    outputs: dict[str, keras.KerasTensor] = {}
    for column in schema.columns:
        value = inputs[column.name]
        if column.type == "numeric":
            numeric.extend(_numeric(column, value))
        elif column.type == "text":
            vectorize = keras.layers.TextVectorization(
                vocabulary=column.vocabulary or ["<empty>"],
                output_mode="int",
                output_sequence_length=column.sequence_length,
                name=layer_name("vectorize", column.name),
            )
            outputs[TEXT_PREFIX + column.name] = vectorize(value)
        else:
            outputs[CATEGORICAL_PREFIX + column.name] = _lookup(column)(value)
    if numeric:
        outputs[NUMERIC] = (
            numeric[0] if len(numeric) == 1 else keras.layers.Concatenate(name="numeric")(numeric)
        )
    return keyed_model(inputs, outputs, name="preprocessing")


def to_tensors(arrays: Mapping[str, np.ndarray], schema: FeatureSchema) -> dict[str, tf.Tensor]:
    """Raw numpy columns as tensors of the model's input dtypes (strings included)."""
    return {
        column.name: tf.constant(arrays[column.name], dtype=column.dtype)
        for column in schema.columns
    }


def encode(
    preprocessor: keras.Model,
    arrays: Mapping[str, np.ndarray],
    schema: FeatureSchema,
    *,
    chunk_rows: int = ENCODE_CHUNK_ROWS,
) -> dict[str, np.ndarray]:
    """Runs the preprocessing layers once over all rows, in large chunks."""
    rows = len(next(iter(arrays.values())))
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, rows, chunk_rows):
        chunk = {name: array[start : start + chunk_rows] for name, array in arrays.items()}
        encoded = preprocessor(to_tensors(chunk, schema), training=False)
        for name, tensor in encoded.items():
            parts.setdefault(name, []).append(keras.ops.convert_to_numpy(tensor))
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}
