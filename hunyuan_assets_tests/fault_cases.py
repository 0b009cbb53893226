"""The fault-injection suite: its cases, and one case run through Dagster with its evidence.

Shared by `test_faults.py` (which asserts on the evidence) and `bench/bench_faults.py` (which
prints it as the README's reliability table). A case is a fault configuration of the emulator;
it runs in one of two modes: a single-run backfill (`materialize_images`: one run over every
partition) or one run per partition (`dg.materialize(..., partition_key=k)` for each image).
Where the first pass cannot end with a mesh for some pictures (failed predictions, broken or
expired outputs), the faults are cleared and a second pass runs them again.

Everything in a `CaseReport` comes from what the system recorded itself: Dagster's partition
status, materializations and check results; the prediction log; the prediction records in the
store; the client's own retry log lines (logger "hunyuan_assets.client"); and the emulator's
counters. Nothing is timed here.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pandas as pd
from PIL import Image

from hunyuan_assets.core.glb import MeshError, inspect_glb
from hunyuan_assets.core.log import PredictionLog
from hunyuan_assets.core.records import PredictionRecord
from hunyuan_assets.core.sources import SAMPLES_DIR
from hunyuan_assets.core.store import MeshStore
from hunyuan_assets.emulator import EmulatorServer
from hunyuan_assets.integration.backfill import add_image_partitions, materialize_images
from hunyuan_assets.integration.factory import MeshPipeline
from hunyuan_assets.integration.lineage import latest_materializations
from hunyuan_assets_tests.helpers import (
    FAST_POLL,
    check_results,
    failed_partitions,
    mesh_store_of,
    partition_keys,
    pipeline_for,
    with_hunyuan3d,
)

MODES = ("single_run", "per_partition")
CLIENT_LOGGER = "hunyuan_assets.client"
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
RETRY_AFTER = 0.1  # seconds, on every injected 429 and 503 (honoured by the client)
SINGLE_RUN_CONCURRENCY = 4  # predictions in flight in a single-run backfill
# The client of every case: fast polls, and enough attempts that no request runs out of them
# at these fault rates (0.3**16 ~ 4e-9): the HTTP layer absorbs every fault, so each one shows
# up either as a logged retry or as a new attempt in the prediction log, never as a step retry.
CLIENT = {**FAST_POLL, "max_retries": 16, "retry_base_delay": 0.01, "retry_max_delay": 1.0}

# Submit faults after which the client cannot know whether the task exists: reconciled against
# the predictions list, which shows a prediction for the first group (adopted) and none for
# the second (submitted once more, with a `Superseded` row saying it never arrived).
SUBMIT_CREATED = frozenset({"drop_after_accept", "slow", "truncate"})
SUBMIT_NOT_CREATED = frozenset({"drop", "500", "502", "504"})


def _rule(kind: str, probability: float | None = None, **extra: Any) -> dict:
    rule: dict[str, Any] = {"endpoint": "any", "kind": kind, "count": -1, **extra}
    if probability is not None:
        rule["probability"] = probability
    if kind in ("429", "503"):
        rule.setdefault("retry_after", RETRY_AFTER)
    return rule


@dataclass(frozen=True)
class Doomed:
    """Pictures (names containing `tag`) whose first pass cannot end with a mesh."""

    tag: str
    cause: str  # text the partition's error must contain
    error_type: str  # the log row's error_type


@dataclass(frozen=True)
class FaultCase:
    name: str
    title: str  # for the reliability table
    # the EmulatorServer.configure body, given how many pictures are doomed
    faults: Callable[[int], dict]
    doomed: tuple[Doomed, ...] = ()
    client: dict = field(default_factory=dict)  # more Hunyuan3DResource fields
    slow_faults_time_out: bool = False  # a `slow` fault outlasts the client's timeouts
    restart: bool = False  # restart the emulator while predictions are in flight
    latency: float = 0.1


def _rate_limits(_: int) -> dict:
    # A storm: the first 6 requests all refused, then 30% of every request, all with Retry-After.
    return {"rules": [_rule("429", count=6), _rule("429", 0.3)]}


def _server_errors(_: int) -> dict:
    # A burst of 6 consecutive 503s, then 500/502/503 on ~27% of requests.
    rules = [_rule("503", count=6), _rule("503", 0.1), _rule("502", 0.1), _rule("500", 0.1)]
    return {"rules": rules}


def _drops(_: int) -> dict:
    # ~20% of requests: closed before the server read them, or after it acted on them.
    return {"rules": [_rule("drop", 0.1), _rule("drop_after_accept", 0.1)]}


TIMEOUT = 0.75  # the client's read/submit/upload/download timeout in the timeouts case


def _timeouts(_: int) -> dict:
    return {"rules": [_rule("slow", 0.12, delay=2 * TIMEOUT)]}


def _failed_predictions(doomed: int) -> dict:
    return {"fail_tasks": {"match": "-doomed", "count": doomed, "error": FAILED_ERROR}}


FAILED_ERROR = "model crashed on this input (injected)"
OUTPUT_TTL = 1.0  # seconds an output URL lives in the outputs case


def _outputs(_: int) -> dict:
    # Truncated in transit: retried. Truncated at source ("-cut") and expired ("-expire"): the
    # partition fails, and the second pass (faults cleared) pays once more.
    return {
        "rules": [
            {"endpoint": "output", "kind": "truncate", "count": -1, "probability": 0.3},
            # polls of "-expire" pictures answer late: they see `completed` after the TTL
            {"endpoint": "result", "kind": "slow", "match": "-expire", "count": -1, "delay": 1.5},
        ],
        "corrupt_output": {"match": "-cut", "error": "truncated"},
        "output_ttl": OUTPUT_TTL,
    }


CASES: tuple[FaultCase, ...] = (
    FaultCase("rate_limits", "429 storm (Retry-After)", _rate_limits),
    FaultCase("server_errors", "bursts of 500/502/503", _server_errors),
    FaultCase("drops", "connections dropped before/after the server read", _drops),
    FaultCase(
        "timeouts",
        f"read timeouts (answers {2 * TIMEOUT:g} s late, client timeout {TIMEOUT:g} s)",
        _timeouts,
        client={
            "read_timeout": TIMEOUT,
            "submit_timeout": TIMEOUT,
            "upload_timeout": TIMEOUT,
            "download_timeout": TIMEOUT,
        },
        slow_faults_time_out=True,
    ),
    FaultCase(
        "failed_predictions",
        "failed predictions",
        _failed_predictions,
        doomed=(Doomed("-doomed", FAILED_ERROR, "PredictionFailedError"),),
    ),
    FaultCase(
        "outputs",
        "truncated outputs (in transit and at source), expired output URLs",
        _outputs,
        doomed=(
            Doomed("-cut", "not a valid GLB", "MeshError"),
            Doomed("-expire", "output URLs expire", "OutputExpiredError"),
        ),
        client={"poll_max_interval": 0.1},  # the others see `completed` well inside the TTL
    ),
    FaultCase(
        "restart",
        "emulator restarted mid-run (predictions forgotten)",
        lambda _: {},
        restart=True,
        latency=0.2,
    ),
)
CASE_BY_NAME = {case.name: case for case in CASES}


# -- images --------------------------------------------------------------------------------------
def make_images(folder: Path, count: int, tags: tuple[str, ...] = ()) -> list[Path]:
    """`count` distinct small pictures (the bundled samples, 64-96 px, each with its index as
    trailing bytes, so no two share a sha256). Every 6th picture from the 4th on carries one of
    `tags` in its name, in turn."""
    folder.mkdir(parents=True, exist_ok=True)
    samples = sorted(p for p in SAMPLES_DIR.iterdir() if p.suffix in (".png", ".jpg"))
    paths = []
    tagged = 0
    for i in range(count):
        sample = samples[i % len(samples)]
        edge = 64 + 8 * (i % 5)
        buffer = io.BytesIO()
        Image.open(sample).convert("RGB").resize((edge, edge)).save(buffer, "PNG")
        tag = ""
        if tags and i % 6 == 3:
            tag, tagged = tags[tagged % len(tags)], tagged + 1
        path = folder / f"{i:03d}-{sample.stem}{tag}.png"
        path.write_bytes(buffer.getvalue() + i.to_bytes(2, "big"))
        paths.append(path)
    return paths


# -- evidence ------------------------------------------------------------------------------------
class RetryLog(logging.Handler):
    """The client's retry lines: (request, delay, attempt, message) per retry."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.retries: list[tuple[str, float, int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("retrying") and isinstance(record.args, tuple):
            where, delay, attempt, _, message = record.args
            self.retries.append((str(where), float(delay), int(attempt), str(message)))


