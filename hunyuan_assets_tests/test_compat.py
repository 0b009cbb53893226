"""Contracts of `hunyuan_assets.integration.compat` against a real Dagster instance.

Each test states what the package relies on in Dagster's non-public API; a failure here after a
Dagster upgrade names the function in compat.py to revisit.
"""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import psutil
import pytest

from hunyuan_assets.integration.compat import (
    WILL_RETRY_TAG,
    ProcessStart,
    report_run_failed,
    run_worker_start,
    step_process_starts,
    tag_run,
)
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
