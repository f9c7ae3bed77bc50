"""The training data of a run: its splits and feature schema, from tables in memory or streamed.

Streamed tables (`data.streaming`) are read once here to count each split's rows, check them,
and merge the schema's statistics batch by batch (`features.statistics`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow as pa

from mlcli.config.schema import Config
from mlcli.data.columns import numeric_values
from mlcli.data.splits import configured_columns, labelled_rows
from mlcli.data.streamed_splits import (
    StreamedSplits,
    StreamedTable,
    first_rows,
    split_parts,
    unified_column_types,
)
from mlcli.data.tables import iter_batches, require_columns, resolve_source
from mlcli.errors import DataError
from mlcli.features.build import encode_labels
from mlcli.features.schema import FeatureSchema
from mlcli.features.statistics import SchemaStatistics
from mlcli.features.types import infer_task, resolve_feature_specs


def load_streamed_splits(config: Config) -> tuple[StreamedSplits, FeatureSchema]:
    """The splits of the config's tables and the schema, in one pass over the training files."""
    data = config.data
    source = resolve_source(data.train, data=data)
    train = StreamedTable(source, config, "train", unified_column_types(source))
    sample = first_rows(train)
    require_columns(sample.column_names, configured_columns(config), source=source.describe())
    task = config.target.task or infer_task(sample.column(config.target.column))
    specs, excluded = resolve_feature_specs(sample, config)
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


def _checked_count(table: StreamedTable, schema: FeatureSchema) -> tuple[int, int]:
    """Rows of a separate validation or test table after checking its numbers and labels."""
    rows = dropped = 0
    for path in table.source.paths:
        for batch in iter_batches(
            replace(table.source, paths=(path,)), column_types=table.column_types
        ):
            labelled, lost = labelled_rows(pa.Table.from_batches([batch]), table.config)
            dropped += lost
            rows += labelled.num_rows
            require_columns(labelled.column_names, schema.input_names, source=str(path))
            try:
                for column in schema.columns:
                    if column.type == "numeric":
                        numeric_values(labelled.column(column.name), column.name)
            except DataError as error:
                raise DataError(f"{path}: {error}") from error
            encode_labels(labelled.column(schema.target.column), schema.target, source=str(path))
    return rows, dropped
