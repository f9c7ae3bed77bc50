"""mlcli's own Keras layers for tabular inputs, registered for `safe_mode` loading.

Numeric encodings from Gorishniy et al. 2022, "On Embeddings for Numerical Features in Tabular
Deep Learning" (piecewise-linear and periodic embeddings), a quantile transform, and the small
pieces an FT-Transformer needs (a per-feature linear tokenizer, a CLS token, ReGLU). Every
layer keeps its constants in its config, so a saved `model.keras` carries them; any code that
loads such a model imports this module first (`mlcli.runs.loading.load_model` does).

Example:

```python
embedding = PiecewiseLinearEmbedding(bin_edges=[[-1.0, 0.0, 1.0]], units=8)
tokens = embedding(numbers)  # (rows, features) -> (rows, features, 8)
```
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import keras
import numpy as np

# Probabilities are kept this far from 0 and 1, so that scores stay within about +-3.1.
QUANTILE_EPSILON = 1e-3


def quantile_scores(values: np.ndarray, quantiles: list[float]) -> np.ndarray:
    """NumPy twin of `QuantileTransform`: standard-normal scores of values under `quantiles`."""
    points = np.asarray(quantiles, dtype=np.float64)
    x = np.asarray(values, dtype=np.float64)[..., None]
    below = (x > points).sum(-1)
    upto = (x >= points).sum(-1)
    last = len(points) - 1
    left = points[np.clip(below - 1, 0, last)]
    right = points[np.clip(below, 0, last)]
    width = np.where(right > left, right - left, 1.0)
    fraction = np.clip((x[..., 0] - left) / width, 0.0, 1.0)
    position = np.where(upto > below, (below + upto - 1) / 2.0, below - 1 + fraction)
    probability = np.clip(position / last, QUANTILE_EPSILON, 1 - QUANTILE_EPSILON)
    inverse = np.vectorize(NormalDist().inv_cdf)
    return np.asarray(inverse(probability), dtype=np.float64)


@keras.saving.register_keras_serializable(package="mlcli")
class QuantileTransform(keras.layers.Layer):
    """Maps numbers to standard-normal scores through the training split's quantiles.

    A value between two quantile points is interpolated linearly; a value equal to several
    (tied) points gets the middle of their probabilities, as scikit-learn's
    `QuantileTransformer` does. A missing value (NaN) comes out finite; the preprocessor
    replaces it with the imputed value afterwards.

    Args:
        quantiles: the sorted values at evenly spaced probabilities from 0 to 1.
    """

    def __init__(self, quantiles: list[float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.quantiles = [float(q) for q in quantiles]

    def call(self, inputs: Any) -> Any:
        ops = keras.ops
        points = ops.convert_to_tensor(np.asarray(self.quantiles, dtype="float32"))
        last = len(self.quantiles) - 1
        inputs = ops.where(ops.isnan(inputs), points[0], inputs)
        x = ops.expand_dims(inputs, -1)
        below = ops.sum(ops.cast(x > points, "int32"), axis=-1)
        upto = ops.sum(ops.cast(x >= points, "int32"), axis=-1)
        left = ops.take(points, ops.clip(below - 1, 0, last))
        right = ops.take(points, ops.clip(below, 0, last))
        width = ops.where(right > left, right - left, ops.ones_like(left))
        fraction = ops.clip((inputs - left) / width, 0.0, 1.0)
        below_f, upto_f = ops.cast(below, "float32"), ops.cast(upto, "float32")
        position = ops.where(upto > below, (below_f + upto_f - 1.0) / 2.0, below_f - 1.0 + fraction)
        probability = ops.clip(position / last, QUANTILE_EPSILON, 1.0 - QUANTILE_EPSILON)
        return math.sqrt(2.0) * ops.erfinv(2.0 * probability - 1.0)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "quantiles": self.quantiles}


def _uniform(limit: float) -> keras.initializers.Initializer:
    return keras.initializers.RandomUniform(-limit, limit)


class _PerFeatureLinear(keras.layers.Layer):
    """Base: a separate linear map from each feature's encoding to `units` outputs."""

    def __init__(self, units: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = units

    def _build_linear(self, features: int, width: int) -> None:
        limit = 1.0 / math.sqrt(width)
        self.kernel = self.add_weight(
            shape=(features, width, self.units), initializer=_uniform(limit), name="kernel"
        )
        self.bias = self.add_weight(
            shape=(features, self.units), initializer=_uniform(limit), name="bias"
        )

    def _linear(self, encoded: Any) -> Any:
        return keras.ops.einsum("bfw,fwu->bfu", encoded, self.kernel) + self.bias

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[Any, ...]:
        return (input_shape[0], input_shape[1], self.units)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="mlcli")
