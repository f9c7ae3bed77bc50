"""A model's outputs as the user's own labels: the one place that decides a class.

A binary model outputs the positive class's probability, (rows, 1), and a row is positive when
that probability is at or above the decision threshold (`decision_threshold`: `--threshold`,
else the run's saved one, else 0.5); a multiclass model one
probability per class, (rows, classes), in the order of `TargetSchema.classes`; a regression
model the value itself. `predict`, `mlcli serve`, the export check and the MLflow model all
decode outputs here, so every one of them names the same class for the same row.

```python
labels = predicted_labels(outputs, schema.target)  # pa.Array of the target's own values
label_texts(outputs, schema.target)                # ["high", "low", ...], as a SavedModel
```
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from mlcli.errors import ConfigError

if TYPE_CHECKING:  # numpy and pyarrow load with the first outputs: thresholds are checked first
    import numpy as np
    import pyarrow as pa

    from mlcli.features.schema import TargetSchema

BINARY_THRESHOLD = 0.5  # the one binary rule: positive when probability >= threshold


def decision_threshold(explicit: float | None = None, saved: float | None = None) -> float:
    """The binary decision threshold in force: `explicit` (`--threshold`) wins, then the one
    `mlcli evaluate --choose-threshold ... --save` stored in the run, then `BINARY_THRESHOLD`.

    Raises `ConfigError` (exit 2) for an explicit threshold outside [0, 1].
    """
    if explicit is not None:
        if not 0.0 <= explicit <= 1.0:
            raise ConfigError(f"--threshold: expected a probability in [0, 1], found {explicit}")
        return float(explicit)
    return BINARY_THRESHOLD if saved is None else float(saved)


def threshold_origin(explicit: float | None, saved: float | None) -> str:
    """Where `decision_threshold(explicit, saved)` came from, for messages."""
    if explicit is not None:
        return "--threshold"
    return "the default" if saved is None else "saved in the run"


def positive(probabilities: np.ndarray, *, threshold: float = BINARY_THRESHOLD) -> np.ndarray:
    """Whether each binary row is the positive class: its probability is >= `threshold`.

    The one rule of predict, evaluate, `mlcli serve` and every export's signature (which
    takes its threshold from `decision_threshold`), so a probability of exactly the threshold
    is positive in all.
    """
    import numpy as np

    return np.asarray(probabilities).reshape(-1) >= threshold


def predicted_indices(
    outputs: np.ndarray, target: TargetSchema, *, threshold: float = BINARY_THRESHOLD
) -> np.ndarray:
    """Each row's class as an index into `target.classes` (a classifier's outputs).

    A binary row is positive when its probability is at or above `threshold` (`positive`);
    a multiclass row is its most probable class.
    """
    import numpy as np

    if target.task == "binary":
        return positive(outputs, threshold=threshold).astype(np.int64)
    return np.argmax(outputs, axis=1).astype(np.int64)


def predicted_labels(
    outputs: np.ndarray, target: TargetSchema, *, threshold: float = BINARY_THRESHOLD
) -> pa.Array:
    """The predicted labels in the user's own values (classification), or the values.

    A classifier's row is its class (`predicted_indices`); a regression row is its value
    (float64).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if target.task == "regression":
        return pa.array(outputs.reshape(-1).astype(np.float64))
    indices = predicted_indices(outputs, target, threshold=threshold)
    return pc.take(pa.array(target.classes), pa.array(indices))


def label_texts(
    outputs: np.ndarray, target: TargetSchema, *, threshold: float = BINARY_THRESHOLD
) -> list[str]:
    """`as_text` of a classifier's `predicted_labels`, without pyarrow: what a server answers.

    pyarrow imports pandas on its first `pa.array` (0.4 s), which a server's first answer
    would otherwise wait for.
    """
    texts = as_text(target.classes)
    return [texts[index] for index in predicted_indices(outputs, target, threshold=threshold)]


def as_text(labels: Iterable[Any]) -> list[str]:
    """Labels as text, as an exported SavedModel's `label` output (and TF Serving) gives them."""
    return [str(label) for label in labels]
