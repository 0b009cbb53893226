"""Runs whose worker died under the local run launcher: find them, mark them failed.

Under the DefaultRunLauncher a run worker is a subprocess of a code server. If only the worker
dies, the code server notices and marks the run failed itself. If both die (`dagster dev` or
the machine killed, the OOM killer taking the tree, a reboot) nothing notices: Dagster's run
monitoring cannot ask this launcher about a worker, so the run stays STARTED and the refresh
schedule skips its partitions for good. Marking it failed the way run monitoring does lets the
daemon's run retry start a new run, which resumes the recorded predictions.

Which process is a run's worker: the worker writes "Started process for run (pid: N)" when it
starts, but Dagster records no host, so a missing pid proves nothing by itself (the run may be
running on another machine). The first time `find_dead_runs` sees a STARTED run whose pid is a
live process here that started shortly before that event, it tags the run (`WORKER_TAG`) with
this host's name, the pid and the process's start in seconds since boot (no clock change moves
that). From then on the run is judged, on this host only: its worker is gone when no process
has that pid, or that pid's process started at another moment (the pid was reused, or the host
rebooted). A run whose worker died before any check here saw it alive is never judged.

A worker gone while a step subprocess it started (multiprocess executor) still runs here is
left alone until that step ends: failing the run now would start a retry beside a live step.

`dagster/max_runtime` is not repeated here: Dagster's run monitoring enforces it under this
launcher too (it terminates the run, then marks it failed), with `run_monitoring` enabled.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import dagster as dg
import psutil

from hunyuan_assets.integration.compat import (
    ProcessStart,
    report_run_failed,
    run_worker_start,
    step_process_starts,
    tag_run,
)

WORKER_TAG = "hunyuan/run_worker"
# From a worker's start to its "Started process" event: a spawn, imports, the instance opened.
# Generous for a loaded machine; the bound only matters against another host's pid that happens
# to match a local process.
STARTUP_WINDOW_S = 60.0
# Start times are read at clock-tick resolution, through a float sum: what "the same" allows.
SAME_START_S = 1.0


@dataclass(frozen=True)
class DeadRun:
    """A STARTED run whose worker is gone, and how we know."""

    run_id: str
    job_name: str
    reason: str


@dataclass(frozen=True)
class WorkerRecord:
    """What this module saw of a run's worker while it was alive: the value of `WORKER_TAG`.

    `run_id` is part of it because a retry copies its parent's tags."""

    run_id: str
    host: str
    pid: int
    started_since_boot: float

    def to_tag(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_tag(cls, value: str | None) -> WorkerRecord | None:
        """The record in a tag value; None if there is none or it is not ours to read."""
        if not value:
            return None
        try:
            fields = json.loads(value)
            return cls(
                run_id=str(fields["run_id"]),
                host=str(fields["host"]),
                pid=int(fields["pid"]),
                started_since_boot=float(fields["started_since_boot"]),
            )
        except (ValueError, TypeError, KeyError):
            return None


def this_host() -> str:
    return socket.gethostname()


def find_dead_runs(
    instance: dg.DagsterInstance, *, job_names: Iterable[str] | None = None
) -> list[DeadRun]:
    """STARTED runs (of `job_names`, or of every job) whose worker on this host is gone.

    One query for the STARTED runs; an event-log query only for a run not yet recorded (to
    read its worker's pid) and for a run whose worker is gone (to look for live steps). Writes
    `WORKER_TAG` on runs whose worker it finds alive here for the first time.
    """
    wanted = None if job_names is None else frozenset(job_names)
    host = this_host()
    dead = []
    for record in instance.get_run_records(
        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])
    ):
        run = record.dagster_run
        if wanted is not None and run.job_name not in wanted:
            continue
        worker = WorkerRecord.from_tag(run.tags.get(WORKER_TAG))
        if worker is None or worker.run_id != run.run_id:
            _record_worker_if_here(instance, run.run_id, host)
            continue
        if worker.host != host:
            continue
        gone = _why_gone(worker)
        if gone is None or _steps_still_running(instance, run.run_id):
            continue
        dead.append(DeadRun(run.run_id, run.job_name, gone))
    return dead


