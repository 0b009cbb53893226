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


class HeldSleep:
    """An `asyncio.sleep` stand-in that records each requested pause and ends it only when
    the test says so (no timing in the test)."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self.asked = asyncio.Event()
        self.end = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.asked.set()
        await self.end.wait()


def test_a_group_starts_at_most_every_min_gap_and_gathers_what_arrives_meanwhile() -> None:
    """A steady stream (each write done before the next item) would be one item a group;
    with `min_gap` the next group waits out the gap since the last one started, and takes
    everything that arrived meanwhile."""

    async def scenario() -> tuple[list[list[str]], list[float]]:
        groups: list[list[str]] = []
        sleep = HeldSleep()
        writer = GroupWriter(groups.append, min_gap=30.0, sleep=sleep)
        await writer.write("a")  # the first group: at once, no pause
        assert sleep.pauses == []
        second = asyncio.create_task(writer.write("b"))
        # "a"'s group started < 30 s ago: "b" waits out the rest of the gap
        await asyncio.wait_for(sleep.asked.wait(), 10)
        rest = [asyncio.create_task(writer.write(x)) for x in "cd"]
        await asyncio.sleep(0)
        assert groups == [["a"]] and not second.done()
        sleep.end.set()
        await asyncio.gather(second, *rest)
        return groups, sleep.pauses

    groups, pauses = asyncio.run(scenario())
    assert groups == [["a"], ["b", "c", "d"]]
    assert len(pauses) == 1 and 0 < pauses[0] <= 30.0


def test_a_group_waiting_out_its_gap_is_written_when_the_loop_closes() -> None:
    """asyncio.run cancels what is left when its coroutine returns (a step that stopped
    early): outcomes waiting out the gap are written then, not dropped."""

    async def scenario(groups: list[list[str]]) -> None:
        sleep = HeldSleep()  # never ended: only the loop's closing ends the pause
        writer = GroupWriter(groups.append, min_gap=30.0, sleep=sleep)
        await writer.write("a")
        asyncio.create_task(writer.write("b"))
        await asyncio.wait_for(sleep.asked.wait(), 10)
        # returns with "b" waiting: asyncio.run cancels its caller and the writer

    groups: list[list[str]] = []
    asyncio.run(scenario(groups))
    assert groups == [["a"], ["b"]]


def test_without_min_gap_a_steady_stream_is_written_one_by_one_without_pausing() -> None:
    """The default has no gap: no write ever waits (a pause would hold here for good)."""

    async def scenario() -> tuple[list[list[str]], list[float]]:
        groups: list[list[str]] = []
        sleep = HeldSleep()
        writer = GroupWriter(groups.append, sleep=sleep)
        for x in "abc":
            await asyncio.wait_for(writer.write(x), 10)
        return groups, sleep.pauses

    assert asyncio.run(scenario()) == ([["a"], ["b"], ["c"]], [])


def test_min_gap_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="min_gap"):
        GroupWriter(lambda items: None, min_gap=-1.0)
