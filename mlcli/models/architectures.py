"""The model families chosen by `model.type`: from encoded features to the last hidden layer.

- `mlp`: the classic multilayer perceptron (`model.hidden_units`).
- `resnet`: a residual MLP after Gorishniy et al. 2021, "Revisiting Deep Learning Models for
  Tabular Data": a linear map to `width`, then `blocks` of BatchNorm, Dense(width *
  hidden_factor), activation, dropout, Dense(width), dropout, added to the stream.
- `ft_transformer`: the FT-Transformer of the same paper, small by default: one token per
  feature plus [CLS], pre-norm transformer blocks (multi-head attention and a ReGLU
  feed-forward network), the [CLS] token's final state as the representation.

`mlcli.models.core.build_core` puts the task's head on top.
"""

from __future__ import annotations

import keras

from mlcli.config.training import FTTransformerConfig, MlpConfig, ModelConfig, ResNetConfig
from mlcli.features.schema import FeatureSchema
from mlcli.layers import ClsToken, LastToken, ReGLU
from mlcli.models.embeddings import Inputs, feature_tokens, flat_features


def build_body(schema: FeatureSchema, config: ModelConfig, inputs: Inputs) -> keras.KerasTensor:
    """The configured family's last hidden layer over the core's inputs."""
    if isinstance(config, FTTransformerConfig):
        return ft_transformer(schema, config, inputs)
    features = flat_features(schema, config, inputs)
    if isinstance(config, ResNetConfig):
        return resnet(config, features)
    return mlp(config, features)


def _dropout(x: keras.KerasTensor, rate: float) -> keras.KerasTensor:
    return keras.layers.Dropout(rate)(x) if rate > 0 else x


def mlp(config: MlpConfig, x: keras.KerasTensor) -> keras.KerasTensor:
    """Dense layers of `hidden_units`, each with optional batch norm, then dropout."""
    regularizer = keras.regularizers.L2(config.l2) if config.l2 > 0 else None
    for units in config.hidden_units:
        x = keras.layers.Dense(units, kernel_regularizer=regularizer)(x)
        if config.batch_norm:
            x = keras.layers.BatchNormalization()(x)
        x = keras.layers.Activation(config.activation)(x)
        x = _dropout(x, config.dropout)
    return x


def resnet(config: ResNetConfig, x: keras.KerasTensor) -> keras.KerasTensor:
    """Residual blocks over a stream of `width` units."""
    x = keras.layers.Dense(config.width)(x)
    hidden = max(1, round(config.width * config.hidden_factor))
    for _ in range(config.blocks):
        h = keras.layers.BatchNormalization()(x)
        h = keras.layers.Dense(hidden, activation=config.activation)(h)
        h = _dropout(h, config.hidden_dropout)
        h = keras.layers.Dense(config.width)(h)
        x = keras.layers.Add()([x, _dropout(h, config.residual_dropout)])
    x = keras.layers.BatchNormalization()(x)
    return keras.layers.Activation(config.activation)(x)


def ft_transformer(
    schema: FeatureSchema, config: FTTransformerConfig, inputs: Inputs
) -> keras.KerasTensor:
    """Feature tokens and [CLS] through pre-norm transformer blocks; [CLS]'s state out."""
    dim = config.token_dim
    x = feature_tokens(schema, config.numeric_embedding, inputs, dim=dim)
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
