"""The micro-batcher on a fake model: batches form under load, stay within `max_rows`, and
hand every request exactly its own rows back; failures and a full queue reach the callers."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from mlcli.serving.batching import Batcher, Columns, QueueFullError


class FakeModel:
    """Doubles `x`, slowly, recording the rows of every call."""

    def __init__(self, seconds: float = 0.05, fail_first: bool = False) -> None:
        self.seconds = seconds
        self.fail_first = fail_first
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, columns: Columns) -> np.ndarray:
        with self.lock:
            self.calls.append(len(columns["x"]))
            failing = self.fail_first and len(self.calls) == 1
        time.sleep(self.seconds)
        if failing:
            raise ValueError("model failed")
        return columns["x"] * 2.0


def _rows(start: int, count: int) -> dict[str, np.ndarray]:
    return {"x": np.arange(start, start + count, dtype=np.float32).reshape(-1, 1)}


async def _submit_all(batcher: Batcher, sizes: list[int], *, delay: float = 0.0) -> list:
    async def one(index: int, size: int) -> np.ndarray:
        if index and delay:
            await asyncio.sleep(delay)
        return await batcher.submit(_rows(100 * index, size), rows=size)

    return await asyncio.gather(*(one(i, s) for i, s in enumerate(sizes)), return_exceptions=True)


def _run(model: FakeModel, sizes: list[int], *, delay: float = 0.0, **options) -> list:
    async def main() -> list:
        batcher = Batcher(model, **{"max_rows": 64, "timeout_s": 0.0, **options})
        await batcher.start()
        try:
            return await _submit_all(batcher, sizes, delay=delay)
        finally:
            await batcher.stop()

    return asyncio.run(main())


def _check_own_rows(results: list, sizes: list[int]) -> None:
    for index, (result, size) in enumerate(zip(results, sizes, strict=True)):
        expected = _rows(100 * index, size)["x"] * 2.0
        np.testing.assert_array_equal(result, expected)


def test_requests_arriving_during_a_call_share_the_next_one():
    model = FakeModel()
    sizes = [1] * 10
    results = _run(model, sizes, delay=0.01)
    _check_own_rows(results, sizes)
    assert model.calls == [1, 9]


def test_batches_never_pass_max_rows_and_an_oversized_request_runs_alone():
    model = FakeModel(seconds=0.02)
    sizes = [3, 3, 3, 3, 3, 3, 20, 3, 3]
    results = _run(model, sizes, delay=0.005, max_rows=7)
    _check_own_rows(results, sizes)
    assert sum(model.calls) == sum(sizes)
    assert all(rows <= 7 for rows in model.calls if rows != 20)
    assert 20 in model.calls


def test_a_failed_call_fails_its_requests_and_the_next_batch_succeeds():
    model = FakeModel(fail_first=True)
    sizes = [2, 1, 1]
    results = _run(model, sizes, delay=0.01)
    assert isinstance(results[0], ValueError)
    for index in (1, 2):
        np.testing.assert_array_equal(results[index], _rows(100 * index, 1)["x"] * 2.0)


def test_a_full_queue_refuses_at_once():
    model = FakeModel(seconds=0.1)
    results = _run(model, [1, 1, 1, 1], delay=0.01, max_queue=1)
    refused = [r for r in results if isinstance(r, QueueFullError)]
    assert refused, results
    assert any(isinstance(r, np.ndarray) for r in results)


def test_a_request_being_read_is_waited_for_up_to_the_timeout():
    model = FakeModel(seconds=0.0)

    async def main() -> list[int]:
        batcher = Batcher(model, max_rows=64, timeout_s=0.5)
        await batcher.start()

        async def late() -> np.ndarray:
            with batcher.arriving():
                await asyncio.sleep(0.05)  # still parsing when the first request is queued
            return await batcher.submit(_rows(100, 1), rows=1)

        await asyncio.gather(batcher.submit(_rows(0, 1), rows=1), late())
        await batcher.stop()
        return model.calls

    assert asyncio.run(main()) == [2]


@pytest.mark.parametrize("timeout_s", [0.0, 0.5])
def test_a_lone_request_is_never_held_back(timeout_s):
    model = FakeModel(seconds=0.0)

    async def main() -> float:
        batcher = Batcher(model, max_rows=64, timeout_s=timeout_s)
        await batcher.start()
        start = time.perf_counter()
        await batcher.submit(_rows(0, 1), rows=1)
        elapsed = time.perf_counter() - start
        await batcher.stop()
        return elapsed

    assert asyncio.run(main()) < 0.25


class PickyModel:
    """Doubles `x` but fails on any batch holding a negative value, as a model fails on a
    value it cannot take; records the rows of every call."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, columns: Columns) -> np.ndarray:
        self.calls.append(len(columns["x"]))
        time.sleep(0.02)
        if (columns["x"] < 0).any():
            raise ValueError("cannot take a negative value")
        return columns["x"] * 2.0


@pytest.mark.parametrize("bad", [0, 3, 7])
def test_a_bad_request_fails_alone_and_the_others_of_its_batch_get_their_rows(bad):
    model = PickyModel()
    sizes = [2, 1, 3, 1, 2, 1, 1, 2]

    async def main() -> list:
        batcher = Batcher(model, max_rows=64, timeout_s=0.0)
        await batcher.start()

        async def one(index: int, size: int) -> np.ndarray:
            columns = _rows(100 * index, size)
            if index == bad:
                columns = {"x": -columns["x"] - 1}
            return await batcher.submit(columns, rows=size)

        # the first call runs alone; the rest queue up behind it and share the next
        try:
            return await asyncio.gather(
                *(one(i, s) for i, s in enumerate(sizes)), return_exceptions=True
            )
        finally:
            await batcher.stop()

    results = asyncio.run(main())
    assert isinstance(results[bad], ValueError)
    for index, (result, size) in enumerate(zip(results, sizes, strict=True)):
        if index != bad:
            np.testing.assert_array_equal(result, _rows(100 * index, size)["x"] * 2.0)
    assert any(rows > max(sizes) for rows in model.calls), model.calls  # a batch did form
