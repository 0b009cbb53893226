"""The asset graph through `materialize`, against the emulator over loopback."""

import hashlib
import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from hunyuan_assets.core.glb import inspect_glb
from hunyuan_assets.core.log import PredictionLog
from hunyuan_assets.core.sources import SAMPLES_DIR
from hunyuan_assets.core.store import open_mesh_store
from hunyuan_assets.integration.backfill import materialize_images, materialize_prediction_log
from hunyuan_assets.integration.compat import (
    check_results_shown,
    partition_range_of,
    stale_statuses,
)
from hunyuan_assets.integration.lineage import latest_materializations
from hunyuan_assets_tests.helpers import (
    MESHES,
    PREDICTION_LOG,
    SOURCE_IMAGES,
    check_results,
    failed_partitions,
    mesh_store_of,
    partition_keys,
    pipeline_for,
)


def test_single_run_materializes_every_image_with_lineage(emulator, instance, images_dir, tmp_path):
    store_dir = tmp_path / "store"
    pipeline = pipeline_for(emulator, images_dir, store_dir)
    keys = partition_keys(pipeline)
    results = materialize_images(instance, pipeline, keys)

    assert len(results) == 1 and results[0].success
    assert emulator.stats()["submissions"] == 3
    assert emulator.stats()["uploads"] == 3
    events = latest_materializations(instance, MESHES, keys)
    sources = latest_materializations(instance, SOURCE_IMAGES, keys)
    assert set(events) == set(keys)
    store = open_mesh_store(str(store_dir))
    for key in keys:
        meta = events[key].metadata
        assert meta["input_sha256"] == sources[key].metadata["sha256"]
        assert meta["prediction_id"] and meta["model"] == "wavespeed-ai/hunyuan3d/v2.1"
        assert meta["faces"] > 1000 and meta["vertices"] > 0
        assert meta["inference_ms"] >= 0 and meta["wall_ms"] > 0 and meta["polls"] >= 1
        assert meta["has_nsfw_contents"] == [False] and meta["nsfw"] is False
        assert meta["has_base_color_texture"] is True
        assert "data:image/jpeg;base64," in meta["preview"]
        assert len(meta["preview"]) < 16_000, "the inline thumbnail stays small"
        glb = Path(meta["mesh_uri"].removeprefix("file://"))
        assert glb.is_file() and (glb.parent / "preview.png").is_file()
        assert inspect_glb(glb).faces == meta["faces"]
        # per-partition provenance: the mesh records which source version it was made from
        assert (
            events[key].tags["dagster/input_data_version/test/source_images"]
            == sources[key].metadata["sha256"]
        )
    assert not list(store_dir.rglob(".*.tmp*")), "no temporary files left in the store"
    for name in ("glb_valid", "pbr_textured", "face_budget", "not_nsfw", "closed_surface"):
        assert check_results(instance, name) == {k: True for k in keys}, name
        # ...and the UI counts them: each targets the partition's latest materialization
        shown = check_results_shown(instance, dg.AssetCheckKey(MESHES, name), keys)
        assert shown == dict.fromkeys(keys, True), name
    source_check = dg.AssetCheckKey(SOURCE_IMAGES, "image_decodes")
    assert check_results_shown(instance, source_check, keys) == dict.fromkeys(keys, True)

    log = PredictionLog(store).read()
    assert sorted(log["partition_key"]) == sorted(keys)
    assert set(log["status"]) == {"completed"}
    direct = pd.read_parquet(store_dir / "prediction_log")
    assert len(direct) == 3

    assert materialize_prediction_log(instance, pipeline).success
    summary = instance.get_latest_materialization_event(PREDICTION_LOG)
    meta = summary.asset_materialization.metadata
    assert meta["dagster/row_count"].value == 3
    assert "status: completed | 3" in meta["summary"].value


