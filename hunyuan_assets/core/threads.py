"""Drive an async generator from synchronous code, item by item.

Dagster asset bodies are synchronous generators; the predictions run on asyncio. Running the
event loop in a worker thread lets the asset yield each partition's events as soon as its
prediction finishes, instead of after the whole batch.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


def iterate_async(factory: Callable[[], AsyncIterator[T]]) -> Iterator[T]:
    """Yield the items of `factory()` as they are produced; exceptions are re-raised here."""
    items: queue.Queue = queue.Queue()
    stop = threading.Event()

    async def pump() -> None:
        async for item in factory():
            items.put(item)
            if stop.is_set():
                break

    def run() -> None:
        try:
            asyncio.run(pump())
        except BaseException as exc:  # handed to the consuming thread
            items.put(exc)
        finally:
            items.put(_DONE)

    worker = threading.Thread(target=run, name="hunyuan-assets-async", daemon=True)
    worker.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)
