"""Wall time of N predictions through the asset path at max_concurrency 1, 2, 4, 8.

Each level is one single-run backfill (`materialize_images`, persistent SQLite instance) of
the same N distinct pictures into a fresh store, against a fresh emulator (so no level
profits from an earlier level's mesh cache), all at the same emulator latency. A sampler
thread reads the emulator's prediction counts to report the peak number in flight.

    python bench/bench_concurrency.py [--images 12] [--latency 1.0] [--levels 1 2 4 8]
"""

from __future__ import annotations

import argparse
import math
import threading
import time
from pathlib import Path

from _common import (
    QUIET_RUN_CONFIG,
    Timer,
    bench_pipeline,
    dagster_home,
    image_keys,
    machine,
    make_images,
    quiet,
    report,
    table,
    temp_dir,
)


class InFlightSampler:
    """Peak of created + processing predictions on an emulator, sampled every `period` s."""

    def __init__(self, emulator, period: float = 0.05) -> None:
        self.emulator = emulator
        self.period = period
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="in-flight-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            counts = self.emulator.stats()["predictions"]
            self.peak = max(self.peak, counts.get("created", 0) + counts.get("processing", 0))

    def __enter__(self) -> InFlightSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def _level(instance, tmp: Path, images: Path, concurrency: int, latency: float) -> dict:
    from hunyuan_assets.emulator import EmulatorServer
    from hunyuan_assets.integration.backfill import materialize_images

    with EmulatorServer(latency=latency) as emulator:
        pipeline = bench_pipeline(
            images, tmp / f"store-c{concurrency}", emulator.base_url, max_concurrency=concurrency
        )
        keys = image_keys(pipeline)
        with InFlightSampler(emulator) as sampler, Timer() as timer:
            results = materialize_images(instance, pipeline, keys, run_config=QUIET_RUN_CONFIG)
        stats = emulator.stats()
    if not all(r.success for r in results):
        raise SystemExit(f"the run at max_concurrency {concurrency} failed")
    return {
        "wall": timer.seconds,
        "peak": sampler.peak,
        "submissions": stats["submissions"],
        "result_requests": stats["result_requests"],
    }


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--latency", type=float, default=1.0, help="emulator seconds per task")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8])
    args = parser.parse_args(argv)
    quiet()
    n = args.images

    started = time.perf_counter()
    with temp_dir("bench-concurrency-") as tmp, dagster_home(tmp) as instance:
        images = tmp / "images"
        make_images(images, n)
        warm = tmp / "warmup"
        make_images(warm, 1, salt=b"warm")
        _level(instance, tmp / "warm", warm, 1, args.latency)  # one-off first-run costs
        results = {c: _level(instance, tmp, images, c, args.latency) for c in args.levels}
    total = time.perf_counter() - started

    base = results[args.levels[0]]["wall"]
    waves_base = math.ceil(n / args.levels[0])
    rows = []
    for c in args.levels:
        r = results[c]
        rows.append(
            [
                c,
                r["peak"],
                f"{r['wall']:.2f}",
                f"{r['wall'] / n:.2f}",
                f"{base / r['wall']:.2f}x",
                f"{waves_base / math.ceil(n / c):.2f}x",
                f"{r['result_requests'] / max(1, r['submissions']):.1f}",
            ]
        )
    body = table(
        [
            "max_concurrency",
            "peak in flight",
            "wall s",
            "s / image",
            f"speed-up vs {args.levels[0]}",
            "ideal (waves)",
            "result GETs / prediction",
        ],
        rows,
    )
    best = max(args.levels, key=lambda c: base / results[c]["wall"])
    notes = [
        f"{n} distinct images, emulator latency {args.latency:g} s, asset path "
        "(`materialize_images`, one single run per level), default polling; "
        f"{machine()}; whole benchmark {total:.0f} s.",
        f"Best: max_concurrency {best}, {base / results[best]['wall']:.1f}x faster than "
        f"max_concurrency {args.levels[0]}. Ideal = waves at the lowest level / waves at this "
        "level (ceil(N / c)); the gap is per-image work that does not overlap (GLB checks "
        "and previews on 2 cores, log and record writes, Dagster events) plus run overhead.",
        "WaveSpeed tiers cap concurrent tasks: Bronze (no top-up) 2, Silver 300, Gold 3000, "
        "Ultra 10000. Past the cap tasks queue at the provider, so on Bronze anything above "
        "max_concurrency 2 buys nothing (the emulator does not model that queue); the "
        "default is 2 for that reason.",
    ]
    text = report(f"Concurrency: {n} predictions through the asset path", body, notes)
    print(text)
    return text


if __name__ == "__main__":
    main()