def fail_dead_runs(instance: dg.DagsterInstance, dead: Sequence[DeadRun]) -> list[str]:
    """Mark each run failed as run monitoring does for a dead worker, so that run retries
    apply; returns the ids of the runs marked. A run that finished meanwhile is left as it is."""
    failed = []
    for entry in dead:
        run = instance.get_run_by_id(entry.run_id)
        if run is None or run.status != dg.DagsterRunStatus.STARTED:
            continue
        report_run_failed(
            instance,
            run,
            f"{entry.reason}. Marked failed by hunyuan_assets' dead-run check, as Dagster's "
            "run monitoring does for a dead run worker.",
        )
        failed.append(entry.run_id)
    return failed


def build_dead_run_sensor(
    name: str,
    job_names: Sequence[str],
    minimum_interval_seconds: int = 60,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> dg.SensorDefinition:
    """A sensor that marks dead runs of `job_names` failed (see `find_dead_runs`), running by
    default. It must be evaluated on the machine whose runs it judges, as under `dagster dev`
    or a daemon beside its code servers."""
    jobs = tuple(job_names)
    if not jobs:
        raise ValueError(f"sensor {name!r}: job_names is empty, it would watch no run")

    @dg.sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=(
            "Marks runs of " + ", ".join(jobs) + " failed when their worker process on this "
            "machine is gone, so run retries and the refresh schedule carry on."
        ),
    )
    def dead_run_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        dead = find_dead_runs(context.instance, job_names=jobs)
        if not dead:
            return dg.SkipReason("no dead runs")
        failed = set(fail_dead_runs(context.instance, dead))
        for entry in dead:
            if entry.run_id in failed:
                context.log.warning(
                    f"marked run {entry.run_id} ({entry.job_name}) failed: {entry.reason}"
                )
        return dg.SkipReason(
            f"marked {len(failed)} dead run(s) failed: {', '.join(sorted(failed))}"
        )

    return dead_run_sensor


# ------------------------------------------------------------------------------ processes


def _started_at(pid: int) -> float | None:
    """When the live process `pid` started (seconds since the epoch); None if there is none
    (a zombie, dead but not yet reaped, counts as none). Raises psutil.AccessDenied when the
    process exists but cannot be read: the callers decide which way that errs."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process.create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None


def _is_the_process(start: ProcessStart) -> bool:
    """Whether the live process `start.pid` is the one that logged `start`.

    On one host a pid belongs to one process at a time, so a live process with that pid that
    started no later than the event is the one that wrote it; one that started later reuses it.
    """
    started = _started_at(start.pid)
    if started is None:
        return False
    return start.logged_at - STARTUP_WINDOW_S <= started <= start.logged_at + SAME_START_S


def _record_worker_if_here(instance: dg.DagsterInstance, run_id: str, host: str) -> None:
    start = run_worker_start(instance, run_id)
    if start is None:
        return
    try:
        if not _is_the_process(start):
            return
        process = psutil.Process(start.pid)
        if not any(word in process.name().lower() for word in ("python", "dagster")):
            return
        since_boot = process.create_time() - psutil.boot_time()
    except psutil.Error:  # gone meanwhile, or unreadable: not recorded, so never judged
        return
    record = WorkerRecord(run_id, host, start.pid, since_boot)
    tag_run(instance, run_id, {WORKER_TAG: record.to_tag()})


def _why_gone(worker: WorkerRecord) -> str | None:
    """None while the recorded worker may run; otherwise why it is known to be gone."""
    try:
        started = _started_at(worker.pid)
    except psutil.AccessDenied:
        return None
    if started is None:
        return f"run worker process {worker.pid} on {worker.host} is gone"
    if abs((started - psutil.boot_time()) - worker.started_since_boot) > SAME_START_S:
        return (
            f"run worker process {worker.pid} on {worker.host} is gone "
            "(that pid now belongs to another process)"
        )
    return None


def _steps_still_running(instance: dg.DagsterInstance, run_id: str) -> bool:
    for start in step_process_starts(instance, run_id):
        try:
            if _is_the_process(start):
                return True
        except psutil.AccessDenied:
            return True
    return False
