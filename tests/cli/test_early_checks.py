"""Bad arguments fail before TensorFlow loads: every command checks its arguments, its paths
and its data's header first, with its exit code and one line.

Each command's cases run in one child process (a fresh interpreter, so that `tensorflow` in
`sys.modules` means this command imported it); after each case the child records the exit
code, stderr and whether TensorFlow or Keras was imported (once one case imports it, the
later cases of that command report it too: the first one failing is the culprit).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.csv as pa_csv
import pytest

Case = tuple[str, Callable[[Path, Path, Path], list[str]], int, list[str]]

_CHILD = """
import json, sys
from typer.testing import CliRunner
from mlcli.cli.app import app

found = []
for arguments in json.loads(sys.argv[1]):
    result = CliRunner().invoke(app, arguments)
    heavy = sorted({"tensorflow", "keras"} & set(sys.modules))
    found.append({"code": result.exit_code, "stderr": result.stderr, "heavy": heavy})
print(json.dumps(found))
"""


def _in_child(script: str, argument: object, folder: Path) -> Any:
    """What `script` printed last (JSON), run in a fresh interpreter with `argument` as JSON."""
    child = subprocess.run(
        [sys.executable, "-c", script, json.dumps(argument)],
        capture_output=True,
        text=True,
        cwd=folder,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr
    return json.loads(child.stdout.splitlines()[-1])


def _no_run(run: Path, data: Path, folder: Path) -> list[str]:
    return [str(folder / "nothing-here")]


def _incomplete_run(run: Path, data: Path, folder: Path) -> list[str]:
    broken = folder / "incomplete"
    if not broken.exists():
        shutil.copytree(run, broken)
        (broken / "model.keras").unlink()
    return [str(broken)]


def _missing_data(run: Path, data: Path, folder: Path) -> list[str]:
    return [str(run), "--data", str(folder / "nowhere.csv")]


def _missing_column(run: Path, data: Path, folder: Path) -> list[str]:
    less = folder / "less.csv"
    if not less.exists():
        pa_csv.write_csv(pa_csv.read_csv(data).drop_columns(["age"]), less)
    return [str(run), "--data", str(less)]


def _missing_target(run: Path, data: Path, folder: Path) -> list[str]:
    unlabelled = folder / "unlabelled.csv"
    if not unlabelled.exists():
        pa_csv.write_csv(pa_csv.read_csv(data).drop_columns(["label"]), unlabelled)
    return [str(run), "--data", str(unlabelled)]


def _with_data(setup: Callable[[Path, Path, Path], list[str]]) -> Callable[..., list[str]]:
    def arguments(run: Path, data: Path, folder: Path) -> list[str]:
        return [*setup(run, data, folder), "--data", str(data)]

    arguments.__name__ = setup.__name__
    return arguments


def _predict_output_exists(run: Path, data: Path, folder: Path) -> list[str]:
    (folder / "existing.csv").write_text("x\n1\n")
    return [str(run), "--data", str(data), "--output", str(folder / "existing.csv")]


def _predict(setup: Callable[[Path, Path, Path], list[str]]) -> Callable[..., list[str]]:
    def arguments(run: Path, data: Path, folder: Path) -> list[str]:
        return [*setup(run, data, folder), "--output", str(folder / "out" / "p.csv")]

    arguments.__name__ = setup.__name__
    return arguments


def _predict_bad_format(run: Path, data: Path, folder: Path) -> list[str]:
    return [str(run), "--data", str(data), "--output", str(folder / "p.csv"), "--format", "xml"]


def _export_bad_format(run: Path, data: Path, folder: Path) -> list[str]:
    return [str(run), "--format", "xml", "--output", str(folder / "export")]


def _export_output_exists(run: Path, data: Path, folder: Path) -> list[str]:
    (folder / "taken").mkdir(exist_ok=True)
    (folder / "taken" / "notes.txt").write_text("mine\n")
    return [str(run), "--format", "keras", "--output", str(folder / "taken")]


def _export_not_replaceable(run: Path, data: Path, folder: Path) -> list[str]:
    return [*_export_output_exists(run, data, folder), "--force"]


def _export(setup: Callable[[Path, Path, Path], list[str]]) -> Callable[..., list[str]]:
    def arguments(run: Path, data: Path, folder: Path) -> list[str]:
        return [*setup(run, data, folder), "--format", "keras", "--output", str(folder / "e")]

    arguments.__name__ = setup.__name__
    return arguments


_HELD: list[socket.socket] = []  # listening while the child runs


def _serve_busy_port(run: Path, data: Path, folder: Path) -> list[str]:
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    _HELD.append(held)
    return [str(run), "--port", str(held.getsockname()[1])]


def _serve_busy_grpc_port(run: Path, data: Path, folder: Path) -> list[str]:
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    _HELD.append(held)
    return [str(run), "--port", "0", "--grpc-port", str(held.getsockname()[1])]


def _serve_grpc_on_the_rest_port(run: Path, data: Path, folder: Path) -> list[str]:
    return [str(run), "--port", "8765", "--grpc-port", "8765"]


def _evaluate_no_baseline(run: Path, data: Path, folder: Path) -> list[str]:
    return [str(run), "--data", str(data), "--baseline", str(folder / "no-baseline")]


def _serve_bad_option(run: Path, data: Path, folder: Path) -> list[str]:
    return [str(run), "--workers", "0"]


def _train_missing_data(run: Path, data: Path, folder: Path) -> list[str]:
    config = folder / "missing-data.yaml"
    config.write_text(
        f"name: t\ndata: {{train: {folder / 'nowhere.csv'}, validation: 0.25}}\n"
        "target: {column: label}\n"
    )
    return [str(config)]


def _train_missing_column(run: Path, data: Path, folder: Path) -> list[str]:
    config = folder / "missing-column.yaml"
    config.write_text(
        f"name: t\ndata: {{train: {data}, validation: 0.25}}\ntarget: {{column: label}}\n"
        "features: {agee: numeric}\n"
    )
    return [str(config), "--output", str(folder / "runs")]


def _train_bad_device(run: Path, data: Path, folder: Path) -> list[str]:
    return [*_train_missing_column(run, data, folder), "--device", "tpu"]


def _validate_missing_column(run: Path, data: Path, folder: Path) -> list[str]:
    return _train_missing_column(run, data, folder)[:1]  # validate has no --output


def _tune_config(folder: Path, data: Path | str, name: str, *, tune: bool = True) -> Path:
    config = folder / name
    section = "tune: {parameters: {model.dropout: {low: 0.0, high: 0.3}}}\n" if tune else ""
    config.write_text(
        f"name: t\ndata: {{train: {data}, validation: 0.25}}\ntarget: {{column: label}}\n"
        f"output: {{dir: {folder / 'runs'}}}\n{section}"
    )
    return config


def _tune_no_section(run: Path, data: Path, folder: Path) -> list[str]:
    return [str(_tune_config(folder, data, "no-tune.yaml", tune=False)), "--trials", "1"]


def _tune_missing_data(run: Path, data: Path, folder: Path) -> list[str]:
    config = _tune_config(folder, folder / "nowhere.csv", "tune-nowhere.yaml")
    return [str(config), "--trials", "1"]


def _tune_bad_device(run: Path, data: Path, folder: Path) -> list[str]:
    return [str(_tune_config(folder, data, "tune.yaml")), "--trials", "1", "--device", "tpu"]


def _init(target: str, output: str) -> Callable[[Path, Path, Path], list[str]]:
    def arguments(run: Path, data: Path, folder: Path) -> list[str]:
        (folder / "taken.yaml").write_text("name: mine\n")
        return [str(data), "--target", target, "--output", str(folder / output)]

    arguments.__name__ = f"_init_{target}_{output.split('.')[0]}"
    return arguments


def _init_missing_data(run: Path, data: Path, folder: Path) -> list[str]:
    return [str(folder / "nowhere.csv"), "--target", "label", "--output", str(folder / "i.yaml")]


def _runs_show_no_run(run: Path, data: Path, folder: Path) -> list[str]:
    return ["show", str(folder / "nothing-here")]


def _config_show_missing(run: Path, data: Path, folder: Path) -> list[str]:
    return ["show", str(folder / "nowhere.yaml")]


CASES: list[Case] = [
    ("predict", _predict_output_exists, 2, ["existing.csv", "--force"]),
    ("predict", _predict(_with_data(_no_run)), 4, ["nothing-here", "no such run"]),
    ("predict", _predict(_with_data(_incomplete_run)), 4, ["model.keras"]),
    ("predict", _predict(_missing_data), 3, ["nowhere.csv"]),
    ("predict", _predict(_missing_column), 3, ["less.csv", "'age'"]),
    ("predict", _predict_bad_format, 2, ["--format", "'xml'"]),
    ("evaluate", _with_data(_no_run), 4, ["nothing-here"]),
    ("evaluate", _with_data(_incomplete_run), 4, ["model.keras"]),
    ("evaluate", _missing_data, 3, ["nowhere.csv"]),
    ("evaluate", _missing_column, 3, ["less.csv", "'age'"]),
    ("evaluate", _missing_target, 3, ["unlabelled.csv", "'label'"]),
    ("evaluate", _evaluate_no_baseline, 4, ["no-baseline", "no such run"]),
    ("explain", _with_data(_no_run), 4, ["nothing-here"]),
    ("explain", _missing_data, 3, ["nowhere.csv"]),
    ("explain", _missing_column, 3, ["less.csv", "'age'"]),
    ("export", _export(_no_run), 4, ["nothing-here"]),
    ("export", _export(_incomplete_run), 4, ["model.keras"]),
    ("export", _export_bad_format, 2, ["--format", "'xml'"]),
    ("export", _export_output_exists, 4, ["taken", "--force"]),
    ("export", _export_not_replaceable, 2, ["taken", "notes.txt"]),
    ("serve", _no_run, 4, ["nothing-here"]),
    ("serve", _incomplete_run, 4, ["model.keras"]),
    ("serve", _serve_bad_option, 2, ["--workers"]),
    ("serve", _serve_busy_port, 2, ["--port", "cannot listen"]),
    ("serve", _serve_busy_grpc_port, 2, ["--grpc-port", "cannot listen"]),
    ("serve", _serve_grpc_on_the_rest_port, 2, ["--grpc-port 8765", "--port 8765"]),
    ("train", _train_missing_data, 3, ["nowhere.csv"]),
    ("train", _train_missing_column, 3, ["'agee'", "did you mean 'age'"]),
    ("train", _train_bad_device, 2, ["--device", "tpu"]),
    ("tune", _tune_no_section, 2, ["no-tune.yaml", "`tune`"]),
    ("tune", _tune_missing_data, 3, ["nowhere.csv"]),
    ("tune", _tune_bad_device, 2, ["--device", "tpu"]),
    ("validate", _train_missing_data, 3, ["nowhere.csv"]),
    ("validate", _validate_missing_column, 3, ["'agee'", "did you mean 'age'"]),
    ("init", _init_missing_data, 3, ["nowhere.csv"]),
    ("init", _init("lable", "i.yaml"), 3, ["'lable'", "did you mean 'label'"]),
    ("init", _init("label", "taken.yaml"), 2, ["taken.yaml", "--force"]),
    ("runs", _runs_show_no_run, 4, ["nothing-here"]),
    ("config", _config_show_missing, 2, ["nowhere.yaml"]),
]
QUIETLESS = {"config"}  # commands without --quiet


@pytest.fixture(scope="module")
def outcomes(trained_runs, tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict]:
    """Every case's exit code, stderr and heavy imports, one child process per command."""
    folder = tmp_path_factory.mktemp("early")
    run = folder / "run"
    shutil.copytree(trained_runs["binary"], run)
    data = trained_runs["data"]
    found: dict[int, dict] = {}
    for command in dict.fromkeys(verb for verb, *_ in CASES):
        indices = [i for i, case in enumerate(CASES) if case[0] == command]
        quiet = [] if command in QUIETLESS else ["--quiet"]
        arguments = [[command, *CASES[i][1](run, data, folder), *quiet] for i in indices]
        found.update(zip(indices, _in_child(_CHILD, arguments, folder), strict=True))
    for held in _HELD:
        held.close()
    return found


