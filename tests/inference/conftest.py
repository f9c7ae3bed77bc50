"""Fixtures of the inference tests: tiny runs that take the light path."""

from __future__ import annotations

from pathlib import Path

import pyarrow.csv as pa_csv
import pytest
from conftest import make_table


@pytest.fixture(scope="session")
def light_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny run per task with no text column (trained once per session)."""
    from mlcli.config.loading import parse_config
    from mlcli.training.train import train

    folder = tmp_path_factory.mktemp("light")
    data = folder / "data.csv"
    pa_csv.write_csv(make_table(), data)
    found: dict[str, Path] = {"data": data}
    tasks = (
        ("binary", "label", {"training": {"calibration": "temperature"}}),
        ("multiclass", "tier", {}),
        ("regression", "value", {"features": {"income": {"type": "numeric", "transform": "log"}}}),
    )
    for task, target, extra in tasks:
        exclude = [c for c in ("id", "label", "tier", "value", "review") if c != target]
        features = {"grade": "categorical", "exclude": exclude, **extra.get("features", {})}
        training = {"epochs": 2, "batch_size": 32, **extra.get("training", {})}
        config = parse_config(
            {
                "name": f"light-{task}",
                "seed": 3,
                "data": {"train": str(data), "validation": 0.25},
                "target": {"column": target, "task": task},
                "features": features,
                "training": training,
                "output": {"dir": str(folder / "runs")},
            }
        )
        found[task] = train(config)
    return found
