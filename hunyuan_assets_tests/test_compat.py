"""Contracts of `hunyuan_assets/integration/compat.py`: what each wrapper of Dagster's
non-public API relies on, checked against a real instance (and, for the daemon, Dagster's own
sensor daemon iteration). A Dagster upgrade that breaks one of them fails here first."""

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psutil
import pytest
import sqlalchemy

from hunyuan_assets.core.sources import SAMPLES_DIR
from hunyuan_assets.integration.compat import (
    WILL_RETRY_TAG,
    ProcessStart,
    SingleProcessSqliteEventLogStorage,
    apply_dynamic_partitions_requests,
    instance_with_recording_launcher,
    instigator_ticks,
    latest_materialization_target,
    partition_range_of,
    partition_range_tags,
    report_run_failed,
    run_sensor_daemon_once,
    run_worker_start,
    runs_with_run_key,
    sensor_run_tags,
    single_process_instance_yaml,
    sqlite_databases_held_open,
    stale_statuses,
    step_process_starts,
    tag_run,
    unsafe_partition_key_parts,
)
from hunyuan_assets.integration.factory import build_mesh_pipeline
from hunyuan_assets_tests.helpers import Deployment, assert_target_is_the_latest_record
from hunyuan_assets_tests.local_runs import (
    LaunchedRun,
    LocalDagster,
    direct_launch_dagster_yaml,
    launched_run,
    local_dagster,
    wait_for,
    wait_until_gone,
    wait_until_started,
)

REPO = Path(__file__).resolve().parents[1]

# ------------------------------------------- the test and benchmark helpers (testmig branch)

PARTS = dg.DynamicPartitionsDefinition(name="compat_parts")


class Version(dg.Config):
    value: str = "1"


@dg.asset(partitions_def=PARTS)
def upstream(config: Version) -> dg.MaterializeResult:
    return dg.MaterializeResult(data_version=dg.DataVersion(config.value))


@dg.asset(partitions_def=PARTS, deps=[upstream])
def downstream() -> None:
    return None


def _upstream_version(value: str) -> dict:
    return {"ops": {"upstream": {"config": {"value": value}}}}


def test_stale_statuses_follow_the_upstream_data_version(instance):
    instance.add_dynamic_partitions(PARTS.name, ["a", "b"])
    assets = [upstream, downstream]
    run_config = _upstream_version("1")
    assert dg.materialize(assets, partition_key="a", instance=instance, run_config=run_config)
    assert stale_statuses(instance, assets, downstream.key, ["a", "b"]) == {
        "a": "FRESH",
        "b": "MISSING",
    }

    # the same data version again: still fresh (versions, not timestamps)
    dg.materialize([upstream], partition_key="a", instance=instance, run_config=run_config)
    assert stale_statuses(instance, assets, downstream.key, ["a"]) == {"a": "FRESH"}

    dg.materialize(
        [upstream], partition_key="a", instance=instance, run_config=_upstream_version("2")
    )
    assert stale_statuses(instance, assets, downstream.key, ["a"]) == {"a": "STALE"}
    assert stale_statuses(instance, assets, upstream.key, ["a"]) == {"a": "FRESH"}


RANGE_PARTS = dg.DynamicPartitionsDefinition(name="compat_range")


@dg.asset(partitions_def=RANGE_PARTS, backfill_policy=dg.BackfillPolicy.single_run())
def ranged(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"keys": dg.MetadataValue.json(context.partition_keys)})


def test_partition_range_tags_round_trip_and_select_the_range(instance):
    instance.add_dynamic_partitions(RANGE_PARTS.name, ["a", "b", "c", "d"])
    tags = partition_range_tags("b", "c")
    assert partition_range_of(tags) == ("b", "c")
    result = dg.materialize([ranged], instance=instance, tags=tags)
    assert result.success
    assert sorted(instance.get_materialized_partitions(ranged.key)) == ["b", "c"]
    run = instance.get_run_by_id(result.run_id)
    assert run is not None and partition_range_of(run.tags) == ("b", "c")
    assert partition_range_of({}) is None
    assert partition_range_of({next(iter(tags)): "b"}) is None  # half a range is no range


