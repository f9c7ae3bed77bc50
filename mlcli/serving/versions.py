"""Live model versions: the one owner of which servable answers a request.

`ModelVersions` holds the loaded versions of one model, each with its own `Batcher` (its own
model thread). With a base folder of numbered versions (`serving.version_folders`) a poller
looks at the folder every `poll_seconds`; the `keep` newest complete versions are wanted. A
new one is loaded in a worker thread, warmed up (one predict call through its batcher), and
only then takes the unpinned requests, in one assignment on the event loop: no request waits
for a load or fails because of one. Each request holds the version it started with
(`acquire`) until it is answered; a version past the `keep` newest that load leaves the
rotation at once and is unloaded once its last request has been answered. A version that
fails to load is reported with its error (state END) and the versions already loaded go on
serving; it is tried again only when its folder changes. A version folder that is removed
is unloaded too (a rollback), unless it is the last one available.

States, as TF Serving reports them: START (found), LOADING (loading and warming up),
AVAILABLE, UNLOADING (waiting for its requests), END (unloaded, or failed with an error).

The interface for every protocol (REST v1, v2, gRPC), to be called on the event loop:

```python
servable = versions.get(version)            # metadata; ModelNotFoundError (404) if unknown
with versions.acquire(version) as live:     # a request: live.servable, live.batcher
    outputs = await live.batcher.submit(columns, rows=rows)
versions.status(version)                    # model_version_status entries
```
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlcli.reporting import Reporter
from mlcli.serving.payloads import BadRequestError
from mlcli.serving.version_folders import (
    AVAILABLE,
    END,
    LOADING,
    START,
    UNLOADING,
    InitialVersions,
    VersionState,
    complete_versions,
    failure,
    fingerprint,
    load_version,
)

if TYPE_CHECKING:
    from mlcli.serving.batching import Batcher
    from mlcli.serving.metrics import ServerMetrics
    from mlcli.serving.servables import Servable

VERSION_HEADER = "x-mlcli-model-version"
_ENDED_KEPT = 16  # END entries kept in the status, newest first


class ModelNotFoundError(BadRequestError):
    """A model name or version this server does not serve (404, gRPC NOT_FOUND)."""

    status = 404


@dataclass
class LiveVersion:
    """A loaded version: its servable, its batcher, and the requests it is answering."""

    servable: Servable
    batcher: Batcher
    in_flight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()


Loader = Callable[[Path, int], "Servable"]
BatcherFactory = Callable[["Servable"], "Batcher"]


class ModelVersions:
    """The versions of one model that a server answers with, and their states.

    Args:
        initial: the versions loaded before the server listens (`load_versions`).
        batcher_for: makes the batcher of a loaded servable (not started).
        keep: how many of the newest versions stay available (`--keep-versions`).
        poll_seconds: how often the base folder is looked at (`--poll-seconds`).
        trust_export: load versions that `mlcli export` did not write (`--trust-export`).
        reporter: where loads, swaps, unloads and failures are logged.
        metrics: counts loads by outcome and records load and warm-up seconds per version.
        loader: loads a version folder as a given number (`load_version` by default).
    """

    def __init__(
        self,
        initial: InitialVersions,
        *,
        batcher_for: BatcherFactory,
        keep: int = 1,
        poll_seconds: float = 1.0,
        trust_export: bool = False,
        reporter: Reporter | None = None,
        metrics: ServerMetrics | None = None,
        loader: Loader | None = None,
    ) -> None:
        self.name = initial.servables[0].name
        self.base = initial.base
        self.keep = keep
        self.poll_seconds = poll_seconds
        self.reporter = reporter or Reporter()
        self.metrics = metrics
        self._batcher_for = batcher_for
        self._loader = loader or partial(self._load_folder, trust_export=trust_export)
        self._live: dict[int, LiveVersion] = {}
        self._states: dict[int, VersionState] = {}
        self._failed = dict(initial.failed)
        self._unloading: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None
        for number, (_, state) in initial.failed.items():
            self._states[number] = state
        for servable in initial.servables:
            number = int(servable.version)
            self._live[number] = LiveVersion(servable, batcher_for(servable))
            # available from the start: the app's lifespan warms them up before it listens
            self._states[number] = VersionState(number, AVAILABLE)
            self._count_load(servable, "success")
        self._serving: list[int] = sorted(self._live, reverse=True)[:keep]  # newest first

    @classmethod
    def single(
        cls,
        servable: Servable,
        batcher: Batcher,
        *,
        reporter: Reporter | None = None,
        metrics: ServerMetrics | None = None,
    ) -> ModelVersions:
        """One fixed version (a run, or one SavedModel folder), answered by `batcher`."""
        return cls(
            InitialVersions([servable]),
            batcher_for=lambda _: batcher,
            reporter=reporter,
            metrics=metrics,
        )

    def _load_folder(self, folder: Path, number: int, *, trust_export: bool) -> Servable:
        return load_version(folder, number, name=self.name, trust_export=trust_export)

    # -- the interface of the protocols ---------------------------------------------------

    def get(self, version: int | str | None = None, *, name: str | None = None) -> Servable:
        """The servable answering `version` (the newest available one when None).

        Raises:
            ModelNotFoundError: `name` is not this model's, or `version` is not available.
        """
        return self._pick(version, name).servable

    @contextlib.contextmanager
    def acquire(
        self, version: int | str | None = None, *, name: str | None = None
    ) -> Iterator[LiveVersion]:
        """The version a request is answered by, held (never unloaded) until the block ends."""
        live = self._pick(version, name)
        live.in_flight += 1
        live.idle.clear()
        try:
            yield live
        finally:
            live.in_flight -= 1
            if live.in_flight == 0:
                live.idle.set()

    def status(
        self, version: int | str | None = None, *, name: str | None = None
    ) -> list[dict[str, object]]:
        """`model_version_status`: every version known (newest first), or only `version`."""
        self._check_name(name)
        if version is None:
            return [self._states[number].describe() for number in sorted(self._states)[::-1]]
        number = _number(version)
        if number is None or number not in self._states:
            raise self._not_found(version)
        return [self._states[number].describe()]

    @property
    def latest(self) -> LiveVersion:
        """The version answering unpinned requests."""
        return self._live[self._serving[0]]

    @property
    def depth(self) -> int:
        """Requests waiting for a model call, over every version's batcher."""
        return sum(live.batcher.depth for live in self._live.values())

    # -- the life of the server ----------------------------------------------------------

    async def start(self) -> None:
        """Starts and warms up the versions loaded already, then the poller (if any)."""
        for number in sorted(self._live, reverse=True):
            await self._warm_up(number, self._live[number])
        if self.base is not None:
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def stop(self) -> None:
        """Stops the poller, then every batcher once its queued requests are answered."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        for task in list(self._unloading):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for live in self._live.values():
            await live.batcher.stop()

    async def refresh(self) -> None:
        """One look at the base folder: loads the wanted versions, unloads the others."""
        if self.base is None:
            return
        found = await asyncio.to_thread(complete_versions, self.base)
        wanted = sorted(found, reverse=True)[: self.keep]
        for number in wanted:
            if number not in self._live and not self._failed_before(number, found[number]):
                await self._load(number, found[number])
        available = [n for n in sorted(self._live, reverse=True) if self._available(n)]
        on_disk = [number for number in available if number in found]
        keep = (on_disk or available)[: self.keep]
        self._swap(keep)
        for number in available:
            if number not in keep:
                self._unload_later(number)

    # -- loading, swapping, unloading ---------------------------------------------------

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await self.refresh()
            except Exception as error:  # the poller must outlive a surprise; the server goes on
                self.reporter.warning(f"model {self.name}: looking for versions failed: {error}")

    def _failed_before(self, number: int, folder: Path) -> bool:
        failed = self._failed.get(number)
        return failed is not None and failed[0] == fingerprint(folder)

    def _available(self, number: int) -> bool:
        return self._states[number].state == AVAILABLE

    async def _load(self, number: int, folder: Path) -> None:
        state = self._states[number] = VersionState(number, START)
        self._failed.pop(number, None)
        who = f"model {self.name}: version {number}"
        self.reporter.event("version_loading", f"{who}: loading {folder}", version=number)
        identity = fingerprint(folder)
        state.state = LOADING
        live: LiveVersion | None = None
        try:
            servable = await asyncio.to_thread(self._loader, folder, number)
            live = LiveVersion(servable, self._batcher_for(servable))
            await self._warm_up(number, live)
        except asyncio.CancelledError:  # the server stops during a load: the version is dropped
            if live is not None:
                await live.batcher.stop()
            raise
        except Exception as error:
            if live is not None:
                await live.batcher.stop()
            self._failed[number] = (identity, failure(number, error))
            self._states[number] = self._failed[number][1]
            self._count_load(None, "failure")
            self.reporter.warning(
                f"{who}: not loaded, the versions loaded go on serving: "
                f"{self._states[number].error_message}"
            )
            return
        self._live[number] = live
        state.state = AVAILABLE
        self._count_load(live.servable, "success")
        seconds = live.servable.load_seconds
        self.reporter.event(
            "version_available",
            f"{who}: available (loaded in {seconds:.2f} s)",
            version=number,
            load_seconds=round(seconds, 3),
        )

    async def _warm_up(self, number: int, live: LiveVersion) -> None:
        await live.batcher.start()
        start = time.perf_counter()
        await live.batcher.submit(live.servable.example(), rows=1)
        if self.metrics is not None:
            seconds = time.perf_counter() - start
            self.metrics.set_load_seconds(self.name, str(number), "warmup", seconds)

    def _count_load(self, servable: Servable | None, outcome: str) -> None:
        if self.metrics is None:
            return
        self.metrics.observe_model_load(outcome)
        if servable is not None:
            version, seconds = servable.version, servable.load_seconds
            self.metrics.set_load_seconds(self.name, version, "load", seconds)

    def _swap(self, serving: list[int]) -> None:
        before = self._serving[0] if self._serving else None
        self._serving = serving  # one assignment: the next request picks the new list
        if serving and serving[0] != before:
            self.reporter.event(
                "version_swap",
                f"model {self.name}: version {serving[0]} answers requests"
                + (f" (was {before})" if before is not None else ""),
                version=serving[0],
                previous=before,
            )

    def _unload_later(self, number: int) -> None:
        if self._states[number].state != AVAILABLE:
            return
        self._states[number].state = UNLOADING
        task = asyncio.get_running_loop().create_task(self._unload(number))
        self._unloading.add(task)
        task.add_done_callback(self._unloading.discard)

    async def _unload(self, number: int) -> None:
        live = self._live[number]
        await live.idle.wait()  # the requests that hold it are answered first
        await live.batcher.stop()
        del self._live[number]
        self._states[number].state = END
        self._forget_ended()
        self.reporter.event(
            "version_unloaded", f"model {self.name}: version {number}: unloaded", version=number
        )

    def _forget_ended(self) -> None:
        ended = [n for n, state in self._states.items() if state.state == END]
        for number in sorted(ended)[:-_ENDED_KEPT]:
            del self._states[number]

    # -- lookups ------------------------------------------------------------------------

    def _check_name(self, name: str | None) -> None:
        if name is not None and name != self.name:
            raise ModelNotFoundError(f"no model named {name!r}; this server serves {self.name!r}")

    def _not_found(self, version: Any) -> ModelNotFoundError:
        shown = ", ".join(str(number) for number in self._serving) or "none"
        return ModelNotFoundError(
            f"model {self.name!r} has no version {str(version)!r} available; available: {shown}"
        )

    def _pick(self, version: int | str | None, name: str | None) -> LiveVersion:
        self._check_name(name)
        number = self._serving[0] if version is None else _number(version)
        if number is None or number not in self._serving:
            raise self._not_found(version)
        return self._live[number]


def _number(version: int | str) -> int | None:
    if isinstance(version, int):
        return version
    return int(version) if version.isascii() and version.isdigit() else None
