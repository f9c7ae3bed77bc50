"""mlcli's calibration layers: what they compute, and their round trips through a `.keras`
file loaded in safe mode and through a SavedModel."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from mlcli.layers import PiecewiseLinearCalibration, TemperatureScaling  # noqa: E402


def _model(layer: keras.layers.Layer, width: int) -> keras.Model:
    inputs = keras.Input((width,), name="p")
    return keras.Model(inputs, layer(inputs))


def test_temperature_divides_the_logits():
    p = np.array([[0.1], [0.5], [0.97]], np.float32)
    found = keras.ops.convert_to_numpy(TemperatureScaling(2.0)(p))
    logits = np.log(p) - np.log1p(-p)
    assert found == pytest.approx(1 / (1 + np.exp(-logits / 2.0)), abs=1e-6)
    probabilities = np.array([[0.7, 0.2, 0.1]], np.float32)
    soft = keras.ops.convert_to_numpy(TemperatureScaling(3.0)(probabilities))
    expected = probabilities ** (1 / 3) / np.sum(probabilities ** (1 / 3))
    assert soft == pytest.approx(expected, abs=1e-6)
    assert soft.argmax() == 0  # the most probable class never changes


def test_piecewise_linear_matches_isotonic_regression_in_and_out_of_bounds():
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(0)
    scores = rng.uniform(0.1, 0.9, 300)
    labels = (rng.uniform(size=300) < scores**2).astype(int)
    fitted = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(scores, labels)
    layer = PiecewiseLinearCalibration(fitted.X_thresholds_.tolist(), fitted.y_thresholds_.tolist())
    probe = np.linspace(0, 1, 101).astype(np.float32).reshape(-1, 1)
    found = keras.ops.convert_to_numpy(layer(probe)).reshape(-1)
    assert found == pytest.approx(fitted.predict(probe.reshape(-1).astype(np.float64)), abs=1e-5)


def test_piecewise_linear_refuses_points_that_do_not_increase():
    with pytest.raises(ValueError, match="strictly increasing"):
        PiecewiseLinearCalibration([0.2, 0.2], [0.1, 0.3])
    single = PiecewiseLinearCalibration([0.4], [0.3])
    probe = np.array([[0.0], [0.9]], np.float32)
    found = keras.ops.convert_to_numpy(single(probe)).reshape(-1)
    assert found.tolist() == pytest.approx([0.3, 0.3])


@pytest.mark.parametrize(
    ("layer", "width"),
    [
        (TemperatureScaling(1.7, name="calibration"), 1),
        (TemperatureScaling(0.6, name="calibration"), 3),
        (PiecewiseLinearCalibration([0.1, 0.4, 0.8], [0.0, 0.5, 0.9], name="calibration"), 1),
    ],
)
def test_round_trips_through_keras_safe_mode_and_a_saved_model(tmp_path, layer, width):
    import tensorflow as tf

    model = _model(layer, width)
    rng = np.random.default_rng(1)
    probe = rng.dirichlet(np.ones(max(width, 2)), 20)[:, -width:].astype(np.float32)
    expected = keras.ops.convert_to_numpy(model(probe))
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True, compile=False)
    assert keras.ops.convert_to_numpy(loaded(probe)) == pytest.approx(expected, abs=1e-7)
    assert loaded.get_layer("calibration").get_config() == layer.get_config()
    model.export(tmp_path / "saved", format="tf_saved_model", verbose=False)
    served = tf.saved_model.load(str(tmp_path / "saved"))
    assert served.serve(tf.constant(probe)).numpy() == pytest.approx(expected, abs=1e-6)
