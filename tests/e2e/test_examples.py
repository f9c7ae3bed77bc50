"""The shipped examples train as they are (slow: real datasets, full configs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO
from typer.testing import CliRunner

from mlcli.cli.app import app

runner = CliRunner()
EXAMPLES = sorted((REPO / "examples").glob("*/config*.yaml"))


def _train(config: Path, output: Path) -> dict:
    result = runner.invoke(app, ["train", str(config), "--quiet", "--output", str(output)])
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip().splitlines()[-1])
    return json.loads((run / "metrics.json").read_text())


@pytest.mark.slow
def test_adult_example_reaches_its_published_accuracy(tmp_path: Path):
    metrics = _train(REPO / "examples" / "adult" / "config.yaml", tmp_path)
    assert metrics["test"]["rows"] == 16281
    assert metrics["test"]["accuracy"] >= 0.850


@pytest.mark.slow
@pytest.mark.parametrize("config", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_example_trains_as_is(tmp_path: Path, config: Path):
    metrics = _train(config, tmp_path)
    assert metrics["validation"]["rows"] > 0
