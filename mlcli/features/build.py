"""The feature schema of a table: statistics, vocabularies and label classes, with Arrow compute.

Everything here runs in one pass over the training split, without TensorFlow: means and
variances of numbers (after their `log` transform), quantile points, vocabularies of
categories and of text tokens (tokenised as `keras.layers.TextVectorization` does), and the
target's task and classes. `build_schema` and `build_target` take a whole table;
`mlcli.features.statistics` merges the same statistics over record batches and hands them to
the `*_schema` functions here, so that both give one schema. `encode_labels` turns a label
column into what the model is fitted on.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlcli.config.schema import (
    BinarySpec,
    CategoricalSpec,
    Config,
    FeatureSpec,
    NumericSpec,
    TextSpec,
)
from mlcli.data.columns import is_text_type, numeric_values
from mlcli.errors import DataError
from mlcli.features.schema import ColumnSchema, FeatureSchema, TargetSchema
from mlcli.features.types import infer_task

# The characters keras.layers.TextVectorization strips by default (RE2 syntax in both).
TEXT_STRIP_PATTERN = r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']'
_ONE_HOT_MAX = 32
# Numeric columns keep this many quantile points (probabilities 0, 1/128, ..., 1): the quantile
# transform interpolates between them and piecewise-linear embeddings take bin edges from them.
QUANTILE_POINTS = 129
# Numeric columns keep the edges of this many bins of equal training share (deciles) and the
# share of training values in each, for `features.drift`'s population stability index.
DRIFT_BINS = 10


def _numeric_column(
    name: str, column: pa.ChunkedArray, spec: NumericSpec, *, quantiles: bool
) -> ColumnSchema:
    raw = numeric_values(column, name)
    values = transformed_numbers(raw, spec, name)
    needed = quantiles or spec.transform in ("quantile", "robust")
    schema = numeric_schema(
        name,
        spec,
        mean=pc.mean(values).as_py(),
        variance=pc.variance(values, ddof=0).as_py(),
        quantiles=quantile_points(values) if needed else [],
        has_missing=values.null_count > 0,
    )
    schema.bins, schema.bin_fractions = drift_bins(raw)
    schema.missing_rate = missing_rate(raw.null_count, len(raw))
    return schema


def drift_bins(values: pa.ChunkedArray | pa.Array) -> tuple[list[float], list[float]]:
    """Inner edges of `DRIFT_BINS` bins of equal share, and the share of `values` in each.

    Edges are the deciles of the raw values (ties merged, so a column that is mostly zero has
    fewer bins); bins are closed on the right: `(-inf, e1], (e1, e2], ..., (ek, inf)`, so the
    mass at a tied edge stays in one bin. Missing values are left out; none if all are.
    """
    present = values.drop_null()
    if len(present) == 0:
        return [], []
    probabilities = np.linspace(0.0, 1.0, DRIFT_BINS + 1)[1:-1].tolist()
    quantiles = pc.quantile(present, q=probabilities).to_pylist()
    edges = sorted({float(q) for q in quantiles})
    numbers = present.to_numpy()
    counts = np.bincount(bin_indices(numbers, edges), minlength=len(edges) + 1)
    return edges, (counts / counts.sum()).tolist()


def bin_indices(numbers: np.ndarray, edges: list[float]) -> np.ndarray:
    """The bin of each number for `drift_bins`'s right-closed bins."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64), numbers, side="left")


def missing_rate(missing: int, rows: int) -> float | None:
    """The share of `rows` that are `missing`; None without rows."""
    return missing / rows if rows else None


def vocabulary_shares(
    vocabulary: list[Any], values: list[Any], frequencies: list[int], *, present: int
) -> list[float]:
    """The share of the `present` (non-missing) values that each vocabulary entry holds."""
    counts = dict(zip(values, frequencies, strict=True))
    return [counts.get(value, 0) / present if present else 0.0 for value in vocabulary]


def transformed_numbers(values: pa.ChunkedArray, spec: NumericSpec, name: str) -> pa.ChunkedArray:
    """The values after the column's `log` transform, if it has one (values above -1 only)."""
    if spec.transform != "log":
        return values
    minimum = pc.min(values).as_py()
    if minimum is not None and minimum <= -1:
        raise DataError(
            f"column {name!r}: transform `log` needs values above -1, found {minimum}; "
            f"set features.{name}.transform to none"
        )
    return pc.ln(pc.add(values, 1.0))


def quantile_points(values: pa.ChunkedArray | pa.Array) -> list[float]:
    """The values at probabilities 0, 1/128, ..., 1 (`QUANTILE_POINTS` of them); none if empty."""
    if values.null_count == len(values):
        return []
    probabilities = np.linspace(0.0, 1.0, QUANTILE_POINTS).tolist()
    return [float(q) for q in pc.quantile(values, q=probabilities).to_pylist()]


