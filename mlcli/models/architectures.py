"""The model families chosen by `model.type`: from encoded features to the last hidden layer.

- `mlp`: the classic multilayer perceptron (`model.hidden_units`).
- `resnet`: a residual MLP after Gorishniy et al. 2021, "Revisiting Deep Learning Models for
  Tabular Data": a linear map to `width`, then `blocks` of BatchNorm, Dense(width *
  hidden_factor), activation, dropout, Dense(width), dropout, added to the stream.
- `ft_transformer`: the FT-Transformer of the same paper, small by default: one token per
  feature plus [CLS], pre-norm transformer blocks (multi-head attention and a ReGLU
  feed-forward network), the [CLS] token's final state as the representation.

With `model.ensemble: k` above 1 (mlp and resnet), the features are repeated for k members
and every dense layer is a `BatchEnsembleDense` (`mlcli.ensemble_layers`): the body's output is
then (rows, k, units).

`mlcli.models.core.build_core` puts the task's head on top.
"""

from __future__ import annotations

from typing import Any

import keras

from mlcli.config.training import FTTransformerConfig, MlpConfig, ModelConfig, ResNetConfig
from mlcli.ensemble_layers import BatchEnsembleDense, EnsembleInput
from mlcli.features.schema import FeatureSchema
from mlcli.layers import ClsToken, LastToken, ReGLU
from mlcli.models.embeddings import BinEdges, Inputs, feature_tokens, flat_features


def build_body(
    schema: FeatureSchema,
    config: ModelConfig,
    inputs: Inputs,
    *,
    bin_edges: BinEdges | None = None,
) -> keras.KerasTensor:
    """The configured family's last hidden layer over the core's inputs: (rows, units), or
    (rows, k, units) for an ensemble of k members. `bin_edges`: fitted piecewise-linear bins."""
    if isinstance(config, FTTransformerConfig):
        return ft_transformer(schema, config, inputs, bin_edges=bin_edges)
    features = flat_features(schema, config, inputs, bin_edges=bin_edges)
    if config.ensemble > 1:
        features = EnsembleInput(config.ensemble, name="ensemble_input")(features)
    if isinstance(config, ResNetConfig):
        return resnet(config, features)
    return mlp(config, features)


def _dense(
    units: int, *, ensemble: int, first: bool = False, kernel_regularizer: Any = None
) -> keras.layers.Layer:
    """A dense layer, or its BatchEnsemble form over (rows, k, features) when `ensemble` > 1."""
    if ensemble > 1:
        return BatchEnsembleDense(units, first=first, kernel_regularizer=kernel_regularizer)
    return keras.layers.Dense(units, kernel_regularizer=kernel_regularizer)


def _dropout(x: keras.KerasTensor, rate: float) -> keras.KerasTensor:
    return keras.layers.Dropout(rate)(x) if rate > 0 else x


def mlp(config: MlpConfig, x: keras.KerasTensor) -> keras.KerasTensor:
    """Dense layers of `hidden_units`, each with optional batch norm, then dropout."""
    regularizer = keras.regularizers.L2(config.l2) if config.l2 > 0 else None
    for index, units in enumerate(config.hidden_units):
        x = _dense(
            units, ensemble=config.ensemble, first=index == 0, kernel_regularizer=regularizer
        )(x)
        if config.batch_norm:
            x = keras.layers.BatchNormalization()(x)
        x = keras.layers.Activation(config.activation)(x)
        x = _dropout(x, config.dropout)
    return x


def resnet(config: ResNetConfig, x: keras.KerasTensor) -> keras.KerasTensor:
    """Residual blocks over a stream of `width` units."""
    k = config.ensemble
    x = _dense(config.width, ensemble=k, first=True)(x)
    hidden = max(1, round(config.width * config.hidden_factor))
    for _ in range(config.blocks):
        h = keras.layers.BatchNormalization()(x)
        h = _dense(hidden, ensemble=k)(h)
        h = keras.layers.Activation(config.activation)(h)
        h = _dropout(h, config.hidden_dropout)
        h = _dense(config.width, ensemble=k)(h)
        x = keras.layers.Add()([x, _dropout(h, config.residual_dropout)])
    x = keras.layers.BatchNormalization()(x)
    return keras.layers.Activation(config.activation)(x)


def ft_transformer(
    schema: FeatureSchema,
    config: FTTransformerConfig,
    inputs: Inputs,
    *,
    bin_edges: BinEdges | None = None,
) -> keras.KerasTensor:
    """Feature tokens and [CLS] through pre-norm transformer blocks; [CLS]'s state out."""
    dim = config.token_dim
    x = feature_tokens(schema, config.numeric_embedding, inputs, dim=dim, bin_edges=bin_edges)
    x = ClsToken(name="cls_token")(x)
    hidden = max(1, round(dim * config.ffn_factor))
    for block in range(config.blocks):
        # the first block takes the tokens as they are (no norm), as in the paper
        h = x if block == 0 else keras.layers.LayerNormalization(epsilon=1e-5)(x)
        h = keras.layers.MultiHeadAttention(
            config.heads, dim // config.heads, dropout=config.attention_dropout
        )(h, h)
        x = keras.layers.Add()([x, _dropout(h, config.residual_dropout)])
        h = keras.layers.LayerNormalization(epsilon=1e-5)(x)
        h = ReGLU()(keras.layers.Dense(2 * hidden)(h))
        h = keras.layers.Dense(dim)(_dropout(h, config.ffn_dropout))
        x = keras.layers.Add()([x, _dropout(h, config.residual_dropout)])
    x = keras.layers.LayerNormalization(epsilon=1e-5)(LastToken(name="cls_state")(x))
    return keras.layers.ReLU()(x)
