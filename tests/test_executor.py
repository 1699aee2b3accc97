"""The prefetch thread: same items in order, bounded, errors passed on, early stops honoured."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from engine.executor import prefetch


def test_items_come_in_order() -> None:
    assert list(prefetch(iter(range(1000)), depth=3)) == list(range(1000))


def test_the_producer_stays_within_its_bound() -> None:
    produced: list[int] = []

    def items() -> Iterator[int]:
        for i in range(100):
            produced.append(i)
            yield i

    stream = prefetch(items(), depth=4)
    assert next(stream) == 0
    time.sleep(0.3)
    assert len(produced) <= 1 + 4 + 1  # one taken, four queued, one waiting to be put
    stream.close()


def test_an_error_in_the_producer_is_raised_in_the_consumer() -> None:
    def items() -> Iterator[int]:
        yield 1
        raise ValueError("bad line 7")

    stream = prefetch(items())
    assert next(stream) == 1
    with pytest.raises(ValueError, match="bad line 7"):
        next(stream)


def test_a_consumer_that_stops_early_stops_the_producer() -> None:
    def items() -> Iterator[int]:
        yield from range(10_000_000)

    # Other tests' threads may come and go meanwhile: watch only the producer this one starts.
    before = set(threading.enumerate())
    stream = prefetch(items(), depth=2)
    next(stream)
    (producer,) = [
        t for t in threading.enumerate() if t not in before and t.name == "lakeport-prefetch"
    ]
    stream.close()
    producer.join(timeout=5)
    assert not producer.is_alive()
