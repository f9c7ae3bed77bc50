"""The light inference path: ONNX Runtime behind the Arrow encoder, against the Keras model.

Runs without text columns take it (binary calibrated, multiclass, regression with a log
transform and an integer categorical); `trained_runs` (text columns) falls back. Each fallback
is named in the `inference` event, and the light path never imports TensorFlow.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest
from conftest import REPO, make_table
from typer.testing import CliRunner

from mlcli.cli.app import app
from mlcli.inference.choice import ENVIRONMENT, choose_predictor, keras_predictor, light_choice
from mlcli.inference.conversion import LIGHT_TOLERANCE, recorded_check
from mlcli.inference.light import CORE_CALL_ROWS, Encoded, LightPredictor
from mlcli.reporting import Reporter
from mlcli.runs import directory as runs

runner = CliRunner()


class Events(Reporter):
    """Keeps every event, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, str, dict]] = []

    def event(self, name: str, message: str = "", **fields: object) -> None:
        self.events.append((name, message, fields))


def _copy(run: Path, folder: Path) -> runs.Run:
    """A copy of a shared run that a test may change."""
    return runs.Run(Path(shutil.copytree(run, folder / "run")))


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_light_outputs_equal_the_keras_models_within_the_tolerance(light_runs, task):
    from mlcli.features.schema import FeatureSchema

    run = runs.Run(light_runs[task])
    schema = FeatureSchema.load(run.file(runs.SCHEMA))
    table = make_table(300, seed=11)  # other rows than training's, unseen values included
    index = table.column_names.index("color")
    colors = table.column("color").to_pylist()[:-3] + ["teal"] * 3
    table = table.set_column(index, "color", pa.array(colors))
    choice = light_choice(run, schema)
    assert isinstance(choice.predictor, LightPredictor), choice.reason
    light = choice.predictor.outputs(table, source="t")
    keras = keras_predictor(run, schema, batch_rows=64).outputs(table, source="t")
    assert light.shape == keras.shape and light.dtype == np.float32
    scale = max(1.0, float(np.abs(keras).max()))
    assert float(np.abs(light - keras).max()) <= LIGHT_TOLERANCE * scale
    check = recorded_check(run)
    assert check is not None and check["passed"] and check["rows"] > 13
    assert check["tolerance"] == LIGHT_TOLERANCE
    if task == "binary":  # calibrated: the uncalibrated output is checked and kept too
        assert check["uncalibrated"]["passed"]
        assert choice.predictor.uncalibrated() is not None