def test_apply_dynamic_partitions_requests_adds_missing_keys_and_deletes(instance):
    instance.add_dynamic_partitions("compat_apply", ["a"])
    parts = dg.DynamicPartitionsDefinition(name="compat_apply")
    apply_dynamic_partitions_requests(instance, [parts.build_add_request(["a", "b", "c"])])
    assert instance.get_dynamic_partitions("compat_apply") == ["a", "b", "c"]
    apply_dynamic_partitions_requests(instance, [parts.build_delete_request(["b", "zz"])])
    assert instance.get_dynamic_partitions("compat_apply") == ["a", "c"]


def _refused_by_dagster(key: str) -> bool:
    """Whether Dagster refuses `key` in a static partitions definition or as a dimension of
    a multi-partitions definition."""
    try:
        static = dg.StaticPartitionsDefinition([key])
        dg.MultiPartitionsDefinition({"a": static, "b": dg.StaticPartitionsDefinition(["z"])})
    except dg.DagsterInvalidDefinitionError:
        return True
    return False


def test_unsafe_partition_key_parts_are_exactly_what_dagster_refuses():
    wrong = []
    for inner in [*(chr(c) for c in range(128)), "...", "..", "é", "🦆"]:
        key = f"a{inner}b"
        found = unsafe_partition_key_parts(key)
        if bool(found) is not _refused_by_dagster(key) or not all(p in key for p in found):
            wrong.append((key, found))
    assert wrong == []
    assert unsafe_partition_key_parts("a...b|c") == {"...", "|"}


def test_sensor_daemon_iteration_ticks_tags_and_launches_like_in_process(tmp_path, monkeypatch):
    """One iteration of Dagster's sensor daemon over the project's code location: the tick is
    recorded, the partitions added, and the run created with the tags `sensor_run_tags` gives
    an in-process run of the same request; on the recording-launcher instance it stays queued."""
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(SAMPLES_DIR / "mug.png", images / "mug.png")
    settings = {
        "HUNYUAN_NAME": "contract",
        "HUNYUAN_IMAGES": str(images),
        "HUNYUAN_STORE": str(tmp_path / "store"),
        "WAVESPEED_BASE_URL": "http://127.0.0.1:9",  # a tick never calls the API
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)  # the code server is a subprocess: it reads the env

    with instance_with_recording_launcher() as instance:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert type(instance.run_launcher).__name__ == "MockedRunLauncher"
        assert instigator_ticks(instance, "contract_image_sensor") == []
        run_sensor_daemon_once(instance, "hunyuan_assets.definitions", str(REPO))
        [tick] = instigator_ticks(instance, "contract_image_sensor")
        assert tick.status == "SUCCESS", tick.error
        assert tick.end_timestamp is not None and tick.end_timestamp >= tick.timestamp
        assert instigator_ticks(instance, "contract_refresh_schedule", kind="schedule") == []
        assert instance.get_dynamic_partitions("contract_images") == ["mug.png"]
        [run] = instance.get_runs()
        assert list(tick.run_ids) == [run.run_id]
        assert run.job_name == "contract_meshes_job"
        assert run.status == dg.DagsterRunStatus.QUEUED  # created and queued, never executed
        assert not instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)

        # The same tick evaluated in process (a fresh instance, no cursor) asks for the same
        # run; tagged by sensor_run_tags it carries every tag the daemon gave the real one.
        pipeline = build_mesh_pipeline(
            "contract",
            images=str(images),
            store=str(tmp_path / "store2"),
            base_url=settings["WAVESPEED_BASE_URL"],
        )
        with dg.instance_for_test() as other:
            [request] = Deployment(other, pipeline).tick(None).run_requests
        tags = sensor_run_tags(request, "contract_image_sensor")
        assert tags.items() <= run.tags.items(), (tags, run.tags)
        assert {"dagster/partition", "dagster/partition_set"}.isdisjoint(tags)
        assert [r.run_id for r in runs_with_run_key(instance, request.run_key or "")] == [
            run.run_id
        ]
        assert runs_with_run_key(instance, "no-such-key") == []


