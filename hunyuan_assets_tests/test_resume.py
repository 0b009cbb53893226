"""Crash-safe resume and no double pay, over real HTTP against the emulator.

Every test counts `submissions` at the emulator: one submission is one paid prediction.
Runs that must die are real processes killed with SIGKILL; runs that must overlap really do
(the emulator holds predictions `processing` until both are waiting). No sleeps synchronise
anything: `wait_until` polls a condition under a deadline.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from hunyuan_assets.client import (
    DEFAULT_MODEL,
    AsyncHunyuan3DClient,
    ClientSettings,
    HttpRetryPolicy,
    PollPolicy,
    PredictionFailedError,
)
from hunyuan_assets.core.log import PredictionLog
from hunyuan_assets.core.mesh_generation import GenerationPolicy, MeshGenerator, MeshRequest
from hunyuan_assets.core.reconciliation import ReconcilePolicy
from hunyuan_assets.core.records import PredictionRecord, PredictionRecords, now_iso, record_prefix
from hunyuan_assets.core.sources import SAMPLES_DIR
from hunyuan_assets.core.store import LocalMeshStore
from hunyuan_assets.emulator import EmulatorServer
from hunyuan_assets.integration.backfill import add_image_partitions, materialize_images
from hunyuan_assets.integration.factory import MeshPipeline
from hunyuan_assets.integration.lineage import latest_materializations
from hunyuan_assets_tests.fault_cases import make_images
from hunyuan_assets_tests.helpers import FAST_POLL, MESHES, NAME, pipeline_for, with_hunyuan3d

IMAGE = "mug.png"
SHA256 = hashlib.sha256((SAMPLES_DIR / IMAGE).read_bytes()).hexdigest()
PREFIX = record_prefix(SHA256, DEFAULT_MODEL)
MESH_LOGGER = "hunyuan_assets.core.mesh_generation"

# Materializes the partitions named on the command line against $DAGSTER_HOME, like a run
# launched by Dagster would, with the pipeline the test process uses to resume: the project's
# own, configured from the environment (HUNYUAN_NAME, HUNYUAN_IMAGES, ...), with fast polls.
RUNNER = textwrap.dedent(
    """
    import dataclasses, logging, os, sys
    import dagster as dg
    from hunyuan_assets.definitions import settings_from_environment
    from hunyuan_assets.integration.backfill import materialize_images
    from hunyuan_assets.integration.factory import build_mesh_pipeline
    from hunyuan_assets.integration.resource import Hunyuan3DResource

    mesh_logger = logging.getLogger("hunyuan_assets.core.mesh_generation")
    mesh_logger.setLevel(logging.INFO)
    mesh_logger.addHandler(logging.StreamHandler(sys.stdout))
    pipeline = build_mesh_pipeline(**settings_from_environment())
    resources = dict(pipeline.resources)
    resources[pipeline.settings.hunyuan3d_resource] = Hunyuan3DResource(
        base_url=os.environ["WAVESPEED_BASE_URL"],
        poll_initial_interval=0.05,
        poll_max_interval=0.2,
        wait_deadline=float(os.environ.get("TEST_WAIT_DEADLINE", "1800")),
    )
    pipeline = dataclasses.replace(pipeline, resources=resources)
    instance = dg.DagsterInstance.from_config(os.environ["DAGSTER_HOME"])
    results = materialize_images(instance, pipeline, sys.argv[1:])
    sys.exit(0 if all(r.success for r in results) else 1)
    """
)


# -- helpers -----------------------------------------------------------------------------------
def wait_until(
    condition: Callable[[], object], what: str, timeout: float = 30.0, proc=None
) -> object:
    """Poll `condition` until it is truthy; fail with `what` at the deadline, or at once when
    `proc` (a run that should still be alive) has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the run exited ({proc.returncode}) before {what}:\n{proc.output()}")
        time.sleep(0.02)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}")


def latest_record(store_dir: Path) -> PredictionRecord | None:
    return PredictionRecords(LocalMeshStore(store_dir)).latest(PREFIX)


def pending_record(store_dir: Path) -> PredictionRecord | None:
    record = latest_record(store_dir)
    return record if record is not None and record.state == "pending" else None


def resuming_pipeline(emulator, images: Path, store: Path) -> MeshPipeline:
    """The pipeline a run in this process resumes with: the runner's, polling as fast."""
    return with_hunyuan3d(pipeline_for(emulator, images, store), **FAST_POLL)