class PiecewiseLinearEmbedding(_PerFeatureLinear):
    """Piecewise-linear encoding of each number over its bins, then a linear map per feature.

    For bins with edges b0 < b1 < ... < bT, component t of a value x is 0 left of the bin, 1
    right of it and (x - b[t-1]) / (b[t] - b[t-1]) inside; the first and last components are
    not clipped on their outer side. Features with fewer bins are padded with zeros.

    Args:
        bin_edges: per feature, its sorted distinct bin edges (at least two).
        units: the embedding size per feature.
    """

    def __init__(self, bin_edges: list[list[float]], units: int, **kwargs: Any) -> None:
        super().__init__(units, **kwargs)
        self.bin_edges = [[float(e) for e in edges] for edges in bin_edges]
        bins = max(len(edges) - 1 for edges in self.bin_edges)
        shape = (len(self.bin_edges), bins)
        left, width, mask = np.zeros(shape), np.ones(shape), np.zeros(shape)
        low, high = np.zeros(shape), np.ones(shape)
        for row, edges in enumerate(self.bin_edges):
            count = len(edges) - 1
            left[row, :count] = edges[:-1]
            width[row, :count] = np.diff(edges)
            mask[row, :count] = 1.0
            low[row, 0], high[row, count - 1] = -np.inf, np.inf
        self._constants = {
            name: array.astype("float32")
            for name, array in dict(left=left, width=width, mask=mask, low=low, high=high).items()
        }

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self._build_linear(len(self.bin_edges), self._constants["left"].shape[1])

    def call(self, inputs: Any) -> Any:
        ops = keras.ops
        c = {name: ops.convert_to_tensor(value) for name, value in self._constants.items()}
        ratio = (ops.expand_dims(inputs, -1) - c["left"]) / c["width"]
        encoded = ops.minimum(ops.maximum(ratio, c["low"]), c["high"]) * c["mask"]
        return self._linear(encoded)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "bin_edges": self.bin_edges}


@keras.saving.register_keras_serializable(package="mlcli")
class PeriodicEmbedding(_PerFeatureLinear):
    """sin/cos of learned frequencies of each number, then a linear map per feature (PLR).

    Args:
        frequencies: how many frequencies per feature.
        scale: the standard deviation of the frequencies' initial values (sigma in the paper).
        units: the embedding size per feature.
    """

    def __init__(self, frequencies: int, scale: float, units: int, **kwargs: Any) -> None:
        super().__init__(units, **kwargs)
        self.frequencies = frequencies
        self.scale = scale

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        features = int(input_shape[-1])  # type: ignore[arg-type]
        self.coefficients = self.add_weight(
            shape=(features, self.frequencies),
            initializer=keras.initializers.RandomNormal(stddev=self.scale),
            name="coefficients",
        )
        self._build_linear(features, 2 * self.frequencies)

    def call(self, inputs: Any) -> Any:
        ops = keras.ops
        angles = 2.0 * math.pi * self.coefficients * ops.expand_dims(inputs, -1)
        return self._linear(ops.concatenate([ops.cos(angles), ops.sin(angles)], axis=-1))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "frequencies": self.frequencies, "scale": self.scale}


@keras.saving.register_keras_serializable(package="mlcli")
class LinearTokenizer(_PerFeatureLinear):
    """Each number times its own learned vector plus a bias: one token per feature."""

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self._build_linear(int(input_shape[-1]), 1)  # type: ignore[arg-type]

    def call(self, inputs: Any) -> Any:
        return self._linear(keras.ops.expand_dims(inputs, -1))


@keras.saving.register_keras_serializable(package="mlcli")
class ClsToken(keras.layers.Layer):
    """Appends a learned [CLS] token to a sequence of feature tokens (rows, tokens, dim)."""

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        dim = int(input_shape[-1])  # type: ignore[arg-type]
        self.token = self.add_weight(
            shape=(1, 1, dim), initializer=_uniform(1.0 / math.sqrt(dim)), name="token"
        )

    def call(self, inputs: Any) -> Any:
        ops = keras.ops
        token = ops.broadcast_to(self.token, (ops.shape(inputs)[0], 1, ops.shape(inputs)[-1]))
        return ops.concatenate([inputs, token], axis=1)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[Any, ...]:
        tokens = input_shape[1]
        return (input_shape[0], None if tokens is None else tokens + 1, input_shape[2])


