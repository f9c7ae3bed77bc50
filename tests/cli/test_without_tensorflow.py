"""An install without the `train` extra: the commands that need TensorFlow say so in one line
(exit 2, "install mlcli[train]"); the others work; bad arguments keep their own exit codes.

Each group of cases runs in a fresh child interpreter in which `import tensorflow` and
`import keras` fail as they do where the packages are not installed: a finder first on
`sys.meta_path` raises `ModuleNotFoundError` for them (and `importlib.util.find_spec` with it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.csv as pa_csv
import pytest
import yaml

_CHILD = """
import importlib.abc, json, sys

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"tensorflow", "keras"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
from typer.testing import CliRunner
from mlcli.cli.app import app

found = []
for arguments in json.loads(sys.argv[1]):
    result = CliRunner().invoke(app, arguments)
    heavy = sorted({"tensorflow", "keras"} & set(sys.modules))
    found.append({"code": result.exit_code, "stderr": result.stderr, "heavy": heavy})
print(json.dumps(found))
"""

NEEDS = "needs TensorFlow: install mlcli[train] (pip install 'mlcli[train]')"


def _run_without_tensorflow(cases: list[list[str]], folder: Path) -> list[dict]:
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(cases)],
        capture_output=True,
        text=True,
        cwd=folder,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr
    return json.loads(child.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def keras_run(trained_runs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of a trained run that only its Keras model can predict with."""
    run = tmp_path_factory.mktemp("keras-only") / "run"
    shutil.copytree(trained_runs["binary"], run)
    for light in run.rglob("*.onnx"):  # a network stored for ONNX Runtime would not need TF
        light.unlink()
    return run


def _train_config(folder: Path, data: Path, **features: str) -> Path:
    config = folder / f"train-{len(features)}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "t",
                "data": {"train": str(data), "validation": 0.25},
                "target": {"column": "label"},
                "features": {"grade": "categorical", "exclude": ["id", "tier", "value"]} | features,
                "training": {"epochs": 1},
                "output": {"dir": str(folder / "runs")},
            }
        )
    )
    return config


def test_commands_that_load_a_model_or_train_ask_for_the_train_extra(
    keras_run, trained_runs, tmp_path
):
    data = trained_runs["data"]
    cases = {
        "train": ["train", str(_train_config(tmp_path, data))],
        "predict": [
            "predict",
            str(keras_run),
            "--data",
            str(data),
            "--output",
            str(tmp_path / "p.csv"),
        ],
        "evaluate": ["evaluate", str(keras_run), "--data", str(data)],
        "export": ["export", str(keras_run), "--format", "keras", "--output", str(tmp_path / "e")],
    }
    outcomes = _run_without_tensorflow([[*a, "--quiet"] for a in cases.values()], tmp_path)
    for command, outcome in zip(cases, outcomes, strict=True):
        message = outcome["stderr"].strip()
        assert outcome["code"] == 2, (command, message)
        assert message == f"error: mlcli {command} {NEEDS}"
        assert outcome["heavy"] == []
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.json"))
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "e").exists()


def test_bad_arguments_keep_their_exit_codes_without_tensorflow(keras_run, trained_runs, tmp_path):
    data = trained_runs["data"]
    (tmp_path / "existing.csv").write_text("x\n1\n")
    less = tmp_path / "less.csv"
    pa_csv.write_csv(pa_csv.read_csv(data).drop_columns(["age"]), less)
    cases = [
        (["train", str(_train_config(tmp_path, data, agee="numeric"))], 3, "'agee'"),
        (["train", str(_train_config(tmp_path, data)), "--device", "tpu"], 2, "--device"),
        (
            ["predict", str(keras_run), "--data", str(data), "--output", "existing.csv"],
            2,
            "existing.csv",
        ),
        (["predict", str(keras_run), "--data", str(less), "--output", "p.csv"], 3, "'age'"),
        (["evaluate", str(tmp_path / "no-run"), "--data", str(data)], 4, "no-run"),
        (["export", str(keras_run), "--format", "xml", "--output", "e"], 2, "'xml'"),
    ]
    outcomes = _run_without_tensorflow([[*c[0], "--quiet"] for c in cases], tmp_path)
    for (arguments, code, named), outcome in zip(cases, outcomes, strict=True):
        message = outcome["stderr"].strip()
        assert outcome["code"] == code, (arguments, message)
        assert named in message and len(message.splitlines()) == 1, message


def test_commands_without_a_model_work_without_tensorflow(trained_runs, tmp_path):
    data = trained_runs["data"]
    config = _train_config(tmp_path, data)
    runs = trained_runs["binary"].parent.parent
    cases = [
        ["--version"],
        ["--help"],
        ["init", str(data), "--target", "label", "--output", str(tmp_path / "init.yaml")],
        ["validate", str(config)],
        ["config", "show", str(config)],
        ["config", "schema"],
        ["runs", "--dir", str(runs)],
        ["runs", "show", str(trained_runs["binary"])],
    ]
    outcomes = _run_without_tensorflow(cases, tmp_path)
    for arguments, outcome in zip(cases, outcomes, strict=True):
        assert outcome["code"] == 0, (arguments, outcome["stderr"])
        assert outcome["heavy"] == []
    assert (tmp_path / "init.yaml").exists()