def log_rows(store_dir: Path) -> list[dict]:
    frame = PredictionLog(LocalMeshStore(store_dir)).read().sort_values("logged_at")
    return frame[["prediction_id", "status", "error", "attempt"]].to_dict("records")


class Run:
    """`RUNNER` in its own process group, so SIGKILL takes the whole run down at once."""

    def __init__(self, tmp: Path, env: dict[str, str], keys: list[str]) -> None:
        script = tmp / "runner.py"
        script.write_text(RUNNER)
        self.out = (tmp / f"run-{time.monotonic_ns()}.log").open("w+")
        self.proc = subprocess.Popen(
            [sys.executable, str(script), *keys],
            env={**os.environ, **env},
            stdout=self.out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def poll(self) -> int | None:
        return self.proc.poll()

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def output(self) -> str:
        self.out.seek(0)
        return self.out.read()[-4000:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.out.close()


class MeshLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, needle: str) -> list[str]:
        return [m for r in list(self.records) if needle in (m := r.getMessage())]


@pytest.fixture
def mesh_log() -> Iterator[MeshLog]:
    handler, logger = MeshLog(), logging.getLogger(MESH_LOGGER)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


@pytest.fixture
def images_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(SAMPLES_DIR / IMAGE, folder / IMAGE)
    return folder


@pytest.fixture
def dagster_home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    return home


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[Callable[..., Run]]:
    started: list[Run] = []

    def start(env: dict[str, str], keys: list[str]) -> Run:
        started.append(Run(tmp_path, env, keys))
        return started[-1]

    yield start
    for run in started:  # a failed test must not leave a run behind
        run.kill()


def run_env(emulator, images: Path, store: Path, home: Path, **extra: str) -> dict[str, str]:
    return {
        "WAVESPEED_BASE_URL": emulator.base_url,
        "HUNYUAN_NAME": NAME,
        "HUNYUAN_IMAGES": str(images),
        "HUNYUAN_STORE": str(store),
        "DAGSTER_HOME": str(home),
        **extra,
    }


# -- 1. a killed run ---------------------------------------------------------------------------
def test_killed_run_resumes_its_prediction(emulator, runs, images_dir, dagster_home, tmp_path):
    store_dir = tmp_path / "store"
    emulator.configure(hold=True)
    started = time.monotonic()
    run = runs(run_env(emulator, images_dir, store_dir, dagster_home), [IMAGE])
    record = wait_until(lambda: pending_record(store_dir), "the pending record", proc=run)
    recorded_at = time.monotonic()
    run.kill()
    killed_at = time.monotonic()
    assert emulator.stats()["submissions"] == 1
    # Paid for, still running: `created` for its first moments (the emulator's first tenth
    # of a task, at most 0.5 s; a kill right after the pending record can land in it).
    states = emulator.stats()["predictions"]
    assert states["created"] + states["processing"] == 1

    emulator.configure(hold=False)
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        [result] = materialize_images(
            instance, resuming_pipeline(emulator, images_dir, store_dir), [IMAGE]
        )
        assert result.success
        assert emulator.stats()["submissions"] == 1, "the resumed run paid again"
        assert IMAGE in instance.get_materialized_partitions(MESHES)
        meta = latest_materializations(instance, MESHES, [IMAGE])[IMAGE].metadata
    resumed_at = time.monotonic()
    assert meta["prediction_id"] == record.prediction_id
    assert meta["resumed_prediction"] is True
    assert Path(meta["mesh_uri"].removeprefix("file://")).is_file()
    assert latest_record(store_dir).state == "completed"
    assert [(r["prediction_id"], r["status"]) for r in log_rows(store_dir)] == [
        (record.prediction_id, "completed")
    ]
    print(
        f"\nkill/resume: pending record {recorded_at - started:.2f} s after start; "
        f"SIGKILL took {killed_at - recorded_at:.3f} s; resume run {resumed_at - killed_at:.2f} s"
    )


def test_a_run_killed_mid_download_leaves_no_scratch_folder_for_good(
    emulator, runs, images_dir, dagster_home, tmp_path, monkeypatch
):
    """A run killed while downloading cannot remove its scratch folder; the next run removes
    it once it is an hour old, and leaves a running process's folders (its own too) alone."""
    from hunyuan_assets.core import scratch

    store_dir, scratch_root = tmp_path / "store", tmp_path / "scratch"
    scratch_root.mkdir()
    emulator.configure(rules=[{"endpoint": "output", "kind": "slow", "delay": 10, "count": 1}])
    env = run_env(emulator, images_dir, store_dir, dagster_home, TMPDIR=str(scratch_root))
    run = runs(env, [IMAGE])
    [left] = wait_until(lambda: list(scratch_root.glob("hunyuan-mesh-*")), "a download", proc=run)
    assert left.name.startswith(f"hunyuan-mesh-{run.proc.pid}-")
    run.kill()
    emulator.configure(rules=[])
    hour_ago = time.time() - scratch.ORPHANED_AFTER_SECONDS - 60
    os.utime(left, (hour_ago, hour_ago))
    monkeypatch.setattr("tempfile.tempdir", str(scratch_root))
    recent = scratch.make_scratch_dir()  # this process's: it is alive
    os.utime(recent, (hour_ago, hour_ago))
    other = scratch_root / f"hunyuan-mesh-{run.proc.pid}-recent"  # dead, but touched lately
    other.mkdir()

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        [result] = materialize_images(
            instance, resuming_pipeline(emulator, images_dir, store_dir), [IMAGE]
        )
    assert result.success
    assert not left.exists()
    assert recent.is_dir() and other.is_dir()
    assert sorted(p.name for p in scratch_root.iterdir()) == sorted([recent.name, other.name])


def test_scratch_folders_without_a_process_id_go_by_age_alone(tmp_path):
    from hunyuan_assets.core import scratch

    old_style, fresh_style = tmp_path / "hunyuan-mesh-ab12cd", tmp_path / "hunyuan-mesh-ef34gh"
    for folder in (old_style, fresh_style):
        folder.mkdir()
        (folder / "mesh.glb").write_bytes(b"x")
    a_file, unrelated = tmp_path / "hunyuan-mesh-file", tmp_path / "someone-elses"
    a_file.write_bytes(b"x")
    unrelated.mkdir()
    later = time.time() + scratch.ORPHANED_AFTER_SECONDS + 1
    for path in (old_style, old_style / "mesh.glb", a_file, unrelated):
        os.utime(path, (0, 0))
    assert scratch.remove_orphaned_scratch_dirs(tmp_path) == 1  # the one untouched for long
    assert fresh_style.is_dir() and not old_style.exists()
    assert scratch.remove_orphaned_scratch_dirs(tmp_path, now=later) == 1  # an hour on
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hunyuan-mesh-file", "someone-elses"]


# -- 2. stale, failed and unresolved records -----------------------------------------------
def settings_for(emulator) -> ClientSettings:
    """Fast polls, and a client that gives up after 3 attempts at a failing request."""
    return ClientSettings(
        api_key="test",
        base_url=emulator.base_url,
        poll=PollPolicy(initial_interval=0.05, max_interval=0.2, deadline=30),
        retry=HttpRetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05),
    )


