"""Tree-based bins for piecewise-linear embeddings (Gorishniy et al. 2022, "PLE-T").

For each numeric column a decision tree (scikit-learn) with at most `bins` leaves is fitted on
that column alone against the target, on the training split only; its split thresholds,
between the column's smallest and largest training value, are the bin edges. The edges are
in the encoded (normalised) units the core network sees, and the piecewise-linear layer
keeps them in its config, so the saved model carries them.
"""

from __future__ import annotations

import numpy as np

from mlcli.config.training import ModelConfig
from mlcli.features.schema import FeatureSchema
from mlcli.models.embeddings import numeric_layout

# Rows the trees are fitted on at most (a seeded sample of the training split beyond this).
TREE_ROWS = 200_000
# A leaf holds at least this share of the rows: no bin for a handful of outliers.
MIN_LEAF_SHARE = 1e-3


def tree_bin_edges(
    values: np.ndarray,
    labels: np.ndarray,
    *,
    bins: int,
    task: str,
    seed: int,
) -> list[list[float]]:
    """Per column of `values` (rows, columns), its sorted distinct bin edges (at least two).

    `labels` are the training split's targets: class indices, or values for regression.
    """
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    values = np.asarray(values, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1)
    if len(values) > TREE_ROWS:
        chosen = np.random.default_rng(seed).choice(len(values), TREE_ROWS, replace=False)
        values, labels = values[chosen], labels[chosen]
    kind = DecisionTreeRegressor if task == "regression" else DecisionTreeClassifier
    edges: list[list[float]] = []
    for column in values.T:
        low, high = float(column.min()), float(column.max())
        tree = kind(
            max_leaf_nodes=bins,
            min_samples_leaf=max(1, int(MIN_LEAF_SHARE * len(column))),
            random_state=seed,
        ).fit(column.reshape(-1, 1), labels)
        split = tree.tree_.feature >= 0  # leaves have feature -2
        thresholds = tree.tree_.threshold[split]
        inside = thresholds[(thresholds > low) & (thresholds < high)]
        points = np.unique(np.concatenate([[low, high], inside]).astype(np.float32))
        if len(points) < 2:  # a constant column: one bin around its value
            points = np.array([points[0] - 1.0, points[0] + 1.0])
        edges.append([float(point) for point in points])
    return edges


def fitted_bin_edges(
    schema: FeatureSchema,
    config: ModelConfig,
    numeric: np.ndarray | None,
    labels: np.ndarray,
    *,
    seed: int,
) -> list[list[float]] | None:
    """The tree bins of the numeric columns when `model.numeric_embedding` asks for them.

    `numeric` is the training split's encoded `numeric` matrix (values and missing
    indicators, `numeric_layout`); None when it has no numeric column. Returns None for any
    other embedding or binning (the layer then takes the schema's quantiles).
    """
    embedding = config.numeric_embedding
    if embedding.type != "piecewise_linear" or embedding.binning != "tree" or numeric is None:
        return None
    _, values, _ = numeric_layout(schema)
    return tree_bin_edges(
        numeric[:, values], labels, bins=embedding.bins, task=schema.target.task, seed=seed
    )
