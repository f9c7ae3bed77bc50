"""The training data of a run, behind one interface: `TrainingData.load(config, reporter)`.

`load` decides whether the tables are read whole or streamed in record batches
(`data.streaming`, `mlcli.data.streamed_splits.streaming_enabled`), builds the feature schema
on the training rows, and encodes tables in memory with Arrow where the schema allows
(`mlcli.preprocessing.arrow`), all before TensorFlow is needed. Fitting then asks it for what
the manifest records (rows, sources, dropped rows), the class counts, the first validation rows
and, once TensorFlow is loaded, the splits as the core network sees them (`model_splits`).

A table in memory gets its schema from the whole training split (`prepare_schema`). A
streamed table is read once here (`load_streamed_splits`) to count each split's rows, check
them, and merge the schema's statistics batch by batch (`features.statistics`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from mlcli import files
from mlcli.config.schema import Config
from mlcli.data.columns import check_numbers, is_text_type
from mlcli.data.splits import Splits, configured_columns, labelled_rows, load_splits
from mlcli.data.streamed_splits import (
    StreamedSplits,
    StreamedTable,
    first_rows,
    split_parts,
    streaming_enabled,
    unified_column_types,
)
from mlcli.data.tables import TableSource, iter_batches, require_columns, resolve_source
from mlcli.errors import DataError
from mlcli.features.build import build_schema, build_target, encode_labels
from mlcli.features.schema import FeatureSchema
from mlcli.features.statistics import SchemaStatistics
from mlcli.features.types import infer_task, resolve_feature_specs
from mlcli.preprocessing.arrow import encode_splits
from mlcli.reporting import Reporter

if TYPE_CHECKING:
    import keras

    from mlcli.training.datasets import EncodedSplit, Split, StreamedSplit

# The first validation rows kept at hand: the composed model is checked on them after fit
CHECK_ROWS = 256
# ...and the first of them are written to the run's sample.parquet, for export checks
SAMPLE_ROWS = 200

SPLITS = ("train", "validation", "test")


@dataclass(kw_only=True)
class TrainingData:
    """The splits of a training run and their feature schema, in memory or streamed.

    Built by `load`, which picks the kind; what fitting needs is the same for both.

    Attributes:
        schema: the feature schema, from the training rows.
        sources: the tables read, by role (`train`; `validation` and `test` when files).
        rows: labelled rows of `train`, `validation` and `test` (0 when there is no test).
        dropped_unlabelled: rows dropped for a missing label, by role.
        class_counts: training rows per class index (empty for regression).
        arrow_encoded: whether `load` encoded the splits already (with Arrow).
        seconds: `read_and_check` and `encode`, as the manifest records them.
    """

    schema: FeatureSchema
    sources: dict[str, TableSource]
    rows: dict[str, int]
    dropped_unlabelled: dict[str, int]
    class_counts: list[int] = field(default_factory=list)
    arrow_encoded: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    _head: pa.Table | None = field(default=None, init=False, repr=False)

    @classmethod
    def load(cls, config: Config, reporter: Reporter) -> TrainingData:
        """Reads and checks the config's tables, builds the schema and encodes what it can."""
        started = time.monotonic()
        streamed = streaming_enabled(config)
        data = _StreamedData.read(config) if streamed else _InMemoryData.read(config)
        checked_at = time.monotonic()
        rows = data.rows
        reporter.event(
            "data",
            f"train {rows['train']} rows, validation {rows['validation']}, test {rows['test']}",
        )
        data._encode(reporter)  # in memory, while TensorFlow may still be loading
        data.seconds = {
            "read_and_check": checked_at - started,
            "encode": time.monotonic() - checked_at,
        }
        return data

    def model_splits(self, preprocessor: keras.Model) -> tuple[Split, Split, Split | None]:
        """(train, validation, test) as the core network sees them; TensorFlow must be loaded."""
        raise NotImplementedError

    def validation_head(self) -> pa.Table:
        """The first `CHECK_ROWS` validation rows as read (fewer if there are fewer)."""
        if self._head is None:
            self._head = self._read_head(CHECK_ROWS)
        return self._head

    def write_sample(self, path: Path) -> None:
        """Writes the first `SAMPLE_ROWS` validation rows, raw inputs and target, as Parquet.

        Export checks run the exported model on them. Nothing is written for an empty split.
        """
        head = self.validation_head()
        if head.num_rows == 0:
            return
        columns = [*self.schema.input_names, self.schema.target.column]
        files.write_parquet(path, head.select(columns).slice(0, SAMPLE_ROWS))

    def _encode(self, reporter: Reporter) -> None:
        """Encodes what can be encoded before TensorFlow loads (nothing, by default)."""

    def _read_head(self, rows: int) -> pa.Table:
        raise NotImplementedError


