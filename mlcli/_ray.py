"""Ray, imported only by a command given `--ray`, and the one way mlcli connects to it.

`mlcli predict --ray`, `mlcli tune --ray` and `mlcli train --ray` run on a Ray cluster: a local
one that this process starts and stops (`--ray` alone, or `--ray local`), the cluster that
`RAY_ADDRESS` or a local `ray start` names (`--ray auto`), or a head node's address
(`--ray 10.0.0.5:6379`, or `--ray ray://10.0.0.5:10001` through Ray Client).

Ray is the optional `ray` extra: without it, `connect` raises one `ConfigError` (exit 2),
"mlcli predict needs Ray: install mlcli[ray] (...)". An address that does not answer fails
within `REACH_SECONDS` with exit 2 naming it: `ray.init` itself would retry for a minute.

```python
with connect("local", command="mlcli predict") as cluster:
    print(cluster.cpus)          # what Ray may schedule on
```
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import signal
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mlcli.errors import ConfigError, missing_extra

LOCAL = "local"  # what a bare `--ray` means: start a Ray instance on this machine
AUTO = "auto"  # RAY_ADDRESS, else the cluster a local `ray start` left running
REACH_SECONDS = 3.0  # how long an address may take to accept a TCP connection
CLIENT_PORT = 10001  # Ray Client's default port, for `ray://host` without one
_TOKEN_SETUP_LOGGER = "ray._private.authentication.authentication_token_setup"
# host:port, [v6]:port or ray://host[:port]; a bare name is no address (a run or a config).
_ADDRESS = re.compile(r"^(ray://)?(\[[0-9A-Fa-f:]+\]|[A-Za-z0-9._-]+)(:(\d{1,5}))?$")


def looks_like_address(text: str) -> bool:
    """Whether `text` after `--ray` is its address (`auto`, `local`, host:port, ray://...).

    A run name or a config path is not: `mlcli predict --ray RUN` keeps RUN as the run.
    """
    if text in (LOCAL, AUTO):
        return True
    match = _ADDRESS.match(text)
    return match is not None and (match.group(1) is not None or match.group(4) is not None)


def parse_address(text: str) -> tuple[str, int] | None:
    """The (host, port) that `text` names, or None for `local` and `auto`.

    Raises `ConfigError` (exit 2) for anything else, naming what was found and expected.
    """
    if text in (LOCAL, AUTO):
        return None
    match = _ADDRESS.match(text)
    if match is None or (match.group(4) is None and match.group(1) is None):
        raise ConfigError(
            f"--ray: {text!r} is not a Ray address; expected local, auto, HOST:PORT "
            "(the head node's GCS port, 6379 by default) or ray://HOST[:PORT]"
        )
    port = int(match.group(4)) if match.group(4) else CLIENT_PORT
    if not 0 < port < 65536:
        raise ConfigError(f"--ray {text}: port {port} is out of range (1 to 65535)")
    return match.group(2).strip("[]"), port


def check_reachable(host: str, port: int, *, seconds: float = REACH_SECONDS) -> None:
    """Raises `ConfigError` (exit 2) unless host:port accepts a TCP connection in `seconds`."""
    try:
        with socket.create_connection((host, port), timeout=seconds):
            return
    except OSError as error:
        reason = "no answer" if isinstance(error, TimeoutError) else error.strerror or error
        raise ConfigError(
            f"--ray {host}:{port}: cannot reach it within {seconds:g} s ({reason}); expected "
            "the address of a running Ray cluster's head node (`ray start --head` prints it)"
        ) from error


def require_ray(command: str) -> None:
    """Raises `missing_extra` (exit 2, "install mlcli[ray]") when Ray is not installed."""
    try:
        found = importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):  # a blocked import (`sys.modules["ray"] = None`)
        found = False
    if not found:
        raise missing_extra(command, "Ray", "ray")


@dataclass(frozen=True)
class Cluster:
    """The Ray cluster a command runs on."""

    address: str  # as given: local, auto, host:port or ray://...
    joined_here: bool  # whether this block called ray.init (and calls ray.shutdown at its end)
    cpus: float  # CPUs Ray may schedule on, over every node
    gpus: float
    nodes: int


def _init(address: str, cpus: int | None) -> Any:
    import ray

    options: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        "log_to_driver": False,
        "configure_logging": True,
    }
    if address == LOCAL:
        # Ray's default for a new instance, token authentication, is kept; its warning that
        # says so would be one more stderr line on every `--ray` command
        logging.getLogger(_TOKEN_SETUP_LOGGER).setLevel(logging.ERROR)
        options["num_cpus"] = cpus
        # a local instance of its own, not whatever RAY_ADDRESS names
        return ray.init(address="local", **options)
    if address != AUTO:
        options["ignore_reinit_error"] = False
    return ray.init(address=address, **options)


def _signal_handlers() -> dict[int, Any]:
    """SIGINT's and SIGTERM's handlers now (none off the main thread, which cannot set them)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}


def _restore(handlers: dict[int, Any]) -> None:
    """Puts back what `_signal_handlers` saw: starting a local Ray instance replaces SIGTERM's
    handler with one that exits 1, where mlcli's boundary stops a command with exit 130."""
    for number, handler in handlers.items():
        if handler is not None and signal.getsignal(number) is not handler:
            signal.signal(number, handler)


@contextlib.contextmanager
def connect(address: str, *, command: str, cpus: int | None = None) -> Iterator[Cluster]:
    """Connects to (or starts) the Ray cluster `address` names for the length of the block.

    `local` starts a Ray instance on this machine with `cpus` CPUs (all of them when None),
    stopped when the block ends; another address is checked to answer first (exit 2 within
    `REACH_SECONDS` when it does not). Raises `missing_extra` (exit 2) without Ray. The
    process's SIGINT and SIGTERM handlers are the same after `ray.init` as before it.
    """
    require_ray(command)
    target = parse_address(address)
    if target is not None:
        check_reachable(*target)
    elif address == AUTO and os.environ.get("RAY_ADDRESS"):
        check_reachable(*(parse_address(os.environ["RAY_ADDRESS"]) or ("127.0.0.1", 6379)))
    import ray

    already = ray.is_initialized()
    if not already:
        handlers = _signal_handlers()
        try:
            _init(address, cpus)
        except ConnectionError as error:
            raise ConfigError(f"--ray {address}: {error}") from error
        finally:
            _restore(handlers)
    try:
        resources = ray.cluster_resources()
        yield Cluster(
            address=address,
            joined_here=not already,
            cpus=float(resources.get("CPU", 0.0)),
            gpus=float(resources.get("GPU", 0.0)),
            nodes=len([node for node in ray.nodes() if node.get("Alive")]),
        )
    finally:
        if not already:
            ray.shutdown()
