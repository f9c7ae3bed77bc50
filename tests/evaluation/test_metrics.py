"""Expected calibration error and Brier score against small cases worked out here by hand,
and scikit-learn's Brier score on generated ones."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mlcli.evaluation.metrics import CALIBRATION_BINS, calibration_metrics


def test_binary_ece_by_hand():
    # bins of width 0.1: 0.05 and 0.15 in bins 0 and 1, 0.95 and 1.0 in the last bin
    probability = np.array([0.05, 0.15, 0.95, 1.0])
    labels = np.array([0, 1, 1, 0])
    # bin 0: |0 - 0.05| = 0.05; bin 1: |1 - 0.15| = 0.85; bin 9: |0.5 - 0.975| = 0.475
    expected = (1 * 0.05 + 1 * 0.85 + 2 * 0.475) / 4
    assert CALIBRATION_BINS == 10
    assert calibration_metrics(labels, probability, "binary")["ece"] == pytest.approx(expected)


def test_a_calibrated_model_has_no_ece_and_a_sure_right_one_no_brier():
    # in the bin [0.2, 0.3) two of ten rows are positive at probability 0.2 each
    probability = np.full(10, 0.2)
    labels = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    assert calibration_metrics(labels, probability, "binary")["ece"] == pytest.approx(0.0)
    sure = calibration_metrics(np.array([0, 1]), np.array([0.0, 1.0]), "binary")
    assert sure == {"ece": 0.0, "brier": 0.0}


@settings(max_examples=50, deadline=None)
@given(
    probability=arrays(np.float64, 30, elements=st.floats(0, 1)),
    labels=arrays(np.int64, 30, elements=st.integers(0, 1)),
)
def test_binary_brier_is_scikit_learns(probability, labels):
    from sklearn.metrics import brier_score_loss

    found = calibration_metrics(labels, probability, "binary")["brier"]
    assert found == pytest.approx(brier_score_loss(labels, probability, pos_label=1))


def test_multiclass_ece_uses_the_top_label_and_brier_sums_the_classes():
    outputs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.25, 0.5, 0.25]])
    labels = np.array([0, 1, 1])
    figures = calibration_metrics(labels, outputs, "multiclass")
    # confidences 0.7 (right), 0.6 (wrong), 0.5 (right): bins 7, 6, 5, one row each
    assert figures["ece"] == pytest.approx((0.3 + 0.6 + 0.5) / 3)
    brier = [0.09 + 0.04 + 0.01, 0.01 + 0.49 + 0.36, 0.0625 + 0.25 + 0.0625]
    assert figures["brier"] == pytest.approx(np.mean(brier))