@dataclass(kw_only=True)
class _InMemoryData(TrainingData):
    """Tables read whole; labels, and with Arrow the features too, encoded once by `load`."""

    splits: Splits
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    features: dict[str, dict[str, np.ndarray]] | None = None

    @classmethod
    def read(cls, config: Config) -> _InMemoryData:
        splits = load_splits(config)
        return cls(
            schema=prepare_schema(config, splits),
            sources=splits.sources,
            rows=_rows(splits),
            dropped_unlabelled=splits.dropped_unlabelled,
            splits=splits,
        )

    def _tables(self) -> dict[str, pa.Table]:
        splits = self.splits
        found = zip(SPLITS, (splits.train, splits.validation, splits.test), strict=True)
        return {name: table for name, table in found if table is not None}

    def _encode(self, reporter: Reporter) -> None:
        started = time.monotonic()
        schema, tables = self.schema, self._tables()
        encoded = encode_splits(dict(tables), schema)  # None when the layers must encode
        if encoded is None:
            for name, table in tables.items():  # fail now, not once TensorFlow has loaded
                require_columns(table.column_names, schema.input_names, source=f"{name} split")
            target = schema.target
            self.labels = {
                name: encode_labels(table.column(target.column), target, source=f"{name} split")
                for name, table in tables.items()
            }
        else:
            self.features = {name: part[0] for name, part in encoded.items() if part is not None}
            self.labels = {name: part[1] for name, part in encoded.items() if part is not None}
            self.arrow_encoded = True
            reporter.event(
                "encoded",
                f"{self.rows['train']} training rows in {time.monotonic() - started:.1f}s",
            )
        if schema.target.task != "regression":
            counts = np.bincount(self.labels["train"], minlength=len(schema.target.classes))
            self.class_counts = [int(count) for count in counts]

    def model_splits(
        self, preprocessor: keras.Model
    ) -> tuple[EncodedSplit, EncodedSplit, EncodedSplit | None]:
        from mlcli.training.datasets import EncodedSplit, encode_split

        tables = self._tables()

        def split(name: str) -> EncodedSplit:
            if self.features is not None:
                return EncodedSplit(self.features[name], self.labels[name])
            source = "training split" if name == "train" else f"{name} split"
            labels = self.labels[name]
            return encode_split(
                preprocessor, tables[name], self.schema, labels=labels, source=source
            )

        return split("train"), split("validation"), split("test") if "test" in tables else None

    def _read_head(self, rows: int) -> pa.Table:
        return self.splits.validation.slice(0, rows)


@dataclass(kw_only=True)
class _StreamedData(TrainingData):
    """A table read in record batches: counted and checked by `load`, encoded while read."""

    splits: StreamedSplits

    @classmethod
    def read(cls, config: Config) -> _StreamedData:
        splits, schema = load_streamed_splits(config)
        return cls(
            schema=schema,
            sources=splits.sources,
            rows=_rows(splits),
            dropped_unlabelled=splits.dropped_unlabelled,
            class_counts=splits.class_counts,
            splits=splits,
        )

    def model_splits(
        self, preprocessor: keras.Model
    ) -> tuple[StreamedSplit, StreamedSplit, StreamedSplit | None]:
        from mlcli.training.datasets import StreamedSplit

        def split(table: StreamedTable) -> StreamedSplit:
            return StreamedSplit(table, preprocessor, self.schema)

        test = split(self.splits.test) if self.splits.test is not None else None
        return split(self.splits.train), split(self.splits.validation), test

    def _read_head(self, rows: int) -> pa.Table:
        """The first validation batches, up to `rows` rows: no pass over the rest."""
        found, count = [], 0
        for batch in self.splits.validation.batches():
            found.append(batch)
            count += batch.num_rows
            if count >= rows:
                break
        if not found:
            return pa.table({})
        return pa.concat_tables(found, promote_options="permissive").slice(0, rows)


def _rows(splits: Splits | StreamedSplits) -> dict[str, int]:
    test = splits.test.num_rows if splits.test is not None else 0
    return {"train": splits.train.num_rows, "validation": splits.validation.num_rows, "test": test}


