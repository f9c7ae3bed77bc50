"""The preprocessing layers' encoding of a table, computed with Arrow before TensorFlow loads.

Training encodes every split once and fits the core on the result (`mlcli.training.datasets`). For
numeric and categorical columns the encoding is simple enough for Arrow's kernels and numpy:
an index into the vocabulary (0 for an unseen value, as `StringLookup` and `IntegerLookup`
with one OOV index), and `(value - mean) / sqrt(variance)` with missing values at the mean
plus a missing indicator (as `Normalization`). Those kernels release the GIL, so `mlcli train`
encodes while TensorFlow is still importing on another thread, and never turns a million
strings into Python objects.

The Keras layers stay the definition: the saved model holds them, and every run checks that
the composed model (layers then core) gives the core's outputs on these encodings
(`training.fit`, `checks.composition` in the manifest). Columns that need a layer's
own code (text, the quantile transform) are encoded by the layers themselves: `encode_table`
returns None for a schema that has any.

`encode_columns` computes the same encoding of a server's numpy columns with dictionaries: for
a request's few rows, Arrow's cost per call is most of the time. It is checked equal to
`encode_features`, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlcli.data.columns import FLOAT32_MAX
from mlcli.data.tables import require_columns
from mlcli.features.build import encode_labels
from mlcli.features.schema import ColumnSchema, FeatureSchema
from mlcli.preprocessing.inputs import CATEGORICAL_PREFIX, MISSING_VALUES, NUMERIC, model_inputs

EPSILON = np.float32(1e-7)  # keras.backend.epsilon(), Normalization's floor on the deviation

# Smooth clipping bounds robust-scaled values softly near +-this: x / sqrt(1 + (x/3)^2).
SMOOTH_CLIP = 3.0
# Robust-scaled values are first clipped to +-this: the same result in float32 (3 to 7 digits),
# and (x/3)^2 never overflows.
ROBUST_LIMIT = 1e6


def robust_scaling(quantiles: list[float]) -> tuple[float, float]:
    """(center, factor) of RealMLP's robust scaling (Holzmueller et al. 2024, "Better by
    Default"): the median, and 1 / the interquartile range, or 1 / half the range when the
    quartiles tie, or 0 for a constant column. `quantiles`: evenly spaced from 0 to 1."""
    points = np.asarray(quantiles, dtype=np.float64)
    probabilities = np.linspace(0.0, 1.0, len(points))
    median, low, high = np.interp([0.5, 0.25, 0.75], probabilities, points)
    spread = high - low
    if spread == 0:
        spread = 0.5 * (points[-1] - points[0])
    return float(median), float(1.0 / spread) if spread > 0 else 0.0


def robust_scores(values: np.ndarray, quantiles: list[float]) -> np.ndarray:
    """The `robust` transform in float32: robust scaling, then smooth clipping (the Keras
    preprocessing layers compute the same)."""
    center, factor = robust_scaling(quantiles)
    scaled = (np.asarray(values, np.float32) - np.float32(center)) * np.float32(factor)
    scaled = np.clip(scaled, np.float32(-ROBUST_LIMIT), np.float32(ROBUST_LIMIT))
    return scaled / np.sqrt(np.float32(1.0) + np.square(scaled / np.float32(SMOOTH_CLIP)))


def encodable(schema: FeatureSchema) -> bool:
    """Whether every column's encoding is computed here (numeric but for the quantile
    transform, lookups)."""
    return all(
        (column.type == "numeric" and column.transform in ("none", "log", "robust"))
        or (column.type in ("categorical", "binary") and column.dtype in ("string", "int64"))
        for column in schema.columns
    )


def _numeric(column: ColumnSchema, values: np.ndarray) -> list[np.ndarray]:
    missing = np.isnan(values)
    if column.transform == "log":
        with np.errstate(invalid="ignore"):
            values = np.log1p(np.maximum(values, np.float32(-1.0 + 1e-7)))
    elif column.transform == "robust":
        with np.errstate(invalid="ignore"):
            values = robust_scores(values, column.quantiles)
    mean = np.float32(column.mean)
    filled = np.where(missing, mean, values)
    # float64 first: a variance beyond float32 (a 1e30 column's 1e60) must not become inf
    deviation = np.float32(min(max(math.sqrt(column.variance), float(EPSILON)), FLOAT32_MAX))
    normalised = ((filled - mean) / deviation).astype(np.float32)
    if not column.has_missing:
        return [normalised]
    return [normalised, missing.astype(np.float32)]


# a column's vocabulary as an Arrow array, made once per schema: `mlcli serve` encodes a few
# rows at a time, where building it would cost more than the lookup (keyed by the list's id,
# which the entry keeps alive so that the id cannot be reused)
_VOCABULARIES: dict[int, tuple[list[Any], pa.Array]] = {}
_MAX_VOCABULARIES = 1024


def _vocabulary(column: ColumnSchema) -> pa.Array:
    cached = _VOCABULARIES.get(id(column.vocabulary))
    if cached is not None and cached[0] is column.vocabulary:
        return cached[1]
    if column.dtype == "int64":
        array = pa.array(column.vocabulary, pa.int64())
    else:
        array = pa.array([str(value) for value in column.vocabulary], pa.string())
    if len(_VOCABULARIES) >= _MAX_VOCABULARIES:
        _VOCABULARIES.clear()
    _VOCABULARIES[id(column.vocabulary)] = (column.vocabulary, array)
    return array


def _lookup(column: ColumnSchema, values: pa.ChunkedArray) -> np.ndarray:
    if column.dtype == "int64":
        filled = pc.fill_null(pc.cast(values, pa.int64()), MISSING_VALUES["int64"])
    else:
        filled = pc.fill_null(pc.cast(values, pa.string()), MISSING_VALUES["string"])
    vocabulary = _vocabulary(column)
    positions = pc.fill_null(pc.index_in(filled, value_set=vocabulary), -1)
    indices = positions.to_numpy(zero_copy_only=False).astype(np.int64) + 1  # 0: unseen
    return indices.reshape(-1, 1)


def encode_features(
    table: pa.Table, schema: FeatureSchema, *, source: str
) -> dict[str, np.ndarray]:
    """The preprocessor's outputs for `table`, by name; `schema` must be `encodable`."""
    require_columns(table.column_names, schema.input_names, source=source)
    numeric_columns = [c for c in schema.columns if c.type == "numeric"]
    numbers = model_inputs(
        table, FeatureSchema(columns=numeric_columns, target=schema.target), source=source
    )
    outputs: dict[str, np.ndarray] = {}
    numeric: list[np.ndarray] = []
    for column in schema.columns:
        if column.type == "numeric":
            numeric.extend(_numeric(column, numbers[column.name]))
        else:
            outputs[CATEGORICAL_PREFIX + column.name] = _lookup(column, table.column(column.name))
    if numeric:
        outputs[NUMERIC] = np.concatenate(numeric, axis=1)
    return outputs