# ------------------------------------------- run-worker contracts (run_health.py)

# ------------------------------------------------------------------- run workers (run_health)


@dg.op
def noop() -> None:
    pass


@dg.job
def in_process_job() -> None:
    noop()


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> LocalDagster:
    return local_dagster(
        tmp_path_factory.mktemp("compat"), dagster_yaml=direct_launch_dagster_yaml()
    )


@pytest.fixture(scope="module")
def instance(local: LocalDagster) -> Iterator[dg.DagsterInstance]:
    with local.instance() as instance:
        yield instance


@pytest.fixture(scope="module")
def started_run(local: LocalDagster, instance: dg.DagsterInstance) -> Iterator[LaunchedRun]:
    """One run launched by the DefaultRunLauncher, STARTED, its step running in a subprocess."""
    with launched_run(local) as run:
        wait_until_started(instance, run.run_id)
        wait_for(
            lambda: step_process_starts(instance, run.run_id),
            timeout=60,
            what="the step subprocess",
        )
        yield run


def started_before_logging(start: ProcessStart) -> psutil.Process:
    process = psutil.Process(start.pid)
    assert process.create_time() <= start.logged_at + 1.0, (process.create_time(), start)
    return process


@pytest.mark.slow
def test_run_worker_start_is_the_pid_of_the_code_servers_run_subprocess(instance, started_run):
    start = run_worker_start(instance, started_run.run_id)
    assert start is not None
    worker = started_before_logging(start)
    assert "multiprocessing" in " ".join(worker.cmdline())  # the code server's spawned child
    assert "dagster" in " ".join(worker.parent().cmdline())  # `dagster api grpc ...`


@pytest.mark.slow
def test_step_process_starts_are_the_workers_step_subprocesses(instance, started_run):
    worker = run_worker_start(instance, started_run.run_id)
    assert worker is not None
    [step] = step_process_starts(instance, started_run.run_id)
    assert started_before_logging(step).ppid() == worker.pid


def test_a_run_executed_in_process_has_neither(instance):
    result = in_process_job.execute_in_process(instance=instance)
    assert run_worker_start(instance, result.run_id) is None
    assert step_process_starts(instance, result.run_id) == []


def test_tag_run_adds_and_overwrites(instance):
    run_id = in_process_job.execute_in_process(instance=instance, tags={"keep": "me"}).run_id
    tag_run(instance, run_id, {"hunyuan/x": "1"})
    tag_run(instance, run_id, {"hunyuan/x": "2"})
    run = instance.get_run_by_id(run_id)
    assert run is not None
    assert run.tags["hunyuan/x"] == "2" and run.tags["keep"] == "me"


