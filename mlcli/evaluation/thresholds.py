"""Choosing a binary decision threshold on labelled data: `evaluate --choose-threshold`.

A criterion says what the threshold must do on the data:

| criterion | the threshold chosen |
| --- | --- |
| `precision=P` | of the thresholds whose precision is at least P, the one with the highest recall |
| `recall=R` | of the thresholds whose recall is at least R, the one with the highest precision |
| `f1` | the one with the highest F1 |
| `cost=FP:FN` | the one with the lowest cost, FP per false positive plus FN per false negative |

Precision and recall ties go on to the other one, remaining ties to the higher threshold
(fewer rows predicted positive). The candidates are the distinct scores themselves (so at
least the top-scored rows are positive), and a row is positive when its score is at or above
the threshold (`mlcli.inference.labels.positive`): the chosen threshold is the score of the
lowest-scored row it predicts positive, a float32 number as the model gives it, so every
runtime (NumPy, the SavedModel's float32 comparison, ONNX) splits these rows the same way.

A criterion that no threshold meets (precision 0.9 on a model that never reaches it) raises
`QualityGateError` (exit 5): the model misses a requirement on its quality, as `--fail-under`
would say, while a malformed criterion is a `ConfigError` (exit 2).

```python
criterion = parse_criterion("precision=0.9")
choice = choose_threshold(labels, scores, criterion)  # labels 0/1, scores P(positive)
choice.threshold, choice.metrics["recall"]
```
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mlcli.errors import ConfigError, QualityGateError

CRITERIA = ("precision=P", "recall=R", "f1", "cost=FP:FN")


@dataclass(frozen=True)
class Criterion:
    """What the chosen threshold must attain: `kind` precision, recall, f1 or cost."""

    kind: str
    target: float = 0.0  # precision and recall: the least acceptable value
    false_positive_cost: float = 0.0
    false_negative_cost: float = 0.0

    def __str__(self) -> str:
        if self.kind == "f1":
            return "f1"
        if self.kind == "cost":
            return f"cost={self.false_positive_cost:g}:{self.false_negative_cost:g}"
        return f"{self.kind}={self.target:g}"


@dataclass(frozen=True)
class ThresholdChoice:
    """The chosen threshold, the criterion it meets and the metrics at it on the data."""

    threshold: float
    criterion: Criterion
    metrics: dict[str, float]


def _number(text: str, option: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ConfigError(f"--choose-threshold {option!r}: {text!r} is not a number")
    return value


def parse_criterion(text: str) -> Criterion:
    """`precision=0.9`, `recall=0.8`, `f1` or `cost=1:5` as a `Criterion`.

    Raises `ConfigError` (exit 2) naming the accepted forms for anything else.
    """
    name, sep, value = text.strip().partition("=")
    name = name.strip().lower()
    if name == "f1" and not sep:
        return Criterion("f1")
    if name in ("precision", "recall") and sep:
        target = _number(value, text)
        if not 0.0 < target <= 1.0:
            raise ConfigError(
                f"--choose-threshold {text!r}: {name} must be in (0, 1], found {target:g}"
            )
        return Criterion(name, target=target)
    if name == "cost" and sep:
        fp, colon, fn = value.partition(":")
        if colon:
            costs = _number(fp, text), _number(fn, text)
            if min(costs) >= 0 and max(costs) > 0:
                return Criterion("cost", false_positive_cost=costs[0], false_negative_cost=costs[1])
        raise ConfigError(
            f"--choose-threshold {text!r}: expected cost=FP:FN, two costs >= 0 (not both 0) "
            "of a false positive and a false negative, e.g. cost=1:5"
        )
    raise ConfigError(
        f"--choose-threshold {text!r}: expected one of {', '.join(CRITERIA)} (e.g. precision=0.9)"
    )


def confusion_by_threshold(
    labels: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each distinct score (descending) and, predicting positive at or above it, the true and
    false positives."""
    truth = np.asarray(labels).reshape(-1).astype(bool)
    score = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-score, kind="stable")
    score, truth = score[order], truth[order]
    true_positives = np.cumsum(truth)
    false_positives = np.cumsum(~truth)
    # the last row of each run of equal scores: all rows of that score are positive together
    last = np.r_[score[1:] != score[:-1], True]
    return score[last], true_positives[last], false_positives[last]


def threshold_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Precision, recall, F1, accuracy and the count of rows predicted positive at `threshold`."""
    from sklearn import metrics

    truth = np.asarray(labels).reshape(-1).astype(int)
    predicted = (np.asarray(scores, dtype=np.float64).reshape(-1) >= threshold).astype(int)
    precision, recall, f1, _ = metrics.precision_recall_fscore_support(
        truth, predicted, average="binary", zero_division=0
    )
    return {
        "threshold": float(threshold),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "accuracy": float(np.mean(predicted == truth)) if len(truth) else 0.0,
        "positives": int(predicted.sum()),
        "rows": len(truth),
    }


def _best(allowed: np.ndarray, *objectives: np.ndarray) -> int | None:
    """The allowed index with the largest first objective, then second, ...; remaining ties
    go to the first index (the highest threshold). None when nothing is allowed."""
    chosen = np.flatnonzero(allowed)
    for objective in objectives:
        if len(chosen) == 0:
            break
        values = objective[chosen]
        chosen = chosen[values == values.max()]
    return int(chosen[0]) if len(chosen) else None


def choose_threshold(
    labels: np.ndarray, scores: np.ndarray, criterion: Criterion
) -> ThresholdChoice:
    """The threshold on `scores` (P(positive)) that best meets `criterion` on `labels` (0/1).

    Raises:
        DataError: no row, or no positive row.
        QualityGateError: no threshold meets a precision or recall criterion.
    """
    from mlcli.errors import DataError

    candidates, tp, fp = confusion_by_threshold(labels, scores)
    positives = int(tp[-1]) if len(tp) else 0
    if positives == 0:
        raise DataError(
            f"--choose-threshold {criterion}: the data has no row of the positive class; "
            "a threshold cannot be chosen on it"
        )
    predicted = tp + fp
    precision = tp / predicted
    recall = tp / positives
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(tp > 0, 2 * tp / (predicted + positives), 0.0)
    every = np.ones(len(candidates), dtype=bool)
    reached, best = criterion.kind, 0.0
    if criterion.kind == "precision":
        index = _best(precision >= criterion.target, recall, precision)
        best = float(precision.max())
    elif criterion.kind == "recall":
        index = _best(recall >= criterion.target, precision, recall)
        best = float(recall.max())
    elif criterion.kind == "f1":
        index = _best(every, f1)
    else:
        cost = criterion.false_positive_cost * fp + criterion.false_negative_cost * (positives - tp)
        index = _best(every, -cost)
    if index is None:
        raise QualityGateError(
            f"--choose-threshold {criterion}: no threshold reaches {reached} "
            f"{criterion.target:g} on this data (the highest is {best:.4g}); nothing was saved. "
            f"Lower the target, or choose with f1 or cost=FP:FN"
        )
    threshold = float(candidates[index])
    return ThresholdChoice(
        threshold=threshold,
        criterion=criterion,
        metrics=threshold_metrics(labels, scores, threshold),
    )
