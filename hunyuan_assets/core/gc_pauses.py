"""Keep Python's full garbage collections short while predictions are in flight.

A process running Dagster holds ~250k long-lived objects (modules, definitions) before a run
starts. Every full (oldest-generation) collection walks all of them, holding the GIL for
~130 ms on an idle core and several times that on a loaded one, and a run that writes
thousands of events triggers many: the event loop stalls for as long (loop lag p99 ~170 ms,
max ~450 ms at C=300, bench_scale.py). `gc.freeze()` moves the objects alive now out of the
collector's sight (CPython's documented use: "after startup"); `gc.unfreeze()` gives them
back when the last user leaves, so nothing stays uncollectable after the step. Garbage that
is not cyclic is freed by reference counting as ever.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["long_lived_objects_frozen"]

_lock = threading.Lock()
_users = 0
_give_back = False  # whether the last user unfreezes (not when the process had frozen first)


@contextmanager
def long_lived_objects_frozen() -> Iterator[None]:
    """Freeze the objects alive at entry for the duration (nestable, thread-safe). A process
    that froze objects itself (e.g. a server preloading before fork) keeps its freeze: then
    nothing is unfrozen afterwards, as `gc.unfreeze` cannot tell whose objects are whose."""
    global _users, _give_back
    with _lock:
        if _users == 0:
            _give_back = gc.get_freeze_count() == 0
            gc.freeze()
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _give_back:
                gc.unfreeze()
