"""What uvicorn lacks to hold up against slow or idle clients: a header read timeout, a
connection limit that keeps room for real requests, and a bound on bodies at shutdown.

uvicorn times out idle keep-alive connections, but not a connection that opens and never
finishes its request headers (nor one that sends half of a keep-alive connection's next request),
and its `limit_concurrency` answers 503 to every new request once that many connections are
open, `/healthz` included. `configure` puts a subclass of uvicorn's HTTP protocol in its
config, so that:

- a connection still waiting for a request's headers `header_timeout_s` after it opened (or
  after its previous response, once its next request started) is closed;
- past `max_connections` open connections, the one waiting longest for its headers is closed to
  make room, and a new connection is refused with 503 only when every one is busy with a request;
- on shutdown a request whose body is still arriving gets `body_grace_s` more, then its
  connection is closed (the app sees the client gone) so SIGTERM is never held by a slow body.

The body read timeout itself is the app's (`routes.read_body`): it answers 408. This module
imports uvicorn: import it only to serve.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

# file descriptors kept free for the model, logs and the listening socket
_SPARE_FILES = 64
_REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: 56\r\n\r\n"
    b'{"error":"the server is at its connection limit, retry"}'
)


def connection_limit(requested: int) -> int:
    """`requested`, lowered to what the process's open-file limit can hold with room to spare."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return requested
    return max(1, min(requested, soft - _SPARE_FILES))


@dataclass(frozen=True)
class ConnectionLimits:
    """The guarded protocol's settings; they travel on uvicorn's config (to each worker)."""

    header_timeout_s: float
    max_connections: int
    body_grace_s: float


def configure(config: Any, limits: ConnectionLimits) -> None:
    """Makes the servers of uvicorn `config` use the guarded protocol with `limits`."""
    config.http = GuardedHttpTools if GuardedHttpTools is not None else GuardedH11
    config.mlcli_limits = limits


class _Guard:
    """The guards, mixed into uvicorn's protocol (whose attributes they use)."""

    _waiting_since: float | None = None  # when it began waiting for request headers
    _timer: Any = None
    _armed_for: Any = None  # the request cycle the header timer was armed after
    config: Any
    connections: Any
    cycle: Any
    loop: Any
    transport: Any

    @property
    def _limits(self) -> ConnectionLimits:
        return self.config.mlcli_limits

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()
        if len(self.connections) > self._limits.max_connections and not self._make_room():
            transport.write(_REFUSED)
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        waiting = self.cycle is None or self.cycle.response_complete
        if waiting and (self._timer is None or self._armed_for is not self.cycle):
            self._arm()  # the first bytes of a keep-alive connection's next request
        super().data_received(data)  # type: ignore[misc]
        if self.cycle is not None and self.cycle is not self._armed_for:
            self._disarm()  # the headers are in: the app times the body

    def shutdown(self) -> None:
        super().shutdown()  # type: ignore[misc]
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and cycle.more_body:
            self.loop.call_later(self._limits.body_grace_s, self._cut_body, cycle)

    def _arm(self) -> None:
        self._disarm()
        self._armed_for = self.cycle
        self._waiting_since = self.loop.time()
        self._timer = self.loop.call_later(self._limits.header_timeout_s, self._header_timeout)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._waiting_since = None

    def _header_timeout(self) -> None:
        self._timer = None
        if self.cycle is self._armed_for:  # no request began since it was armed
            self.transport.close()

    def _make_room(self) -> bool:
        # waiting for a request's headers: an idle keep-alive connection first, then the one
        # waiting longest
        waiting = [
            connection
            for connection in self.connections
            if connection is not self
            and not connection.transport.is_closing()
            and (connection.cycle is None or connection.cycle.response_complete)
        ]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda connection: connection._waiting_since or -1.0)
        oldest._disarm()
        oldest.transport.close()
        return True

    def _cut_body(self, cycle: Any) -> None:
        if self.cycle is cycle and cycle.more_body and not self.transport.is_closing():
            self.transport.close()


class GuardedH11(_Guard, H11Protocol):
    """uvicorn's h11 protocol with the guards."""


GuardedHttpTools: type | None
try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class _GuardedHttpTools(_Guard, HttpToolsProtocol):
        """uvicorn's httptools protocol (its default where httptools is installed), guarded."""

    GuardedHttpTools = _GuardedHttpTools
except ImportError:  # uvicorn without httptools parses with h11
    GuardedHttpTools = None
