"""An ensemble (`model.ensemble`) with tree bins and the robust transform exports to every format
with its checks passed, and `mlcli serve` answers with the members' mean, as `mlcli predict`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.csv as pa_csv
import pytest
from conftest import predict_with_cli
from typer.testing import CliRunner

from mlcli.cli.app import app

runner = CliRunner()

FORMATS = ["saved_model", "keras", "tflite", "onnx"]


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory: pytest.TempPathFactory, trained_runs) -> Path:
    """A tiny regression run: an MLP ensemble of 3 over tree-binned robust numbers."""
    from mlcli.config.loading import parse_config
    from mlcli.training.train import train

    folder = tmp_path_factory.mktemp("ensemble")
    config = parse_config(
        {
            "name": "ensemble",
            "seed": 3,
            "data": {"train": str(trained_runs["data"]), "validation": 0.25},
            "target": {"column": "value", "task": "regression"},
            "features": {
                "age": {"type": "numeric", "transform": "robust"},
                "income": {"type": "numeric", "transform": "robust"},
                "exclude": ["id", "label", "tier", "review", "grade"],  # TFLite: no int lookups
            },
            "model": {
                "hidden_units": [16, 16],
                "ensemble": 3,
                "numeric_embedding": {"type": "piecewise_linear", "bins": 8, "binning": "tree"},
            },
            "training": {"epochs": 2, "batch_size": 32, "label_smoothing": 0.0},
            "output": {"dir": str(folder / "runs")},
        }
    )
    return Path(train(config))


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_exports_and_passes_its_check(ensemble_run, tmp_path, fmt):
    pytest.importorskip("onnxruntime") if fmt == "onnx" else None
    result = runner.invoke(
        app, ["export", str(ensemble_run), "--format", fmt, "-o", str(tmp_path / "out"), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    info = json.loads((Path(result.stdout.strip()) / "export.json").read_text())
    assert info["check"]["passed"], info["check"]


@pytest.mark.slow
def test_serve_answers_with_the_members_mean_as_predict(ensemble_run, trained_runs, tmp_path):
    import httpx

    from mlcli._tensorflow import import_tensorflow

    import_tensorflow()
    from mlcli.serving.batching import Batcher
    from mlcli.serving.routes import create_app
    from mlcli.serving.servables import load_servable

    table = pa_csv.read_csv(trained_runs["data"]).slice(0, 25)
    want = predict_with_cli(ensemble_run, table, tmp_path).column("prediction").to_pylist()
    servable = load_servable(ensemble_run, name="m")
    batcher = Batcher(servable.call, max_rows=16, timeout_s=0.001)
    transport = httpx.ASGITransport(create_app(servable, batcher=batcher, max_body_bytes=1 << 20))

    async def ask() -> Any:
        await batcher.start()
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://m") as client:
                body = {"instances": table.to_pylist()}
                response = await client.post("/v1/models/m:predict", json=body)
                assert response.status_code == 200, response.text
                return response.json()
        finally:
            await batcher.stop()

    import asyncio

    answer = asyncio.run(ask())
    assert answer["predictions"] == pytest.approx(want, rel=1e-5, abs=1e-5)
