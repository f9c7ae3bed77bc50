"""The evaluation's plots speak the user's labels: the reliability diagram and the curves name
the positive class as the data spells it, and a calibrated run's diagram shows both curves."""

from __future__ import annotations

import numpy as np
import pytest

from mlcli.evaluation.report import _calibration, _classification_plots


@pytest.mark.parametrize("before", [None, np.linspace(0.05, 0.95, 40)])
def test_the_reliability_diagram_names_the_positive_class(before):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    named = np.where(rng.uniform(size=40) < 0.4, ">50K", "<=50K").astype(object)
    figure, axis = plt.subplots()
    try:
        _calibration(axis, named, rng.uniform(size=40), ">50K", before)
        assert ">50K" in axis.get_xlabel() and ">50K" in axis.get_ylabel()
        assert axis.get_title() == "Reliability of P(>50K)"
        legend = [text.get_text() for text in axis.get_legend().get_texts()]
        assert ("before calibration" in legend) == (before is not None)
    finally:
        plt.close(figure)


def test_binary_plots_are_written_with_the_users_classes(tmp_path):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 60)
    scores = np.clip(labels * 0.5 + rng.uniform(size=60) * 0.5, 0, 1).reshape(-1, 1)
    written = _classification_plots(tmp_path, labels, scores, ["<=50K", ">50K"], "binary", 0.5)
    assert set(written) == {"confusion_matrix.png", "roc.png", "pr.png", "calibration.png"}
    assert all((tmp_path / name).stat().st_size > 0 for name in written)
