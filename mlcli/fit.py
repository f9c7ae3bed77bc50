"""Fitting with TensorFlow: encode once, `model.fit` on `tf.data`, save the composed model.

Imported only by commands that train, after TensorFlow has been imported quietly.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlcli import runs
from mlcli._tensorflow import import_tensorflow
from mlcli.config import Config
from mlcli.errors import ConfigError, RunError, TrainingDivergedError
from mlcli.features import FeatureSchema, encode_labels, model_inputs
from mlcli.reporting import Reporter
from mlcli.splits import Splits

tf = import_tensorflow()
import keras  # noqa: E402

from mlcli.model import (  # noqa: E402
    build_core,
    compile_core,
    compose,
    predict_raw,
    schedule_callbacks,
)
from mlcli.preprocessing import build_preprocessor, encode  # noqa: E402


@dataclass
class EncodedSplit:
    """One split as the core network sees it: encoded features and label indices or values."""

    features: dict[str, np.ndarray]
    labels: np.ndarray

    @property
    def rows(self) -> int:
        """Number of rows."""
        return len(self.labels)


# The composed model must reproduce the core's outputs on the encoded data.
COMPOSITION_TOLERANCE = 1e-5


class ReporterCallback(keras.callbacks.Callback):
    """Forwards Keras's training events to a `Reporter`."""

    def __init__(self, reporter: Reporter, *, epochs: int, steps_per_epoch: int) -> None:
        super().__init__()
        self.reporter = reporter
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self._epoch_started = 0.0
        self._last_step = 0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.reporter.start_progress("training", self.epochs * self.steps_per_epoch)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch_started = time.monotonic()
        self._last_step = 0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        step = batch + 1
        shown = {k: float(v) for k, v in (logs or {}).items() if k == "loss"}
        self.reporter.advance(step - self._last_step, **shown)
        self._last_step = step

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.reporter.advance(self.steps_per_epoch - self._last_step)
        values = {k: float(v) for k, v in (logs or {}).items() if k != "learning_rate"}
        self.reporter.epoch(epoch + 1, self.epochs, time.monotonic() - self._epoch_started, values)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.reporter.stop_progress()


def select_device(device: str | None) -> dict[str, Any]:
    """Applies `--device` and describes what will be used."""
    gpus = tf.config.list_physical_devices("GPU")
    choice = device or "auto"
    if choice == "cpu":
        tf.config.set_visible_devices([], "GPU")
        gpus = []
    elif choice.startswith("gpu") and not gpus:
        raise ConfigError(f"--device {choice}: no GPU is visible to TensorFlow (found none)")
    return {
        "requested": choice,
        "type": "gpu" if gpus else "cpu",
        "gpus": [gpu.name for gpu in gpus],
        "strategy": "default",
    }


def encode_split(
    preprocessor: keras.Model, table: Any, schema: FeatureSchema, *, source: str
) -> EncodedSplit:
    """A split through the preprocessing layers, once."""
    arrays = model_inputs(table, schema, source=source)
    labels = encode_labels(table.column(schema.target.column), schema.target, source=source)
    return EncodedSplit(encode(preprocessor, arrays, schema), labels)