def test_a_run_leaves_its_log_rows_in_one_file(emulator, instance, images_dir, tmp_path):
    """One prediction at a time, each outcome is logged in a file of its own as it comes (3
    here, ~500 for 1,000 images); once all are reported the run merges them into one."""
    store_dir = tmp_path / "store"
    pipeline = pipeline_for(emulator, images_dir, store_dir, max_concurrency=1)
    keys = partition_keys(pipeline)
    assert materialize_images(instance, pipeline, keys)[0].success
    [merged] = (store_dir / "prediction_log").rglob("*.parquet")
    assert merged.name.startswith("compacted-")
    assert not [p for p in (store_dir / "prediction_log").rglob("*") if p.name.startswith("_")]
    log = PredictionLog(open_mesh_store(str(store_dir))).read()
    assert sorted(log["partition_key"]) == sorted(keys) and set(log["status"]) == {"completed"}


def test_a_backfill_runs_at_most_images_per_run_images_at_once(
    emulator, instance, images_dir, tmp_path
):
    """Dagster keeps every event of a step until it ends, so a backfill is split like the
    sensor's runs: 3 images at 2 per run are two runs over neighbouring ranges."""
    pipeline = pipeline_for(emulator, images_dir, tmp_path / "store")
    keys = partition_keys(pipeline)
    assert len(keys) == 3
    results = materialize_images(instance, pipeline, keys, images_per_run=2)
    assert [r.success for r in results] == [True, True]
    ranges = [partition_range_of(r.dagster_run.tags) for r in results]
    assert ranges == [(keys[0], keys[1]), (keys[2], keys[2])]
    assert set(latest_materializations(instance, MESHES, keys)) == set(keys)
    assert emulator.stats()["submissions"] == 3


def test_rerun_and_identical_pictures_never_pay_twice(emulator, instance, images_dir, tmp_path):
    shutil.copy(images_dir / "mug.png", images_dir / "mug copy.png")
    pipeline = pipeline_for(emulator, images_dir, tmp_path / "store")
    keys = partition_keys(pipeline)
    assert len(keys) == 4
    assert all(r.success for r in materialize_images(instance, pipeline, keys))
    assert emulator.stats()["submissions"] == 3  # the copy shares the original's prediction

    events = latest_materializations(instance, MESHES, keys)
    copy_key = next(k for k in keys if k.startswith("mug-copy"))
    pair = {events[copy_key].metadata["reused_from"], events["mug.png"].metadata["reused_from"]}
    assert pair in ({"", "mug.png"}, {"", copy_key})  # one made it, the other reused it
    assert events[copy_key].metadata["mesh_uri"] == events["mug.png"].metadata["mesh_uri"]

    # a second run of everything: all reused from the store, no new prediction
    assert all(r.success for r in materialize_images(instance, pipeline, keys))
    assert emulator.stats()["submissions"] == 3
    statuses = {
        k: v.metadata["status"] for k, v in latest_materializations(instance, MESHES, keys).items()
    }
    assert set(statuses.values()) == {"reused"}


def test_sharing_can_be_turned_off(emulator, instance, images_dir, tmp_path):
    shutil.copy(images_dir / "mug.png", images_dir / "mug2.png")
    pipeline = pipeline_for(emulator, images_dir, tmp_path / "store", reuse_identical_images=False)
    keys = partition_keys(pipeline)
    assert all(r.success for r in materialize_images(instance, pipeline, keys))
    assert emulator.stats()["submissions"] == 4
    events = latest_materializations(instance, MESHES, keys)
    assert events["mug2.png"].metadata["mesh_uri"] != events["mug.png"].metadata["mesh_uri"]


