"""Stages on threads with bounded queues: order, errors, early stops, memory."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlcli.inference.pipeline import staged


@settings(max_examples=25, deadline=None)
@given(items=st.lists(st.integers(), max_size=40), depth=st.integers(1, 4))
def test_every_item_goes_through_every_stage_in_order(items: list[int], depth: int) -> None:
    results = list(staged(iter(items), [lambda x: x * 2, lambda x: x + 1], depth=depth))
    assert results == [x * 2 + 1 for x in items]


def test_an_error_in_a_stage_is_raised_in_the_caller_and_every_thread_ends() -> None:
    def fail_on_three(x: int) -> int:
        if x == 3:
            raise ValueError("three")
        return x

    before = threading.active_count()
    seen = []
    with pytest.raises(ValueError, match="three"):
        for item in staged(iter(range(10)), [fail_on_three]):
            seen.append(item)
    assert seen == [0, 1, 2]
    assert threading.active_count() == before


def test_an_error_while_reading_is_raised_in_the_caller() -> None:
    def items() -> Iterator[int]:
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(staged(items(), [lambda x: x]))


def test_a_caller_that_stops_early_stops_the_threads_and_reads_no_further_than_the_queues():
    produced = []

    def items() -> Iterator[int]:
        for index in range(1_000_000):
            produced.append(index)
            yield index

    before = threading.active_count()
    stream = staged(items(), [lambda x: x, lambda x: x], depth=2)
    assert next(stream) == 0
    time.sleep(0.3)  # the threads fill their queues and wait
    # 3 queues of 2, plus one item in each of the 2 stages and the reader's hand
    assert len(produced) <= 3 * 2 + 3 + 1
    stream.close()
    assert threading.active_count() == before
