"""Every bad input gives its exit code and one line naming the file, key or column, no
traceback, and no new files in the output folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest
import yaml
from click.testing import Result
from conftest import make_table
from typer.testing import CliRunner

from mlcli.cli.app import app

runner = CliRunner()

BASE = {
    "name": "bad",
    "data": {"train": "data.csv", "validation": 0.25},
    "target": {"column": "label", "task": "binary"},
    "features": {"exclude": ["id", "tier", "value", "review"]},
    "training": {"epochs": 1, "batch_size": 64},
    "output": {"dir": "runs"},
}


def _config(folder: Path, **changes: object) -> Path:
    config = yaml.safe_load(yaml.safe_dump(BASE))
    for dotted, value in changes.items():
        node = config
        *parents, last = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _table(folder: Path, table: pa.Table | None = None) -> None:
    pa_csv.write_csv(table if table is not None else make_table(120), folder / "data.csv")


def _with_column(values: list, name: str = "age") -> pa.Table:
    table = make_table(len(values))
    return table.set_column(table.column_names.index(name), name, pa.array(values))


Setup = Callable[[Path], list[str]]


def yaml_syntax(folder: Path) -> list[str]:
    (folder / "config.yaml").write_text("name: bad\ndata: {train: [unclosed\n")
    return [str(folder / "config.yaml")]


def not_a_mapping(folder: Path) -> list[str]:
    (folder / "config.yaml").write_text("- name\n- data\n")
    return [str(folder / "config.yaml")]


def empty_config(folder: Path) -> list[str]:
    (folder / "config.yaml").write_text("")
    return [str(folder / "config.yaml")]


def unknown_key(folder: Path) -> list[str]:
    _table(folder)
    return [str(_config(folder, training__epocs=2))]


def wrong_type(folder: Path) -> list[str]:
    _table(folder)
    return [str(_config(folder, training__batch_size="big"))]


def out_of_range(folder: Path) -> list[str]:
    _table(folder)
    return [str(_config(folder, training__learning_rate=-1))]


def bad_override(folder: Path) -> list[str]:
    _table(folder)
    return [str(_config(folder)), "--set", "training.epochs"]


def bad_monitor(folder: Path) -> list[str]:
    _table(folder)
    return [str(_config(folder, training__early_stopping={"monitor": "val_rmse"}))]


def empty_data_file(folder: Path) -> list[str]:
    (folder / "data.csv").write_bytes(b"")
    return [str(_config(folder))]


def not_a_table(folder: Path) -> list[str]:
    (folder / "data.csv").write_bytes(bytes(range(256)) * 4)
    return [str(_config(folder))]


def non_utf8(folder: Path) -> list[str]:
    _table(folder)
    text = (folder / "data.csv").read_bytes().replace(b"red", b"r\xe9d\xff", 1)
    (folder / "data.csv").write_bytes(text)
    return [str(_config(folder))]


def non_utf8_header(folder: Path) -> list[str]:
    _table(folder)
    text = (folder / "data.csv").read_bytes().replace(b"age", b"\x80ge", 1)
    (folder / "data.csv").write_bytes(text)
    return [str(_config(folder))]


def repeated_header(folder: Path) -> list[str]:
    _table(folder)
    text = (folder / "data.csv").read_bytes().replace(b'"income"', b'"age"', 1)
    (folder / "data.csv").write_bytes(text)
    return [str(_config(folder))]


def missing_header(folder: Path) -> list[str]:
    _table(folder)
    lines = (folder / "data.csv").read_text().splitlines(keepends=True)
    (folder / "data.csv").write_text("".join(lines[1:]))
    return [str(_config(folder))]


def extra_header(folder: Path) -> list[str]:
    _table(folder)
    names = make_table(2).column_names
    return [str(_config(folder, data__csv={"header": False, "columns": names}))]


def target_absent(folder: Path) -> list[str]:
    _table(folder, make_table(120).drop_columns(["label"]))
    return [str(_config(folder))]


def target_empty(folder: Path) -> list[str]:
    _table(folder, _with_column([None] * 120, "label"))
    return [str(_config(folder))]


def single_class(folder: Path) -> list[str]:
    _table(folder, _with_column(["yes"] * 120, "label"))
    return [str(_config(folder))]


def text_in_numeric(folder: Path) -> list[str]:
    _table(folder, _with_column([str(i) for i in range(60)] + ["n/a"] + ["1"] * 59))
    return [str(_config(folder, features={"age": "numeric", "exclude": ["id", "tier"]}))]


def infinity(folder: Path) -> list[str]:
    _table(folder, _with_column([1.0] * 50 + [float("inf")] + [2.0] * 69))
    return [str(_config(folder))]


def missing_data_file(folder: Path) -> list[str]:
    return [str(_config(folder, data__train="nowhere.csv"))]


def bad_log_format(folder: Path) -> list[str]:
    _table(folder)
    return [str(_config(folder)), "--log-format", "xml"]


CASES: list[tuple[Setup, int, list[str]]] = [
    (yaml_syntax, 2, ["config.yaml", "line 3, column 1"]),
    (not_a_mapping, 2, ["config.yaml", "mapping"]),
    (empty_config, 2, ["config.yaml", "name"]),
    (unknown_key, 2, ["training.epocs", "did you mean `epochs`"]),
    (wrong_type, 2, ["training.batch_size", "'big'"]),
    (out_of_range, 2, ["training.learning_rate"]),
    (bad_override, 2, ["--set", "KEY=VALUE"]),
    (empty_data_file, 3, ["data.csv", "empty"]),
    (not_a_table, 3, ["data.csv"]),
    (non_utf8, 3, ["data.csv", "UTF-8"]),
    (non_utf8_header, 3, ["data.csv", "header", "UTF-8"]),
    (repeated_header, 3, ["data.csv", "'age'", "more than once"]),
    (missing_header, 3, ["data.csv", "'label'"]),
    (extra_header, 3, ["data.csv", "header"]),
    (target_absent, 3, ["'label'"]),
    (target_empty, 3, ["'label'", "empty"]),
    (text_in_numeric, 3, ["'age'", "'n/a'", "row 61"]),
    (infinity, 3, ["'age'", "infinite", "row 51"]),
    (missing_data_file, 3, ["nowhere.csv", "not found"]),
]
TRAIN_ONLY: list[tuple[Setup, int, list[str]]] = [
    (single_class, 3, ["'label'", "single class"]),
    (bad_monitor, 2, ["training.early_stopping.monitor", "val_auc"]),
    (bad_log_format, 2, ["--log-format"]),
]


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


def _assert_failed_cleanly(
    result: Result, code: int, named: list[str], before: set[Path], folder: Path
) -> None:
    """The exit code, one line naming each of `named`, no traceback and no new files."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    for text in named:
        assert text in message, f"{text!r} not in {message!r}"
    assert _files(folder) == before, "a failed command left files behind"


