"""A split that fits in memory, encoded once: dense arrays and the batches `model.fit` reads.

Shuffling is vectorised: each epoch draws a permutation of the row indices from (seed, epoch)
with a stateless op and gathers whole batches from the encoded tensors, so the input pipeline
never handles single rows (a per-row `tf.data` shuffle costs more than the training step here).
`mlcli.training.streaming.StreamedSplit` offers the same methods for tables read in record batches.

Imported only by commands that train, after TensorFlow has been imported quietly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mlcli.features.build import encode_labels
from mlcli.features.schema import FeatureSchema
from mlcli.preprocessing.inputs import model_inputs
from mlcli.preprocessing.layers import encode


@dataclass
class EncodedSplit:
    """One split as the core network sees it: encoded features and label indices or values."""

    features: dict[str, np.ndarray]
    labels: np.ndarray

    @property
    def rows(self) -> int:
        """Number of rows."""
        return len(self.labels)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of one row of each encoded feature."""
        return {name: array.shape[1:] for name, array in self.features.items()}

    def label_counts(self, classes: int) -> np.ndarray:
        """Rows per class index."""
        return np.bincount(self.labels, minlength=classes)

    def dataset(self, *, batch_size: int) -> tf.data.Dataset:
        """The rows in order, in batches sliced whole (validation and evaluation)."""
        features = {name: tf.constant(array) for name, array in self.features.items()}
        labels = tf.constant(self.labels)

        @tf.autograph.experimental.do_not_convert  # straight-line code: tracing is faster
        def take(step: tf.Tensor) -> Any:
            start = step * batch_size
            chosen = {name: value[start : start + batch_size] for name, value in features.items()}
            return chosen, labels[start : start + batch_size]

        steps = -(-self.rows // batch_size)
        dataset = tf.data.Dataset.range(steps).map(take, num_parallel_calls=tf.data.AUTOTUNE)
        return dataset.prefetch(tf.data.AUTOTUNE)

    def epoch_batches(self, *, batch_size: int, seed: int) -> Callable[[tf.Tensor], Any]:
        """A function of the epoch number giving that epoch's shuffled batches."""
        features = {name: tf.constant(array) for name, array in self.features.items()}
        labels = tf.constant(self.labels)
        rows, steps = self.rows, -(-self.rows // batch_size)

        @tf.autograph.experimental.do_not_convert
        def one_epoch(epoch: tf.Tensor) -> tf.data.Dataset:
            key = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
            order = tf.random.experimental.stateless_shuffle(tf.range(rows), seed=key)

            @tf.autograph.experimental.do_not_convert
            def gather(step: tf.Tensor) -> Any:
                picked = order[step * batch_size : (step + 1) * batch_size]
                chosen = {name: tf.gather(value, picked) for name, value in features.items()}
                return chosen, tf.gather(labels, picked)

            return tf.data.Dataset.range(steps).map(
                gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
            )

        return one_epoch


def encode_split(
    preprocessor: keras.Model, table: Any, schema: FeatureSchema, *, source: str
) -> EncodedSplit:
    """A split through the preprocessing layers, once."""
    arrays = model_inputs(table, schema, source=source)
    labels = encode_labels(table.column(schema.target.column), schema.target, source=source)
    return EncodedSplit(encode(preprocessor, arrays, schema), labels)
