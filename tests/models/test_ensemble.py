"""TabM-style ensembles (`model.ensemble`): the saved output is the members' mean, the loss the
mean of the members' losses, the layers load with `safe_mode`, and bad values are refused."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from mlcli.cli.app import app

runner = CliRunner()


def _core(task: str, *, k: int = 3, classes: int = 3):
    import keras

    from mlcli.config.training import MlpConfig
    from mlcli.features.schema import ColumnSchema, FeatureSchema, TargetSchema
    from mlcli.models.core import build_core

    columns = [ColumnSchema(name=f"x{i}", type="numeric", dtype="float32") for i in range(4)]
    target = TargetSchema(
        column="y",
        task=task,
        classes=[str(c) for c in range(classes)] if task != "regression" else [],
        mean=2.0,
        std=3.0,
    )
    schema = FeatureSchema(columns=columns, target=target)
    keras.utils.set_random_seed(0)
    config = MlpConfig(hidden_units=[8, 8], ensemble=k)
    return build_core(schema, config, encoded_shapes={"numeric": (4,)})


@pytest.mark.parametrize(("task", "classes"), [("binary", 2), ("multiclass", 3), ("regression", 0)])
def test_the_output_is_the_mean_of_the_members(task, classes):
    import keras

    core = _core(task, classes=classes)
    x = {"numeric": np.random.default_rng(1).normal(size=(32, 4)).astype("float32")}
    mean = keras.ops.convert_to_numpy(core(x, training=False))
    members = keras.ops.convert_to_numpy(core(x, training=True))  # no dropout, no batch norm
    if task == "multiclass":
        assert members.shape == (32, 3, 3) and mean.shape == (32, 3)
        np.testing.assert_allclose(mean.sum(axis=1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(mean, members.mean(axis=1), rtol=1e-5, atol=1e-6)
    else:
        assert members.shape == (32, 3) and mean.shape == (32, 1)
        np.testing.assert_allclose(mean[:, 0], members.mean(axis=1), rtol=1e-5, atol=1e-6)
    assert np.ptp(members, axis=1).max() > 1e-4  # the members differ


@pytest.mark.parametrize("task", ["binary", "regression", "multiclass"])
def test_the_loss_is_the_mean_of_the_members_losses(task):
    import keras

    from mlcli.training.members import MemberLoss

    rng = np.random.default_rng(2)
    if task == "multiclass":
        y_pred = rng.dirichlet(np.ones(3), size=(16, 4)).astype("float32")  # (rows, k, classes)
        y_true = rng.integers(0, 3, size=16)
        single = keras.losses.SparseCategoricalCrossentropy()
        each = [single(y_true, y_pred[:, i]) for i in range(4)]
    else:
        y_pred = rng.uniform(0.05, 0.95, size=(16, 4)).astype("float32")  # (rows, k)
        y_true = rng.integers(0, 2, size=16).astype("float32")
        single = (
            keras.losses.BinaryCrossentropy()
            if task == "binary"
            else keras.losses.MeanSquaredError()
        )
        each = [single(y_true[:, None], y_pred[:, i : i + 1]) for i in range(4)]
    loss = float(MemberLoss(task)(y_true, y_pred))
    assert loss == pytest.approx(float(np.mean([float(v) for v in each])), rel=1e-5)


def test_label_smoothing_moves_the_targets_towards_uniform():
    from mlcli.training.members import MemberLoss

    y_pred = np.full((4, 3), 1 / 3, dtype="float32")
    y_true = np.array([0, 1, 2, 0])
    # against the uniform prediction the loss is log 3, smoothed or not
    assert float(MemberLoss("multiclass", 0.1)(y_true, y_pred)) == pytest.approx(np.log(3), 1e-5)
    confident = np.tile(np.array([[0.98, 0.01, 0.01]], "float32"), (4, 1))
    plain = float(MemberLoss("multiclass")(np.zeros(4), confident))
    smoothed = float(MemberLoss("multiclass", 0.2)(np.zeros(4), confident))
    assert smoothed > plain  # a smoothed target penalises overconfidence


def test_the_layers_serialize_and_load_with_safe_mode(tmp_path):
    import keras

    core = _core("binary", k=4)
    x = {"numeric": np.random.default_rng(3).normal(size=(8, 4)).astype("float32")}
    before = keras.ops.convert_to_numpy(core(x))
    core.save(tmp_path / "core.keras")
    keras.backend.clear_session()
    import mlcli.ensemble_layers  # noqa: F401  (registers the layers, as load_model does)

    loaded = keras.saving.load_model(tmp_path / "core.keras", safe_mode=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), before, atol=1e-6)
    names = {type(layer).__name__ for layer in loaded.layers}
    assert {"EnsembleInput", "BatchEnsembleDense", "EnsembleHead", "MemberMean"} <= names
    for layer in loaded.layers:
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()


@pytest.mark.parametrize(
    ("model", "key", "found"),
    [
        ({"ensemble": 0}, "model.ensemble", "greater than or equal to 1"),
        ({"ensemble": 1000}, "model.ensemble", "less than or equal to 64"),
        ({"type": "ft_transformer", "ensemble": 4}, "model.ensemble", "ensemble"),
        (
            {"numeric_embedding": {"type": "piecewise_linear", "binning": "trees"}},
            "model.numeric_embedding.binning",
            "'tree'",
        ),
    ],
)
def test_bad_ensemble_and_binning_values_are_config_errors(write_config, model, key, found):
    result = runner.invoke(app, ["validate", str(write_config(model=model))])
    assert result.exit_code == 2, result.output
    assert key in result.stderr and found in result.stderr


@pytest.mark.parametrize(
    ("training", "found"),
    [({"label_smoothing": 1.0}, "less than 1"), ({"label_smoothing": -0.1}, "greater than")],
)
def test_bad_label_smoothing_is_a_config_error(write_config, training, found):
    result = runner.invoke(app, ["validate", str(write_config(training=training))])
    assert result.exit_code == 2, result.output
    assert "training.label_smoothing" in result.stderr and found in result.stderr


def test_a_robust_transform_is_accepted_and_a_misspelt_one_refused(write_config):
    good = write_config(features={"age": {"type": "numeric", "transform": "robust"}})
    assert runner.invoke(app, ["validate", str(good)]).exit_code == 0
    bad = write_config(features={"age": {"type": "numeric", "transform": "robst"}})
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2 and "'robust'" in result.stderr
