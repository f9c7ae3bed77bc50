"""The training, validation and test tables of a config, read and checked.

Columns are checked against the config before anything is fitted; labels get the config's
`target.replace` and rows without a label are dropped. A validation fraction is split off the
training table with the seed, stratified by class for classification.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlcli.config.schema import Config
from mlcli.data.columns import check_numbers, label_values
from mlcli.data.tables import (
    TableSource,
    check_header,
    read_table,
    require_columns,
    resolve_source,
)
from mlcli.errors import DataError


@dataclass
class Splits:
    """The tables of one training run and where they came from."""

    train: pa.Table
    validation: pa.Table
    test: pa.Table | None
    sources: dict[str, TableSource] = field(default_factory=dict)
    dropped_unlabelled: dict[str, int] = field(default_factory=dict)


def configured_columns(config: Config) -> list[str]:
    """Every column the config names: the target, typed features and exclusions."""
    return [config.target.column, *config.features.declared(), *config.features.exclude]


def _needed(config: Config, role: str) -> list[str]:
    return configured_columns(config) if role == "training" else [config.target.column]


def check_headers(config: Config) -> None:
    """Raises `DataError` when a configured table is missing or lacks a column it needs.

    Reads only the files' headers (`check_header`), so that `mlcli train` fails at once,
    before TensorFlow loads; reading the tables checks them again, whole.
    """
    data = config.data
    tables = {"training": data.train, "validation": data.validation, "test": data.test}
    for role, spec in tables.items():
        if spec is not None and not isinstance(spec, float):
            check_header(resolve_source(spec, data=data), _needed(config, role))


def _read_checked(source: TableSource, config: Config, *, role: str) -> tuple[pa.Table, int]:
    table = read_table(source)
    if table.num_rows == 0:
        raise DataError(f"{source.describe()}: the {role} table has no rows")
    needed = _needed(config, role)
    require_columns(table.column_names, needed, source=source.describe())
    _check_numbers(table, config, source=source.describe())
    return _with_labels(table, config, source=source.describe())


def _check_numbers(table: pa.Table, config: Config, *, source: str) -> None:
    """Text, an infinity or a number beyond float32's range in a column the model reads as
    numbers (declared numeric, or floating and not declared otherwise), named by file row."""
    declared = config.features.declared()
    skipped = set(config.features.exclude)
    names = [
        name
        for name in table.column_names
        if name not in skipped
        and (
            (name in declared and declared[name].type == "numeric")
            or (name not in declared and pa.types.is_floating(table.column(name).type))
        )
    ]
    check_numbers(table, names, source=source)


def _with_labels(table: pa.Table, config: Config, *, source: str) -> tuple[pa.Table, int]:
    """The table with `target.replace` applied and unlabelled rows dropped, and their count."""
    labelled, dropped = labelled_rows(table, config)
    if dropped == table.num_rows:
        name = config.target.column
        raise DataError(f"{source}: target column {name!r} is empty: every value is missing")
    return labelled, dropped


def labelled_rows(table: pa.Table, config: Config) -> tuple[pa.Table, int]:
    """The rows with a label (after `target.replace`), and how many were dropped.

    A null, an empty string and a floating NaN (as Parquet and pandas write a missing label)
    are missing labels.
    """
    name = config.target.column
    labels = label_values(table.column(name), config.target.replace)
    table = table.set_column(table.column_names.index(name), name, labels)
    if labels.null_count:
        return table.filter(pc.is_valid(labels)), labels.null_count
    return table, 0


def stratified_split(
    labels: np.ndarray, *, fraction: float, seed: int, stratify: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of (train, validation), the same for the same labels and seed."""
    rng = np.random.default_rng(seed)
    groups = (
        [np.flatnonzero(labels == value) for value in np.unique(labels)]
        if stratify
        else [np.arange(len(labels))]
    )
    validation: list[np.ndarray] = []
    for rows in groups:
        shuffled = rng.permutation(rows)
        validation.append(shuffled[: round(len(rows) * fraction)])
    chosen = np.sort(np.concatenate(validation))
    keep = np.ones(len(labels), dtype=bool)
    keep[chosen] = False
    if keep.sum() == 0 or len(chosen) == 0:
        raise DataError(
            f"data.validation {fraction} leaves an empty training or validation split "
            f"of {len(labels)} rows; use a fraction between them or a validation file"
        )
    return np.flatnonzero(keep), chosen


# A test fraction is always the same rows of a table, whatever `seed` the model is trained with.
TEST_SPLIT_SEED = 0


def split_off(
    table: pa.Table, config: Config, *, fraction: float, seed: int
) -> tuple[pa.Table, pa.Table]:
    """(the rest, a seeded `fraction` of the rows), stratified by class for classification."""
    labels = table.column(config.target.column)
    classification = config.target.task != "regression" and (
        config.target.task is not None
        or not (pa.types.is_floating(labels.type) or pa.types.is_decimal(labels.type))
    )
    rest, part = stratified_split(
        _class_codes(labels) if classification else np.zeros(len(labels), np.int8),
        fraction=fraction,
        seed=seed,
        stratify=classification,
    )
    return table.take(rest), table.take(part)


def _class_codes(labels: pa.ChunkedArray) -> np.ndarray:
    """Each label's index among the sorted distinct labels (as text), computed by Arrow.

    Sorting a million Python strings with numpy holds the GIL for about a second; Arrow's
    kernels do not, so this overlaps with TensorFlow loading on another thread.
    """
    key = pc.cast(labels, pa.string())
    distinct = pc.unique(key)
    distinct = distinct.take(pc.array_sort_indices(distinct))
    codes = pc.fill_null(pc.index_in(key, value_set=distinct), -1)  # unlabelled rows: dropped
    return np.asarray(codes.to_numpy(zero_copy_only=False))


def load_splits(config: Config) -> Splits:
    """Reads and checks the config's tables and splits off test and validation rows."""
    data = config.data
    sources = {"train": resolve_source(data.train, data=data)}
    train, dropped = _read_checked(sources["train"], config, role="training")
    dropped_unlabelled = {"train": dropped}
    test = None
    if isinstance(data.test, float):
        train, test = split_off(train, config, fraction=data.test, seed=TEST_SPLIT_SEED)
    if isinstance(data.validation, float):
        train, validation = split_off(train, config, fraction=data.validation, seed=config.seed)
    else:
        sources["validation"] = resolve_source(data.validation, data=data)
        validation, dropped_unlabelled["validation"] = _read_checked(
            sources["validation"], config, role="validation"
        )
    if data.test is not None and not isinstance(data.test, float):
        sources["test"] = resolve_source(data.test, data=data)
        test, dropped_unlabelled["test"] = _read_checked(sources["test"], config, role="test")
    return Splits(train, validation, test, sources, dropped_unlabelled)
