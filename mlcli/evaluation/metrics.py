"""The metrics of each task, from label indices (or values) and a model's outputs.

scikit-learn computes them, except `accuracy`: a binary row is predicted positive by the one
rule of `mlcli.inference.labels.positive` (probability >= threshold, as predict, serve and every
export decide; training's Keras `BinaryAccuracy` says > and differs only on a probability of
exactly the threshold), and multiclass accuracy is the Keras metric that training compiled.
A metric that is undefined on the data (AUC on one class, MAPE where a true value is zero)
is left out.

| task | metrics |
| --- | --- |
| binary | accuracy precision recall f1 auc pr_auc (average precision) log_loss ece brier |
| multiclass | accuracy precision_macro recall_macro f1_macro f1_weighted log_loss ece brier, |
| | and per class `precision/<class>` `recall/<class>` `f1/<class>` |
| regression | rmse mae mse r2 mape |

`ece`, the expected calibration error, puts the rows in `CALIBRATION_BINS` bins of equal width
over [0, 1] by their probability (binary: of the positive class; multiclass: of the predicted
class, the top-label ECE of Guo et al. 2017) and sums, over the bins, the bin's share of the
rows times |observed frequency - mean probability| in it (a probability of exactly 1 falls in
the last bin). `brier` is the mean squared difference between the probabilities and the
one-hot truth: binary, (p - y)^2 over the positive class (scikit-learn's `brier_score_loss`);
multiclass, the sum over the classes, per row (Brier's original score, from 0 to 2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mlcli.features.schema import FeatureSchema
from mlcli.inference.labels import positive

LOWER_IS_BETTER = frozenset({"log_loss", "ece", "brier", "rmse", "mae", "mse", "mape"})
CALIBRATION_BINS = 10
PRIMARY_METRIC = {"binary": "auc", "multiclass": "accuracy", "regression": "rmse"}
# Numbers in the results that describe the evaluation rather than measure the model.
NOT_METRICS = ("rows", "threshold")


def metric_names(schema: FeatureSchema) -> list[str]:
    """Every metric a run's task reports (the names `--fail-under` accepts)."""
    task = schema.target.task
    if task == "binary":
        return [
            "accuracy",
            "precision",
            "recall",
            "f1",
            "auc",
            "pr_auc",
            "log_loss",
            "ece",
            "brier",
        ]
    if task == "regression":
        return ["rmse", "mae", "mse", "r2", "mape"]
    names = ["accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_weighted", "log_loss"]
    names += ["ece", "brier"]
    for kind in ("precision", "recall", "f1"):
        names += [f"{kind}/{value}" for value in schema.target.classes]
    return names


def _binned_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS
) -> float:
    """Sum over equal-width bins of (rows in bin / rows) * |mean(correct) - mean(confidence)|."""
    confidence = np.asarray(confidence, dtype=np.float64).reshape(-1)
    correct = np.asarray(correct, dtype=np.float64).reshape(-1)
    if len(confidence) == 0:
        return math.nan
    index = np.clip((confidence * bins).astype(np.int64), 0, bins - 1)
    gap = np.abs(
        np.bincount(index, weights=correct, minlength=bins)
        - np.bincount(index, weights=confidence, minlength=bins)
    )
    return float(gap.sum() / len(confidence))  # sum_b n_b/N * |sum_b(y - p)| / n_b


def calibration_metrics(labels: np.ndarray, outputs: np.ndarray, task: str) -> dict[str, float]:
    """`ece` and `brier` of a classifier's outputs (see the module's docstring)."""
    truth = np.asarray(labels).reshape(-1).astype(np.int64)
    if task == "binary":
        probability = np.asarray(outputs, dtype=np.float64).reshape(-1)
        return {
            "ece": _binned_calibration_error(probability, truth),
            "brier": float(np.mean((probability - truth) ** 2)) if len(truth) else math.nan,
        }
    probabilities = np.asarray(outputs, dtype=np.float64)
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
    predicted = np.argmax(probabilities, axis=1)
    onehot = np.eye(probabilities.shape[1])[truth]
    return {
        "ece": _binned_calibration_error(probabilities.max(axis=1), predicted == truth),
        "brier": float(np.mean(np.sum((probabilities - onehot) ** 2, axis=1)))
        if len(truth)
        else math.nan,
    }