@pytest.mark.slow
def test_report_run_failed_fails_a_started_run_for_a_retry(instance, started_run):
    """Run retries are enabled in the repo's dagster.yaml: the failure is marked for a retry,
    with no failure reason (a STEP_FAILURE one would stop it), as run monitoring leaves it."""
    started = run_worker_start(instance, started_run.run_id)
    assert started is not None
    started_run.kill_everything()
    wait_until_gone([started.pid])
    run = instance.get_run_by_id(started_run.run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.STARTED

    report_run_failed(instance, run, "worker gone, says the test")
    failed = instance.get_run_by_id(run.run_id)
    assert failed is not None and failed.status == dg.DagsterRunStatus.FAILURE
    assert WILL_RETRY_TAG == "dagster/will_retry"
    assert failed.tags[WILL_RETRY_TAG] == "true"
    assert "dagster/failure_reason" not in failed.tags
    [failure] = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert failure.dagster_event is not None
    assert failure.dagster_event.message == "worker gone, says the test"


def test_a_held_connection_keeps_sqlite_from_checkpointing_on_every_event(tmp_path):
    """The contract `sqlite_databases_held_open` relies on: Dagster's own consolidated SQLite
    event log (a demo home with a dagster.yaml of the user's) keeps its event log in WAL mode
    under history/, opens and closes a connection per event, and the last close removes the
    WAL (a checkpoint, with fsyncs); one idle connection held open keeps the WAL, and every
    event is still there for other connections."""
    dagsters_own = single_process_instance_yaml(str(tmp_path)).replace(
        "module: hunyuan_assets.integration.compat\n  class: SingleProcessSqliteEventLogStorage",
        "module: dagster._core.storage.event_log\n  class: ConsolidatedSqliteEventLogStorage",
    )
    assert "class: ConsolidatedSqliteEventLogStorage" in dagsters_own
    (tmp_path / "dagster.yaml").write_text(dagsters_own)
    wal = tmp_path / "history" / "event_log.db-wal"
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization("before"))
        assert not wal.exists()  # each event's connection was the last one: checkpointed away
        with sqlite_databases_held_open(str(tmp_path)):
            for key in ("held_1", "held_2"):
                instance.report_runless_asset_event(dg.AssetMaterialization(key))
                assert wal.exists()  # committed into the WAL, no checkpoint on close
        assert not wal.exists()  # released: the last close checkpoints as before
        for key in ("before", "held_1", "held_2"):
            assert instance.get_latest_materialization_event(dg.AssetKey(key)) is not None


def test_the_demo_event_log_makes_one_engine_and_reads_like_dagsters_own(tmp_path, monkeypatch):
    """`SingleProcessSqliteEventLogStorage` overrides the consolidated storage's `_connect` and
    `has_table`: if Dagster stopped routing its connections through them, the engine count
    below would grow with the events again. Its database is Dagster's own format."""
    dagsters_own = SingleProcessSqliteEventLogStorage.__mro__[1]
    assert dagsters_own.__name__ == "ConsolidatedSqliteEventLogStorage"
    base = sys.modules[dagsters_own.__module__]  # whose create_engine it calls per connection
    made = []
    real_create_engine = sqlalchemy.create_engine

    def counting_create_engine(*args, **kwargs):
        made.append(args[0])
        return real_create_engine(*args, **kwargs)

    monkeypatch.setattr(base, "create_engine", counting_create_engine)
    monkeypatch.setattr(sqlalchemy, "create_engine", counting_create_engine)
    (tmp_path / "dagster.yaml").write_text(single_process_instance_yaml(str(tmp_path)))
    keys = [f"event_{i}" for i in range(6)]
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert type(instance.event_log_storage) is SingleProcessSqliteEventLogStorage
        instance.report_runless_asset_event(dg.AssetMaterialization("warm_up"))
        made.clear()
        for key in keys:
            instance.report_runless_asset_event(dg.AssetMaterialization(key))
        assert made == []  # every connection and table check of six events: no new engine

    monkeypatch.undo()
    plain = dagsters_own(str(tmp_path / "history"))
    for key in keys:
        assert plain.get_latest_materialization_events([dg.AssetKey(key)])[dg.AssetKey(key)]


