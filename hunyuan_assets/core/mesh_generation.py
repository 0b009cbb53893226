"""Registered images in, stored meshes out: dedupe, crash-safe resume, NSFW policy.

No Dagster here: the `meshes` asset turns each `MeshOutcome` into Dagster events and log rows.
Every prediction id is recorded in the store before it is waited on (see `records.py`), so a
killed run, a step retry or a second run of the same picture never pays twice:
- a recorded `pending` prediction is resumed, whoever submitted it;
- only the run that wins the exclusive claim on the next generation submits; the others wait
  for its prediction id and then wait on that prediction too;
- a submit whose answer was lost (or a claim whose run died mid-submit) may exist and be
  billed: it is reconciled against the predictions list (`reconciliation.py`), its prediction
  adopted, or sent again only when the list shows it never arrived; what the list cannot tell
  stays refused for a person;
- an attempt pays for at most one new prediction, and only when the latest one failed or is
  unknown to the API (never because a wait timed out or a download broke).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from hunyuan_assets.client import (
    AsyncHunyuan3DClient,
    OutputDownloadError,
    OutputExpiredError,
    Prediction,
    PredictionFailedError,
    PredictionNotFoundError,
    SubmissionUncertainError,
    WaveSpeedError,
)
from hunyuan_assets.client.polling import (
    CompletionForecast,
    PollObservation,
    forecast_completion,
)
from hunyuan_assets.core import mesh_work
from hunyuan_assets.core.budget import BudgetExceededError, BudgetSlot, DailyBudget
from hunyuan_assets.core.glb import MeshAnalysis, MeshError, MeshInfo, analyse_glb, thumbnail_of
from hunyuan_assets.core.group_writes import GroupWriter
from hunyuan_assets.core.log import PredictionLog, PredictionLogRow
from hunyuan_assets.core.loop_lag import LoopLag
from hunyuan_assets.core.poll_history import PollHistory
from hunyuan_assets.core.prediction_rows import (
    RowContext,
    outcome_rows,
    registration_failure_row,
)
from hunyuan_assets.core.reconciliation import (
    ClockOffsets,
    ReconcilePolicy,
    SubmitJournal,
    SubmitMarker,
    Verdict,
    now_utc,
    reconcile,
)
from hunyuan_assets.core.records import (
    PredictionRecord,
    PredictionRecords,
    now_iso,
    record_prefix,
    uncertain_help,
)
from hunyuan_assets.core.registered_images import RegisteredImages
from hunyuan_assets.core.registration import Registration, register_image
from hunyuan_assets.core.scratch import make_scratch_dir, remove_orphaned_scratch_dirs
from hunyuan_assets.core.sources import ImageRef, ImageSource
from hunyuan_assets.core.store import MeshStore, mesh_key, preview_key

NsfwPolicy = Literal["keep", "quarantine", "fail"]
OutcomeStatus = Literal["completed", "reused", "failed"]
logger = logging.getLogger("hunyuan_assets.core.mesh_generation")


class ResubmissionRefusedError(Exception):
    """Submitting this picture again could pay twice: a submission may exist without a known
    prediction id (a person decides), or this run already paid for the picture (a new run may
    try again)."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class MeshRequest:
    """One partition to turn into a mesh: the registered image and where the API can fetch it."""

    partition_key: str
    image_uri: str
    image_sha256: str
    image_url: str


@dataclass(frozen=True)
class GenerationPolicy:
    model: str
    nsfw_policy: NsfwPolicy = "quarantine"
    reuse_identical_images: bool = True
    preview_size: int = 256
    run_id: str = ""
    # How long a claim may stay `submitting` (no prediction id yet) before it is reported as
    # unresolved. Past it, the claimant is presumed dead mid-submit; it is never taken over.
    claim_wait_seconds: float = 120.0
    # What one prediction costs (a setting: the public price is not confirmed) and the most
    # that may be spent per UTC day across every run sharing the store (see budget.py).
    price_per_prediction_usd: float | None = None
    daily_budget_usd: float | None = None
    # Stamped on every log row: which pipeline (build_mesh_defs name) and mesh code version.
    pipeline: str = ""
    code_version: str = ""
    # How a submit whose answer was lost is resolved (reconciliation.py).
    reconcile: ReconcilePolicy = ReconcilePolicy()
    # Mesh analysis (inspection + preview, ~20-50 ms of numpy) in worker processes instead of
    # threads: pays when many predictions are in flight (bench/bench_mesh.py), costs ~65 MB
    # a worker, and spawned workers need the main script's `if __name__ == "__main__":`.
    analysis_in_processes: bool = False
    # Submit POSTs awaiting their answer at once (see MeshGenerator._send): 1 resolves every
    # lost answer on its own but sends at most one submit per round trip.
    submits_in_flight: int = 1


@dataclass(frozen=True)
class SupersededPrediction:
    """A prediction left by an earlier (crashed) attempt that turned out failed or unknown:
    replaced by a new one, and logged so that no paid prediction is missing from the log."""

    prediction_id: str
    attempt: int
    error: str
    cost_usd: float | None = 0.0  # the price when it failed at the provider (None: no price)


