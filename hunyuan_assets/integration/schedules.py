"""Schedules: heal what failed or went stale, and keep the parquet log compact.

`build_refresh_schedule` makes a pipeline's refresh schedule. It re-requests mesh partitions
whose last attempt failed, that have no mesh, or whose mesh is stale (the image's registered
content or the mesh code version changed since it was made), skipping partitions a queued or
running run already covers. Each run carries the reason in its `hunyuan/refresh_reason` tag.
An image whose last `MAX_ATTEMPTS_PER_IMAGE` attempts all failed (for the same content, where
the prediction log knows it) is left alone: the tick's log and, when nothing else is requested,
its skip message say why (attempt count and last error). Changed content is the sensor's
business: it requests it whatever the history. A partition refused by the daily budget today
is left for a tick on a later (UTC) day, and refusals do not count as failed attempts.

Cheap at 10,000 partitions: failures, runs in progress and data versions come from Dagster's
partition status cache and indexed tags; full mesh materializations (about 40 KB each, with the
preview) are read only for partitions whose data version disagrees with their image's.
Changing the model alone does not count as stale (as in Dagster's own staleness).

`build_compaction_schedule` makes the schedule that merges the prediction log's small parquet
files daily (crash-safe, see `log.py`), skipping a tick while an earlier compaction still runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import dagster as dg

from hunyuan_assets.client import DEFAULT_MODEL
from hunyuan_assets.integration.assets import MESH_CODE_VERSION
from hunyuan_assets.integration.compat import (
    CODE_VERSION_TAG,
    DATA_VERSION_TAG,
    IN_PROGRESS_RUN_STATUSES,
    input_data_version_tag,
    latest_check_failed,
    latest_tags_by_partition,
    partition_status,
    recent_check_results,
    scheduled_execution_time,
)
from hunyuan_assets.integration.jobs import AssetJob
from hunyuan_assets.integration.lineage import (
    PartitionMaterialization,
    derived_version_tags,
    latest_materializations,
)
from hunyuan_assets.integration.locations import MeshStoreResource
from hunyuan_assets.integration.reports import SOURCE_CHECK
from hunyuan_assets.integration.sensors import (
    MAX_IMAGES_PER_RUN,
    TRIGGER_TAG,
    batched_ranges,
    run_key_for,
    run_request_for_batch,
)
from hunyuan_assets.integration.settings import MeshDefsSettings

if TYPE_CHECKING:
    import pandas as pd

MAX_ATTEMPTS_PER_IMAGE = 3
MAX_RUN_REQUESTS_PER_TICK = 100
# Full mesh records (~40 KB each) read per tick to tell why a data version disagrees.
MAX_STALE_LOOKUPS = 500
REASON_TAG = "hunyuan/refresh_reason"

FAILED = "last attempt failed"
MISSING = "no mesh yet"
CONTENT_CHANGED = "image content changed"
CODE_CHANGED = "mesh code version changed"
BUDGET_ERROR_TYPE = "BudgetExceededError"


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
    instance: dg.DagsterInstance,
    log: pd.DataFrame,
    settings: MeshDefsSettings,
    max_attempts: int = MAX_ATTEMPTS_PER_IMAGE,
    now: datetime | None = None,
) -> RefreshPlan:
    """Which mesh partitions need a run, and why. `log` is the prediction log's rows."""
    if not log.empty:
        log = log[log["pipeline"].isna() | (log["pipeline"] == settings.name)]
    keys = instance.get_dynamic_partitions(settings.partitions)
    status = partition_status(instance, settings.meshes_key, settings.partitions_def)
    failed, running = status.failed, status.in_progress
    sources = _data_versions(instance, settings.source_images_key)
    meshes = _data_versions(instance, settings.meshes_key)
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
        elif key in sources and meshes[key] not in _fresh_mesh_versions(
            settings, sources[key], models
        ):
            suspects.append(key)
    reasons.update(_stale_reasons(instance, settings, suspects[:MAX_STALE_LOOKUPS], sources))

    abandoned: dict[str, str] = {}
    failing = [key for key, why in reasons.items() if why == FAILED]
    today = (now or datetime.now(UTC)).date()
    for key in _refused_by_budget_on(log, failing, today):
        del reasons[key]
        abandoned[key] = f"refused by daily_budget_usd on {today} (UTC); tried again tomorrow"
    failing = [key for key in failing if key in reasons]
    histories = failure_history(instance, log, failing, sources, settings, max_attempts)
    for key, history in histories.items():
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


def _fresh_mesh_versions(
    settings: MeshDefsSettings, source_version: str, models: Iterable[str]
) -> set[str]:
    """The data versions a mesh made now from this source version would have, per model."""
    source = PartitionMaterialization("", 0, source_version, {}, {}, 0.0)
    inputs = {settings.source_images_key: source}
    return {
        derived_version_tags(MESH_CODE_VERSION, inputs, model)[DATA_VERSION_TAG] for model in models
    }


def _stale_reasons(
    instance: dg.DagsterInstance,
    settings: MeshDefsSettings,
    keys: Sequence[str],
    sources: Mapping[str, str],
) -> dict[str, str]:
    """Read the meshes' provenance tags to say why they are stale (or that they are not:
    a model unknown to the prediction log also changes the data version)."""
    reasons = {}
    input_tag = input_data_version_tag(settings.source_images_key)
    for key, mesh in latest_materializations(instance, settings.meshes_key, keys).items():
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
    settings: MeshDefsSettings,
    max_attempts: int = MAX_ATTEMPTS_PER_IMAGE,
) -> dict[str, FailureHistory]:
    """Failed attempts in a row per partition, counted where they happened: at registration
    (the `image_decodes` check; the file itself is the content) or at generation (the
    prediction log's rows for the image's current sha256)."""
    if not keys:
        return {}
    check = dg.AssetCheckKey(settings.source_images_key, SOURCE_CHECK)
    at_registration = latest_check_failed(instance, check, keys)
    rows = _rows_by_partition(log, keys)
    history = {}
    for key in keys:
        if key in at_registration:
            history[key] = _registration_failures(instance, check, key, max_attempts)
        else:
            history[key] = _generation_failures(rows.get(key), sources.get(key, ""))
    return history


