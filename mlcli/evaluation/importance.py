"""Permutation importance of raw columns: how much a metric worsens when a column is shuffled.

scikit-learn's `permutation_importance` draws the permutations (seeded, `repeats` per column)
and keeps the scores; what it permutes is a matrix of row numbers, one column per raw column,
so that the score function can take each raw column's values in Arrow (`pa.ChunkedArray.take`)
in the permuted order. Strings, missing values and integer columns reach the model exactly as
they were read: nothing is converted to numbers or to pandas on the way.

```python
importances = permutation_importances(score, table, repeats=5, seed=42)
importances[0].column, importances[0].mean, importances[0].std
```

`score(table)` returns a number where higher is better (a loss negated), so an importance is
how much the metric got worse, in the metric's own unit: near zero for a column the model
ignores, negative (by noise) where shuffling happened to help.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

Score = Callable[[pa.Table], float]


@dataclass(frozen=True)
class ColumnImportance:
    """One raw column's importance: the mean worsening over the repeats, and its spread."""

    column: str
    mean: float
    std: float
    repeats: tuple[float, ...]

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (importance.json, `--json`)."""
        return {
            "column": self.column,
            "importance": self.mean,
            "std": self.std,
            "repeats": list(self.repeats),
        }


class _Trained:
    """What scikit-learn takes for an estimator: the model is trained, `fit` does nothing."""

    def fit(self, features: Any, target: Any) -> _Trained:
        return self


def rows_taken(table: pa.Table, positions: np.ndarray) -> pa.Table:
    """`table` with column `j` taken at `positions[:, j]`: each column in its own row order."""
    columns = [
        table.column(index).take(pa.array(np.rint(positions[:, index]).astype(np.int64)))
        for index in range(table.num_columns)
    ]
    return pa.table(columns, names=table.column_names)


def permutation_importances(
    score: Score, table: pa.Table, *, repeats: int, seed: int
) -> tuple[float, list[ColumnImportance]]:
    """The baseline score and each column's importance, most important first.

    Args:
        score: the metric on a table of raw columns, higher is better.
        table: the raw columns to permute (and only those): one per importance.
        repeats: the permutations of each column; the spread is their standard deviation.
        seed: seeds the permutations, so the same call gives the same importances.
    """
    from sklearn.inspection import permutation_importance

    positions = np.tile(np.arange(table.num_rows)[:, None], (1, table.num_columns))
    baseline = score(table)

    def scorer(estimator: Any, permuted: np.ndarray, target: Any) -> float:
        return score(rows_taken(table, permuted))

    result = permutation_importance(
        _Trained(),
        positions,
        np.zeros(table.num_rows),
        scoring=scorer,
        n_repeats=repeats,
        random_state=seed,
    )
    found = [
        ColumnImportance(
            column=name,
            mean=float(result.importances_mean[index]),
            std=float(result.importances_std[index]),
            repeats=tuple(float(v) for v in result.importances[index]),
        )
        for index, name in enumerate(table.column_names)
    ]
    return baseline, sorted(found, key=lambda item: (-item.mean, item.column))