async def upload(emulator) -> MeshRequest:
    async with AsyncHunyuan3DClient(settings_for(emulator)) as client:
        url = await client.upload(SAMPLES_DIR / IMAGE)
    return MeshRequest(IMAGE, str(SAMPLES_DIR / IMAGE), SHA256, url)


async def generate(
    emulator,
    store: LocalMeshStore,
    request: MeshRequest,
    run_id: str = "r1",
    reconcile: ReconcilePolicy | None = None,
):
    """One attempt of the `meshes` step at the MeshGenerator level (a Dagster step retry
    reruns exactly this with the same run id)."""
    async with AsyncHunyuan3DClient(settings_for(emulator)) as client:
        policy = GenerationPolicy(
            model=DEFAULT_MODEL,
            run_id=run_id,
            claim_wait_seconds=10,
            reconcile=reconcile or ReconcilePolicy(),
        )
        [outcome] = [o async for o in MeshGenerator(client, store, policy, 2).run([request])]
    return outcome


def write_record(store: LocalMeshStore, **fields) -> PredictionRecord:
    defaults = {"partition_key": IMAGE, "run_id": "dead-run", "updated_at": now_iso()}
    record = PredictionRecord(image_sha256=SHA256, model=DEFAULT_MODEL, **{**defaults, **fields})
    PredictionRecords(store).put(PREFIX, record)
    return record


