"""Fitting: what the config asks for reaches the network and `model.fit` (balanced class
weights, batch norm, L2, dropout, AdamW and its weight decay), and nothing when it asks for none."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pytest
from conftest import make_table
from typer.testing import CliRunner

from mlcli.cli.app import app
from mlcli.config.loading import load_config
from mlcli.data.splits import load_splits
from mlcli.runs.directory import MODEL, SCHEMA

runner = CliRunner()


def _train(config: Path) -> Path:
    result = runner.invoke(app, ["train", str(config), "--quiet"])
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip().splitlines()[-1])
    assert run.is_dir()
    return run


def _spy_on_fit(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What each `model.fit` call receives: the compiled optimizer and the class weights."""
    calls: list[dict[str, Any]] = []
    original = keras.Model.fit

    def fit(self: keras.Model, *args: Any, **kwargs: Any) -> Any:
        calls.append({"optimizer": self.optimizer, "class_weight": kwargs.get("class_weight")})
        return original(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", fit)
    return calls


def _imbalanced_csv(folder: Path) -> str:
    """The tiny table with two of every three `low` rows left out: 200 high, 67 low."""
    table = make_table()
    low = pc.equal(table.column("label"), "low").to_numpy(zero_copy_only=False)
    keep = [not is_low or index % 3 == 0 for index, is_low in enumerate(low)]
    pa_csv.write_csv(table.filter(pa.array(keep)), folder / "imbalanced.csv")
    return "imbalanced.csv"


def _core_layers(run: Path) -> list[keras.layers.Layer]:
    model = keras.saving.load_model(run / MODEL, safe_mode=True)
    return model.get_layer("core").layers


def test_class_weight_batch_norm_l2_and_adamw_reach_the_model_and_the_fit(
    write_config, tmp_path, monkeypatch
):
    calls = _spy_on_fit(monkeypatch)
    data = {"train": _imbalanced_csv(tmp_path), "validation": 0.25}
    config = write_config(
        data=data,
        training={
            "epochs": 2,
            "batch_size": 64,
            "class_weight": "balanced",
            "optimizer": "adamw",
            "weight_decay": 0.02,
        },
        model={"hidden_units": [16], "dropout": 0.2, "batch_norm": True, "l2": 0.001},
    )
    run = _train(config)

    [call] = calls
    assert isinstance(call["optimizer"], keras.optimizers.AdamW)
    assert call["optimizer"].weight_decay == pytest.approx(0.02)
    # balanced: the training rows over (classes x the class's training rows), by class index
    classes = json.loads((run / SCHEMA).read_text())["target"]["classes"]
    labels = load_splits(load_config(config)).train.column("label").to_pylist()
    expected = {i: len(labels) / (len(classes) * labels.count(c)) for i, c in enumerate(classes)}
    assert call["class_weight"] == pytest.approx(expected)
    assert max(expected.values()) > 1.4  # the rare class weighs more

    layers = _core_layers(run)
    regularized = [layer for layer in layers if getattr(layer, "kernel_regularizer", None)]
    assert [layer.units for layer in regularized] == [16]  # the hidden layer, not the head
    assert isinstance(regularized[0].kernel_regularizer, keras.regularizers.L2)
    assert regularized[0].kernel_regularizer.get_config()["l2"] == pytest.approx(0.001)
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in layers) == 1
    dropouts = [layer.rate for layer in layers if isinstance(layer, keras.layers.Dropout)]
    assert dropouts == [pytest.approx(0.2)]


def test_without_the_options_none_of_them_reaches_the_model_or_the_fit(
    write_config, tmp_path, monkeypatch
):
    calls = _spy_on_fit(monkeypatch)
    data = {"train": _imbalanced_csv(tmp_path), "validation": 0.25}
    config = write_config(
        data=data,
        training={"epochs": 1, "batch_size": 64, "class_weight": "none", "optimizer": "adam"},
        model={"hidden_units": [16], "dropout": 0.0, "batch_norm": False, "l2": 0.0},
    )
    run = _train(config)
    [call] = calls
    assert call["class_weight"] is None
    assert type(call["optimizer"]) is keras.optimizers.Adam
    layers = _core_layers(run)
    assert not [layer for layer in layers if getattr(layer, "kernel_regularizer", None)]
    assert not [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert not [layer for layer in layers if isinstance(layer, keras.layers.Dropout)]
