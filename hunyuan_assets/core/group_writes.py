"""Durable writes in groups: whatever arrives while one group is being written goes next.

Every outcome is logged (one parquet file) before it is reported. Written one by one, that
is a file, two fsyncs and a thread hop per prediction: ~3.5 ms of CPU each, most of it
building and footing a one-row parquet file. Outcomes come in waves (predictions submitted
together finish together), so a writer that takes everything waiting at once writes one file
per wave, and never waits to fill a group: an outcome arriving while nothing is being written
is written at once, as before. The classic group commit of databases.

At a steady stream groups still hold one item each (384 realistic images: 768 outcomes, a
registration and a mesh each, written in 571 groups at ~3 ms of CPU each), as each write
ends before the next outcome arrives. So a group is started at most every `min_gap`
seconds: an outcome that arrives sooner waits for the rest of the gap, with whatever else
arrives meanwhile. An outcome arriving after a quiet gap is still written at once, and a
group waiting out its gap when the loop closes (a step stopped early) is written first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["GroupWriter"]

T = TypeVar("T")


class GroupWriter(Generic[T]):
    """`await writer.write(item)` returns once `write_many` (run in a thread) has written a
    group holding `item`, or raises what it raised for that group. One group at a time."""

    def __init__(
        self,
        write_many: Callable[[list[T]], None],
        *,
        min_gap: float = 0.0,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if min_gap < 0:
            raise ValueError("min_gap must be >= 0 seconds")
        self._write_many = write_many
        self._min_gap = min_gap
        self._sleep = sleep
        self._last_start: float | None = None  # loop time the last group was started
        self._waiting: list[tuple[T, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def write(self, item: T) -> None:
        written = asyncio.get_running_loop().create_future()
        self._waiting.append((item, written))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_groups())
        # Shielded: a caller cancelled while its group is being written does not cancel the
        # group's write (the others in it are still waiting for it).
        await asyncio.shield(written)

    async def _write_groups(self) -> None:
        loop = asyncio.get_running_loop()
        closing = False
        while self._waiting:
            if self._last_start is not None and not closing:
                rest = self._last_start + self._min_gap - loop.time()
                if rest > 0:
                    try:
                        await self._sleep(rest)  # what arrives meanwhile joins this group
                    except asyncio.CancelledError:
                        closing = True  # the loop is closing: what waits is written first
            self._last_start = loop.time()
            group, self._waiting = self._waiting, []
            try:
                await asyncio.to_thread(self._write_many, [item for item, _ in group])
            except asyncio.CancelledError:  # closing mid-write: the thread finishes its write
                for _, written in group + self._waiting:
                    written.cancel()
                self._waiting = []
                raise
            except Exception as exc:
                for _, written in group:
                    if not written.done():
                        written.set_exception(exc)
                continue
            for _, written in group:
                if not written.done():
                    written.set_result(None)
        if closing:
            raise asyncio.CancelledError