@pytest.mark.parametrize(
    "index",
    range(len(CASES)),
    ids=[f"{verb}-{setup.__name__.strip('_')}" for verb, setup, *_ in CASES],
)
def test_bad_arguments_fail_before_tensorflow_loads(outcomes, index: int):
    verb, _, code, named = CASES[index]
    outcome = outcomes[index]
    message = outcome["stderr"].strip()
    assert outcome["code"] == code, message
    assert len(message.splitlines()) == 1, message
    for text in named:
        assert text in message, f"{text!r} not in {message!r}"
    assert outcome["heavy"] == [], f"mlcli {verb} imported {outcome['heavy']} before failing"


def test_commands_that_load_no_model_never_import_tensorflow(trained_runs, tmp_path):
    """`init`, `validate`, `config` and `runs` succeed without importing TensorFlow or Keras."""
    data, run = trained_runs["data"], trained_runs["binary"]
    config = _tune_config(tmp_path, data, "config.yaml")
    cases = [
        ["--help"],
        ["init", str(data), "--target", "label", "--output", str(tmp_path / "init.yaml")],
        ["validate", str(config)],
        ["config", "show", str(config)],
        ["config", "schema"],
        ["runs", "--dir", str(run.parent.parent)],
        ["runs", "show", str(run)],
    ]
    for arguments, outcome in zip(cases, _in_child(_CHILD, cases, tmp_path), strict=True):
        assert outcome["code"] == 0, (arguments, outcome["stderr"])
        assert outcome["heavy"] == [], f"mlcli {arguments[0]} imported {outcome['heavy']}"


