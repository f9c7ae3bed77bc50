"""Tree bins for piecewise-linear embeddings: thresholds of a decision tree on the target,
fitted on the training split only and stored in the saved model."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mlcli.cli.app import app
from mlcli.models.binning import tree_bin_edges

runner = CliRunner()


def test_a_step_in_the_target_becomes_a_bin_edge():
    x = np.linspace(-2.0, 2.0, 2000)[:, None]
    y = (x[:, 0] > 0.7).astype(int)
    (edges,) = tree_bin_edges(x, y, bins=4, task="binary", seed=0)
    assert edges[0] == pytest.approx(-2.0) and edges[-1] == pytest.approx(2.0)
    assert min(abs(e - 0.7) for e in edges[1:-1]) < 0.01
    (regression,) = tree_bin_edges(x, 3.0 * y, bins=4, task="regression", seed=0)
    assert min(abs(e - 0.7) for e in regression[1:-1]) < 0.01


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(2, 300),
    bins=st.integers(2, 16),
    constant=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_edges_are_sorted_distinct_within_the_range_and_at_most_bins(rows, bins, constant, seed):
    rng = np.random.default_rng(seed)
    x = np.full((rows, 2), 1.5) if constant else rng.normal(size=(rows, 2))
    y = rng.normal(size=rows)
    found = tree_bin_edges(x, y, bins=bins, task="regression", seed=0)
    for column, edges in zip(x.T, found, strict=True):
        assert len(edges) >= 2 and len(edges) <= bins + 1
        assert np.all(np.diff(edges) > 0)
        if not constant:
            assert edges[0] == pytest.approx(column.min()) and edges[-1] == pytest.approx(
                column.max()
            )


def test_the_saved_model_holds_tree_bins_of_the_training_split_only(write_config):
    from mlcli.data.splits import load_splits
    from mlcli.models.embeddings import numeric_layout
    from mlcli.preprocessing.arrow import encode_table
    from mlcli.runs.loading import open_run

    path = write_config(
        model={
            "hidden_units": [8],
            "numeric_embedding": {"type": "piecewise_linear", "bins": 6, "binning": "tree"},
        },
        features={"review": "categorical"},
        training={"epochs": 1},
    )
    result = runner.invoke(app, ["train", str(path), "--quiet"])
    assert result.exit_code == 0, result.output
    loaded = open_run(result.stdout.strip().splitlines()[-1])
    layer = loaded.model.get_layer("core").get_layer("piecewise_linear")

    splits = load_splits(loaded.config)
    features, labels = encode_table(splits.train, loaded.schema, source="train")
    _, values, _ = numeric_layout(loaded.schema)
    expected = tree_bin_edges(
        features["numeric"][:, values], labels, bins=6, task="binary", seed=loaded.config.seed
    )
    assert layer.bin_edges == expected
    # the validation rows were not seen: their range differs from the training split's
    validation, _ = encode_table(splits.validation, loaded.schema, source="validation")
    with_validation = np.concatenate([features["numeric"], validation["numeric"]])[:, values]
    assert any(
        edges[0] != pytest.approx(low) or edges[-1] != pytest.approx(high)
        for edges, low, high in zip(
            expected, with_validation.min(axis=0), with_validation.max(axis=0), strict=True
        )
    )