def test_the_demo_event_log_reuses_its_connections_and_a_forked_child_makes_its_own(
    tmp_path, monkeypatch
):
    """Events after the first open no new SQLite connection (Dagster's own opens several per
    event, each reading the schema again). A child process (another pid) gets an engine of
    its own and leaves its parent's connections open: they are the parent's."""
    from hunyuan_assets.integration import compat

    (tmp_path / "dagster.yaml").write_text(single_process_instance_yaml(str(tmp_path)))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        storage = instance.event_log_storage
        assert isinstance(storage, SingleProcessSqliteEventLogStorage)
        instance.report_runless_asset_event(dg.AssetMaterialization("warm_up"))
        engine = storage._engine
        opened = []
        sqlalchemy.event.listen(engine, "connect", lambda *_: opened.append(1))
        for i in range(6):
            instance.report_runless_asset_event(dg.AssetMaterialization(f"event_{i}"))
        assert opened == []
        assert engine.pool.checkedin() >= 1  # idle, kept for the next event

        closed = []
        sqlalchemy.event.listen(engine, "close", lambda *_: closed.append(1))
        monkeypatch.setattr(compat.os, "getpid", lambda: -1)  # as in a forked child
        assert storage._engine is not engine
        assert closed == []  # the parent's connections are left to the parent
        monkeypatch.undo()
        instance.report_runless_asset_event(dg.AssetMaterialization("after"))
        assert instance.get_latest_materialization_event(dg.AssetKey("after")) is not None


def test_the_demo_event_log_reads_table_columns_once(tmp_path):
    """Dagster reads the asset_keys table's columns (PRAGMA table_xinfo) on every asset event;
    the demo's event log remembers the columns it found, so six more events read none."""
    (tmp_path / "dagster.yaml").write_text(single_process_instance_yaml(str(tmp_path)))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        storage = instance.event_log_storage
        assert isinstance(storage, SingleProcessSqliteEventLogStorage)
        instance.report_runless_asset_event(dg.AssetMaterialization("warm_up"))
        statements: list[str] = []
        sqlalchemy.event.listen(
            storage._engine, "before_cursor_execute", lambda _c, _u, sql, *_: statements.append(sql)
        )
        for i in range(6):
            instance.report_runless_asset_event(dg.AssetMaterialization(f"event_{i}"))
        assert any("asset_keys" in sql for sql in statements)  # the events were written
        assert not [sql for sql in statements if sql.upper().startswith("PRAGMA")]
        latest = instance.get_latest_materialization_event(dg.AssetKey("event_5"))
        assert latest is not None


def test_the_demo_event_log_commits_to_its_wal_without_an_fsync(tmp_path):
    """Its connections run WAL with synchronous=NORMAL (1): no fsync per commit, yet no
    corruption possible. Dagster's own connections keep SQLite's default FULL (2)."""
    (tmp_path / "dagster.yaml").write_text(single_process_instance_yaml(str(tmp_path)))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization("made_the_database"))
        storage = instance.event_log_storage
        assert isinstance(storage, SingleProcessSqliteEventLogStorage)
        with storage._connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1
        plain = SingleProcessSqliteEventLogStorage.__mro__[1](str(tmp_path / "history"))
        with plain._connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2


CHECKED_PARTS = dg.DynamicPartitionsDefinition(name="compat_checked")


@dg.multi_asset(
    specs=[dg.AssetSpec("checked", partitions_def=CHECKED_PARTS, skippable=True)],
    check_specs=[dg.AssetCheckSpec("fine", asset="checked", partitions_def=CHECKED_PARTS)],
    partitions_def=CHECKED_PARTS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    can_subset=True,  # as the mesh step: per-partition check results are optional outputs
)
def checked(context: dg.AssetExecutionContext):
    for key in context.partition_keys[:-1]:  # the last one is left planned
        yield dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey("checked"), check_name="fine", passed=True, partition=key
        )