_LOOKUPS: dict[int, tuple[list[Any], dict[Any, int]]] = {}


def _lookup_dictionary(column: ColumnSchema) -> dict[Any, int]:
    """value -> index (1-based; the first of equal values, as `index_in` finds it), per schema."""
    cached = _LOOKUPS.get(id(column.vocabulary))
    if cached is not None and cached[0] is column.vocabulary:
        return cached[1]
    convert = int if column.dtype == "int64" else str
    lookup: dict[Any, int] = {}
    for index, value in enumerate(column.vocabulary):
        lookup.setdefault(convert(value), index + 1)
    if len(_LOOKUPS) >= _MAX_VOCABULARIES:
        _LOOKUPS.clear()
    _LOOKUPS[id(column.vocabulary)] = (column.vocabulary, lookup)
    return lookup


def encode_columns(
    columns: Mapping[str, np.ndarray], schema: FeatureSchema
) -> dict[str, np.ndarray] | None:
    """`encode_features` of numpy columns as a server holds a request's rows: (rows, 1) float32
    (NaN missing), int64 (`INT_MISSING` missing) or str objects ("" missing), checked already.

    For a few rows Arrow's per-call cost is most of `encode_features`' time; here a lookup is a
    dictionary's. None when a string column holds anything but str (then `encode_features`).
    """
    outputs: dict[str, np.ndarray] = {}
    numeric: list[np.ndarray] = []
    for column in schema.columns:
        values = np.asarray(columns[column.name]).reshape(-1, 1)
        if column.type == "numeric":
            numeric.extend(_numeric(column, values.astype(np.float32)))
            continue
        lookup = _lookup_dictionary(column)
        if column.dtype == "int64":
            keys = values.astype(np.int64).reshape(-1).tolist()
        else:
            keys = values.reshape(-1).tolist()
            if not all(isinstance(key, str) for key in keys):
                return None
        indices = np.array([lookup.get(key, 0) for key in keys], np.int64)
        outputs[CATEGORICAL_PREFIX + column.name] = indices.reshape(-1, 1)
    if numeric:
        outputs[NUMERIC] = np.concatenate(numeric, axis=1)
    return outputs


def encode_table(
    table: pa.Table, schema: FeatureSchema, *, source: str
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(encoded features, labels) of a split; `schema` must be `encodable`."""
    labels = encode_labels(table.column(schema.target.column), schema.target, source=source)
    return encode_features(table, schema, source=source), labels


def encode_splits(
    splits: dict[str, pa.Table | None], schema: FeatureSchema
) -> dict[str, tuple[dict[str, np.ndarray], np.ndarray] | None] | None:
    """Every split encoded (None for an absent split), or None when the layers must encode."""
    if not encodable(schema):
        return None
    encoded: dict[str, tuple[dict[str, np.ndarray], np.ndarray] | None] = {}
    for name, table in splits.items():
        encoded[name] = (
            None if table is None else encode_table(table, schema, source=f"{name} split")
        )
    return encoded
