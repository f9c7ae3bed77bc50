"""Micro-batching: requests that arrive together share one model call.

Each request's rows wait in a bounded asyncio queue. One gatherer takes the first waiting
request, adds every request already queued (and, for at most `timeout_s`, requests still
being parsed) up to `max_rows` rows, runs the model once on the concatenated columns in a
worker thread, and hands each request its own slice of the outputs. While the model runs,
new requests queue up, so batches grow with the load without any waiting at low load. When a
call on several requests fails, each of them runs again alone, so that only a request the
model cannot take gets the error. Two optional callbacks watch it: `on_batch` gets the rows
of each model call that succeeded, `on_queue` the queue's depth whenever it changes (the server's
metrics, `serving.metrics`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

Columns = Mapping[str, np.ndarray]
ModelCall = Callable[[Columns], np.ndarray]
Observer = Callable[[int], None]


class QueueFullError(Exception):
    """The queue holds `max_queue` requests already; the caller should answer 503."""


@dataclass
class _Pending:
    columns: Columns
    rows: int
    future: asyncio.Future[np.ndarray] = field(repr=False)


class Batcher:
    """Gathers concurrent requests into batches of at most `max_rows` rows per model call.

    Example:

    ```python
    batcher = Batcher(model_call, max_rows=256, timeout_s=0.001)
    await batcher.start()
    outputs = await batcher.submit({"age": np.array([[39.0]], np.float32)}, rows=1)
    await batcher.stop()
    ```
    """

    def __init__(
        self,
        call: ModelCall,
        *,
        max_rows: int,
        timeout_s: float,
        max_queue: int = 4096,
        on_batch: Observer | None = None,
        on_queue: Observer | None = None,
    ) -> None:
        self.call = call
        self.max_rows = max_rows
        self.timeout_s = timeout_s
        self.max_queue = max_queue
        self.on_batch = on_batch
        self.on_queue = on_queue
        self.batches = 0
        self.batched_rows = 0
        self._arriving = 0
        self._queue: asyncio.Queue[_Pending] | None = None
        self._carry: _Pending | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        """Starts the gatherer on the running event loop."""
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlcli-model")
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stops the gatherer once the requests already queued are answered."""
        if self._task is None or self._queue is None or self._executor is None:
            return
        while not self._queue.empty() or self._carry is not None:
            await asyncio.sleep(0.01)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._executor.shutdown(wait=True)
        self._task = None
        self._queue = None  # a request after the stop fails at once instead of waiting forever

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Marks a request as being read and parsed: a gathering batch may wait for it."""
        self._arriving += 1
        try:
            yield
        finally:
            self._arriving -= 1

    async def submit(self, columns: Columns, *, rows: int) -> np.ndarray:
        """The model's outputs for `rows` rows of `columns` (each shaped (rows, 1))."""
        if self._queue is None:
            raise RuntimeError("Batcher.submit() while it is not started (or stopped)")
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Pending(columns, rows, future))
        except asyncio.QueueFull:
            raise QueueFullError(f"{self.max_queue} requests are waiting already") from None
        self._queue_changed()
        return await future

    @property
    def depth(self) -> int:
        """Requests waiting for a model call (queued, or carried over to the next batch)."""
        queued = self._queue.qsize() if self._queue is not None else 0
        return queued + (self._carry is not None)

    def _queue_changed(self) -> None:
        if self.on_queue is not None:
            self.on_queue(self.depth)

    def _called(self, rows: int) -> None:
        self.batches += 1
        self.batched_rows += rows
        if self.on_batch is not None:
            self.on_batch(rows)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather(loop)
            columns = _concatenate([pending.columns for pending in batch])
            try:
                outputs = await loop.run_in_executor(self._executor, self.call, columns)
            except Exception as error:
                if len(batch) == 1:
                    _settle(batch[0], error=error)
                else:  # one bad request must not fail the others: each runs alone
                    for pending in batch:
                        await self._run_alone(loop, pending)
                continue
            self._called(sum(pending.rows for pending in batch))
            start = 0
            for pending in batch:
                stop = start + pending.rows
                _settle(pending, outputs=outputs[start:stop])
                start = stop

    async def _run_alone(self, loop: asyncio.AbstractEventLoop, pending: _Pending) -> None:
        if pending.future.done():  # the client has gone
            return
        try:
            outputs = await loop.run_in_executor(self._executor, self.call, pending.columns)
        except Exception as error:
            _settle(pending, error=error)
            return
        self._called(pending.rows)
        _settle(pending, outputs=outputs)

    async def _gather(self, loop: asyncio.AbstractEventLoop) -> list[_Pending]:
        assert self._queue is not None
        first, self._carry = self._carry, None
        if first is None:
            first = await self._queue.get()
        batch, rows = [first], first.rows
        deadline = loop.time() + self.timeout_s
        while rows < self.max_rows:
            if self._queue.empty():
                remaining = deadline - loop.time()
                if self._arriving == 0 or remaining <= 0:
                    break
                try:
                    pending = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            else:
                pending = self._queue.get_nowait()
            if rows + pending.rows > self.max_rows:
                self._carry = pending  # the next batch starts with it
                break
            batch.append(pending)
            rows += pending.rows
        self._queue_changed()
        return batch


def _settle(
    pending: _Pending, *, outputs: np.ndarray | None = None, error: Exception | None = None
) -> None:
    if pending.future.done():  # the client may have gone
        return
    if error is not None:
        pending.future.set_exception(error)
    elif outputs is not None:
        pending.future.set_result(outputs)


def _concatenate(parts: list[Columns]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return dict(parts[0])
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
