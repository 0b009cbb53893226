"""Turn N distinct images into stored meshes: us against what a team would otherwise write.

Every mode is a whole process of its own (interpreter start and imports included), measured
from outside with `os.wait4` (wall time, user + system CPU, peak RSS), against a fresh
emulator process of its own on loopback (latency L, no jitter), with its own copies of the
images (distinct bytes, so nothing is deduplicated):
  - demo:           `hunyuan-assets demo` (one single-run backfill over all partitions,
                    checks, previews, parquet log, Dagster events in a SQLite instance);
  - backfill:       the same run's own duration (run start -> end, from the run record);
  - sdk pool:       the official `wavespeed` SDK in a C-thread pool: upload + run (polls every
                    1 s) + download per image (bench/_sdk_pool.py);
  - sdk sequential: the same with one thread, on a subset, extrapolated to N;
  - run per image:  one Dagster run per partition, one after another, on a subset,
                    extrapolated to N (bench/_per_partition.py);
  - ideal:          ceil(N / C) x L, the provider's own limit.

    python bench/bench_vs_sdk.py                      # the three scenarios below
    python bench/bench_vs_sdk.py --scenarios 384:2:32:realistic
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import psutil
from _common import ROOT, machine, make_images, report, table, temp_dir


@dataclass(frozen=True)
class Measured:
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    images: int
    ok: bool
    emulator_cpu_s: float = 0.0  # its synthesis runs on the same cores

    def busy(self) -> float:
        """How much of the machine both processes used over the mode's wall time: near 100%,
        the mode is CPU-bound and only less CPU per image makes it faster."""
        return (self.cpu_s + self.emulator_cpu_s) / (self.wall_s * (os.cpu_count() or 1))


def run_measured(command: list[str], env: dict[str, str], images: int) -> Measured:
    started = time.perf_counter()
    proc = subprocess.Popen(
        command, env={**os.environ, **env}, cwd=ROOT, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    ok = os.waitstatus_to_exitcode(status) == 0
    if not ok:
        print(f"{command[:3]} failed:\n{stderr[-3000:]}", file=sys.stderr)
    cpu = usage.ru_utime + usage.ru_stime
    return Measured(wall, cpu, usage.ru_maxrss / 1024, images, ok)


@contextmanager
def emulator_process(latency: float, profile: str):
    """(base URL, a callable giving the emulator's CPU seconds so far)."""
    command = [sys.executable, "-m", "hunyuan_assets.emulator", "--port", "0"]
    command += ["--latency", str(latency)]
    if profile != "small":
        command += ["--output-profile", profile]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("WAVESPEED_BASE_URL="):
            raise RuntimeError(f"the emulator did not start: {line!r}")
        process = psutil.Process(proc.pid)
        yield line.strip().split("=", 1)[1], lambda: _cpu_with_children(process)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _cpu_with_children(process: psutil.Process) -> float:
    """The emulator's CPU seconds, its mesh-synthesis worker processes' included."""
    total = sum(process.cpu_times()[:2])
    for child in process.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return total


def demo_run_seconds(home: Path) -> float | None:
    """Start -> end of the demo's meshes run (the single-run backfill), from its run record."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        durations = [
            record.end_time - record.start_time
            for record in instance.get_run_records()
            if record.start_time and record.end_time
        ]
    # The demo makes two runs: the meshes backfill, then the (short) prediction_log one.
    return max(durations) if durations else None


def demo_cycle(home: Path, latency: float, c: int) -> str | None:
    """Where a slot's cycle beyond L goes, from the demo's prediction log alone: a task is
    noticed `wall_ms - L` after its submit was sent (the submit's round trip, the provider's
    own lateness and our polling), and the freed slot then stays idle until the next submit
    is sent (the k-th submit's slot is the one the (k - C)-th completion freed)."""
    from hunyuan_assets.core.log import PredictionLog
    from hunyuan_assets.core.store import LocalMeshStore

    log = PredictionLog(LocalMeshStore(home / "hunyuan_store")).read()  # the demo's default store
    done = log[log.status == "completed"]
    sent = done.submitted_at.sort_values().reset_index(drop=True)
    noticed = done.completed_at.sort_values().reset_index(drop=True)
    idle = [(sent[k] - noticed[k - c]).total_seconds() for k in range(c, len(sent))]
    if not idle:
        return None
    late = done.wall_ms.mean() / 1000 - latency
    return (
        f"Demo cycle beyond L (prediction log): noticed {late:.2f} s after L on average; a "
        f"freed slot idle {sum(idle) / len(idle):.2f} s before its next submit is sent."
    )


# The targets: 96 images at L=3 s, C=16 (<= 1.5x ideal); 384 at L=2 s, C=32
# (<= 1.0x the SDK pool); the single-run backfill at N=200 (<= 1.15x ideal). Realistic
# outputs (~40k faces, 2048 px textures) where our per-image cost matters most.
# 384 at L=2 s is issue 9's target; at L=2.5 s the SDK's fixed 1 s polls no longer land
# right at the completion, as they do for any whole number of seconds (real tasks vary).
DEFAULT_SCENARIOS = "96:3:16:small,384:2:32:realistic,384:2.5:32:realistic,200:3:32:realistic"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenarios",
        default=DEFAULT_SCENARIOS,
        help="comma-separated N:L:C[:profile]; the slow modes run in the first one only",
    )
    parser.add_argument("--subset", type=int, default=8, help="images for the slow modes")
    parser.add_argument("--skip", nargs="*", default=[], help="modes to leave out")
    args = parser.parse_args(argv)
    sections = []
    for index, spec in enumerate(args.scenarios.split(",")):
        n, latency, c, *profile = spec.split(":")
        skip = list(args.skip) + ([] if index == 0 else ["sdk_sequential", "run_per_image"])
        sections.append(
            scenario(int(n), float(latency), int(c), profile[0] if profile else "small",
                     args.subset, skip)
        )  # fmt: skip
    return "\n".join(sections)


def scenario(n: int, latency: float, c: int, profile: str, subset: int, skip: list[str]) -> str:
    ideal = math.ceil(n / c) * latency
    results: dict[str, Measured] = {}
    backfill_s = cycle = None
    with temp_dir("bench-vs-sdk-") as tmp:

        def images(mode: str, count: int) -> Path:
            folder = tmp / mode / "images"
            make_images(folder, count, salt=mode.encode())
            return folder

        def measure(mode: str, count: int, command: list[str]) -> Measured:
            with emulator_process(latency, profile) as (base_url, emulator_cpu):
                env = {"WAVESPEED_BASE_URL": base_url, "DAGSTER_HOME": str(tmp / mode)}
                before = emulator_cpu()  # its start-up is not the mode's
                measured = run_measured(command, env, count)
                return replace(measured, emulator_cpu_s=emulator_cpu() - before)

        if "demo" not in skip:
            folder, home = images("demo", n), tmp / "demo" / "home"
            demo = [sys.executable, "-m", "hunyuan_assets.cli", "demo", "--images", str(folder)]
            demo += ["--home", str(home), "--concurrency", str(c)]
            results["demo"] = measure("demo", n, demo)
            backfill_s = demo_run_seconds(home)
            cycle = demo_cycle(home, latency, c)
        if "sdk_pool" not in skip:
            folder = images("sdk_pool", n)
            pool = [sys.executable, str(ROOT / "bench" / "_sdk_pool.py"), str(folder)]
            pool += [str(tmp / "sdk_pool" / "out"), "--workers", str(c)]
            results["sdk_pool"] = measure("sdk_pool", n, pool)
        k = min(subset, n)
        if "sdk_sequential" not in skip:
            folder = images("sdk_sequential", k)
            seq = [sys.executable, str(ROOT / "bench" / "_sdk_pool.py"), str(folder)]
            seq += [str(tmp / "sdk_sequential" / "out"), "--workers", "1"]
            results["sdk_sequential"] = measure("sdk_sequential", k, seq)
        if "run_per_image" not in skip:
            folder = images("run_per_image", k)
            per = [sys.executable, str(ROOT / "bench" / "_per_partition.py"), str(folder)]
            per += [str(tmp / "run_per_image" / "home"), "--concurrency", str(c)]
            results["run_per_image"] = measure("run_per_image", k, per)

    def scaled(m: Measured) -> float:
        return m.wall_s * n / m.images  # the subset modes are linear in the image count

    sdk = results.get("sdk_pool")
    rows = []
    for mode, m in results.items():
        wall = scaled(m)
        label = mode.replace("_", " ") + (
            "" if m.images == n else f" ({m.images}, x{n / m.images:g})"
        )
        rows.append(
            [
                label,
                f"{wall:.1f}" + ("" if m.ok else " (FAILED)"),
                f"{wall / ideal:.2f}x",
                f"{wall / sdk.wall_s:.2f}x" if sdk else "-",
                f"{1000 * m.cpu_s / m.images:.0f}",
                f"{m.peak_rss_mb:.0f}",
                f"{1000 * m.emulator_cpu_s / m.images:.0f}",
                f"{100 * m.busy():.0f}%",
            ]
        )
        if mode == "demo" and backfill_s:
            rows.append(
                ["backfill (the demo's run)", f"{backfill_s:.1f}", f"{backfill_s / ideal:.2f}x",
                 f"{backfill_s / sdk.wall_s:.2f}x" if sdk else "-", "-", "-", "-", "-"]
            )  # fmt: skip
    rows.append(["ideal ceil(N/C) x L", f"{ideal:.1f}", "1.00x", "-", "-", "-", "-", "-"])
    headers = ["mode", "wall s", "vs ideal", "vs SDK pool", "CPU ms/image", "peak RSS MB"]
    headers += ["emulator CPU ms/image", "machine busy"]
    body = table(headers, rows)
    notes = [
        f"{n} distinct images, latency {latency:g} s, concurrency {c}, emulator output profile "
        f"'{profile}', each mode a whole process against its own emulator process; "
        f"{machine()}.",
        "CPU and peak RSS are the measured process's own (the emulator is another process, "
        "its CPU in its own column); machine busy = both processes' CPU / (wall x "
        f"{os.cpu_count()} cores).",
    ]
    if cycle:
        notes.append(cycle)
    return report(f"N={n} images, L={latency:g} s, C={c}: us vs the SDK", body, notes)


if __name__ == "__main__":
    print(main())
