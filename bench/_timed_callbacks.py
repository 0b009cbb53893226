"""`hunyuan-assets demo` with a stopwatch on every event-loop callback and full collection.

The loop lag the run records (a 50 ms sleep, how late it wakes) mixes two things: one call
holding the loop, and many short callbacks that happen to be ready together (a wave of poll
answers at C=300). This tells them apart: the duration of each single callback (asyncio's
`Handle._run`, what debug mode's `slow_callback_duration` times) and of each full garbage
collection while the loop runs (it stops every thread, the loop's too). Written as JSON to
the path in $TIMED_CALLBACKS_OUT when the demo ends.

    python bench/_timed_callbacks.py demo --images DIR --home DIR --concurrency 300
"""

from __future__ import annotations

import asyncio.events
import gc
import json
import os
import sys
import time

SLOW_MS = 50.0
_callbacks = {"count": 0, "over_20_ms": 0, "over_50_ms": 0, "longest_ms": 0.0}
_loop_ran = [float("inf"), 0.0]  # first and last callback: collections outside do not count
_slow_cpu_ms: list[float] = []  # the loop thread's CPU in each callback over SLOW_MS
_full_collections: list[tuple[float, float]] = []  # (ended at, ms)
_run = asyncio.events.Handle._run
_gc_started = [0.0]


def _timed_run(self: asyncio.events.Handle) -> None:
    started, cpu = time.perf_counter(), time.thread_time()
    try:
        _run(self)
    finally:
        ended = time.perf_counter()
        ms = (ended - started) * 1000
        _loop_ran[0], _loop_ran[1] = min(_loop_ran[0], started), ended
        _callbacks["count"] += 1
        _callbacks["over_20_ms"] += ms > 20
        _callbacks["over_50_ms"] += ms > SLOW_MS
        _callbacks["longest_ms"] = max(_callbacks["longest_ms"], ms)
        if ms > SLOW_MS:
            _slow_cpu_ms.append((time.thread_time() - cpu) * 1000)


def _on_collection(phase: str, info: dict) -> None:
    if info["generation"] != 2:
        return
    if phase == "start":
        _gc_started[0] = time.perf_counter()
    else:
        ended = time.perf_counter()
        _full_collections.append((ended, (ended - _gc_started[0]) * 1000))


def _write(path: str) -> None:
    while_looping = [ms for ended, ms in _full_collections if _loop_ran[0] <= ended <= _loop_ran[1]]
    summary = {
        **{k: round(v, 1) if isinstance(v, float) else v for k, v in _callbacks.items()},
        "slow_callbacks_cpu_ms": [round(ms, 1) for ms in _slow_cpu_ms],
        "full_collections": len(while_looping),
        "longest_full_collection_ms": round(max(while_looping, default=0.0), 1),
    }
    with open(path, "w") as out:
        json.dump(summary, out)


if __name__ == "__main__":
    asyncio.events.Handle._run = _timed_run  # type: ignore[method-assign]
    from hunyuan_assets.cli import main  # imported after: the demo's own full collections

    gc.callbacks.append(_on_collection)
    try:
        code = main(sys.argv[1:])
    finally:
        _write(os.environ["TIMED_CALLBACKS_OUT"])
    sys.exit(code)