def test_predict_evaluate_and_serve_never_import_tensorflow_on_the_light_path(light_runs, tmp_path):
    run = light_runs["multiclass"]
    light_choice(runs.Run(run), _schema(run))  # core.onnx written (in a child process)
    script = textwrap.dedent(
        f"""
        import sys
        import mlcli
        from mlcli.inference.predict import predict
        from mlcli.serving.servables import load_servable
        predict({str(run)!r}, data={str(light_runs["data"])!r}, output={str(tmp_path / "p.csv")!r})
        mlcli.evaluate({str(run)!r}, data={str(light_runs["data"])!r})
        servable = load_servable({str(run)!r})
        servable.call(servable.example())
        print(servable.inference)
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras")))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2:] == ["onnxruntime", "[]"]


_SERVE_FIRST_ANSWERS = """
import asyncio, json, sys
import httpx
from mlcli.serving.batching import Batcher
from mlcli.serving.routes import create_app
from mlcli.serving.servables import load_servable

servable = load_servable(sys.argv[1], name="m")
batcher = Batcher(servable.call, max_rows=16, timeout_s=0.001)
app = create_app(servable, batcher=batcher, max_body_bytes=1 << 20)
row = json.loads(sys.argv[2])


async def ask():
    await batcher.start()
    try:
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://m") as client:
            bodies = [{"instances": [row, row]}, {"inputs": {k: [v] for k, v in row.items()}}]
            return [(await client.post("/v1/models/m:predict", json=b)).status_code for b in bodies]
    finally:
        await batcher.stop()


print(servable.inference, asyncio.run(ask()))
print(sorted(m for m in sys.modules if m.split(".")[0] in ("pandas", "tensorflow", "keras")))
"""


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_a_light_server_answers_without_importing_pandas_or_tensorflow(light_runs, task):
    """pyarrow imports pandas on its first `pa.array` (0.4 s): a first answer must not wait."""
    run = light_runs[task]
    light_choice(runs.Run(run), _schema(run))  # core.onnx written (in a child process)
    row = pa_csv.read_csv(light_runs["data"]).slice(0, 1).to_pylist()[0]
    result = subprocess.run(
        [sys.executable, "-c", _SERVE_FIRST_ANSWERS, str(run), json.dumps(row)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2:] == ["onnxruntime [200, 200]", "[]"]


def _schema(run: Path):
    from mlcli.features.schema import FeatureSchema

    return FeatureSchema.load(run / runs.SCHEMA)


def test_the_first_event_names_the_path_and_keras_is_forced_by_the_environment(
    light_runs, tmp_path, monkeypatch
):
    run, data = light_runs["binary"], light_runs["data"]
    arguments = ["predict", str(run), "--data", str(data), "--log-format", "json"]
    result = runner.invoke(app, [*arguments, "--output", str(tmp_path / "a.csv")])
    assert result.exit_code == 0, result.output
    first = json.loads(result.stderr.splitlines()[0])
    assert first["event"] == "inference" and first["message"].startswith("onnxruntime")
    monkeypatch.setenv(ENVIRONMENT, "keras")
    result = runner.invoke(app, [*arguments, "--output", str(tmp_path / "b.csv")])
    assert result.exit_code == 0, result.output
    first = json.loads(result.stderr.splitlines()[0])
    assert first["message"] == f"keras ({ENVIRONMENT}=keras)"
    light = pa_csv.read_csv(tmp_path / "a.csv")
    keras = pa_csv.read_csv(tmp_path / "b.csv")
    assert light.column("prediction").equals(keras.column("prediction"))
    probability = light.column_names[1]  # probability_<positive class>
    difference = np.abs(light.column(probability).to_numpy() - keras.column(probability).to_numpy())
    assert difference.max() <= LIGHT_TOLERANCE


def test_evaluate_reports_the_same_metrics_on_both_paths(light_runs, monkeypatch):
    import mlcli

    run, data = light_runs["binary"], light_runs["data"]
    light = mlcli.evaluate(str(run), data=str(data))
    monkeypatch.setenv(ENVIRONMENT, "keras")
    keras = mlcli.evaluate(str(run), data=str(data))
    for name in ("accuracy", "auc", "log_loss"):
        assert light.metrics[name] == pytest.approx(keras.metrics[name], abs=1e-4)
    assert light.uncalibrated is not None and keras.uncalibrated is not None
    assert light.uncalibrated["log_loss"] == pytest.approx(keras.uncalibrated["log_loss"], abs=1e-4)


def test_a_text_column_falls_back_to_keras_naming_it(trained_runs):
    run = trained_runs["binary"]
    events = Events()
    predictor = choose_predictor(runs.Run(run), _schema(run), reporter=events)
    assert not isinstance(predictor, LightPredictor)
    name, message, fields = events.events[0]
    assert name == "inference" and message.startswith("keras (text column 'review'")
    assert fields["runtime"] == "keras"
    assert not (run / runs.CORE_ONNX).exists()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("garbage", "core.onnx is not the file that was checked"),
        ("garbage, digest updated", "core.onnx does not load"),
        ("failed check", "core.onnx failed its check"),
    ],
)
def test_a_damaged_core_falls_back_to_keras_and_says_so(light_runs, tmp_path, damage, reason):
    from mlcli import files
    from mlcli.inference.light import file_digest

    run = _copy(light_runs["regression"], tmp_path)
    assert light_choice(run, _schema(run.path)).predictor is not None
    manifest = runs.read_manifest(run)
    if damage.startswith("garbage"):
        run.file(runs.CORE_ONNX).write_bytes(b"not an onnx model")
        if "digest" in damage:
            manifest["checks"]["light"]["sha256"] = file_digest(run.file(runs.CORE_ONNX))
    else:
        manifest["checks"]["light"]["passed"] = False
        run.file(runs.CORE_ONNX).unlink()
    files.write_json(run.file(runs.MANIFEST), manifest)
    choice = light_choice(run, _schema(run.path))
    assert choice.predictor is None and choice.reason.startswith(reason), choice.reason
    arguments = ["predict", str(run.path), "--data", str(light_runs["data"]), "-o", "-"]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[0].startswith(f"[inference] keras ({reason}")
    assert not (run.file(runs.CORE_ONNX).exists() and damage == "failed check")  # not retried


def test_without_onnxruntime_the_keras_model_is_used(light_runs, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name)
    )
    choice = light_choice(runs.Run(light_runs["binary"]), _schema(light_runs["binary"]))
    assert choice.predictor is None and choice.reason.startswith("onnxruntime is not installed")


def test_without_tensorflow_a_run_without_its_core_says_how_to_write_it(
    light_runs, tmp_path, monkeypatch
):
    import importlib.util

    run = _copy(light_runs["binary"], tmp_path)
    run.file(runs.CORE_ONNX).unlink(missing_ok=True)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorflow" else real(name)
    )
    choice = light_choice(run, _schema(run.path))
    assert choice.predictor is None and "pip install 'mlcli[train]'" in choice.reason


def test_required_light_path_and_a_bad_setting_are_usage_and_run_errors(
    trained_runs, light_runs, monkeypatch
):
    data = str(light_runs["data"])
    monkeypatch.setenv(ENVIRONMENT, "onnxruntime")
    result = runner.invoke(app, ["predict", str(trained_runs["binary"]), "--data", data, "-o", "-"])
    assert result.exit_code == 4
    assert "text column 'review'" in result.stderr and len(result.stderr.splitlines()) == 1
    monkeypatch.setenv(ENVIRONMENT, "tensorflow-please")
    result = runner.invoke(app, ["predict", str(light_runs["binary"]), "--data", data, "-o", "-"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: {ENVIRONMENT}='tensorflow-please': expected one of auto, keras, onnxruntime"
    )


def test_an_empty_table_and_one_row_give_outputs_of_the_right_shape(light_runs):
    run = runs.Run(light_runs["multiclass"])
    predictor = light_choice(run, _schema(run.path)).predictor
    assert predictor is not None
    assert predictor.outputs(make_table(10).slice(0, 0), source="t").shape == (0, 3)
    call = predictor.column_call()
    row = make_table(1, seed=2)
    columns = {name: row.column(name).to_numpy().reshape(-1, 1) for name in row.column_names}
    outputs = call(columns)
    assert outputs.shape == (1, 3) and abs(float(outputs.sum()) - 1.0) < 1e-5


def test_export_writes_the_core_once_while_the_model_is_loaded(light_runs, tmp_path):
    from mlcli import files

    run = _copy(light_runs["binary"], tmp_path)
    run.file(runs.CORE_ONNX).unlink(missing_ok=True)
    manifest = runs.read_manifest(run)
    manifest.get("checks", {}).pop("light", None)
    files.write_json(run.file(runs.MANIFEST), manifest)
    output = tmp_path / "export"
    arguments = ["export", str(run.path), "--format", "keras", "--output", str(output)]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert "[light] core.onnx written and checked" in result.stderr
    assert run.file(runs.CORE_ONNX).is_file() and recorded_check(run)["passed"]


class _RecordingSession:
    """An ONNX Runtime session stand-in: each row's output is the sum of its inputs."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def get_inputs(self) -> list[object]:
        return [type("Input", (), {"name": name})() for name in ("a", "b")]

    def get_outputs(self) -> list[object]:
        return [type("Output", (), {"name": "out"})()]

    def run(self, names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.calls.append(len(feed["a"]))
        return [(feed["a"] + feed["b"]).astype(np.float32)]


@pytest.mark.parametrize("rows", [1, CORE_CALL_ROWS - 1, CORE_CALL_ROWS, 3 * CORE_CALL_ROWS + 7])
@pytest.mark.parametrize("batch_rows", [1000, CORE_CALL_ROWS, 65536])
def test_the_core_is_called_on_bounded_slices_whatever_the_batch(rows, batch_rows):
    session = _RecordingSession()
    predictor = LightPredictor(session, None, batch_rows=batch_rows)  # type: ignore[arg-type]
    a = np.arange(rows, dtype=np.float32).reshape(-1, 1)
    b = np.full((rows, 1), 0.5, np.float32)
    outputs = predictor.run(Encoded(rows=rows, feed={"a": a, "b": b}))
    np.testing.assert_array_equal(outputs, a + b)  # every row once, in order
    assert max(session.calls) <= min(batch_rows, CORE_CALL_ROWS)
    assert sum(session.calls) == rows
