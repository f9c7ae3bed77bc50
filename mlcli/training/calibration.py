"""`training.calibration`: a calibration layer fitted on the validation split after training.

The fitted layer goes inside the saved model, after the core (`mlcli.models.core.compose`), so
`model.keras`, every export and `mlcli serve` give calibrated probabilities.

- `temperature` (Guo et al. 2017, "On Calibration of Modern Neural Networks"): one scalar T
  dividing the logits, fitted by minimising the validation log loss with SciPy's bounded
  scalar minimiser over log T (T from 0.05 to 20). Binary and multiclass; the most probable
  class never changes, nor does a binary model's order of rows (AUC).
- `isotonic` (Zadrozny and Elkan 2002): scikit-learn's `IsotonicRegression` of the label on the
  validation probability, kept as its breakpoints and applied as a piecewise-linear curve
  (`mlcli.layers.PiecewiseLinearCalibration`). Binary only: a multiclass run is a config
  error (exit 2), as is calibration of a regression.

`check_calibration` needs no TensorFlow; the fitting functions import Keras when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from mlcli.config.schema import Config
from mlcli.errors import ConfigError

if TYPE_CHECKING:
    import keras

    from mlcli.training.datasets import Split

TEMPERATURE_BOUNDS = (0.05, 20.0)


def check_calibration(config: Config, task: str) -> None:
    """`training.calibration` must suit the task: none for regression, isotonic for binary."""
    kind = config.training.calibration
    if kind == "none":
        return
    if task == "regression" or (kind == "isotonic" and task != "binary"):
        fits = "temperature or none" if task == "multiclass" else "none"
        raise ConfigError(
            f"config key `training.calibration`: {kind!r} does not apply to a {task} task; "
            f"expected {fits}"
        )


def _logits(probabilities: np.ndarray) -> np.ndarray:
    """Logits (binary) or log-probabilities (multiclass), clipped as the layer clips them."""
    from mlcli.layers import CALIBRATION_EPSILON

    p = np.clip(np.asarray(probabilities, np.float64), CALIBRATION_EPSILON, 1 - CALIBRATION_EPSILON)
    return np.log(p) - np.log1p(-p) if p.shape[-1] == 1 else np.log(p)


def temperature_log_loss(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """The mean negative log-likelihood of `labels` under `logits / temperature`."""
    scaled = logits / temperature
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if scaled.shape[-1] == 1:
        sign = np.where(labels == 1, -1.0, 1.0)
        return float(np.mean(np.logaddexp(0.0, sign * scaled.reshape(-1))))
    shifted = scaled - scaled.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-np.mean(log_softmax[np.arange(len(labels)), labels]))


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the log loss of the calibrated probabilities."""
    from scipy.optimize import minimize_scalar

    logits = _logits(probabilities)
    low, high = np.log(TEMPERATURE_BOUNDS[0]), np.log(TEMPERATURE_BOUNDS[1])
    found = minimize_scalar(
        lambda log_t: temperature_log_loss(logits, labels, float(np.exp(log_t))),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(found.x))


def fit_isotonic(probabilities: np.ndarray, labels: np.ndarray) -> tuple[list[float], list[float]]:
    """The breakpoints (x strictly increasing, y non-decreasing) of the isotonic fit."""
    from sklearn.isotonic import IsotonicRegression

    fitted = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
        np.asarray(probabilities, np.float64).reshape(-1), np.asarray(labels).reshape(-1)
    )
    x = np.asarray(fitted.X_thresholds_, np.float64)
    y = np.asarray(fitted.y_thresholds_, np.float64)
    keep = np.r_[True, np.diff(x) > 0]  # sklearn's are distinct; float32 never needs merging
    return x[keep].tolist(), y[keep].tolist()


def validation_outputs(core: keras.Model, split: Split, *, batch_size: int) -> tuple[Any, Any]:
    """The core's probabilities on the validation split, in order, and the split's labels."""
    outputs, labels = [], []
    for features, batch_labels in split.dataset(batch_size=batch_size):
        outputs.append(np.asarray(core(features, training=False), np.float64))
        labels.append(np.asarray(batch_labels))
    return np.concatenate(outputs), np.concatenate(labels)


def _figures(labels: np.ndarray, probabilities: np.ndarray, task: str) -> dict[str, float]:
    from sklearn.metrics import log_loss

    from mlcli.evaluation.metrics import calibration_metrics

    classes = list(range(max(2, probabilities.shape[1])))
    if task == "binary":
        p = probabilities.reshape(-1)
    else:  # float32 rounding leaves sums a hair off 1, which scikit-learn warns about
        p = probabilities / probabilities.sum(axis=1, keepdims=True)
    return {
        "log_loss": float(log_loss(labels, p, labels=classes)),
        **calibration_metrics(labels, probabilities, task),
    }


def fit_calibration(
    kind: str, core: keras.Model, split: Split, *, task: str, batch_size: int
) -> tuple[keras.layers.Layer, dict[str, Any]]:
    """The fitted calibration layer and what the manifest records of it (`calibration`):
    the method, its parameters, and the validation log loss, ECE and Brier score before and
    after."""
    import keras

    from mlcli.layers import PiecewiseLinearCalibration, TemperatureScaling
    from mlcli.preprocessing.inputs import CALIBRATION_LAYER

    probabilities, labels = validation_outputs(core, split, batch_size=batch_size)
    record: dict[str, Any] = {"method": kind, "fitted_on": "validation", "rows": len(labels)}
    layer: keras.layers.Layer
    if kind == "temperature":
        record["temperature"] = fit_temperature(probabilities, labels)
        layer = TemperatureScaling(record["temperature"], name=CALIBRATION_LAYER)
    else:
        x, y = fit_isotonic(probabilities, labels)
        record["breakpoints"] = len(x)
        layer = PiecewiseLinearCalibration(x, y, name=CALIBRATION_LAYER)
    after = keras.ops.convert_to_numpy(layer(probabilities.astype(np.float32)))
    record["before"] = _figures(labels, probabilities, task)
    record["after"] = _figures(labels, np.asarray(after, np.float64), task)
    return layer, record
