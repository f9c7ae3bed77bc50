"""Shared fixtures: tiny generated tables, configs written to a temporary folder, and the
real datasets of ../shared (tests that use them skip where that folder is absent)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import yaml

from mlcli.config.loading import parse_config
from mlcli.config.schema import Config

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


@pytest.fixture
def shared_datasets() -> Path:
    """The real datasets, or a skip where ../shared is absent."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip("../shared/datasets is not present")
    return SHARED_DATASETS


def make_table(rows: int = 400, *, seed: int = 0) -> pa.Table:
    """A small table with every feature type and a learnable target for each task."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(18, 80, rows)
    income = rng.lognormal(10, 1, rows)
    color = rng.choice(["red", "green", "blue"], rows)
    grade = rng.integers(1, 5, rows)
    member = rng.choice(["yes", "no"], rows)
    words = np.array(["good", "great", "fine", "bad", "awful", "poor", "okay", "the", "a"])
    text = [" ".join(rng.choice(words, 6)) for _ in range(rows)]
    positive = np.array([sum(w in ("good", "great") for w in t.split()) for t in text])
    score = (age - 50) / 15 + (color == "red") * 1.5 - (member == "no") + positive * 0.8
    age_values: list[float | None] = [float(round(a, 1)) for a in age]
    for index in range(0, rows, 17):
        age_values[index] = None  # missing numbers
    return pa.table(
        {
            "id": np.arange(rows),
            "age": pa.array(age_values, pa.float64()),
            "income": income.round(2),
            "color": color,
            "grade": grade,
            "member": member,
            "review": text,
            "label": np.where(score > np.median(score), "high", "low"),
            "tier": np.digitize(score, np.quantile(score, [0.33, 0.66])).astype(str),
            "value": (score * 2.0 + rng.normal(0, 0.1, rows)).round(4),
        }
    )


@pytest.fixture
def tiny_csv(tmp_path: Path) -> Path:
    """`data.csv` with a header, written from `make_table`."""
    path = tmp_path / "data.csv"
    pa_csv.write_csv(make_table(), path)
    return path


@pytest.fixture
def write_config(tmp_path: Path, tiny_csv: Path) -> Callable[..., Path]:
    """Writes a config for the tiny table; keyword sections are merged over the defaults."""

    def write(name: str = "config.yaml", **sections: Any) -> Path:
        config: dict[str, Any] = {
            "name": "tiny",
            "seed": 7,
            "data": {"train": tiny_csv.name, "validation": 0.25},
            "target": {"column": "label", "task": "binary"},
            "features": {
                "review": "text",
                "grade": "categorical",
                "exclude": ["id", "tier", "value"],
            },
            "training": {"epochs": 2, "batch_size": 32, "steps_per_execution": 1},
            "output": {"dir": str(tmp_path / "runs")},
        }
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
        path = tmp_path / name
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    return write


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny trained run per task (`binary`, `multiclass`, `regression`), trained once.

    Every feature type is present: numeric with missing values, categorical (string and
    integer), binary and text. The runs are shared: tests must not modify them.
    """
    from mlcli.config.loading import parse_config
    from mlcli.training.train import train

    folder = tmp_path_factory.mktemp("trained")
    data = folder / "data.csv"
    pa_csv.write_csv(make_table(), data)
    found: dict[str, Path] = {}
    for task, target in (("binary", "label"), ("multiclass", "tier"), ("regression", "value")):
        exclude = [c for c in ("id", "label", "tier", "value") if c != target]
        config = parse_config(
            {
                "name": f"tiny-{task}",
                "seed": 3,
                "data": {"train": str(data), "validation": 0.25, "test": str(data)},
                "target": {"column": target, "task": task},
                "features": {"review": "text", "grade": "categorical", "exclude": exclude},
                "training": {"epochs": 3, "batch_size": 32, "steps_per_execution": 4},
                "output": {"dir": str(folder / "runs")},
            }
        )
        found[task] = train(config)
    found["data"] = data
    return found


def predict_with_cli(run: Path, table: pa.Table, folder: Path) -> pa.Table:
    """What `mlcli predict` writes for `table` (the reference the server is compared with)."""
    from typer.testing import CliRunner

    from mlcli.cli.app import app

    data, output = folder / "rows.csv", folder / "predictions.csv"
    pa_csv.write_csv(table, data)
    result = CliRunner().invoke(
        app, ["predict", str(run), "--data", str(data), "--output", str(output), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    return pa_csv.read_csv(output)


def uci_like(tmp_path: Path, rows: int = 300) -> Path:
    """No header, ', ' separators, '?' for missing values, like UCI's Adult."""
    rng = np.random.default_rng(6)
    lines = ["|banner line"]
    for i in range(rows):
        job = "?" if i % 23 == 0 else rng.choice(["Private", "State-gov", "Self-emp"])
        age = int(rng.integers(18, 80))
        lines.append(f"{age}, {job}, {rng.normal():.3f}, {'>50K' if age > 45 else '<=50K'}")
    path = tmp_path / "people.data"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_parts(table: pa.Table, folder: Path, fmt: str, files: int = 3) -> str:
    """`table` as `files` Parquet or CSV parts in a new `folder`; returns their glob."""
    folder.mkdir()
    size = -(-table.num_rows // files)
    for index in range(files):
        part = table.slice(index * size, size)
        if fmt == "parquet":
            pq.write_table(part, folder / f"part-{index}.parquet")
        else:
            pa_csv.write_csv(part, folder / f"part-{index}.csv")
    return str(folder / f"*.{fmt}")


def streamed_config(train: str, **data: object) -> Config:
    """A streamed binary config over the tiny table at `train`, with `data` keys laid over."""
    return parse_config(
        {
            "name": "streamed",
            "seed": 5,
            "data": {"train": train, "validation": 0.2, "test": 0.1, "streaming": True, **data},
            "target": {"column": "label", "task": "binary"},
            "features": {
                "review": "text",
                "grade": "categorical",
                "income": {"type": "numeric", "transform": "quantile"},
                "age": {"type": "numeric", "transform": "log"},
                "exclude": ["id"],
            },
        }
    )


def regenerated(script: str, output: Path) -> str:
    """What `python docs/<script> --output OUTPUT` writes (the generated references' check)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, str(REPO / "docs" / script), "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return output.read_text(encoding="utf-8")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def ray_local() -> Any:
    """One local Ray instance (2 CPUs, loopback) for every test that runs on Ray; `--ray`
    commands in this process join it. Skips where Ray (mlcli[ray]) is not installed."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            _node_ip_address="127.0.0.1",
        )
    yield ray
    ray.shutdown()
