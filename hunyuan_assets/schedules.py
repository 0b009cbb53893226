"""Schedules: heal what failed or went stale, and keep the parquet log compact.

`refresh_schedule` re-requests mesh partitions that are missing, failed, or stale (their image's
content or the mesh code version changed since the mesh was made). An image whose last
`MAX_ATTEMPTS_PER_IMAGE` attempts all failed for the same content is left alone, and the
reason is written in the tick's log and in the prediction log's history (its failed rows).
`compaction_schedule` merges small log files daily (crash-safe, see `log.py`).
"""


from collections import Counter
from dataclasses import dataclass

import dagster as dg
from dagster._core.storage.partition_status_cache import get_and_update_asset_status_cache_value
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from hunyuan_assets.assets import MESH_CODE_VERSION, MESHES, SOURCE_IMAGES, images_partitions
from hunyuan_assets.jobs import compact_log_job, mesh_job
from hunyuan_assets.lineage import latest_materializations
from hunyuan_assets.locations import MeshStoreResource
from hunyuan_assets.sensors import contiguous_ranges

MAX_ATTEMPTS_PER_IMAGE = 3
MAX_RUN_REQUESTS_PER_TICK = 200


@dataclass(frozen=True)
class RefreshPlan:
    reasons: dict[str, str]  # partition -> why it is requested
    abandoned: dict[str, str]  # partition -> why it is not


def plan_refresh(
    instance: dg.DagsterInstance,
    failed_attempts: Counter,
    max_attempts: int = MAX_ATTEMPTS_PER_IMAGE,
) -> RefreshPlan:
    """Which mesh partitions need a run, and why. `failed_attempts` counts failed log rows
    per (partition, image sha256)."""
    keys = instance.get_dynamic_partitions(images_partitions.name)
    status = get_and_update_asset_status_cache_value(instance, MESHES, images_partitions)
    failed = set(
        status.deserialize_failed_partition_subsets(images_partitions).get_partition_keys()
        if status
        else []
    )
    sources = latest_materializations(instance, SOURCE_IMAGES, keys)
    mesh_events = latest_materializations(instance, MESHES, keys)
    source_tag = f"dagster/input_data_version/{SOURCE_IMAGES.to_user_string()}"
    reasons: dict[str, str] = {}
    abandoned: dict[str, str] = {}
    for key in keys:
        src = sources.get(key)
        mesh = mesh_events.get(key)
        sha = str(src.metadata.get("sha256", "")) if src else ""
        if key in failed:
            reason = "last attempt failed"
        elif mesh is None:
            reason = "no mesh yet"
        elif src is not None and mesh.tags.get(source_tag) != src.data_version:
            reason = "image content changed"
        elif mesh.tags.get("dagster/code_version") != MESH_CODE_VERSION:
            reason = "mesh code version changed"
        else:
            continue
        attempts = failed_attempts.get((key, sha), 0)
        if reason == "last attempt failed" and attempts >= max_attempts:
            abandoned[key] = f"{attempts} failed attempts for this image content; fix the image"
            continue
        reasons[key] = reason
    return RefreshPlan(reasons, abandoned)


def failed_attempts_from_log(mesh_store: MeshStoreResource) -> Counter:
    frame = mesh_store.prediction_log().read()
    if frame.empty:
        return Counter()
    failed = frame[frame["status"] == "failed"]
    return Counter(zip(failed["partition_key"], failed["image_sha256"].fillna(""), strict=True))


@dg.schedule(
    job=mesh_job,
    cron_schedule="*/30 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Re-request meshes that failed, are missing, or are stale; capped per image.",
)
def refresh_schedule(context: dg.ScheduleEvaluationContext, mesh_store: MeshStoreResource):
    plan = plan_refresh(context.instance, failed_attempts_from_log(mesh_store))
    for key, why in sorted(plan.abandoned.items()):
        context.log.warning(f"not retrying {key}: {why}")
    if not plan.reasons:
        return dg.SkipReason(
            f"nothing to refresh ({len(plan.abandoned)} image(s) abandoned after repeated failures)"
        )
    ordered = context.instance.get_dynamic_partitions(images_partitions.name)
    requests = []
    tick = context.scheduled_execution_time.isoformat() if context.scheduled_execution_time else ""
    for start, end in contiguous_ranges(ordered, set(plan.reasons))[:MAX_RUN_REQUESTS_PER_TICK]:
        why = sorted({plan.reasons[k] for k in ordered[ordered.index(start) : ordered.index(end) + 1]})
        tags = {"hunyuan/trigger": "refresh_schedule", "hunyuan/refresh_reason": ", ".join(why)}
        if start == end:
            requests.append(dg.RunRequest(run_key=f"refresh-{tick}-{start}", partition_key=start, tags=tags))
        else:
            tags.update({ASSET_PARTITION_RANGE_START_TAG: start, ASSET_PARTITION_RANGE_END_TAG: end})
            requests.append(dg.RunRequest(run_key=f"refresh-{tick}-{start}-{end}", tags=tags))
    return requests


compaction_schedule = dg.ScheduleDefinition(
    job=compact_log_job,
    cron_schedule="17 3 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily: merge the prediction log's small parquet files (crash-safe, no row lost).",
)