@pytest.mark.parametrize("yaml", ["demo", "dagster"])
def test_a_checks_planned_rows_hold_their_own_partition_on_the_demo_event_log(tmp_path, yaml):
    """A run over N partitions plans each check once per partition (a row each, which the
    evaluation updates). Dagster's own rows each hold the whole planned event, all N keys; the
    demo's hold it narrowed to their own key (a wide run's rows grew as N squared). Either way
    every partition reads back the same status; the event log keeps the whole event."""
    config = single_process_instance_yaml(str(tmp_path)) if yaml == "demo" else ""
    (tmp_path / "dagster.yaml").write_text(config or "telemetry:\n  enabled: false\n")
    keys = ["a", "b", "c", "d"]
    check_key = dg.AssetCheckKey(dg.AssetKey("checked"), "fine")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        instance.add_dynamic_partitions(CHECKED_PARTS.name, keys)
        result = dg.materialize([checked], instance=instance, tags=partition_range_tags("a", "d"))
        assert result.success
        storage = instance.event_log_storage
        records = storage.get_asset_check_execution_history(check_key, limit=100)
        by_partition = {record.partition: record for record in records}
        assert sorted(by_partition) == keys and len(records) == len(keys)
        statuses = {key: record.status.value for key, record in by_partition.items()}
        assert statuses == {"a": "SUCCEEDED", "b": "SUCCEEDED", "c": "SUCCEEDED", "d": "PLANNED"}
        planned = by_partition["d"].event
        assert planned is not None and planned.run_id == result.run_id
        subset = planned.get_dagster_event().asset_check_planned_data.partitions_subset
        assert sorted(subset.get_partition_keys()) == (["d"] if yaml == "demo" else keys)
        logged = instance.get_records_for_run(
            result.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED
        ).records
        [whole] = [record.event_log_entry.get_dagster_event() for record in logged]
        assert sorted(whole.asset_check_planned_data.partitions_subset.get_partition_keys()) == keys


def test_a_check_planned_over_more_partitions_than_one_sqlite_statement_binds(tmp_path):
    """5,000 partitions: 40,000 values, past the 32,766 per statement of SQLite's default
    build (Debian's allows 250,000: the limit is set here), where Dagster's own single insert
    fails. The demo's event log stores a row per partition. The planned event is a real
    run's, widened to 5,000 keys under another run id."""
    import sqlite3

    keys = [f"image-{i:05d}.png" for i in range(5000)]
    (tmp_path / "dagster.yaml").write_text(single_process_instance_yaml(str(tmp_path)))
    check_key = dg.AssetCheckKey(dg.AssetKey("checked"), "fine")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        instance.add_dynamic_partitions(CHECKED_PARTS.name, ["a", "b"])
        result = dg.materialize([checked], instance=instance, tags=partition_range_tags("a", "b"))
        [record] = instance.get_records_for_run(
            result.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED
        ).records
        entry = record.event_log_entry
        planned = entry.get_dagster_event()
        data = planned.asset_check_planned_data
        wider = type(data)(
            asset_key=data.asset_key,
            check_name=data.check_name,
            partitions_subset=CHECKED_PARTS.subset_with_partition_keys(keys),
        )
        wide = entry._replace(
            run_id="wide-run", dagster_event=planned._replace(event_specific_data=wider)
        )
        engine = instance.event_log_storage._engine

        @sqlalchemy.event.listens_for(engine, "connect")
        def default_build_limit(dbapi_connection, _record) -> None:
            dbapi_connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 32_766)

        engine.dispose()  # connections from here on have the limit
        instance.event_log_storage.store_event(wide)
        records = instance.event_log_storage.get_asset_check_execution_history(
            check_key, limit=10_000
        )
    wide_rows = [r for r in records if r.run_id == "wide-run"]
    assert sorted(r.partition for r in wide_rows) == keys
    assert {r.status.value for r in wide_rows} == {"PLANNED"}
    one = wide_rows[0].event.get_dagster_event().asset_check_planned_data.partitions_subset
    assert list(one.get_partition_keys()) == [wide_rows[0].partition]


