"""The metrics of each task, from label indices (or values) and a model's outputs.

scikit-learn computes them, except `accuracy`: a binary row is predicted positive by the one
rule of `mlcli.inference.labels.positive` (probability >= threshold, as predict, serve and every
export decide; training's Keras `BinaryAccuracy` says > and differs only on a probability of
exactly the threshold), and multiclass accuracy is the Keras metric that training compiled.
A metric that is undefined on the data (AUC on one class, MAPE where a true value is zero)
is left out.

| task | metrics |
| --- | --- |
| binary | accuracy precision recall f1 auc pr_auc (average precision) log_loss |
| multiclass | accuracy precision_macro recall_macro f1_macro f1_weighted log_loss, |
| | and per class `precision/<class>` `recall/<class>` `f1/<class>` |
| regression | rmse mae mse r2 mape |
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mlcli.features.schema import FeatureSchema
from mlcli.inference.labels import positive

LOWER_IS_BETTER = frozenset({"log_loss", "rmse", "mae", "mse", "mape"})
PRIMARY_METRIC = {"binary": "auc", "multiclass": "accuracy", "regression": "rmse"}
# Numbers in the results that describe the evaluation rather than measure the model.
NOT_METRICS = ("rows", "threshold")


def metric_names(schema: FeatureSchema) -> list[str]:
    """Every metric a run's task reports (the names `--fail-under` accepts)."""
    task = schema.target.task
    if task == "binary":
        return ["accuracy", "precision", "recall", "f1", "auc", "pr_auc", "log_loss"]
    if task == "regression":
        return ["rmse", "mae", "mse", "r2", "mape"]
    names = ["accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_weighted", "log_loss"]
    for kind in ("precision", "recall", "f1"):
        names += [f"{kind}/{value}" for value in schema.target.classes]
    return names


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
    import keras
    from sklearn import metrics

    accuracy = keras.metrics.SparseCategoricalAccuracy()
    accuracy.update_state(labels, outputs)
    predicted = np.argmax(outputs, axis=1)
    indices = list(range(len(classes)))
    probabilities = outputs.astype(np.float64)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    values = {"accuracy": float(accuracy.result())}
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
        values["threshold"] = threshold
    elif task == "multiclass":
        values = _multiclass_metrics(labels, outputs, schema.target.classes)
    else:
        values = _regression_metrics(labels, outputs)
    values = {name: value for name, value in values.items() if math.isfinite(value)}
    values["rows"] = len(labels)
    return values
