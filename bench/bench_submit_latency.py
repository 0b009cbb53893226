"""Submits over a slow link: one awaiting its answer at a time, or several, against the SDK.

On loopback a submit is answered in a few milliseconds, so sending them one at a time (the
default: every lost answer can be told apart from every other, reconciliation.py) costs
nothing there. Over the internet each answer takes a round trip and the provider's own
work; here the emulator holds every submit's answer for `--delay` seconds (a "slow" fault)
and the whole `hunyuan-assets demo` process runs with `--submits-in-flight` 1 and 8, each
against its own emulator process, next to the official SDK in a C-thread pool (which sends
all C at once) and the ideal ceil(N / C) x L. Distinct small images, so that the submits,
not the CPU, are what the modes differ in.

    python bench/bench_submit_latency.py
    python bench/bench_submit_latency.py --images 96 --delay 0.5
"""

from __future__ import annotations

import argparse
import math
import sys

import httpx
from _common import ROOT, machine, make_images, report, table, temp_dir
from bench_vs_sdk import Measured, demo_run_seconds, emulator_process, run_measured

MODES = {"demo, 1 submit in flight": 1, "demo, 8 submits in flight": 8}


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=2.0, help="seconds per prediction")
    parser.add_argument("--delay", type=float, default=0.25, help="seconds per submit answer")
    args = parser.parse_args(argv)
    n, c, latency, delay = args.images, args.concurrency, args.latency, args.delay
    ideal = math.ceil(n / c) * latency
    results: dict[str, Measured] = {}
    run_seconds: dict[str, float | None] = {}
    with temp_dir("bench-submit-latency-") as tmp:

        def measure(command: list[str]) -> Measured:
            with emulator_process(latency, "small") as (base_url, _cpu):
                slow = {"endpoint": "submit", "kind": "slow", "delay": delay, "count": -1}
                httpx.post(
                    f"{base_url}/_emulator/faults", json={"rules": [slow]}
                ).raise_for_status()
                env = {"WAVESPEED_BASE_URL": base_url}
                return run_measured(command, env, n)

        for index, (mode, in_flight) in enumerate(MODES.items()):
            folder = tmp / f"demo{index}" / "images"
            make_images(folder, n, salt=f"demo{index}".encode())
            demo = [sys.executable, "-m", "hunyuan_assets.cli", "demo", "--images", str(folder)]
            home = tmp / f"demo{index}" / "home"
            demo += ["--home", str(home), "--concurrency", str(c)]
            results[mode] = measure([*demo, "--submits-in-flight", str(in_flight)])
            run_seconds[mode] = demo_run_seconds(home)
        folder = tmp / "sdk" / "images"
        make_images(folder, n, salt=b"sdk")
        pool = [sys.executable, str(ROOT / "bench" / "_sdk_pool.py"), str(folder)]
        results["sdk pool"] = measure([*pool, str(tmp / "sdk" / "out"), "--workers", str(c)])

    sdk = results["sdk pool"]
    rows = []
    for mode, m in results.items():
        wall = f"{m.wall_s:.1f}" + ("" if m.ok else " (FAILED)")
        rows.append([mode, wall, f"{m.wall_s / ideal:.2f}x", f"{m.wall_s / sdk.wall_s:.2f}x"])
        if run := run_seconds.get(mode):
            rows.append(
                ["  its run alone", f"{run:.1f}", f"{run / ideal:.2f}x", f"{run / sdk.wall_s:.2f}x"]
            )
    rows.append(["ideal ceil(N/C) x L", f"{ideal:.1f}", "1.00x", "-"])
    body = table(["mode", "wall s", "vs ideal", "vs SDK pool"], rows)
    notes = [
        f"{n} distinct images, latency {latency:g} s, concurrency {c}, every submit answered "
        f"{delay:g} s late (the emulator's 'slow' fault), small outputs; each mode a whole "
        f"process against its own emulator process; {machine()}.",
    ]
    if delay > 0:
        notes.append(
            f"One submit at a time sends at most 1 / {delay:g} s = {1 / delay:.0f} a second: "
            f"the {n} take at least {n * delay:.0f} s whatever the concurrency."
        )
    return report(f"Submits answered {delay:g} s late: N={n}, C={c}, L={latency:g} s", body, notes)


if __name__ == "__main__":
    print(main())
