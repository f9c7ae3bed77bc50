"""Keras callbacks that make a run resumable, reproducible and observable.

`run_callbacks` lists those of a run, in the order they must run. `EpochSeeding` feeds each
epoch its shuffled batches and seeds dropout from (seed, epoch).

`RunCheckpoint` is Keras's `BackupAndRestore` (model, optimizer and epoch counter, double
buffered so that a kill during a save leaves the previous checkpoint) that also keeps the
early-stopping state and best weights, and never saves an epoch whose training or validation
loss is not finite. Keras's `TerminateOnNaN` stops on a NaN batch loss; `TerminateOnNonFiniteLoss`
stops at the end of an epoch whose validation loss is NaN or infinite (`training.fit` then
reports the divergence, exit 6).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from mlcli.config.schema import Config
from mlcli.reporting import Reporter
from mlcli.runs import directory as runs
from mlcli.tracking.tensorboard import tensorboard_callbacks
from mlcli.training.compile import schedule_callbacks

if TYPE_CHECKING:
    from mlcli.training.datasets import Split

CALLBACK_STATE = "callback_state.json"
BEST_WEIGHTS = "best_weights.npz"
KERAS_METADATA = "training_metadata.json"


def completed_epochs(checkpoint_dir: Path) -> int:
    """The number of epochs a checkpoint folder holds (0 when there is none)."""
    for name in (KERAS_METADATA, f"{KERAS_METADATA}.bkp"):
        path = checkpoint_dir / name
        if path.is_file():
            try:
                return int(json.loads(path.read_text())["epoch"])
            except (ValueError, KeyError):
                continue
    return 0


def run_callbacks(
    config: Config, run: runs.Run, reporter: Reporter, *, steps_per_epoch: int
) -> list[keras.callbacks.Callback]:
    """The callbacks of a run's fit (after `EpochSeeding`), stateful ones before the checkpoint."""
    settings = config.training.early_stopping
    stopping = None
    if settings is not None:
        stopping = keras.callbacks.EarlyStopping(
            monitor=settings.monitor,
            patience=settings.patience,
            min_delta=settings.min_delta,
            restore_best_weights=settings.restore_best_weights,
        )
    early = [stopping] if stopping is not None else []
    schedules = schedule_callbacks(config.training)
    # Order matters: stateful callbacks update before the checkpoint saves them.
    return [
        keras.callbacks.TerminateOnNaN(),
        TerminateOnNonFiniteLoss(),
        *early,
        *schedules,
        RunCheckpoint(run.file(runs.CHECKPOINTS), stateful=[*early, *schedules]),
        keras.callbacks.CSVLogger(str(run.file(runs.HISTORY)), append=True),
        ReporterCallback(reporter, epochs=config.training.epochs, steps_per_epoch=steps_per_epoch),
        *tensorboard_callbacks(config, run),
    ]


def kept_epoch(
    callbacks: list[keras.callbacks.Callback], *, epochs_run: int, epochs: int
) -> dict[str, Any]:
    """Which epoch's weights the model ended with, and why, after `fit` (manifest `kept_epoch`).

    Keras's `EarlyStopping` with `restore_best_weights` puts back the weights of its best epoch
    when training ends, whether it stopped training or not (Keras 3); a resumed run's callback
    holds the best epoch and weights that `RunCheckpoint` restored. Otherwise the weights are
    the last epoch's. Epochs count from 1, over the whole run (resumed sessions included).

    Returns:
        `epoch` (the kept one), `epochs_run`, `epochs` (configured), `reason` (`best_epoch` or
        `last_epoch`), `monitor` and `best` (early stopping's), and `why`, a sentence.
    """
    stopping = next((c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping)), None)
    ran = (
        f"it stopped training after epoch {epochs_run} of {epochs}"
        if epochs_run < epochs
        else f"all {epochs} epochs ran"
    )
    last = {"epoch": epochs_run, "epochs_run": epochs_run, "epochs": epochs}
    if stopping is None:
        return {**last, "reason": "last_epoch", "why": "the last epoch (no early stopping)"}
    monitor, best = stopping.monitor, _jsonable(stopping.best)
    watched = {"monitor": monitor, "best": best}
    if not stopping.restore_best_weights:
        why = f"the last epoch, as early stopping keeps it (restore_best_weights: false); {ran}"
        return {**last, **watched, "reason": "last_epoch", "why": why}
    if stopping.best_weights is None:
        why = f"the last epoch: early stopping saw no {monitor} to choose by"
        return {**last, **watched, "reason": "last_epoch", "why": why}
    epoch = int(stopping.best_epoch) + 1
    shown = "" if best is None else f" ({best:.4f})"
    why = f"early stopping restored the epoch of the best {monitor}{shown}; {ran}"
    return {**last, "epoch": epoch, **watched, "reason": "best_epoch", "why": why}


class EpochSeeding(keras.callbacks.Callback):
    """The training data shuffled, and dropout's random streams seeded, by (seed, epoch).

    Tying randomness to the epoch number, not to how far the process got, makes a resumed
    run see exactly the batches and dropout masks that an uninterrupted run would have seen.
    `dataset` is what `model.fit` reads.
    """

    def __init__(self, split: Split, *, batch_size: int, seed: int) -> None:
        super().__init__()
        self.seed = seed
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        steps = math.ceil(split.rows / batch_size)
        one_epoch = split.epoch_batches(batch_size=batch_size, seed=seed)
        self.dataset = (
            tf.data.Dataset.from_tensors(0)
            .flat_map(
                tf.autograph.experimental.do_not_convert(
                    lambda _: one_epoch(self.epoch.read_value())
                )
            )
            .apply(tf.data.experimental.assert_cardinality(steps))
            .prefetch(tf.data.AUTOTUNE)
        )

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch.assign(epoch)
        base = (self.seed * 7919 + epoch * 104729) % (2**31 - 1)
        count = 0
        for layer in self.model._flatten_layers():
            # Keras keeps dropout's state in SeedGenerators that save_weights does not store
            for generator in getattr(layer, "_seed_generators", []):
                count += 1
                state = np.array([base + count, 0])
                generator.state.assign(state.astype(generator.state.dtype))


