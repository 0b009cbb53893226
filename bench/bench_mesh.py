"""What one mesh costs: synthesis in the emulator, and `analyse_glb` (inspection, preview PNG,
thumbnail) in the pipeline, at both output profiles; then whether analysing in a worker
process pays against a thread while the same event loop does network work.

Part 1 is CPU time (`time.process_time`), best of `--repeat`, per bundled sample picture.
Part 2 runs `--meshes` realistic analyses, `--parallel` at a time, while the event loop keeps
`--http` HTTP requests to an emulator (its own process) in flight and a ticker measures how
late the loop wakes up: with no analysis, with `asyncio.to_thread`, with `mesh_work.analyse`
(a process pool).

    python bench/bench_mesh.py [--repeat 5] [--meshes 24] [--http 16] [--parallel 1]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

from _common import ROOT, best_cpu_ms, machine, quiet, report, sample_images, table, temp_dir

STAGES = ("parse", "inspect", "render", "png", "thumbnail")


def part_one(repeat: int, folder: Path) -> tuple[str, dict[str, list[Path]]]:
    from hunyuan_assets.core import glb
    from hunyuan_assets.emulator.meshgen import image_to_glb

    rows, meshes = [], {}
    for profile in ("small", "realistic"):
        costs: dict[str, list[float]] = {k: [] for k in ("synthesis", "analyse", *STAGES)}
        faces, sizes = [], []
        meshes[profile] = []
        for picture in sample_images():
            data = picture.read_bytes()
            synthesis = partial(image_to_glb, data, profile=profile)
            costs["synthesis"].append(best_cpu_ms(synthesis, repeat))
            path = folder / f"{picture.stem}-{profile}.glb"
            path.write_bytes(synthesis())
            meshes[profile].append(path)
            scene = glb._load(path)
            rgb = glb._render(scene, 256)
            costs["analyse"].append(best_cpu_ms(lambda: glb.analyse_glb(path), repeat))  # noqa: B023
            costs["parse"].append(best_cpu_ms(lambda: glb._load(path), repeat))  # noqa: B023
            # A fresh parse for each: inspection and preview share the welding it caches.
            costs["inspect"].append(best_cpu_ms(lambda: glb._inspect(glb._load(path)), repeat))  # noqa: B023
            costs["render"].append(best_cpu_ms(lambda: glb._render(glb._load(path), 256), repeat))  # noqa: B023
            costs["png"].append(best_cpu_ms(lambda: glb._png(rgb), repeat))  # noqa: B023
            costs["thumbnail"].append(best_cpu_ms(lambda: glb._thumbnail(rgb, 192), repeat))  # noqa: B023
            faces.append(glb._inspect(scene).faces)
            sizes.append(path.stat().st_size)
        mean = {k: statistics.fmean(v) for k, v in costs.items()}
        size = statistics.fmean(sizes) / 2**20
        rows.append(
            [
                profile,
                f"{statistics.fmean(faces) / 1000:.0f}k / {size:.1f} MiB",
                f"{mean['synthesis']:.0f}",
                f"{mean['analyse']:.1f}",
                " / ".join(f"{mean[k]:.1f}" for k in STAGES),
            ]
        )
    headers = [
        "profile",
        "faces / GLB",
        "synthesis ms",
        "analyse_glb ms",
        "parse / inspect / render / png / thumbnail ms (inspect, render include a parse)",
    ]
    return table(headers, rows), meshes


async def _ticker(lags: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(0.001)
        lags.append(time.perf_counter() - started - 0.001)


async def _http_load(url: str, stop: asyncio.Event, done: list[int], in_flight: int) -> None:
    import httpx

    async with httpx.AsyncClient() as client:

        async def worker() -> None:
            while not stop.is_set():
                (await client.get(url)).raise_for_status()
                done[0] += 1

        await asyncio.gather(*(worker() for _ in range(in_flight)))


async def _mode(
    analyse: Callable[[Path], Awaitable[object]] | None,
    meshes: list[Path],
    url: str,
    http: int,
    seconds: float,
    parallel: int,
) -> dict[str, float]:
    stop, lags, done = asyncio.Event(), [], [0]
    background = [
        asyncio.create_task(_ticker(lags, stop)),
        asyncio.create_task(_http_load(url, stop, done, http)),
    ]
    await asyncio.sleep(0.5)  # connections open, loop warm
    lags.clear()
    done[0] = 0
    semaphore = asyncio.Semaphore(parallel)

    async def one(path: Path) -> None:
        async with semaphore:
            if analyse is not None:
                await analyse(path)

    started = time.perf_counter()
    if analyse is None:
        await asyncio.sleep(seconds)  # the same length of time, HTTP only
    else:
        await asyncio.gather(*(one(p) for p in meshes))
    elapsed = time.perf_counter() - started
    stop.set()
    await asyncio.gather(*background)
    lags.sort()
    return {
        "analyses_per_s": len(meshes) / elapsed,
        "http_per_s": done[0] / elapsed,
        "lag_p50": lags[len(lags) // 2] * 1000,
        "lag_p99": lags[int(len(lags) * 0.99)] * 1000,
        "elapsed": elapsed,
    }


async def part_two(meshes: list[Path], url: str, http: int, parallel: int) -> str:
    from hunyuan_assets.core import mesh_work
    from hunyuan_assets.core.glb import analyse_glb

    await mesh_work.analyse(meshes[0], preview_size=256)  # start the pool outside the timing
    modes: dict[str, Callable[[Path], Awaitable[object]]] = {
        "thread (asyncio.to_thread)": lambda p: asyncio.to_thread(analyse_glb, p),
        "process (mesh_work.analyse)": lambda p: mesh_work.analyse(p, preview_size=256),
    }
    results = {
        name: await _mode(run, meshes, url, http, 0, parallel) for name, run in modes.items()
    }
    seconds = statistics.fmean(r["elapsed"] for r in results.values())
    alone = await _mode(None, meshes, url, http, seconds, parallel)
    results = {"none (HTTP only)": alone, **results}
    mesh_work.shutdown()
    rows = [
        [
            name,
            "-" if name.startswith("none") else f"{r['analyses_per_s']:.1f}",
            f"{r['http_per_s']:.0f}",
            f"{r['lag_p50']:.1f} / {r['lag_p99']:.1f}",
        ]
        for name, r in results.items()
    ]
    headers = [
        "analysis runs in",
        "analyses/s",
        "HTTP requests/s alongside",
        "loop lag p50 / p99 ms",
    ]
    return table(headers, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--meshes", type=int, default=24)
    parser.add_argument("--http", type=int, default=16, help="HTTP requests kept in flight")
    parser.add_argument("--parallel", type=int, default=1, help="analyses at a time")
    args = parser.parse_args()
    quiet()
    with temp_dir("bench-mesh-") as tmp:
        costs, meshes = part_one(args.repeat, tmp)
        realistic = (meshes["realistic"] * args.meshes)[: args.meshes]
        command = [sys.executable, "-m", "hunyuan_assets.emulator"]
        emulator = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        try:
            assert emulator.stdout is not None
            base_url = emulator.stdout.readline().strip().split("=", 1)[1]
            url = f"{base_url}/_emulator/stats"
            pools = asyncio.run(part_two(realistic, url, args.http, args.parallel))
        finally:
            emulator.terminate()
            emulator.wait(timeout=30)
    print(
        report(
            "Per-mesh CPU: synthesis (emulator) and analyse_glb (pipeline)",
            costs,
            [f"{machine()}; CPU ms, best of {args.repeat}, mean over the bundled samples."],
        )
    )
    print(
        report(
            f"analyse_glb in a thread or a process: {args.meshes} realistic meshes, "
            f"{args.parallel} at a time",
            pools,
            [
                f"The event loop also keeps {args.http} HTTP requests in flight (to an emulator "
                "in its own process) and a 1 ms ticker running."
            ],
        )
    )


if __name__ == "__main__":
    main()