def test_one_bad_image_fails_alone(emulator, instance, images_dir, tmp_path):
    (images_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    shutil.copy(images_dir / "duck.png", images_dir / "doomed.png")
    (images_dir / "doomed.png").write_bytes((images_dir / "doomed.png").read_bytes() + b"x")
    emulator.configure(fail_tasks={"match": "doomed", "error": "model crashed on this input"})
    store_dir = tmp_path / "store"
    pipeline = pipeline_for(emulator, images_dir, store_dir)
    keys = partition_keys(pipeline)
    [result] = materialize_images(instance, pipeline, keys)

    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.message
    assert "broken.png" in message and "doomed.png" in message and "2 of 5" in message
    good = {"mug.png", "duck.png", "vase.jpg"}
    assert set(instance.get_materialized_partitions(MESHES)) == good
    assert failed_partitions(instance) == {"broken.png", "doomed.png"}
    assert failed_partitions(instance, SOURCE_IMAGES) == {"broken.png"}
    assert check_results(instance, "image_decodes", SOURCE_IMAGES)["broken.png"] is False
    broken_bytes = (images_dir / "broken.png").read_bytes()

    log = PredictionLog(open_mesh_store(str(store_dir))).read().set_index("partition_key")
    assert log.loc["doomed.png", "status"] == "failed"
    assert "model crashed" in log.loc["doomed.png", "error"]
    assert log.loc["doomed.png", "prediction_id"]
    assert (log.loc[sorted(good), "status"] == "completed").all()
    # the undecodable image is in the log too, identified by its bytes, never submitted
    assert log.loc["broken.png", "status"] == "failed"
    assert "broken.png" in log.loc["broken.png", "error"]
    assert log.loc["broken.png", "image_sha256"] == hashlib.sha256(broken_bytes).hexdigest()
    assert pd.isna(log.loc["broken.png", "prediction_id"])
    assert emulator.stats()["submissions"] == 4  # the undecodable image was never submitted


@pytest.mark.parametrize("policy", ["keep", "quarantine", "fail"])
def test_nsfw_policies(emulator, instance, images_dir, tmp_path, policy):
    emulator.configure(nsfw={"match": "duck"})
    store_dir = tmp_path / "store"
    pipeline = pipeline_for(emulator, images_dir, store_dir, nsfw_policy=policy)
    keys = partition_keys(pipeline)
    [result] = materialize_images(instance, pipeline, keys)

    assert result.success is (policy != "fail")
    assert check_results(instance, "not_nsfw")["duck.png"] is False
    assert check_results(instance, "not_nsfw")["mug.png"] is True
    quarantined = list((store_dir / "quarantine").rglob("mesh.glb"))
    log = PredictionLog(open_mesh_store(str(store_dir))).read().set_index("partition_key")
    assert bool(log.loc["duck.png", "nsfw"]) is True
    assert list(log.loc["duck.png", "has_nsfw_contents"]) == [True]
    if policy == "keep":
        assert not quarantined
        meta = latest_materializations(instance, MESHES, ["duck.png"])["duck.png"].metadata
        assert meta["nsfw"] is True and meta["quarantined"] is False
    else:
        assert len(quarantined) == 1, "the flagged mesh is kept under quarantine/"
        assert bool(log.loc["duck.png", "quarantined"]) is True
    if policy == "quarantine":
        meta = latest_materializations(instance, MESHES, ["duck.png"])["duck.png"].metadata
        assert meta["quarantined"] is True and "quarantine/" in meta["mesh_uri"]
    if policy == "fail":
        assert "duck.png" in failed_partitions(instance)
        assert "duck.png" not in instance.get_materialized_partitions(MESHES)
        assert log.loc["duck.png", "status"] == "failed"


def test_face_budget_check_fails_when_over_budget(emulator, instance, images_dir, tmp_path):
    pipeline = pipeline_for(emulator, images_dir, tmp_path / "store")
    keys = partition_keys(pipeline)
    # a per-run override of the pipeline's face budget, as the launchpad would send it
    config = {"ops": {"test_image_meshes": {"config": {"max_faces": 500}}}}
    assert all(r.success for r in materialize_images(instance, pipeline, keys, run_config=config))
    assert check_results(instance, "face_budget") == {k: False for k in keys}
    assert check_results(instance, "glb_valid") == {k: True for k in keys}


def test_mesh_is_stale_after_its_image_changes(emulator, instance, images_dir, tmp_path):
    pipeline = pipeline_for(emulator, images_dir, tmp_path / "store")
    keys = partition_keys(pipeline)
    assert all(r.success for r in materialize_images(instance, pipeline, keys))
    statuses = stale_statuses(instance, pipeline.assets, MESHES, keys)
    assert statuses == dict.fromkeys(keys, "FRESH")

    # same bytes re-registered: still fresh (data version = content hash, not timestamp)
    assert all(
        r.success for r in materialize_images(instance, pipeline, keys, selection=[SOURCE_IMAGES])
    )
    assert stale_statuses(instance, pipeline.assets, MESHES, ["mug.png"]) == {"mug.png": "FRESH"}

    shutil.copy(SAMPLES_DIR / "planet.png", images_dir / "mug.png")  # new content, same name
    assert all(
        r.success for r in materialize_images(instance, pipeline, keys, selection=[SOURCE_IMAGES])
    )
    statuses = stale_statuses(instance, pipeline.assets, MESHES, ["mug.png", "duck.png"])
    assert statuses == {"mug.png": "STALE", "duck.png": "FRESH"}

    assert all(r.success for r in materialize_images(instance, pipeline, ["mug.png"]))
    assert stale_statuses(instance, pipeline.assets, MESHES, ["mug.png"]) == {"mug.png": "FRESH"}
    assert emulator.stats()["submissions"] == 4


def test_s3_images_and_s3_store(emulator, instance, s3_client, s3_bucket, moto_endpoint):
    for name in ("mug.png", "vase.jpg"):
        s3_client.put_object(
            Bucket=s3_bucket, Key=f"photos/in/{name}", Body=(SAMPLES_DIR / name).read_bytes()
        )
    pipeline = pipeline_for(
        emulator,
        f"s3://{s3_bucket}/photos",
        f"s3://{s3_bucket}/meshes-store",
        s3_endpoint_url=moto_endpoint,
    )
    keys = partition_keys(pipeline)
    assert keys == ["in__mug.png", "in__vase.jpg"]
    [result] = materialize_images(instance, pipeline, keys)
    assert result.success
    assert emulator.stats()["uploads"] == 0  # presigned URLs, fetched by the API from S3
    stored = [
        o["Key"]
        for o in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="meshes-store/")["Contents"]
    ]
    assert sum(k.endswith("mesh.glb") for k in stored) == 2
    assert sum(k.endswith("preview.png") for k in stored) == 2
    assert any(k.startswith("meshes-store/prediction_log/date=") for k in stored)
    store = mesh_store_of(pipeline)
    assert sorted(PredictionLog(store).read()["partition_key"]) == keys
    events = latest_materializations(instance, MESHES, keys)
    assert events["in__mug.png"].metadata["mesh_uri"].startswith(f"s3://{s3_bucket}/meshes-store/")


