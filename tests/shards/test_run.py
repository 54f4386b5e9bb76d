"""The shard runner's tokenization thread: errors reach the consumer, and an early stop ends the thread."""

from __future__ import annotations

import threading
from contextlib import closing

import pytest

from personamine.shards.run import _prefetch


def test_producer_errors_are_raised_in_the_consumer():
    def bad():
        yield 1
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        list(_prefetch(bad()))


def test_a_consumer_that_stops_early_does_not_leave_the_producer_blocked():
    before = set(threading.enumerate())
    with closing(_prefetch(iter(range(10_000)))) as items:
        assert [next(items), next(items)] == [0, 1]
    assert set(threading.enumerate()) <= before
