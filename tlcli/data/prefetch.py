"""A bounded window of work ahead: decode the next files while the current batch runs.

Extraction, prediction and screening all read and decode files in a thread
pool a fixed number of files ahead of their consumer, in input order, so
memory stays flat for any number of files (Pillow releases the GIL while
decoding and resizing, so the threads run in parallel).
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

from tlcli.system import cpu_workers

Item = TypeVar("Item")
Result = TypeVar("Result")


def bounded_map(
    function: Callable[[Item], Result], items: Iterable[Item], *, window: int, workers: int | None = None
) -> Iterator[tuple[Item, Result]]:
    """(item, function(item)) in input order, with at most `window` items submitted ahead."""
    iterator = iter(items)
    with ThreadPoolExecutor(max_workers=workers or cpu_workers()) as pool:
        pending: deque = deque()
        for item in iterator:
            pending.append((item, pool.submit(function, item)))
            if len(pending) >= window:
                break
        while pending:
            item, future = pending.popleft()
            following = next(iterator, _END)
            if following is not _END:
                pending.append((following, pool.submit(function, following)))
            yield item, future.result()


_END = object()
