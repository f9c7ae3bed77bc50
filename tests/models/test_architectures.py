"""Model families and numeric encodings: each builds, trains on the tiny table, and survives a
`model.keras` round trip with `safe_mode=True` giving identical predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.csv as pa_csv
import pytest
from typer.testing import CliRunner

from mlcli.cli.app import app
from mlcli.config.loading import load_config

runner = CliRunner()

NUMERIC_SPECS = {"age": {"type": "numeric", "transform": "quantile"}}
FAMILIES = {
    "mlp": {"type": "mlp", "hidden_units": [16]},
    "mlp-piecewise": {
        "type": "mlp",
        "hidden_units": [16],
        "numeric_embedding": {"type": "piecewise_linear", "bins": 8, "dim": 4},
    },
    "mlp-periodic": {
        "type": "mlp",
        "hidden_units": [16],
        "numeric_embedding": {"type": "periodic", "frequencies": 4, "dim": 4},
    },
    "mlp-ensemble": {"type": "mlp", "hidden_units": [16, 8], "ensemble": 3, "batch_norm": True},
    "resnet": {"type": "resnet", "width": 16, "blocks": 2},
    "resnet-ensemble": {
        "type": "resnet",
        "width": 16,
        "blocks": 1,
        "ensemble": 4,
        "numeric_embedding": {"type": "piecewise_linear", "bins": 8, "dim": 4},
    },
    "ft_transformer": {"type": "ft_transformer", "token_dim": 8, "heads": 2, "blocks": 1},
    "ft_transformer-piecewise": {
        "type": "ft_transformer",
        "token_dim": 8,
        "heads": 2,
        "blocks": 1,
        "numeric_embedding": {"type": "piecewise_linear", "bins": 4},
    },
}


def _features(**extra: object) -> dict[str, object]:
    return {"review": "text", "grade": "categorical", **NUMERIC_SPECS, **extra}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_round_trips_through_model_keras(write_config, tmp_path, family):
    import keras

    from mlcli.data.splits import load_splits
    from mlcli.inference.predictor import Predictor
    from mlcli.models.core import build_core, compose
    from mlcli.preprocessing.inputs import model_inputs
    from mlcli.preprocessing.layers import build_preprocessor, encode
    from mlcli.runs.loading import load_model
    from mlcli.training.data import prepare_schema

    path = write_config(
        model=FAMILIES[family],
        features=_features(exclude=["id", "tier", "value"]),
    )
    config = load_config(path)
    splits = load_splits(config)
    schema = prepare_schema(config, splits)
    preprocessor = build_preprocessor(schema)
    raw = model_inputs(splits.validation, schema, source="validation")
    shapes = {k: v.shape[1:] for k, v in encode(preprocessor, raw, schema).items()}
    model = compose(preprocessor, build_core(schema, config.model, encoded_shapes=shapes), schema)
    before = Predictor(model, schema).outputs(splits.validation, source="validation")
    model.save(tmp_path / "model.keras")
    keras.backend.clear_session()
    reloaded = load_model(tmp_path / "model.keras")
    after = Predictor(reloaded, schema).outputs(splits.validation, source="validation")
    assert np.isfinite(before).all()
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("family", "target", "task", "metric"),
    [
        ("mlp-piecewise", "label", "binary", "accuracy"),
        ("mlp-ensemble", "tier", "multiclass", "accuracy"),
        pytest.param("resnet-ensemble", "value", "regression", "rmse", marks=pytest.mark.slow),
        pytest.param("mlp-ensemble", "label", "binary", "accuracy", marks=pytest.mark.slow),
        pytest.param("resnet", "value", "regression", "rmse", marks=pytest.mark.slow),
        pytest.param("ft_transformer", "tier", "multiclass", "accuracy", marks=pytest.mark.slow),
    ],
)
def test_family_trains_and_the_saved_model_reproduces_its_metrics(
    write_config, tiny_csv, family, target, task, metric
):
    from mlcli.features.build import encode_labels
    from mlcli.inference.labels import predicted_labels
    from mlcli.inference.predictor import Predictor
    from mlcli.runs.loading import open_run

    exclude = [c for c in ("id", "label", "tier", "value") if c != target]
    path = write_config(
        model=FAMILIES[family],
        target={"column": target, "task": task},
        features=_features(exclude=exclude),
        data={"train": tiny_csv.name, "validation": 0.25, "test": 0.25},
    )
    result = runner.invoke(app, ["train", str(path), "--quiet"])
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip().splitlines()[-1])
    recorded = json.loads((run / "metrics.json").read_text())["test"]
    assert recorded["rows"] == 100

    loaded = open_run(run)
    table = pa_csv.read_csv(tiny_csv)
    from mlcli.data.splits import TEST_SPLIT_SEED, split_off

    _, test = split_off(table, loaded.config, fraction=0.25, seed=TEST_SPLIT_SEED)
    outputs = Predictor(loaded.model, loaded.schema).outputs(test, source="t")
    truth = encode_labels(test.column(target), loaded.schema.target, source="t")
    if task == "regression":
        value = float(np.sqrt(np.mean((outputs.reshape(-1) - truth) ** 2)))
        assert value == pytest.approx(recorded[metric], rel=1e-4)
    else:
        predicted = predicted_labels(outputs, loaded.schema.target).to_pylist()
        classes = np.asarray(loaded.schema.target.classes, dtype=object)
        value = float(np.mean(np.asarray(predicted, dtype=object) == classes[truth]))
        assert value == pytest.approx(recorded[metric], abs=1e-6)


def test_piecewise_linear_encoding_matches_the_paper():
    import keras

    from mlcli.layers import PiecewiseLinearEmbedding

    # one feature, bins [0, 1) and [1, 3]: the outer sides are not clipped
    layer = PiecewiseLinearEmbedding([[0.0, 1.0, 3.0]], units=2)
    layer.build((None, 1))
    layer.set_weights([np.eye(2, dtype="float32")[None], np.zeros((1, 2), "float32")])
    values = np.array([[-1.0], [0.5], [1.0], [2.0], [5.0]], dtype="float32")
    encoded = keras.ops.convert_to_numpy(layer(values))[:, 0, :]
    expected = [[-1.0, 0.0], [0.5, 0.0], [1.0, 0.0], [1.0, 0.5], [1.0, 2.0]]
    np.testing.assert_allclose(encoded, expected, atol=1e-6)


def test_quantile_transform_layer_matches_its_numpy_twin():
    import keras

    from mlcli.layers import QuantileTransform, quantile_scores

    rng = np.random.default_rng(0)
    sample = np.concatenate([np.zeros(500), rng.lognormal(0, 1, 500)])  # ties at 0
    quantiles = np.quantile(sample, np.linspace(0, 1, 33)).tolist()
    values = np.array([-1.0, 0.0, 0.3, 1.0, 2.5, 100.0, np.nan], dtype="float32")[:, None]
    scores = keras.ops.convert_to_numpy(QuantileTransform(quantiles)(values))
    np.testing.assert_allclose(scores[:-1], quantile_scores(values[:-1], quantiles), atol=1e-4)
    assert np.isfinite(scores).all()
    assert scores[0, 0] < scores[2, 0] < scores[3, 0] < scores[4, 0] < scores[5, 0]
    assert scores.min() > -3.2 and scores.max() < 3.2


def test_a_misspelt_model_type_is_a_config_error(write_config):
    path = write_config(model={"type": "transfomer"})
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "model.type" in result.stderr and "'ft_transformer'" in result.stderr


def test_a_family_rejects_another_familys_key(write_config):
    path = write_config(model={"type": "resnet", "hidden_units": [8]})
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "model.hidden_units" in result.stderr and "width" in result.stderr


def test_test_fraction_and_target_scale(write_config):
    from mlcli.data.splits import load_splits
    from mlcli.training.data import prepare_schema

    path = write_config(
        data={"train": "data.csv", "validation": 0.25, "test": 0.2},
        target={"column": "value", "task": "regression", "scale": 0.5},
        features=_features(exclude=["id", "label", "tier"]),
    )
    config = load_config(path)
    first = load_splits(config)
    assert (first.train.num_rows, first.validation.num_rows, first.test.num_rows) == (240, 80, 80)
    other_seed = load_config(path, overrides=["seed=99"])
    second = load_splits(other_seed)
    # the test rows do not depend on the training seed; the validation rows do
    assert second.test.column("id").to_pylist() == first.test.column("id").to_pylist()
    assert second.validation.column("id").to_pylist() != first.validation.column("id").to_pylist()
    schema = prepare_schema(config, first)
    raw = np.asarray(first.train.column("value").to_pylist())
    assert schema.target.scale == 0.5
    assert schema.target.mean == pytest.approx(raw.mean() * 0.5, rel=1e-6)
