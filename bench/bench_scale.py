"""Many predictions in flight in one process: the demo at N=100 and N=1,000, C=300.

WaveSpeed's Silver tier allows 300 concurrent tasks. Each size runs the whole
`hunyuan-assets demo` process (one single-run backfill) against its own emulator process,
with distinct images, and reports: wall time against the ideal ceil(N/C) x L, CPU per image
and peak RSS of the demo process (os.wait4), the most predictions the emulator saw in flight
at once, how late the emulator finished them (it keeps up when that stays near 0), and how
late the demo's event loop ran its callbacks (the run's usage observation), and, told apart
from that lag, each single callback and full garbage collection that held the loop.

    python bench/bench_scale.py --sizes 100 1000 --concurrency 300 --latency 30
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import urllib.request
from pathlib import Path

from _common import machine, make_images, report, table, temp_dir
from bench_vs_sdk import emulator_process, run_measured


def _stats(base_url: str) -> dict:
    with urllib.request.urlopen(f"{base_url}/_emulator/stats", timeout=30) as answer:
        return json.load(answer)


def _loop_lag(home) -> dict:
    """The event-loop lag the demo's meshes run recorded on its usage observation."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        found = instance.fetch_observations(dg.AssetKey(["demo", "meshes"]), limit=1).records
        if not found or found[0].asset_observation is None:
            return {}
        meta = found[0].asset_observation.metadata
        return {k: v.value for k, v in meta.items() if k.startswith("event_loop_lag")}


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--concurrency", type=int, default=300)
    parser.add_argument("--latency", type=float, default=30.0)
    parser.add_argument("--profile", default="small")
    args = parser.parse_args(argv)
    c, latency = args.concurrency, args.latency
    rows = []
    with temp_dir("bench-scale-") as tmp:
        for n in args.sizes:
            folder, home = tmp / f"n{n}" / "images", tmp / f"n{n}" / "home"
            make_images(folder, n, salt=f"scale{n}".encode())
            with emulator_process(latency, args.profile) as (base_url, _emulator_cpu):
                command = [sys.executable, str(Path(__file__).with_name("_timed_callbacks.py"))]
                command += ["demo", "--images", str(folder), "--home", str(home)]
                command += ["--concurrency", str(c)]
                timed = tmp / f"n{n}" / "callbacks.json"
                env = {"WAVESPEED_BASE_URL": base_url, "TIMED_CALLBACKS_OUT": str(timed)}
                measured = run_measured(command, env, n)
                emulator = _stats(base_url)
            calls = json.loads(timed.read_text()) if timed.exists() else {}
            ideal = math.ceil(n / c) * latency
            lag = _loop_lag(home)
            late = emulator.get("late_ms") or {}
            rows.append(
                [
                    str(n),
                    f"{measured.wall_s:.1f}" + ("" if measured.ok else " (FAILED)"),
                    f"{ideal:.0f}",
                    f"{measured.wall_s / ideal:.2f}x",
                    f"{1000 * measured.cpu_s / n:.0f}",
                    f"{measured.peak_rss_mb:.0f}",
                    str(emulator.get("max_in_flight", "?")),
                    f"{late.get('p95')}/{late.get('max')}",
                    "{}/{}".format(
                        lag.get("event_loop_lag_p99_ms", "?"), lag.get("event_loop_lag_max_ms", "?")
                    ),
                    "{} of {}, longest {}".format(
                        calls.get("over_50_ms", "?"),
                        calls.get("count", "?"),
                        calls.get("longest_ms", "?"),
                    ),
                    "{}, longest {}".format(
                        calls.get("full_collections", "?"),
                        calls.get("longest_full_collection_ms", "?"),
                    ),
                ]
            )
    body = table(
        [
            "images",
            "wall s",
            "ideal s",
            "vs ideal",
            "CPU ms/image",
            "peak RSS MB",
            "most in flight",
            "emulator late p95/max ms",
            "loop lag p99/max ms",
            "callbacks > 50 ms (longest ms)",
            "full GCs while looping (longest ms)",
        ],
        rows,
    )
    notes = [
        f"C={c}, L={latency:g} s, emulator output profile '{args.profile}', the demo and the "
        f"emulator each a process of their own; {machine()}.",
        "Loop lag: how late a 50 ms sleep of the loop wakes (a wave of ready callbacks counts "
        "too); callbacks: each single one timed (bench/_timed_callbacks.py), i.e. what held "
        "the loop; full GCs stop every thread, the loop's too.",
    ]
    return report(f"C={c} in one process: N={', '.join(map(str, args.sizes))}", body, notes)


if __name__ == "__main__":
    print(main())
