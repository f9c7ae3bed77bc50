"""Outputs decoded into the user's labels: the binary threshold, the most probable class, the
values of a regression, the labels' own types, and their text as a SavedModel gives it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mlcli.features.schema import TargetSchema
from mlcli.inference.labels import BINARY_THRESHOLD, as_text, label_texts, predicted_labels


def test_binary_is_positive_at_or_above_the_threshold():
    target = TargetSchema(column="y", task="binary", classes=["low", "high"])
    below = np.nextafter(np.float32(0.5), np.float32(0))
    outputs = np.array([[0.2], [below], [0.5], [0.51], [0.9]], np.float32)
    assert BINARY_THRESHOLD == 0.5
    assert predicted_labels(outputs, target).to_pylist() == ["low", "low", "high", "high", "high"]
    assert predicted_labels(outputs, target, threshold=0.1).to_pylist() == ["high"] * 5
    assert predicted_labels(outputs, target, threshold=0.95).to_pylist() == ["low"] * 5


def test_multiclass_is_the_most_probable_class_in_the_classes_order():
    target = TargetSchema(column="y", task="multiclass", classes=[3, 1, 2])
    outputs = np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3], [0.1, 0.1, 0.8]], np.float32)
    labels = predicted_labels(outputs, target)
    assert labels.type == pa.int64()  # the user's own values, not their text
    assert labels.to_pylist() == [1, 3, 2]


def test_regression_gives_the_values_as_float64():
    target = TargetSchema(column="y", task="regression")
    outputs = np.array([[1.5], [-2.25]], np.float32)
    labels = predicted_labels(outputs, target)
    assert labels.type == pa.float64() and labels.to_pylist() == [1.5, -2.25]


@pytest.mark.parametrize(
    ("task", "classes", "width"), [("binary", ["a", "b"], 1), ("multiclass", ["a", "b", "c"], 3)]
)
def test_no_rows_give_no_labels(task, classes, width):
    target = TargetSchema(column="y", task=task, classes=classes)
    assert predicted_labels(np.zeros((0, width), np.float32), target).to_pylist() == []


def test_labels_as_text_spell_the_values_as_python_does():
    target = TargetSchema(column="y", task="binary", classes=[False, True])
    labels = predicted_labels(np.array([[0.9], [0.1]], np.float32), target)
    assert as_text(labels.to_pylist()) == ["True", "False"]
    assert as_text([1, "x", 2.5]) == ["1", "x", "2.5"]


@pytest.mark.parametrize("probability", [0.0, 0.25, 0.5, np.nextafter(0.5, 0), 0.75, 1.0])
def test_predict_and_the_export_signature_give_the_same_label(probability):
    """Every export but keras serves `ServingSignature`'s function: its label is predict's."""
    import tensorflow as tf

    from mlcli.exporting.signature import LABEL, ServingSignature

    target = TargetSchema(column="y", task="binary", classes=["no", "yes"])
    signature = ServingSignature(inputs={"x": "float32"}, target=target)
    value = np.float32(probability)

    def model(inputs, training=False):
        return tf.fill([tf.shape(inputs["x"])[0], 1], value)

    serve, _ = signature.serving_function(model)
    served = serve({"x": tf.constant([1.0, 2.0])})[LABEL].numpy()
    expected = as_text(predicted_labels(np.array([[value]] * 2), target).to_pylist())
    assert [label.decode() for label in served] == expected


def test_an_explicit_threshold_wins_then_the_saved_one_then_one_half():
    from mlcli.inference.labels import BINARY_THRESHOLD, decision_threshold, threshold_origin

    assert decision_threshold(0.2, 0.7) == 0.2
    assert decision_threshold(None, 0.7) == 0.7
    assert decision_threshold(None, None) == BINARY_THRESHOLD
    assert threshold_origin(0.2, 0.7) == "--threshold"
    assert threshold_origin(None, 0.7) == "saved in the run"
    assert threshold_origin(None, None) == "the default"


@pytest.mark.parametrize("explicit", [-0.1, 1.5, float("nan")])
def test_a_threshold_outside_zero_to_one_is_a_config_error(explicit):
    from mlcli.errors import ConfigError
    from mlcli.inference.labels import decision_threshold

    with pytest.raises(ConfigError, match="expected a probability in"):
        decision_threshold(explicit, 0.7)


_CLASSES = st.one_of(
    st.lists(st.text(max_size=5), min_size=2, max_size=5, unique=True),
    st.lists(st.integers(-(2**40), 2**40), min_size=2, max_size=5, unique=True),
    st.lists(st.floats(allow_nan=False, width=32), min_size=2, max_size=5, unique=True),
    st.just([False, True]),
)


@given(
    classes=_CLASSES,
    rows=st.integers(0, 20),
    threshold=st.floats(0, 1),
    data=st.data(),
)
def test_label_texts_are_the_text_of_the_predicted_labels(classes, rows, threshold, data):
    """A server's labels (no pyarrow) are predict's labels as text, for every type of class."""
    task = "binary" if len(classes) == 2 and data.draw(st.booleans()) else "multiclass"
    target = TargetSchema(column="y", task=task, classes=classes)
    width = 1 if task == "binary" else len(classes)
    elements = st.floats(0, 1, width=32)
    outputs = data.draw(hnp.arrays(np.float32, (rows, width), elements=elements))
    expected = as_text(predicted_labels(outputs, target, threshold=threshold).to_pylist())
    assert label_texts(outputs, target, threshold=threshold) == expected
