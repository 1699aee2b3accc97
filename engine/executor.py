"""Running the steps of a pipeline side by side: a producer thread with a bounded queue.

Arrow, Polars, DuckDB and the Delta writer release the GIL while they work, so reading and
parsing the next batches in one thread while the writer encodes the last ones in another uses
both cores; the queue's bound keeps memory flat.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Generator, Iterator
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

_DONE = object()


def cores() -> int:
    """The cores this process may run on (its CPU affinity where the system tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def prefetch(items: Iterator[T], depth: int = 4) -> Generator[T, None, None]:
    """Yield what `items` yields, produced ahead in a thread, at most `depth` items ahead.

    An exception in the producer is raised in the consumer; a consumer that stops early stops
    the producer.
    """
    slots: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            slots.put(exc)

    worker = threading.Thread(target=produce, name="lakeport-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = slots.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join(timeout=5)


def ordered_map(
    work: Callable[[T], R], items: Iterator[T], *, workers: int = 2, depth: int = 4
) -> Generator[R, None, None]:
    """`work` applied to each item by `workers` threads, the results yielded in the items'
    order; at most `depth` items are taken ahead. An exception in `work` is raised here (at
    that item's turn); a consumer that stops early cancels what has not started."""
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    pending: deque[Future[R]] = deque()
    with ThreadPoolExecutor(workers, thread_name_prefix="lakeport-work") as pool:
        try:
            for item in items:
                pending.append(pool.submit(work, item))
                if len(pending) >= depth:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
