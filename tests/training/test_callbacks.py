"""The kept epoch: which epoch's weights a fit ends with, and why, as Keras's own
`EarlyStopping` decides it (driven here epoch by epoch on a one-weight model); signals held
during a checkpoint save."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlcli.training.callbacks import kept_epoch

losses = st.lists(st.floats(0.01, 10.0, allow_nan=False), min_size=1, max_size=12)


def _model() -> keras.Model:
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    model.stop_training = False
    return model


def _drive(
    stopping: keras.callbacks.EarlyStopping,
    model: keras.Model,
    values: list[float],
    *,
    first: int = 0,
) -> int:
    """Runs the epochs `first`.. of `values` as fit would (the weight is the epoch number);
    returns the epoch after the last one run."""
    stopping.set_model(model)
    epoch = first
    for epoch in range(first, len(values)):
        model.set_weights([np.full((1, 1), epoch + 1, "float32")])
        stopping.on_epoch_end(epoch, {"val_loss": values[epoch]})
        if model.stop_training:
            break
    stopping.on_train_end()
    return epoch + 1


def _final_weight(model: keras.Model) -> int:
    return int(model.get_weights()[0][0, 0])


@settings(max_examples=40, deadline=None)
@given(values=losses, patience=st.integers(0, 4), min_delta=st.sampled_from([0.0, 0.5]))
def test_the_kept_epoch_is_the_one_whose_weights_the_model_ends_with(values, patience, min_delta):
    model = _model()
    stopping = keras.callbacks.EarlyStopping(
        patience=patience, min_delta=min_delta, restore_best_weights=True
    )
    stopping.on_train_begin()
    run = _drive(stopping, model, values)
    kept = kept_epoch([stopping], epochs_run=run, epochs=len(values))
    assert kept["epoch"] == _final_weight(model)
    assert kept["reason"] == "best_epoch" and kept["epochs_run"] == run
    assert ("stopped training" in kept["why"]) == (run < len(values))
    if min_delta == 0.0:  # the first epoch of the lowest validation loss
        assert kept["epoch"] == int(np.argmin(values[:run])) + 1
        assert kept["best"] == min(values[:run])


@settings(max_examples=25, deadline=None)
@given(values=losses.filter(lambda v: len(v) >= 2), data=st.data())
def test_a_resumed_fit_keeps_the_best_epoch_of_the_whole_run(values, data):
    """The state `RunCheckpoint` saves (counters and best weights) carried into a new callback."""
    stop_after = data.draw(st.integers(1, len(values) - 1))
    model = _model()
    first = keras.callbacks.EarlyStopping(patience=len(values), restore_best_weights=True)
    first.on_train_begin()
    _drive(first, model, values[:stop_after])
    resumed = keras.callbacks.EarlyStopping(patience=len(values), restore_best_weights=True)
    resumed.on_train_begin()
    for name in ("wait", "best", "best_epoch", "best_weights"):
        setattr(resumed, name, getattr(first, name))
    run = _drive(resumed, model, values, first=stop_after)
    kept = kept_epoch([resumed], epochs_run=run, epochs=len(values))
    assert kept["epoch"] == int(np.argmin(values)) + 1 == _final_weight(model)


@given(values=losses)
@settings(max_examples=10, deadline=None)
def test_without_restoring_or_early_stopping_the_last_epoch_is_kept(values):
    model = _model()
    stopping = keras.callbacks.EarlyStopping(patience=1, restore_best_weights=False)
    stopping.on_train_begin()
    run = _drive(stopping, model, values)
    kept = kept_epoch([stopping], epochs_run=run, epochs=len(values))
    assert kept["epoch"] == run == _final_weight(model)
    assert kept["reason"] == "last_epoch"
    assert "restore_best_weights: false" in kept["why"]
    plain = kept_epoch([keras.callbacks.TerminateOnNaN()], epochs_run=3, epochs=3)
    assert (plain["epoch"], plain["reason"]) == (3, "last_epoch")
    assert "no early stopping" in plain["why"] and "monitor" not in plain


def test_early_stopping_that_saw_no_monitored_value_keeps_the_last_epoch():
    model = _model()
    stopping = keras.callbacks.EarlyStopping(monitor="val_auc", restore_best_weights=True)
    stopping.set_model(model)
    stopping.on_train_begin()
    kept = kept_epoch([stopping], epochs_run=2, epochs=5)
    assert (kept["epoch"], kept["reason"]) == (2, "last_epoch")
    assert "val_auc" in kept["why"]


@pytest.mark.parametrize("held", ["SIGTERM", "SIGINT"])
def test_a_signal_during_a_checkpoint_save_is_delivered_once_it_is_whole(held):
    """The stop waits for the save (h5py would cut it short or swallow it), then happens."""
    import os
    import signal

    from mlcli.training.callbacks import signals_held

    number = getattr(signal, held)
    raised: list[str] = []

    def stop(_number: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(number, stop)
    try:
        with pytest.raises(KeyboardInterrupt), signals_held():
            os.kill(os.getpid(), number)
            for _ in range(1000):  # Python runs handlers between bytecodes: give it room
                pass
            raised.append("the save ran to its end")
        assert raised == ["the save ran to its end"]
        assert signal.getsignal(number) is stop  # the command's own handler is back
    finally:
        signal.signal(number, previous)
