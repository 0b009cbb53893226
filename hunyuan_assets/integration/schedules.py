"""Schedules: heal what failed or went stale, and keep the parquet log compact.

`refresh_schedule` re-requests mesh partitions whose last attempt failed, that have no mesh, or
whose mesh is stale (the image's registered content or the mesh code version changed since it
was made), skipping partitions a queued or running run already covers. Each run carries the
reason in its `hunyuan/refresh_reason` tag. An image whose last `MAX_ATTEMPTS_PER_IMAGE`
attempts all failed (for the same content, where the prediction log knows it) is left alone:
the tick's log and, when nothing else is requested, its skip message say why (attempt count and
last error). Changed content is the sensor's business: it requests it whatever the history.

Cheap at 10,000 partitions: failures, runs in progress and data versions come from Dagster's
partition status cache and indexed tags; full mesh materializations (about 40 KB each, with the
preview) are read only for partitions whose data version disagrees with their image's.
Changing the model alone does not count as stale (as in Dagster's own staleness).

`compaction_schedule` merges the prediction log's small parquet files daily (crash-safe, see
`log.py`), and skips a tick while an earlier compaction run is still queued or running.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import dagster as dg
import pandas as pd
from dagster_shared.check import CheckError

from hunyuan_assets.client import DEFAULT_MODEL
from hunyuan_assets.integration.assets import (
    IMAGES,
    MESH_CODE_VERSION,
    MESHES,
    SOURCE_IMAGES,
    images_partitions,
)
from hunyuan_assets.integration.compat import (
    CODE_VERSION_TAG,
    DATA_VERSION_TAG,
    IN_PROGRESS_RUN_STATUSES,
    input_data_version_tag,
    latest_check_failed,
    latest_tags_by_partition,
    partition_status,
    recent_check_results,
)
from hunyuan_assets.integration.jobs import compact_log_job, mesh_job
from hunyuan_assets.integration.lineage import (
    PartitionMaterialization,
    derived_version_tags,
    latest_materializations,
)
from hunyuan_assets.integration.locations import MeshStoreResource
from hunyuan_assets.integration.reports import SOURCE_CHECK
from hunyuan_assets.integration.sensors import (
    TRIGGER_TAG,
    SensorLimits,
    batched_ranges,
    run_key_for,
    run_request_for_batch,
)

MAX_ATTEMPTS_PER_IMAGE = 3
MAX_IMAGES_PER_RUN = SensorLimits().images_per_run
MAX_RUN_REQUESTS_PER_TICK = 100
# Full mesh records (~40 KB each) read per tick to tell why a data version disagrees.
MAX_STALE_LOOKUPS = 500
REASON_TAG = "hunyuan/refresh_reason"

FAILED = "last attempt failed"
MISSING = "no mesh yet"
CONTENT_CHANGED = "image content changed"
CODE_CHANGED = "mesh code version changed"

_SOURCE_CHECK_KEY = dg.AssetCheckKey(SOURCE_IMAGES, SOURCE_CHECK)


@dataclass(frozen=True)
class FailureHistory:
    """Consecutive failed attempts (distinct runs) of one image, and the last error."""

    attempts: int
    last_error: str


@dataclass(frozen=True)
class RefreshPlan:
    reasons: dict[str, str]  # partition -> why it is requested
    abandoned: dict[str, str]  # partition -> why it is not
    in_progress: int = 0  # partitions a queued or running run covers


def plan_refresh(
    instance: dg.DagsterInstance, log: pd.DataFrame, max_attempts: int = MAX_ATTEMPTS_PER_IMAGE
) -> RefreshPlan:
    """Which mesh partitions need a run, and why. `log` is the prediction log's rows."""
    keys = instance.get_dynamic_partitions(IMAGES)
    status = partition_status(instance, MESHES, images_partitions)
    failed, running = status.failed, status.in_progress
    sources = _data_versions(instance, SOURCE_IMAGES)
    meshes = _data_versions(instance, MESHES)
    models = {DEFAULT_MODEL, *(log["model"].dropna() if not log.empty else ())}

    reasons: dict[str, str] = {}
    suspects: list[str] = []
    for key in keys:
        if key in running:
            continue
        if key in failed:
            reasons[key] = FAILED
        elif key not in meshes:
            reasons[key] = MISSING
        elif key in sources and meshes[key] not in _fresh_mesh_versions(sources[key], models):
            suspects.append(key)
    reasons.update(_stale_reasons(instance, suspects[:MAX_STALE_LOOKUPS], sources))

    abandoned: dict[str, str] = {}
    failing = [key for key, why in reasons.items() if why == FAILED]
    for key, history in failure_history(instance, log, failing, sources, max_attempts).items():
        if history.attempts >= max_attempts:
            del reasons[key]
            abandoned[key] = (
                f"{history.attempts} failed attempts in a row for this image content; last "
                f"error: {history.last_error[:300] or 'unknown'}. Fix or replace the image "
                "(the sensor requests changed content) or materialize it by hand."
            )
    return RefreshPlan(reasons, abandoned, len(running))


