"""Fitting: what the config asks for reaches the network and `model.fit` (balanced class
weights, batch norm, L2, dropout, AdamW and its weight decay), and nothing when it asks for none;
the composition check (relative to the outputs' scale, NaN a failure, never a lost run); a NaN or
infinite training or validation loss or final metric is divergence (exit 6)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pytest
from conftest import make_table
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from typer.testing import CliRunner

from mlcli.cli.app import app
from mlcli.config.loading import load_config
from mlcli.data.splits import load_splits
from mlcli.errors import TrainingDivergedError
from mlcli.runs.directory import MODEL, SCHEMA, Run
from mlcli.training.callbacks import completed_epochs
from mlcli.training.fit import (
    COMPOSITION_TOLERANCE,
    check_finite_history,
    check_finite_metrics,
    compare_outputs,
)

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


# --- the composition check: relative to the outputs' scale, NaN fails, never raises ---------

FLOAT32_EPSILON = float(np.finfo(np.float32).eps)


@given(
    outputs=hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 40), st.sampled_from([1, 3])),
        elements=st.floats(-1e6, 1e6, width=32),
    ),
    ulps=st.integers(-64, 64),
)
def test_float32_rounding_passes_at_any_scale(outputs, ulps):
    """A difference of a few dozen float32 ulps of each output passes, whatever its magnitude
    (regression outputs in the hundreds of thousands did not under an absolute 1e-5)."""
    rounded = outputs + ulps * FLOAT32_EPSILON * np.abs(outputs)
    figures = compare_outputs(rounded, outputs, tolerance=COMPOSITION_TOLERANCE)
    assert figures["passed"] is True, figures
    assert figures["max_relative_difference"] <= COMPOSITION_TOLERANCE


@pytest.mark.parametrize("scale", [1.0, 1e3, 1e6])
def test_a_difference_beyond_the_tolerance_of_the_scale_fails(scale):
    direct = np.linspace(-scale, scale, 12, dtype=np.float32).reshape(-1, 1)
    raw = direct.copy()
    raw[3] += 3 * COMPOSITION_TOLERANCE * scale
    figures = compare_outputs(raw, direct, tolerance=COMPOSITION_TOLERANCE)
    assert figures["passed"] is False
    assert figures["max_relative_difference"] == pytest.approx(3 * COMPOSITION_TOLERANCE, rel=0.01)
    assert figures["max_abs_difference"] == pytest.approx(
        3 * COMPOSITION_TOLERANCE * scale, rel=0.01
    )


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["raw", "direct", "both"])
def test_nan_or_infinite_outputs_fail(bad, where):
    direct = np.full((5, 1), 0.25, np.float32)
    raw = direct.copy()
    if where in ("raw", "both"):
        raw[2] = bad
    if where in ("direct", "both"):
        direct[2] = bad
    figures = compare_outputs(raw, direct, tolerance=COMPOSITION_TOLERANCE)
    assert figures["passed"] is False
    assert figures["tolerance"] == COMPOSITION_TOLERANCE
    json.dumps(figures, allow_nan=False)  # None, never NaN, in manifest.json


def test_outputs_of_another_shape_fail():
    figures = compare_outputs(np.zeros((4, 3)), np.zeros((4, 1)), tolerance=COMPOSITION_TOLERANCE)
    assert figures["passed"] is False


def _offset_composition(offset: float):
    """`compose` with a stand-in saved model: the true one, its outputs shifted by `offset`."""
    from mlcli.models.core import compose

    def stand_in(
        preprocessor: keras.Model, core: keras.Model, schema: Any, **options: Any
    ) -> keras.Model:
        model = compose(preprocessor, core, schema, **options)
        shifted = keras.layers.Rescaling(scale=1.0, offset=offset)(model.outputs[0])
        return keras.Model(model.inputs, shifted, name="mlcli_model")

    return stand_in


@pytest.mark.parametrize("offset", [0.01, float("nan")])
def test_a_saved_model_that_differs_is_a_failed_check_not_a_lost_run(
    write_config, monkeypatch, offset
):
    import mlcli.training.fit as fit

    returned: list[dict[str, Any]] = []
    original = fit.fit_run

    def spy(*args: Any, **kwargs: Any) -> dict[str, Any]:
        returned.append(original(*args, **kwargs))
        return returned[-1]

    monkeypatch.setattr(fit, "compose", _offset_composition(offset))
    monkeypatch.setattr(fit, "fit_run", spy)
    config = write_config(training={"epochs": 1, "batch_size": 64})
    result = runner.invoke(app, ["train", str(config), "--quiet"])
    # a failed check is exit 4 (SelfCheckError), never 1, and never a lost run
    assert result.exit_code == 4, result.output
    assert "the composition check failed after training" in result.output
    assert "the complete run is kept" in result.output

    [details] = returned
    check = details["checks"]["composition"]
    assert check["passed"] is False
    assert check["tolerance"] == COMPOSITION_TOLERANCE
    if math.isnan(offset):
        assert check["max_relative_difference"] is None
    else:
        assert check["max_relative_difference"] == pytest.approx(offset, rel=1e-3)
        assert details["composition_max_abs_difference"] == pytest.approx(offset, rel=1e-3)
    runs_folder = Path(config).parent / "runs" / "tiny"
    [model] = [path for path in runs_folder.glob("*/model.keras") if not path.parent.is_symlink()]
    assert (model.parent / "metrics.json").is_file()


# --- divergence: a NaN or infinite validation loss, or final metric, is exit 6 ----------------


def _nan_validation_loss_from(epoch: int) -> keras.callbacks.Callback:
    """Runs first at each epoch's end and makes the validation loss NaN from `epoch` (0-based)."""

    class NanValidation(keras.callbacks.Callback):
        def on_epoch_end(self, index: int, logs: dict[str, Any] | None = None) -> None:
            if logs is not None and index >= epoch:
                logs["val_loss"] = float("nan")

    return NanValidation()