def _dataset(split: EncodedSplit, *, batch_size: int, seed: int | None) -> Any:
    dataset = tf.data.Dataset.from_tensor_slices((split.features, split.labels))
    if seed is not None:
        dataset = dataset.shuffle(split.rows, seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _class_weight(schema: FeatureSchema, labels: np.ndarray, mode: str) -> dict[int, float] | None:
    if mode != "balanced" or schema.target.task == "regression":
        return None
    counts = np.bincount(labels, minlength=len(schema.target.classes))
    return {
        index: float(len(labels) / (len(counts) * count)) if count else 0.0
        for index, count in enumerate(counts)
    }


def _callbacks(config: Config, run: runs.Run, reporter: Reporter, steps: int) -> list[Any]:
    callbacks: list[Any] = [
        keras.callbacks.TerminateOnNaN(),
        *schedule_callbacks(config.training),
        keras.callbacks.CSVLogger(str(run.file(runs.HISTORY)), append=True),
        keras.callbacks.BackupAndRestore(str(run.file(runs.CHECKPOINTS)), delete_checkpoint=False),
        ReporterCallback(reporter, epochs=config.training.epochs, steps_per_epoch=steps),
    ]
    stopping = config.training.early_stopping
    if stopping is not None:
        callbacks.insert(
            0,
            keras.callbacks.EarlyStopping(
                monitor=stopping.monitor,
                patience=stopping.patience,
                min_delta=stopping.min_delta,
                restore_best_weights=stopping.restore_best_weights,
            ),
        )
    return callbacks


def _check_finite(history: dict[str, list[float]], run: runs.Run) -> None:
    losses = history.get("loss", [])
    if any(not math.isfinite(value) for value in losses):
        raise TrainingDivergedError(
            f"the training loss became {losses[-1]} at epoch {len(losses)}; lower "
            f"training.learning_rate or check the data. The last good checkpoint is kept "
            f"in {run.file(runs.CHECKPOINTS)}"
        )


def _verify_composition(
    model: keras.Model, core: keras.Model, splits: Splits, schema: FeatureSchema, encoded: Any
) -> float:
    sample = splits.validation.slice(0, 256)
    raw = predict_raw(model, model_inputs(sample, schema, source="validation"), schema)
    direct = core.predict({k: v[:256] for k, v in encoded.features.items()}, verbose=0)
    difference = float(np.max(np.abs(raw - direct))) if len(raw) else 0.0
    if difference > COMPOSITION_TOLERANCE:
        raise RunError(
            f"internal check failed: the saved model differs from the trained core by "
            f"{difference:.2e} (> {COMPOSITION_TOLERANCE}); please report this bug"
        )
    return difference


def fit_run(
    config: Config,
    splits: Splits,
    schema: FeatureSchema,
    run: runs.Run,
    *,
    reporter: Reporter,
    device: str | None,
    verbose: bool,
    resuming: bool,
) -> dict[str, Any]:
    """Fits, saves model.keras, history, metrics and plots into the run; returns manifest fields."""
    del verbose, resuming  # TensorFlow is already imported; BackupAndRestore finds checkpoints
    started = time.monotonic()
    device_info = select_device(device or "auto")
    keras.utils.set_random_seed(config.seed)
    preprocessor = build_preprocessor(schema)
    train = encode_split(preprocessor, splits.train, schema, source="training split")
    validation = encode_split(preprocessor, splits.validation, schema, source="validation split")
    test = None
    if splits.test is not None:
        test = encode_split(preprocessor, splits.test, schema, source="test split")
    encoded_at = time.monotonic()
    reporter.event("encoded", f"{train.rows} training rows in {encoded_at - started:.1f}s")

    shapes = {name: array.shape[1:] for name, array in train.features.items()}
    core = build_core(schema, config.model, encoded_shapes=shapes)
    batch_size = config.training.batch_size
    steps = math.ceil(train.rows / batch_size)
    compile_core(core, schema.target.task, config.training, steps_per_epoch=steps)
    history = core.fit(
        _dataset(train, batch_size=batch_size, seed=config.seed),
        validation_data=_dataset(validation, batch_size=max(batch_size, 1024), seed=None),
        epochs=config.training.epochs,
        class_weight=_class_weight(schema, train.labels, config.training.class_weight),
        callbacks=_callbacks(config, run, reporter, steps),
        verbose=0,
    )
    _check_finite(history.history, run)
    fitted_at = time.monotonic()

    model = compose(preprocessor, core, schema)
    difference = _verify_composition(model, core, splits, schema, validation)
    model.save(run.file(runs.MODEL))
    metrics = evaluate_splits(core, {"train": train, "validation": validation, "test": test})
    metrics["threshold"] = 0.5 if schema.target.task == "binary" else None
    runs.write_json(run.file(runs.METRICS), metrics)
    from mlcli.plots import plot_learning_curves

    plot_learning_curves(run.file(runs.HISTORY), run.file(runs.LEARNING_CURVES))
    return {
        "device": device_info,
        "epochs_run": len(history.history.get("loss", [])),
        "composition_max_abs_difference": difference,
        "seconds": {
            "read_and_encode": encoded_at - started,
            "fit": fitted_at - encoded_at,
            "save_and_evaluate": time.monotonic() - fitted_at,
        },
    }


def evaluate_splits(core: keras.Model, splits: dict[str, EncodedSplit | None]) -> dict[str, Any]:
    """The compiled metrics of the core on every encoded split."""
    results: dict[str, Any] = {}
    for name, split in splits.items():
        if split is None:
            continue
        dataset = _dataset(split, batch_size=4096, seed=None)
        values = core.evaluate(dataset, verbose=0, return_dict=True)
        results[name] = {key: float(value) for key, value in values.items()}
        results[name]["rows"] = split.rows
    return results
