"""Every use of Dagster's non-public API, in one place.

The rest of the package uses `import dagster as dg` only. What is here relies on names in
`dagster._...` modules or on methods of the instance's storages that Dagster does not document
as public; `hunyuan_assets_tests/test_compat.py` tests each contract against a real instance,
so a Dagster upgrade means reading this file and running that test.

What we rely on, and why:
- provenance tags (`dagster/data_version`, `dagster/code_version`, `dagster/input_data_version/
  <key>`, `dagster/input_event_pointer/<key>`): a single-run backfill reports each partition's
  materialization itself and must write the tags Dagster's staleness resolver reads (dagster
  #21072: Dagster records provenance per step, not per partition);
- the partition-range run tags: a run over a contiguous range of dynamic partitions;
- per-partition latest storage ids / tags and check results from the event log storage, and the
  asset status cache: one query each for 10,000 partitions, where the public API would need one
  query per partition;
- run statuses that count as "in progress";
- what a run worker records of its own process and how run monitoring fails a run whose worker
  died (`run_health.py`): the "Started process for run (pid: N)" engine event, the pid on
  STEP_WORKER_STARTED events, `add_run_tags`, `report_run_failed` and the `dagster/will_retry` tag.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import dagster as dg
from dagster._core.definitions.data_version import (
    CODE_VERSION_TAG,
    DATA_VERSION_IS_USER_PROVIDED_TAG,
    DATA_VERSION_TAG,
    get_input_data_version_tag,
    get_input_event_pointer_tag,
)
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES
from dagster._core.storage.partition_status_cache import get_and_update_asset_status_cache_value
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
    WILL_RETRY_TAG,
)

__all__ = [
    "CODE_VERSION_TAG",
    "DATA_VERSION_IS_USER_PROVIDED_TAG",
    "DATA_VERSION_TAG",
    "IN_PROGRESS_RUN_STATUSES",
    "PARTITION_NAME_TAG",
    "PartitionStatus",
    "ProcessStart",
    "WILL_RETRY_TAG",
    "input_data_version_tag",
    "input_event_pointer_tag",
    "latest_check_failed",
    "latest_storage_ids_by_partition",
    "latest_tags_by_partition",
    "partition_range_tags",
    "partition_status",
    "recent_check_results",
    "report_run_failed",
    "run_worker_start",
    "step_process_starts",
    "tag_run",
]


def input_data_version_tag(key: dg.AssetKey) -> str:
    return get_input_data_version_tag(key)


def input_event_pointer_tag(key: dg.AssetKey) -> str:
    return get_input_event_pointer_tag(key)


def partition_range_tags(start: str, end: str) -> dict[str, str]:
    """Tags that make a run cover the dynamic partitions from `start` to `end` (inclusive)."""
    return {ASSET_PARTITION_RANGE_START_TAG: start, ASSET_PARTITION_RANGE_END_TAG: end}


def latest_storage_ids_by_partition(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partitions: Iterable[str]
) -> dict[str, int]:
    """partition -> storage id of its latest materialization, in one query."""
    return dict(
        instance.event_log_storage.get_latest_storage_id_by_partition(
            asset_key, dg.DagsterEventType.ASSET_MATERIALIZATION, partitions=set(partitions)
        )
    )


def latest_tags_by_partition(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, tag_keys: Sequence[str]
) -> dict[str, dict[str, str]]:
    """partition -> the given (indexed) tags of its latest materialization, in one query."""
    tags = instance.event_log_storage.get_latest_tags_by_partition(
        asset_key, dg.DagsterEventType.ASSET_MATERIALIZATION, list(tag_keys)
    )
    return {key: dict(value) for key, value in tags.items()}


@dataclass(frozen=True)
class PartitionStatus:
    failed: frozenset[str]
    in_progress: frozenset[str]


def partition_status(
    instance: dg.DagsterInstance,
    asset_key: dg.AssetKey,
    partitions_def: dg.DynamicPartitionsDefinition,
) -> PartitionStatus:
    """Failed and in-progress partitions from Dagster's asset status cache (what the UI shows)."""
    status = get_and_update_asset_status_cache_value(instance, asset_key, partitions_def)
    if status is None:
        return PartitionStatus(frozenset(), frozenset())
    failed = status.deserialize_failed_partition_subsets(partitions_def)
    running = status.deserialize_in_progress_partition_subsets(partitions_def)
    return PartitionStatus(
        frozenset(failed.get_partition_keys()), frozenset(running.get_partition_keys())
    )


