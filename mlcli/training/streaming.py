"""The input pipeline of a streamed table: Arrow record batches to encoded `tf.data` batches.

Each epoch re-reads the files (in an order shuffled by the seed and the epoch), mixes rows
within a bounded pool of `data.shuffle_buffer` rows with vectorised Arrow takes, turns each
mixed chunk into raw column arrays, and runs the Keras preprocessing layers over whole chunks
in a parallel `tf.data` map before `rebatch` cuts them into training batches. No step is per
row in Python, and memory holds a few chunks whatever the table's size. A resumed run replays
its epoch from the start of the files: the order depends only on (seed, epoch).

Imported only by commands that train, after TensorFlow has been imported quietly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np
import pyarrow as pa
import tensorflow as tf

from mlcli.data.streamed_splits import StreamedSplits, StreamedTable
from mlcli.features.build import encode_labels
from mlcli.features.schema import FeatureSchema
from mlcli.preprocessing.inputs import model_inputs
from mlcli.preprocessing.layers import to_tensors


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
    """One split of a streamed table, as the core network sees it: encoded while read.

    It offers what `mlcli.training.fit` uses of an in-memory `EncodedSplit`: `rows`, `shapes`,
    `label_counts`, `dataset` and `epoch_batches`.
    """

    def __init__(
        self,
        table: StreamedTable,
        preprocessor: keras.Model,
        schema: FeatureSchema,
        *,
        class_counts: list[int] | None = None,
    ) -> None:
        self.table = table
        self.preprocessor = preprocessor
        self.schema = schema
        self.rows = table.num_rows
        self.class_counts = class_counts or []
        self.shapes = {
            name: tuple(tensor.shape[1:]) for name, tensor in preprocessor.output.items()
        }
        label = tf.float32 if schema.target.task == "regression" else tf.int32
        self.signature = (
            {c.name: tf.TensorSpec((None, 1), tf.as_dtype(c.dtype)) for c in schema.columns},
            tf.TensorSpec((None,), label),
        )

    def label_counts(self, classes: int) -> np.ndarray:
        """Training rows per class index (counted in the statistics pass)."""
        return np.asarray(self.class_counts or [0] * classes, dtype=np.int64)

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

    def sample(self, rows: int) -> tuple[pa.Table, dict[str, np.ndarray]]:
        """The first `rows` rows, raw and encoded (to check the composed model)."""
        first = next((table for table in self.table.batches() if table.num_rows), None)
        if first is None:
            return pa.table({}), {}
        first = first.slice(0, rows)
        encoded = self.preprocessor(
            to_tensors(model_inputs(first, self.schema, source="sample"), self.schema),
            training=False,
        )
        return first, {k: keras.ops.convert_to_numpy(v) for k, v in encoded.items()}


def streamed_splits(
    preprocessor: keras.Model, splits: StreamedSplits, schema: FeatureSchema
) -> tuple[StreamedSplit, StreamedSplit, StreamedSplit | None]:
    """The train, validation and test splits of a streamed table, for `mlcli.training.fit`."""

    def split(table: StreamedTable, counts: list[int] | None = None) -> StreamedSplit:
        return StreamedSplit(table, preprocessor, schema, class_counts=counts)

    test = split(splits.test) if splits.test is not None else None
    return split(splits.train, splits.class_counts), split(splits.validation), test