async def failed_prediction(emulator, request: MeshRequest) -> str:
    emulator.configure(fail_tasks={"count": 1, "error": "model crashed"})
    async with AsyncHunyuan3DClient(settings_for(emulator)) as client:
        prediction = await client.submit(request.image_url)
        with pytest.raises(PredictionFailedError):
            await client.wait(prediction)
    return prediction.id


@pytest.mark.parametrize("how", ["unknown id", "failed unseen", "failed"])
def test_stale_or_failed_record_pays_exactly_once_more(emulator, tmp_path, how):
    store = LocalMeshStore(tmp_path / "store")
    request = asyncio.run(upload(emulator))
    if how == "unknown id":  # e.g. past the 7-day retention, or another account's key
        write_record(store, state="pending", prediction_id="f" * 32)
    else:  # "failed unseen": the run that submitted it died before seeing it fail
        state = "pending" if how == "failed unseen" else "failed"
        pid = asyncio.run(failed_prediction(emulator, request))
        write_record(store, state=state, prediction_id=pid)
    before = emulator.stats()["submissions"]

    outcome = asyncio.run(generate(emulator, store, request))
    assert outcome.status == "completed", outcome.error
    assert emulator.stats()["submissions"] == before + 1
    assert latest_record(store.root).generation == 2 and outcome.attempt == 2
    if how != "failed":  # a leftover found dead is reported, so the log can name it
        [old] = outcome.superseded
        assert old.attempt == 1 and old.prediction_id and old.error
    else:
        assert outcome.superseded == ()
    # and nothing more on the next run: the new mesh is reused
    assert asyncio.run(generate(emulator, store, request, "r2")).status == "reused"
    assert emulator.stats()["submissions"] == before + 1


def test_a_fresh_attempt_that_fails_is_not_resubmitted(emulator, tmp_path):
    store = LocalMeshStore(tmp_path / "store")
    request = asyncio.run(upload(emulator))
    emulator.configure(fail_tasks={"count": 2, "error": "model crashed"})
    write_record(store, state="pending", prediction_id="f" * 32)  # unknown: one resubmission
    outcome = asyncio.run(generate(emulator, store, request))
    assert outcome.status == "failed" and "model crashed" in outcome.error
    assert emulator.stats()["submissions"] == 1  # the new one failed too: no loop


def test_a_step_retry_never_pays_again_for_a_failed_picture(emulator, tmp_path):
    """A step retry redoes failed partitions too (when another one failed transiently): the
    same run must not pay for a permanently failed picture again; a new run may, once."""
    store = LocalMeshStore(tmp_path / "store")
    request = asyncio.run(upload(emulator))
    emulator.configure(fail_tasks={"count": 1, "error": "model crashed"})
    assert asyncio.run(generate(emulator, store, request, "r1")).status == "failed"
    retry = asyncio.run(generate(emulator, store, request, "r1"))
    assert retry.error_type == "ResubmissionRefusedError" and not retry.transient
    assert "model crashed" in retry.error and emulator.stats()["submissions"] == 1
    assert asyncio.run(generate(emulator, store, request, "r2")).status == "completed"
    assert emulator.stats()["submissions"] == 2


def test_concurrent_runs_take_over_a_failed_record_once(emulator, tmp_path):
    store = LocalMeshStore(tmp_path / "store")
    request = asyncio.run(upload(emulator))
    write_record(store, state="failed", prediction_id="f" * 32, error="model crashed")

    async def both():
        return await asyncio.gather(*(generate(emulator, store, request, f"r{i}") for i in (1, 2)))

    outcomes = asyncio.run(both())
    assert [o.status for o in outcomes] == ["completed", "completed"]
    assert emulator.stats()["submissions"] == 1
    assert sorted(o.resumed for o in outcomes) == [False, True]


def test_concurrent_resumers_of_a_lost_prediction_replace_it_once(emulator, tmp_path):
    """Two runs find the same unknown prediction; its replacement fails too: one new
    submission in all, not one per run."""
    store = LocalMeshStore(tmp_path / "store")
    request = asyncio.run(upload(emulator))
    write_record(store, state="pending", prediction_id="f" * 32)
    emulator.configure(fail_tasks={"count": 1, "error": "model crashed"})

    async def both():
        return await asyncio.gather(*(generate(emulator, store, request, f"r{i}") for i in (1, 2)))

    outcomes = asyncio.run(both())
    assert [o.status for o in outcomes] == ["failed", "failed"]
    assert all("model crashed" in o.error for o in outcomes)
    assert emulator.stats()["submissions"] == 1