def test_api_key_never_leaks(emulator, instance, images_dir, tmp_path, monkeypatch, capfd):
    secret = "ws-live-SECRET-4242424242"
    monkeypatch.setenv("WAVESPEED_API_KEY", secret)
    emulator.configure(fail_tasks={"match": "vase", "error": "boom"})
    store_dir = tmp_path / "store"
    pipeline = pipeline_for(emulator, images_dir, store_dir)
    assert isinstance(pipeline.resources["test_hunyuan3d"].api_key, dg.EnvVar)
    keys = partition_keys(pipeline)
    [result] = materialize_images(instance, pipeline, keys)
    assert not result.success  # the vase failed, so error paths ran too
    for record in instance.get_records_for_run(result.run_id).records:
        assert secret not in str(record.event_log_entry)
    captured = capfd.readouterr()
    assert secret not in captured.out + captured.err
    for path in store_dir.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


@pytest.mark.parametrize(
    ("how", "failing"),
    [
        ("garbage", {"glb_valid", "pbr_textured", "face_budget", "closed_surface"}),
        ("untextured", {"pbr_textured"}),
    ],
)
def test_mesh_checks_fail_on_a_broken_output(
    emulator, instance, images_dir, tmp_path, how, failing
):
    emulator.configure(corrupt_output={"match": "vase", "error": how})
    store_dir = tmp_path / "store"
    pipeline = pipeline_for(emulator, images_dir, store_dir)
    keys = partition_keys(pipeline)
    [result] = materialize_images(instance, pipeline, keys)
    for name in ("glb_valid", "pbr_textured", "face_budget", "not_nsfw", "closed_surface"):
        results = check_results(instance, name)
        assert results["vase.jpg"] is (name not in failing), name
        assert results["mug.png"] is True, name
    if how == "untextured":  # a valid GLB: a mesh, with its failing check
        assert result.success
        meta = latest_materializations(instance, MESHES, ["vase.jpg"])["vase.jpg"].metadata
        assert Path(meta["mesh_uri"].removeprefix("file://")).is_file()
        return
    # not a GLB: no mesh, the partition fails naming why; the paid-for output is kept
    assert not result.success and failed_partitions(instance) == {"vase.jpg"}
    assert "vase.jpg" not in latest_materializations(instance, MESHES, keys)
    log = PredictionLog(open_mesh_store(str(store_dir))).read()
    [row] = log[log["status"] == "failed"].to_dict("records")
    assert row["partition_key"] == "vase.jpg" and row["error_type"] == "MeshError"
    assert "is not a valid GLB" in row["error"] and "kept at file://" in row["error"]
    kept = row["error"].split("kept at file://", 1)[1].split(". A new run", 1)[0]
    assert Path(kept).is_file()