@keras.saving.register_keras_serializable(package="mlcli")
class LastToken(keras.layers.Layer):
    """The last token of a sequence (the [CLS] token that `ClsToken` appended)."""

    def call(self, inputs: Any) -> Any:
        return inputs[:, -1, :]

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[Any, ...]:
        return (input_shape[0], input_shape[-1])


@keras.saving.register_keras_serializable(package="mlcli")
class ReGLU(keras.layers.Layer):
    """ReLU-gated linear unit: the first half of the features times ReLU of the second half."""

    def call(self, inputs: Any) -> Any:
        value, gate = keras.ops.split(inputs, 2, axis=-1)
        return value * keras.ops.relu(gate)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[Any, ...]:
        last = input_shape[-1]
        return (*input_shape[:-1], None if last is None else last // 2)


@keras.saving.register_keras_serializable(package="mlcli")
class TakeColumns(keras.layers.Layer):
    """Selected columns of a (rows, columns) matrix, in the given order."""

    def __init__(self, indices: list[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.indices = [int(i) for i in indices]

    def call(self, inputs: Any) -> Any:
        return keras.ops.take(inputs, self.indices, axis=1)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[Any, ...]:
        return (input_shape[0], len(self.indices))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "indices": self.indices}


# Probabilities are kept this far from 0 and 1 before a logarithm: float32 holds 1 - 1e-7.
CALIBRATION_EPSILON = 1e-7


@keras.saving.register_keras_serializable(package="mlcli")
class TemperatureScaling(keras.layers.Layer):
    """Calibrates probabilities by dividing the model's logits by one fitted `temperature`.

    Binary, (rows, 1): `sigmoid(logit(p) / T)`; multiclass, (rows, classes):
    `softmax(log(p) / T)` (the softmax of the logits, up to a constant per row). A temperature
    above 1 softens an over-confident model; the most probable class never changes.

    Args:
        temperature: the fitted temperature (> 0).
    """

    def __init__(self, temperature: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.temperature = float(temperature)

    def call(self, inputs: Any) -> Any:
        ops = keras.ops
        p = ops.clip(inputs, CALIBRATION_EPSILON, 1.0 - CALIBRATION_EPSILON)
        if inputs.shape[-1] == 1:
            return ops.sigmoid((ops.log(p) - ops.log(1.0 - p)) / self.temperature)
        return ops.softmax(ops.log(p) / self.temperature, axis=-1)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[Any, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="mlcli")
class PiecewiseLinearCalibration(keras.layers.Layer):
    """Maps a binary model's probability through a fitted increasing piecewise-linear curve.

    The curve passes through the points (`x[i]`, `y[i]`) (an isotonic regression's
    breakpoints) and is flat outside them, as scikit-learn's `IsotonicRegression.predict`
    with `out_of_bounds="clip"`. It is computed as `y[0] + sum_i slope_i * clip(p - x[i], 0,
    x[i+1] - x[i])`: elementwise operations only, which every export format runs.

    Args:
        x: the breakpoints' probabilities, strictly increasing.
        y: the calibrated probability at each breakpoint, non-decreasing.
    """

    def __init__(self, x: list[float], y: list[float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.x = [float(value) for value in x]
        self.y = [float(value) for value in y]
        if len(self.x) != len(self.y) or not self.x:
            raise ValueError(f"x and y must be of one non-zero length, found {len(x)}, {len(y)}")
        widths = np.diff(self.x)
        if np.any(widths <= 0):
            raise ValueError("x must be strictly increasing")
        slopes = np.diff(self.y) / np.where(widths > 0, widths, 1.0)
        self._constants = {
            "left": np.asarray(self.x[:-1], "float32"),
            "width": widths.astype("float32"),
            "slope": slopes.astype("float32"),
        }

    def call(self, inputs: Any) -> Any:
        ops = keras.ops
        if not self._constants["left"].size:  # one breakpoint: a constant
            return ops.zeros_like(inputs) + self.y[0]
        c = {name: ops.convert_to_tensor(value) for name, value in self._constants.items()}
        into = ops.minimum(ops.maximum(inputs - c["left"], 0.0), c["width"])  # (rows, segments)
        rise = into * c["slope"]
        return self.y[0] + ops.sum(rise, axis=-1, keepdims=True)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[Any, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "x": self.x, "y": self.y}


# The ensemble's layers (TabM, `model.ensemble`) are registered with these: whatever loads a
# model imports this module only (`mlcli.runs.loading`, the export checks' runtimes).
import mlcli.ensemble_layers  # noqa: E402, F401
