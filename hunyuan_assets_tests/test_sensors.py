"""The image sensor through Dagster: a real instance, ticks evaluated by Dagster (which checks
the requested partition keys), the add requests applied as the daemon would, and the requested
runs executed for real against the emulator (folder) or moto's S3 server (prefix)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from hunyuan_assets.core.sources import SAMPLES_DIR, ImageRef
from hunyuan_assets.integration.compat import PARTITION_NAME_TAG, runs_with_run_key
from hunyuan_assets.integration.lineage import latest_materializations
from hunyuan_assets.integration.sensors import SensorCursor, SensorLimits, plan_tick
from hunyuan_assets_tests.helpers import MESHES, Deployment, requested_keys, sha256_of


def test_folder_images_become_meshes_once_per_content(
    emulator, instance, images_dir, tmp_path, tick_log
):
    store = tmp_path / "store"
    deployment = Deployment.of(instance, emulator, images_dir, store)
    all_keys = ["duck.png", "mug.png", "vase.jpg"]

    first = deployment.tick(cursor=None)
    [add] = first.dynamic_partitions_requests
    assert add.partition_keys == all_keys
    [request] = first.run_requests
    assert request.partition_key is None  # three neighbours: one run over a partition range
    assert requested_keys(request, deployment.partitions()) == all_keys
    assert request.tags["hunyuan/trigger"] == "image_sensor"
    assert request.tags["hunyuan/images"] == "3"
    # Cursor lost before the run was made: the same batch gets the same run key (Dagster skips it).
    lost_early = deployment.tick(cursor=None)
    assert [r.run_key for r in lost_early.run_requests] == [request.run_key]
    assert not lost_early.dynamic_partitions_requests

    run = deployment.execute(request)
    assert run.success
    assert set(instance.get_materialized_partitions(MESHES)) == set(all_keys)
    meshes = latest_materializations(instance, MESHES, all_keys)
    for key in all_keys:
        mesh = Path(str(meshes[key].metadata["mesh_uri"]).removeprefix("file://"))
        assert mesh.is_file(), key
    assert emulator.stats()["submissions"] == 3

    second = deployment.tick(first.cursor)
    assert not second.run_requests and not second.dynamic_partitions_requests
    assert second.cursor == first.cursor  # nothing changed, nothing rewritten

    mug = images_dir / "mug.png"
    stat = mug.stat()
    os.utime(mug, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # touched, same bytes
    touched = deployment.tick(second.cursor)
    assert not touched.run_requests and not touched.dynamic_partitions_requests
    assert touched.cursor != second.cursor  # the new mtime is remembered: no hashing next time

    shutil.copy(SAMPLES_DIR / "planet.png", mug)  # new content under the same name
    changed = deployment.tick(touched.cursor)
    assert not changed.dynamic_partitions_requests
    [again] = changed.run_requests
    assert again.partition_key == "mug.png"
    assert again.tags[PARTITION_NAME_TAG] == "mug.png"  # resolved by Dagster
    assert again.run_key != request.run_key
    assert deployment.execute(again).success
    event = latest_materializations(instance, MESHES, ["mug.png"])["mug.png"]
    assert event.metadata["input_sha256"] == sha256_of(SAMPLES_DIR / "planet.png")
    assert emulator.stats()["submissions"] == 4

    kept = images_dir / "duck.png"
    duck_bytes = kept.read_bytes()
    kept.unlink()
    deleted = deployment.tick(changed.cursor)
    assert not deleted.run_requests and not deleted.dynamic_partitions_requests
    assert deployment.partitions() == all_keys  # the partition stays, on purpose
    assert "duck.png" in instance.get_materialized_partitions(MESHES)
    assert "left" in tick_log() and "kept on purpose: duck.png" in tick_log()

    # Cursor lost after everything was processed: nothing is requested again, because the
    # images match what source_images registered; every run key so far has its run.
    lost = deployment.tick(cursor=None)
    assert not lost.run_requests and not lost.dynamic_partitions_requests
    for key in (request.run_key, again.run_key):
        assert len(runs_with_run_key(instance, key)) == 1
    # Snapshot gone but cursor kept (store wiped): the same fallback, with a warning.
    shutil.rmtree(store / "sensor_state")
    wiped = deployment.tick(lost.cursor)
    assert not wiped.run_requests
    assert "no snapshot matches the cursor" in tick_log()

    kept.write_bytes(duck_bytes)  # put back with the same bytes: registered already
    back = deployment.tick(wiped.cursor)
    assert not back.run_requests and not back.dynamic_partitions_requests
    assert emulator.stats()["submissions"] == 4

    shutil.copy(SAMPLES_DIR / "chair.jpg", mug)  # changed again: same partition, new run key
    [third] = deployment.tick(back.cursor).run_requests
    assert third.partition_key == "mug.png"
    assert third.run_key not in (request.run_key, again.run_key)


def _write_images(folder: Path, count: int) -> list[str]:
    folder.mkdir(exist_ok=True)
    data = (SAMPLES_DIR / "mug.png").read_bytes()
    names = [f"img-{i:02d}.png" for i in range(count)]
    for i, name in enumerate(names):
        (folder / name).write_bytes(data + bytes([i]))  # distinct content
    return names


def test_new_images_beyond_the_tick_limit_wait_for_the_next_tick(emulator, instance, tmp_path):
    names = _write_images(tmp_path / "images", 5)
    deployment = Deployment.of(instance, emulator, tmp_path / "images", tmp_path / "store")
    sensor = deployment.sensor_with(SensorLimits(new_partitions_per_tick=2))

    cursor = None
    added: list[list[str]] = []
    requested: list[list[str]] = []
    run_keys = set()
    for _ in range(3):
        data = deployment.tick(cursor, sensor)
        [add] = data.dynamic_partitions_requests
        added.append(list(add.partition_keys))
        [request] = data.run_requests
        requested.append(requested_keys(request, deployment.partitions()))
        run_keys.add(request.run_key)
        cursor = data.cursor
    assert added == [names[0:2], names[2:4], names[4:5]]
    assert requested == added
    assert len(run_keys) == 3
    last = deployment.tick(cursor, sensor)
    assert not last.run_requests and not last.dynamic_partitions_requests
    assert deployment.partitions() == names


def test_runs_are_bounded_in_size_and_in_number_per_tick(emulator, instance, tmp_path):
    names = _write_images(tmp_path / "images", 5)
    deployment = Deployment.of(instance, emulator, tmp_path / "images", tmp_path / "store")
    limits = SensorLimits(images_per_run=2, run_requests_per_tick=2)
    sensor = deployment.sensor_with(limits)

    first = deployment.tick(None, sensor)
    assert first.dynamic_partitions_requests[0].partition_keys == names  # all partitions now
    batches = [requested_keys(r, names) for r in first.run_requests]
    assert batches == [names[0:2], names[2:4]]  # the fifth image waits for a run slot
    second = deployment.tick(first.cursor, sensor)
    assert [requested_keys(r, names) for r in second.run_requests] == [names[4:5]]
    assert not second.dynamic_partitions_requests
    assert not deployment.tick(second.cursor, sensor).run_requests

    # The requests are runnable as they are: run the single-image one for real.
    [single] = second.run_requests
    assert deployment.execute(single).success
    assert instance.get_materialized_partitions(MESHES) == {names[4]}


def test_hashing_stops_at_the_time_budget():
    refs = [ImageRef(f"k{i}.png", f"k{i}.png", f"file:///k{i}.png", 1, f"f{i}") for i in range(5)]
    now = iter(range(0, 1000, 10))  # every clock reading is 10 s later
    hashed = []

    def content_id(ref: ImageRef) -> str:
        hashed.append(ref.partition_key)
        return f"sha256:{ref.partition_key}"

    plan = plan_tick(
        refs,
        None,
        [],
        content_id,
        lambda keys: {},
        SensorLimits(seconds_per_tick=25),
        clock=lambda: next(now),
    )
    assert hashed == ["k0.png", "k1.png"]  # started at 0: readings 10 and 20 are in budget
    assert plan.add_partitions == hashed
    assert plan.deferred == 3 and set(plan.known) == set(hashed)


def test_cursor_from_another_version_is_treated_as_lost():
    assert SensorCursor.decode(None) is None
    assert SensorCursor.decode("eJxLy8nPBwAGdQKm") is None  # the zlib+base64 format of v1
    assert SensorCursor.decode('{"v": 2, "slot": 1}') is None
    cursor = SensorCursor(1, "ab" * 16, 7)
    assert SensorCursor.decode(cursor.encode()) == cursor


def test_s3_prefix_images(emulator, instance, s3_client, s3_bucket, moto_endpoint):
    def put(key: str, sample: str) -> None:
        data = (SAMPLES_DIR / sample).read_bytes()
        s3_client.put_object(Bucket=s3_bucket, Key=f"photos/{key}", Body=data)

    put("mug.png", "mug.png")
    put("sub/vase.jpg", "vase.jpg")
    deployment = Deployment.of(
        instance,
        emulator,
        f"s3://{s3_bucket}/photos",
        f"s3://{s3_bucket}/store",
        s3_endpoint_url=moto_endpoint,
    )
    keys = ["mug.png", "sub__vase.jpg"]

    first = deployment.tick(None)
    assert first.dynamic_partitions_requests[0].partition_keys == keys
    [request] = first.run_requests
    assert requested_keys(request, deployment.partitions()) == keys
    assert deployment.execute(request).success
    stored = [
        o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="store/")["Contents"]
    ]
    assert sum(k.endswith("/mesh.glb") for k in stored) == 2
    assert any(k.startswith("store/sensor_state/test_image_sensor/") for k in stored)

    second = deployment.tick(first.cursor)
    assert not second.run_requests and not second.dynamic_partitions_requests
    put("mug.png", "mug.png")  # uploaded again, same bytes: same ETag
    same = deployment.tick(second.cursor)
    assert not same.run_requests and same.cursor == second.cursor

    put("mug.png", "duck.png")  # new content
    changed = deployment.tick(same.cursor)
    [again] = changed.run_requests
    assert again.partition_key == "mug.png" and not changed.dynamic_partitions_requests
    assert deployment.execute(again).success
    event = latest_materializations(instance, MESHES, ["mug.png"])["mug.png"]
    assert event.metadata["input_sha256"] == sha256_of(SAMPLES_DIR / "duck.png")

    s3_client.delete_object(Bucket=s3_bucket, Key="photos/sub/vase.jpg")
    deleted = deployment.tick(changed.cursor)
    assert not deleted.run_requests and not deleted.dynamic_partitions_requests
    assert deployment.partitions() == keys
    lost = deployment.tick(None)  # cursor lost: ETags match what was registered
    assert not lost.run_requests
    assert emulator.stats()["submissions"] == 3
