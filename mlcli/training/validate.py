"""`mlcli validate`: the config and a sample of the data checked, without TensorFlow."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mlcli.config.loading import load_config
from mlcli.config.schema import Config
from mlcli.data.columns import check_float32_range, numeric_values
from mlcli.data.splits import configured_columns
from mlcli.data.tables import TableSource, read_sample, require_columns, resolve_source
from mlcli.errors import DataError
from mlcli.features.types import resolve_feature_specs

SAMPLE_ROWS = 10000


@dataclass
class ValidationReport:
    """What `validate` found: the config, the sources, and each column's feature type."""

    config: Config
    sources: dict[str, TableSource]
    sample_rows: int
    feature_types: dict[str, str] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)


def validate(
    config: Config | str | Path,
    *,
    overrides: list[str] | None = None,
) -> ValidationReport:
    """Checks a config and the header and first rows of each of its tables."""
    if not isinstance(config, Config):
        config = load_config(config, overrides=overrides or [])
    data = config.data
    sources = {"train": resolve_source(data.train, data=data)}
    if not isinstance(data.validation, float):
        sources["validation"] = resolve_source(data.validation, data=data)
    if data.test is not None and not isinstance(data.test, float):
        sources["test"] = resolve_source(data.test, data=data)
    sample = read_sample(sources["train"], rows=SAMPLE_ROWS)
    require_columns(
        sample.column_names, configured_columns(config), source=sources["train"].describe()
    )
    for role, source in sources.items():
        if role != "train":
            other = read_sample(source, rows=100)
            require_columns(other.column_names, [config.target.column], source=source.describe())
    target = sample.column(config.target.column)
    if target.null_count == len(target):
        raise DataError(
            f"{sources['train'].describe()}: target column {config.target.column!r} is empty "
            f"in the first {sample.num_rows} rows"
        )
    described = sources["train"].describe()
    specs, excluded = resolve_feature_specs(sample, config, source=described)
    numeric = [name for name, spec in specs.items() if spec.type == "numeric"]
    if config.target.task == "regression":
        numeric.append(config.target.column)
    for name in numeric:  # what training would refuse in these rows, refused here
        check_float32_range(
            numeric_values(sample.column(name), name), column=name, source=described
        )
    return ValidationReport(
        config=config,
        sources=sources,
        sample_rows=sample.num_rows,
        feature_types={name: spec.type for name, spec in specs.items()},
        excluded=excluded,
    )
