"""`mlcli train --ray`'s arguments: every bad one is exit 2 with one line naming it, before
TensorFlow (or Ray, for the checks that do not need it) loads; a cluster too small for the
workers is exit 2 naming the numbers."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mlcli.cli.app import app

runner = CliRunner()

_CHILD = """
import json, sys
if sys.argv[2] == "no-ray":
    sys.modules["ray"] = None  # as if mlcli[ray] were not installed
from typer.testing import CliRunner
from mlcli.cli.app import app

found = []
for arguments in json.loads(sys.argv[1]):
    result = CliRunner().invoke(app, arguments)
    heavy = sorted(m for m in ("tensorflow", "keras", "ray") if sys.modules.get(m) is not None)
    found.append({"code": result.exit_code, "stderr": result.stderr, "heavy": heavy})
print(json.dumps(found))
"""


def _in_child(cases: list[list[str]], folder: Path, *, ray: bool) -> list[dict[str, Any]]:
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(cases), "ray" if ray else "no-ray"],
        capture_output=True,
        text=True,
        cwd=folder,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr
    return json.loads(child.stdout.splitlines()[-1])


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


BAD = [
    (["--workers", "2"], ["--workers", "only with --ray"]),
    (["--cpus-per-worker", "2", "--placement", "spread"], ["--cpus-per-worker, --placement"]),
    (["--ray", "--workers", "0"], ["--workers", "found 0"]),
    (["--ray", "--workers", "-2"], ["--workers", "found -2"]),
    (["--ray", "--cpus-per-worker", "0"], ["--cpus-per-worker", "found 0"]),
    (["--ray", "--gpus-per-worker", "-1"], ["--gpus-per-worker", "found -1"]),
    (["--ray", "--placement", "everywhere"], ["--placement", "'everywhere'"]),
    (["--ray", "--workers", "2", "--device", "cpu:2"], ["--device cpu:2", "--workers 2"]),
]


def test_bad_ray_arguments_fail_with_exit_2_before_tensorflow_or_ray_load(
    write_config: Any, tmp_path: Path
) -> None:
    config = str(write_config())
    port = _closed_port()
    cases = [*BAD, (["--ray", f"127.0.0.1:{port}"], [f"127.0.0.1:{port}", "cannot reach"])]
    started = time.monotonic()
    outcomes = _in_child(
        [["train", config, *args, "--quiet"] for args, _ in cases], tmp_path, ray=True
    )
    assert time.monotonic() - started < 60
    for (args, named), outcome in zip(cases, outcomes, strict=True):
        message = outcome["stderr"].strip()
        assert outcome["code"] == 2, (args, message)
        assert len(message.splitlines()) == 1, message
        for text in named:
            assert text in message, (args, message)
        assert "tensorflow" not in outcome["heavy"] and "keras" not in outcome["heavy"], args
    # only the unreachable address needed Ray itself (and it did not wait for it)
    assert [o["heavy"] for o in outcomes[:-1]] == [[]] * len(BAD)


def test_without_ray_installed_train_ray_says_install_mlcli_ray(
    write_config: Any, tmp_path: Path
) -> None:
    config = str(write_config())
    cases = [
        ["train", config, "--ray", "--quiet"],
        ["train", config, "--ray", "auto", "--workers", "2", "--quiet"],
    ]
    for outcome in _in_child(cases, tmp_path, ray=False):
        assert outcome["code"] == 2, outcome["stderr"]
        assert "mlcli train needs Ray: install mlcli[ray]" in outcome["stderr"]
        assert outcome["heavy"] == []


def test_an_unreachable_address_fails_within_seconds(write_config: Any) -> None:
    port = _closed_port()
    started = time.monotonic()
    result = runner.invoke(
        app, ["train", str(write_config()), "--ray", f"127.0.0.1:{port}", "--workers", "2"]
    )
    assert result.exit_code == 2, result.output
    assert time.monotonic() - started < 10
    assert f"127.0.0.1:{port}" in result.stderr


def test_a_bad_config_fails_before_ray_is_reached(write_config: Any, tmp_path: Path) -> None:
    config = write_config(training={"epochz": 2})
    port = _closed_port()  # never reached: the config is checked first
    result = runner.invoke(app, ["train", str(config), "--ray", f"127.0.0.1:{port}"])
    assert result.exit_code == 2
    assert "epochz" in result.stderr
    assert f"127.0.0.1:{port}" not in result.stderr


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--workers", "3"], ["--workers 3", "need 3 CPUs", "has 2"]),
        (["--workers", "2", "--cpus-per-worker", "1.5"], ["need 3 CPUs", "has 2"]),
        (["--gpus-per-worker", "1"], ["need 1 GPUs", "has 0"]),
    ],
)
def test_more_than_the_cluster_has_is_exit_2_naming_the_numbers(
    ray_local: Any, write_config: Any, args: list[str], named: list[str]
) -> None:
    result = runner.invoke(app, ["train", str(write_config()), "--ray", *args, "--quiet"])
    assert result.exit_code == 2, result.output
    for text in named:
        assert text in result.stderr, result.stderr
    assert ray_local.is_initialized()  # the session's Ray is left running