def latest_check_failed(
    instance: dg.DagsterInstance, check_key: dg.AssetCheckKey, partitions: Sequence[str]
) -> set[str]:
    """Partitions whose latest evaluation of `check_key` failed, in one query."""
    if not partitions:
        return set()
    infos = instance.event_log_storage.get_asset_check_partition_info(
        [check_key], partition_keys=list(partitions)
    )
    return {
        info.partition_key
        for info in infos
        if info.partition_key is not None
        and info.latest_execution_status == AssetCheckExecutionRecordStatus.FAILED
    }


@dataclass(frozen=True)
class CheckResult:
    run_id: str
    passed: bool
    metadata: Mapping[str, object]


def recent_check_results(
    instance: dg.DagsterInstance, check_key: dg.AssetCheckKey, partition: str, limit: int
) -> list[CheckResult]:
    """The newest `limit` finished evaluations of one partition's check, newest first."""
    records = instance.event_log_storage.get_asset_check_execution_history(
        check_key,
        limit=limit,
        status={AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED},
        partition_filter=PartitionKeyFilter(key=partition),
    )
    results = []
    for record in records:
        event = record.event.dagster_event if record.event else None
        evaluation = event.event_specific_data if event else None
        metadata = getattr(evaluation, "metadata", None) or {}
        results.append(
            CheckResult(
                run_id=record.run_id,
                passed=record.status == AssetCheckExecutionRecordStatus.SUCCEEDED,
                metadata={k: getattr(v, "value", v) for k, v in metadata.items()},
            )
        )
    return results


# ------------------------------------------------------------------------------ run workers


@dataclass(frozen=True)
class ProcessStart:
    """A process a run recorded starting: its pid and when the event saying so was written."""

    pid: int
    logged_at: float  # the event's timestamp, seconds since the epoch


# The run worker writes this engine event (with metadata {"pid": "<pid>"}) before it executes
# anything, under every launcher that starts a worker process (dagster/_grpc/impl.py for the
# DefaultRunLauncher's code-server subprocess, dagster/_cli/api.py for `dagster api execute_run`).
_WORKER_STARTED_PREFIX = "Started process for run (pid: "
# The worker's first engine events are the launch and its own start: a few suffice.
_WORKER_EVENTS_SCANNED = 20


def run_worker_start(instance: dg.DagsterInstance, run_id: str) -> ProcessStart | None:
    """The run worker's pid, from the engine event the worker writes when it starts."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, limit=_WORKER_EVENTS_SCANNED
    ).records
    for record in reversed(records):
        event = record.event_log_entry.dagster_event
        if event is None or not (event.message or "").startswith(_WORKER_STARTED_PREFIX):
            continue
        pid = event.engine_event_data.metadata.get("pid")
        text = getattr(pid, "value", None)
        if isinstance(text, str) and text.isdigit():
            return ProcessStart(int(text), record.event_log_entry.timestamp)
    return None


def step_process_starts(instance: dg.DagsterInstance, run_id: str) -> list[ProcessStart]:
    """Step subprocesses of a run (multiprocess executor): each STEP_WORKER_STARTED event is
    written by the step's own process, and a DagsterEvent carries the pid that wrote it."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.STEP_WORKER_STARTED
    ).records
    starts = []
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is not None and event.pid is not None:
            starts.append(ProcessStart(event.pid, record.event_log_entry.timestamp))
    return starts


def tag_run(instance: dg.DagsterInstance, run_id: str, tags: Mapping[str, str]) -> None:
    """Add (or overwrite) tags of an existing run."""
    instance.add_run_tags(run_id, dict(tags))


def report_run_failed(instance: dg.DagsterInstance, run: dg.DagsterRun, message: str) -> None:
    """Mark `run` failed the way run monitoring does for a run whose worker died
    (dagster/_daemon/monitoring/run_monitoring.py, `monitor_started_run`): a RUN_FAILURE event
    with a message and no failure reason. The instance then sets `dagster/will_retry` (when run
    retries are enabled), which the daemon's run-retry consumer reads; only a STEP_FAILURE
    reason is held back by `retry_on_asset_or_op_failure: false`."""
    instance.report_run_failed(run, message)
