"""The production profile, for real: PostgreSQL storage, the daemon, and the CLI entry points.

- A throwaway PostgreSQL server (see `postgres.py`) backs run, event-log and schedule storage
  through dagster-postgres; two images are materialized and read back from PostgreSQL.
- `dagster-daemon run` with the repo's dagster.yaml and workspace.yaml picks up an image dropped
  into the watched folder (sensor -> queued run -> DefaultRunLauncher subprocess) end to end.
- `dagster definitions validate` and `dagster dev` load the repo's workspace.
Processes are started in their own session and ended by PID with a timeout (SIGINT can hang
`dagster dev`); waits are condition loops with deadlines, never fixed sleeps.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import httpx
import psycopg2
import pytest

from hunyuan_assets.core.glb import inspect_glb
from hunyuan_assets.core.log import PredictionLog
from hunyuan_assets.core.sources import SAMPLES_DIR
from hunyuan_assets.core.store import open_mesh_store
from hunyuan_assets.definitions import DEFAULT_NAME
from hunyuan_assets.integration.backfill import materialize_images, materialize_prediction_log
from hunyuan_assets.integration.compat import instigator_ticks
from hunyuan_assets.integration.lineage import latest_materializations
from hunyuan_assets.integration.settings import MeshDefsSettings
from hunyuan_assets_tests.helpers import (
    MESHES,
    PARTITIONS,
    PREDICTION_LOG,
    SOURCE_IMAGES,
    assert_target_is_the_latest_record,
    check_results,
    partition_keys,
    pipeline_for,
)
from hunyuan_assets_tests.local_runs import wait_for
from hunyuan_assets_tests.postgres import (
    PostgresServer,
    dagster_yaml_for,
    external_postgres,
    free_port,
    libpq_url,
    postgres_server,
)

REPO = Path(__file__).resolve().parents[1]
WORKSPACE = REPO / "workspace.yaml"
DAGSTER_YAML = REPO / "dagster.yaml"
BIN = Path(sys.executable).parent
MESH_CHECKS = ("glb_valid", "pbr_textured", "face_budget", "not_nsfw", "closed_surface")
# The project's own code location (hunyuan_assets.definitions), as the CLI and daemon load it:
# HUNYUAN_NAME unset, so every name starts with the default pipeline name.
PROJECT = MeshDefsSettings(name=DEFAULT_NAME, images=".", store=".")


# ---------------------------------------------------------------------------------- helpers


def copy_images(folder: Path, names: tuple[str, ...]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(SAMPLES_DIR / name, folder / name)
    return folder


def process_env(home: Path, emulator, images: Path, store: Path, **extra: str) -> dict[str, str]:
    """The environment of a Dagster process under test: nothing from the caller's profile
    that could point it at a real API, bucket or instance."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DAGSTER_", "HUNYUAN_", "WAVESPEED_", "AWS_"))
    }
    env.update(
        DAGSTER_HOME=str(home),
        WAVESPEED_BASE_URL=emulator.base_url,
        HUNYUAN_IMAGES=str(images),
        HUNYUAN_STORE=str(store),
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def processes_with_env(marker: str) -> list[int]:
    """PIDs (other than ours) whose environment holds `marker`: what our test started."""
    found = []
    needle = marker.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "environ").read_bytes():
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@contextlib.contextmanager
def session_process(
    argv: list[str], *, env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen]:
    """Start `argv` as the leader of a new session; on exit end its process group by PID
    (SIGTERM, then SIGKILL after a timeout), then any process that carries our DAGSTER_HOME
    and left the group, also by PID."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        stop_group(proc)
        marker = f"DAGSTER_HOME={env['DAGSTER_HOME']}\0"
        for pid in processes_with_env(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        leftovers = wait_for_exit(marker, timeout=10)
        assert not leftovers, f"processes left running after {argv[0]}: {leftovers}"


def stop_group(proc: subprocess.Popen, timeout: float = 20) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
            # the leader is gone; make sure nothing else in its group survives it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            return
        except subprocess.TimeoutExpired:
            continue
    proc.wait(timeout=timeout)


def wait_for_exit(marker: str, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        left = [pid for pid in processes_with_env(marker) if alive(pid)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def report(name: str, seconds: float) -> None:
    print(f"[measure] {name}: {seconds:.2f} s")


# ------------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        report("postgres startup (initdb + start + createdb)", server.started_in_s)
        yield server


@pytest.fixture
def pg_home(postgres: PostgresServer, tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home_pg"
    home.mkdir()
    (home / "dagster.yaml").write_text(dagster_yaml_for(postgres.url))
    return home


def test_postgres_storage_round_trip(emulator, postgres, pg_home, tmp_path):
    from dagster_postgres import (
        PostgresEventLogStorage,
        PostgresRunStorage,
        PostgresScheduleStorage,
    )

    images = copy_images(tmp_path / "images", ("mug.png", "duck.png"))
    store_dir = tmp_path / "store"
    pipeline = pipeline_for(emulator, images, store_dir)
    keys = partition_keys(pipeline)
    assert sorted(keys) == ["duck.png", "mug.png"]

    with dg.DagsterInstance.from_config(str(pg_home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        started = time.monotonic()
        [result] = materialize_images(instance, pipeline, keys)
        report("2 images, one run, PostgreSQL storage", time.monotonic() - started)
        assert result.success
        assert materialize_prediction_log(instance, pipeline).success
        run_id = result.run_id

    # A second instance reads everything back from PostgreSQL alone.
    with dg.DagsterInstance.from_config(str(pg_home)) as reader:
        run = reader.get_run_by_id(run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        assert set(keys) <= set(reader.get_dynamic_partitions(PARTITIONS))
        meshes = latest_materializations(reader, MESHES, keys)
        sources = latest_materializations(reader, SOURCE_IMAGES, keys)
        assert set(meshes) == set(sources) == set(keys)
        for key in keys:
            meta = meshes[key].metadata
            assert meta["input_sha256"] == sources[key].metadata["sha256"]
            glb = Path(str(meta["mesh_uri"]).removeprefix("file://"))
            assert glb.is_file() and inspect_glb(glb).faces == meta["faces"]
        assert set(reader.get_materialized_partitions(MESHES)) >= set(keys)
        for name in MESH_CHECKS:
            results = check_results(reader, name)
            assert {k: results.get(k) for k in keys} == dict.fromkeys(keys, True), name
        for key in keys:  # the checks' one-query target, read from PostgreSQL's columns
            assert_target_is_the_latest_record(reader, MESHES, key)
        assert {
            k: v
            for k, v in check_results(reader, "image_decodes", SOURCE_IMAGES).items()
            if k in keys
        } == dict.fromkeys(keys, True)
        log_event = reader.get_latest_materialization_event(PREDICTION_LOG)
        assert log_event.asset_materialization.metadata["dagster/row_count"].value >= 2

    # ... and the rows are really there, in PostgreSQL's own tables.
    conn = psycopg2.connect(postgres.url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            tables = {row[0] for row in cur.fetchall()}
            assert {
                "runs",
                "event_logs",
                "asset_keys",
                "asset_check_executions",
                "dynamic_partitions",
                "instigators",
                "jobs",
                "job_ticks",
                "concurrency_limits",
            } <= tables, tables
            cur.execute("SELECT status FROM runs WHERE run_id = %s", (run_id,))
            assert cur.fetchone() == ("SUCCESS",)
            cur.execute(
                "SELECT asset_key, partition FROM event_logs WHERE run_id = %s "
                "AND dagster_event_type = 'ASSET_MATERIALIZATION'",
                (run_id,),
            )
            rows = sorted(cur.fetchall())
            assert rows == sorted(
                (asset.to_string(), key) for asset in (MESHES, SOURCE_IMAGES) for key in keys
            )
            cur.execute(
                "SELECT check_name, partition, execution_status FROM asset_check_executions "
                "WHERE run_id = %s",
                (run_id,),
            )
            executions = sorted(cur.fetchall())
            assert executions == sorted(
                (name, key, "SUCCEEDED") for name in (*MESH_CHECKS, "image_decodes") for key in keys
            )
            cur.execute(
                "SELECT partition FROM dynamic_partitions WHERE partitions_def_name = %s",
                (PARTITIONS,),
            )
            assert set(keys) <= {row[0] for row in cur.fetchall()}
    finally:
        conn.close()

    log = PredictionLog(open_mesh_store(str(store_dir))).read()
    assert sorted(log["partition_key"]) == sorted(keys)
    assert emulator.stats()["submissions"] == 2


def test_missing_postgres_binaries_fail_with_the_install_command(monkeypatch):
    import hunyuan_assets_tests.postgres as pg

    monkeypatch.setattr(pg.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(pg.shutil, "which", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y postgresql"):
        pg.find_pg_bin()


def test_external_server_gets_a_fresh_database_dropped_afterwards(postgres):
    """The HUNYUAN_TEST_POSTGRES_URL path, pointed at the throwaway server."""
    with external_postgres(libpq_url(postgres.url)) as server:
        assert server.external and server.url != libpq_url(postgres.url)
        name = server.url.rsplit("/", 1)[1]
        conn = psycopg2.connect(server.url)
        conn.close()
    conn = psycopg2.connect(libpq_url(postgres.url))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,))
            assert cur.fetchone() == (0,)
    finally:
        conn.close()


# --------------------------------------------------------------------------------- daemon


SENSOR = PROJECT.job_name("image_sensor")


def sensor_ticks(instance: dg.DagsterInstance, name: str = SENSOR) -> list:
    return instigator_ticks(instance, name)


def sensor_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": SENSOR})))


@pytest.mark.slow
def test_daemon_sensor_turns_a_dropped_image_into_a_mesh(emulator, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DAGSTER_YAML, home / "dagster.yaml")
    images = tmp_path / "images"
    images.mkdir()
    store_dir = tmp_path / "store"
    log = tmp_path / "daemon.log"
    env = process_env(home, emulator, images, store_dir, HUNYUAN_SENSOR_INTERVAL_SECONDS="3")
    # Create the SQLite storage before the daemon starts; from here on the test only reads.
    instance = dg.DagsterInstance.from_config(str(home))
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    assert type(instance.run_launcher).__name__ == "DefaultRunLauncher"

    def diagnose() -> str:
        runs = instance.get_runs()
        lines = [f"runs: {[(r.run_id[:8], r.status.value, dict(r.tags)) for r in runs]}"]
        ticks = sensor_ticks(instance)
        lines.append(f"ticks: {[(t.status, t.error) for t in ticks[:5]]}")
        for run in runs[:2]:
            for record in instance.all_logs(run.run_id)[-15:]:
                lines.append(f"  {record.dagster_event_type}: {record.message[:300]}")
        return "\n".join(lines) + f"\n--- daemon log ---\n{tail(log)}"

    try:
        started = time.monotonic()
        argv = [str(BIN / "dagster-daemon"), "run", "-w", str(WORKSPACE)]
        with session_process(argv, env=env, log=log) as daemon:

            def first_tick():
                assert daemon.poll() is None, f"dagster-daemon exited:\n{tail(log)}"
                return [t for t in sensor_ticks(instance) if t.status != "STARTED"]

            ticks = wait_for(
                first_tick, timeout=90, what="the first sensor tick", diagnose=diagnose
            )
            report("daemon start -> first sensor tick", time.monotonic() - started)
            assert ticks[0].status == "SKIPPED", ticks[0]  # empty folder: nothing to do
            assert not instance.get_runs()

            dropped = time.monotonic()
            shutil.copy(SAMPLES_DIR / "mug.png", images / "mug.png")

            def mesh_file():
                assert daemon.poll() is None, f"dagster-daemon exited:\n{tail(log)}"
                return sorted(store_dir.rglob("mesh.glb"))

            meshes = wait_for(
                mesh_file, timeout=180, what="the mesh in the store", diagnose=diagnose
            )
            report("image dropped -> mesh in the store", time.monotonic() - dropped)

            def finished_run():
                assert daemon.poll() is None, f"dagster-daemon exited:\n{tail(log)}"
                runs = sensor_runs(instance)
                if any(r.status == dg.DagsterRunStatus.FAILURE for r in runs):
                    pytest.fail(f"a sensor run failed\n{diagnose()}")
                return [r for r in runs if r.status == dg.DagsterRunStatus.SUCCESS]

            [run] = wait_for(finished_run, timeout=60, what="a successful run", diagnose=diagnose)
            report("image dropped -> run SUCCESS", time.monotonic() - dropped)
            stats = instance.get_run_stats(run.run_id)
            report("  run created -> end", stats.end_time - run_record_created(instance, run))
    finally:
        instance.dispose()

    assert run.tags["hunyuan/trigger"] == "image_sensor"
    assert run.tags["dagster/partition"] == "mug.png"
    assert run.job_name == "hunyuan3d_meshes_job" == PROJECT.job_name("meshes_job")
    [mesh] = meshes
    info = inspect_glb(mesh)
    assert info.faces > 1000 and info.has_base_color_texture
    assert (mesh.parent / "preview.png").is_file()
    assert emulator.stats()["submissions"] == 1
    with dg.DagsterInstance.from_config(str(home)) as reader:
        assert reader.get_dynamic_partitions(PROJECT.partitions) == ["mug.png"]
        event = latest_materializations(reader, PROJECT.meshes_key, ["mug.png"])["mug.png"]
        assert Path(str(event.metadata["mesh_uri"]).removeprefix("file://")) == mesh
        for name in MESH_CHECKS:
            assert check_results(reader, name, PROJECT.meshes_key) == {"mug.png": True}, name
        # queued by the QueuedRunCoordinator, launched as a run worker, step in a subprocess
        types = {
            r.dagster_event_type.value for r in reader.all_logs(run.run_id) if r.is_dagster_event
        }
        assert {
            "PIPELINE_ENQUEUED",
            "PIPELINE_STARTING",
            "PIPELINE_START",
            "STEP_WORKER_STARTING",
            "PIPELINE_SUCCESS",
        } <= types, types
        # the `wavespeed` pool got `default_limit` slots from dagster.yaml, and gave them back
        pool = reader.event_log_storage.get_concurrency_info("wavespeed")
        assert pool.slot_count == 1 and pool.using_default_limit and not pool.claimed_slots
    log_rows = PredictionLog(open_mesh_store(str(store_dir))).read()
    assert list(log_rows["status"]) == ["completed"]


def run_record_created(instance: dg.DagsterInstance, run: dg.DagsterRun) -> float:
    [record] = instance.get_run_records(filters=dg.RunsFilter(run_ids=[run.run_id]))
    return record.create_timestamp.timestamp()


# ------------------------------------------------------------------------------------ CLI


@pytest.fixture
def cli_env(emulator, tmp_path: Path) -> dict[str, str]:
    """A DAGSTER_HOME with the repo's dagster.yaml, an empty image folder (so the default-
    running sensor requests nothing) and the emulator as the API."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DAGSTER_YAML, home / "dagster.yaml")
    (tmp_path / "images").mkdir()
    return process_env(home, emulator, tmp_path / "images", tmp_path / "store")