QUICK_RECONCILE = ReconcilePolicy(skew_seconds=2.0, settle_seconds=0.0, in_flight_wait_seconds=5)


def test_a_lost_answer_whose_prediction_exists_is_adopted_not_paid_again(emulator, tmp_path):
    """The connection dropped after the server accepted the submit: the predictions list
    shows one unknown prediction in the submit's window, so it is ours."""
    store = LocalMeshStore(tmp_path / "store")
    request = asyncio.run(upload(emulator))
    emulator.configure(rules=[{"endpoint": "submit", "kind": "drop_after_accept"}])
    outcome = asyncio.run(generate(emulator, store, request, reconcile=QUICK_RECONCILE))
    assert outcome.status == "completed", outcome.error
    assert emulator.stats()["submissions"] == 1  # accepted once, adopted, never resent
    assert emulator.stats()["list_requests"] >= 1
    record = latest_record(store.root)
    assert record.state == "completed" and "adopted" in record.details
    assert record.prediction_id == outcome.prediction.id
    assert not outcome.superseded


def test_a_lost_submit_that_never_arrived_is_sent_once_more_and_logged(emulator, tmp_path):
    """The connection dropped before the server read the request: nothing was created in
    the window, so the picture is submitted once more, and the log says why."""
    store = LocalMeshStore(tmp_path / "store")
    request = asyncio.run(upload(emulator))
    emulator.configure(rules=[{"endpoint": "submit", "kind": "drop"}])
    outcome = asyncio.run(generate(emulator, store, request, reconcile=QUICK_RECONCILE))
    assert outcome.status == "completed", outcome.error
    assert emulator.stats()["submissions"] == 1  # the dropped one created nothing
    assert emulator.stats()["requests"]["submit"] == 2
    [never] = outcome.superseded
    assert "never arrived" in never.error and never.prediction_id == "" and never.cost_usd == 0
    assert latest_record(store.root).generation == 2


async def submit_directly(emulator, image_url: str) -> str:
    """A prediction made with the client alone: no record or journal in any store knows it."""
    async with AsyncHunyuan3DClient(settings_for(emulator)) as client:
        return (await client.submit(image_url)).id


def test_an_unknown_prediction_beside_ours_keeps_the_submit_refused(emulator, tmp_path):
    """Something else (the website, another tool) made a prediction in the same window: which
    one is ours cannot be told, so nothing is adopted or resubmitted; the error names both."""
    store = LocalMeshStore(tmp_path / "store")
    request = asyncio.run(upload(emulator))

    other = asyncio.run(submit_directly(emulator, request.image_url))  # not through the store
    emulator.configure(rules=[{"endpoint": "submit", "kind": "drop_after_accept"}])
    outcome = asyncio.run(generate(emulator, store, request, reconcile=QUICK_RECONCILE))
    assert outcome.error_type == "ResubmissionRefusedError" and not outcome.transient
    assert other in outcome.error and "2 unknown prediction(s)" in outcome.error
    assert latest_record(store.root).state == "uncertain"
    assert emulator.stats()["submissions"] == 2  # the outsider's and ours: nothing more

    # A later attempt (the refresh schedule's) reconciles again: still two, still refused.
    again = asyncio.run(generate(emulator, store, request, "r2", reconcile=QUICK_RECONCILE))
    assert again.error_type == "ResubmissionRefusedError"
    assert emulator.stats()["submissions"] == 2


def test_a_claim_whose_run_died_mid_submit_is_reconciled(emulator, tmp_path):
    """A run claimed the picture an hour ago and died before recording a prediction id: the
    list shows nothing then, so exactly one submission follows."""
    store = LocalMeshStore(tmp_path / "store")
    request = asyncio.run(upload(emulator))
    an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    write_record(store, state="submitting", updated_at=an_hour_ago)
    outcome = asyncio.run(generate(emulator, store, request, reconcile=QUICK_RECONCILE))
    assert outcome.status == "completed", outcome.error
    assert emulator.stats()["submissions"] == 1


