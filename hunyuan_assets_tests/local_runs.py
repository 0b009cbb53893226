"""Runs launched the way the local DefaultRunLauncher launches them, for the dead-run tests.

`dagster job launch` (with a DefaultRunCoordinator) loads the workspace in a code server, as
the webserver and the daemon do, and the DefaultRunLauncher asks that server to start the run:
the run worker is a subprocess of the code server, and the multiprocess executor starts each
step in a subprocess of the worker. The CLI exits; its code server stays until the run ends.
Each launch runs in its own session, so killing that process group is "the machine lost
dagster" (code server, worker and steps at once); teardown does exactly that, by group id.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import dagster as dg
import psutil
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
JOB = "held_job"
T = TypeVar("T")


def wait_for(
    condition: Callable[[], T | None], *, timeout: float, what: str, diagnose=lambda: ""
) -> T:
    """Poll `condition` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    interval = 0.05
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{diagnose()}")
        time.sleep(interval)  # poll interval of a condition loop, not a synchronisation sleep
        interval = min(interval * 1.5, 0.5)


@dataclass
class LocalDagster:
    """A DAGSTER_HOME and a workspace holding `dead_run_defs`, and the env of its processes."""

    home: Path
    workspace: Path
    env: dict[str, str]
    logs: Path

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.home))


def local_dagster(
    root: Path, *, dagster_yaml: dict, sensor_interval: int = 60, **extra_env: str
) -> LocalDagster:
    home = root / "dagster_home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(dagster_yaml))
    workspace = root / "workspace.yaml"
    location = {
        "module_name": "hunyuan_assets_tests.dead_run_defs",
        "working_directory": str(REPO),
        "location_name": "dead_run_tests",
    }
    workspace.write_text(yaml.safe_dump({"load_from": [{"python_module": location}]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    env.update(
        DAGSTER_HOME=str(home),
        DEAD_RUN_SENSOR_INTERVAL=str(sensor_interval),
        PYTHONUNBUFFERED="1",
        **extra_env,
    )
    logs = root / "logs"
    logs.mkdir()
    return LocalDagster(home, workspace, env, logs)


def repo_dagster_yaml() -> dict:
    return yaml.safe_load((REPO / "dagster.yaml").read_text())


def direct_launch_dagster_yaml() -> dict:
    """The repo's instance settings, with runs launched at once instead of queued for a daemon."""
    config = repo_dagster_yaml()
    config.pop("concurrency", None)  # run limits belong to the queue, which is not used here
    config["run_coordinator"] = {
        "module": "dagster.core.run_coordinator",
        "class": "DefaultRunCoordinator",
    }
    return config


@dataclass
class LaunchedRun:
    run_id: str
    release: Path  # create it and the run's only step ends
    process_group: int

    def kill_everything(self) -> None:
        """SIGKILL the code server, the worker and its steps at once (the group we started)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process_group, signal.SIGKILL)


def launch_args(local: LocalDagster, run_id: str, release: Path, tags: dict | None) -> list[str]:
    config = {"ops": {"wait_for_release": {"config": {"release": str(release)}}}}
    argv = [str(BIN / "dagster"), "job", "launch", "-w", str(local.workspace), "-j", JOB]
    argv += ["--config-json", json.dumps(config), "--run-id", run_id]
    if tags:
        argv += ["--tags", json.dumps(tags)]
    return argv


@contextlib.contextmanager
def launched_run(local: LocalDagster, *, tags: dict | None = None) -> Iterator[LaunchedRun]:
    """`dagster job launch` of the held job in a session of its own; on exit its process group
    is killed."""
    run_id = str(uuid.uuid4())
    release = local.logs / f"release-{run_id}"
    log = local.logs / f"launch-{run_id}.log"
    with log.open("wb") as out:
        cli = subprocess.Popen(
            launch_args(local, run_id, release, tags),
            cwd=REPO,
            env=local.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    launched = LaunchedRun(run_id, release, cli.pid)
    try:
        code = cli.wait(timeout=120)
        assert code == 0, f"dagster job launch exited {code}:\n{log.read_text()[-3000:]}"
        yield launched
    finally:
        launched.kill_everything()
        with contextlib.suppress(subprocess.TimeoutExpired):
            cli.wait(timeout=10)


def run_status(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRunStatus | None:
    run = instance.get_run_by_id(run_id)
    return run.status if run else None


def wait_until_started(instance: dg.DagsterInstance, run_id: str, timeout: float = 120) -> None:
    def started():
        status = run_status(instance, run_id)
        if status is not None and status != dg.DagsterRunStatus.STARTED:
            assert status in (
                dg.DagsterRunStatus.QUEUED,
                dg.DagsterRunStatus.NOT_STARTED,
                dg.DagsterRunStatus.STARTING,
            ), f"run {run_id} became {status} before it started"
        return status == dg.DagsterRunStatus.STARTED

    wait_for(started, timeout=timeout, what=f"run {run_id} to be STARTED")


def wait_until_gone(pids: list[int], timeout: float = 20) -> None:
    """Wait until none of `pids` is a live process (zombies count as gone)."""

    def gone():
        for pid in pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    return False
        return True

    wait_for(gone, timeout=timeout, what=f"processes {pids} to end")