@pytest.mark.parametrize(
    ("verb", "setup", "code", "named"),
    [("validate", *case) for case in CASES] + [("train", *case) for case in CASES + TRAIN_ONLY],
    ids=lambda value: value.__name__ if callable(value) else None,
)
def test_bad_input(tmp_path: Path, verb: str, setup: Setup, code: int, named: list[str]):
    arguments = setup(tmp_path)
    before = _files(tmp_path)
    result = runner.invoke(app, [verb, *arguments, "--quiet"])
    _assert_failed_cleanly(result, code, named, before, tmp_path)


def _run_copy(trained_runs: dict[str, Path], folder: Path) -> Path:
    import shutil

    run = folder / "run"
    shutil.copytree(trained_runs["binary"], run)
    return run


def incomplete_run(run: Path, data: Path) -> list[str]:
    (run / "model.keras").unlink()
    return [str(run), "--data", str(data)]


def incompatible_run(run: Path, data: Path) -> list[str]:
    import json

    manifest = json.loads((run / "manifest.json").read_text())
    manifest["run_format_version"] = 99
    (run / "manifest.json").write_text(json.dumps(manifest))
    return [str(run), "--data", str(data)]


def no_such_run(run: Path, data: Path) -> list[str]:
    return [str(run.parent / "nothing-here"), "--data", str(data)]


def retyped_parquet(run: Path, data: Path) -> list[str]:
    import pyarrow.parquet as pq

    table = pa_csv.read_csv(data)
    index = table.column_names.index("age")
    ages = pa.array(
        [f"{v} years" if v is not None else None for v in table.column("age").to_pylist()]
    )
    pq.write_table(table.set_column(index, "age", ages), run.parent / "retyped.parquet")
    return [str(run), "--data", str(run.parent / "retyped.parquet")]


def missing_columns(run: Path, data: Path) -> list[str]:
    pa_csv.write_csv(pa_csv.read_csv(data).drop_columns(["age", "color"]), run.parent / "less.csv")
    return [str(run), "--data", str(run.parent / "less.csv")]


RUN_CASES = [
    (incomplete_run, 4, ["model.keras"]),
    (incompatible_run, 4, ["version 99"]),
    (no_such_run, 4, ["nothing-here"]),
    (retyped_parquet, 3, ["'age'"]),
    (missing_columns, 3, ["'age'", "'color'"]),
]


@pytest.mark.parametrize(
    ("verb", "setup", "code", "named"),
    [(verb, *case) for verb in ("evaluate", "predict") for case in RUN_CASES]
    + [("export", *case) for case in RUN_CASES[:3]],
    ids=lambda value: value.__name__ if callable(value) else None,
)
def test_bad_run_or_data(trained_runs, tmp_path: Path, verb, setup, code, named):
    run = _run_copy(trained_runs, tmp_path)
    arguments = setup(run, trained_runs["data"])
    if verb == "predict":
        arguments += ["--output", str(tmp_path / "out" / "predictions.csv")]
    if verb == "export":
        arguments = [arguments[0], "--format", "keras", "--output", str(tmp_path / "out")]
    (tmp_path / "out").mkdir()
    before = _files(tmp_path)
    result = runner.invoke(app, [verb, *arguments, "--quiet"])
    _assert_failed_cleanly(result, code, named, before, tmp_path)