@pytest.mark.slow
def test_definitions_validate(cli_env):
    started = time.monotonic()
    proc = subprocess.run(
        [str(BIN / "dagster"), "definitions", "validate", "-w", str(WORKSPACE)],
        cwd=REPO,
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    report("dagster definitions validate", time.monotonic() - started)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Validation successful" in proc.stdout + proc.stderr


WORKSPACE_QUERY = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
  }
  repositoriesOrError {
    __typename
    ... on RepositoryConnection {
      nodes {
        name
        location { name }
        sensors { name minIntervalSeconds sensorState { status } }
        schedules { name cronSchedule scheduleState { status } }
      }
    }
  }
}
"""


@pytest.mark.slow
def test_dagster_dev_lists_sensor_and_schedules(cli_env, tmp_path):
    port = free_port()
    log = tmp_path / "dagster_dev.log"
    argv = [str(BIN / "dagster"), "dev", "-w", str(WORKSPACE), "-h", "127.0.0.1", "-p", str(port)]
    url = f"http://127.0.0.1:{port}/graphql"
    started = time.monotonic()
    with session_process(argv, env=cli_env, log=log) as dev:

        def loaded():
            assert dev.poll() is None, f"dagster dev exited:\n{tail(log)}"
            try:
                reply = httpx.post(url, json={"query": WORKSPACE_QUERY}, timeout=10)
            except httpx.HTTPError:
                return None
            if reply.status_code != 200:
                return None
            data = reply.json()["data"]
            entries = data["workspaceOrError"].get("locationEntries") or []
            if not entries or entries[0]["loadStatus"] != "LOADED":
                return None
            return data

        data = wait_for(
            loaded, timeout=120, what="dagster dev's GraphQL", diagnose=lambda: tail(log)
        )
        report("dagster dev start -> code location loaded", time.monotonic() - started)

    [entry] = data["workspaceOrError"]["locationEntries"]
    assert entry["name"] == "hunyuan_assets"
    assert entry["locationOrLoadError"]["__typename"] == "RepositoryLocation", entry
    [repo] = data["repositoriesOrError"]["nodes"]
    sensors = {s["name"]: s for s in repo["sensors"]}
    schedules = {s["name"]: s for s in repo["schedules"]}
    assert set(sensors) == {"hunyuan3d_image_sensor", "hunyuan3d_dead_run_sensor"}
    assert sensors[SENSOR]["sensorState"]["status"] == "RUNNING"
    assert sensors[SENSOR]["minIntervalSeconds"] == 30  # the default, env var unset
    refresh, compaction = "hunyuan3d_refresh_schedule", "hunyuan3d_compaction_schedule"
    assert set(schedules) == {refresh, compaction}
    assert {s["scheduleState"]["status"] for s in schedules.values()} == {"RUNNING"}
    assert schedules[refresh]["cronSchedule"] == PROJECT.refresh_cron
    assert schedules[compaction]["cronSchedule"] == PROJECT.compaction_cron


def test_repo_instance_config_heals_crashed_runs(tmp_path):
    """dagster.yaml: a dead run worker is noticed (run monitoring) and the run retried, step
    failures are left to the step's RetryPolicy, and one `meshes` step holds the pool."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.run_monitoring_enabled
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert instance.run_retries_retry_on_asset_or_op_failure is False
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