def _registration_failures(
    instance: dg.DagsterInstance, check: dg.AssetCheckKey, key: str, max_attempts: int
) -> FailureHistory:
    results = recent_check_results(instance, check, key, limit=max_attempts * 3)
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


def _refused_by_budget_on(log: pd.DataFrame, keys: Sequence[str], day) -> list[str]:
    """Partitions whose latest log row is a budget refusal logged on `day` (UTC)."""
    import pandas as pd

    if log.empty or not keys:
        return []
    rows = log[log["partition_key"].isin(set(keys))].sort_values("logged_at")
    latest = rows.groupby("partition_key", sort=False).tail(1)
    refused = latest[
        (latest["error_type"] == BUDGET_ERROR_TYPE)
        & (pd.to_datetime(latest["logged_at"], utc=True).dt.date == day)
    ]
    return [str(key) for key in refused["partition_key"]]


def _generation_failures(rows: pd.DataFrame | None, sha256: str) -> FailureHistory:
    import pandas as pd

    if rows is None:
        return FailureHistory(0, "")
    rows = rows[rows["image_sha256"].fillna("") == sha256]
    # A budget refusal is not a failed attempt at the picture.
    rows = rows[rows["error_type"].fillna("") != BUDGET_ERROR_TYPE]
    succeeded = (rows["status"] != "failed").to_numpy().nonzero()[0]
    since = rows.iloc[succeeded[-1] + 1 :] if len(succeeded) else rows
    if since.empty:
        return FailureHistory(0, "")
    error = since["error"].iloc[-1]
    return FailureHistory(int(since["run_id"].nunique()), "" if pd.isna(error) else str(error))


def build_refresh_schedule(settings: MeshDefsSettings, job: AssetJob) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=settings.job_name("refresh_schedule"),
        job=job,
        cron_schedule=settings.refresh_cron,
        default_status=_status(settings),
        description="Re-request meshes that failed, are missing, or are stale; capped per image.",
        required_resource_keys={settings.mesh_store_resource},
    )
    def refresh_schedule(context: dg.ScheduleEvaluationContext):
        mesh_store: MeshStoreResource = getattr(context.resources, settings.mesh_store_resource)
        log = mesh_store.prediction_log().read()
        plan = plan_refresh(context.instance, log, settings, MAX_ATTEMPTS_PER_IMAGE)
        for key, why in sorted(plan.abandoned.items())[:20]:
            context.log.warning(f"not retrying {key}: {why}")
        if len(plan.abandoned) > 20:
            context.log.warning(f"... and {len(plan.abandoned) - 20} more image(s) not retried")
        if not plan.reasons:
            left = "; ".join(f"{k}: {why}" for k, why in sorted(plan.abandoned.items())[:5])
            return dg.SkipReason(
                f"nothing to refresh ({plan.in_progress} image(s) in progress, "
                f"{len(plan.abandoned)} left alone)" + (f". Not retried: {left}" if left else "")
            )
        ordered = context.instance.get_dynamic_partitions(settings.partitions)
        batches = batched_ranges(ordered, set(plan.reasons), MAX_IMAGES_PER_RUN)
        if len(batches) > MAX_RUN_REQUESTS_PER_TICK:
            left_over = len(batches) - MAX_RUN_REQUESTS_PER_TICK
            context.log.info(f"{left_over} run(s) left for next tick")
        prefix = f"refresh-{_tick_label(context)}"
        requests = []
        for batch in batches[:MAX_RUN_REQUESTS_PER_TICK]:
            why = ", ".join(sorted({plan.reasons[k] for k in batch}))
            tags = {TRIGGER_TAG: "refresh_schedule", REASON_TAG: why}
            requests.append(
                run_request_for_batch(batch, run_key_for(batch, plan.reasons, prefix), tags)
            )
        return requests

    return refresh_schedule


def _status(settings: MeshDefsSettings) -> dg.DefaultScheduleStatus:
    running = dg.DefaultScheduleStatus.RUNNING
    return running if settings.automation else dg.DefaultScheduleStatus.STOPPED


def _tick_label(context: dg.ScheduleEvaluationContext) -> str:
    """The tick's scheduled time (one run key per batch per tick); 'manual' outside the daemon."""
    moment = scheduled_execution_time(context)
    return moment.strftime("%Y%m%dT%H%M%S") if moment else "manual"


def build_compaction_schedule(
    settings: MeshDefsSettings, job: dg.JobDefinition
) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=settings.job_name("compaction_schedule"),
        job=job,
        cron_schedule=settings.compaction_cron,
        default_status=_status(settings),
        description="Daily: merge the prediction log's small parquet files (crash-safe).",
    )
    def compaction_schedule(context: dg.ScheduleEvaluationContext):
        """One compaction at a time: a compaction recovers every journal it finds, even a
        running compaction's (the op's pool also serializes compactions launched by hand)."""
        running = context.instance.get_run_records(
            dg.RunsFilter(job_name=job.name, statuses=list(IN_PROGRESS_RUN_STATUSES)), limit=1
        )
        if running:
            run = running[0].dagster_run
            return dg.SkipReason(
                f"compaction run {run.run_id} is still {run.status.value}; one at a time"
            )
        return dg.RunRequest(run_key=f"compaction-{_tick_label(context)}")

    return compaction_schedule
