"""Training on several machines: `model.fit`'s and `model.evaluate`'s loops over
`MultiWorkerMirroredStrategy`.

Keras 3's `fit` and `evaluate` fail under `MultiWorkerMirroredStrategy` (keras-team/keras#20585:
"Attempt to convert a value (PerReplica...) ... to a Tensor", or with several steps per execution
"You must feed a value for placeholder tensor 'while/cond/Placeholder'"), and so does a model
compiled in the strategy's scope, even a copy made outside it. Every step under the strategy
therefore goes through this module: `fit` takes the arguments mlcli gives `model.fit` and runs
the same epochs with the model's own `train_step` and `test_step` (its compiled loss, metrics
and optimizer, mixed-precision loss scaling included) through `strategy.run`, and drives the
same Keras callbacks: checkpoints and resuming, early stopping, the learning-rate schedule,
`history.csv` and progress; `evaluate` computes the compiled metrics of a split the same way
(the final train, validation and test metrics). A cluster run therefore writes what a
one-machine run writes.

Input: every worker reads the same table and encodes it alike; each global batch (per-replica
batch times replicas) is split across the replicas of all workers (`AutoShardPolicy.DATA`), and a
short last batch leaves some replicas with fewer or no rows, as `model.fit` does on one machine.
Gradients are summed over all replicas by collective all-reduce, so every worker holds the same
weights after every step. Metrics are summed over all workers when they are read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mlcli.training.cluster import cluster_role

# Set to a folder, every worker writes its final weights there as <task>.npz (for tests).
DEBUG_WEIGHTS_ENV = "MLCLI_DEBUG_WEIGHTS_DIR"


def _with_class_weight(dataset: Any, class_weight: dict[int, float] | None) -> Any:
    if not class_weight:
        return dataset
    table = tf.constant([class_weight.get(i, 1.0) for i in range(max(class_weight) + 1)])

    def weigh(features: Any, labels: Any) -> Any:
        return features, labels, tf.gather(table, tf.cast(labels, tf.int32))

    return dataset.map(weigh)


def _distribute(strategy: Any, dataset: Any) -> Any:
    options = tf.data.Options()
    # the data is in memory, not in files: split the elements of each batch
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


def _results(core: keras.Model, prefix: str = "") -> dict[str, float]:
    """The model's metrics, summed over all replicas of all workers (a collective read)."""
    return {f"{prefix}{name}": float(value) for name, value in core.get_metrics_result().items()}


def _local_logs(strategy: Any, outputs: Any) -> dict[str, Any]:
    """The first local replica's step logs, as `model.fit` hands them to batch callbacks."""
    return dict(strategy.experimental_local_results(outputs)[0])


def _evaluate_with(core: keras.Model, step: Any, dataset: Any) -> None:
    """The compiled metrics of `core` accumulated over the distributed `dataset`."""
    core.reset_metrics()
    for batch in dataset:
        step(batch)


def _any_worker(strategy: Any, flag: bool) -> bool:
    """True on every worker when it is true on any: they must stop at the same epoch."""
    value = tf.constant(1.0 if flag else 0.0)
    total = strategy.reduce("SUM", strategy.run(lambda: tf.identity(value)), axis=None)
    return bool(float(total) > 0)


def _step_functions(core: keras.Model, strategy: Any) -> tuple[Any, Any]:
    def train_step(batch: Any) -> Any:
        return strategy.run(core.train_step, args=(batch,))

    def test_step(batch: Any) -> Any:
        return strategy.run(core.test_step, args=(batch,))

    return (
        tf.function(train_step, reduce_retracing=True),
        tf.function(test_step, reduce_retracing=True),
    )


def _build(core: keras.Model, strategy: Any, dataset: Any) -> None:
    """What `model.fit` and `model.evaluate` do first: create the compiled metrics' variables
    (and the optimizer's), in the strategy's scope, from the shapes of a first batch."""
    for batch in dataset.take(1):
        with strategy.scope():
            core._symbolic_build(data_batch=batch)


def evaluate(core: keras.Model, strategy: Any, dataset: Any) -> dict[str, float]:
    """The compiled metrics of `core` (built and compiled in `strategy.scope()`) on `dataset`,
    as `core.evaluate(dataset, return_dict=True)` gives them on one machine.

    Every worker must call it with the same dataset at the same time: each global batch is
    split across the replicas of all workers, and the metrics are summed over all of them.
    """
    _build(core, strategy, dataset)
    _, test_step = _step_functions(core, strategy)
    _evaluate_with(core, test_step, _distribute(strategy, dataset))
    return _results(core)


def fit(
    core: keras.Model,
    strategy: Any,
    *,
    x: Any,
    validation_data: Any,
    epochs: int,
    callbacks: list[keras.callbacks.Callback],
    class_weight: dict[int, float] | None = None,
) -> keras.callbacks.History:
    """Trains `core` (built and compiled in `strategy.scope()`) as `core.fit` would.

    Returns the history. The trained `core` stays replicated: evaluate it with `evaluate`
    and save `local_copy(core)`.
    """
    train_data = _with_class_weight(x, class_weight)
    _build(core, strategy, train_data)
    train = _distribute(strategy, train_data)
    validation = _distribute(strategy, validation_data)
    history = keras.callbacks.History()
    steps = int(train_data.cardinality())
    callback_list = keras.callbacks.CallbackList(
        [*callbacks, history], model=core, epochs=epochs, steps=steps if steps > 0 else None
    )
    train_step, test_step = _step_functions(core, strategy)
    core.stop_training = False
    callback_list.on_train_begin()
    logs: dict[str, float] = {}
    # a resumed run: BackupAndRestore set the epoch to continue from, as model.fit reads it
    for epoch in range(getattr(core, "_initial_epoch", None) or 0, epochs):
        core.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        for step, batch in enumerate(train):
            callback_list.on_train_batch_begin(step)
            outputs = train_step(batch)
            callback_list.on_train_batch_end(step, _local_logs(strategy, outputs))
        logs = _results(core)
        _evaluate_with(core, test_step, validation)
        logs.update(_results(core, prefix="val_"))
        callback_list.on_epoch_end(epoch, logs)
        # never mid-epoch: a worker that left early would leave the others waiting
        if _any_worker(strategy, bool(core.stop_training)):
            break
    callback_list.on_train_end(logs)
    _dump_weights(core)
    return history


def local_copy(core: keras.Model) -> keras.Model:
    """The model rebuilt outside any strategy, with the same weights and compile settings
    (for saving and for calls on one worker's rows; never evaluate it under the strategy)."""
    copy = keras.models.clone_model(core)
    copy.set_weights(core.get_weights())
    copy.compile_from_config(core.get_compile_config())
    return copy


def _dump_weights(core: keras.Model) -> None:
    folder = os.environ.get(DEBUG_WEIGHTS_ENV)
    role = cluster_role()
    if not folder or role is None:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    weights = {f"w{index}": value for index, value in enumerate(core.get_weights())}
    np.savez(Path(folder) / f"{role.task_type}-{role.task_index}.npz", **weights)
