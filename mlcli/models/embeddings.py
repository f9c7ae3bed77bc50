"""From the preprocessor's encoded tensors to what a network takes in.

The preprocessor hands the core a `numeric` matrix (each numeric column's normalised value,
followed by its 0/1 missing indicator when the training split had missing values), one index
tensor per categorical column and one token-id tensor per text column. `flat_features` turns
them into one vector per row (MLP, ResNet); `feature_tokens` into one token per feature
(FT-Transformer). Numeric values may first go through a learned embedding (Gorishniy et al.
2022) whose bin edges come from the quantiles in the feature schema, or from decision trees
fitted on the training split (`mlcli.models.binning`, passed in as `bin_edges`).
"""

from __future__ import annotations

import math

import keras
import numpy as np

from mlcli.config.training import MlpConfig, NumericEmbeddingConfig, ResNetConfig
from mlcli.features.schema import ColumnSchema, FeatureSchema
from mlcli.layers import (
    LinearTokenizer,
    PeriodicEmbedding,
    PiecewiseLinearEmbedding,
    TakeColumns,
    quantile_scores,
)
from mlcli.preprocessing.arrow import robust_scores
from mlcli.preprocessing.inputs import CATEGORICAL_PREFIX, NUMERIC, TEXT_PREFIX

Inputs = dict[str, keras.KerasTensor]
BinEdges = list[list[float]]  # per numeric column, its bin edges in encoded units


def numeric_layout(schema: FeatureSchema) -> tuple[list[ColumnSchema], list[int], list[int]]:
    """The numeric columns, and the positions of their values and indicators in `numeric`."""
    columns: list[ColumnSchema] = []
    values: list[int] = []
    indicators: list[int] = []
    for column in schema.columns:
        if column.type != "numeric":
            continue
        columns.append(column)
        values.append(len(values) + len(indicators))
        if column.has_missing:
            indicators.append(len(values) + len(indicators))
    return columns, values, indicators


def encoded_bin_edges(column: ColumnSchema, bins: int) -> list[float]:
    """Distinct quantile bin edges of a numeric column, in the encoded (normalised) units."""
    if not column.quantiles:
        raise ValueError(f"column {column.name!r} has no quantiles in its schema; retrain")
    quantiles = np.asarray(column.quantiles, dtype=np.float64)
    picks = quantiles[np.round(np.linspace(0, len(quantiles) - 1, bins + 1)).astype(int)]
    if column.transform == "quantile":
        picks = quantile_scores(picks, column.quantiles)
    elif column.transform == "robust":
        picks = robust_scores(picks, column.quantiles).astype(np.float64)
    edges = np.unique((picks - column.mean) / math.sqrt(column.variance))
    if len(edges) < 2:  # a constant column: one bin around its value
        edges = np.array([edges[0] - 1.0, edges[0] + 1.0])
    return [float(edge) for edge in edges]


def embed_numbers(
    schema: FeatureSchema,
    config: NumericEmbeddingConfig,
    numeric: keras.KerasTensor,
    *,
    units: int,
    bin_edges: BinEdges | None = None,
) -> keras.KerasTensor:
    """(rows, numeric columns, units): the configured embedding of every numeric value, ReLU'd.

    Piecewise-linear bins are `bin_edges` when given, else the schema's quantiles."""
    columns, values, indicators = numeric_layout(schema)
    x = TakeColumns(values, name="numeric_values")(numeric) if indicators else numeric
    if config.type == "piecewise_linear":
        edges = bin_edges or [encoded_bin_edges(column, config.bins) for column in columns]
        embedded = PiecewiseLinearEmbedding(edges, units, name="piecewise_linear")(x)
    else:
        embedded = PeriodicEmbedding(config.frequencies, config.frequency_scale, units)(x)
    return keras.layers.ReLU()(embedded)


def _categorical_and_text_parts(schema: FeatureSchema, inputs: Inputs) -> list[keras.KerasTensor]:
    parts: list[keras.KerasTensor] = []
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


def flat_features(
    schema: FeatureSchema,
    config: MlpConfig | ResNetConfig,
    inputs: Inputs,
    *,
    bin_edges: BinEdges | None = None,
) -> keras.KerasTensor:
    """One vector per row: numbers (embedded or not), one-hot or embedded categories, texts."""
    parts: list[keras.KerasTensor] = []
    if NUMERIC in inputs:
        embedding = config.numeric_embedding
        if embedding.type == "none":
            parts.append(inputs[NUMERIC])
        else:
            embedded = embed_numbers(
                schema, embedding, inputs[NUMERIC], units=embedding.dim, bin_edges=bin_edges
            )
            parts.append(keras.layers.Flatten()(embedded))
            _, _, indicators = numeric_layout(schema)
            if indicators:
                parts.append(TakeColumns(indicators, name="missing_indicators")(inputs[NUMERIC]))
    parts.extend(_categorical_and_text_parts(schema, inputs))
    return parts[0] if len(parts) == 1 else keras.layers.Concatenate()(parts)


def feature_tokens(
    schema: FeatureSchema,
    config: NumericEmbeddingConfig,
    inputs: Inputs,
    *,
    dim: int,
    bin_edges: BinEdges | None = None,
) -> keras.KerasTensor:
    """(rows, tokens, dim): one token per numeric value, missing indicator, category, text."""
    tokens: list[keras.KerasTensor] = []
    if NUMERIC in inputs:
        numeric = inputs[NUMERIC]
        _, _, indicators = numeric_layout(schema)
        if config.type == "none":
            tokens.append(LinearTokenizer(dim, name="numeric_tokens")(numeric))
        else:
            tokens.append(embed_numbers(schema, config, numeric, units=dim, bin_edges=bin_edges))
            if indicators:
                chosen = TakeColumns(indicators, name="missing_indicators")(numeric)
                tokens.append(LinearTokenizer(dim, name="indicator_tokens")(chosen))
    for column in schema.columns:
        if column.type == "text":
            embedded = keras.layers.Embedding(len(column.vocabulary) + 2, dim)(
                inputs[TEXT_PREFIX + column.name]
            )
            pooled = keras.layers.GlobalAveragePooling1D()(embedded)
            tokens.append(keras.layers.Reshape((1, dim))(pooled))
        elif column.type in ("categorical", "binary"):
            size = len(column.vocabulary) + 1
            tokens.append(
                keras.layers.Embedding(size, dim)(inputs[CATEGORICAL_PREFIX + column.name])
            )
    return tokens[0] if len(tokens) == 1 else keras.layers.Concatenate(axis=1)(tokens)
