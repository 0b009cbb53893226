"""Scratch folders for downloaded meshes, and removing the ones a dead process left behind.

A mesh is downloaded into a folder of its own under the system's temporary directory, then
analysed and moved into the store; the folder is removed after. A process killed meanwhile
(kill -9, the OOM killer, a pod evicted) cannot remove it: with 300 predictions in flight and
realistic outputs that was ~1 GB left in /tmp per crash. Each folder's name carries its
process id, so a later run can tell the folders of processes that are gone and remove them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

__all__ = ["make_scratch_dir", "remove_orphaned_scratch_dirs"]

PREFIX = "hunyuan-mesh-"
#: A folder is only removed once untouched this long: a process in another pid namespace (a
#: container sharing /tmp) may look dead from here while it still uses its folder, and no
#: download + analysis of one mesh takes an hour.
ORPHANED_AFTER_SECONDS = 3600.0


def make_scratch_dir() -> Path:
    """A new, empty folder named after this process (`hunyuan-mesh-<pid>-<random>`)."""
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))


def remove_orphaned_scratch_dirs(parent: Path | None = None, *, now: float | None = None) -> int:
    """Remove the scratch folders of processes that are gone, untouched for an hour; the
    number removed. Folders of a running process (this one too) stay; so do those named
    without a process id (older versions) until they are as old."""
    root = Path(parent or tempfile.gettempdir())
    now = time.time() if now is None else now
    removed = 0
    try:
        entries = list(os.scandir(root))
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.startswith(PREFIX):
            continue
        pid = _owner(entry.name)
        if pid is not None and _alive(pid):  # this process too
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat().st_uid != os.getuid():
                continue
            if now - _last_touched(Path(entry.path)) < ORPHANED_AFTER_SECONDS:
                continue
        except OSError:  # gone meanwhile
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed += 1
    return removed


def _owner(name: str) -> int | None:
    head = name[len(PREFIX) :].split("-", 1)[0]
    return int(head) if head.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _last_touched(folder: Path) -> float:
    """The latest modification of the folder or a file in it (a download still writing)."""
    latest = folder.stat().st_mtime
    for child in folder.iterdir():
        latest = max(latest, child.lstat().st_mtime)
    return latest
