"""Stages on threads joined by bounded queues: predict's reading, encoding and model.

`staged(items, [encode, run])` pulls `items` (reading: pyarrow's CSV and Parquet readers) on one
thread, applies each stage on a thread of its own, and yields the results, in order, to the
caller (writing). Each queue holds at most `depth` batches, so memory stays flat however many
rows pass, and the slowest stage sets the pace: pyarrow, numpy and ONNX Runtime release the GIL
while they work, so the stages overlap on several cores.

An error in any stage is raised in the caller, once; when the caller stops early (an error of
its own, Ctrl-C, a closed pipe) every thread is told to stop and joined before `staged` returns.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

POLL_SECONDS = 0.05  # how often a blocked thread looks whether it was told to stop
_DONE = object()


@dataclass
class _Failure:
    error: BaseException


class _Line:
    """The queues between the stages, and the flag that stops them all."""

    def __init__(self, stages: int, depth: int) -> None:
        self.queues: list[queue.Queue[Any]] = [queue.Queue(maxsize=depth) for _ in range(stages)]
        self.stopped = threading.Event()

    def put(self, index: int, item: Any) -> bool:
        """Puts `item` on queue `index`; False when the line was stopped meanwhile."""
        while not self.stopped.is_set():
            try:
                self.queues[index].put(item, timeout=POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def get(self, index: int) -> Any:
        """The next item of queue `index` (`_DONE` once the line was stopped)."""
        while not self.stopped.is_set():
            try:
                return self.queues[index].get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
        return _DONE


def _feed(line: _Line, items: Iterator[Any]) -> None:
    try:
        for item in items:
            if not line.put(0, item):
                return
    except BaseException as error:  # raised again in the caller
        line.put(0, _Failure(error))
        return
    line.put(0, _DONE)


def _work(line: _Line, index: int, function: Callable[[Any], Any]) -> None:
    while True:
        item = line.get(index)
        if item is _DONE or isinstance(item, _Failure):
            line.put(index + 1, item)
            return
        try:
            result = function(item)
        except BaseException as error:  # raised again in the caller
            line.put(index + 1, _Failure(error))
            return
        if not line.put(index + 1, result):
            return


def staged(
    items: Iterator[Any],
    stages: Sequence[Callable[[Any], Any]],
    *,
    depth: int = 2,
    name: str = "mlcli-stage",
) -> Iterator[Any]:
    """Yields `stages` applied in turn to every item of `items`, each on its own thread.

    Example:

    ```python
    for outputs in staged(read_batches(), [encode, predict]):
        write(outputs)
    ```
    """
    line = _Line(len(stages) + 1, depth)
    threads = [threading.Thread(target=_feed, args=(line, items), name=f"{name}-0", daemon=True)]
    threads += [
        threading.Thread(
            target=_work, args=(line, index, function), name=f"{name}-{index + 1}", daemon=True
        )
        for index, function in enumerate(stages)
    ]
    for thread in threads:
        thread.start()
    try:
        while True:
            item = line.get(len(stages))
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        line.stopped.set()
        for thread in threads:
            thread.join()