def test_a_dead_leftover_prediction_is_logged_when_replaced(
    emulator, instance, images_dir, tmp_path
):
    """A crashed run left a pending prediction the API no longer knows: one new submission,
    and both predictions are in the log."""
    from hunyuan_assets.client import DEFAULT_MODEL
    from hunyuan_assets.core.records import (
        PredictionRecord,
        PredictionRecords,
        now_iso,
        record_prefix,
    )

    store_dir = tmp_path / "store"
    sha = hashlib.sha256((images_dir / "mug.png").read_bytes()).hexdigest()
    leftover = PredictionRecord(
        state="pending",
        image_sha256=sha,
        model=DEFAULT_MODEL,
        partition_key="mug.png",
        run_id="crashed-run",
        updated_at=now_iso(),
        prediction_id="0" * 32,
    )
    store = open_mesh_store(str(store_dir))
    PredictionRecords(store).put(record_prefix(sha, DEFAULT_MODEL), leftover)
    pipeline = pipeline_for(emulator, images_dir, store_dir)
    assert all(r.success for r in materialize_images(instance, pipeline, ["mug.png"]))
    assert emulator.stats()["submissions"] == 1

    log = PredictionLog(store).read().sort_values("attempt")
    assert list(log["status"]) == ["failed", "completed"]
    assert log.iloc[0]["prediction_id"] == "0" * 32
    assert "superseded" in log.iloc[0]["error"]
    assert log.iloc[1]["attempt"] == 2


def test_expired_output_fails_clearly_and_the_next_run_pays_once(
    emulator, instance, images_dir, tmp_path
):
    emulator.configure(output_ttl=0)  # outputs expire the moment they complete
    store_dir = tmp_path / "store"
    pipeline = pipeline_for(emulator, images_dir, store_dir)
    [result] = materialize_images(instance, pipeline, ["mug.png"])
    assert not result.success
    log = PredictionLog(open_mesh_store(str(store_dir))).read()
    [row] = log.to_dict("records")
    # the row names the completed prediction whose output expired (NaN is truthy: check type)
    assert row["status"] == "failed" and isinstance(row["prediction_id"], str)
    assert row["submitted_at"] is not pd.NaT and row["inference_ms"] is not pd.NA
    assert "output URLs expire" in row["error"] and "is gone" in row["error"]

    emulator.configure(output_ttl=None)
    [result] = materialize_images(instance, pipeline, ["mug.png"])
    assert result.success
    assert emulator.stats()["submissions"] == 2  # exactly one new prediction
    assert (
        list(PredictionLog(open_mesh_store(str(store_dir))).read()["status"]).count("completed")
        == 1
    )


def test_a_429_storm_is_ridden_out(emulator, instance, images_dir, tmp_path):
    emulator.configure(
        rules=[
            {"endpoint": "submit", "kind": "429", "count": 4, "retry_after": 0.2},
            {"endpoint": "result", "kind": "429", "count": 6, "retry_after": 0.2},
        ]
    )
    pipeline = pipeline_for(emulator, images_dir, tmp_path / "store")
    keys = partition_keys(pipeline)
    assert all(r.success for r in materialize_images(instance, pipeline, keys))
    stats = emulator.stats()
    assert stats["submissions"] == 3 and stats["faults_injected"] == 10