def prepare_schema(config: Config, splits: Splits) -> FeatureSchema:
    """The feature schema of tables in memory, from the training split alone."""
    target = build_target(splits.train.column(config.target.column), config)
    train = splits.sources.get("train")
    source = train.describe() if train is not None else "training split"
    specs, excluded = resolve_feature_specs(splits.train, config, source=source)
    return build_schema(
        splits.train,
        specs=specs,
        target=target,
        excluded=excluded,
        quantiles=config.model.numeric_embedding.type == "piecewise_linear",
    )


def load_streamed_splits(config: Config) -> tuple[StreamedSplits, FeatureSchema]:
    """The splits of the config's tables and the schema, in one pass over the training files."""
    data = config.data
    source = resolve_source(data.train, data=data)
    train = StreamedTable(source, config, "train", unified_column_types(source))
    sample = first_rows(train)
    require_columns(sample.column_names, configured_columns(config), source=source.describe())
    task = config.target.task or infer_task(sample.column(config.target.column))
    specs, excluded = resolve_feature_specs(sample, config, source=source.describe())
    statistics = SchemaStatistics(
        specs, target_column=config.target.column, task=task, seed=config.seed
    )
    counts, dropped = _training_pass(train, statistics)
    schema = statistics.finish(config, excluded=excluded)
    train.num_rows = counts[0]
    sources = {"train": source}
    validation = replace(train, part="validation", num_rows=counts[1])
    test = replace(train, part="test", num_rows=counts[2]) if isinstance(data.test, float) else None
    dropped_unlabelled = {"train": dropped}
    for role in ("validation", "test"):
        spec = getattr(data, role)
        if spec is None or isinstance(spec, float):
            continue
        sources[role] = resolve_source(spec, data=data)
        other = StreamedTable(sources[role], config, "all", unified_column_types(sources[role]))
        other.num_rows, dropped_unlabelled[role] = _checked_count(other, schema)
        validation = other if role == "validation" else validation
        test = other if role == "test" else test
    classes = schema.target.classes
    splits = StreamedSplits(train, validation, test, sources, dropped_unlabelled)
    splits.class_counts = statistics.class_counts(classes) if classes else []
    return splits, schema


def _training_pass(train: StreamedTable, statistics: SchemaStatistics) -> tuple[list[int], int]:
    """Feeds the training rows to `statistics`; labelled rows per part, unlabelled rows."""
    config = train.config
    counts = np.zeros(3, dtype=np.int64)
    dropped = offset = 0
    for path in train.source.paths:
        start = offset
        for batch in iter_batches(
            replace(train.source, paths=(path,)), column_types=train.column_types
        ):
            table = pa.Table.from_batches([batch])
            # every row of the file, validation and test rows included, counted from its start
            numbers = _read_as_numbers(table, statistics.numeric_columns, statistics.task, config)
            check_numbers(table, numbers, source=str(path), row_offset=offset - start)
            parts = split_parts(np.arange(offset, offset + table.num_rows), config)
            offset += table.num_rows
            labelled, lost = labelled_rows(table.append_column(_PART, pa.array(parts)), config)
            dropped += lost
            kept = labelled.column(_PART).to_numpy()
            counts += np.bincount(kept, minlength=3)
            try:
                statistics.update(labelled.filter(pa.array(kept == 0)), scale=config.target.scale)
            except DataError as error:
                raise DataError(f"{path}: {error}") from error
        train.file_rows.append(offset - start)
    return [int(count) for count in counts], dropped


_PART = "__mlcli_part__"


def _read_as_numbers(table: pa.Table, features: list[str], task: str, config: Config) -> list[str]:
    """The numeric features, and a regression's target as read (text is for target.replace)."""
    target = table.column(config.target.column)
    if task == "regression" and not is_text_type(target.type):
        return [*features, config.target.column]
    return features


def _checked_count(table: StreamedTable, schema: FeatureSchema) -> tuple[int, int]:
    """Rows of a separate validation or test table after checking its numbers and labels."""
    features = [column.name for column in schema.columns if column.type == "numeric"]
    rows = dropped = 0
    for path in table.source.paths:
        offset = 0
        for batch in iter_batches(
            replace(table.source, paths=(path,)), column_types=table.column_types
        ):
            raw = pa.Table.from_batches([batch])
            require_columns(raw.column_names, [*schema.input_names], source=str(path))
            numbers = _read_as_numbers(raw, features, schema.target.task, table.config)
            check_numbers(raw, numbers, source=str(path), row_offset=offset)
            offset += raw.num_rows
            labelled, lost = labelled_rows(raw, table.config)
            dropped += lost
            rows += labelled.num_rows
            encode_labels(labelled.column(schema.target.column), schema.target, source=str(path))
    return rows, dropped