def _float32_share(matches: np.ndarray) -> float:
    """The share of True, divided in float32 as Keras's accuracy metrics (training's) divide."""
    return float(np.float32(matches.sum()) / np.float32(max(len(matches), 1)))


def _binary_metrics(labels: np.ndarray, outputs: np.ndarray, threshold: float) -> dict[str, float]:
    from sklearn import metrics

    probability = outputs.reshape(-1).astype(np.float64)
    predicted = positive(probability, threshold=threshold).astype(np.int32)
    precision, recall, f1, _ = metrics.precision_recall_fscore_support(
        labels, predicted, average="binary", zero_division=0
    )
    values = {
        "accuracy": _float32_share(predicted == labels.reshape(-1)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "log_loss": float(metrics.log_loss(labels, probability, labels=[0, 1])),
    }
    if len(np.unique(labels)) == 2:  # undefined on a single class
        values["auc"] = float(metrics.roc_auc_score(labels, probability))
        values["pr_auc"] = float(metrics.average_precision_score(labels, probability))
    return values


def _multiclass_metrics(
    labels: np.ndarray, outputs: np.ndarray, classes: Sequence[Any]
) -> dict[str, float]:
    from sklearn import metrics

    # the most probable class (the first on a tie), as Keras's SparseCategoricalAccuracy takes
    # it; importing Keras for it would import TensorFlow on the light path
    predicted = np.argmax(outputs, axis=1)
    indices = list(range(len(classes)))
    probabilities = outputs.astype(np.float64)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    values = {"accuracy": _float32_share(predicted == labels.reshape(-1))}
    for average in ("macro", "weighted"):
        precision, recall, f1, _ = metrics.precision_recall_fscore_support(
            labels, predicted, labels=indices, average=average, zero_division=0
        )
        if average == "macro":
            values.update(precision_macro=float(precision), recall_macro=float(recall))
        values[f"f1_{average}"] = float(f1)
    values["log_loss"] = float(metrics.log_loss(labels, probabilities, labels=indices))
    per_class = metrics.precision_recall_fscore_support(
        labels, predicted, labels=indices, zero_division=0
    )
    for kind, numbers in zip(("precision", "recall", "f1"), per_class[:3], strict=True):
        for value, number in zip(classes, numbers, strict=True):
            values[f"{kind}/{value}"] = float(number)
    return values


def _regression_metrics(values: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    from sklearn import metrics

    truth = values.astype(np.float64)
    predicted = outputs.reshape(-1).astype(np.float64)
    result = {
        "rmse": float(metrics.root_mean_squared_error(truth, predicted)),
        "mae": float(metrics.mean_absolute_error(truth, predicted)),
        "mse": float(metrics.mean_squared_error(truth, predicted)),
    }
    if len(truth) > 1:
        result["r2"] = float(metrics.r2_score(truth, predicted))
    if not np.any(truth == 0):  # undefined where a true value is zero
        result["mape"] = float(metrics.mean_absolute_percentage_error(truth, predicted))
    return result


def compute_metrics(
    labels: np.ndarray, outputs: np.ndarray, schema: FeatureSchema, *, threshold: float
) -> dict[str, float]:
    """The task's metrics from label indices (or values) and the model's outputs."""
    task = schema.target.task
    if task == "binary":
        values = _binary_metrics(labels, outputs, threshold)
        values.update(calibration_metrics(labels, outputs, task))
        values["threshold"] = threshold
    elif task == "multiclass":
        values = _multiclass_metrics(labels, outputs, schema.target.classes)
        values.update(calibration_metrics(labels, outputs, task))
    else:
        values = _regression_metrics(labels, outputs)
    values = {name: value for name, value in values.items() if math.isfinite(value)}
    values["rows"] = len(labels)
    return values
