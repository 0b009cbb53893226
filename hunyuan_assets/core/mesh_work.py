"""Mesh analysis off the event loop, in worker processes.

`glb.analyse_glb` is CPU-bound numpy and Pillow work that holds the GIL for most of its
20-50 ms; in a thread it stalls every other coroutine of the process (polls, uploads,
downloads) for as long. A small pool of worker processes runs it beside them instead.

The pool is made on first use, one per process (a forked child makes its own), with the
"spawn" start method: forking a process that runs threads (Dagster's, httpx's) can copy a
held lock into the child. Spawned workers import the main module again, so a script that
uses this needs the usual `if __name__ == "__main__":` guard. Each worker costs ~0.2 s of
CPU to start and ~65 MB; the pool pays in a process that analyses more than a few meshes.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from pathlib import Path

from hunyuan_assets.core.glb import MeshAnalysis, analyse_glb

__all__ = ["analyse", "shutdown"]

# Two workers: analysis is one of several CPU-bound steps of a run, and each worker costs
# ~60 MB (numpy, Pillow) whether busy or not.
WORKERS = max(1, min(2, os.cpu_count() or 1))

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_pool_pid: int | None = None


def _executor() -> ProcessPoolExecutor:
    global _pool, _pool_pid
    with _lock:
        if _pool is None or _pool_pid != os.getpid():
            context = multiprocessing.get_context("spawn")
            _pool, _pool_pid = ProcessPoolExecutor(WORKERS, mp_context=context), os.getpid()
        return _pool


async def analyse(path: Path, *, preview_size: int, thumbnail_edge: int = 192) -> MeshAnalysis:
    """`analyse_glb(path, ...)` in a worker process, awaited without blocking the loop.

    Raises what `analyse_glb` raises (MeshError for a bad mesh). A worker that died (killed,
    out of memory) is replaced and the mesh analysed once more."""
    work = partial(
        analyse_glb, Path(path), preview_size=preview_size, thumbnail_edge=thumbnail_edge
    )
    loop = asyncio.get_running_loop()
    pool = _executor()
    try:
        return await loop.run_in_executor(pool, work)
    except BrokenProcessPool:
        # Its processes are gone (one was killed: out of memory, ...). Every analysis queued
        # on it fails at once; the first to get here replaces it, the others just use the new
        # one (stopping "the current pool" instead would kill the replacement under them).
        _stop(wait=False, only=pool)
        return await loop.run_in_executor(_executor(), work)


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
