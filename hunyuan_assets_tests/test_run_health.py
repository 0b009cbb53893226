"""Dead local runs: found, failed as run monitoring fails them, and retried by the daemon.

Every run here is a real run of `dead_run_defs.held_job` (one step that waits for a file),
launched as the DefaultRunLauncher launches in production (see `local_runs.py`), and killed with
SIGKILL. Waits are condition loops with deadlines.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psutil
import pytest

from hunyuan_assets.integration.compat import (
    WILL_RETRY_TAG,
    run_worker_start,
    step_process_starts,
    tag_run,
)
from hunyuan_assets.integration.run_health import (
    WORKER_TAG,
    DeadRun,
    WorkerRecord,
    build_dead_run_sensor,
    fail_dead_runs,
    find_dead_runs,
    this_host,
)
from hunyuan_assets_tests.local_runs import (
    BIN,
    JOB,
    REPO,
    LocalDagster,
    direct_launch_dagster_yaml,
    launch_args,
    launched_run,
    local_dagster,
    repo_dagster_yaml,
    run_status,
    wait_for,
    wait_until_gone,
    wait_until_started,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def local(tmp_path: Path) -> LocalDagster:
    return local_dagster(tmp_path, dagster_yaml=direct_launch_dagster_yaml())


@pytest.fixture
def instance(local: LocalDagster) -> Iterator[dg.DagsterInstance]:
    with local.instance() as instance:
        yield instance


def recorded_worker(instance: dg.DagsterInstance, run_id: str) -> WorkerRecord:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    record = WorkerRecord.from_tag(run.tags.get(WORKER_TAG))
    assert record is not None, f"no worker recorded: {dict(run.tags)}"
    return record


def failure_message(instance: dg.DagsterInstance, run_id: str) -> str:
    failures = [
        entry.dagster_event.message or ""
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        if entry.dagster_event is not None
    ]
    assert len(failures) == 1, failures
    return failures[0]


def step_pids(instance: dg.DagsterInstance, run_id: str) -> list[int]:
    return [start.pid for start in step_process_starts(instance, run_id)]


def wait_for_step(instance: dg.DagsterInstance, run_id: str) -> int:
    [pid] = wait_for(
        lambda: step_pids(instance, run_id), timeout=60, what="the step subprocess to start"
    )
    return pid


# ------------------------------------------------------------------------- find and fail


def test_live_run_is_never_named_and_a_killed_one_is_failed_for_a_retry(local, instance):
    with launched_run(local) as run:
        wait_until_started(instance, run.run_id)
        for _ in range(3):
            assert find_dead_runs(instance) == []
        worker = recorded_worker(instance, run.run_id)
        started = run_worker_start(instance, run.run_id)
        assert started is not None
        assert (worker.run_id, worker.host, worker.pid) == (run.run_id, this_host(), started.pid)
        assert psutil.Process(worker.pid).is_running()

        steps = [wait_for_step(instance, run.run_id)]
        assert find_dead_runs(instance, job_names=[JOB]) == []
        run.kill_everything()
        wait_until_gone([worker.pid, *steps])
        # Nothing in Dagster notices: the zombie this module exists for.
        assert run_status(instance, run.run_id) == dg.DagsterRunStatus.STARTED

        dead = find_dead_runs(instance, job_names=[JOB])
        reason = f"run worker process {worker.pid} on {this_host()} is gone"
        assert dead == [DeadRun(run.run_id, JOB, reason)]
        assert find_dead_runs(instance, job_names=["another_job"]) == []

        assert fail_dead_runs(instance, dead) == [run.run_id]
        failed = instance.get_run_by_id(run.run_id)
        assert failed is not None and failed.status == dg.DagsterRunStatus.FAILURE
        assert reason in failure_message(instance, run.run_id)
        # What the daemon's run-retry consumer reads first; no failure reason, as run monitoring
        # leaves none for a dead worker (a STEP_FAILURE one would stop the retry).
        assert failed.tags[WILL_RETRY_TAG] == "true"
        assert "dagster/failure_reason" not in failed.tags

        assert fail_dead_runs(instance, dead) == []  # finished runs are left as they are
        assert find_dead_runs(instance) == []


def test_run_recorded_on_another_host_is_never_named(local, instance):
    with launched_run(local) as run:
        wait_until_started(instance, run.run_id)
        assert find_dead_runs(instance) == []
        worker = recorded_worker(instance, run.run_id)
        elsewhere = WorkerRecord(run.run_id, "another-host.example", worker.pid, 1.0)
        tag_run(instance, run.run_id, {WORKER_TAG: elsewhere.to_tag()})
        run.kill_everything()
        wait_until_gone([worker.pid])

        assert find_dead_runs(instance) == []
        assert run_status(instance, run.run_id) == dg.DagsterRunStatus.STARTED
        assert recorded_worker(instance, run.run_id) == elsewhere  # not re-recorded as ours


def test_run_never_seen_alive_here_is_never_named(local, instance):
    """Killed before any check saw its worker: its pid proves nothing (it might be another
    machine's), so the run is left for a person or `dagster/max_runtime`."""
    with launched_run(local) as run:
        wait_until_started(instance, run.run_id)
        started = run_worker_start(instance, run.run_id)
        assert started is not None
        run.kill_everything()
        wait_until_gone([started.pid])

        assert find_dead_runs(instance) == []
        run_now = instance.get_run_by_id(run.run_id)
        assert run_now is not None and WORKER_TAG not in run_now.tags


@contextlib.contextmanager
def stand_in_process() -> Iterator[psutil.Process]:
    """Another live Python process, to take a recorded pid's place."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        yield psutil.Process(proc.pid)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=20)


def test_reused_pid_is_not_mistaken_for_the_worker(local, instance):
    with launched_run(local) as run:
        wait_until_started(instance, run.run_id)
        assert find_dead_runs(instance) == []
        worker = recorded_worker(instance, run.run_id)
        run.kill_everything()
        wait_until_gone([worker.pid])

        with stand_in_process() as other:
            # The record as it reads once the worker's pid belongs to a newer process.
            reused = WorkerRecord(run.run_id, worker.host, other.pid, worker.started_since_boot)
            tag_run(instance, run.run_id, {WORKER_TAG: reused.to_tag()})
            reason = (
                f"run worker process {other.pid} on {worker.host} is gone "
                "(that pid now belongs to another process)"
            )
            assert find_dead_runs(instance) == [DeadRun(run.run_id, JOB, reason)]

            # The same pid recorded with that process's own start: alive, not named.
            own_start = other.create_time() - psutil.boot_time()
            alive = WorkerRecord(run.run_id, worker.host, other.pid, own_start)
            tag_run(instance, run.run_id, {WORKER_TAG: alive.to_tag()})
            assert find_dead_runs(instance) == []


def test_record_copied_from_a_parent_run_is_not_read_as_this_runs(local, instance):
    """A retry copies its parent's tags; the parent's dead worker must not condemn it."""
    with launched_run(local) as run:
        wait_until_started(instance, run.run_id)
        started = run_worker_start(instance, run.run_id)
        assert started is not None
        parents = WorkerRecord("a-parent-run-id", this_host(), 999_999_999, 1.0)
        tag_run(instance, run.run_id, {WORKER_TAG: parents.to_tag()})

        assert find_dead_runs(instance) == []
        worker = recorded_worker(instance, run.run_id)
        assert (worker.run_id, worker.pid) == (run.run_id, started.pid)


def test_worker_gone_while_its_step_runs_is_left_until_the_step_ends(local, instance):
    with launched_run(local) as run:
        wait_until_started(instance, run.run_id)
        assert find_dead_runs(instance) == []
        worker = recorded_worker(instance, run.run_id)
        step = wait_for_step(instance, run.run_id)
        code_server = psutil.Process(worker.pid).ppid()
        # The code server first, so that it cannot mark the run failed when its worker dies.
        os.kill(code_server, signal.SIGKILL)
        wait_until_gone([code_server])
        os.kill(worker.pid, signal.SIGKILL)
        wait_until_gone([worker.pid])
        assert psutil.Process(step).is_running()  # orphaned, still working

        assert find_dead_runs(instance) == []
        os.kill(step, signal.SIGKILL)
        wait_until_gone([step])
        [dead] = find_dead_runs(instance)
        assert dead.run_id == run.run_id


def test_worker_killed_under_its_live_code_server_is_failed_by_dagster_itself(local, instance):
    """What this module does not need to do: the code server fails a run whose worker died."""
    with launched_run(local) as run:
        wait_until_started(instance, run.run_id)
        started = run_worker_start(instance, run.run_id)
        assert started is not None
        step = wait_for_step(instance, run.run_id)
        os.kill(started.pid, signal.SIGKILL)
        # Dagster stores the failure first and tags the run's retry decision a moment after
        # (EventMethods.handle_new_event), so the tag is what to wait for, not the status.
        wait_for(
            lambda: WILL_RETRY_TAG in instance.get_run_by_id(run.run_id).tags,
            timeout=30,
            what="the code server to mark the run failed and tag its retry",
        )
        failed = instance.get_run_by_id(run.run_id)
        assert failed is not None and failed.status == dg.DagsterRunStatus.FAILURE
        assert failed.tags[WILL_RETRY_TAG] == "true"
        messages = [entry.message for entry in instance.all_logs(run.run_id)]
        assert any("terminated by signal 9" in message for message in messages), messages
        # Dagster leaves the step subprocess running, orphaned (killed with the group on exit).
        assert psutil.Process(step).is_running()


# --------------------------------------------------------------------------------- sensor


def test_sensor_is_running_by_default_and_skips_when_nothing_is_dead(instance):
    sensor = build_dead_run_sensor("dead_runs", [JOB], minimum_interval_seconds=30)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds == 30
    result = sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SkipReason) and result.skip_message == "no dead runs"
    with pytest.raises(ValueError, match="job_names is empty"):
        build_dead_run_sensor("dead_runs", [])


# --------------------------------------------------------------------------------- daemon


def processes_of(local: LocalDagster) -> list[psutil.Process]:
    """Live processes (other than this one) whose environment names our DAGSTER_HOME."""
    marker = local.env["DAGSTER_HOME"]
    found = []
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        with contextlib.suppress(psutil.Error):
            if (
                process.status() != psutil.STATUS_ZOMBIE
                and process.environ().get("DAGSTER_HOME") == marker
            ):
                found.append(process)
    return found


def kill_all(local: LocalDagster) -> None:
    """SIGKILL every process of this DAGSTER_HOME, by pid: daemon, code servers, workers, steps."""
    processes = processes_of(local)
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    wait_until_gone([p.pid for p in processes])


def tail(path: Path, lines: int = 40) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def diagnose(local: LocalDagster, instance: dg.DagsterInstance, log: Path) -> str:
    lines = []
    for run in instance.get_runs():
        lines.append(f"run {run.run_id[:8]} {run.status.value} {dict(run.tags)}")
        for entry in instance.all_logs(run.run_id)[-8:]:
            lines.append(f"  {entry.dagster_event_type}: {(entry.message or '')[:200]}")
    return "\n".join(lines) + f"\n--- {log.name} ---\n{tail(log)}"


@contextlib.contextmanager
def daemon(local: LocalDagster, name: str) -> Iterator[subprocess.Popen]:
    log = local.logs / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", str(local.workspace)],
            cwd=REPO,
            env=local.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        kill_all(local)
        proc.wait(timeout=20)


def report(name: str, seconds: float) -> None:
    print(f"[measure] {name}: {seconds:.1f} s")


def test_daemon_sensor_fails_a_run_killed_with_its_machine_and_the_run_retry_finishes_it(
    tmp_path,
):
    """The repo's dagster.yaml (queued runs, run monitoring, run retries), the real daemon,
    and the dead-run sensor in the code location. The run's whole process tree dies with the
    daemon; a new daemon's sensor fails the run, and the run retry finishes the work."""
    local = local_dagster(tmp_path, dagster_yaml=repo_dagster_yaml(), sensor_interval=1)
    release = local.logs / "release"
    with local.instance() as instance:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert type(instance.run_launcher).__name__ == "DefaultRunLauncher"
        assert instance.run_retries_max_retries == 2
        first_log = local.logs / "daemon-1.log"
        t0 = time.monotonic()

        with daemon(local, "daemon-1"):
            run_id = "00000000-0000-4000-8000-000000000001"
            argv = launch_args(local, run_id, release, None)
            with (local.logs / "launch.log").open("wb") as out:
                # queued: the daemon launches it through its own code server
                subprocess.run(argv, cwd=REPO, env=local.env, check=True, stdout=out, stderr=out)
            wait_until_started(instance, run_id, timeout=120)
            report("daemon start -> run STARTED", time.monotonic() - t0)

            def recorded():
                run = instance.get_run_by_id(run_id)
                return run is not None and WORKER_TAG in run.tags

            wait_for(
                recorded,
                timeout=60,
                what="the sensor to record the run's worker",
                diagnose=lambda: diagnose(local, instance, first_log),
            )
            worker = recorded_worker(instance, run_id)
            # the daemon launched it: its worker is a subprocess of the daemon's code server
            assert psutil.Process(worker.pid).is_running()
        # daemon-1 and all it started (code server, worker, step) are SIGKILLed by now
        assert run_status(instance, run_id) == dg.DagsterRunStatus.STARTED
        killed = time.monotonic()

        second_log = local.logs / "daemon-2.log"
        with daemon(local, "daemon-2"):

            def retry_started():
                runs = instance.get_runs(
                    filters=dg.RunsFilter(tags={"dagster/parent_run_id": run_id})
                )
                return [r for r in runs if r.status == dg.DagsterRunStatus.STARTED]

            [retry] = wait_for(
                retry_started,
                timeout=120,
                what="the run retry to start",
                diagnose=lambda: diagnose(local, instance, second_log),
            )
            report("daemon-2 start -> retry STARTED", time.monotonic() - killed)
            failed = instance.get_run_by_id(run_id)
            assert failed is not None and failed.status == dg.DagsterRunStatus.FAILURE
            reason = f"run worker process {worker.pid} on {this_host()} is gone"
            assert reason in failure_message(instance, run_id)
            assert failed.tags[WILL_RETRY_TAG] == "true"
            assert failed.tags["dagster/auto_retry_run_id"] == retry.run_id
            assert retry.tags["dagster/retry_number"] == "1"
            assert retry.parent_run_id == run_id

            # The retry carries its parent's record; the sensor records its own worker
            # instead of judging it by the parent's dead one.
            def retry_recorded():
                run = instance.get_run_by_id(retry.run_id)
                record = WorkerRecord.from_tag(run.tags.get(WORKER_TAG)) if run else None
                return record is not None and record.run_id == retry.run_id

            wait_for(
                retry_recorded,
                timeout=60,
                what="the sensor to record the retry's worker",
                diagnose=lambda: diagnose(local, instance, second_log),
            )
            release.touch()
            wait_for(
                lambda: run_status(instance, retry.run_id) == dg.DagsterRunStatus.SUCCESS,
                timeout=60,
                what="the retry to succeed",
                diagnose=lambda: diagnose(local, instance, second_log),
            )
            report("daemon-2 start -> retry SUCCESS", time.monotonic() - killed)
        assert len(instance.get_runs()) == 2
