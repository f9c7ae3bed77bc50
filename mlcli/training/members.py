"""The loss and metrics of an ensemble's members, and multiclass label smoothing.

While an ensemble (`mlcli.ensemble_layers`) trains, its core hands the loss every member's
prediction: (rows, k) for binary and regression, (rows, k, classes) for multiclass, against
targets of one value per row. `MemberLoss` broadcasts the target over the members and averages
the members' losses. Keras's `SparseCategoricalCrossentropy` has no label smoothing, so a
multiclass task with `training.label_smoothing` takes this loss too. Outside training the core
gives one prediction per row, which this loss takes as a single member. The metrics
(`member_metrics`) score the members' mean prediction, as the saved model gives it.

They are registered Keras objects (package `mlcli`): under MultiWorkerMirroredStrategy the
trained core is copied out of the strategy through its compile config
(`mlcli.training.distributed.local_copy`), which Keras can only rebuild from registered names.

Imported only where Keras is loaded (`mlcli.training.compile`).
"""

from __future__ import annotations

from typing import Any

import keras

_register = keras.saving.register_keras_serializable(package="mlcli")


@_register
class MemberLoss(keras.losses.Loss):
    """The task's loss (binary or multiclass cross-entropy, squared error), averaged over the
    members of an ensemble.

    Args:
        task: binary, multiclass or regression.
        label_smoothing: classification: targets move this far towards uniform.
    """

    def __init__(self, task: str, label_smoothing: float = 0.0, **kwargs: Any) -> None:
        super().__init__(name=kwargs.pop("name", f"{task}_member_loss"), **kwargs)
        self.task = task
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        ops = keras.ops
        if self.task == "multiclass":
            labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
            target = ops.one_hot(labels, y_pred.shape[-1], dtype=y_pred.dtype)
            if len(y_pred.shape) == 3:  # (rows, k, classes)
                target = ops.broadcast_to(ops.expand_dims(target, 1), ops.shape(y_pred))
            losses = keras.losses.categorical_crossentropy(
                target, y_pred, label_smoothing=self.label_smoothing
            )
            return ops.mean(losses, axis=-1) if len(y_pred.shape) == 3 else losses
        target = ops.reshape(ops.cast(y_true, y_pred.dtype), (-1, 1))
        target = ops.broadcast_to(target, ops.shape(y_pred))  # (rows, k) or (rows, 1)
        if self.task == "binary":
            # keras's binary_crossentropy averages over the last axis: the members
            return keras.losses.binary_crossentropy(
                target, y_pred, label_smoothing=self.label_smoothing
            )
        return ops.mean(ops.square(y_pred - target), axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "task": self.task,
            "label_smoothing": self.label_smoothing,
        }


def _mean_of_members(y_pred: Any) -> Any:
    """(rows, k) -> (rows, 1) and (rows, k, classes) -> (rows, classes); (rows, 1) as it is."""
    if len(y_pred.shape) == 3:
        return keras.ops.mean(y_pred, axis=1)
    return keras.ops.mean(y_pred, axis=-1, keepdims=True)


class _OverMembersMean:
    """A metric of the members' mean prediction (one-output tasks, or multiclass)."""

    multiclass = False

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        if self.multiclass and len(y_pred.shape) != 3:
            return super().update_state(y_true, y_pred, sample_weight)  # type: ignore[misc]
        averaged = _mean_of_members(y_pred)
        return super().update_state(y_true, averaged, sample_weight)  # type: ignore[misc]


@_register
class _BinaryAccuracy(_OverMembersMean, keras.metrics.BinaryAccuracy):
    pass


@_register
class _AUC(_OverMembersMean, keras.metrics.AUC):
    pass


@_register
class _SparseCategoricalAccuracy(_OverMembersMean, keras.metrics.SparseCategoricalAccuracy):
    multiclass = True


@_register
class _RootMeanSquaredError(_OverMembersMean, keras.metrics.RootMeanSquaredError):
    pass


@_register
class _MeanAbsoluteError(_OverMembersMean, keras.metrics.MeanAbsoluteError):
    pass


def member_metrics(task: str, *, auc: bool) -> list[keras.metrics.Metric]:
    """The task's metrics (as `mlcli.training.compile.loss_and_metrics` names them) of the
    members' mean prediction."""
    if task == "binary":
        return [_BinaryAccuracy(name="accuracy"), *([_AUC(name="auc")] if auc else [])]
    if task == "multiclass":
        return [_SparseCategoricalAccuracy(name="accuracy")]
    return [_RootMeanSquaredError(name="rmse"), _MeanAbsoluteError(name="mae")]
