"""The one process pool: batch and impact map chunks of work over worker processes.

Workers are spawned, not forked: a fresh interpreter per worker shares no durable_rules
state or threads with the parent, and behaves the same on every platform. Each worker runs
`initializer(*initargs)` once (load the rules), then `func` on one chunk at a time.
Results come back in submission order, through a bounded window of pending chunks per
worker: workers stay fed, memory stays flat, and output is identical whatever the number
of workers.
"""

from __future__ import annotations

import collections
import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

__all__ = ["WINDOW", "ordered_map"]

WINDOW = 4  # pending chunks per worker: keeps workers fed without reading ahead far
T = TypeVar("T")
R = TypeVar("R")


def ordered_map(
    func: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int,
    initializer: Callable[..., None],
    initargs: tuple[Any, ...],
    window: int = WINDOW,
) -> Iterator[R]:
    """`func(item)` for every item, computed in `workers` processes, yielded in order."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=initializer, initargs=initargs
    ) as pool:
        pending: collections.deque[Future[R]] = collections.deque()
        try:
            for item in items:
                pending.append(pool.submit(func, item))
                while len(pending) >= workers * window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        except BaseException:
            for future in pending:
                future.cancel()
            raise
