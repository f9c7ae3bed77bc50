"""How the core network is trained: the task's loss and metrics, the optimizer, the schedules.

`LOGGED_METRICS` and `check_monitor` need no TensorFlow: `training.train` checks the early
stopping monitor against the task while TensorFlow may still be loading, so Keras is imported
by the functions that build Keras objects, not by this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlcli.config.schema import Config
from mlcli.config.training import TrainingConfig
from mlcli.errors import ConfigError

if TYPE_CHECKING:
    import keras

# What model.fit logs per task (`loss_and_metrics`), each also with `val_`; binary AUC only
# when early stopping watches it (`epoch_auc`).
LOGGED_METRICS = {
    "binary": ("loss", "accuracy", "auc"),
    "multiclass": ("loss", "accuracy"),
    "regression": ("loss", "rmse", "mae"),
}


def check_monitor(config: Config, task: str) -> None:
    """Early stopping must watch a metric that training logs for this task."""
    stopping = config.training.early_stopping
    if stopping is None:
        return
    valid = [*LOGGED_METRICS[task], *(f"val_{name}" for name in LOGGED_METRICS[task])]
    if stopping.monitor not in valid:
        raise ConfigError(
            f"config key `training.early_stopping.monitor`: {stopping.monitor!r} is not logged "
            f"for a {task} task; expected one of {', '.join(valid)}"
        )


def loss_and_metrics(
    task: str, *, auc: bool = True, label_smoothing: float = 0.0, ensemble: bool = False
) -> tuple[keras.losses.Loss, list[keras.metrics.Metric]]:
    """The loss and the metrics that follow from the task (binary: AUC only if `auc`).

    Classification targets are smoothed by `label_smoothing`. An `ensemble` takes the mean of
    its members' losses (`mlcli.training.members.MemberLoss`), as does a multiclass task with
    label smoothing (Keras's sparse loss has none); its metrics score the members' mean.
    """
    import keras

    from mlcli.training.members import MemberLoss, member_metrics

    if ensemble:
        return MemberLoss(task, label_smoothing), member_metrics(task, auc=auc)
    if task == "multiclass" and label_smoothing:
        loss: keras.losses.Loss = MemberLoss(task, label_smoothing)
    elif task == "binary":
        loss = keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)
    elif task == "multiclass":
        loss = keras.losses.SparseCategoricalCrossentropy()
    else:
        loss = keras.losses.MeanSquaredError()
    if task == "binary":
        return loss, [
            keras.metrics.BinaryAccuracy(name="accuracy"),
            *([keras.metrics.AUC(name="auc")] if auc else []),
        ]
    if task == "multiclass":
        return loss, [
            keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
        ]
    return loss, [
        keras.metrics.RootMeanSquaredError(name="rmse"),
        keras.metrics.MeanAbsoluteError(name="mae"),
    ]


def make_optimizer(
    config: TrainingConfig, *, steps_per_epoch: int = 1
) -> keras.optimizers.Optimizer:
    """The configured optimizer, learning rate (or cosine schedule) and weight decay."""
    import keras

    optimizers: dict[str, Any] = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }
    learning_rate: Any = config.learning_rate
    if config.learning_rate_schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps=max(1, config.epochs * steps_per_epoch)
        )
    optimizer = optimizers[config.optimizer](
        learning_rate=learning_rate, weight_decay=config.weight_decay
    )
    # decay the weights only: not biases, norm scales and offsets, nor the [CLS] token
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta", "token"])
    return optimizer


def epoch_auc(config: TrainingConfig) -> bool:
    """Whether fit computes AUC every epoch: only when early stopping watches it.

    Keras updates AUC's 200 thresholds at every training step; here that cost about 2 s of a
    1M-row, 2-epoch run (tracing included). Final metrics include AUC either way.
    """
    stopping = config.early_stopping
    return stopping is not None and stopping.monitor.endswith("auc")


def compile_core(
    core: keras.Model,
    task: str,
    config: TrainingConfig,
    *,
    steps_per_epoch: int = 1,
    for_evaluation: bool = False,
) -> None:
    """Compiles the core with the task's loss and metrics, for fit or, after it, evaluation.

    For fit a binary task's AUC is left out unless `epoch_auc`; evaluation keeps the
    optimizer fit trained with. Under a strategy of several replicas (the one in scope) each
    compiled call runs one batch, whatever `steps_per_execution` says.
    """
    import tensorflow as tf

    from mlcli.ensemble_layers import MemberMean

    loss, metrics = loss_and_metrics(
        task,
        auc=for_evaluation or epoch_auc(config),
        label_smoothing=config.label_smoothing,
        ensemble=any(isinstance(layer, MemberMean) for layer in core.layers),
    )
    trained = getattr(core, "optimizer", None) if for_evaluation else None
    # Keras 3's multi-step loop (`steps_per_execution` > 1) fails under a MirroredStrategy of
    # several replicas (`InvalidArgumentError ... while/cond/Placeholder`, as in
    # keras-team/keras#20585): there each compiled call runs one batch.
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    core.compile(
        # a calibrated core, never fitted, has no optimizer: it gets an unused one
        optimizer=trained or make_optimizer(config, steps_per_epoch=steps_per_epoch),
        loss=loss,
        metrics=metrics,
        steps_per_execution=config.steps_per_execution if replicas == 1 else 1,
        jit_compile=config.jit_compile,
    )


def schedule_callbacks(config: TrainingConfig) -> list[keras.callbacks.Callback]:
    """`reduce_on_plateau`: halve the learning rate when the monitored metric stalls."""
    import keras

    if config.learning_rate_schedule != "reduce_on_plateau":
        return []
    stopping = config.early_stopping
    return [
        keras.callbacks.ReduceLROnPlateau(
            monitor=stopping.monitor if stopping else "val_loss",
            factor=0.5,
            patience=max(1, (stopping.patience if stopping else 4) // 2),
            min_delta=stopping.min_delta if stopping else 0.0,
            min_lr=config.learning_rate / 64,
        )
    ]
