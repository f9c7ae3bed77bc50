"""`mlcli export`: each format reloaded in its own runtime and compared with the Keras model.

The SavedModel is served by a Python process that imports nothing but TensorFlow, the ONNX file
by one that imports nothing but onnxruntime; both get raw rows as a client has them (column
names with dashes, a missing number, an unseen category).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest
from typer.testing import CliRunner

from mlcli.cli.app import app

runner = CliRunner()


def _export(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["export", *args, "--quiet"])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def portable_runs(
    trained_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Tiny runs without text: `regression` (with an integer categorical) and `binary`
    (numbers with missing values and string categories only), and their data."""
    from mlcli.config.loading import parse_config
    from mlcli.training.train import train

    folder = tmp_path_factory.mktemp("portable")
    data = folder / "data.csv"
    table = pa_csv.read_csv(trained_runs["data"])  # conftest.make_table's columns
    renamed = {"income": "house-income", "member": "isMember"}  # TensorFlow renames both
    names = [renamed.get(name, name) for name in table.column_names]
    pa_csv.write_csv(table.rename_columns(names), data)
    found = {"data": data}
    for task, target, exclude in (("regression", "value", []), ("binary", "label", ["grade"])):
        others = [c for c in ("id", "label", "tier", "value", "review") if c != target]
        features: dict[str, Any] = {"exclude": others + exclude}
        if not exclude:
            features["grade"] = "categorical"
        config = parse_config(
            {
                "name": f"portable-{task}",
                "seed": 1,
                "data": {"train": str(data), "validation": 0.25},
                "target": {"column": target, "task": task},
                "features": features,
                "training": {"epochs": 2, "batch_size": 32, "steps_per_execution": 4},
                "output": {"dir": str(folder / "runs")},
            }
        )
        found[task] = train(config)
    return found


def _raw_rows(data: Path, schema: dict[str, Any], count: int = 5) -> list[dict[str, Any]]:
    """Rows as a client sends them, plus one with a missing number and an unseen category."""
    names = [c["name"] for c in schema["columns"]]
    rows = pa_csv.read_csv(data).select(names).slice(0, count).to_pylist()
    floats = [c["name"] for c in schema["columns"] if c["dtype"] == "float32"]
    # the signature marks a missing number with NaN (the CSV's first row has one)
    rows = [{k: math.nan if k in floats and v is None else v for k, v in r.items()} for r in rows]
    odd = dict(rows[0])
    for column in schema["columns"]:
        if column["dtype"] == "float32":
            odd[column["name"]] = math.nan
        elif column["dtype"] == "string":
            odd[column["name"]] = "never-seen-before"
    return [*rows, odd]


def _keras_outputs(run: Path, rows: list[dict[str, Any]]) -> np.ndarray:
    from mlcli.inference.predictor import Predictor
    from mlcli.runs.loading import open_run

    loaded = open_run(run)
    columns = {name: [row[name] for row in rows] for name in loaded.schema.input_names}
    table = pa.table(
        {
            name: pa.array(values, from_pandas=True)  # NaN -> missing, as the model reads it
            for name, values in columns.items()
        }
    )
    return Predictor(loaded.model, loaded.schema).outputs(table, source="test")


