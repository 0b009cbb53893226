"""One single-run backfill over N images vs one Dagster run per image.

Both modes materialize `source_images` + `meshes` for the same number of distinct pictures
through `materialize_images` (in-process runs, a persistent SQLite instance in a temporary
DAGSTER_HOME), against the in-process emulator at the same latency, with the shipping
pipeline defaults (`build_mesh_pipeline("bench", ...)`: max_concurrency 2, adaptive polling
from 2 s).
Each mode has its own store and its own salted copies of the images, so neither reuses a
mesh (ours or the emulator's cache). A one-image warm-up run first pays the one-off
import/first-run costs for both.

"Dagster overhead" is the wall time outside the `image_meshes` step (run launch, event
writes, teardown), read from the run's STEP_START / STEP_SUCCESS|FAILURE event timestamps.
Every mode runs the same pipeline (`bench`) with its own images and store.

    python bench/bench_runs.py [--images 12] [--latency 0.5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from _common import (
    QUIET_RUN_CONFIG,
    Timer,
    bench_pipeline,
    dagster_home,
    image_keys,
    machine,
    make_images,
    prediction_log_of,
    quiet,
    report,
    table,
    temp_dir,
)

STEP_END_EVENTS = ("STEP_SUCCESS", "STEP_FAILURE")


@dataclass
class ModeResult:
    name: str
    runs: int
    ok: bool
    wall_s: float
    step_s: float
    submissions: int
    result_requests: int
    prediction_wall_ms: list[int]
    events: int = 0
    total_overhead_s: float = 0.0

    @property
    def overhead_s(self) -> float:
        """Wall time outside the steps: run launch, planning, run-end events."""
        return max(0.0, self.wall_s - self.step_s)


def _step_seconds(instance, run_id: str) -> float:
    """Seconds spent inside steps of one run (STEP_START -> STEP_SUCCESS/FAILURE)."""
    starts: dict[str, float] = {}
    total = 0.0
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = entry.timestamp
        elif event.event_type_value in STEP_END_EVENTS and event.step_key in starts:
            total += entry.timestamp - starts.pop(event.step_key)
    return total


def _run_mode(name, instance, emulator, tmp: Path, count: int, per_image: bool) -> ModeResult:
    from hunyuan_assets.integration.backfill import materialize_images

    folder = tmp / name / "images"
    make_images(folder, count, salt=name.encode())
    pipeline = bench_pipeline(folder, tmp / name / "store", emulator.base_url)
    keys = image_keys(pipeline)
    before = emulator.stats()
    results = []
    with Timer() as timer:
        if per_image:
            for key in keys:
                results += materialize_images(
                    instance, pipeline, [key], run_config=QUIET_RUN_CONFIG
                )
        else:
            results += materialize_images(instance, pipeline, keys, run_config=QUIET_RUN_CONFIG)
    after = emulator.stats()
    log = prediction_log_of(pipeline).read()
    return ModeResult(
        name=name,
        runs=len(results),
        ok=all(r.success for r in results),
        wall_s=timer.seconds,
        step_s=sum(_step_seconds(instance, r.run_id) for r in results),
        submissions=after["submissions"] - before["submissions"],
        result_requests=after["result_requests"] - before["result_requests"],
        prediction_wall_ms=[int(v) for v in log["wall_ms"].dropna()],
        events=sum(len(instance.all_logs(r.run_id)) for r in results),
    )


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--latency", type=float, default=0.5, help="emulator seconds per task")
    args = parser.parse_args(argv)
    quiet()
    from hunyuan_assets.emulator import EmulatorServer

    with (
        temp_dir("bench-runs-") as tmp,
        dagster_home(tmp) as instance,
        EmulatorServer(latency=args.latency) as emulator,
    ):
        started = time.perf_counter()
        warm = _run_mode("warmup", instance, emulator, tmp, 1, per_image=False)
        single = _run_mode("single-run", instance, emulator, tmp, args.images, per_image=False)
        per_image = _run_mode("run-per-image", instance, emulator, tmp, args.images, per_image=True)
        total = time.perf_counter() - started
    if not (warm.ok and single.ok and per_image.ok):
        raise SystemExit("a benchmark run failed; the figures would be meaningless")

    n = args.images
    rows = []
    for mode, concurrency in ((single, 2), (per_image, 1)):
        # The time the predictions alone need with this many in flight (client-observed
        # submit -> completed); everything else is overhead (ours and Dagster's).
        bound = sum(mode.prediction_wall_ms) / 1000 / concurrency
        overhead = max(0.0, mode.wall_s - bound)
        rows.append(
            [
                mode.name,
                mode.runs,
                f"{mode.wall_s:.2f}",
                f"{mode.wall_s / n * 1000:.0f}",
                f"{bound:.2f}",
                f"{overhead / n * 1000:.0f}",
                f"{mode.overhead_s / mode.runs * 1000:.0f}",
                f"{statistics.median(mode.prediction_wall_ms) / 1000:.2f}",
                f"{mode.result_requests / max(1, mode.submissions):.1f}",
                f"{mode.events / n:.1f}",
            ]
        )
        mode.total_overhead_s = overhead
    body = table(
        [
            "mode",
            "runs",
            "wall s",
            "ms / image",
            "prediction-bound s",
            "overhead ms / image",
            "run start+end ms / run",
            "median prediction s",
            "result GETs / prediction",
            "Dagster events / image",
        ],
        rows,
    )
    ratio = per_image.wall_s / single.wall_s
    overhead_ratio = per_image.total_overhead_s / max(1e-9, single.total_overhead_s)
    summary = table(
        ["comparison", "ratio"],
        [
            [f"single run over {n} images vs one run per image (wall)", f"{ratio:.1f}x faster"],
            ["overhead per image, one run per image vs single run", f"{overhead_ratio:.1f}x more"],
        ],
    )
    notes = [
        f"{n} distinct images, emulator latency {args.latency:g} s, max_concurrency 2 "
        "(default), default polling; persistent SQLite instance; console log level WARNING; "
        f"{machine()}; whole benchmark {total:.0f} s.",
        "Per-image runs cannot overlap predictions (one image per run, runs in sequence), so "
        "the wall ratio is run overhead plus lost concurrency. Prediction-bound s = sum of "
        "client-observed prediction times / predictions in flight (2 in one run, 1 per-image); "
        "overhead = wall - that (uploads, downloads, GLB checks and previews, log and record "
        "writes, Dagster events and run launch). Run start+end = wall time outside the "
        "`bench_image_meshes` step, from the run's event timestamps.",
        "Median prediction s is the client-observed submit-to-completed time: it is set by the "
        "poll schedule (first poll at once, then after 2 s), not by the emulator's latency.",
    ]
    text = report("Single-run backfill vs one run per image", body + "\n\n" + summary, notes)
    print(text)
    return text


if __name__ == "__main__":
    main()
