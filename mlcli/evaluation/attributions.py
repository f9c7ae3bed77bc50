"""Per-row attributions on raw columns: SHAP's permutation explainer through the run's model.

Why SHAP's `PermutationExplainer` and not integrated gradients: a categorical or text column
enters the model as a string and is looked up in a vocabulary, and no gradient flows through a
lookup; a model-agnostic method sees only raw values in and outputs out, as the user does.
The permutation explainer's values add up exactly to the row's output minus the average output
over the background rows (SHAP's efficiency), whatever the model.

As in `mlcli.evaluation.importance`, SHAP is handed row numbers rather than values: a masked
column of an explained row takes a background row's raw value (`rows_taken`), so strings and
missing values reach the model as read. SHAP is the optional `explain` extra.

```python
found = row_attributions(outputs, rows, background, seed=42)
found.values  # (rows, columns): each column's share of the row's output
```
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from mlcli.errors import missing_extra
from mlcli.evaluation.importance import rows_taken

# SHAP's own default for its Independent masker: each masked evaluation is averaged over these
BACKGROUND_ROWS = 100

Outputs = Callable[[pa.Table], np.ndarray]


@dataclass(frozen=True)
class Attributions:
    """SHAP values of explained rows: `base + values.sum(axis=1) == output` for each row."""

    columns: list[str]
    values: np.ndarray  # (rows, columns)
    base: np.ndarray  # (rows,)
    output: np.ndarray  # (rows,)
    output_index: np.ndarray  # (rows,): the output explained (the predicted class; else 0)


def import_shap() -> Any:
    """SHAP, or `ConfigError` (exit 2) saying which extra installs it."""
    try:
        import shap
    except ImportError as error:
        raise missing_extra("--rows (per-row attributions)", "SHAP", "explain") from error
    return shap


def row_attributions(
    outputs: Outputs, rows: pa.Table, background: pa.Table, *, seed: int
) -> Attributions:
    """SHAP values of each of `rows` against `background` (both the model's raw columns).

    `outputs(table)` is the model's outputs, (rows, 1) or (rows, classes) as the predictor
    gives them; with several, each row's most probable class is the one explained.
    `background` should be a few dozen to a hundred rows drawn from the data; each more row
    costs as many more model rows.
    """
    shap = import_shap()
    both = pa.concat_tables([background, rows.select(background.column_names)])
    width = both.num_columns

    def model(positions: np.ndarray) -> np.ndarray:
        found = outputs(rows_taken(both, positions))
        return found[:, 0] if found.shape[1] == 1 else found

    masked = np.tile(np.arange(background.num_rows)[:, None], (1, width))
    explained = np.tile(np.arange(background.num_rows, both.num_rows)[:, None], (1, width))
    masker = shap.maskers.Independent(masked, max_samples=background.num_rows)
    explainer = shap.PermutationExplainer(model, masker, seed=seed)
    # at least two evaluations per column, as the explainer requires
    found = explainer(explained, max_evals=max(500, 2 * width + 1), silent=True)
    values = np.asarray(found.values, dtype=np.float64)
    base = np.asarray(found.base_values, dtype=np.float64)
    output = model(explained)
    every = np.arange(rows.num_rows)
    if values.ndim == 3:  # several outputs: each row's predicted class
        index = np.argmax(output, axis=1)
        values, base, output = values[every, :, index], base[every, index], output[every, index]
    else:
        index = np.zeros(rows.num_rows, np.int64)
    return Attributions(
        columns=list(both.column_names),
        values=values,
        base=base.reshape(-1),
        output=output.reshape(-1).astype(np.float64),
        output_index=index,
    )