def test_a_claim_whose_run_died_after_its_prediction_was_made_adopts_it(tmp_path):
    """The dead run's POST did create a prediction: it is found in the claim's window and
    adopted, so nothing is paid twice (the emulator's clock puts it 70 s back)."""
    offset = [timedelta(seconds=70)]
    with EmulatorServer(latency=0.2, clock=lambda: datetime.now(UTC) - offset[0]) as emulator:
        store = LocalMeshStore(tmp_path / "store")
        request = asyncio.run(upload(emulator))

        made = asyncio.run(submit_directly(emulator, request.image_url))  # the dead run's POST
        offset[0] = timedelta(0)
        claimed = (datetime.now(UTC) - timedelta(seconds=70.5)).isoformat()
        write_record(store, state="submitting", updated_at=claimed)
        outcome = asyncio.run(generate(emulator, store, request, reconcile=QUICK_RECONCILE))
    assert outcome.status == "completed", outcome.error
    assert outcome.prediction.id == made
    assert emulator.stats()["submissions"] == 1


def test_waiting_on_a_live_claim_follows_its_result(emulator, tmp_path, mesh_log):
    """Another run holds the claim; it finishes (mesh stored) before we look again."""
    store = LocalMeshStore(tmp_path / "store")
    request = asyncio.run(upload(emulator))
    claim = write_record(store, state="submitting")
    results: list = []
    waiting = threading.Thread(
        target=lambda: results.append(asyncio.run(generate(emulator, store, request)))
    )
    waiting.start()
    wait_until(lambda: mesh_log.messages("waiting for run dead-run"), "the run to wait")
    store.put_bytes("meshes/done/mesh.glb", (SAMPLES_DIR / IMAGE).read_bytes())
    PredictionRecords(store).put(
        PREFIX, claim.evolve(state="completed", prediction_id="p1", mesh_key="meshes/done/mesh.glb")
    )
    waiting.join(timeout=30)
    assert results[0].status == "reused"
    assert emulator.stats()["submissions"] == 0


# -- 3. two runs at once -------------------------------------------------------------------
def test_two_runs_of_one_partition_pay_once(emulator, runs, images_dir, dagster_home, tmp_path):
    """Two runs of the same partition on one instance, overlapping for real: the emulator holds
    the prediction until both are waiting on it. (Two `materialize` calls in threads of one
    process can deadlock inside Dagster's logging setup, so these are two processes.)"""
    store_dir = tmp_path / "store"
    emulator.configure(hold=True)
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        add_image_partitions(instance, resuming_pipeline(emulator, images_dir, store_dir), [IMAGE])
    env = run_env(emulator, images_dir, store_dir, dagster_home)
    both = [runs(env, [IMAGE]) for _ in range(2)]
    for run in both:
        wait_until(lambda: "waiting on prediction" in run.output(), "both runs to wait", proc=run)  # noqa: B023
    assert emulator.stats()["submissions"] == 1

    emulator.configure(hold=False)
    assert [run.proc.wait(timeout=60) for run in both] == [0, 0], both[0].output()
    assert emulator.stats()["submissions"] == 1
    how = sorted(run.output().split("waiting on prediction", 1)[1].split(", ")[1] for run in both)
    assert how == ["resumed", "submitted"]
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        runs_done = instance.get_runs()
        assert len(runs_done) == 2 and all(r.is_success for r in runs_done)
        for run in runs_done:
            mats = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
            meshes = [e for e in mats if e.dagster_event.asset_key == MESHES]
            assert [e.dagster_event.partition for e in meshes] == [IMAGE]
    assert latest_record(store_dir).state == "completed"
    assert len(list(store_dir.rglob("mesh.glb"))) == 1


