"""A run written by the flat-package mlcli (tests/fixtures/legacy_run, see its README) still
evaluates, predicts, exports and serves; the answers agree with one another.

The fixture is copied first: evaluate and export write into a run, and tests/fixtures stays as
it was committed. The run has no `sample.parquet` and names data that no longer exists, so its
export is checked on rows made from its schema.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest
from typer.testing import CliRunner

from mlcli.cli.app import app

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
runner = CliRunner()


@pytest.fixture(scope="module")
def legacy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A copy of the legacy run and of its data."""
    folder = tmp_path_factory.mktemp("legacy")
    run = Path(shutil.copytree(FIXTURES / "legacy_run", folder / "run"))
    data = Path(shutil.copy(FIXTURES / "legacy_data.csv", folder / "data.csv"))
    assert not (run / "sample.parquet").exists()  # a run made before sample rows were saved
    return {"run": run, "data": data, "folder": folder}


def _cli(*args: str) -> str:
    result = runner.invoke(app, [*args, "--quiet"])
    assert result.exit_code == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def predictions(legacy: dict[str, Path]) -> pa.Table:
    output = legacy["folder"] / "predictions.csv"
    _cli("predict", str(legacy["run"]), "--data", str(legacy["data"]), "-o", str(output))
    return pa_csv.read_csv(output)


def test_evaluate_agrees_with_predict(legacy, predictions):
    metrics = json.loads(
        _cli("evaluate", str(legacy["run"]), "--data", str(legacy["data"]), "--json")
    )
    labels = pa_csv.read_csv(legacy["data"]).column("label").to_pylist()
    assert predictions.num_rows == len(labels) == metrics["rows"] == 160
    predicted = predictions.column("prediction").to_pylist()
    accuracy = float(np.mean([p == t for p, t in zip(predicted, labels, strict=True)]))
    assert metrics["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert 0.0 < metrics["auc"] <= 1.0
    assert predictions.column_names == ["prediction", "probability_low"]
    assert set(predicted) <= {"high", "low"}


@pytest.mark.parametrize("export_format", ["saved_model", "keras"])
def test_exports_pass_their_check(legacy, export_format):
    output = legacy["folder"] / "exports" / export_format
    folder = Path(
        _cli("export", str(legacy["run"]), "--format", export_format, "-o", str(output)).strip()
    )
    info = json.loads((folder / "export.json").read_text())
    assert info["format"] == export_format and info["task"] == "binary"
    check = info["check"]
    assert check["passed"] and check["max_abs_difference"] <= 1e-4
    assert check["label_mismatches"] == 0
    assert "rows made from schema.json" in check["sample"]  # its data is gone


def _serve_one_request(run: Path, body: dict[str, Any]) -> dict[str, Any]:
    """One :predict answer of the Starlette app serving `run`, in-process."""
    import httpx

    from mlcli._tensorflow import import_tensorflow

    import_tensorflow()
    from mlcli.serving.batching import Batcher
    from mlcli.serving.routes import create_app
    from mlcli.serving.servables import load_servable

    servable = load_servable(run, name="legacy")
    batcher = Batcher(servable.call, max_rows=64, timeout_s=0.001)
    transport = httpx.ASGITransport(create_app(servable, batcher=batcher, max_body_bytes=1 << 20))

    async def main() -> dict[str, Any]:
        await batcher.start()
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://m") as client:
                response = await client.post("/v1/models/legacy:predict", json=body)
                assert response.status_code == 200, response.text
                return response.json()
        finally:
            await batcher.stop()

    return asyncio.run(main())


def test_served_predictions_equal_predicts(legacy, predictions):
    rows = pa_csv.read_csv(legacy["data"]).slice(0, 40)
    answer = _serve_one_request(legacy["run"], {"instances": rows.to_pylist()})
    served = answer["predictions"]
    expected = predictions.slice(0, 40)
    assert [p["label"] for p in served] == expected.column("prediction").to_pylist()
    positive = [p["probabilities"][1] for p in served]
    assert positive == pytest.approx(expected.column("probability_low").to_pylist(), abs=1e-5)