def _run_alone(script: str, payload: Any) -> Any:
    """Runs `script` in a fresh, isolated interpreter (-I: not even the test folder importable)."""
    result = subprocess.run(
        [sys.executable, "-I", "-c", script, json.dumps(payload)],
        capture_output=True,
        text=True,
        timeout=300,
        env={"TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1", "PATH": "/usr/bin"},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


SERVE_WITH_TENSORFLOW_ONLY = """
import json, sys
import tensorflow as tf
directory, rows = json.loads(sys.argv[1])
serving = tf.saved_model.load(directory).signatures["serving_default"]
_, specs = serving.structured_input_signature
# each column's signature input is named in export.json (house-income -> house_income__<hash>)
with open(directory + "/export.json", encoding="utf-8") as stream:
    inputs = json.load(stream)["signature"]["inputs"]
keyword = {spec["signature_name"]: name for name, spec in inputs.items()}
feed = {
    key: tf.constant([row[keyword[key]] for row in rows], spec.dtype)
    for key, spec in specs.items()
}
outputs = {name: tensor.numpy().tolist() for name, tensor in serving(**feed).items()}
outputs["label"] = [label.decode() for label in outputs["label"]]
outputs["mlcli_imported"] = any(name.startswith("mlcli") for name in sys.modules)
print(json.dumps(outputs))
"""


@pytest.fixture(scope="module")
def saved_model(portable_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The portable binary run exported as a SavedModel, version 3."""
    output = tmp_path_factory.mktemp("serving")
    code, stdout, stderr = _export(
        str(portable_runs["binary"]), "--format", "saved_model", "-o", str(output), "--version", "3"
    )
    assert code == 0, stderr
    assert stdout.strip() == str(output / "portable-binary" / "3")
    return Path(stdout.strip())


def test_saved_model_serves_raw_rows_with_tensorflow_alone(portable_runs, saved_model):
    assert (saved_model / "saved_model.pb").is_file() and (saved_model / "variables").is_dir()
    info = json.loads((saved_model / "export.json").read_text())
    assert info["check"]["passed"] and info["check"]["max_abs_difference"] <= 1e-4
    schema = json.loads((portable_runs["binary"] / "schema.json").read_text())
    assert info["label_classes"] == schema["target"]["classes"]
    assert {"house-income", "isMember"} <= set(info["signature"]["inputs"])
    rows = _raw_rows(portable_runs["data"], schema)
    served = _run_alone(SERVE_WITH_TENSORFLOW_ONLY, [str(saved_model), rows])
    assert served["mlcli_imported"] is False
    expected = _keras_outputs(portable_runs["binary"], rows)[:, 0]
    probabilities = np.asarray(served["probabilities"])
    np.testing.assert_allclose(probabilities[:, 1], expected, atol=1e-5)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    classes = schema["target"]["classes"]
    assert served["label"] == [classes[int(p >= 0.5)] for p in expected]


@pytest.mark.slow
def test_saved_model_of_text_and_integer_categories(trained_runs, tmp_path):
    code, stdout, stderr = _export(
        str(trained_runs["multiclass"]), "--format", "saved_model", "-o", str(tmp_path)
    )
    assert code == 0, stderr
    info = json.loads((Path(stdout.strip()) / "export.json").read_text())
    assert info["signature"]["inputs"]["review"]["dtype"] == "string"
    assert info["signature"]["inputs"]["grade"]["dtype"] == "int64"
    assert info["signature"]["outputs"]["probabilities"]["shape"] == [None, 3]
    assert info["check"]["passed"] and info["check"]["label_mismatches"] == 0


def test_an_existing_version_is_not_overwritten(portable_runs, saved_model):
    before = (saved_model / "saved_model.pb").stat().st_mtime_ns
    output = saved_model.parents[1]
    code, _, stderr = _export(
        str(portable_runs["binary"]), "-f", "saved_model", "-o", str(output), "--version", "3"
    )
    assert code == 4 and "already exists; pass --force" in stderr
    assert (saved_model / "saved_model.pb").stat().st_mtime_ns == before


def test_saved_model_cli_lists_the_raw_column_names(portable_runs, saved_model):
    cli = Path(sys.executable).with_name("saved_model_cli")
    if not cli.exists():
        pytest.skip("saved_model_cli is not installed beside this Python")
    shown = subprocess.run(
        [
            str(cli),
            "show",
            "--dir",
            str(saved_model),
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    inputs = json.loads((saved_model / "export.json").read_text())["signature"]["inputs"]
    for spec in inputs.values():
        assert f"inputs['{spec['signature_name']}']" in shown
    assert "outputs['probabilities']" in shown and "outputs['label']" in shown


RUN_WITH_ONNXRUNTIME_ONLY = """
import json, sys
import numpy as np
import onnxruntime
path, rows = json.loads(sys.argv[1])
session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
types = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(string)": object}
feed = {
    i.name: np.array([row[i.name] for row in rows], types[i.type]) for i in session.get_inputs()
}
names = [o.name for o in session.get_outputs()]
outputs = dict(zip(names, (v.tolist() for v in session.run(names, feed))))
outputs["tensorflow_imported"] = "tensorflow" in sys.modules
print(json.dumps(outputs))
"""


def test_onnx_runs_in_onnxruntime_alone(portable_runs, tmp_path):
    pytest.importorskip("tf2onnx", reason="the onnx extra is not installed")
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    run = portable_runs["regression"]
    code, stdout, stderr = _export(str(run), "--format", "onnx", "-o", str(tmp_path / "onnx"))
    assert code == 0, stderr
    path = Path(stdout.strip()) / "model.onnx"
    schema = json.loads((run / "schema.json").read_text())
    rows = _raw_rows(portable_runs["data"], schema)
    rows[-1]["grade"] = 99  # an integer category never seen in training
    outputs = _run_alone(RUN_WITH_ONNXRUNTIME_ONLY, [str(path), rows])
    assert outputs["tensorflow_imported"] is False
    expected = _keras_outputs(run, rows)[:, 0]
    np.testing.assert_allclose(outputs["prediction"], expected, rtol=1e-4, atol=1e-4)
    info = json.loads((path.parent / "export.json").read_text())
    assert info["versions"]["tf2onnx"] != "not installed"
    assert list(info["signature"]["inputs"]) == [c["name"] for c in schema["columns"]]


@pytest.mark.slow
def test_tflite_round_trip(portable_runs, tmp_path):
    import tensorflow as tf

    run = portable_runs["binary"]
    code, stdout, stderr = _export(str(run), "--format", "tflite", "-o", str(tmp_path / "lite"))
    assert code == 0, stderr
    schema = json.loads((run / "schema.json").read_text())
    rows = _raw_rows(portable_runs["data"], schema)
    exported = Path(stdout.strip())
    serving = tf.lite.Interpreter(model_path=str(exported / "model.tflite"))
    signature = serving.get_signature_runner("serving_default")
    # the signature's inputs take each column's injective `signature_name` (house-income has
    # a '-', which a signature key cannot hold)
    inputs = json.loads((exported / "export.json").read_text())["signature"]["inputs"]
    types = {"float32": np.float32, "string": object}
    outputs = signature(
        **{
            inputs[c["name"]]["signature_name"]: np.array(
                [row[c["name"]] for row in rows], types[c["dtype"]]
            )
            for c in schema["columns"]
        }
    )
    expected = _keras_outputs(run, rows)[:, 0]
    np.testing.assert_allclose(outputs["probabilities"][:, 1], expected, atol=1e-5)
    classes = schema["target"]["classes"]
    assert [v.decode() for v in outputs["label"]] == [classes[int(p >= 0.5)] for p in expected]


@pytest.mark.slow
def test_keras_round_trip(trained_runs, tmp_path):
    import keras

    run = trained_runs["regression"]
    target = tmp_path / "keras"
    code, stdout, stderr = _export(str(run), "--format", "keras", "-o", str(target))
    assert code == 0, stderr
    model = keras.saving.load_model(Path(stdout.strip()) / "model.keras", safe_mode=True)
    schema = json.loads((run / "schema.json").read_text())
    rows = _raw_rows(trained_runs["data"], schema)
    from mlcli.features.schema import FeatureSchema
    from mlcli.inference.predictor import Predictor

    table = pa.table({k: pa.array([r[k] for r in rows], from_pandas=True) for k in rows[0]})
    loaded_schema = FeatureSchema.from_dict(schema)
    np.testing.assert_allclose(
        Predictor(model, loaded_schema).outputs(table, source="test"),
        _keras_outputs(run, rows),
        atol=1e-6,
    )
    info = json.loads((target / "export.json").read_text())
    assert info["check"]["max_abs_difference"] == 0.0 and info["check"]["label_mismatches"] == 0


def test_a_difference_beyond_tolerance_fails_and_writes_nothing(
    trained_runs, tmp_path, monkeypatch
):
    import mlcli.exporting.export

    real = mlcli.exporting.export.run_in_runtime

    def drifting(*args: Any, **kwargs: Any) -> Any:
        runtime, outputs = real(*args, **kwargs)
        outputs["output"] = outputs["output"] + 0.01
        return runtime, outputs

    monkeypatch.setattr(mlcli.exporting.export, "run_in_runtime", drifting)
    target = tmp_path / "exports" / "keras"
    code, _, stderr = _export(str(trained_runs["binary"]), "--format", "keras", "-o", str(target))
    assert code == 4
    assert "differs from the trained Keras model by up to 0.01" in stderr
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_columns_a_format_cannot_hold_are_named_before_any_work(portable_runs, trained_runs):
    code, _, stderr = _export(str(portable_runs["regression"]), "--format", "tflite")
    assert code == 4
    assert "'grade' (integer categorical)" in stderr and "saved_model" in stderr
    code, _, stderr = _export(str(trained_runs["multiclass"]), "--format", "onnx")
    assert code == 4 and "'review' (text)" in stderr
    assert not (trained_runs["multiclass"] / "exports").exists()


def test_usage_errors(trained_runs, portable_runs, monkeypatch):
    code, _, stderr = _export(str(trained_runs["binary"]), "--format", "pickle")
    assert code == 2 and "saved_model, keras, tflite, onnx" in stderr
    code, _, stderr = _export(str(trained_runs["binary"]), "-f", "saved_model", "--version", "0")
    assert code == 2 and "--version" in stderr
    import mlcli.exporting.formats

    monkeypatch.setattr(mlcli.exporting.formats.importlib.util, "find_spec", lambda name: None)
    code, _, stderr = _export(str(portable_runs["binary"]), "--format", "onnx")
    assert code == 2 and "install mlcli[onnx]" in stderr


def test_export_json_names_the_target_and_the_saved_models_digest(portable_runs, saved_model):
    from mlcli.exporting.digest import DIGEST_KEY, export_digest

    info = json.loads((saved_model / "export.json").read_text())
    assert info["target"] == "label"
    assert info[DIGEST_KEY] == export_digest(saved_model)
    assert set(info["files"]) == {p.name + "/" * p.is_dir() for p in saved_model.iterdir()} - {
        "export.json"
    }


def test_force_replaces_only_an_export_mlcli_wrote(portable_runs, saved_model, tmp_path):
    run = str(portable_runs["binary"])
    serving = saved_model.parents[1]  # holds <model-name>/3: not an export of its own
    before = (saved_model / "saved_model.pb").read_bytes()
    code, _, stderr = _export(run, "-f", "keras", "-o", str(serving), "--force")
    assert code == 2 and f"{serving}: holds portable-binary/" in stderr
    assert (saved_model / "saved_model.pb").read_bytes() == before
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.yaml").write_text("name: mine\n")
    code, _, stderr = _export(run, "-f", "keras", "-o", str(project), "--force")
    assert code == 2 and "config.yaml" in stderr
    assert sorted(p.name for p in project.iterdir()) == ["config.yaml"]  # nothing written


def test_force_never_replaces_the_working_directory(portable_runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "export.json").write_text('{"format": "keras", "files": ["model.keras"]}')
    code, _, stderr = _export(str(portable_runs["binary"]), "-f", "keras", "-o", ".", "--force")
    assert code == 2 and "is the working directory" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.json"]


@pytest.mark.slow
def test_force_replaces_a_keras_export_in_missing_folders(portable_runs, tmp_path):
    run, target = str(portable_runs["binary"]), tmp_path / "new" / "deeper" / "keras"
    code, stdout, stderr = _export(run, "-f", "keras", "-o", str(target))
    assert code == 0 and stdout.strip() == str(target), stderr
    created = json.loads((target / "export.json").read_text())["created"]
    (target / "model.keras").write_bytes(b"stale")
    code, _, stderr = _export(run, "-f", "keras", "-o", str(target), "--force")
    assert code == 0, stderr
    assert (target / "model.keras").read_bytes() != b"stale"
    assert sorted(p.name for p in target.parent.iterdir()) == ["keras"]  # nothing left aside
    assert json.loads((target / "export.json").read_text())["created"] >= created
