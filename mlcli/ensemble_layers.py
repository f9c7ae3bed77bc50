"""Ensembles in one network: TabM (Gorishniy et al. 2024, "TabM: Advancing Tabular Deep
Learning with Parameter-Efficient Ensembling"), after BatchEnsemble (Wen et al. 2020).

The encoded features are repeated once per member, (rows, features) -> (rows, k, features);
every dense layer then holds one weight matrix shared by the k members and gives each member
its own input and output scaling vectors (r, s) and its own bias:
`y_i = ((x_i * r_i) @ W) * s_i + b_i`. Each member has its own linear head. Only the first
layer's r starts from random signs (+-1), the others from ones, as TabM does; the members
then differ from the first step on, and their dropout masks differ too.

`MemberMean` ends the network: while training it hands the loss every member's prediction,
(rows, k) for one output per row or (rows, k, classes), so that the loss is the mean of the
members' losses (`mlcli.training.compile`); otherwise (evaluation, prediction, every export
and the server) it returns the mean of the members' probabilities or values, one normal
output. All members see the same batches ("shared batches": one input pipeline, one pass).

The layers are registered for `safe_mode` loading; `mlcli.layers` imports this module, so
whatever imports that to load a model finds them. Only `mlcli.models` builds them.

Example:

```python
x = EnsembleInput(4)(features)                      # (rows, 4, features)
x = keras.layers.ReLU()(BatchEnsembleDense(64, first=True)(x))
probability = MemberMean()(keras.layers.Activation("sigmoid")(EnsembleHead(1)(x)))
```
"""

from __future__ import annotations

import math
from typing import Any

import keras


def _uniform(limit: float) -> keras.initializers.Initializer:
    return keras.initializers.RandomUniform(-limit, limit)


@keras.saving.register_keras_serializable(package="mlcli")
class EnsembleInput(keras.layers.Layer):
    """(rows, features) -> (rows, k, features): the same row for each of k members.

    Args:
        k: the number of members.
    """

    def __init__(self, k: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.k = int(k)

    def call(self, inputs: Any) -> Any:
        return keras.ops.repeat(keras.ops.expand_dims(inputs, 1), self.k, axis=1)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[Any, ...]:
        return (input_shape[0], self.k, *input_shape[1:])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "k": self.k}


@keras.saving.register_keras_serializable(package="mlcli")
class BatchEnsembleDense(keras.layers.Layer):
    """A dense layer over (rows, k, features) with one shared kernel and per-member r, s, bias.

    Args:
        units: output units of every member.
        first: whether this is the network's first ensemble layer: its r starts from random
            signs (the members' only difference at initialisation besides their heads).
        kernel_regularizer: on the shared kernel (`model.l2`).
    """

    def __init__(
        self, units: int, *, first: bool = False, kernel_regularizer: Any = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.units = int(units)
        self.first = bool(first)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        k, features = int(input_shape[1]), int(input_shape[2])  # type: ignore[arg-type]
        limit = 1.0 / math.sqrt(features)
        self.kernel = self.add_weight(
            shape=(features, self.units),
            initializer=keras.initializers.GlorotUniform(),
            regularizer=self.kernel_regularizer,
            name="kernel",
        )
        signs = keras.initializers.RandomUniform(-1.0, 1.0)
        self.r = self.add_weight(
            shape=(k, features), initializer=signs if self.first else "ones", name="r"
        )
        self.s = self.add_weight(shape=(k, self.units), initializer="ones", name="s")
        self.bias = self.add_weight(shape=(k, self.units), initializer=_uniform(limit), name="bias")
        if self.first:  # random signs: +-1, not the uniform values drawn above
            self.r.assign(keras.ops.sign(self.r) + keras.ops.cast(self.r == 0, self.r.dtype))

    def call(self, inputs: Any) -> Any:
        ops = keras.ops
        return ops.matmul(inputs * self.r, self.kernel) * self.s + self.bias

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[Any, ...]:
        return (*input_shape[:-1], self.units)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "units": self.units,
            "first": self.first,
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
        }


@keras.saving.register_keras_serializable(package="mlcli")
class EnsembleHead(keras.layers.Layer):
    """Each member's own linear head: (rows, k, features) -> (rows, k, units).

    Args:
        units: outputs per member (1, or the number of classes).
    """

    def __init__(self, units: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = int(units)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        k, features = int(input_shape[1]), int(input_shape[2])  # type: ignore[arg-type]
        limit = 1.0 / math.sqrt(features)
        self.kernel = self.add_weight(
            shape=(k, features, self.units), initializer=_uniform(limit), name="kernel"
        )
        self.bias = self.add_weight(shape=(k, self.units), initializer=_uniform(limit), name="bias")

    def call(self, inputs: Any) -> Any:
        return keras.ops.einsum("bkf,kfu->bku", inputs, self.kernel) + self.bias

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[Any, ...]:
        return (*input_shape[:-1], self.units)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="mlcli")
class MemberMean(keras.layers.Layer):
    """The members' mean prediction, (rows, k, units) -> (rows, units), outside training.

    While training it returns every member's prediction for the loss: (rows, k) when `units`
    is 1, else (rows, k, units). Its declared output shape is the mean's.
    """

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if training:
            return inputs[..., 0] if inputs.shape[-1] == 1 else inputs
        return keras.ops.mean(inputs, axis=1)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[Any, ...]:
        return (input_shape[0], *input_shape[2:])