def _data_versions(instance: dg.DagsterInstance, asset_key: dg.AssetKey) -> dict[str, str]:
    """partition -> data version of its latest materialization (an indexed tag: one query)."""
    tags = latest_tags_by_partition(instance, asset_key, [DATA_VERSION_TAG])
    return {key: t[DATA_VERSION_TAG] for key, t in tags.items() if DATA_VERSION_TAG in t}


def _fresh_mesh_versions(source_version: str, models: Iterable[str]) -> set[str]:
    """The data versions a mesh made now from this source version would have, per model."""
    source = PartitionMaterialization("", 0, source_version, {}, {}, 0.0)
    return {
        derived_version_tags(MESH_CODE_VERSION, {SOURCE_IMAGES: source}, model)[DATA_VERSION_TAG]
        for model in models
    }


def _stale_reasons(
    instance: dg.DagsterInstance, keys: Sequence[str], sources: Mapping[str, str]
) -> dict[str, str]:
    """Read the meshes' provenance tags to say why they are stale (or that they are not:
    a model unknown to the prediction log also changes the data version)."""
    reasons = {}
    input_tag = input_data_version_tag(SOURCE_IMAGES)
    for key, mesh in latest_materializations(instance, MESHES, keys).items():
        if mesh.tags.get(input_tag) != sources.get(key):
            reasons[key] = CONTENT_CHANGED
        elif mesh.tags.get(CODE_VERSION_TAG) != MESH_CODE_VERSION:
            reasons[key] = CODE_CHANGED
    return reasons


def failure_history(
    instance: dg.DagsterInstance,
    log: pd.DataFrame,
    keys: Sequence[str],
    sources: Mapping[str, str],
    max_attempts: int = MAX_ATTEMPTS_PER_IMAGE,
) -> dict[str, FailureHistory]:
    """Failed attempts in a row per partition, counted where they happened: at registration
    (the `image_decodes` check; the file itself is the content) or at generation (the
    prediction log's rows for the image's current sha256)."""
    if not keys:
        return {}
    at_registration = latest_check_failed(instance, _SOURCE_CHECK_KEY, keys)
    rows = _rows_by_partition(log, keys)
    history = {}
    for key in keys:
        if key in at_registration:
            history[key] = _registration_failures(instance, key, max_attempts)
        else:
            history[key] = _generation_failures(rows.get(key), sources.get(key, ""))
    return history


def _registration_failures(
    instance: dg.DagsterInstance, key: str, max_attempts: int
) -> FailureHistory:
    results = recent_check_results(instance, _SOURCE_CHECK_KEY, key, limit=max_attempts * 3)
    runs: set[str] = set()
    last_error = ""
    for result in results:  # newest first
        if result.passed:
            break
        runs.add(result.run_id)
        last_error = last_error or str(result.metadata.get("error") or "")
    return FailureHistory(len(runs), last_error)


