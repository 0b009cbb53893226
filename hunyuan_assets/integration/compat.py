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
- for the tests and benchmarks only (the last section): staleness as the UI computes it, the
  tags and ticks the sensor daemon writes, the daemon's partition adds and one daemon
  iteration, a launcher that records runs, and the characters partition keys must not hold.
- what a run worker records of its own process and how run monitoring fails a run whose worker
  died (`run_health.py`): the "Started process for run (pid: N)" engine event, the pid on
  STEP_WORKER_STARTED events, `add_run_tags`, `report_run_failed` and the `dagster/will_retry` tag.
- the demo's instance (`cli.py`): the consolidated SQLite event log class, its `_connect` and
  `has_table`, and the SQLite file names under `history/`, to make events cheaper to store.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC
from functools import cached_property
from pathlib import Path

import dagster as dg
import sqlalchemy as sa
from dagster._core.definitions.data_version import (
    CODE_VERSION_TAG,
    DATA_VERSION_IS_USER_PROVIDED_TAG,
    DATA_VERSION_TAG,
    get_input_data_version_tag,
    get_input_event_pointer_tag,
)
from dagster._core.definitions.partitions.subset.default import DefaultPartitionsSubset
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES
from dagster._core.storage.event_log import ConsolidatedSqliteEventLogStorage, SqlEventLogStorage
from dagster._core.storage.event_log.base import EventLogRecord
from dagster._core.storage.event_log.schema import (
    AssetCheckExecutionsTable,
    AssetKeyTable,
    SqlEventLogStorageTable,
)
from dagster._core.storage.partition_status_cache import get_and_update_asset_status_cache_value
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
    PARTITION_SET_TAG,
    RUN_KEY_TAG,
    SENSOR_NAME_TAG,
    WILL_RETRY_TAG,
)
from dagster._time import datetime_from_timestamp
from dagster_shared.check import CheckError
from dagster_shared.record import copy
from dagster_shared.serdes import serialize_value
from sqlalchemy.pool import QueuePool

