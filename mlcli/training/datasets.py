"""The splits as the core network sees them, and the `tf.data` batches `model.fit` reads.

Both kinds of split offer `rows`, `shapes`, `dataset` (the rows in order: validation and
evaluation), `epoch_batches` (an epoch's shuffled batches, a function of the epoch number) and
`encoded_head` (the encoding of the split's first rows, to check the composed model).

- `EncodedSplit`, a table in memory encoded once into dense arrays. Shuffling is vectorised:
  each epoch draws a permutation of the row indices from (seed, epoch) with a stateless op and
  gathers whole batches from the encoded tensors, so the input pipeline never handles single
  rows (a per-row `tf.data` shuffle costs more than the training step here).
- `StreamedSplit`, a table read in record batches and encoded while read. Each epoch re-reads
  the files (in an order shuffled by the seed and the epoch), mixes rows within a bounded pool
  of `data.shuffle_buffer` rows with vectorised Arrow takes, turns each mixed chunk into raw
  column arrays, and runs the Keras preprocessing layers over whole chunks in a parallel
  `tf.data` map before `rebatch` cuts them into training batches. No step is per row in
  Python, and memory holds a few chunks whatever the table's size. A resumed run replays its
  epoch from the start of the files: the order depends only on (seed, epoch).

Imported only by commands that train, after TensorFlow has been imported quietly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import pyarrow as pa
import tensorflow as tf

from mlcli.data.streamed_splits import StreamedTable
from mlcli.features.build import encode_labels
from mlcli.features.schema import FeatureSchema
from mlcli.preprocessing.inputs import model_inputs
from mlcli.preprocessing.layers import encode, to_tensors


@dataclass
class EncodedSplit:
    """A split in memory as the core network sees it: encoded features, labels (indices, values)."""

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

    def encoded_head(self, head: pa.Table) -> dict[str, np.ndarray]:
        """The encoding of `head`, the split's first rows: those rows of the arrays."""
        return {name: array[: head.num_rows] for name, array in self.features.items()}

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
    preprocessor: keras.Model,
    table: pa.Table,
    schema: FeatureSchema,
    *,
    labels: np.ndarray,
    source: str,
) -> EncodedSplit:
    """A split through the preprocessing layers, once; `labels` are its encoded labels."""
    arrays = model_inputs(table, schema, source=source)
    return EncodedSplit(encode(preprocessor, arrays, schema), labels)


def shuffled(
    tables: Iterator[pa.Table], *, buffer: int, rng: np.random.Generator
) -> Iterator[pa.Table]:
    """The rows of `tables` mixed within a pool of about `buffer` rows, chunk by chunk."""
    pool: list[pa.Table] = []
    held = 0
    for table in tables:
        pool.append(table)
        held += table.num_rows
        if held > buffer:
            merged = pa.concat_tables(pool, promote_options="permissive")
            order = rng.permutation(held)
            emitted = held - buffer // 2
            yield merged.take(pa.array(order[:emitted]))
            pool, held = [merged.take(pa.array(order[emitted:]))], held - emitted
    if held:
        merged = pa.concat_tables(pool, promote_options="permissive")
        yield merged.take(pa.array(rng.permutation(held)))


class StreamedSplit:
    """One split of a streamed table as the core network sees it: encoded while read."""

    def __init__(self, table: StreamedTable, preprocessor: keras.Model, schema: FeatureSchema):
        self.table = table
        self.preprocessor = preprocessor
        self.schema = schema
        self.rows = table.num_rows
        self.shapes = {
            name: tuple(tensor.shape[1:]) for name, tensor in preprocessor.output.items()
        }
        label = tf.float32 if schema.target.task == "regression" else tf.int32
        self.signature = (
            {c.name: tf.TensorSpec((None, 1), tf.as_dtype(c.dtype)) for c in schema.columns},
            tf.TensorSpec((None,), label),
        )

    def _raw(self, tables: Iterator[pa.Table]) -> Iterator[tuple[dict[str, np.ndarray], Any]]:
        target = self.schema.target
        for table in tables:
            if table.num_rows:
                labels = encode_labels(table.column(target.column), target, source="stream")
                yield model_inputs(table, self.schema, source="stream"), labels

    def _encoded(self, raw: tf.data.Dataset, *, batch_size: int) -> tf.data.Dataset:
        def encode(features: dict[str, tf.Tensor], labels: tf.Tensor) -> Any:
            return self.preprocessor(features, training=False), labels

        return raw.map(encode, num_parallel_calls=tf.data.AUTOTUNE).rebatch(batch_size)

    def encoded_head(self, head: pa.Table) -> dict[str, np.ndarray]:
        """The encoding of `head`, the split's first rows, through the preprocessing layers."""
        if head.num_rows == 0:
            return {}
        arrays = model_inputs(head, self.schema, source="sample")
        encoded = self.preprocessor(to_tensors(arrays, self.schema), training=False)
        return {name: keras.ops.convert_to_numpy(value) for name, value in encoded.items()}

    def dataset(self, *, batch_size: int) -> tf.data.Dataset:
        """The split in file order, encoded, in batches (validation and evaluation)."""
        raw = tf.data.Dataset.from_generator(
            lambda: self._raw(self.table.batches()), output_signature=self.signature
        )
        steps = -(-self.rows // batch_size)
        return (
            self._encoded(raw, batch_size=batch_size)
            .apply(tf.data.experimental.assert_cardinality(steps))
            .prefetch(tf.data.AUTOTUNE)
        )

    def epoch_batches(self, *, batch_size: int, seed: int) -> Callable[[tf.Tensor], Any]:
        """A function of the epoch number giving that epoch's shuffled, encoded batches."""
        files = len(self.table.source.paths)
        buffer = self.table.config.data.shuffle_buffer

        def generate(epoch: Any) -> Iterator[tuple[dict[str, np.ndarray], Any]]:
            rng = np.random.default_rng([seed, int(epoch)])
            order = rng.permutation(files).tolist()
            tables = self.table.batches(file_order=order)
            yield from self._raw(shuffled(tables, buffer=buffer, rng=rng))

        def one_epoch(epoch: tf.Tensor) -> tf.data.Dataset:
            raw = tf.data.Dataset.from_generator(
                generate, output_signature=self.signature, args=(epoch,)
            )
            return self._encoded(raw, batch_size=batch_size)

        return one_epoch


Split = EncodedSplit | StreamedSplit
