"""The names and values at the preprocessor's two ends: raw inputs in, encoded outputs out.

The saved model takes one input per raw column, keyed by the column's name, shaped (rows, 1),
of the dtype the schema gives it (`float32`, `int64` or `string`); a missing value is NaN, the
`INT_MISSING` sentinel or "" (`MISSING_VALUES`): the model maps each to its missing-value
handling. The preprocessor hands the core a `numeric` matrix and one `categorical__<column>` or
`text__<column>` tensor per such column. Everything that builds inputs for a model (training,
inference, the export check, the server) takes them from here.

Users see only the columns' own names. What Keras and TensorFlow hold (input and layer names,
the SavedModel signature's inputs) is each column's `input_name`: one injective rule, so that
any column name a CSV or Parquet file can hold works, and no two columns share a model name.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlcli.data.columns import check_float32_range, is_text_type, numeric_values
from mlcli.data.tables import require_columns
from mlcli.errors import ConfigError, DataError
from mlcli.features.schema import INT_MISSING, FeatureSchema

NUMERIC = "numeric"
CATEGORICAL_PREFIX = "categorical__"
TEXT_PREFIX = "text__"
# the saved model's parts after the preprocessor, by their Keras names (`mlcli.models.core`)
CORE_MODEL = "core"
CALIBRATION_LAYER = "calibration"

MISSING_VALUES: dict[str, float | int | str] = {
    "float32": float("nan"),
    "int64": INT_MISSING,
    "string": "",
}

NAME_STEM = 48  # well under Keras's and TensorFlow's limits once a layer's kind is put in front
NAME_HASH = 10  # hex digits: 40 bits, so two columns of one table do not share a hash
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_REPLACED = re.compile(r"[^A-Za-z0-9_]")


def input_name(column: str) -> str:
    """The name a column takes inside models: Keras input and layer names, signature inputs.

    Users see only the column's own name (configs, schema.json, predictions, export.json's
    features, the served API); Keras names cannot hold `/`, TensorFlow's op names allow only
    ASCII letters, digits and `_.-/>`, and a loaded SavedModel's Python function renames any
    argument that is not an identifier. So a column whose name is a plain identifier (an ASCII
    letter, then ASCII letters, digits or single `_`, at most `NAME_STEM` characters) keeps it;
    any other name keeps its first `NAME_STEM` ASCII letters, digits and `_` (others become
    `_`; a leading non-letter gets an `x` in front) and ends in `__` and the first
    `NAME_HASH` hex digits of the SHA-256 of the name's UTF-8. A kept name never holds `__`,
    a rewritten one always ends in `__<hash>`: two columns never share a name unless their
    hashes collide, which `input_names` refuses. Saved models hold these names: changing the
    rule breaks the exports and models written with it.

    Example: `input_name("capital-gain") == "capital_gain__" + sha256(b"capital-gain")[:10]`.
    """
    if _IDENTIFIER.fullmatch(column) and len(column) <= NAME_STEM and "__" not in column:
        return column
    stem = _REPLACED.sub("_", column)[:NAME_STEM]
    if not stem[:1].isascii() or not stem[:1].isalpha():
        stem = "x" + stem[: NAME_STEM - 1]
    digest = hashlib.sha256(column.encode("utf-8", "surrogatepass")).hexdigest()[:NAME_HASH]
    return f"{stem}__{digest}"


def input_names(columns: Iterable[str]) -> dict[str, str]:
    """Each column's `input_name`; a `ConfigError` if two columns would share one."""
    names: dict[str, str] = {}
    owners: dict[str, str] = {}
    for column in columns:
        name = input_name(column)
        other = owners.setdefault(name, column)
        if other != column:
            raise ConfigError(
                f"columns {other!r} and {column!r} both take the model name {name!r}; rename "
                "one of them (data.csv.columns) and retrain"
            )
        names[column] = name
    return names


def layer_name(kind: str, column: str) -> str:
    """The name of a column's preprocessing layer: `lookup_` + the column's `input_name`."""
    return f"{kind}_{input_name(column)}"


def encoded_input_name(encoded: str) -> str:
    """The Keras name of one of the preprocessor's outputs (`categorical__<column>` and such)."""
    for prefix in (CATEGORICAL_PREFIX, TEXT_PREFIX):
        if encoded.startswith(prefix):
            return prefix + input_name(encoded[len(prefix) :])
    return encoded


def model_inputs(table: pa.Table, schema: FeatureSchema, *, source: str) -> dict[str, np.ndarray]:
    """Raw column values as numpy arrays of shape (rows, 1), as the saved model takes them.

    Missing numbers become NaN, missing strings "" and missing integers a sentinel: the
    model maps each to its missing-value handling. A number that float32 cannot hold (finite,
    beyond about 3.4e38) is a `DataError` naming the column and row: as float32 it would be
    infinite, and the model's outputs NaN.
    """
    require_columns(table.column_names, schema.input_names, source=source)
    arrays: dict[str, np.ndarray] = {}
    for column in schema.columns:
        values = table.column(column.name)
        if column.dtype == "float32":
            try:
                numbers = numeric_values(values, column.name)
            except DataError as error:  # text or an infinity: name the file too
                raise DataError(f"{source}: {error}") from error
            check_float32_range(numbers, column=column.name, source=source)
            array = numbers.to_numpy().astype(np.float32)
        elif column.dtype == "int64":
            if not pa.types.is_integer(values.type):
                try:
                    values = pc.cast(values, pa.int64())
                except pa.ArrowInvalid as error:
                    raise DataError(
                        f"{source}: column {column.name!r} held integers in training, "
                        f"found {values.type}"
                    ) from error
            filled = pc.fill_null(pc.cast(values, pa.int64()), MISSING_VALUES["int64"])
            array = filled.to_numpy()
        else:
            if not is_text_type(values.type):
                values = pc.cast(values, pa.string())
            filled = pc.fill_null(values, MISSING_VALUES["string"])
            array = filled.to_numpy(zero_copy_only=False).astype(object)
        arrays[column.name] = array.reshape(-1, 1)
    return arrays
