"""The demo's event log storage against Dagster's own, event for event.

Runs `hunyuan-assets demo` once (its embedded emulator, small outputs), then stores that
run's events again, in their order, into a fresh database of each storage: Dagster's
consolidated SQLite event log (`ConsolidatedSqliteEventLogStorage`) and the demo's variant of
it (`compat.SingleProcessSqliteEventLogStorage`). Prints the CPU (`time.thread_time`) each
spends per event kind; the run's own figures depend on load, these do not much.

    python bench/bench_event_log.py [--images 96] [--repeats 2]
"""

from __future__ import annotations

import argparse
import collections
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT, machine, make_images, quiet, report, table, temp_dir

KINDS = (
    "ASSET_MATERIALIZATION",
    "ASSET_CHECK_EVALUATION",
    "ASSET_MATERIALIZATION_PLANNED",
    "ASSET_CHECK_EVALUATION_PLANNED",
)


def _demo_events(tmp: Path, count: int) -> list:
    from dagster_shared.serdes import deserialize_value

    folder, home = tmp / "images", tmp / "home"
    make_images(folder, count, salt=b"event-log")
    command = [sys.executable, "-m", "hunyuan_assets.cli", "demo", "--images", str(folder)]
    command += ["--home", str(home), "--concurrency", "16", "--latency", "0.2"]
    env = {k: v for k, v in os.environ.items() if k != "WAVESPEED_BASE_URL"}
    subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    with sqlite3.connect(home / "history" / "event_log.db") as db:
        rows = db.execute("SELECT event FROM event_logs ORDER BY id").fetchall()
    return [deserialize_value(event) for (event,) in rows]


def _store_all(storage_class, directory: Path, events: list) -> dict[str, list[float]]:
    """kind -> CPU seconds of each event's `store_event`."""
    storage = storage_class(str(directory))
    spent: dict[str, list[float]] = collections.defaultdict(list)
    try:
        for event in events:
            kind = event.dagster_event.event_type_value if event.dagster_event else "log"
            started = time.thread_time()
            storage.store_event(event)
            spent[kind].append(time.thread_time() - started)
    finally:
        storage.dispose()
    return spent


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=2, help="replays per storage, best kept")
    args = parser.parse_args(argv)
    quiet()
    from dagster._core.storage.event_log import ConsolidatedSqliteEventLogStorage

    from hunyuan_assets.integration.compat import SingleProcessSqliteEventLogStorage

    stores = {
        "dagster": ConsolidatedSqliteEventLogStorage,
        "demo": SingleProcessSqliteEventLogStorage,
    }
    with temp_dir("bench-event-log-") as tmp:
        events = _demo_events(tmp, args.images)
        best: dict[str, dict[str, float]] = {name: {} for name in stores}
        counts: dict[str, int] = {}
        for repeat in range(args.repeats):
            for name, storage_class in stores.items():  # interleaved: same load for both
                spent = _store_all(storage_class, tmp / f"{name}-{repeat}", events)
                for kind, each in spent.items():
                    counts[kind] = len(each)
                    total = sum(each)
                    best[name][kind] = min(best[name].get(kind, total), total)

    def row(kind: str, n: int, theirs: float, ours: float) -> list:
        return [
            kind,
            n,
            f"{theirs / n * 1e3:.3f}",
            f"{ours / n * 1e3:.3f}",
            f"{ours / theirs:.2f}x",
        ]

    rows = [
        row(kind, counts[kind], best["dagster"][kind], best["demo"][kind])
        for kind in KINDS
        if kind in counts
    ]
    everything = sum(best["dagster"].values()), sum(best["demo"].values())
    rows.append(row("all events", sum(counts.values()), *everything))
    body = table(
        ["event", "count", "Dagster's own ms CPU/event", "demo's ms CPU/event", "demo vs Dagster"],
        rows,
    )
    per_image = sum(best["demo"].values()) / args.images * 1e3
    notes = [
        f"The events of one `hunyuan-assets demo` run over {args.images} distinct images "
        "(embedded emulator, 0.2 s tasks), stored again in their order into a fresh database "
        f"of each storage, {args.repeats} times each, interleaved; the best total per kind.",
        f"The demo's storage spends {per_image:.1f} ms of CPU per image on its events. "
        "Dagster's own: its consolidated SQLite event log as a dagster.yaml configures it "
        "(a new SQLite connection per use, fsynced commits).",
        machine(),
    ]
    return report("The demo's event log vs Dagster's own, per event", body, notes)


if __name__ == "__main__":
    print(main())