# -- 4 and 5. a retryable step failure, then the retry ---------------------------------------
def test_wait_timeout_fails_the_step_retryably_and_the_retry_resumes(
    emulator, runs, images_dir, dagster_home, tmp_path
):
    """The run gives up waiting (deadline), Dagster schedules a step retry (the RetryPolicy's
    15 s delay is too slow for a test, so the run is killed there and run again): the retry
    resumes the same prediction, and the log has the failed attempt and the success."""
    store_dir = tmp_path / "store"
    emulator.configure(hold=True)
    env = run_env(emulator, images_dir, store_dir, dagster_home, TEST_WAIT_DEADLINE="0.3")
    run = runs(env, [IMAGE])
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:

        def retry_scheduled() -> bool:
            return any(
                instance.all_logs(r.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
                for r in instance.get_runs()
            )

        wait_until(retry_scheduled, "Dagster to schedule a step retry", proc=run)
        run.kill()
        [failed] = log_rows(store_dir)
        assert failed["status"] == "failed" and "still 'processing'" in failed["error"]
        assert pending_record(store_dir).prediction_id == failed["prediction_id"]

        emulator.configure(hold=False)
        [result] = materialize_images(
            instance, resuming_pipeline(emulator, images_dir, store_dir), [IMAGE]
        )
        assert result.success
    assert emulator.stats()["submissions"] == 1
    rows = log_rows(store_dir)
    assert [r["status"] for r in rows] == ["failed", "completed"]
    assert rows[0]["prediction_id"] == rows[1]["prediction_id"]


@pytest.mark.parametrize("endpoint", ["result", "output"])
def test_transient_http_failures_resume_the_same_prediction(emulator, tmp_path, endpoint):
    """503s until the client gives up (3 attempts) while polling or downloading: the attempt
    fails transient, the record stays pending, and the step retry pays nothing."""
    store = LocalMeshStore(tmp_path / "store")
    request = asyncio.run(upload(emulator))
    emulator.configure(rules=[{"endpoint": endpoint, "kind": "503", "count": 3}])
    first = asyncio.run(generate(emulator, store, request))
    assert first.status == "failed" and first.transient, first.error
    assert latest_record(store.root).state == "pending"
    retry = asyncio.run(generate(emulator, store, request))
    assert retry.status == "completed" and retry.resumed
    assert emulator.stats()["submissions"] == 1


def test_failed_prediction_then_rerun_logs_both_attempts(emulator, images_dir, tmp_path):
    store_dir = tmp_path / "store"
    pipeline = resuming_pipeline(emulator, images_dir, store_dir)
    emulator.configure(fail_tasks={"count": 1, "error": "model crashed"})
    with dg.instance_for_test() as instance:
        [first] = materialize_images(instance, pipeline, [IMAGE])
        assert not first.success
        [second] = materialize_images(instance, pipeline, [IMAGE])
        assert second.success
    assert emulator.stats()["submissions"] == 2
    rows = log_rows(store_dir)
    assert [(r["status"], r["attempt"]) for r in rows] == [("failed", 1), ("completed", 2)]
    assert "model crashed" in rows[0]["error"]
    assert rows[0]["prediction_id"] != rows[1]["prediction_id"]


@pytest.mark.parametrize(("in_flight", "learn_together"), [(2, False), (8, True)])
def test_waits_learn_together_only_with_many_in_flight(
    emulator, tmp_path, in_flight, learn_together
) -> None:
    """From 8 predictions in flight, MeshGenerator's waits share a wake event (their
    schedules stretched until the run can forecast); below that they poll plainly."""
    given: list[object] = []

    class Recording(AsyncHunyuan3DClient):
        async def wait(self, prediction, **kwargs):  # type: ignore[override]
            given.append(kwargs.get("wake"))
            return await super().wait(prediction, **kwargs)

    async def scenario():
        request = await upload(emulator)
        async with Recording(settings_for(emulator)) as client:
            policy = GenerationPolicy(model=DEFAULT_MODEL, run_id="r1")
            generator = MeshGenerator(client, LocalMeshStore(tmp_path), policy, in_flight)
            return [o async for o in generator.run([request])]

    [outcome] = asyncio.run(scenario())
    assert outcome.status == "completed"
    assert len(given) == 1
    assert isinstance(given[0], asyncio.Event) is learn_together


def test_a_wave_of_completions_downloads_at_most_32_at_once(emulator, tmp_path) -> None:
    """40 in flight, completing together: the downloads are held back at 32 (each held open
    until the rest either join it or all 40 predictions are done), so memory does not grow
    with a wave of completions."""
    count, state = 40, {"entered": 0, "peak": 0, "waited": 0}
    gate = asyncio.Event()

    def maybe_open() -> None:
        if state["entered"] == count or (state["waited"] == count and state["entered"] >= 32):
            gate.set()

    class Gated(AsyncHunyuan3DClient):
        async def wait(self, prediction, **kwargs):  # type: ignore[override]
            done = await super().wait(prediction, **kwargs)
            state["waited"] += 1
            maybe_open()
            return done

        async def download(self, url, dest, **kwargs):  # type: ignore[override]
            state["entered"] += 1
            state["peak"] = max(state["peak"], state["entered"])
            maybe_open()
            await gate.wait()
            try:
                return await super().download(url, dest, **kwargs)
            finally:
                state["entered"] -= 1

    images = make_images(tmp_path / "images", count)

    async def scenario():
        async with Gated(settings_for(emulator)) as client:
            requests = []
            for path in images:
                sha = hashlib.sha256(path.read_bytes()).hexdigest()
                url = await client.upload(path)
                requests.append(MeshRequest(path.name, str(path), sha, url))
            policy = GenerationPolicy(model=DEFAULT_MODEL, run_id="r1")
            generator = MeshGenerator(client, LocalMeshStore(tmp_path / "store"), policy, count)
            return [o async for o in generator.run(requests)]

    outcomes = asyncio.run(scenario())
    assert [o.status for o in outcomes] == ["completed"] * count
    assert state["peak"] == 32


def test_an_analysis_worker_that_keeps_dying_fails_the_partition_and_costs_nothing_more(
    emulator, tmp_path, monkeypatch
) -> None:
    """The pool breaks again after its replacement: the partition fails as transient (its
    row names the paid-for prediction), the record stays pending, and the next run downloads
    and analyses the same output: still one submission."""
    from concurrent.futures.process import BrokenProcessPool

    from hunyuan_assets.core import mesh_generation

    async def dies(*args, **kwargs):
        raise BrokenProcessPool("A process in the process pool was terminated abruptly")

    store = LocalMeshStore(tmp_path / "store")

    async def attempt(run_id: str):
        request = await upload(emulator)
        async with AsyncHunyuan3DClient(settings_for(emulator)) as client:
            policy = GenerationPolicy(
                model=DEFAULT_MODEL, run_id=run_id, analysis_in_processes=True
            )
            generator = MeshGenerator(client, store, policy, 2, log=PredictionLog(store))
            [outcome] = [o async for o in generator.run([request])]
        return outcome

    monkeypatch.setattr(mesh_generation.mesh_work, "analyse", dies)
    failed = asyncio.run(attempt("r1"))
    assert failed.status == "failed" and failed.transient
    assert "died twice" in (failed.error or "") and failed.prediction is not None
    assert PredictionRecords(store).latest(PREFIX).state == "pending"
    monkeypatch.undo()
    try:
        done = asyncio.run(attempt("r2"))
    finally:
        mesh_work_shutdown()
    assert done.status == "completed" and done.prediction.id == failed.prediction.id
    assert emulator.stats()["submissions"] == 1
    log = PredictionLog(store).read()
    assert set(log["prediction_id"]) == {failed.prediction.id}
    assert sorted(log["status"]) == ["completed", "failed"]


def mesh_work_shutdown() -> None:
    from hunyuan_assets.core import mesh_work

    mesh_work.shutdown()


def test_a_bug_in_one_picture_stops_the_others_before_the_run_raises(emulator, tmp_path):
    """An unexpected error in one picture ends the run; `gather` leaves the other pictures'
    work running, and the caller then closes the client under their requests (seen: "retrying
    PUT ... (ReadError)" after the step had failed). They are cancelled and awaited first."""
    both_waiting = asyncio.Event()
    state = {"waiting": 0, "cancelled": 0}

    class Buggy(AsyncHunyuan3DClient):
        async def wait(self, prediction, **kwargs):  # type: ignore[override]
            state["waiting"] += 1
            if state["waiting"] == 1:
                await both_waiting.wait()
                raise RuntimeError("a bug in our code")
            both_waiting.set()
            try:
                await asyncio.Event().wait()  # the other picture: still waiting on its task
            except asyncio.CancelledError:
                state["cancelled"] += 1
                raise

    async def scenario():
        requests = []
        async with AsyncHunyuan3DClient(settings_for(emulator)) as client:
            for name in ("mug.png", "duck.png"):
                path = SAMPLES_DIR / name
                sha = hashlib.sha256(path.read_bytes()).hexdigest()
                requests.append(MeshRequest(name, str(path), sha, await client.upload(path)))
        async with Buggy(settings_for(emulator)) as client:
            policy = GenerationPolicy(model=DEFAULT_MODEL, run_id="r1")
            generator = MeshGenerator(client, LocalMeshStore(tmp_path), policy, 2)
            with pytest.raises(RuntimeError, match="a bug in our code"):
                [o async for o in generator.run(requests)]
            return dict(state)  # before the client closes

    assert asyncio.run(scenario()) == {"waiting": 2, "cancelled": 1}
