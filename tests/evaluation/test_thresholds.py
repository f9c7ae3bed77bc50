"""Choosing a binary threshold: on generated scores and labels the chosen threshold meets the
criterion and no other threshold meets it better; malformed and unreachable criteria."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlcli.errors import ConfigError, DataError, QualityGateError
from mlcli.evaluation.thresholds import (
    Criterion,
    choose_threshold,
    parse_criterion,
    threshold_metrics,
)


@st.composite
def scored_rows(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Labels with at least one positive, and float32 scores with ties (a coarse grid)."""
    rows = draw(st.integers(1, 60))
    labels = np.array(draw(st.lists(st.integers(0, 1), min_size=rows, max_size=rows)))
    labels[draw(st.integers(0, rows - 1))] = 1
    steps = draw(st.lists(st.integers(0, 20), min_size=rows, max_size=rows))
    return labels, (np.array(steps) / 20.0).astype(np.float32)


def _every_threshold(labels: np.ndarray, scores: np.ndarray) -> list[dict[str, float]]:
    """The metrics at each distinct score, computed directly (the brute-force reference)."""
    return [threshold_metrics(labels, scores, float(t)) for t in np.unique(scores)]


def _cost(metrics: dict[str, float], labels: np.ndarray, fp: float, fn: float) -> float:
    true_positives = metrics["recall"] * labels.sum()
    false_positives = metrics["positives"] - true_positives
    return fp * false_positives + fn * (labels.sum() - true_positives)


@settings(max_examples=60, deadline=None)
@given(rows=scored_rows(), target=st.sampled_from([0.3, 0.5, 0.8, 0.9, 1.0]))
def test_precision_target_is_met_with_the_most_recall(rows, target):
    labels, scores = rows
    every = _every_threshold(labels, scores)
    meeting = [m for m in every if m["precision"] >= target]
    if not meeting:
        with pytest.raises(QualityGateError, match="no threshold reaches precision"):
            choose_threshold(labels, scores, Criterion("precision", target=target))
        return
    chosen = choose_threshold(labels, scores, Criterion("precision", target=target))
    assert chosen.metrics["precision"] >= target
    best = max((m["recall"], m["precision"]) for m in meeting)
    assert (chosen.metrics["recall"], chosen.metrics["precision"]) == best
    # the threshold is one of the scores, and predict's rule (>=) splits the rows as reported
    assert chosen.threshold in set(scores.astype(float).tolist())
    assert chosen.metrics["positives"] == int(np.sum(scores >= chosen.threshold))


@settings(max_examples=60, deadline=None)
@given(rows=scored_rows(), target=st.sampled_from([0.2, 0.5, 0.9, 1.0]))
def test_recall_target_is_met_with_the_most_precision(rows, target):
    labels, scores = rows
    chosen = choose_threshold(labels, scores, Criterion("recall", target=target))
    meeting = [m for m in _every_threshold(labels, scores) if m["recall"] >= target]
    assert chosen.metrics["recall"] >= target  # the lowest score always has recall 1
    assert (chosen.metrics["precision"], chosen.metrics["recall"]) == max(
        (m["precision"], m["recall"]) for m in meeting
    )


@settings(max_examples=60, deadline=None)
@given(rows=scored_rows(), costs=st.tuples(st.integers(0, 5), st.integers(1, 5)))
def test_f1_and_cost_are_the_best_of_every_threshold(rows, costs):
    labels, scores = rows
    every = _every_threshold(labels, scores)
    f1 = choose_threshold(labels, scores, Criterion("f1"))
    assert f1.metrics["f1"] == pytest.approx(max(m["f1"] for m in every))
    fp, fn = costs
    cost = choose_threshold(
        labels, scores, Criterion("cost", false_positive_cost=fp, false_negative_cost=fn)
    )
    assert _cost(cost.metrics, labels, fp, fn) == pytest.approx(
        min(_cost(m, labels, fp, fn) for m in every)
    )


def test_ties_go_to_the_higher_threshold():
    labels = np.array([1, 0, 1, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.1], dtype=np.float32)
    # f1 at 0.9: 2/3; at 0.7: 2*2/(3+2) = 0.8; at 0.1: 2*2/(4+2) = 0.667 -> 0.7
    assert choose_threshold(labels, scores, Criterion("f1")).threshold == pytest.approx(0.7)
    # cost 1:1 is 1 at 0.9 (one FN) and 1 at 0.7 (one FP): the higher wins
    even = Criterion("cost", false_positive_cost=1, false_negative_cost=1)
    assert choose_threshold(labels, scores, even).threshold == pytest.approx(0.9)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("precision=0.9", Criterion("precision", target=0.9)),
        (" Recall = 1 ", Criterion("recall", target=1.0)),
        ("f1", Criterion("f1")),
        ("cost=1:5", Criterion("cost", false_positive_cost=1, false_negative_cost=5)),
        ("cost=0:2.5", Criterion("cost", false_positive_cost=0, false_negative_cost=2.5)),
    ],
)
def test_criteria_parse_and_print_as_given(text, expected):
    assert parse_criterion(text) == expected
    assert parse_criterion(str(expected)) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("precision", "expected one of precision=P, recall=R, f1, cost=FP:FN"),
        ("precision=0", r"precision must be in \(0, 1\], found 0"),
        ("recall=1.5", r"recall must be in \(0, 1\], found 1.5"),
        ("precision=high", "'high' is not a number"),
        ("f1=0.5", "expected one of"),
        ("cost=1", "expected cost=FP:FN"),
        ("cost=0:0", "expected cost=FP:FN"),
        ("cost=-1:2", "expected cost=FP:FN"),
        ("accuracy=0.9", "expected one of"),
    ],
)
def test_malformed_criteria_are_config_errors(text, message):
    with pytest.raises(ConfigError, match=message) as raised:
        parse_criterion(text)
    assert raised.value.exit_code == 2


def test_data_without_a_positive_row_is_a_data_error():
    with pytest.raises(DataError, match="no row of the positive class") as raised:
        choose_threshold(np.zeros(5), np.linspace(0, 1, 5), Criterion("f1"))
    assert raised.value.exit_code == 3


def test_an_unreachable_precision_says_the_best_found_and_exits_5():
    labels = np.array([1, 0, 0, 1])
    scores = np.array([0.6, 0.9, 0.8, 0.1], dtype=np.float32)
    with pytest.raises(QualityGateError, match=r"reaches precision 0.9 .*highest is 0.5") as raised:
        choose_threshold(labels, scores, Criterion("precision", target=0.9))
    assert raised.value.exit_code == 5