def numeric_schema(
    name: str,
    spec: NumericSpec,
    *,
    mean: float | None,
    variance: float | None,
    quantiles: list[float],
    has_missing: bool,
) -> ColumnSchema:
    """A numeric column's schema from its statistics (after the `log` transform, if any)."""
    if mean is None:
        raise DataError(f"column {name!r} has no values in the training split")
    if spec.transform in ("quantile", "robust"):
        # quantile: the scores are standard normal already; robust: centred on the median,
        # scaled by the quartiles and softly clipped (missing values are imputed with it)
        mean, variance = 0.0, 1.0
    return ColumnSchema(
        quantiles=quantiles,
        name=name,
        type="numeric",
        dtype="float32",
        mean=float(mean),
        variance=float(variance) if variance and variance > 0 else 1.0,
        has_missing=has_missing,
        transform=spec.transform,
    )


def ranked_vocabulary(
    values: list[Any], frequencies: list[int], *, max_tokens: int | None, min_frequency: int
) -> list[Any]:
    """Values by falling frequency (ties by text), rare ones and "" left out, capped."""
    ranked = sorted(
        ((v, n) for v, n in zip(values, frequencies, strict=True) if n >= min_frequency),
        key=lambda item: (-item[1], str(item[0])),
    )
    vocabulary = [v for v, _ in ranked if v != ""]
    return vocabulary[:max_tokens] if max_tokens else vocabulary


def _categorical_column(
    name: str, column: pa.ChunkedArray, spec: CategoricalSpec | BinarySpec
) -> ColumnSchema:
    dtype, column = categorical_values(column)
    counts = pc.value_counts(column.drop_null())
    schema = categorical_schema(
        name,
        spec,
        dtype=dtype,
        values=counts.field("values").to_pylist(),
        frequencies=counts.field("counts").to_pylist(),
        has_missing=column.null_count > 0,
        present=len(column) - column.null_count,
    )
    schema.missing_rate = missing_rate(column.null_count, len(column))
    return schema


def categorical_values(column: pa.ChunkedArray) -> tuple[str, pa.ChunkedArray]:
    """The model's input dtype for a category column (int64 or string), and the column as it."""
    if pa.types.is_integer(column.type):
        return "int64", column
    if is_text_type(column.type):
        return "string", column
    return "string", pc.cast(column, pa.string())


def categorical_schema(
    name: str,
    spec: CategoricalSpec | BinarySpec,
    *,
    dtype: str,
    values: list[Any],
    frequencies: list[int],
    has_missing: bool,
    present: int | None = None,
) -> ColumnSchema:
    """A categorical or binary column's schema from its value counts.

    `present`, the number of non-missing values, gives each vocabulary entry's share of them
    (`frequencies` in the schema, for drift); without it they are left out.
    """
    if isinstance(spec, BinarySpec):
        vocabulary = ranked_vocabulary(values, frequencies, max_tokens=None, min_frequency=1)
        encoding, dim = "one_hot", 0
    else:
        vocabulary = ranked_vocabulary(
            values, frequencies, max_tokens=spec.max_tokens, min_frequency=spec.min_frequency
        )
        encoding = spec.encoding
        if encoding == "auto":
            encoding = "one_hot" if len(vocabulary) <= _ONE_HOT_MAX else "embedding"
        dim = spec.embedding_dim or min(32, round(1.6 * (len(vocabulary) + 1) ** 0.56))
    if not vocabulary:
        found = "no values" if not any(v != "" for v in values) else "no value frequent enough"
        raise DataError(
            f"column {name!r} has {found} in the training split; "
            f"expected at least one category (exclude the column, or lower min_frequency)"
        )
    return ColumnSchema(
        name=name,
        type=spec.type,
        dtype=dtype,
        vocabulary=vocabulary,
        has_missing=has_missing,
        encoding=encoding,
        embedding_dim=dim if encoding == "embedding" else 0,
        frequencies=[]
        if present is None
        else vocabulary_shares(vocabulary, values, frequencies, present=present),
    )


