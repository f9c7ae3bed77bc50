"""Which kind of feature a column is, and which task its target sets, when the config is silent.

`infer_feature_type` reads a column's values (numbers are numeric, booleans and two-valued
columns binary, strings of four words or more on average text, the rest categorical),
`infer_task` the target's, and `resolve_feature_specs` gives every input column its spec: the
config's where it declares one, the inferred type's default otherwise. `mlcli init` builds its
richer column profiles on the same functions.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from mlcli.config.schema import CategoricalSpec, Config, FeatureSpec, spec_for
from mlcli.data.columns import check_usable, is_numeric_type, is_text_type
from mlcli.errors import DataError

# A string column whose values average this many words or more is free text.
_TEXT_MIN_MEAN_TOKENS = 4.0


def _mean_tokens(column: pa.ChunkedArray) -> float:
    sample = column.slice(0, 2000).drop_null()
    if len(sample) == 0:
        return 0.0
    counts = pc.list_value_length(pc.utf8_split_whitespace(sample))
    return float(pc.mean(counts).as_py() or 0.0)


def infer_feature_type(column: pa.ChunkedArray) -> str | None:
    """numeric, categorical, binary or text from a column's values; None for an empty column."""
    if column.null_count == len(column):
        return None
    if pa.types.is_boolean(column.type):
        return "binary"
    if is_numeric_type(column.type):
        return "numeric"
    if is_text_type(column.type) and _mean_tokens(column) >= _TEXT_MIN_MEAN_TOKENS:
        return "text"
    if pc.count_distinct(column).as_py() <= 2:
        return "binary"
    return "categorical"


def infer_task(column: pa.ChunkedArray) -> str:
    """binary, multiclass or regression from the target column."""
    distinct = pc.count_distinct(column.drop_null()).as_py()
    if pa.types.is_floating(column.type) or pa.types.is_decimal(column.type):
        values = column.drop_null()
        whole = pc.all(pc.equal(values, pc.round(values))).as_py()
        if not (whole and distinct <= 10):
            return "regression"
    if distinct == 2:
        return "binary"
    if is_numeric_type(column.type) and distinct > 20:
        return "regression"
    return "multiclass"


def _capped(spec: FeatureSpec, config: Config) -> FeatureSpec:
    """A categorical spec with its vocabulary cap: its own, or `features.max_tokens`."""
    if isinstance(spec, CategoricalSpec) and spec.max_tokens is None:
        return spec.model_copy(update={"max_tokens": config.features.max_tokens})
    return spec


def resolve_feature_specs(
    table: pa.Table, config: Config, *, source: str = "the training table"
) -> tuple[dict[str, FeatureSpec], dict[str, str]]:
    """The spec of every input column (declared or inferred) and the excluded columns.

    A categorical column's vocabulary is capped at its `max_tokens`, or `features.max_tokens`.
    A column of a type mlcli cannot use (binary, list, struct, map) is a `DataError` naming
    `source`, the column, its Arrow type and the fix, unless the config excludes it.
    """
    declared = config.features.declared()
    target = config.target.column
    excluded = {c: "excluded in the config" for c in config.features.exclude}
    specs: dict[str, FeatureSpec] = {}
    if target in table.column_names:
        check_usable(table.column(target).type, column=target, source=source, role="target")
    for name in table.column_names:
        if name == target or name in excluded:
            continue
        check_usable(table.column(name).type, column=name, source=source)
        if name in declared:
            specs[name] = _capped(declared[name], config)
            continue
        inferred = infer_feature_type(table.column(name))
        if inferred is None:
            excluded[name] = "every value is missing"
        else:
            specs[name] = _capped(spec_for(inferred), config)
    if not specs:
        raise DataError(
            f"no feature columns left besides the target {target!r}; "
            "check features.exclude and the data's columns"
        )
    return specs, excluded
