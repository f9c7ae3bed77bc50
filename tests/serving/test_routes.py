"""The serving app in-process (httpx's ASGI transport): multiclass and regression outputs
match `mlcli predict`; and `mlcli serve`'s own errors: no such run, a busy port, bad options,
a missing `serve` extra."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest
from conftest import predict_with_cli
from typer.testing import CliRunner

from mlcli.cli.app import app

runner = CliRunner()


def _ask(run: Path, requests: list[tuple[str, str, dict | None]]) -> list[Any]:
    """The JSON answers of the app serving `run` (as model `m`) to (method, path, body)."""
    from mlcli._tensorflow import import_tensorflow

    import_tensorflow()
    from mlcli.serving.batching import Batcher
    from mlcli.serving.routes import create_app
    from mlcli.serving.servables import load_servable

    servable = load_servable(run, name="m")
    batcher = Batcher(servable.call, max_rows=16, timeout_s=0.001)
    transport = httpx.ASGITransport(create_app(servable, batcher=batcher, max_body_bytes=1 << 20))

    async def main() -> list[Any]:
        await batcher.start()  # what the app's lifespan does under uvicorn
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://m") as client:
                answers = []
                for method, path, body in requests:
                    response = await client.request(method, path, json=body)
                    assert response.status_code == 200, response.text
                    answers.append(response.json())
                return answers
        finally:
            await batcher.stop()

    return asyncio.run(main())


@pytest.fixture
def table(trained_runs) -> pa.Table:
    return pa_csv.read_csv(trained_runs["data"]).slice(0, 37)


def test_multiclass_rows_and_columns_match_predict(trained_runs, table, tmp_path):
    expected = predict_with_cli(trained_runs["multiclass"], table, tmp_path)
    rows, columns, metadata = _ask(
        trained_runs["multiclass"],
        [
            ("POST", "/v1/models/m:predict", {"instances": table.to_pylist()}),
            ("POST", "/v1/models/m:predict", {"inputs": table.to_pydict()}),
            ("GET", "/v1/models/m/metadata", None),
        ],
    )
    classes = metadata["metadata"]["mlcli"]["classes"]
    labels = [str(label) for label in expected.column("prediction").to_pylist()]
    assert [p["label"] for p in rows["predictions"]] == labels
    assert columns["outputs"]["label"] == labels
    for index, name in enumerate(classes):
        want = expected.column(f"probability_{name}").to_pylist()
        got = [p["probabilities"][index] for p in rows["predictions"]]
        assert got == pytest.approx(want, abs=1e-5)


def test_regression_returns_the_values_of_predict(trained_runs, table, tmp_path):
    expected = predict_with_cli(trained_runs["regression"], table, tmp_path)
    want = expected.column("prediction").to_pylist()
    rows, columns, metadata = _ask(
        trained_runs["regression"],
        [
            ("POST", "/v1/models/m:predict", {"instances": table.to_pylist()}),
            ("POST", "/v1/models/m:predict", {"inputs": table.to_pydict()}),
            ("GET", "/v1/models/m/metadata", None),
        ],
    )
    outputs = metadata["metadata"]["signature_def"]
    assert rows["predictions"] == pytest.approx(want, rel=1e-5, abs=1e-5)
    assert columns["outputs"] == pytest.approx(want, rel=1e-5, abs=1e-5)
    assert set(outputs["signature_def"]["serving_default"]["outputs"]) == {"prediction"}


def test_no_such_run_is_exit_4(tmp_path):
    result = runner.invoke(app, ["serve", str(tmp_path / "nothing"), "--port", "0"])
    assert result.exit_code == 4
    assert "no such run" in result.output


def test_a_busy_port_is_exit_2(trained_runs):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = runner.invoke(app, ["serve", str(trained_runs["binary"]), "--port", str(port)])
    assert result.exit_code == 2
    assert f"--port {port}" in result.output


@pytest.mark.parametrize(
    ("option", "value"),
    [("--workers", "0"), ("--max-batch-size", "0"), ("--port", "70000"), ("--log-format", "xml")],
)
def test_bad_options_are_exit_2(option, value):
    result = runner.invoke(app, ["serve", "any-run", option, value])
    assert result.exit_code == 2
    assert option in result.output


def test_a_missing_serve_extra_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    result = runner.invoke(app, ["serve", "any-run"])
    assert result.exit_code == 2
    assert "install mlcli[serve]" in result.output


def test_a_saved_model_export_serves_the_runs_answers(trained_runs, table, tmp_path):
    from mlcli.exporting.export import export

    export(trained_runs["binary"], format="saved_model", output=tmp_path / "exports")
    requests = [
        ("POST", "/v1/models/m:predict", {"instances": table.to_pylist()}),
        ("GET", "/v1/models/m/metadata", None),
    ]
    from_run = _ask(trained_runs["binary"], requests)
    from_export = _ask(tmp_path / "exports", requests)  # the version folder is found
    labels = [[p["label"] for p in answer[0]["predictions"]] for answer in (from_run, from_export)]
    assert labels[0] == labels[1]
    for ours, theirs in zip(from_run[0]["predictions"], from_export[0]["predictions"], strict=True):
        assert ours["probabilities"] == pytest.approx(theirs["probabilities"], abs=1e-5)
    assert from_export[1]["metadata"]["signature_def"] == from_run[1]["metadata"]["signature_def"]