@pytest.mark.parametrize("yaml", ["demo", "dagster"])
def test_a_checks_target_is_the_partitions_latest_materialization(tmp_path, yaml):
    """The one-query target agrees with the whole record, to the microsecond, on the demo's
    event log and on Dagster's own; a newer materialization of the partition becomes the
    target; another partition's or asset's does not; none yet: None."""
    config = single_process_instance_yaml(str(tmp_path))
    if yaml == "dagster":
        config = "telemetry:\n  enabled: false\n"
    (tmp_path / "dagster.yaml").write_text(config)
    asset, other = dg.AssetKey(["team", "meshes"]), dg.AssetKey("other")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert latest_materialization_target(instance, asset, "a.png") is None
        for key, partition in [
            (asset, "a.png"),
            (asset, "a.png"),
            (asset, "b.png"),
            (other, "a.png"),
        ]:
            instance.report_runless_asset_event(
                dg.AssetMaterialization(key, partition=partition, metadata={"n": 1})
            )
        for partition in ("a.png", "b.png"):
            assert_target_is_the_latest_record(instance, asset, partition)
        first_of_a = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset, asset_partitions=["a.png"]), limit=2
        ).records[-1]
        assert (
            latest_materialization_target(instance, asset, "a.png").storage_id
            > first_of_a.storage_id
        )
        assert latest_materialization_target(instance, asset, "c.png") is None


GRADED = dg.DynamicPartitionsDefinition(name="compat_graded")


@dg.multi_asset(
    specs=[dg.AssetSpec("graded", partitions_def=GRADED, skippable=True)],
    check_specs=[
        dg.AssetCheckSpec(name, asset="graded", partitions_def=GRADED) for name in ("big", "odd")
    ],
    partitions_def=GRADED,
    backfill_policy=dg.BackfillPolicy.single_run(),
    can_subset=True,
)
def graded(context: dg.AssetExecutionContext):
    """Per partition: a materialization, then two checks of it (one fails for "b"); the last
    partition is left planned, as a partition whose image failed."""
    for key in context.partition_keys[:-1]:
        yield dg.AssetMaterialization(
            "graded",
            partition=key,
            metadata={"n": len(key)},
            tags={"dagster/data_version": f"v-{key}"},  # an indexed tag
        )
        target = latest_materialization_target(context.instance, dg.AssetKey("graded"), key)
        for name in ("big", "odd"):
            yield dg.AssetCheckEvaluation(
                asset_key=dg.AssetKey("graded"),
                check_name=name,
                passed=not (name == "odd" and key == "b"),
                partition=key,
                metadata={"key": key},
                target_materialization_data=target,
            )


STORED_TABLES = ("event_logs", "asset_keys", "asset_event_tags", "asset_check_executions")


def _rows(path: Path, table: str) -> list[dict]:
    with sqlalchemy.create_engine(f"sqlite:///{path}").connect() as conn:
        result = conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY id")  # noqa: S608
        return [dict(row._mapping) for row in result]