__all__ = [
    "CODE_VERSION_TAG",
    "DATA_VERSION_IS_USER_PROVIDED_TAG",
    "DATA_VERSION_TAG",
    "IN_PROGRESS_RUN_STATUSES",
    "PARTITION_NAME_TAG",
    "PartitionStatus",
    "Tick",
    "apply_dynamic_partitions_requests",
    "ProcessStart",
    "WILL_RETRY_TAG",
    "input_data_version_tag",
    "input_event_pointer_tag",
    "instance_with_recording_launcher",
    "instigator_ticks",
    "latest_check_failed",
    "latest_materialization_target",
    "check_results_shown",
    "latest_storage_ids_by_partition",
    "latest_tags_by_partition",
    "partition_range_of",
    "partition_range_tags",
    "partition_status",
    "recent_check_results",
    "scheduled_execution_time",
    "single_process_instance_yaml",
    "SingleProcessSqliteEventLogStorage",
    "sqlite_databases_held_open",
    "run_sensor_daemon_once",
    "runs_with_run_key",
    "sensor_run_tags",
    "stale_statuses",
    "unsafe_partition_key_parts",
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


def scheduled_execution_time(context: dg.ScheduleEvaluationContext):
    """The tick's scheduled time, or None when the schedule is evaluated by hand (a test, the
    UI's preview): Dagster raises its internal CheckError there instead of returning None."""
    try:
        return context.scheduled_execution_time
    except CheckError:
        return None


# ------------------------------------------------------------------ for tests and benchmarks
# What the test suite and bench/ need from Dagster's internals, so that they too import no
# `dagster._...` module. Each function is covered by a contract test in test_compat.py.


def stale_statuses(
    instance: dg.DagsterInstance,
    assets: Sequence[dg.AssetsDefinition],
    asset_key: dg.AssetKey,
    partitions: Iterable[str],
) -> dict[str, str]:
    """partition -> "FRESH", "STALE" or "MISSING", as the UI shows it for `asset_key` in a
    graph of `assets`. Relies on `CachingStaleStatusResolver` built the way Dagster's own
    `dagster._utils.test.data_versions.get_stale_status_resolver` builds it."""
    from dagster._utils.test.data_versions import get_stale_status_resolver

    resolver = get_stale_status_resolver(instance, assets)
    return {key: resolver.get_status(asset_key, key).value for key in partitions}


def partition_range_of(tags: Mapping[str, str]) -> tuple[str, str] | None:
    """(start, end) of the partition range that run tags (or a RunRequest's tags) ask for,
    None for none; the inverse of `partition_range_tags`."""
    start, end = tags.get(ASSET_PARTITION_RANGE_START_TAG), tags.get(ASSET_PARTITION_RANGE_END_TAG)
    return (start, end) if start is not None and end is not None else None


def sensor_run_tags(request: dg.RunRequest, sensor_name: str) -> dict[str, str]:
    """The tags the sensor daemon gives the run it creates for `request` (its own tags, the
    sensor's name, the run key: `_create_sensor_run` in `dagster._daemon.sensor`), without
    the partition tags, which `execute_in_process(partition_key=...)` sets itself. For running
    a request in process exactly as the daemon would have tagged it."""
    tags = {
        k: v for k, v in request.tags.items() if k not in (PARTITION_NAME_TAG, PARTITION_SET_TAG)
    }
    tags[SENSOR_NAME_TAG] = sensor_name
    if request.run_key:
        tags[RUN_KEY_TAG] = request.run_key
    return tags


def runs_with_run_key(instance: dg.DagsterInstance, run_key: str) -> list[dg.DagsterRun]:
    """Runs created for `run_key` (the daemon skips a run request whose key has a run)."""
    return list(instance.get_runs(dg.RunsFilter(tags={RUN_KEY_TAG: run_key})))


@dataclass(frozen=True)
class Tick:
    """One tick of a sensor or schedule, as the daemon recorded it."""

    status: str  # "STARTED", "SKIPPED", "SUCCESS" or "FAILURE"
    error: str | None
    timestamp: float
    end_timestamp: float | None
    run_ids: tuple[str, ...]


def instigator_ticks(instance: dg.DagsterInstance, name: str, kind: str = "sensor") -> list[Tick]:
    """The recorded ticks (newest first) of the sensor (or, with kind="schedule", the
    schedule) called `name`; [] before its first tick. Relies on `InstigatorType` and the
    instigator state and tick records of the schedule storage."""
    from dagster._core.scheduler.instigation import InstigatorType

    states = [
        state
        for state in instance.all_instigator_state(instigator_type=InstigatorType(kind.upper()))
        if state.instigator_name == name
    ]
    if not states:
        return []
    return [
        Tick(
            status=tick.status.value,
            error=str(tick.error) if tick.error else None,
            timestamp=tick.timestamp,
            end_timestamp=tick.end_timestamp,
            run_ids=tuple(tick.run_ids),
        )
        for tick in instance.get_ticks(states[0].instigator_origin_id, states[0].selector_id)
    ]


def unsafe_partition_key_parts(key: str) -> set[str]:
    """What in `key` Dagster refuses in partition keys: substrings refused in any key ("...",
    control characters) and characters refused in a multi-partitions dimension ("|", ",",
    "[", "]"). Relies on `INVALID_PARTITION_SUBSTRINGS` and
    `INVALID_STATIC_PARTITIONS_KEY_CHARACTERS`."""
    from dagster._core.definitions.partitions.utils.base import INVALID_PARTITION_SUBSTRINGS
    from dagster._core.definitions.partitions.utils.multi import (
        INVALID_STATIC_PARTITIONS_KEY_CHARACTERS,
    )

    found = {bad for bad in INVALID_PARTITION_SUBSTRINGS if bad in key}
    return found | (INVALID_STATIC_PARTITIONS_KEY_CHARACTERS & set(key))


def apply_dynamic_partitions_requests(
    instance: dg.DagsterInstance,
    requests: Sequence[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest],
) -> None:
    """Apply a tick's add/delete requests with the sensor daemon's own code (one existence
    query per key, then the add or delete): `_handle_dynamic_partitions_requests` in
    `dagster._daemon.sensor`, whose only use of its context is a logger and a result sink."""
    from dagster._daemon.sensor import _handle_dynamic_partitions_requests

    class _TickContext:
        logger = logging.getLogger("hunyuan_assets.compat.sensor_daemon")

        def add_dynamic_partitions_request_result(self, result: object) -> None:
            pass

    _handle_dynamic_partitions_requests(requests, instance, _TickContext())  # type: ignore[arg-type]


@contextmanager
def instance_with_recording_launcher() -> Iterator[dg.DagsterInstance]:
    """A temporary instance on which no run executes: the runs a sensor requests are queued
    (Dagster's test instance has a QueuedRunCoordinator, as our dagster.yaml does, and no
    queue daemon runs), and a run launched anyway is only recorded (Dagster's test
    `MockedRunLauncher`, named by its private module in the instance config)."""
    launcher = {"module": "dagster._core.test_utils", "class": "MockedRunLauncher"}
    with dg.instance_for_test(overrides={"run_launcher": launcher}) as instance:
        yield instance


def run_sensor_daemon_once(
    instance: dg.DagsterInstance,
    module_name: str,
    working_directory: str,
    attribute: str = "defs",
    location_name: str = "hunyuan_assets",
) -> None:
    """One iteration of Dagster's own sensor daemon over the code location `module_name`
    (loaded in a gRPC code server, as `dagster-daemon run` does): every running sensor ticks
    once, its partitions are added and its runs created and submitted to the instance's run
    coordinator. Relies on `execute_sensor_iteration`, `create_test_daemon_workspace_context`
    and `ModuleTarget`."""
    from dagster._core.test_utils import create_test_daemon_workspace_context
    from dagster._core.workspace.load_target import ModuleTarget
    from dagster._daemon.daemon import get_default_daemon_logger
    from dagster._daemon.sensor import execute_sensor_iteration

    target = ModuleTarget(
        module_name=module_name,
        attribute=attribute,
        working_directory=working_directory,
        location_name=location_name,
    )
    with create_test_daemon_workspace_context(target, instance) as workspace:
        logger = get_default_daemon_logger("SensorDaemon")
        list(execute_sensor_iteration(workspace, logger, None, None))


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


_CHECK_EVALUATION = dg.DagsterEventType.ASSET_CHECK_EVALUATION.value
# Stored alike by Dagster: the event row, indexed tags, the asset's row (last run, time).
_ASSET_ROW_EVENTS = {
    dg.DagsterEventType.ASSET_MATERIALIZATION.value,
    dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED.value,
}
_INSERT_EVENT = SqlEventLogStorageTable.insert()
_INSERT_PLANNED_CHECK = AssetCheckExecutionsTable.insert()
# The SET clause is the execution's parameters but `key_asset` (SQLAlchemy derives it).
_UPDATE_ASSET_KEY = AssetKeyTable.update().where(
    AssetKeyTable.c.asset_key == sa.bindparam("key_asset")
)
_UPDATE_PLANNED_CHECK = (
    AssetCheckExecutionsTable.update()
    .where(
        AssetCheckExecutionsTable.c.asset_key == sa.bindparam("key_asset"),
        AssetCheckExecutionsTable.c.check_name == sa.bindparam("key_check"),
        AssetCheckExecutionsTable.c.run_id == sa.bindparam("key_run"),
        AssetCheckExecutionsTable.c.partition == sa.bindparam("key_partition"),
    )
    .values(
        {
            name: sa.bindparam(name)
            for name in (
                "execution_status",
                "evaluation_event",
                "evaluation_event_timestamp",
                "evaluation_event_storage_id",
                "materialization_event_storage_id",
            )
        }
    )
)


class SingleProcessSqliteEventLogStorage(ConsolidatedSqliteEventLogStorage):
    """Dagster's consolidated SQLite event log with one engine and a few pooled connections
    per process, and its table checks remembered. Dagster's own makes a SQLAlchemy engine and
    opens a new SQLite connection for every use (NullPool: several per event, each reading
    the schema again and closing with a WAL check), and asks whether a table exists on every
    check evaluation and materialization: together ~18% of the demo's CPU over 96 images,
    then ~20% of its main thread at 128 images for the connections alone. The database is
    Dagster's own; a pooled connection between uses holds no transaction and no lock, so
    other processes (`dagster dev`) read and write it as ever. Its commits skip the fsync
    (`_commit_without_fsync`). A check planned over many partitions is stored in rows of a
    size that does not grow with their number; a materialization and a check's evaluation are
    each stored in one transaction. Overrides `_connect`, `has_table`,
    `_has_asset_key_col_on_connection`, `_store_asset_check_evaluation_planned` and
    `store_event`, internal names but for the last; it also builds the asset row's values of a
    step materialization itself (`_asset_entry_values`: Dagster's `_get_asset_entry_values`,
    with its `EventLogRecord` wrapped around the event's JSON)."""

    _process_engine: tuple[int, sa.engine.Engine] | None = None

    @property
    def _engine(self) -> sa.engine.Engine:
        """This process's engine: a forked child must not use its parent's connections."""
        pid = os.getpid()
        if self._process_engine is None or self._process_engine[0] != pid:
            if self._process_engine is not None:
                self._process_engine[1].dispose(close=False)  # they stay the parent's
            engine = sa.create_engine(
                self._conn_string,
                poolclass=QueuePool,
                pool_size=2,  # the thread writing events, and one reading beside it
                max_overflow=8,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
            )
            sa.event.listen(engine, "connect", _commit_without_fsync)
            self._process_engine = (pid, engine)
        return self._process_engine[1]

    @contextmanager
    def _connect(self):  # type: ignore[override]
        with self._engine.connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        super().dispose()
        if self._process_engine is not None and self._process_engine[0] == os.getpid():
            self._process_engine[1].dispose()
        self._process_engine = None

    @cached_property
    def _tables_seen(self) -> set[str]:
        return set()

    @cached_property
    def _asset_key_columns_seen(self) -> set[str]:
        return set()

    def _has_asset_key_col_on_connection(self, conn, column_name: str) -> bool:
        """Columns, too, are only ever added: Dagster reads the asset_keys table's columns
        again (PRAGMA table_xinfo) for every asset event, ~10% of storing one."""
        if column_name in self._asset_key_columns_seen:
            return True
        found = super()._has_asset_key_col_on_connection(conn, column_name)
        if found:
            self._asset_key_columns_seen.add(column_name)
        return found

    def _store_asset_check_evaluation_planned(self, event, event_id) -> None:  # type: ignore[override]
        """The rows Dagster writes for a check planned over N partitions (one per partition,
        updated by its evaluation), each holding the planned event narrowed to its own
        partition. Dagster's own puts the whole event, serialized again for each row, in every
        row: N copies of an N-key subset. At 1,000 images, 6 checks: 95 MB of rows and ~4.5 s
        of the run's creation, growing as N squared. The event log keeps the whole event."""
        dagster_event = event.get_dagster_event()
        planned = dagster_event.asset_check_planned_data
        subset = planned.partitions_subset
        if not isinstance(subset, DefaultPartitionsSubset) or len(subset) < 2:
            super()._store_asset_check_evaluation_planned(event, event_id)
            return

        def narrowed(key: str) -> str:
            own = copy(planned, partitions_subset=DefaultPartitionsSubset({key}))
            return serialize_value(
                event._replace(dagster_event=dagster_event._replace(event_specific_data=own))
            )

        common = dict(
            asset_key=planned.asset_key.to_string(),
            check_name=planned.check_name,
            run_id=event.run_id,
            execution_status=AssetCheckExecutionRecordStatus.PLANNED.value,
            evaluation_event_timestamp=self._event_insert_timestamp(event),
            evaluation_event_storage_id=event_id,
        )
        rows = [
            dict(common, partition=key, evaluation_event=narrowed(key))
            for key in subset.get_partition_keys()
        ]
        # One statement run for every row (executemany): SQLAlchemy compiles it once, where a
        # multi-row VALUES is compiled anew for each call (5 ms against 42 ms per 384 rows),
        # and no statement nears SQLite's 32,766 bound values (Dagster's own single insert
        # fails from 4,096 partitions).
        with self.index_connection() as conn:
            conn.execute(_INSERT_PLANNED_CHECK, rows)

    def store_event(self, event) -> None:
        """Materializations, planned ones, and a check's evaluation reported for a partition
        of a run are stored as Dagster stores them, each in one transaction through statements
        built once (below); everything else goes Dagster's own way."""
        dagster_event = event.dagster_event
        kind = dagster_event.event_type_value if dagster_event is not None else None
        if kind in _ASSET_ROW_EVENTS and dagster_event.asset_key is not None:
            self._store_materialization(event, dagster_event.asset_key)
        elif (
            kind == _CHECK_EVALUATION
            and event.run_id
            and dagster_event.asset_check_evaluation_data.partition is not None
        ):
            self._store_check_evaluation(event, dagster_event.asset_check_evaluation_data)
        else:
            super().store_event(event)

    def _store_materialization(self, event, asset_key: dg.AssetKey) -> None:
        """A materialization (or a planned one: 2 per image at a run's creation): its event
        row, its indexed tags, the asset's row pointing at it. Dagster's own commits twice,
        builds its statements anew and updates the asset's row only after an insert has
        failed on the asset's key (an IntegrityError, every time but the first); here the
        update goes first, and Dagster's own insert-or-update only where it found no row."""
        row = self._event_to_row(event)
        with self.index_connection() as conn:
            event_id = conn.execute(_INSERT_EVENT, row).inserted_primary_key[0]
            self._store_asset_event_tags(conn, [event], [event_id])
            values = self._asset_entry_values(conn, event, event_id, row["event"])
            updated = conn.execute(
                _UPDATE_ASSET_KEY, dict(values, key_asset=asset_key.to_string())
            ).rowcount
            if updated == 0:
                self._store_asset_event(conn, event, event_id)

    def _asset_entry_values(self, conn, event, event_id: int, event_json: str) -> dict:
        """Dagster's `_get_asset_entry_values`, but a step materialization's
        `last_materialization` (the event inside an `EventLogRecord`) is made from the event's
        JSON already made for its row instead of serializing the event again: ~0.1 ms of CPU
        alone, a quarter of storing a materialization in the demo's run."""
        has_index_columns = self._has_asset_key_index_cols_on_connection(conn)
        wrap = None
        if event.dagster_event.is_step_materialization:
            wrap = self._record_wrapper(event, event_id, event_json)
        if wrap is None:
            return self._get_asset_entry_values(event, event_id, has_index_columns)
        head, between, tail = wrap
        values: dict = {
            "last_materialization": f"{head}{event_json}{between}{event_id}{tail}",
            "last_run_id": event.run_id,
        }
        if has_index_columns:
            values["last_materialization_timestamp"] = datetime_from_timestamp(event.timestamp)
        return values

    def _record_wrapper(self, event, event_id: int, event_json: str):
        """What Dagster's serializer puts around an event and its storage id to make an
        `EventLogRecord`, learnt from the first step materialization stored (serialized the
        full way) and checked there; None (Dagster's way, always) if it is not one text
        before, one between and one after the two."""
        if self._record_wrapper_learnt is None:
            full = serialize_value(EventLogRecord(storage_id=event_id, event_log_entry=event))
            head, found, rest = full.partition(event_json)
            between, found_id, tail = rest.partition(str(event_id))
            ok = found and found_id and event_json not in rest and str(event_id) not in tail
            self._record_wrapper_learnt = (head, between, tail) if ok else False
        return self._record_wrapper_learnt or None

    _record_wrapper_learnt: tuple[str, str, str] | bool | None = None

    def _store_check_evaluation(self, event, evaluation) -> None:
        """A partition's check evaluation: its event row, then the run's planned row for it
        updated, the event serialized once. Dagster's own builds both statements anew,
        serializes the event twice and commits twice: ~1 ms of CPU per evaluation alone,
        2.5 ms under the demo's load, and there are 6 per image. With no planned row to
        update (a step launcher's), Dagster's own inserts one."""
        row = self._event_to_row(event)
        target = evaluation.target_materialization_data
        with self.index_connection() as conn:
            event_id = conn.execute(_INSERT_EVENT, row).inserted_primary_key[0]
            updated = conn.execute(
                _UPDATE_PLANNED_CHECK,
                dict(
                    key_asset=evaluation.asset_key.to_string(),
                    key_check=evaluation.check_name,
                    key_run=event.run_id,
                    key_partition=evaluation.partition,
                    execution_status=(
                        AssetCheckExecutionRecordStatus.SUCCEEDED.value
                        if evaluation.passed
                        else AssetCheckExecutionRecordStatus.FAILED.value
                    ),
                    evaluation_event=row["event"],
                    evaluation_event_timestamp=row["timestamp"],
                    evaluation_event_storage_id=event_id,
                    materialization_event_storage_id=target.storage_id if target else None,
                ),
            ).rowcount
        if updated == 0:
            self._update_asset_check_evaluation(event, event_id)

    def has_table(self, table_name: str) -> bool:
        """Tables are only ever added (by migrations), so a table seen once stays."""
        if table_name in self._tables_seen:
            return True
        found = super().has_table(table_name)
        if found:
            self._tables_seen.add(table_name)
        return found


def _commit_without_fsync(dbapi_connection, _record) -> None:
    """WAL with synchronous=NORMAL: a commit appends to the WAL without an fsync (SQLite syncs
    at checkpoints). The database cannot be corrupted this way and an application crash loses
    nothing; a power cut may lose the last events. For the demo's own instance, one fsync per
    event (~10 per image) is not worth that: it cost ~1 s of the main thread's CPU per 384
    images and blocked it ~1.5 ms per event."""
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


def single_process_instance_yaml(home: str) -> str:
    """dagster.yaml for a throwaway single-process instance (the demo's): the consolidated
    SQLite event log keeps every event in one database file instead of a file per run plus an
    index, so each event is one connection and one commit instead of two (~40% less CPU per
    event, bench_vs_sdk.py), in the variant above. Dagster ships the base class for tests."""
    return (
        "event_log_storage:\n"
        "  module: hunyuan_assets.integration.compat\n"
        "  class: SingleProcessSqliteEventLogStorage\n"
        "  config:\n"
        f"    base_dir: {home}/history\n"
        "telemetry:\n"
        "  enabled: false\n"
    )


# The files Dagster's SQLite storages keep under their base_dir (`history/` in a demo home).
SQLITE_DATABASES = ("event_log.db", "runs.db")


@contextmanager
def sqlite_databases_held_open(home: str) -> Iterator[None]:
    """Hold one idle connection on each of the instance's SQLite databases while this process
    writes its events. Dagster opens and closes a connection per event (NullPool) on databases
    in WAL mode, and closing the *last* connection to a WAL database checkpoints the WAL into
    the database and deletes it, with fsyncs: ~2 ms per connection on a virtual disk, several
    connections per event. While one connection stays open SQLite checkpoints only every 1000
    pages. Nothing is held in a transaction, so other processes (`dagster dev`) read and write
    as before. The file names are Dagster's own."""
    held = []
    try:
        for name in SQLITE_DATABASES:
            path = Path(home) / "history" / name
            if path.exists():  # absent under another storage (PostgreSQL, a user's dagster.yaml)
                connection = sqlite3.connect(path, timeout=30)
                connection.execute("SELECT count(*) FROM sqlite_master").fetchone()  # joins WAL
                held.append(connection)
        yield
    finally:
        for connection in held:
            connection.close()


_LATEST_MATERIALIZATION = (  # built once: building it anew cost as much as running it
    sa.select(
        SqlEventLogStorageTable.c.id,
        SqlEventLogStorageTable.c.run_id,
        SqlEventLogStorageTable.c.timestamp,
    )
    .where(
        SqlEventLogStorageTable.c.asset_key == sa.bindparam("asset_key"),
        SqlEventLogStorageTable.c.dagster_event_type
        == dg.DagsterEventType.ASSET_MATERIALIZATION.value,
        SqlEventLogStorageTable.c.partition == sa.bindparam("partition"),
    )
    .order_by(SqlEventLogStorageTable.c.id.desc())
    .limit(1)
)


def latest_materialization_target(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partition: str
) -> object | None:
    """What a check evaluation of this partition points at: the materialization just reported.

    The UI counts a partition's check result only while it targets the partition's latest
    materialization (`AssetCheckPartitionInfo.is_current`); Dagster fills this in for checks it
    runs itself, not for evaluations a step reports per partition. The data class is internal.
    On a SQL event log it is one indexed query for the row's id, run and timestamp:
    `fetch_materializations` also reads the asset's wipe time and deserializes the whole event
    (its metadata and thumbnail), ~7 ms per call, a tenth of the demo's main thread. Called
    right after the step reported it, so no wipe can lie in between."""
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData as Target,
    )

    storage = instance.event_log_storage
    if isinstance(storage, SqlEventLogStorage):
        with storage.index_connection() as conn:
            row = conn.execute(
                _LATEST_MATERIALIZATION, dict(asset_key=asset_key.to_string(), partition=partition)
            ).first()
        if row is None:
            return None
        stored_at = row.timestamp.replace(tzinfo=UTC).timestamp()  # naive UTC
        return Target(storage_id=row.id, run_id=row.run_id, timestamp=stored_at)
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=1
    ).records
    if not records:
        return None
    record = records[0]
    return Target(storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp)


def check_results_shown(
    instance: dg.DagsterInstance, check_key: dg.AssetCheckKey, partitions: Sequence[str]
) -> dict[str, bool]:
    """partition -> whether the UI counts its latest check result (it does only when the result
    targets the partition's latest materialization; see `latest_materialization_target`)."""
    infos = instance.event_log_storage.get_asset_check_partition_info(
        [check_key], partition_keys=list(partitions)
    )
    return {info.partition_key: info.is_current for info in infos if info.partition_key}