def text_tokens(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Lower-cased, punctuation-stripped, whitespace-split tokens, as TextVectorization does."""
    lowered = pc.utf8_lower(column.drop_null())
    stripped = pc.replace_substring_regex(lowered, pattern=TEXT_STRIP_PATTERN, replacement="")
    return pc.list_flatten(pc.utf8_split_whitespace(stripped))


def _text_column(name: str, column: pa.ChunkedArray, spec: TextSpec) -> ColumnSchema:
    if not is_text_type(column.type):
        raise DataError(f"column {name!r} is declared text but has type {column.type}")
    counts = pc.value_counts(text_tokens(column))
    schema = text_schema(
        name,
        spec,
        values=counts.field("values").to_pylist(),
        frequencies=counts.field("counts").to_pylist(),
        has_missing=column.null_count > 0,
    )
    schema.missing_rate = missing_rate(column.null_count, len(column))
    return schema


def text_schema(
    name: str, spec: TextSpec, *, values: list[Any], frequencies: list[int], has_missing: bool
) -> ColumnSchema:
    """A text column's schema from the counts of its tokens."""
    # two slots are reserved: padding and out-of-vocabulary
    vocabulary = ranked_vocabulary(
        values, frequencies, max_tokens=spec.max_tokens - 2, min_frequency=1
    )
    return ColumnSchema(
        name=name,
        type="text",
        dtype="string",
        vocabulary=vocabulary,
        embedding_dim=spec.embedding_dim,
        sequence_length=spec.sequence_length,
        has_missing=has_missing,
    )


def build_schema(
    table: pa.Table,
    *,
    specs: dict[str, FeatureSpec],
    target: TargetSchema,
    excluded: dict[str, str],
    quantiles: bool = True,
) -> FeatureSchema:
    """Statistics and vocabularies of every feature from the training split.

    `quantiles=False` leaves out numeric columns' quantile points (an exact sort of each
    column) unless their transform needs them; piecewise-linear embeddings need them too.
    """
    columns: list[ColumnSchema] = []
    for name, spec in specs.items():
        column = table.column(name)
        if isinstance(spec, NumericSpec):
            columns.append(_numeric_column(name, column, spec, quantiles=quantiles))
        elif isinstance(spec, TextSpec):
            columns.append(_text_column(name, column, spec))
        else:
            columns.append(_categorical_column(name, column, spec))
    return FeatureSchema(columns=columns, target=target, excluded=excluded)


def build_target(column: pa.ChunkedArray, config: Config) -> TargetSchema:
    """The task and the classes of the target, from the training split."""
    name = config.target.column
    values = column.drop_null()
    if len(values) == 0:
        raise DataError(f"target column {name!r} is empty: every value is missing")
    task = config.target.task or infer_task(values)
    if task == "regression":
        scale = config.target.scale
        numbers = pc.multiply(numeric_values(values, name), scale)
        mean = pc.mean(numbers).as_py()
        std = math.sqrt(pc.variance(numbers, ddof=0).as_py() or 1.0)
        return TargetSchema(column=name, task=task, mean=float(mean), std=std or 1.0, scale=scale)
    classes = sorted(pc.unique(values).to_pylist(), key=lambda v: (str(type(v)), v))
    if len(classes) < 2:
        raise DataError(
            f"target column {name!r} has a single class {classes[0]!r}; "
            "a classifier needs at least two"
        )
    if task == "binary":
        if len(classes) != 2:
            shown = ", ".join(repr(c) for c in classes[:10])
            raise DataError(
                f"target column {name!r} has {len(classes)} classes ({shown}), a binary task "
                "needs exactly 2; set target.task to multiclass or map values with target.replace"
            )
        positive = config.target.positive_class
        if positive is not None:
            matches = [c for c in classes if str(c) == str(positive)]
            if not matches:
                raise DataError(
                    f"target.positive_class {positive!r} is not a class of {name!r}: {classes}"
                )
            classes = [c for c in classes if c != matches[0]] + matches
    return TargetSchema(column=name, task=task, classes=classes)


def encode_labels(column: pa.ChunkedArray, target: TargetSchema, *, source: str) -> np.ndarray:
    """Class indices (int32) or values (float32) of a label column without missing values."""
    if target.task == "regression":
        values = numeric_values(column, target.column)
        if values.null_count:
            raise DataError(f"{source}: target {target.column!r} has missing values")
        return (values.to_numpy() * target.scale).astype(np.float32)
    classes = pa.array(target.classes)
    try:
        cast = pc.cast(column, classes.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        cast = pc.cast(column, pa.string())
        classes = pc.cast(classes, pa.string())
    indices = pc.index_in(cast, value_set=classes)
    unknown = pc.and_(pc.is_null(indices), pc.is_valid(cast))
    if pc.any(unknown).as_py():
        unseen = pc.unique(pc.filter(cast, unknown)).to_pylist()[:5]
        raise DataError(
            f"{source}: target {target.column!r} has values not seen in training: {unseen}; "
            f"expected one of {target.classes} (map them with target.replace)"
        )
    return indices.to_numpy(zero_copy_only=False).astype(np.int32)
