"""The schedules through Dagster: ticks evaluated against a real instance, the requested runs
executed for real against the emulator, and the compaction job run on a real parquet log."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pandas as pd

from hunyuan_assets.core.log import PredictionLog, PredictionLogRow
from hunyuan_assets.core.sources import SAMPLES_DIR
from hunyuan_assets.core.store import open_mesh_store
from hunyuan_assets.integration import schedules
from hunyuan_assets.integration.backfill import materialize_images
from hunyuan_assets.integration.compat import PARTITION_NAME_TAG
from hunyuan_assets.integration.factory import build_mesh_pipeline
from hunyuan_assets.integration.jobs import COMPACTION_POOL
from hunyuan_assets.integration.lineage import latest_materializations
from hunyuan_assets_tests.helpers import (
    MESHES,
    NAME,
    PARTITIONS,
    SOURCE_IMAGES,
    Deployment,
    requested_keys,
    sha256_of,
)

TICK = datetime(2026, 11, 25, 12, 30, tzinfo=UTC)


def refresh_tick(deployment: Deployment, moment: datetime = TICK):
    """One refresh tick, evaluated by Dagster (which resolves partition keys)."""
    with dg.build_schedule_context(
        instance=deployment.instance,
        scheduled_execution_time=moment,
        resources=deployment.resources,
        repository_def=deployment.defs.get_repository_def(),
    ) as context:
        return deployment.schedule("refresh").evaluate_tick(context)


def test_failing_images_are_retried_until_the_cap(emulator, instance, tmp_path, tick_log):
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(SAMPLES_DIR / "mug.png", images / "mug.png")
    (images / "doomed.png").write_bytes((SAMPLES_DIR / "duck.png").read_bytes() + b"x")
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    emulator.configure(fail_tasks={"match": "doomed", "error": "model crashed on this input"})
    deployment = Deployment.of(instance, emulator, images, tmp_path / "store")

    sensed = deployment.tick(None)
    [first] = sensed.run_requests
    assert not deployment.execute(first).success  # attempt 1 of broken.png and doomed.png
    assert not deployment.tick(sensed.cursor).run_requests  # failures are not the sensor's job

    failing = ["broken.png", "doomed.png"]  # neighbours: one run covers both
    for attempt in (2, 3):
        data = refresh_tick(deployment)
        [request] = data.run_requests
        assert requested_keys(request, deployment.partitions()) == failing, attempt
        assert request.tags["hunyuan/refresh_reason"] == "last attempt failed"
        assert request.tags["hunyuan/trigger"] == "refresh_schedule"
        assert not deployment.execute(request, deployment.schedule("refresh").name).success

    tick_log()  # forget the output so far
    final = refresh_tick(deployment)
    assert not final.run_requests
    message = final.skip_message
    assert "2 left alone" in message
    assert "doomed.png: 3 failed attempts in a row" in message
    assert "model crashed on this input" in message
    assert "broken.png: 3 failed attempts in a row" in message
    assert "corrupt or truncated PNG header" in message
    log = tick_log()
    assert "not retrying broken.png: 3 failed attempts" in log
    assert "not retrying doomed.png: 3 failed attempts" in log
    assert emulator.stats()["submissions"] == 1 + 3  # mug once, doomed thrice, broken never

    # The cap is per content: new bytes under the same name are retried again.
    (images / "doomed.png").write_bytes((SAMPLES_DIR / "vase.jpg").read_bytes())
    [registered] = materialize_images(
        instance, deployment.pipeline, ["doomed.png"], selection=[SOURCE_IMAGES]
    )
    assert registered.success
    [request] = refresh_tick(deployment).run_requests
    assert request.partition_key == "doomed.png"
    assert request.tags["hunyuan/refresh_reason"] == "last attempt failed"


def test_stale_missing_and_in_progress_meshes(
    emulator, instance, images_dir, tmp_path, monkeypatch
):
    deployment = Deployment.of(instance, emulator, images_dir, tmp_path / "store")
    [request] = deployment.tick(None).run_requests
    assert deployment.execute(request).success
    fresh = refresh_tick(deployment)
    assert not fresh.run_requests and "nothing to refresh" in fresh.skip_message

    # mug.png gets new content, registered by a source-only run: its mesh is now stale.
    shutil.copy(SAMPLES_DIR / "planet.png", images_dir / "mug.png")
    [registered] = materialize_images(
        instance, deployment.pipeline, ["mug.png"], selection=[SOURCE_IMAGES]
    )
    assert registered.success
    # A partition added by hand, never run: no mesh yet.
    shutil.copy(SAMPLES_DIR / "chair.jpg", images_dir / "chair.jpg")
    instance.add_dynamic_partitions(PARTITIONS, ["chair.jpg"])

    stale = refresh_tick(deployment)
    reasons = {
        tuple(requested_keys(r, deployment.partitions())): r.tags["hunyuan/refresh_reason"]
        for r in stale.run_requests
    }
    assert reasons == {("mug.png",): "image content changed", ("chair.jpg",): "no mesh yet"}

    # A run that is queued (not started) for mug.png: the refresh leaves mug.png to it.
    queued = instance.create_run_for_job(
        job_def=deployment.defs.resolve_job_def(deployment.pipeline.jobs.meshes.name),
        tags={PARTITION_NAME_TAG: "mug.png"},
    )
    [only] = refresh_tick(deployment).run_requests
    assert only.partition_key == "chair.jpg"
    instance.report_run_canceled(queued)

    for request in refresh_tick(deployment).run_requests:
        assert deployment.execute(request, deployment.schedule("refresh").name).success
    events = latest_materializations(instance, MESHES, ["mug.png", "chair.jpg"])
    assert events["mug.png"].metadata["input_sha256"] == sha256_of(SAMPLES_DIR / "planet.png")
    assert events["chair.jpg"].metadata["input_sha256"] == sha256_of(SAMPLES_DIR / "chair.jpg")
    assert not refresh_tick(deployment).run_requests

    # A new mesh code version makes every mesh stale: one run over all four partitions.
    monkeypatch.setattr(schedules, "MESH_CODE_VERSION", "2")
    [everything] = refresh_tick(deployment).run_requests
    assert requested_keys(everything, deployment.partitions()) == deployment.partitions()
    assert everything.tags["hunyuan/refresh_reason"] == "mesh code version changed"


def _log_row(key: str) -> PredictionLogRow:
    return PredictionLogRow(
        partition_key=key,
        model="wavespeed-ai/hunyuan3d/v2.1",
        status="completed",
        image_sha256="0" * 64,
        logged_at=TICK,
    )


def compaction_tick(instance: dg.DagsterInstance, schedule: dg.ScheduleDefinition):
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=TICK) as context:
        return schedule.evaluate_tick(context)


def test_compaction_schedule_runs_the_compaction_job(instance, tmp_path):
    store_dir = tmp_path / "store"
    pipeline = build_mesh_pipeline(
        NAME, images=str(tmp_path), store=str(store_dir), base_url="http://127.0.0.1:9"
    )
    defs = pipeline.definitions
    compaction_schedule = defs.resolve_schedule_def("test_compaction_schedule")
    assert compaction_schedule.job_name == pipeline.jobs.compact_log.name == "test_compact_log_job"
    log = PredictionLog(open_mesh_store(str(store_dir)))
    for key in ("a.png", "b.png", "c.png"):
        log.append([_log_row(key)])
    before = log.read()

    def parquet_files() -> list[Path]:
        return sorted((store_dir / "prediction_log").rglob("*.parquet"))

    assert len(parquet_files()) == 3

    job = defs.resolve_job_def(compaction_schedule.job_name)
    # Compactions must not overlap (each recovers every journal it finds): a tick skips while
    # one is queued or running, and the op takes a slot of a pool (one slot in dagster.yaml).
    [op] = job.graph.node_defs
    assert op.pool == COMPACTION_POOL
    earlier = instance.create_run_for_job(job_def=job, status=dg.DagsterRunStatus.STARTED)
    skipped = compaction_tick(instance, compaction_schedule)
    assert not skipped.run_requests
    assert f"compaction run {earlier.run_id} is still" in skipped.skip_message
    instance.report_run_canceled(earlier)
    [request] = compaction_tick(instance, compaction_schedule).run_requests
    assert request.run_key == "compaction-20261125T123000"
    result = job.execute_in_process(
        instance=instance, run_config=request.run_config, tags=request.tags
    )
    assert result.success
    [merged] = parquet_files()
    assert merged.name.startswith("compacted-")
    after = log.read()
    key = ["row_id"]
    pd.testing.assert_frame_equal(
        before.sort_values(key).reset_index(drop=True),
        after.sort_values(key).reset_index(drop=True),
    )
    [materialization] = [
        e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"
    ]  # the op's output carries the report
    metadata = materialization.event_specific_data.metadata
    assert metadata["files_merged"].value == 3 and metadata["rows_written"].value == 3
    assert metadata["days_compacted"].value == ["2026-11-25"]

    again = job.execute_in_process(instance=instance)  # nothing left to merge
    assert again.success and parquet_files() == [merged]
