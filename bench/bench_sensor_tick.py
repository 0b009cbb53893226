"""How long one image-sensor tick takes over 10,000 images in a folder, and Dagster's share.

N (10,000) distinct pictures (the bundled samples, each with 4 bytes appended) in one folder,
a temporary SQLite instance and the shipping pipeline (`build_mesh_pipeline("bench", ...)`,
sensor limits as shipped). Every tick is evaluated by Dagster itself,
`SensorDefinition.evaluate_tick`, which is what the code server runs under the 60 s deadline
(it also resolves and checks the run requests' partition keys), and its add requests are then
applied by the sensor daemon's own code (`compat.apply_dynamic_partitions_requests`), which
asks `has_dynamic_partition` once per key before adding (in the daemon, outside the 60 s).

Phases, each timed:
  first ticks     until every image is a partition (`new_partitions_per_tick` per tick)
  steady          nothing changed
  touched+changed 100 files touched (same bytes) and 10 rewritten with new content
  cursor lost     no cursor, `--registered` images registered by `source_images` (written to
                  the mesh store first, as its runs keep them): the fallback compares with what
                  was registered and requests the rest again
  no limit        a fresh instance, all N in one tick: sensor + daemon add, for comparison
  daemon          a fresh instance, the first tick through the real sensor daemon iteration
                  (`compat.run_sensor_daemon_once`: the project's code location, HUNYUAN_NAME=
                  bench, in a gRPC code server; runs created and queued, never executed)

    python bench/bench_sensor_tick.py [--images 10000] [--registered 2000] [--no-daemon]
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import statistics
import sys
from pathlib import Path

import dagster as dg
from _common import (
    BENCH_PIPELINE,
    ROOT,
    Timer,
    bench_pipeline,
    machine,
    quiet,
    report,
    sample_images,
    table,
    temp_dir,
)

# hunyuan_assets after _common, which puts this checkout on sys.path
from hunyuan_assets.core.registered_images import RegisteredImages
from hunyuan_assets.core.registration import Registration
from hunyuan_assets.core.sources import ImageInfo
from hunyuan_assets.integration.compat import (
    apply_dynamic_partitions_requests,
    instance_with_recording_launcher,
    instigator_ticks,
    run_sensor_daemon_once,
)
from hunyuan_assets.integration.sensors import SensorCursor, SensorLimits, build_image_sensor

NO_API = "http://127.0.0.1:9"  # ticks never call the API


def make_pictures(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True)
    samples = [p.read_bytes() for p in sample_images()]
    names = [p.name for p in sample_images()]
    paths = []
    for i in range(count):
        path = folder / f"{i:05d}-{names[i % len(names)]}"
        path.write_bytes(samples[i % len(samples)] + i.to_bytes(4, "big"))
        paths.append(path)
    return paths


class Ticker:
    def __init__(self, instance: dg.DagsterInstance, defs: dg.Definitions, sensor) -> None:
        self.instance, self.defs, self.sensor = instance, defs, sensor

    def tick(self, cursor: str | None) -> tuple[object, float, float]:
        """(tick data, seconds evaluating, seconds the daemon spends adding partitions)."""
        with dg.build_sensor_context(
            instance=self.instance,
            instance_ref=self.instance.get_ref(),
            cursor=cursor,
            resources=dict(self.defs.resources or {}),
            definitions=self.defs,
        ) as context:
            with Timer() as evaluating:
                data = self.sensor.evaluate_tick(context)
        with Timer() as adding:
            apply_dynamic_partitions_requests(self.instance, data.dynamic_partitions_requests)
        return data, evaluating.seconds, adding.seconds


def keys_added(data) -> int:
    return sum(
        len(r.partition_keys)
        for r in data.dynamic_partitions_requests
        if isinstance(r, dg.AddDynamicPartitionsRequest)
    )


def register_all(instance: dg.DagsterInstance, pipeline, count: int) -> float:
    """Keep a registration per image in the mesh store, as a source_images run does (sha256,
    fingerprint; the sensor reads nothing else of it). Dimensions are not decoded (0 x 0)."""
    settings = pipeline.settings
    keys = set(instance.get_dynamic_partitions(settings.partitions)[:count])
    source = pipeline.resources[settings.images_resource].open()
    store = pipeline.resources[settings.mesh_store_resource].open()
    registry = RegisteredImages(store, settings.name)
    with Timer() as timer:
        for ref in source.list_images():
            if ref.partition_key not in keys:
                continue
            data = source.read_bytes(ref)
            info = ImageInfo(hashlib.sha256(data).hexdigest(), len(data), 0, 0, "PNG")
            registry.put(Registration(ref, info=info, image_url="https://not-used.invalid/"))
    return timer.seconds


def v1_cursor_bytes(known: dict) -> int:
    """Size of the map kept in the cursor itself (the lead's first format: zlib + base64)."""
    import base64
    import json
    import zlib

    raw = json.dumps({"v": 1, "known": known}, separators=(",", ":")).encode()
    return len(base64.b64encode(zlib.compress(raw, 6)))


def through_daemon(tmp: Path, folder: Path) -> list[list[str]]:
    """The first tick through Dagster's sensor daemon, the sensor in a gRPC code server."""
    os.environ.update(
        HUNYUAN_NAME=BENCH_PIPELINE,
        HUNYUAN_IMAGES=str(folder),
        HUNYUAN_STORE=str(tmp / "daemon_store"),
        WAVESPEED_BASE_URL=NO_API,
    )
    for name in ("dagster.daemon", "dagster.code_server"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with instance_with_recording_launcher() as instance:
        with Timer() as iteration:
            run_sensor_daemon_once(instance, "hunyuan_assets.definitions", str(ROOT))
        [tick] = instigator_ticks(instance, f"{BENCH_PIPELINE}_image_sensor")
        runs = instance.get_run_records()
        partitions = len(instance.get_dynamic_partitions(f"{BENCH_PIPELINE}_images"))
        # The run row is written before its planned events (one per asset and partition).
        run_created = min(r.create_timestamp.timestamp() for r in runs) if runs else tick.timestamp
        return [
            [
                "daemon: first tick, one iteration",
                f"{iteration.seconds:.2f}",
                f"{tick.status}: +{partitions} partitions, {len(runs)} run(s); tick start "
                f"-> run row {run_created - tick.timestamp:.1f} s (evaluation over gRPC + adds), "
                f"-> tick end {tick.end_timestamp - run_created:.1f} s (planned events + queueing)",
            ]
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument(
        "--registered",
        type=int,
        default=2000,
        help="images registered (kept in the mesh store, as source_images runs keep them) "
        "before the cursor-lost tick; the others are requested again",
    )
    parser.add_argument(
        "--no-daemon", action="store_true", help="skip the tick through the sensor daemon"
    )
    args = parser.parse_args()
    quiet()
    count = args.images
    registered = min(count, args.registered)
    limits = SensorLimits()
    rows: list[list[str]] = []

    with temp_dir("bench-sensor-") as tmp:
        folder = tmp / "images"
        with Timer() as writing:
            paths = make_pictures(folder, count)
        size_mb = sum(p.stat().st_size for p in paths) / 2**20
        store = tmp / "store"
        pipeline = bench_pipeline(folder, store, NO_API)
        partitions = pipeline.settings.partitions

        with dg.instance_for_test() as instance:
            ticker = Ticker(instance, pipeline.definitions, pipeline.sensors[0])
            cursor = None
            tick_no = 0
            while len(instance.get_dynamic_partitions(partitions)) < count:
                tick_no += 1
                data, seconds, adding = ticker.tick(cursor)
                cursor = data.cursor
                rows.append(
                    [
                        f"first ticks: tick {tick_no}",
                        f"{seconds:.2f}",
                        f"+{keys_added(data)} partitions, {len(data.run_requests)} run(s); "
                        f"daemon adds them in {adding:.2f} s",
                    ]
                )
            steady = []
            for _ in range(5):
                data, seconds, _ = ticker.tick(cursor)
                assert not data.run_requests and data.cursor == cursor
                steady.append(seconds)
            rows.append(
                [
                    "steady: nothing changed (median of 5)",
                    f"{statistics.median(steady):.2f}",
                    f"min {min(steady):.2f}, max {max(steady):.2f}; no run, cursor unchanged",
                ]
            )

            for path in paths[:100]:
                stat = path.stat()
                os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
            for i, path in enumerate(paths[500:5000:450]):
                path.write_bytes(path.read_bytes() + b"changed" + bytes([i]))
            data, seconds, _ = ticker.tick(cursor)
            cursor = data.cursor
            changed = len(data.run_requests)
            rows.append(
                [
                    "100 touched + 10 changed",
                    f"{seconds:.2f}",
                    f"{changed} run(s), one per changed image (partition keys checked by Dagster)",
                ]
            )
            data, seconds, _ = ticker.tick(cursor)
            rows.append(["steady again", f"{seconds:.2f}", f"{len(data.run_requests)} run(s)"])

            cursor_obj = SensorCursor.decode(cursor)
            snapshot = store / "sensor_state" / pipeline.sensors[0].name
            snapshot_bytes = sum(p.stat().st_size for p in snapshot.rglob("slot-*.json.gz")) // 2
            full_known = _read_known(snapshot, cursor_obj)
            report_seconds = register_all(instance, pipeline, registered)
            data, seconds, _ = ticker.tick(None)
            rows.append(
                [
                    f"cursor lost, {registered} registered",
                    f"{seconds:.2f}",
                    f"{len(data.run_requests)} run(s) for {count - registered} unregistered "
                    f"image(s) (keeping the registrations took {report_seconds:.1f} s)",
                ]
            )

        with dg.instance_for_test() as instance:
            pipeline2 = bench_pipeline(folder, tmp / "store2", NO_API)
            unlimited = build_image_sensor(
                pipeline2.settings,
                pipeline2.jobs.meshes,
                SensorLimits(new_partitions_per_tick=count, images_per_run=count),
            )
            data, seconds, adding = Ticker(instance, pipeline2.definitions, unlimited).tick(None)
            rows.append(
                [
                    f"no limit: all {count} in one tick",
                    f"{seconds:.2f}",
                    f"+{keys_added(data)} partitions; the daemon's has_dynamic_partition "
                    f"checks + add take {adding:.2f} s ({adding / count * 1000:.2f} ms/key)",
                ]
            )

        if not args.no_daemon:
            rows += through_daemon(tmp, folder)

    notes = [
        f"{count} images, {size_mb:.0f} MB in one folder (written in {writing.seconds:.1f} s); "
        f"shipped limits: {limits.new_partitions_per_tick} new partitions per tick, "
        f"{limits.images_per_run} images per run, hashing budget {limits.seconds_per_tick:.0f} s",
        "seconds = `evaluate_tick` (sensor + Dagster's resolution of its run requests), the part "
        "that must fit in Dagster's 60 s sensor deadline; the daemon's add time is outside it",
        f"cursor: {len(cursor or '')} bytes (stored in every tick row); the map of "
        f"{cursor_obj.images if cursor_obj else 0} images lives in the mesh store "
        f"({snapshot_bytes / 1024:.0f} KB gzip'd); kept in the cursor itself (zlib+base64) it "
        f"would be {v1_cursor_bytes(full_known) / 1024:.0f} KB per tick row",
        machine(),
    ]
    print(
        report("Image sensor tick over a folder", table(["phase", "seconds", "what"], rows), notes)
    )


def _read_known(snapshot: Path, cursor: SensorCursor | None) -> dict:
    import gzip
    import json

    if cursor is None:
        return {}
    [path] = snapshot.rglob(f"slot-{cursor.slot}.json.gz")
    return json.loads(gzip.decompress(path.read_bytes()))["known"]


if __name__ == "__main__":
    sys.exit(main())
