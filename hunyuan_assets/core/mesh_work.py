"""Mesh analysis off the event loop, in worker processes.

`glb.analyse_glb` is CPU-bound numpy and Pillow work that holds the GIL for most of its
20-50 ms; in a thread it stalls every other coroutine of the process (polls, uploads,
downloads) for as long. A small pool of worker processes runs it beside them instead.

The pool is made on first use, one per process (a forked child makes its own), with the
"spawn" start method: forking a process that runs threads (Dagster's, httpx's) can copy a
held lock into the child. A spawned child normally runs the parent's main module again
before its first task; these workers do not (`_without_parent_main`): the analysis needs
nothing from it, and for `hunyuan-assets demo` or a user's script that is all of Dagster
(~2.3 s of CPU and ~190 MB per worker), or a whole pipeline run again in a script without
the `if __name__ == "__main__":` guard. Each worker costs ~0.2 s of CPU to start and ~65 MB;
the pool pays in a process that analyses more than a few meshes. The workers run at a lower
CPU priority than their parent (`WORKER_NICENESS`), so the network work goes first.
"""

from __future__ import annotations

import asyncio
import ctypes
import multiprocessing
import os
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from hunyuan_assets.core.glb import MeshAnalysis, analyse_glb

__all__ = ["analyse", "shutdown"]

# Two workers: analysis is one of several CPU-bound steps of a run, and each worker costs
# ~60 MB (numpy, Pillow) whether busy or not.
WORKERS = max(1, min(2, os.cpu_count() or 1))
#: How much lower than the parent's the workers' CPU priority is (`nice`; see `_lower_priority`).
WORKER_NICENESS = 10

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_pool_pid: int | None = None


def _executor() -> ProcessPoolExecutor:
    global _pool, _pool_pid
    with _lock:
        if _pool is None or _pool_pid != os.getpid():
            context = multiprocessing.get_context("spawn")
            _pool = ProcessPoolExecutor(WORKERS, mp_context=context, initializer=_prepare_worker)
            _pool_pid = os.getpid()
        return _pool


def _prepare_worker() -> None:
    _lower_priority()
    _keep_freed_memory()


#: glibc's mallopt parameters (malloc.h) and what the workers set them to.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest on 64-bit
_TRIM_THRESHOLD = 64 * 1024 * 1024


def _keep_freed_memory() -> None:
    """Let the worker's malloc keep what an analysis freed, for the next one. By default glibc
    serves a large allocation (a decoded 2048 px texture, its numpy copies) from a fresh mmap
    and returns it on free; its threshold adapts only to sizes already freed, so meshes of
    varying sizes keep faulting their memory in again, zeroed by the kernel. 18 distinct
    realistic meshes at the default preview size, analysed 3 times over in 2 warm workers:
    1,494 -> 4 minor page faults and 43.1 -> 38.9 ms of CPU per analysis, for +8 MB of RSS
    per worker. Not glibc (musl, macOS): nothing to do."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)


def _lower_priority() -> None:
    """Run the worker below the parent's CPU priority: when the cores are full, the parent's
    loop (polls, submits, downloads) runs first and the analyses take what is left, so a
    freed slot is submitted again sooner. 384 realistic images, 4 interleaved runs each: 50.1
    s against 52.6 s at the same niceness."""
    nice = getattr(os, "nice", None)  # POSIX only
    if nice is None:
        return
    try:
        nice(WORKER_NICENESS)
    except OSError:  # never fatal: the analysis runs at the parent's priority instead
        pass


async def analyse(path: Path, *, preview_size: int, thumbnail_edge: int = 192) -> MeshAnalysis:
    """`analyse_glb(path, ...)` in a worker process, awaited without blocking the loop.

    Raises what `analyse_glb` raises (MeshError for a bad mesh). A worker that died (killed,
    out of memory) is replaced and the mesh analysed once more."""
    work = partial(
        analyse_glb, Path(path), preview_size=preview_size, thumbnail_edge=thumbnail_edge
    )
    pool = _executor()
    try:
        return await asyncio.wrap_future(_submit(pool, work))
    except BrokenProcessPool:
        # Its processes are gone (one was killed: out of memory, ...). Every analysis queued
        # on it fails at once; the first to get here replaces it, the others just use the new
        # one (stopping "the current pool" instead would kill the replacement under them).
        _stop(wait=False, only=pool)
        return await asyncio.wrap_future(_submit(_executor(), work))


def _submit(pool: ProcessPoolExecutor, work: partial) -> Future:
    """`pool.submit(work)`; a worker it starts (spawn starts them on submit, in this thread)
    does not run the parent's main module."""
    with _without_parent_main():
        return pool.submit(work)


@contextmanager
def _without_parent_main() -> Iterator[None]:
    """Hide the main module's name and path from `multiprocessing.spawn`, which reads them
    while starting a child to have the child import it again (as `__mp_main__`). Hidden for
    the `submit` call only: microseconds, or the few milliseconds of starting a worker."""
    main = sys.modules["__main__"]
    names = ("__spec__", "__file__")
    saved = {name: main.__dict__[name] for name in names if name in main.__dict__}
    with _lock:
        main.__spec__ = None  # spawn reads the attribute: it must exist
        main.__dict__.pop("__file__", None)
        try:
            yield
        finally:
            for name in names:
                main.__dict__.pop(name, None)
            main.__dict__.update(saved)


def shutdown() -> None:
    """Stop the worker processes (the next `analyse` starts new ones)."""
    _stop(wait=True)


def _stop(*, wait: bool, only: ProcessPoolExecutor | None = None) -> None:
    """Stop the current pool (or only `only`, if it still is the current one)."""
    global _pool
    with _lock:
        if only is not None and _pool is not only:
            return
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=wait, cancel_futures=True)
