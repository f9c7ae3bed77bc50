"""mlcli._ray: addresses, an unreachable head, a missing extra, and joining a running Ray."""

from __future__ import annotations

import socket
import sys
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlcli import _ray
from mlcli.cli.options import bare_ray_flag
from mlcli.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("local", None),
        ("auto", None),
        ("10.0.0.5:6379", ("10.0.0.5", 6379)),
        ("head.example.org:6380", ("head.example.org", 6380)),
        ("ray://10.0.0.5", ("10.0.0.5", _ray.CLIENT_PORT)),
        ("ray://head:10002", ("head", 10002)),
        ("[::1]:6379", ("::1", 6379)),
    ],
)
def test_addresses_parse_to_host_and_port(text: str, expected: Any) -> None:
    assert _ray.looks_like_address(text)
    assert _ray.parse_address(text) == expected


@pytest.mark.parametrize("text", ["runs/adult", "adult-income", "config.yaml", "host:99999", ""])
def test_what_is_no_address_fails_with_exit_2_naming_it(text: str) -> None:
    with pytest.raises(ConfigError) as raised:
        _ray.parse_address(text)
    assert raised.value.exit_code == 2
    assert "--ray" in str(raised.value)


@given(st.from_regex(r"[A-Za-z0-9_.][A-Za-z0-9_./-]{0,30}", fullmatch=True))
def test_a_run_name_or_path_after_a_bare_ray_stays_an_argument(name: str) -> None:
    """`--ray RUN`: a word with no port is the run, and `--ray` means a local instance."""
    args = ["--ray", name, "--data", "x.csv"]
    if _ray.looks_like_address(name):
        assert bare_ray_flag(args) == args
    else:
        assert bare_ray_flag(args) == ["--ray=local", name, "--data", "x.csv"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "--ray"], ["run", "--ray=local"]),
        (["--ray", "--data", "x"], ["--ray=local", "--data", "x"]),
        (["--ray", "auto", "run"], ["--ray", "auto", "run"]),
        (["--ray", "1.2.3.4:6379"], ["--ray", "1.2.3.4:6379"]),
        (["--ray=auto", "run"], ["--ray=auto", "run"]),
        (["run"], ["run"]),
    ],
)
def test_bare_ray_flag(args: list[str], expected: list[str]) -> None:
    assert bare_ray_flag(args) == expected


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_head_fails_with_exit_2_within_seconds() -> None:
    port = _closed_port()
    started = time.monotonic()
    address = f"127.0.0.1:{port}"
    with pytest.raises(ConfigError) as raised, _ray.connect(address, command="mlcli predict"):
        pass
    assert time.monotonic() - started < _ray.REACH_SECONDS + 2
    assert raised.value.exit_code == 2
    assert f"127.0.0.1:{port}" in str(raised.value)


def test_a_listening_address_is_reachable() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        _ray.check_reachable("127.0.0.1", server.getsockname()[1])


def test_without_ray_installed_the_error_says_install_mlcli_ray(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError) as raised, _ray.connect("local", command="mlcli predict"):
        pass
    assert raised.value.exit_code == 2
    assert "install mlcli[ray]" in str(raised.value)
    assert "mlcli predict" in str(raised.value)


def test_connect_joins_a_running_instance_and_leaves_it_running(ray_local: Any) -> None:
    with _ray.connect("local", command="mlcli predict") as cluster:
        assert not cluster.joined_here
        assert cluster.cpus == 2
        assert cluster.nodes == 1
    assert ray_local.is_initialized()


def test_the_signal_handlers_that_ray_init_replaces_are_put_back() -> None:
    """A local Ray instance installs a SIGTERM handler that exits 1; `connect` restores
    mlcli's, so that SIGTERM still stops a `--ray` command with exit 130."""
    import signal

    def mine(number: int, frame: Any) -> None:
        del number, frame

    before = signal.signal(signal.SIGTERM, mine)
    try:
        saved = _ray._signal_handlers()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # what ray.init does, in effect
        _ray._restore(saved)
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, before)
