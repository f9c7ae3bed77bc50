"""`mlcli serve`'s options: how the server listens, batches and bounds its clients.

`ServeOptions` is what the command parses and `serving.server` runs with; its `check` runs
before anything heavy loads, so a bad option fails in a fraction of a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlcli.errors import ConfigError
from mlcli.serving.payloads import DEFAULT_MAX_ROWS
from mlcli.serving.routes import DEFAULT_BODY_TIMEOUT_S

if TYPE_CHECKING:
    from mlcli.serving.limits import ConnectionLimits

__all__ = ["DEFAULT_MAX_BODY_BYTES", "ServeOptions", "require_server_packages"]

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class ServeOptions:
    """How the server listens, batches and bounds its clients (the command's options)."""

    host: str = "127.0.0.1"
    port: int = 8501
    name: str | None = None
    workers: int = 1
    max_batch_size: int = 256
    batch_timeout_ms: float = 1.0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_rows: int = DEFAULT_MAX_ROWS
    max_queue: int = 4096
    header_timeout_s: float = 10.0
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    max_connections: int = 512
    graceful_timeout_s: float = 10.0
    trust_export: bool = False
    keep_versions: int = 1
    poll_seconds: float = 1.0
    grpc_port: int | None = None  # TF Serving's gRPC API on this port too (`serving.grpc`)

    def check(self) -> None:
        """Raises `ConfigError` naming the first option out of range."""
        limits = {
            "--port": (self.port, 0, 65535),
            "--workers": (self.workers, 1, 64),
            "--max-batch-size": (self.max_batch_size, 1, 1 << 20),
            "--batch-timeout-ms": (self.batch_timeout_ms, 0, 10_000),
            "--max-body-bytes": (self.max_body_bytes, 1, 1 << 31),
            "--max-rows": (self.max_rows, 1, 1 << 24),
            "--header-timeout": (self.header_timeout_s, 0.1, 3600),
            "--body-timeout": (self.body_timeout_s, 0.1, 3600),
            "--max-connections": (self.max_connections, 1, 1 << 20),
            "--shutdown-timeout": (self.graceful_timeout_s, 0.1, 3600),
            "--keep-versions": (self.keep_versions, 1, 100),
            "--poll-seconds": (self.poll_seconds, 0.05, 86400),
        }
        if self.grpc_port is not None:
            limits["--grpc-port"] = (self.grpc_port, 0, 65535)
        for option, (value, low, high) in limits.items():
            if not low <= value <= high:
                raise ConfigError(f"{option}: expected {low} to {high}, found {value}")
        if self.grpc_port is not None:
            from mlcli.serving.grpc import check_grpc_options

            check_grpc_options(port=self.port, grpc_port=self.grpc_port, workers=self.workers)

    def connection_limits(self) -> ConnectionLimits:
        """What the guarded HTTP protocol enforces; bodies get half the shutdown timeout."""
        from mlcli.serving.limits import ConnectionLimits, connection_limit

        return ConnectionLimits(
            header_timeout_s=self.header_timeout_s,
            max_connections=connection_limit(self.max_connections),
            body_grace_s=self.graceful_timeout_s / 2,
        )


def require_server_packages() -> None:
    """Raises `ConfigError` unless the `serve` extra (Starlette, uvicorn, prometheus_client)
    is installed."""
    try:
        import prometheus_client  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as error:
        raise ConfigError(
            f"mlcli serve needs Starlette, uvicorn and prometheus_client "
            f"({error.name} is missing): "
            'install mlcli[serve] (pip install "mlcli[serve]")'
        ) from None