@dataclass(frozen=True)
class MeshOutcome:
    request: MeshRequest
    status: OutcomeStatus
    prediction: Prediction | None = None
    mesh_uri: str | None = None
    preview_uri: str | None = None
    # A small JPEG of the preview, to inline in metadata (the full PNG stays in the store).
    thumbnail_jpeg: bytes | None = None
    info: MeshInfo | None = None
    nsfw: bool = False
    quarantined: bool = False
    reused_from: str | None = None
    resumed: bool = False
    attempt: int = 0
    error: str | None = None
    error_type: str | None = None
    transient: bool = False
    details: dict = field(default_factory=dict)
    superseded: tuple[SupersededPrediction, ...] = ()
    # What this outcome's own prediction cost: the price for a prediction that completed or
    # failed at the provider (None when no price is configured: unknown, not free); 0 for
    # reuse, refusals, and waits or downloads that broke off (the prediction's own terminal
    # row carries its cost later).
    cost_usd: float | None = 0.0

    @property
    def ok(self) -> bool:
        return self.status != "failed"


@dataclass(frozen=True)
class ImageToRegister:
    """One partition whose image is registered (hashed, validated, uploaded) first; with
    `generate` its mesh is made right after, as soon as a prediction slot is free."""

    ref: ImageRef
    generate: bool = True
    # Re-registering for `meshes` alone (an expired URL): the picture must still be this one.
    expected_sha256: str | None = None

    @property
    def partition_key(self) -> str:
        return self.ref.partition_key


@dataclass(frozen=True)
class RegistrationOutcome:
    registration: Registration

    @property
    def partition_key(self) -> str:
        return self.registration.ref.partition_key


WorkItem = ImageToRegister | MeshRequest
Outcome = RegistrationOutcome | MeshOutcome
_DONE = object()
MAX_UPLOADS_AT_ONCE = 32
MAX_DOWNLOADS_AT_ONCE = 32
# Predictions in flight from which waits learn together on a cold start (`client.wait(wake=)`).
LEARN_TOGETHER_FROM = 8


#: Outcomes are kept (logged, registrations stored) in groups started at most this often
#: (group_writes.py): at 384 realistic images it made ~3x fewer, larger log files. Reports
#: wait up to this much longer; the prediction slots do not (they free at completion).
KEEP_MIN_GAP_S = 0.2