def test_a_nan_validation_loss_is_divergence_and_keeps_the_last_good_checkpoint(
    write_config, tmp_path, monkeypatch
):
    import mlcli.training.fit as fit

    original = fit.run_callbacks
    monkeypatch.setattr(
        fit,
        "run_callbacks",
        lambda *args, **kwargs: [_nan_validation_loss_from(1), *original(*args, **kwargs)],
    )
    config = write_config(training={"epochs": 4, "batch_size": 64, "early_stopping": None})
    result = runner.invoke(app, ["train", str(config), "--quiet"])

    assert result.exit_code == 6, result.output
    assert "validation loss became nan at epoch 2" in result.stderr
    [partial] = (tmp_path / "runs" / "tiny").glob(".*.partial")
    assert completed_epochs(partial / "checkpoints") == 1  # the last good epoch
    assert len((partial / "history.csv").read_text().strip().splitlines()) == 1 + 2  # stopped
    assert not (partial / "metrics.json").exists()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("key", ["loss", "val_loss"])
def test_a_non_finite_loss_names_its_first_epoch(tmp_path, bad, key):
    history = {"loss": [0.7, 0.6, 0.5], "val_loss": [0.71, 0.65, 0.6]}
    history[key][1:] = [bad, bad]
    with pytest.raises(TrainingDivergedError, match=r"loss became .* at epoch 6;"):
        check_finite_history(history, first_epoch=4, run=Run(tmp_path))
    history[key][1:] = [0.5, 0.4]
    check_finite_history(history, first_epoch=4, run=Run(tmp_path))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_final_metric_is_never_written_as_success(tmp_path, bad):
    metrics = {"train": {"loss": 0.4, "rows": 300}, "test": {"loss": 0.5, "auc": bad, "rows": 9}}
    with pytest.raises(TrainingDivergedError, match="the final test auc is"):
        check_finite_metrics(metrics, run=Run(tmp_path))
    metrics["test"]["auc"] = 0.8
    check_finite_metrics(metrics, run=Run(tmp_path))