def finite_losses(logs: dict[str, Any] | None) -> bool:
    """Whether an epoch's training and validation losses (those present) are finite."""
    values = [(logs or {}).get(key) for key in ("loss", "val_loss")]
    return all(value is None or math.isfinite(float(value)) for value in values)


class TerminateOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training after an epoch whose training or validation loss is NaN or infinite.

    Keras's `TerminateOnNaN` sees the batch losses of training only; a model whose validation
    loss is NaN every epoch would otherwise train to the end.
    """

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if not finite_losses(logs):
            self.model.stop_training = True


# The counters of Keras callbacks that decide what happens next, saved with each checkpoint.
_STATE_ATTRIBUTES: dict[type, tuple[str, ...]] = {
    keras.callbacks.EarlyStopping: ("wait", "best", "best_epoch"),
    keras.callbacks.ReduceLROnPlateau: ("wait", "best", "cooldown_counter"),
}


def _jsonable(value: Any) -> Any:
    return None if value is None else float(value) if not isinstance(value, int) else value


@contextmanager
def signals_held() -> Iterator[None]:
    """Holds SIGINT and SIGTERM back while the block runs, then delivers the first one.

    A KeyboardInterrupt raised inside h5py's writing of a checkpoint either cuts the file short
    or is swallowed there ("Exception ignored"), and training then runs to its end: the stop
    is taken once the checkpoint is whole. Outside the main thread (where Python cannot set
    handlers) the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {number: signal.signal(number, lambda n, _: caught.append(n)) for number in held}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if caught:
            signal.raise_signal(caught[0])  # to the handlers the command set


class RunCheckpoint(keras.callbacks.BackupAndRestore):
    """Backs up the training state at each epoch's end and restores it when a run resumes.

    Besides Keras's own backup (weights, optimizer, epoch), it keeps the counters of
    early stopping and learning-rate reduction and early stopping's best weights.
    """

    def __init__(self, checkpoint_dir: Path, *, stateful: list[keras.callbacks.Callback]) -> None:
        super().__init__(str(checkpoint_dir), delete_checkpoint=False, double_checkpoint=True)
        self.checkpoint_dir = checkpoint_dir
        self.stateful = [c for c in stateful if type(c) in _STATE_ATTRIBUTES]

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        try:
            super().on_train_begin(logs)
        except ValueError:
            # Keras falls back to the previous checkpoint only when the weights file does not
            # open (OSError); a save cut short by SIGTERM or a kill can leave one that opens and
            # holds no variables ("expected 2 variables, but received 0"): fall back the same way
            previous = Path(self._prev_weights_path)
            if not previous.is_file():
                raise
            shutil.copyfile(previous, self._weights_path)
            metadata = Path(self._prev_training_metadata_path)
            if metadata.is_file():
                shutil.copyfile(metadata, self._training_metadata_path)
            super().on_train_begin(logs)
        state_file = self.checkpoint_dir / CALLBACK_STATE
        if not state_file.is_file():
            return
        states = json.loads(state_file.read_text())
        for index, callback in enumerate(self.stateful):
            for name, value in states.get(str(index), {}).items():
                setattr(callback, name, value)
            weights_file = self.checkpoint_dir / BEST_WEIGHTS
            if isinstance(callback, keras.callbacks.EarlyStopping) and weights_file.is_file():
                with np.load(weights_file, allow_pickle=False) as stored:
                    callback.best_weights = [stored[f"w{i}"] for i in range(len(stored.files))]

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if not finite_losses(logs):
            return  # keep the last good checkpoint
        with signals_held():
            self._save(epoch, logs)

    def _save(self, epoch: int, logs: dict[str, Any] | None) -> None:
        super().on_epoch_end(epoch, logs)
        states = {}
        for index, callback in enumerate(self.stateful):
            names = _STATE_ATTRIBUTES[type(callback)]
            states[str(index)] = {name: _jsonable(getattr(callback, name)) for name in names}
            if isinstance(callback, keras.callbacks.EarlyStopping):
                self._save_best_weights(callback, epoch)
        temporary = self.checkpoint_dir / f".{CALLBACK_STATE}.tmp"
        temporary.write_text(json.dumps(states))
        os.replace(temporary, self.checkpoint_dir / CALLBACK_STATE)

    def _save_best_weights(self, stopping: keras.callbacks.EarlyStopping, epoch: int) -> None:
        target = self.checkpoint_dir / BEST_WEIGHTS
        improved = stopping.best_epoch == epoch or not target.exists()
        if not (stopping.restore_best_weights and stopping.best_weights is not None and improved):
            return
        temporary = self.checkpoint_dir / f".{BEST_WEIGHTS}.tmp.npz"
        arrays = {f"w{i}": w for i, w in enumerate(stopping.best_weights)}
        np.savez(temporary, **arrays)
        os.replace(temporary, target)


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
