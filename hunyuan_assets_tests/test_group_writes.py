"""GroupWriter: what arrives while a group is being written is written next, in one call."""

from __future__ import annotations

import asyncio
import threading

import pytest

from hunyuan_assets.core.group_writes import GroupWriter


class Blocking:
    """write_many that records each group and holds the first until released."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.groups: list[list[str]] = []
        self.first_started = threading.Event()
        self.release = threading.Event()
        self.fail_on = fail_on

    def __call__(self, items: list[str]) -> None:
        self.groups.append(items)
        if len(self.groups) == 1:
            self.first_started.set()
            assert self.release.wait(10)
        if self.fail_on in items:
            raise OSError(f"disk full writing {self.fail_on}")


async def started(write: Blocking) -> None:
    assert await asyncio.to_thread(write.first_started.wait, 10)


def test_what_arrives_during_a_write_is_written_next_as_one_group() -> None:
    async def scenario() -> Blocking:
        write = Blocking()
        writer = GroupWriter(write)
        first = asyncio.create_task(writer.write("a"))
        await started(write)  # "a" alone: nothing waits to fill a group
        rest = [asyncio.create_task(writer.write(x)) for x in "bcde"]
        await asyncio.sleep(0)  # they are waiting, not written
        assert not any(task.done() for task in rest)
        write.release.set()
        await asyncio.gather(first, *rest)
        await writer.write("f")  # idle again: written at once, alone
        return write

    assert asyncio.run(scenario()).groups == [["a"], ["b", "c", "d", "e"], ["f"]]


def test_a_failed_group_raises_for_its_own_items_only() -> None:
    async def scenario() -> tuple[list, Blocking]:
        write = Blocking(fail_on="c")
        writer = GroupWriter(write)
        first = asyncio.create_task(writer.write("a"))
        await started(write)
        second = [asyncio.create_task(writer.write(x)) for x in "bc"]
        write.release.set()
        outcomes = await asyncio.gather(first, *second, return_exceptions=True)
        await writer.write("d")  # the writer goes on after a failed group
        return outcomes, write

    outcomes, write = asyncio.run(scenario())
    assert outcomes[0] is None
    assert [type(o) for o in outcomes[1:]] == [OSError, OSError]
    assert "disk full writing c" in str(outcomes[2])
    assert write.groups == [["a"], ["b", "c"], ["d"]]


def test_a_cancelled_caller_does_not_cancel_its_groups_write() -> None:
    async def scenario() -> Blocking:
        write = Blocking()
        writer = GroupWriter(write)
        first = asyncio.create_task(writer.write("a"))
        await started(write)
        second = asyncio.create_task(writer.write("b"))
        third = asyncio.create_task(writer.write("c"))
        await asyncio.sleep(0)
        second.cancel()
        write.release.set()
        await first
        await third  # written with "b", whose caller gave up
        with pytest.raises(asyncio.CancelledError):
            await second
        return write

    assert asyncio.run(scenario()).groups == [["a"], ["b", "c"]]
