"""`mlcli init`: a commented starting config from a table mlcli has never seen.

The file's dialect is sniffed (`mlcli.data.dialect`), a sample of rows is read with the same
pyarrow reader `mlcli train` uses, each column is profiled (`starter.profiling`), and the config
is written with a comment beside every guess. The text is validated with the config schema
before it is written, so that `mlcli train` accepts it unchanged.

```python
report = mlcli.init("data.csv", target="label", output="config.yaml")
```
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mlcli.config.loading import extend_document, parse_config
from mlcli.config.messages import did_you_mean
from mlcli.config.schema import EXTENDS, CsvOptions
from mlcli.data.columns import check_usable
from mlcli.data.dialect import DEFAULT_NA_VALUES, CsvDialect, sniff_csv
from mlcli.data.streamed_splits import STREAMING_THRESHOLD_BYTES
from mlcli.data.tables import TableSource, expand_paths, read_sample, resolve_source
from mlcli.errors import ConfigError, DataError
from mlcli.files import write_text
from mlcli.starter.profiling import (
    InitReport,
    profile_column,
    profile_target,
)

SAMPLE_ROWS = 50000


def _csv_settings(dialect: CsvDialect, columns: list[str] | None) -> dict[str, Any]:
    """The `data.csv` keys that differ from mlcli's defaults (delimiter always written)."""
    settings: dict[str, Any] = {"delimiter": dialect.delimiter, "header": dialect.header}
    width = len(dialect.first_row)
    if columns is not None:
        if len(columns) != width:
            raise ConfigError(
                f"--columns names {len(columns)} columns, the file has {width} per line"
            )
        settings["columns"] = columns
    elif not dialect.header:
        settings["columns"] = [f"col_{index}" for index in range(width)]
    else:
        names = [name.strip() for name in dialect.first_row]
        fixed = _unique_names(names)
        if fixed != names:
            settings["columns"] = fixed  # empty or repeated header names
    if dialect.na_values:
        settings["na_values"] = DEFAULT_NA_VALUES + dialect.na_values
    for key in ("skip_rows", "trim_whitespace", "quoting"):
        value = getattr(dialect, key)
        if value != CsvOptions.model_fields[key].default:
            settings[key] = value
    return settings


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    fixed: list[str] = []
    for index, name in enumerate(names):
        name = name or f"col_{index}"
        if name in seen:
            seen[name] += 1
            name = f"{name}_{seen[name]}"
        seen.setdefault(name, 0)
        fixed.append(name)
    return fixed


def _source(data: Path, csv: dict[str, Any]) -> TableSource:
    from mlcli.config.schema import DataConfig

    config = DataConfig.model_validate({"train": str(data), "csv": csv})
    return resolve_source(config.train, data=config)


def _resolve_target(target: str, names: list[str], *, source: str) -> str:
    if target in names:
        return target
    folded = [name for name in names if name.lower() == target.lower()]
    if len(folded) == 1:
        return folded[0]
    if re.fullmatch(r"-?\d+", target) and -len(names) <= int(target) < len(names):
        return names[int(target)]
    hint = did_you_mean(target, names)
    shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
    raise DataError(
        f"{source}: --target {target!r} is not a column"
        + (f" (did you mean {hint!r}?)" if hint else "")
        + f"; the columns are {shown} (a 0-based column number works too)"
    )


def _name_from(data: Path) -> str:
    stem = data.name.split(".")[0]
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")
    return name[:100] or "model"


def _data_path(data: Path, config_dir: Path) -> str:
    """The data path relative to the config's folder when it lies below it, else absolute."""
    absolute = data.resolve()
    try:
        return absolute.relative_to(config_dir.resolve()).as_posix()
    except ValueError:
        return str(absolute)


def init(
    data: str | Path,
    *,
    target: str,
    task: str | None = None,
    output: str | Path = "config.yaml",
    columns: list[str] | None = None,
    presets: Sequence[str] = (),
    force: bool = False,
) -> InitReport:
    """Writes a commented config for `data` predicting `target`; returns what was inferred.

    Args:
        data: a CSV/TSV (optionally compressed) or Parquet file.
        target: the column to predict: a name, or a 0-based column number.
        task: binary, multiclass or regression; inferred from the target when None.
        output: where the config is written; an existing file is kept unless `force`.
        columns: names for the columns of a file without a header line.
        presets: configs the written one `extends` (`models/resnet`, `training/fast`): the keys
            they set are left out of it, and a `data/` preset's CSV settings read the sample.
        force: overwrite an existing config.
    """
    from mlcli.starter.writing import render_config

    output = Path(output)
    if output.exists() and not force:
        raise ConfigError(f"{output}: already exists; pass --force to overwrite it")
    if task not in (None, "binary", "multiclass", "regression"):
        raise ConfigError(f"--task: expected binary, multiclass or regression, found {task!r}")
    inherited = _inherited(presets, output)
    (path,) = expand_paths(str(data))[:1]
    source = _source(path, {})
    csv: dict[str, Any] = {}
    reasons: dict[str, str] = {}
    if source.format == "csv":
        dialect = sniff_csv(path)
        csv, reasons = _csv_settings(dialect, columns), dialect.reasons
        csv.update(inherited.get("data", {}).get("csv", {}))  # the user's word over a guess
        source = _source(path, csv)
    elif columns is not None:
        raise ConfigError(
            f"--columns names the columns of a CSV file without a header; {path} is Parquet"
        )
    sample = read_sample(source, rows=SAMPLE_ROWS)
    target_name = _resolve_target(target, sample.column_names, source=str(path))
    profiles = [
        profile_column(name, sample.column(name))
        for name in sample.column_names
        if name != target_name
    ]
    check_usable(
        sample.column(target_name).type, column=target_name, source=str(path), role="target"
    )
    target_profile = profile_target(target_name, sample.column(target_name), task=task)
    report = InitReport(output, path, sample.num_rows, profiles, target_profile, csv, reasons)
    text = render_config(
        report,
        name=_name_from(path),
        train=_data_path(path, output.parent),
        command=f"mlcli init {path.name} --target {target}"
        + "".join(f" --preset {preset}" for preset in presets),
        written=time.strftime("%Y-%m-%d"),
        extends=list(presets),
        inherited=inherited,
        streamed=path.stat().st_size > STREAMING_THRESHOLD_BYTES,
    )
    _check(text, output)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_text(output, text)
    return report


def _inherited(presets: Sequence[str], output: Path) -> dict[str, Any]:
    """What the presets set, merged (a missing preset is a config error naming it)."""
    if not presets:
        return {}
    folder = output.parent.resolve()
    document, _ = extend_document({EXTENDS: list(presets)}, source="--preset", folder=folder)
    return document


def _check(text: str, output: Path) -> None:
    """The written text must be a valid config: a failure here is a bug in `init`."""
    import yaml

    folder = output.parent.resolve()
    document, _ = extend_document(yaml.safe_load(text), source=str(output), folder=folder)
    parse_config(document, source=str(output), relative_to=folder)


def report_dict(report: InitReport) -> dict[str, Any]:
    """The report as JSON-ready data (`mlcli init --log-format json`)."""
    return {
        "config": str(report.config_path),
        "data": str(report.data),
        "sample_rows": report.sample_rows,
        "csv": report.csv,
        "target": asdict(report.target),
        "columns": [
            {**asdict(p), "missing_share": round(p.missing_share, 4)} for p in report.columns
        ],
    }