@contextmanager
def retry_log() -> Iterator[RetryLog]:
    """The client's retry lines while inside, whatever level a quieter caller set."""
    handler, logger = RetryLog(), logging.getLogger(CLIENT_LOGGER)
    level = logger.level
    logger.setLevel(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@dataclass
class Pass:
    """What one pass (first, or the second one over the doomed pictures) did."""

    runs: list[dg.ExecuteInProcessResult]
    stats: dict  # the emulator's counters for this pass alone
    keys: list[str]


@dataclass
class CaseReport:
    case: FaultCase
    mode: str
    keys: list[str]
    doomed: dict[str, Doomed]  # partition -> why its first pass cannot end with a mesh
    first: Pass
    second: Pass | None
    failed_after_first: set[str]  # Dagster's failed partitions after the first pass
    meshed_after_first: set[str]  # Dagster's materialized partitions after the first pass
    errors_after_first: dict[str, str]  # partition -> its latest log row's error then
    failed: set[str]  # Dagster's failed partitions at the end
    meshes: dict[str, str]  # partition -> the stored GLB its latest materialization names
    invalid_meshes: dict[str, str]  # partition -> why inspect_glb refused its GLB
    glb_valid: dict[str, bool]  # the glb_valid check's latest result per partition
    log: pd.DataFrame  # every prediction log row, oldest first
    records: dict[str, list[PredictionRecord]]  # partition -> every generation's record
    listed_ids: set[str]  # prediction ids the emulator lists at the end
    retries: list[tuple[str, float, int, str]]
    forgotten: int  # predictions in flight when the emulator restarted

    # -- figures --------------------------------------------------------------------------------
    @property
    def images(self) -> int:
        return len(self.keys)

    def faults(self) -> Counter:
        """Injected faults by "endpoint kind", over both passes."""
        total: Counter = Counter(self.first.stats.get("faults", {}))
        if self.second is not None:
            total.update(self.second.stats.get("faults", {}))
        return total

    @property
    def faults_injected(self) -> int:
        return sum(self.faults().values())

    @property
    def submissions(self) -> int:
        second = self.second.stats["submissions"] if self.second else 0
        return self.first.stats["submissions"] + second

    def submit_faults(self, kinds: frozenset[str]) -> int:
        """Faults of these kinds injected on submits."""
        return sum(
            n
            for name, n in self.faults().items()
            if name.split()[0] == "submit" and name.split()[1] in kinds
        )

    def expected_retries(self) -> int | None:
        """Every injected fault the client must have retried: all of them but the submit faults
        that are reconciled instead, and slow answers that arrive within the timeout. None for
        the restart case (cut connections are retried too, and are no injected fault)."""
        if self.case.restart:
            return None
        total = 0
        for name, n in self.faults().items():
            endpoint, kind = name.split()
            if endpoint == "task" or kind == "expired":  # no request fails: nothing to retry
                continue
            if endpoint == "submit" and kind in SUBMIT_CREATED | SUBMIT_NOT_CREATED:
                continue
            if kind == "slow" and not self.case.slow_faults_time_out:
                continue
            total += n
        return total

    def rows(self, error_type: str | None = None) -> pd.DataFrame:
        if error_type is None:
            return self.log
        return self.log[self.log["error_type"] == error_type]

    def never_arrived_rows(self) -> pd.DataFrame:
        superseded = self.rows("Superseded")
        return superseded[superseded["error"].str.contains("never arrived", regex=False)]

    def forgotten_rows(self) -> pd.DataFrame:
        superseded = self.rows("Superseded")
        return superseded[superseded["error"].str.contains("unknown to WaveSpeed", regex=False)]

    def adoptions(self) -> int:
        """Predictions adopted after their submit's answer was lost (as their records say)."""
        return sum("adopted" in rec.details for recs in self.records.values() for rec in recs)

    def expected_rows(self) -> int:
        """One row per attempt, from what the emulator saw: each picture's outcome per pass,
        plus a row per prediction an attempt replaced (forgotten by a restart) and per submit
        that never arrived."""
        first = self.images + self.submit_faults(SUBMIT_NOT_CREATED) + self.forgotten
        second = len(self.second.keys) if self.second else 0
        return first + second

    @property
    def duplicates(self) -> int:
        """Submissions beyond one per picture."""
        return self.submissions - self.images

    def duplicate_reasons(self) -> dict[str, int]:
        reasons: Counter = Counter()
        if self.forgotten:
            reasons["forgotten by the restart"] = len(self.forgotten_rows())
        if self.second is not None:
            reasons["second pass after a failure"] = self.second.stats["submissions"]
        return dict(reasons)

    @property
    def rows_lost(self) -> int:
        return self.expected_rows() - len(self.log)


# -- running -------------------------------------------------------------------------------------
def build_pipeline(emulator: EmulatorServer, case: FaultCase, images: Path, store: Path, mode: str):
    concurrency = SINGLE_RUN_CONCURRENCY if mode == "single_run" else 1
    pipeline = pipeline_for(emulator, images, store, max_concurrency=concurrency)
    return with_hunyuan3d(pipeline, **{**CLIENT, **case.client})


def run_pass(
    instance: dg.DagsterInstance,
    pipeline: MeshPipeline,
    keys: list[str],
    mode: str,
    before_run: Callable[[int, str], Callable[[], None] | None] | None = None,
) -> list[dg.ExecuteInProcessResult]:
    """Materialize `keys` in `mode`. `before_run(i, key)` may start something for run i of a
    per-partition pass and return what waits for it to end."""
    if mode == "single_run":
        return materialize_images(instance, pipeline, keys, run_config=QUIET)
    add_image_partitions(instance, pipeline, keys)
    s = pipeline.settings
    results = []
    for i, key in enumerate(keys):
        finish = before_run(i, key) if before_run else None
        results.append(
            dg.materialize(
                pipeline.assets,
                selection=[s.source_images_key, s.meshes_key],
                partition_key=key,
                instance=instance,
                resources=pipeline.resources,
                run_config=QUIET,
                raise_on_error=False,
            )
        )
        if finish is not None:
            finish()
    return results


class Restarter:
    """Restarts the emulator once `in_flight` predictions are held `processing` (the emulator's
    `hold`), then lets predictions finish again. Started before the run, joined after it."""

    def __init__(self, emulator: EmulatorServer, in_flight: int, deadline: float = 60.0):
        self.emulator, self.in_flight, self.deadline = emulator, in_flight, deadline
        self.forgotten = 0
        self.error: str | None = None
        self._thread = threading.Thread(target=self._watch, name="restarter", daemon=True)

    def start(self) -> Restarter:
        self.emulator.configure(hold=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        ends = time.monotonic() + self.deadline
        while time.monotonic() < ends:
            processing = self.emulator.stats()["predictions"]["processing"]
            if processing >= self.in_flight:
                self.forgotten = processing
                self.emulator.restart()
                self.emulator.configure(hold=False)
                return
            time.sleep(0.01)  # polling a condition under a deadline, not synchronising by time
        self.error = f"never saw {self.in_flight} prediction(s) in flight"
        self.emulator.configure(hold=False)

    def join(self) -> None:
        self._thread.join(timeout=self.deadline + 5)


def snapshot(emulator: EmulatorServer) -> dict:
    return emulator.stats()


def _listed_ids(emulator: EmulatorServer) -> set[str]:
    ids: set[str] = set()
    page = 1
    with httpx.Client(base_url=emulator.base_url, timeout=10) as http:
        while True:
            answer = http.post(
                "/api/v3/predictions",
                json={"page": page, "page_size": 100},
                headers={"Authorization": "Bearer fault-suite"},
            ).json()["data"]
            ids.update(item["id"] for item in answer["items"])
            if page * 100 >= answer["total"]:
                return ids
            page += 1


def _records(store: MeshStore) -> dict[str, list[PredictionRecord]]:
    found: dict[str, list[PredictionRecord]] = {}
    for key in store.list_keys("predictions/"):
        data = store.get_bytes(key)
        if data is None or not key.endswith(".json"):
            continue
        record = PredictionRecord.from_json(data)
        found.setdefault(record.partition_key, []).append(record)
    for records in found.values():
        records.sort(key=lambda r: r.generation)
    return found


def _latest_errors(log: pd.DataFrame) -> dict[str, str]:
    """partition -> the error of its latest outcome row (rows of superseded predictions are
    written with their outcome's and say why they were replaced, not how the attempt ended)."""
    outcomes = log[log["error_type"] != "Superseded"].sort_values("logged_at", kind="stable")
    latest = outcomes.drop_duplicates("partition_key", keep="last")
    return {
        row["partition_key"]: str(row["error"])
        for row in latest.to_dict("records")
        if isinstance(row["error"], str)
    }


def run_case(
    case: FaultCase,
    mode: str,
    count: int,
    workdir: Path,
    instance: dg.DagsterInstance,
) -> CaseReport:
    """Run `case` in `mode` over `count` fresh pictures under `workdir`, and gather what the
    system recorded."""
    images = workdir / "images"
    make_images(images, count, tuple(d.tag for d in case.doomed))
    with (
        EmulatorServer(latency=case.latency, jitter=case.latency / 4, seed=count) as emulator,
        retry_log() as retries,
    ):
        pipeline = build_pipeline(emulator, case, images, workdir / "store", mode)
        keys = partition_keys(pipeline)
        doomed = {k: d for k in keys for d in case.doomed if d.tag in k}
        emulator.configure(**case.faults(len(doomed)))
        restarter: Restarter | None = None

        def before_run(i: int, key: str):
            nonlocal restarter
            if not case.restart or i != len(keys) // 2:
                return None
            restarter = Restarter(emulator, 1).start()
            return restarter.join

        if case.restart and mode == "single_run":
            restarter = Restarter(emulator, min(SINGLE_RUN_CONCURRENCY, len(keys))).start()
        runs = run_pass(instance, pipeline, keys, mode, before_run)
        if restarter is not None:
            restarter.join()
            if restarter.error:
                raise AssertionError(restarter.error)
        first = Pass(runs, snapshot(emulator), keys)
        store = mesh_store_of(pipeline)
        log = PredictionLog(store)
        failed_first = failed_partitions(instance)
        meshed_first = set(instance.get_materialized_partitions(pipeline.settings.meshes_key))
        errors_first = _latest_errors(log.read())

        emulator.reset()  # faults off, counters from zero: the second pass's own figures
        second = None
        if doomed:
            again = keys if mode == "single_run" else sorted(failed_first)
            second = Pass(run_pass(instance, pipeline, again, mode), snapshot(emulator), again)

        events = latest_materializations(instance, pipeline.settings.meshes_key, keys)
        meshes, invalid = {}, {}
        for key, event in events.items():
            path = str(event.metadata.get("mesh_uri", "")).removeprefix("file://")
            meshes[key] = path
            try:
                inspect_glb(Path(path))
            except (MeshError, OSError) as exc:
                invalid[key] = str(exc)
        frame = log.read().sort_values("logged_at", kind="stable").reset_index(drop=True)
        return CaseReport(
            case=case,
            mode=mode,
            keys=keys,
            doomed=doomed,
            first=first,
            second=second,
            failed_after_first=failed_first,
            meshed_after_first=meshed_first,
            errors_after_first=errors_first,
            failed=failed_partitions(instance),
            meshes=meshes,
            invalid_meshes=invalid,
            glb_valid=check_results(instance, "glb_valid"),
            log=frame,
            records=_records(store),
            listed_ids=_listed_ids(emulator),
            retries=list(retries.retries),
            forgotten=restarter.forgotten if restarter else 0,
        )


# -- what must hold ------------------------------------------------------------------------------
def problems(r: CaseReport) -> list[str]:
    """The suite's invariants, each broken one as a sentence (empty: all hold)."""
    found: list[str] = []

    def expect(ok: bool, what: str) -> None:
        if not ok:
            found.append(what)

    keys, doomed, log = set(r.keys), set(r.doomed), r.log
    # Outcomes: after the first pass exactly the doomed pictures failed, naming their cause;
    # at the end every partition has a mesh that parses and passed glb_valid.
    wrong = {k: r.errors_after_first.get(k) for k in r.failed_after_first ^ doomed}
    expect(not wrong, f"failed after the first pass, or not: {wrong}")
    missing = sorted(keys - doomed - r.meshed_after_first)
    expect(r.meshed_after_first == keys - doomed, f"no mesh after the first pass: {missing}")
    for key, why in r.doomed.items():
        error = r.errors_after_first.get(key, "")
        expect(why.cause in error, f"{key} failed without naming {why.cause!r}: {error!r}")
    expect(r.failed == set(), f"failed at the end: {sorted(r.failed)}")
    expect(set(r.meshes) == keys, f"no mesh at the end: {sorted(keys - set(r.meshes))}")
    expect(not r.invalid_meshes, f"meshes inspect_glb refuses: {r.invalid_meshes}")
    expect(r.glb_valid == dict.fromkeys(keys, True), "glb_valid did not pass everywhere")

    # The log: one row per attempt, none lost, none twice; every paid prediction in it.
    expect(log["row_id"].is_unique, "a row_id appears twice")
    expect(r.rows_lost == 0, f"rows: {len(log)} found, {r.expected_rows()} expected")
    ids = set(log["prediction_id"].dropna())
    expect(len(ids) == r.submissions, f"{len(ids)} prediction ids logged, {r.submissions} made")
    if r.case.restart:  # the restarted emulator lists only what came after
        expect(r.listed_ids <= ids, "a listed prediction is not in the log")
    else:
        expect(ids == r.listed_ids, "the log's prediction ids are not the emulator's")
    outcomes = log[log["error_type"] != "Superseded"]
    passes = r.images + (len(r.second.keys) if r.second else 0)
    expect(len(outcomes) == passes, f"{len(outcomes)} outcome rows for {passes} outcomes")
    for key, why in r.doomed.items():
        mine = outcomes[outcomes["partition_key"] == key]
        statuses = list(mine["status"])
        ends = statuses[:1] == ["failed"] and statuses[-1:] == ["completed"]
        expect(ends, f"{key}: outcome rows {statuses}")
        first_type = mine.iloc[0]["error_type"] if len(mine) else None
        expect(first_type == why.error_type, f"{key}: error_type {first_type}")

    # Paid once per picture, except a prediction the emulator forgot, or a failure that needed
    # a new one; then a row says why.
    forgotten, never = r.forgotten_rows(), r.never_arrived_rows()
    expect(len(forgotten) == r.forgotten, f"{len(forgotten)} rows, {r.forgotten} forgotten")
    first_paid = r.first.stats["submissions"]
    expect(first_paid == r.images + r.forgotten, f"{first_paid} submissions in the first pass")
    if r.second is not None:
        again_paid = r.second.stats["submissions"]
        expect(again_paid == len(doomed), f"{again_paid} submissions in the second pass")
    for key in r.keys:
        rows = log[log["partition_key"] == key]
        paid = set(rows["prediction_id"].dropna())
        again = int(key in doomed) + int((forgotten["partition_key"] == key).sum())
        expect(len(paid) == 1 + again, f"{key}: {len(paid)} predictions, {1 + again} expected")
        records = r.records.get(key, [])
        done = bool(records) and records[-1].state == "completed"
        expect(done and records[-1].prediction_id in paid, f"{key}: latest record not done")
        submits = len(paid) + int((never["partition_key"] == key).sum())
        expect(len(records) == submits, f"{key}: {len(records)} generations, {submits} submits")

    # Every injected fault is a logged retry, or a lost submit answer reconciled: adopted when
    # the prediction existed, sent again (with its row) when it did not.
    expected = r.expected_retries()
    retried = len(r.retries)
    if expected is not None:
        expect(retried == expected, f"{retried} retries, {expected} faults: {dict(r.faults())}")
    not_made, made = r.submit_faults(SUBMIT_NOT_CREATED), r.submit_faults(SUBMIT_CREATED)
    expect(len(never) == not_made, f"{len(never)} never-arrived rows, {not_made} such faults")
    expect(r.adoptions() == made, f"{r.adoptions()} adoptions, {made} lost answers")
    for where, delay, _, message in r.retries:  # Retry-After is honoured
        if "HTTP 429" in message or "retry after" in message:
            expect(delay >= RETRY_AFTER, f"{where} retried after {delay:.3f} s: {message}")
    return found
