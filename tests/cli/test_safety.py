"""Safe to automate: divergence, concurrent runs, and random inputs that never crash mlcli."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mlcli.cli.app import app

runner = CliRunner()


def test_divergence_exits_6_and_keeps_the_last_good_checkpoint(write_config, tmp_path):
    config = write_config(
        target={"column": "value", "task": "regression"},
        features={"exclude": ["id", "label", "tier"]},
        training={
            "epochs": 5,
            "batch_size": 16,
            "optimizer": "sgd",
            "learning_rate": 10.0,
            "learning_rate_schedule": "none",
            "weight_decay": 0.0,
            "steps_per_execution": 1,
            "early_stopping": None,
        },
        model={"hidden_units": [64, 64]},
    )
    result = runner.invoke(app, ["train", str(config), "--quiet"])
    assert result.exit_code == 6, result.output
    assert "learning_rate" in result.stderr and "checkpoint" in result.stderr
    partial = list((tmp_path / "runs" / "tiny").glob(".*.partial"))
    assert len(partial) == 1, "the diverged run must be kept, marked partial"
    assert not (tmp_path / "runs" / "tiny" / "latest").exists()


def test_concurrent_runs_with_one_name_never_share_a_directory(write_config, tmp_path):
    config = write_config()
    command = [sys.executable, "-m", "mlcli", "train", str(config), "--quiet"]
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    folders = {Path(out.strip().splitlines()[-1]) for out, _ in outputs}
    assert len(folders) == 2
    for folder in folders:
        assert json.loads((folder / "manifest.json").read_text())["status"] == "complete"
    latest = (tmp_path / "runs" / "tiny" / "latest").resolve()
    assert latest in {f.resolve() for f in folders}


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
config_keys = st.sampled_from(
    ["name", "seed", "data", "target", "features", "model", "training", "output", "trainin"]
)
documents = st.dictionaries(config_keys, yaml_values, max_size=6) | yaml_values


def _assert_clean_outcome(result: Any, folder: Path) -> None:
    """Success, or a usage/data error (exit 2 or 3) told in one line that names the file, key
    or column, with no traceback and no run left behind."""
    assert "Traceback" not in result.output, result.output
    assert result.exit_code in (0, 2, 3), result.output
    if result.exit_code == 0:
        return
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert any(name in message for name in ("data.csv", "config.yaml", "column", "'y'", "data.")), (
        message
    )
    runs = folder / "runs"
    assert not runs.exists() or not any(runs.rglob("model.keras")), "a failed run looks complete"


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(document=documents)
def test_random_yaml_never_crashes_validate(tmp_path_factory, document):
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code in (0, 2, 3), result.output
    assert "Traceback" not in result.output


csv_bytes = st.binary(max_size=400) | st.lists(
    st.lists(
        st.sampled_from(
            ["1", "2.5", "", "?", "inf", "nan", "a", "b", '"q"', "x y z", "-3", "\xe9"]
        ),
        min_size=1,
        max_size=4,
    ),
    max_size=30,
).map(lambda rows: "\n".join(",".join(r) for r in [["f1", "f2", "f3", "y"], *rows]).encode())


def _fuzz_config(folder: Path) -> Path:
    path = folder / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "fuzz",
                "data": {"train": "data.csv", "validation": 0.3},
                "target": {"column": "y"},
                "training": {"epochs": 1, "batch_size": 8, "steps_per_execution": 1},
                "output": {"dir": str(folder / "runs")},
            }
        )
    )
    return path


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=csv_bytes)
def test_random_csv_never_crashes_validate(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("fuzzcsv")
    (folder / "data.csv").write_bytes(data)
    result = runner.invoke(app, ["validate", str(_fuzz_config(folder))])
    _assert_clean_outcome(result, folder)
    if result.exit_code == 0:
        assert "y" in result.stdout, "validate printed no report"


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=csv_bytes)
def test_random_csv_never_crashes_train(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("fuzztrain")
    (folder / "data.csv").write_bytes(data)
    result = runner.invoke(app, ["train", str(_fuzz_config(folder)), "--quiet"])
    _assert_clean_outcome(result, folder)
    if result.exit_code == 0:
        run = Path(result.stdout.strip().splitlines()[-1])
        assert (run / "model.keras").is_file() and (run / "metrics.json").is_file()
        assert json.loads((run / "manifest.json").read_text())["status"] == "complete"


def _fails_after(stop: bool) -> None:
    """An action that fails as a library might once a stop was asked for."""
    import os
    import signal

    try:
        if stop:
            os.kill(os.getpid(), signal.SIGTERM)  # run_guarded's handler raises here
        raise RuntimeError("the peer worker went away")
    except KeyboardInterrupt:
        raise RuntimeError("the collective was cancelled") from None


def test_a_failure_while_stopping_is_an_interruption_not_a_bug(capsys):
    import pytest
    import typer

    from mlcli.cli.boundary import run_guarded

    with pytest.raises(typer.Exit) as stopped:
        run_guarded(lambda: _fails_after(stop=True), verbose=False)
    assert stopped.value.exit_code == 130
    assert "interrupted" in capsys.readouterr().err
    with pytest.raises(typer.Exit) as failed:  # the same failure without a stop is a bug
        run_guarded(lambda: _fails_after(stop=False), verbose=False)
    assert failed.value.exit_code == 1
    assert "internal error: RuntimeError" in capsys.readouterr().err