def test_the_demo_event_log_stores_materializations_and_checks_exactly_as_dagster_does(
    tmp_path,
):
    """The demo's event log stores a materialization and a partition's check evaluation each
    in one transaction through statements built once; the rows must be Dagster's own, column
    for column: the same events of a real run (materializations with an indexed tag, checks
    passed and failed, their targets, a partition left planned) replayed into both storages,
    then its materializations again under another run (the asset's row now updated, not
    inserted), and its evaluations under a run with nothing planned (Dagster then inserts the
    check's row instead of updating it)."""
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        instance.add_dynamic_partitions(GRADED.name, ["a", "b", "c"])
        result = dg.materialize([graded], instance=instance, tags=partition_range_tags("a", "c"))
        assert result.success
        events = [r.event_log_entry for r in instance.get_records_for_run(result.run_id).records]
        # Nothing planned it: the asset's row does not exist yet when it is stored.
        instance.report_runless_asset_event(dg.AssetMaterialization("runless", partition="x"))
        [record] = instance.fetch_materializations(dg.AssetKey("runless"), limit=1).records
    evaluations = [e for e in events if e.dagster_event_type == "ASSET_CHECK_EVALUATION"]
    assert len(evaluations) == 4
    unplanned = [e._replace(run_id="no-plan") for e in evaluations]
    materialized = [e for e in events if e.dagster_event_type == "ASSET_MATERIALIZATION"]
    assert len(materialized) == 2
    again = [e._replace(run_id="again") for e in materialized]

    dagsters_own = SingleProcessSqliteEventLogStorage.__mro__[1]
    stores = {"demo": SingleProcessSqliteEventLogStorage, "dagster": dagsters_own}
    tables = {}
    for name, storage_class in stores.items():
        storage = storage_class(str(tmp_path / name))
        dagsters_update = storage._update_asset_check_evaluation
        updated_dagsters_way = []

        def counted(event, event_id, update=dagsters_update, seen=updated_dagsters_way):
            seen.append(event.run_id)
            update(event, event_id)

        storage._update_asset_check_evaluation = counted
        dagsters_asset_row = storage._store_asset_event
        asset_rows_dagsters_way = []

        def counted_row(
            conn, event, event_id, store=dagsters_asset_row, seen=asset_rows_dagsters_way
        ):
            seen.append(event.dagster_event_type)
            store(conn, event, event_id)

        storage._store_asset_event = counted_row
        for event in [*events, *again, *unplanned, record.event_log_entry]:
            storage.store_event(event)
        storage.dispose()
        # The demo's takes Dagster's way only where there is no planned row to update, and
        # for an asset's row only where there is none yet (the first planned event, runless).
        expected = [result.run_id] * 4 if name == "dagster" else []
        assert updated_dagsters_way == expected + ["no-plan"] * 4
        if name == "demo":
            assert asset_rows_dagsters_way == [
                "ASSET_MATERIALIZATION_PLANNED",
                "ASSET_MATERIALIZATION",
            ]
        else:
            assert asset_rows_dagsters_way.count("ASSET_MATERIALIZATION") == 2 + 2 + 1
        db = tmp_path / name / "event_log.db"
        tables[name] = {t: _rows(db, t) for t in STORED_TABLES}

    for table in ("event_logs", "asset_event_tags"):
        assert tables["demo"][table] == tables["dagster"][table], table
    own_assets = tables["dagster"]["asset_keys"]
    assert [(r["asset_key"], r["last_run_id"]) for r in own_assets] == [
        ('["graded"]', "again"),
        ('["runless"]', ""),
    ]
    for mine, theirs in zip(tables["demo"]["asset_keys"], own_assets, strict=True):
        mine, theirs = dict(mine), dict(theirs)
        assert mine.pop("create_timestamp") and theirs.pop("create_timestamp")  # SQLite's clock
        assert mine == theirs
    assert [r["value"] for r in tables["dagster"]["asset_event_tags"]] == ["v-a", "v-b"] * 2
    demo = tables["demo"]["asset_check_executions"]
    own = tables["dagster"]["asset_check_executions"]
    assert len(demo) == len(own) == 2 * 3 + 4  # planned a, b, c per check; 4 unplanned
    statuses = [(r["check_name"], r["partition"], r["run_id"], r["execution_status"]) for r in own]
    assert ("odd", "b", result.run_id, "FAILED") in statuses
    assert ("big", "c", result.run_id, "PLANNED") in statuses
    assert ("odd", "b", "no-plan", "FAILED") in statuses
    for mine, theirs in zip(demo, own, strict=True):
        mine, theirs = dict(mine), dict(theirs)
        for row in (mine, theirs):
            row.pop("create_timestamp")  # SQLite's clock at the insert
            if row["execution_status"] == "PLANNED":
                row.pop("evaluation_event")  # narrowed on the demo's (the test above)
        assert mine == theirs
    evaluated = [r for r in own if r["execution_status"] != "PLANNED"]
    assert all(r["materialization_event_storage_id"] for r in evaluated)