_IMPORTED = """
import json, sys
from typer.testing import CliRunner
from mlcli.cli.app import app

result = CliRunner().invoke(app, json.loads(sys.argv[1]))
print(json.dumps({"code": result.exit_code, "modules": sorted(sys.modules)}))
"""


@pytest.mark.parametrize(
    ("setup", "code", "absent"),
    [
        (_predict_output_exists, 2, {"numpy", "pyarrow", "yaml"}),
        (_predict(_with_data(_no_run)), 4, {"numpy", "pyarrow"}),
        (_predict(_missing_column), 3, {"numpy", "pyarrow", "onnxruntime"}),
    ],
    ids=["output-exists", "no-run", "missing-column"],
)
def test_predict_checks_each_argument_before_the_modules_the_next_check_needs(
    trained_runs, tmp_path, setup, code, absent
):
    """An existing output needs no run (nor YAML), no run no table, a CSV header no pyarrow."""
    run = tmp_path / "run"
    shutil.copytree(trained_runs["binary"], run)
    arguments = ["predict", *setup(run, trained_runs["data"], tmp_path), "--quiet"]
    outcome = _in_child(_IMPORTED, arguments, tmp_path)
    assert outcome["code"] == code
    assert absent.isdisjoint(outcome["modules"]), sorted(absent & set(outcome["modules"]))