def _rows_by_partition(log: pd.DataFrame, keys: Sequence[str]) -> dict[str, pd.DataFrame]:
    if log.empty:
        return {}
    rows = log[log["partition_key"].isin(set(keys))].sort_values("logged_at")
    return {str(key): group for key, group in rows.groupby("partition_key", sort=False)}


def _generation_failures(rows: pd.DataFrame | None, sha256: str) -> FailureHistory:
    if rows is None:
        return FailureHistory(0, "")
    rows = rows[rows["image_sha256"].fillna("") == sha256]
    succeeded = (rows["status"] != "failed").to_numpy().nonzero()[0]
    since = rows.iloc[succeeded[-1] + 1 :] if len(succeeded) else rows
    if since.empty:
        return FailureHistory(0, "")
    error = since["error"].iloc[-1]
    return FailureHistory(int(since["run_id"].nunique()), "" if pd.isna(error) else str(error))


@dg.schedule(
    job=mesh_job,
    cron_schedule="*/30 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Re-request meshes that failed, are missing, or are stale; capped per image.",
)
def refresh_schedule(context: dg.ScheduleEvaluationContext, mesh_store: MeshStoreResource):
    plan = plan_refresh(
        context.instance, mesh_store.prediction_log().read(), MAX_ATTEMPTS_PER_IMAGE
    )
    for key, why in sorted(plan.abandoned.items())[:20]:
        context.log.warning(f"not retrying {key}: {why}")
    if len(plan.abandoned) > 20:
        context.log.warning(f"... and {len(plan.abandoned) - 20} more image(s) not retried")
    if not plan.reasons:
        left = "; ".join(f"{k}: {why}" for k, why in sorted(plan.abandoned.items())[:5])
        return dg.SkipReason(
            f"nothing to refresh ({plan.in_progress} image(s) in progress, "
            f"{len(plan.abandoned)} left alone after repeated failures)"
            + (f". Not retried: {left}" if left else "")
        )
    ordered = context.instance.get_dynamic_partitions(IMAGES)
    batches = batched_ranges(ordered, set(plan.reasons), MAX_IMAGES_PER_RUN)
    if len(batches) > MAX_RUN_REQUESTS_PER_TICK:
        context.log.info(f"{len(batches) - MAX_RUN_REQUESTS_PER_TICK} run(s) left for next tick")
    prefix = f"refresh-{_tick_label(context)}"
    requests = []
    for batch in batches[:MAX_RUN_REQUESTS_PER_TICK]:
        why = ", ".join(sorted({plan.reasons[k] for k in batch}))
        tags = {TRIGGER_TAG: "refresh_schedule", REASON_TAG: why}
        requests.append(
            run_request_for_batch(batch, run_key_for(batch, plan.reasons, prefix), tags)
        )
    return requests


def _tick_label(context: dg.ScheduleEvaluationContext) -> str:
    """The tick's scheduled time (one run key per batch per tick); 'manual' outside the daemon."""
    try:
        moment: datetime = context.scheduled_execution_time
    except CheckError:
        return "manual"
    return moment.strftime("%Y%m%dT%H%M%S")


@dg.schedule(
    job=compact_log_job,
    cron_schedule="17 3 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily: merge the prediction log's small parquet files (crash-safe, no row lost).",
)
def compaction_schedule(context: dg.ScheduleEvaluationContext):
    """One compaction at a time: a compaction recovers every journal it finds, even a running
    compaction's (the op's pool also serializes compactions launched by hand)."""
    running = context.instance.get_run_records(
        dg.RunsFilter(job_name=compact_log_job.name, statuses=list(IN_PROGRESS_RUN_STATUSES)),
        limit=1,
    )
    if running:
        run = running[0].dagster_run
        return dg.SkipReason(
            f"compaction run {run.run_id} is still {run.status.value}; one at a time"
        )
    return dg.RunRequest(run_key=f"compaction-{_tick_label(context)}")