class MeshGenerator:
    """Turns work items into outcomes, streaming: each image is registered, submitted, awaited,
    downloaded and analysed on its own, with at most `max_concurrency` predictions in flight,
    and each outcome is handed over as soon as it exists.

    Memory stays flat whatever the number of items: at most `2 * max_concurrency` images are
    registered ahead of a free prediction slot (so uploads never wait for predictions, and
    presigned URLs are fresh when submitted), and at most `2 * max_concurrency` finished
    outcomes wait for the consumer (it applies back-pressure by reading slowly)."""

    def __init__(
        self,
        client: AsyncHunyuan3DClient,
        store: MeshStore,
        policy: GenerationPolicy,
        max_concurrency: int,
        *,
        source: ImageSource | None = None,
        log: PredictionLog | None = None,
        registry: RegisteredImages | None = None,
    ):
        self.client = client
        self.store = store
        self.records = PredictionRecords(store)
        self.policy = policy
        self.journal = SubmitJournal(store, policy.model)
        # Polling that learns: what earlier runs saw of this model's durations, plus what this
        # run sees, forecast when a prediction will complete (client/polling.py).
        self.poll_history = PollHistory(store)
        self._observations: deque[PollObservation] = deque(maxlen=_OBSERVATIONS_KEPT)
        # Asked by every wait as it plans (hundreds in flight): made once per observation.
        self._current_forecast: CompletionForecast | None = None
        self.loop_lag = LoopLag()  # read it after `run` to see whether anything held the loop
        self._new_observations: list[PollObservation] = []
        # Set once this run can forecast: waits still on the adaptive schedule re-plan then.
        self._forecast_known = asyncio.Event()
        self._wake: asyncio.Event | None = None
        self.source = source
        self.log = log
        self.registry = registry
        self._rows = RowContext(policy.pipeline, policy.model, policy.run_id, policy.code_version)
        # With few in flight the first completions come too late to inform the rest: the
        # plain schedule then (simulated: bench_polling.py).
        self._learn_together = max_concurrency >= LEARN_TOGETHER_FROM
        self._slots = asyncio.Semaphore(max_concurrency)
        # Submits are sent `submits_in_flight` at a time, with what is known of the provider's
        # clock, and none while a lost answer's window is open (see _send).
        if policy.submits_in_flight < 1:
            raise ValueError("submits_in_flight must be at least 1")
        self._sending = asyncio.Semaphore(policy.submits_in_flight)
        self._closed_until = 0.0  # loop time before which no new submit is sent
        self._clocks = ClockOffsets()
        self._lookahead = asyncio.Semaphore(2 * max_concurrency)
        # Uploads are short: a few dozen at once keep ahead of any number of predictions,
        # without opening hundreds of connections in the same instant.
        self._uploads = asyncio.Semaphore(min(2 * max_concurrency, MAX_UPLOADS_AT_ONCE))
        # A wave of completions (300 at once at C=300) would download all at once: as fast
        # with 32 on a few cores, and without 300 sets of buffers in memory.
        self._downloads = asyncio.Semaphore(min(max_concurrency, MAX_DOWNLOADS_AT_ONCE))
        self._buffer = 2 * max_concurrency
        self._superseded: dict[str, list[SupersededPrediction]] = {}
        # The files this run logged, with their rows (~1 KB an image): merged into one file
        # once everything is reported.
        self._log_files: dict[str, list[PredictionLogRow]] = {}
        self._primaries: dict[str, asyncio.Task[MeshOutcome]] = {}
        self._budget = (
            DailyBudget(store, policy.daily_budget_usd, policy.price_per_prediction_usd or 0.0)
            if policy.daily_budget_usd is not None
            else None
        )

    async def run(self, items: Sequence[WorkItem]) -> AsyncIterator[Outcome]:
        """Yield outcomes as they finish. Identical pictures share one prediction."""
        results: asyncio.Queue = asyncio.Queue(maxsize=self._buffer)
        kept: GroupWriter[Outcome] = GroupWriter(self._keep, min_gap=KEEP_MIN_GAP_S)

        async def emit(outcome: Outcome) -> None:
            if isinstance(outcome, MeshOutcome):
                earlier = self._superseded.pop(outcome.request.partition_key, [])
                if earlier:
                    outcome = replace(outcome, superseded=tuple(earlier))
            # Logged (and a registration kept) before anyone hears of it: nothing is lost if
            # the process dies while the consumer reports it. In groups (group_writes.py).
            await kept.write(outcome)
            await results.put(outcome)

        async def work() -> None:
            tasks = [asyncio.ensure_future(self._item(item, emit)) for item in items]
            try:
                await asyncio.gather(*tasks)
            except BaseException as exc:  # a bug, not a bad image: the consumer re-raises it
                # gather leaves the others running: stop them before the caller closes the
                # client under their requests (seen: "retrying PUT ... (ReadError)").
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await results.put(exc)
            finally:
                await results.put(_DONE)

        self._observations = deque(
            await asyncio.to_thread(self.poll_history.observations, self.policy.model),
            maxlen=_OBSERVATIONS_KEPT,
        )
        self._current_forecast = forecast_completion(self._observations)
        self._forecast_known = asyncio.Event()  # of this loop; set by `_learn`
        self._wake = self._forecast_known if self._learn_together else None
        worker = asyncio.create_task(work())
        lag = asyncio.create_task(self.loop_lag.watch())
        sweep = asyncio.create_task(asyncio.to_thread(remove_orphaned_scratch_dirs))
        try:
            while (outcome := await results.get()) is not _DONE:
                if isinstance(outcome, BaseException):
                    raise outcome
                yield outcome
            await self._merge_log_files()
        finally:
            worker.cancel()
            lag.cancel()
            await self._save_observations()
            if removed := await sweep:
                logger.info("removed %d download folder(s) of processes that are gone", removed)

    async def _merge_log_files(self) -> None:
        """Everything is reported: the files this run logged become one per day. Upkeep, so
        a failure only leaves them for the compaction schedule."""
        files, self._log_files = self._log_files, {}
        if self.log is None or len(files) < 2:
            return
        try:
            await asyncio.to_thread(self.log.merge, files)
        except Exception:  # noqa: BLE001 - every row is already in the files
            logger.warning("could not merge this run's %d log files", len(files), exc_info=True)

    def _keep(self, outcomes: list[Outcome]) -> None:
        """Keep each registration and log every outcome's rows, in one parquet file."""
        rows = []
        for outcome in outcomes:
            if isinstance(outcome, RegistrationOutcome):
                registration = outcome.registration
                if registration.ok and registration.info is not None:
                    if self.registry is not None:
                        self.registry.put(registration)
                else:
                    rows.append(registration_failure_row(self._rows, registration))
            else:
                rows.extend(outcome_rows(self._rows, outcome))
        if self.log is not None and rows:
            self.log.append(rows, written=self._log_files)

    async def _item(self, item: WorkItem, emit) -> None:
        if isinstance(item, MeshRequest):
            await emit(await self._mesh(item))
            return
        ahead = self._lookahead
        await ahead.acquire()
        held = [True]

        def slot_taken() -> None:
            if held[0]:
                held[0] = False
                ahead.release()

        try:
            if self.source is None:
                raise ValueError("MeshGenerator needs an ImageSource to register images")
            async with self._uploads:
                registration = await register_image(self.source, item.ref, self.client)
            await emit(RegistrationOutcome(registration))
            if not item.generate or not registration.ok or registration.info is None:
                return
            request = MeshRequest(
                partition_key=item.partition_key,
                image_uri=item.ref.uri,
                image_sha256=registration.info.sha256,
                image_url=registration.image_url or "",
            )
            if item.expected_sha256 not in (None, request.image_sha256):
                changed = "the image changed since source_images was materialized; "
                error = ValueError(changed + "materialize source_images again")
                await emit(_failure(request, error, transient=False, attempt=0))
                return
            await emit(await self._mesh(request, slot_taken))
        finally:
            slot_taken()

    async def _mesh(self, request: MeshRequest, slot_taken=None) -> MeshOutcome:
        """This picture's mesh; a second partition with the same picture follows the first."""
        share = self.policy.reuse_identical_images
        primary = self._primaries.get(request.image_sha256) if share else None
        if primary is not None:
            if slot_taken:
                slot_taken()
            return await _follow(primary, request)
        task = asyncio.ensure_future(self._generate(request, slot_taken))
        if share:
            self._primaries[request.image_sha256] = task
        return await task

    def _record_prefix(self, request: MeshRequest) -> str:
        scoped = None if self.policy.reuse_identical_images else request.partition_key
        return record_prefix(request.image_sha256, self.policy.model, scoped)

    async def _generate(self, request: MeshRequest, slot_taken=None) -> MeshOutcome:
        prefix = self._record_prefix(request)
        slot = _Slot(self._slots)
        try:
            await slot.take()
            if slot_taken:
                slot_taken()
            return await self._generate_once(request, prefix, slot)
        except (WaveSpeedError, ResubmissionRefusedError, MeshError, BudgetExceededError) as exc:
            # The log row names the generation (attempt) that failed, as the record says.
            record = await self._latest(prefix)
            attempt = record.generation if record else 0
            transient = getattr(exc, "transient", False)
            outcome = _failure(request, exc, transient=transient, attempt=attempt)
            # A task that failed at the provider is counted as paid (billing of failed tasks
            # is not documented); waits and downloads that broke off are not its terminal row.
            paid = isinstance(exc, PredictionFailedError)
            return replace(outcome, cost_usd=self._price) if paid else outcome
        finally:
            slot.give_back()

    async def _generate_once(
        self, request: MeshRequest, prefix: str, slot: _Slot | None = None
    ) -> MeshOutcome:
        """Reuse, resume or submit; wait; store. Pays for at most one new prediction."""
        record = await self._latest(prefix)
        leftover = _leftover_generation(record)
        replaced_forgotten = False
        never_arrived = 0
        while True:
            record = await self._settle(request, prefix, record, leftover)
            if record.state == "completed":
                return await asyncio.to_thread(self._reused, request, record)
            resumed = record.state == "pending"
            # Waiting on the fresh Prediction (not its id) skips a pointless immediate poll.
            target: Prediction | str = record.prediction_id or ""
            if not resumed:
                try:
                    record, target = await self._submit(request, prefix, record)
                except _NeverArrived as exc:
                    # The list shows nothing was made, so nothing was paid: sent again, as the
                    # client resends a request that never got through, up to its max attempts.
                    # Past that, nothing is paid either, so a later attempt may try (transient).
                    never_arrived += 1
                    if never_arrived >= self.client.settings.retry.max_attempts:
                        message = f"{exc}, {never_arrived} times: not submitting again now"
                        raise ResubmissionRefusedError(message, transient=True) from exc
                    self._superseded.setdefault(request.partition_key, []).append(
                        SupersededPrediction("", record.generation, str(exc))
                    )
                    record = await self._latest(prefix)
                    continue
            logger.info(
                "%s: waiting on prediction %s (generation %d, %s, run %s)",
                request.partition_key,
                record.prediction_id,
                record.generation,
                "resumed" if resumed else "submitted",
                self.policy.run_id,
            )
            try:
                prediction = await self.client.wait(
                    target, forecast=self._forecast, wake=self._wake
                )
                await self._learn(prediction)
            except (PredictionNotFoundError, PredictionFailedError) as exc:
                forgotten = isinstance(exc, PredictionNotFoundError)
                details = {**record.details, "forgotten": True} if forgotten else record.details
                record = await self._put(
                    prefix, record.evolve(state="failed", error=str(exc), details=details)
                )
                own = record.generation > leftover
                if (own and not forgotten) or (forgotten and replaced_forgotten):
                    raise  # this attempt's own prediction failed: permanent for this attempt
                # A prediction left by an earlier attempt is unknown (expired, wrong account) or
                # failed unseen, or the API forgot one (a restarted service: nothing to pay
                # for): this attempt is entitled to exactly one new one.
                replaced_forgotten = replaced_forgotten or forgotten
                logger.warning(
                    "%s: prediction %s (generation %d) is %s; submitting a new one",
                    request.partition_key,
                    record.prediction_id,
                    record.generation,
                    "unknown to the API" if forgotten else "failed",
                )
                cost = 0.0 if forgotten else self._price
                self._superseded.setdefault(request.partition_key, []).append(
                    SupersededPrediction(
                        record.prediction_id or "", record.generation, str(exc), cost
                    )
                )
                continue
            # The provider's task is over: its concurrency slot is free while we download,
            # analyse and store, so the next picture's prediction starts now.
            if slot is not None:
                slot.give_back()
            return await self._store_output(request, prefix, record, prediction, resumed)

    async def _settle(
        self, request: MeshRequest, prefix: str, record: PredictionRecord | None, leftover: int
    ) -> PredictionRecord:
        """Turn the latest record into one of: `completed` with its mesh stored (reuse it),
        `pending` (wait on it), or our own `submitting` claim (submit it). `leftover` is the
        newest generation left by earlier attempts (see `_leftover_generation`)."""
        started = time.monotonic()
        delay = 0.05
        while True:
            if record is None:
                if claim := await self._try_claim(request, prefix, None):
                    return claim
            elif record.state == "pending":
                return record
            elif record.state == "completed" and await self._mesh_stored(record):
                return record
            elif record.state == "uncertain":
                # A submit whose answer was lost (this run's earlier attempt, or another run's).
                marker = _marker_of(record, prefix)
                await asyncio.to_thread(self.journal.lost, marker)
                try:
                    resolved, _ = await self._resolve(request, prefix, record, marker)
                except _NeverArrived:
                    record = await self._latest(prefix)
                    continue
                return resolved
            elif record.state == "submitting":
                # Another run (or a dead attempt) holds the claim and has no prediction id yet.
                if self._claim_is_dead(record, time.monotonic() - started):
                    # Its run died between claiming and hearing back: reconcile it like a lost
                    # answer, whether or not its POST left.
                    token = _token(prefix, record.generation)
                    sent = next(
                        (m for m in self.journal.markers("in_flight") if m.token == token), None
                    )
                    # Without its marker (a version that wrote none), the claim's own time
                    # opens the window: the predictions list still tells what happened.
                    lost = sent or SubmitMarker(token, record.partition_key, record.updated_at)
                    record = await self._put(
                        prefix,
                        record.evolve(
                            state="uncertain",
                            error="its run died while submitting",
                            details=_with(lost, record),
                        ),
                    )
                    continue
                logger.info(
                    "%s: waiting for run %s to submit generation %d",
                    request.partition_key,
                    record.run_id,
                    record.generation,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            else:  # failed, or completed with the mesh gone: a new generation may submit
                self._check_may_pay_again(record, leftover)
                if claim := await self._try_claim(request, prefix, record):
                    return claim
            # Lost the claim to another run, or still waiting for one: follow the latest.
            record = await self._latest(prefix)

    async def _try_claim(
        self, request: MeshRequest, prefix: str, previous: PredictionRecord | None
    ) -> PredictionRecord | None:
        """Our claim on the next generation, or None when another run claimed it first."""
        claim = PredictionRecord(
            state="submitting",
            image_sha256=request.image_sha256,
            model=self.policy.model,
            partition_key=request.partition_key,
            run_id=self.policy.run_id,
            updated_at=now_iso(),
            generation=previous.generation + 1 if previous else 1,
        )
        return claim if await asyncio.to_thread(self.records.claim, prefix, claim) else None

    async def _mesh_stored(self, record: PredictionRecord) -> bool:
        return bool(record.mesh_key) and await asyncio.to_thread(
            self.store.exists, record.mesh_key or ""
        )

    def _claim_is_dead(self, record: PredictionRecord, waited: float) -> bool:
        """A claim that stays `submitting` for longer than a submit can take belongs to a run
        that died during the submit POST: it may have been billed, so it is reconciled."""
        limit = max(self.policy.claim_wait_seconds, self.client.settings.timeouts.submit + 5)
        return record.age_seconds() >= limit or waited >= limit

    def _check_may_pay_again(self, record: PredictionRecord, leftover: int) -> None:
        """Replacing a paid prediction that failed is allowed once per attempt and once per run.

        A generation newer than `leftover` was paid for while this attempt ran (by a concurrent
        run): its failure is fresh, not a reason to pay again. And a step retry redoes every
        partition the failed step did not materialize, permanently failed ones included: without
        the run check it would pay for a failing picture again on each retry. (A record without
        a prediction id cost nothing: the API refused the submit, so trying again is fine.)"""
        if not record.prediction_id or record.details.get("forgotten"):
            return
        ours = bool(self.policy.run_id) and record.run_id == self.policy.run_id
        if record.generation > leftover or ours:
            raise ResubmissionRefusedError(
                f"prediction {record.prediction_id} (generation {record.generation}, run "
                f"{record.run_id}) is {record.state}: {record.error or 'its mesh is missing'}. "
                "Not paying for the same picture twice in one run; a new run submits it once more."
            )

    async def _submit(
        self, request: MeshRequest, prefix: str, claim: PredictionRecord
    ) -> tuple[PredictionRecord, Prediction | str]:
        """Submit our claim; the prediction id is durable before anyone waits on it. A lost
        answer is reconciled against the predictions list at once (never paying twice)."""
        slot = await self._reserve_budget(request, prefix, claim)
        token = _token(prefix, claim.generation)
        try:
            marker, answer = await self._send(request, token)
        except WaveSpeedError as exc:
            # Refused before a task existed (429/503 after retries, 4xx): safe to submit again.
            await asyncio.to_thread(self.journal.finished, token)
            await self._put(prefix, claim.evolve(state="failed", error=str(exc)))
            if slot is not None and self._budget is not None:
                await asyncio.to_thread(self._budget.release, slot)
            raise
        if isinstance(answer, SubmissionUncertainError):
            # It may exist and be billed: find out from the predictions list, never by guessing.
            await asyncio.to_thread(self.journal.lost, marker)
            uncertain = await self._put(
                prefix,
                claim.evolve(state="uncertain", error=str(answer), details=_with(marker, claim)),
            )
            return await self._resolve(request, prefix, uncertain, marker)
        pending = claim.evolve(
            state="pending", prediction_id=answer.id, submitted_at=now_iso(), error=None
        )
        await asyncio.to_thread(self._submitted, token, answer.id, prefix, pending)
        return pending, answer

    def _submitted(
        self, token: str, prediction_id: str, prefix: str, pending: PredictionRecord
    ) -> None:
        """The journal's marker closed, then the record that holds the id: in that order, as
        before, but one trip to a thread for both (every image makes it)."""
        self.journal.finished(token, prediction_id)
        self.records.put(prefix, pending)

    async def _send(
        self, request: MeshRequest, token: str
    ) -> tuple[SubmitMarker, Prediction | SubmissionUncertainError]:
        """The submit POST with its marker: the prediction, or the lost answer (the marker's
        window closed). After a lost answer no new send starts until its window has closed
        too, so no later window of this generator overlaps it (reconciliation.py).

        With `submits_in_flight` 1 (the default) no two windows of this generator overlap at
        all, so each lost answer is told apart from every other. With more, up to that many
        submits share each round trip (one at a time caps a run at 1 / round trip: 4 submits
        a second at 250 ms). A lost answer is still resolved while the others in flight are
        answered (the reconciler waits for them and drops their ids), but two answers lost
        together in the same moment fit each other's windows and are left refused, naming
        the candidates, for a person: nothing is paid twice either way."""
        loop = asyncio.get_running_loop()
        while True:
            while (closed := self._closed_until - loop.time()) > 0:
                await asyncio.sleep(closed)
            await self._sending.acquire()
            if self._closed_until <= loop.time():
                break
            self._sending.release()  # a lost answer closed the way while we waited
        try:
            marker = self._clocks.marker(token, request.partition_key, now_utc())
            await asyncio.to_thread(self.journal.begin, marker)
            try:
                prediction = await self.client.submit(request.image_url, model=self.policy.model)
            except SubmissionUncertainError as exc:
                lost = replace(marker, failed_at=now_utc().isoformat())
                guard = lost.guard_seconds(self.policy.reconcile.skew_seconds)
                self._closed_until = max(self._closed_until, loop.time() + guard)
                return lost, exc
            if prediction.submitted_at is not None:
                self._clocks.learn(prediction.submitted_at, now_utc(), prediction.created_at)
            return marker, prediction
        finally:
            self._sending.release()

    async def _resolve(
        self, request: MeshRequest, prefix: str, record: PredictionRecord, marker: SubmitMarker
    ) -> tuple[PredictionRecord, str]:
        """An uncertain submit, reconciled: adopt the prediction it made, or submit again if it
        never arrived (raises `_NeverArrived`), or stay refused naming the candidates."""
        policy = replace(
            self.policy.reconcile, submit_timeout_seconds=self.client.settings.timeouts.submit
        )
        verdict: Verdict = await reconcile(
            self.client, self.journal, marker, self.policy.model, policy
        )
        logger.warning(
            "%s: submit of generation %d had no answer; reconciled: %s (%s)",
            request.partition_key,
            record.generation,
            verdict.action,
            verdict.reason,
        )
        adopted = verdict.prediction_id
        if verdict.action == "adopt" and adopted:
            if not await asyncio.to_thread(self.journal.remember, adopted):
                verdict = Verdict("refuse", f"{adopted} was adopted by another run")
            else:
                await asyncio.to_thread(self.journal.resolved, marker.token)
                details = {**record.details, "adopted": verdict.reason}
                pending = record.evolve(
                    state="pending",
                    prediction_id=adopted,
                    submitted_at=marker.sent_at,
                    error=None,
                    details=details,
                )
                return await self._put(prefix, pending), adopted
        if verdict.action == "resubmit":
            await asyncio.to_thread(self.journal.resolved, marker.token)
            never = f"reconciled: {verdict.reason}"
            await self._put(prefix, record.evolve(state="failed", error=never))
            raise _NeverArrived(never)
        raise ResubmissionRefusedError(
            f"{verdict.reason}. " + uncertain_help(self.store, prefix, record)
        )

    async def _reserve_budget(
        self, request: MeshRequest, prefix: str, claim: PredictionRecord
    ) -> BudgetSlot | None:
        if self._budget is None:
            return None
        try:
            return await asyncio.to_thread(self._budget.reserve, request.partition_key)
        except BudgetExceededError as exc:
            # Nothing was sent, so nothing was paid: a later attempt may submit this picture.
            await self._put(prefix, claim.evolve(state="failed", error=str(exc)))
            raise

    @property
    def _price(self) -> float | None:
        """What a paid prediction costs; None (unknown) when no price is configured."""
        return self.policy.price_per_prediction_usd

    async def _latest(self, prefix: str) -> PredictionRecord | None:
        return await asyncio.to_thread(self.records.latest, prefix)

    async def _put(self, prefix: str, record: PredictionRecord) -> PredictionRecord:
        await asyncio.to_thread(self.records.put, prefix, record)
        return record

    async def _store_output(
        self,
        request: MeshRequest,
        prefix: str,
        record: PredictionRecord,
        prediction: Prediction,
        resumed: bool,
    ) -> MeshOutcome:
        if not prediction.outputs:
            raise MeshError(f"prediction {prediction.id} completed without outputs")
        nsfw = prediction.nsfw
        quarantined = nsfw and self.policy.nsfw_policy != "keep"
        glb_key, png_key = self._mesh_keys(request, quarantined)
        # Made and removed off the event loop (removing a folder is a few syscalls each).
        tmp = await asyncio.to_thread(make_scratch_dir)
        handed_over = False  # from then on `_publish` removes the scratch folder itself
        try:
            local = tmp / "mesh.glb"
            try:
                async with self._downloads:
                    await self._download(prediction, local, prefix, record)
            except OutputDownloadError as exc:
                return self._download_failed(request, record, prediction, exc)
            try:
                analysis = await self._analyse(local)
                info, png, thumb = analysis.info, analysis.preview_png, analysis.thumbnail_jpeg
                mesh_error = None
            except MeshError as exc:
                # Paid for, so kept for a look; the partition fails (its checks show why) and
                # a new run submits it once more.
                info, png, thumb, mesh_error = None, None, None, str(exc)
            except BrokenProcessPool:
                # The worker died twice (killed, out of memory): not the mesh's fault. The
                # record stays pending, so a new attempt downloads it again, paying nothing.
                return self._analysis_died(request, record, prediction)
            # How the prediction was found after a lost answer stays on the record (audit trail).
            kept = {k: v for k, v in record.details.items() if k in ("adopted", "submit")}
            details = {**kept, **_prediction_details(prediction, info)}
            if mesh_error:
                details["mesh_error"] = mesh_error
            done = record.evolve(
                state="failed" if mesh_error else "completed",
                error=mesh_error,
                mesh_key=glb_key,
                preview_key=png_key if png else None,
                nsfw=nsfw,
                quarantined=quarantined,
                details=details,
            )
            handed_over = True
            previews = (png_key, png, thumb) if png and thumb else None
            mesh_uri, preview_uri = await asyncio.to_thread(
                self._publish, prefix, done, local, glb_key, previews, tmp
            )
        finally:
            if not handed_over:
                await asyncio.to_thread(shutil.rmtree, tmp, True)
        outcome = MeshOutcome(
            request=request,
            status="completed",
            prediction=prediction,
            mesh_uri=mesh_uri,
            preview_uri=preview_uri,
            thumbnail_jpeg=thumb,
            info=info,
            nsfw=nsfw,
            quarantined=quarantined,
            resumed=resumed,
            attempt=done.generation,
            details=done.details,
            cost_usd=self._price,
        )
        if mesh_error:
            return replace(
                outcome,
                status="failed",
                error=f"the output of prediction {prediction.id} is not a valid GLB "
                f"({mesh_error}); kept at {mesh_uri}. A new run submits this image once more.",
                error_type="MeshError",
            )
        if nsfw and self.policy.nsfw_policy == "fail":
            return _nsfw_rejected(outcome)
        return outcome

    def _publish(
        self,
        prefix: str,
        done: PredictionRecord,
        local: Path,
        glb_key: str,
        previews: tuple[str, bytes, bytes] | None,
        scratch: Path,
    ) -> tuple[str, str | None]:
        """Store the mesh, then its preview and thumbnail, then the record that points at
        them (a crash at any point leaves nothing pointing at what is missing), and remove
        the `scratch` folder the mesh was downloaded into: on one thread, one trip from the
        event loop instead of five."""
        try:
            mesh_uri = self.store.move_file(glb_key, local)
        finally:
            shutil.rmtree(scratch, True)
        preview_uri = None
        if previews is not None:
            png_key, png, thumb = previews
            preview_uri = self.store.put_bytes(png_key, png)
            self.store.put_bytes(_thumbnail_key(png_key), thumb)
        self.records.put(prefix, done)
        return mesh_uri, preview_uri

    def _download_failed(
        self,
        request: MeshRequest,
        record: PredictionRecord,
        prediction: Prediction,
        exc: OutputDownloadError,
    ) -> MeshOutcome:
        """The outcome names the completed prediction (its row has its id and timings). An
        expired output is that prediction's last row, so it carries its price; after any other
        download error the record stays pending and a later row will."""
        outcome = replace(
            _failure(request, exc, transient=exc.transient, attempt=record.generation),
            prediction=prediction,
            details={"prediction_id": prediction.id},
        )
        expired = isinstance(exc, OutputExpiredError)
        return replace(outcome, cost_usd=self._price) if expired else outcome

    def _analysis_died(
        self, request: MeshRequest, record: PredictionRecord, prediction: Prediction
    ) -> MeshOutcome:
        error = RuntimeError(
            f"the process analysing the output of prediction {prediction.id} died twice "
            "(killed, or out of memory?); the output is paid for and kept pending: a new run "
            "downloads and analyses it again, without a new prediction"
        )
        outcome = _failure(request, error, transient=True, attempt=record.generation)
        return replace(outcome, prediction=prediction, details={"prediction_id": prediction.id})

    def _forecast(self) -> CompletionForecast | None:
        return self._current_forecast

    async def _learn(self, prediction: Prediction) -> None:
        if prediction.observation is None:
            return
        self._observations.append(prediction.observation)
        self._current_forecast = forecast_completion(self._observations)
        self._new_observations.append(prediction.observation)
        if not self._forecast_known.is_set() and self._current_forecast is not None:
            self._forecast_known.set()
        if len(self._new_observations) >= _OBSERVATIONS_PER_WRITE:
            await self._save_observations()

    async def _save_observations(self) -> None:
        new, self._new_observations = self._new_observations, []
        if new:
            await asyncio.to_thread(self.poll_history.record_many, new)

    async def _analyse(self, local: Path) -> MeshAnalysis:
        size = self.policy.preview_size
        if self.policy.analysis_in_processes:
            return await mesh_work.analyse(local, preview_size=size)
        return await asyncio.to_thread(analyse_glb, local, preview_size=size)

    def _mesh_keys(self, request: MeshRequest, quarantined: bool) -> tuple[str, str]:
        glb_key = mesh_key(request.image_sha256, self.policy.model, quarantined=quarantined)
        png_key = preview_key(request.image_sha256, self.policy.model, quarantined=quarantined)
        if not self.policy.reuse_identical_images:
            # Not shared: each partition keeps its own prediction's mesh.
            glb_key = f"{glb_key.rsplit('/', 1)[0]}/{request.partition_key}/mesh.glb"
            png_key = f"{png_key.rsplit('/', 1)[0]}/{request.partition_key}/preview.png"
        return glb_key, png_key

    async def _download(
        self, prediction: Prediction, dest: Path, prefix: str, record: PredictionRecord
    ) -> None:
        try:
            await self.client.download(prediction.outputs[0], dest)
        except OutputExpiredError as exc:
            # The output is gone for good: only a new prediction can make this mesh.
            await self._put(prefix, record.evolve(state="failed", error=str(exc)))
            raise
        # Any other download error leaves the record `pending`: the next attempt downloads the
        # same paid-for output again instead of paying for a new prediction.

    def _reused(self, request: MeshRequest, record: PredictionRecord) -> MeshOutcome:
        """A mesh for this exact picture is already stored: no API call, nothing paid."""
        thumb = None
        if record.preview_key:
            thumb = self.store.get_bytes(_thumbnail_key(record.preview_key))
            if thumb is None:  # stored before thumbnails were: make it from the preview
                png = self.store.get_bytes(record.preview_key)
                thumb = thumbnail_of(png) if png else None
        outcome = MeshOutcome(
            request=request,
            status="reused",
            mesh_uri=self.store.uri_for(record.mesh_key or ""),
            preview_uri=self.store.uri_for(record.preview_key) if record.preview_key else None,
            thumbnail_jpeg=thumb,
            nsfw=record.nsfw,
            quarantined=record.quarantined,
            reused_from=record.partition_key,
            attempt=record.generation,
            details=record.details,
        )
        if record.nsfw and self.policy.nsfw_policy == "fail":
            return _nsfw_rejected(outcome)
        return outcome


def _leftover_generation(record: PredictionRecord | None) -> int:
    """The newest generation that an earlier attempt left behind. If its prediction turns out
    unknown or failed, this attempt may submit once more; if a generation claimed later fails,
    that failure is fresh and final for this attempt (no resubmission loops)."""
    if record is None:
        return 0
    if record.state == "submitting":
        return record.generation - 1  # a live claim: its prediction is a fresh attempt
    return record.generation


async def _follow(primary: asyncio.Task[MeshOutcome], request: MeshRequest) -> MeshOutcome:
    """A second partition with the same picture shares the first one's prediction and mesh."""
    first = await primary
    if not first.ok and first.error_type != "NsfwRejected":
        return MeshOutcome(
            request=request,
            status="failed",
            reused_from=first.request.partition_key,
            error=(
                f"shares its picture with {first.request.partition_key}, which failed: "
                f"{first.error}"
            ),
            error_type=first.error_type,
            transient=first.transient,
        )
    details = dict(first.details)
    if first.prediction is not None:
        details.update(_prediction_details(first.prediction, first.info))
    return MeshOutcome(
        request=request,
        status="reused" if first.ok else "failed",
        mesh_uri=first.mesh_uri,
        preview_uri=first.preview_uri,
        thumbnail_jpeg=first.thumbnail_jpeg,
        info=first.info,
        nsfw=first.nsfw,
        quarantined=first.quarantined,
        reused_from=first.request.partition_key,
        attempt=first.attempt,
        error=first.error,
        error_type=first.error_type,
        details=details,
    )


def _nsfw_rejected(outcome: MeshOutcome) -> MeshOutcome:
    return MeshOutcome(
        **{
            **outcome.__dict__,
            "status": "failed",
            "error": "output flagged NSFW by the provider; rejected by nsfw_policy='fail' "
            "(the mesh is kept under quarantine/ for review)",
            "error_type": "NsfwRejected",
            "transient": False,
        }
    )


def _failure(request: MeshRequest, exc: Exception, *, transient: bool, attempt: int) -> MeshOutcome:
    prediction = getattr(exc, "prediction", None)
    return MeshOutcome(
        request=request,
        status="failed",
        attempt=attempt,
        prediction=prediction if isinstance(prediction, Prediction) else None,
        error=str(exc),
        error_type=type(exc).__name__,
        transient=transient,
        details={"prediction_id": getattr(exc, "prediction_id", None)},
    )


def _prediction_details(prediction: Prediction, info: MeshInfo | None) -> dict:
    details: dict = {
        "prediction_id": prediction.id,
        "model": prediction.model,
        "inference_ms": prediction.inference_ms,
        "wall_ms": prediction.wall_ms,
        "polls": prediction.polls,
        "has_nsfw_contents": list(prediction.has_nsfw_contents),
        "output_url": prediction.outputs[0] if prediction.outputs else None,
        "created_at": prediction.created_at,
    }
    if info is not None:
        details.update(
            vertices=info.vertices,
            faces=info.faces,
            file_bytes=info.file_bytes,
            watertight=info.watertight,
            has_pbr_material=info.has_pbr_material,
            has_base_color_texture=info.has_base_color_texture,
            materials=info.materials,
            textures=info.textures,
        )
    return details


# Observations are written to the store in batches: one small write per this many.
_OBSERVATIONS_PER_WRITE = 25
# Kept in memory for the forecast: enough that an agreed window still remembers the polls
# that just missed a completion (its tight lower bounds) after several waves of hits.
_OBSERVATIONS_KEPT = 1000


class _Slot:
    """One hold on the prediction slots, given back once (at completion, or at the end)."""

    def __init__(self, slots: asyncio.Semaphore) -> None:
        self._slots, self._held = slots, False

    async def take(self) -> None:
        await self._slots.acquire()
        self._held = True

    def give_back(self) -> None:
        if self._held:
            self._held = False
            self._slots.release()


class _NeverArrived(Exception):
    """Reconciliation found that a lost submit never created a prediction."""


def _token(prefix: str, generation: int) -> str:
    """The submit marker's name for one generation of one picture (found again after a crash)."""
    return hashlib.sha256(f"{prefix}#{generation}".encode()).hexdigest()[:32]


def _with(marker: SubmitMarker, record: PredictionRecord) -> dict:
    return {**record.details, "submit": asdict(marker)}


def _marker_of(record: PredictionRecord, prefix: str) -> SubmitMarker:
    """The uncertain submit's marker as the record keeps it; records from before markers
    existed get a window from what they do say (their last update was the lost answer)."""
    kept = record.details.get("submit")
    if isinstance(kept, dict):
        try:
            return SubmitMarker(**kept)
        except TypeError:
            pass
    failed = datetime.fromisoformat(record.updated_at)
    return SubmitMarker(
        _token(prefix, record.generation),
        record.partition_key,
        (failed - timedelta(seconds=60)).isoformat(),
        failed.isoformat(),
    )


def _thumbnail_key(preview_key: str) -> str:
    return preview_key.rsplit("/", 1)[0] + "/thumbnail.jpg"
