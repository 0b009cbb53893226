"""Resolving a submit whose answer was lost, without ever paying twice.

WaveSpeed has no idempotency key: a submit POST whose connection dropped, or that timed out,
may or may not have created (and billed) a prediction. The API does list an account's
predictions (newest first, with `created_at`, without the input), so:

1. Every submit leaves a marker in the mesh store before it is sent (`submits/<model>/in_flight/
   <token>.json`, with the time it was sent), and every prediction id we learn is indexed
   (`prediction_ids/<model>/<id>`). A lost answer turns the marker into an `uncertain` one, with
   the time the answer was given up on: the submit's window.
2. To reconcile, list the model's predictions created in the window (plus a clock skew on each
   side) and drop every id the store knows. What is left can only come from uncertain submits
   (ours, or another run's sharing the store) or from outside (the website, another tool).
3. Match what is left to the uncertain submits whose windows contain it. Nothing left in our
   window: the request never arrived, so it is submitted again (once). A forced match (each
   candidate fits exactly one uncertain submit, as many candidates as uncertain submits): adopt
   ours. Anything else stays refused, naming the candidate ids, for a later attempt (the refresh
   schedule) or a person.

Submits still in flight in another process are waited for (briefly) first, since their
predictions are not indexed yet; one in flight for longer than a submit can take belonged to
a process that died and counts as uncertain. The known risk: a prediction made outside these
stores (the website) inside the window of a request that never arrived would be adopted; the
window is the submit's own few seconds. No Dagster here.

How wide a window is: a prediction cannot be created before its request was sent, but our
clock and the provider's differ, and a request given up on may still be processed a little
later (a proxy keeps it going). Without more knowledge, `skew_seconds` is allowed on each
side. Every answered submit says more: it was created between our send and our answer, so
`ClockOffsets` bounds (their clock - ours) from those, and a marker written once that is known
carries the bounds, which replace the skew before the send (and leave it after the answer
was given up, for late arrivals). One generator sends its submits one at a time (by default:
`GenerationPolicy.submits_in_flight`) and, after a lost answer, waits until that window has
closed before the next (`guard_seconds`), so no two of its own windows overlap and each
candidate fits at most one of them. Several at a time overlap like other processes' submits:
a lone lost answer is still resolved, two lost together are refused.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from hunyuan_assets.client import AsyncHunyuan3DClient
from hunyuan_assets.client.protocol import format_time, parse_time
from hunyuan_assets.core.store import MeshStore, model_slug

logger = logging.getLogger("hunyuan_assets.core.reconciliation")

Action = Literal["resubmit", "adopt", "refuse"]


# On top of learned clock bounds: servers behind one API may differ by a few ms among themselves.
OFFSET_MARGIN_SECONDS = 0.05


@dataclass(frozen=True)
class SubmitMarker:
    token: str
    partition_key: str
    sent_at: str  # ISO 8601, UTC
    failed_at: str | None = None  # set once the answer is given up on
    # Bounds on (the provider's clock - ours) in seconds when the submit was sent, learned from
    # answered submits (ClockOffsets); None when nothing was known yet.
    offset_low: float | None = None
    offset_high: float | None = None

    def window(self, skew: float, submit_timeout: float) -> tuple[datetime, datetime]:
        """When, on the provider's clock, this submit can have created its prediction."""
        start = datetime.fromisoformat(self.sent_at)
        end = (
            datetime.fromisoformat(self.failed_at)
            if self.failed_at
            else start + timedelta(seconds=submit_timeout)
        )
        if self.offset_low is None or self.offset_high is None:
            return start - timedelta(seconds=skew), end + timedelta(seconds=skew)
        early = self.offset_low - OFFSET_MARGIN_SECONDS
        late = self.offset_high + OFFSET_MARGIN_SECONDS + skew  # a late arrival, still ours
        return start + timedelta(seconds=early), end + timedelta(seconds=late)

    def guard_seconds(self, skew: float) -> float:
        """How long after `failed_at` the next submit of the same process must wait for its
        window to start after this one's end (its bounds being no wider than these)."""
        if self.offset_low is None or self.offset_high is None:
            return 2 * skew
        spread = self.offset_high - self.offset_low + 2 * OFFSET_MARGIN_SECONDS
        return skew + spread + 0.001


class ClockOffsets:
    """Bounds on (the provider's clock - ours), from answered submits: each was created after
    we sent it and before we had the answer, stamped `created_at` at the provider's resolution
    (milliseconds, seconds...). The bounds are the intersection of the recent ones; when they
    contradict each other (servers with different clocks), their hull."""

    def __init__(self, kept: int = 50) -> None:
        self._samples: deque[tuple[float, float]] = deque(maxlen=kept)

    def learn(self, sent: datetime, answered: datetime, created_at: str | None) -> None:
        created = parse_time(created_at)
        if created is None or created_at is None:
            return
        resolution = _resolution(created_at)
        low = (created - answered).total_seconds()
        high = (created - sent).total_seconds() + resolution
        self._samples.append((low, high))

    def bounds(self) -> tuple[float, float] | None:
        if not self._samples:
            return None
        low = max(sample[0] for sample in self._samples)
        high = min(sample[1] for sample in self._samples)
        if low > high:
            low = min(sample[0] for sample in self._samples)
            high = max(sample[1] for sample in self._samples)
        return low, high

    def marker(self, token: str, partition_key: str, sent_at: datetime) -> SubmitMarker:
        """A marker for a submit about to be sent, carrying what is known of the clocks."""
        bounds = self.bounds()
        low, high = bounds if bounds is not None else (None, None)
        return SubmitMarker(token, partition_key, sent_at.isoformat(), None, low, high)


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: str
    prediction_id: str | None = None
    candidates: tuple[str, ...] = ()


def new_token() -> str:
    return uuid.uuid4().hex


def now_utc() -> datetime:
    return datetime.now(UTC)


class SubmitJournal:
    """The markers and the index of known prediction ids, for one model, in a mesh store."""

    def __init__(self, store: MeshStore, model: str) -> None:
        self.store = store
        slug = model_slug(model)
        self._submits = f"submits/{slug}"
        self._ids = f"prediction_ids/{slug}"

    def _key(self, kind: str, token: str) -> str:
        return f"{self._submits}/{kind}/{token}.json"

    def begin(self, marker: SubmitMarker) -> None:
        self.store.put_bytes(self._key("in_flight", marker.token), _encode(marker))

    def finished(self, token: str, prediction_id: str | None = None) -> None:
        """The submit was answered: accepted (its id is indexed first) or refused."""
        if prediction_id:
            self.remember(prediction_id)
        self.store.delete(self._key("in_flight", token))

    def lost(self, marker: SubmitMarker) -> None:
        """The answer was lost: the marker becomes uncertain, with its window closed."""
        self.store.put_bytes(self._key("uncertain", marker.token), _encode(marker))
        self.store.delete(self._key("in_flight", marker.token))

    def resolved(self, token: str) -> None:
        self.store.delete(self._key("uncertain", token))
        self.store.delete(self._key("in_flight", token))

    def remember(self, prediction_id: str) -> bool:
        """Index an id; False when it was indexed already (e.g. adopted by another run)."""
        return self.store.create_exclusive(f"{self._ids}/{prediction_id}", b"")

    def known(self, prediction_id: str) -> bool:
        return self.store.exists(f"{self._ids}/{prediction_id}")

    def markers(self, kind: str) -> list[SubmitMarker]:
        found = []
        for key in self.store.list_keys(f"{self._submits}/{kind}/"):
            data = self.store.get_bytes(key)
            try:
                found.append(SubmitMarker(**json.loads(data or b"")))
            except (ValueError, TypeError):
                logger.warning("ignoring an unreadable submit marker %s", key)
        return found


def _encode(marker: SubmitMarker) -> bytes:
    return json.dumps(asdict(marker)).encode()


@dataclass(frozen=True)
class ReconcilePolicy:
    skew_seconds: float = 2.0  # between our clock and the provider's created_at
    settle_seconds: float = 2.0  # the list may lag a just-created prediction: look twice
    in_flight_wait_seconds: float = 75.0  # other processes' submits still being answered
    submit_timeout_seconds: float = 60.0  # an in-flight marker older than this is uncertain


async def reconcile(
    client: AsyncHunyuan3DClient,
    journal: SubmitJournal,
    mine: SubmitMarker,
    model: str,
    policy: ReconcilePolicy = ReconcilePolicy(),
    *,
    clock: Callable[[], datetime] = now_utc,
) -> Verdict:
    """What to do with our uncertain submit `mine` (see the module docstring)."""
    await _wait_for_other_submits(journal, mine, policy, clock)
    for look in range(2):
        uncertain = _uncertain_submits(journal, mine, policy, clock)
        window = mine.window(policy.skew_seconds, policy.submit_timeout_seconds)
        span = _union(
            [m.window(policy.skew_seconds, policy.submit_timeout_seconds) for m in uncertain]
        )
        listed = [
            p
            async for p in client.iter_predictions(
                model=model, created_after=span[0], created_before=span[1]
            )
        ]
        candidates = [
            (p.id, created)
            for p in listed
            if (created := parse_time(p.created_at)) is not None
            and not await asyncio.to_thread(journal.known, p.id)
        ]
        mine_fits = [pid for pid, at in candidates if window[0] <= at <= window[1]]
        if mine_fits or look == 1:
            break
        await asyncio.sleep(policy.settle_seconds)  # empty: look once more before resubmitting
    if not mine_fits:
        return Verdict(
            "resubmit",
            f"no unknown {model} prediction was created between {format_time(window[0])} and "
            f"{format_time(window[1])}: the submit never arrived",
        )
    return match_candidates(mine, uncertain, candidates, policy)


def match_candidates(
    mine: SubmitMarker,
    uncertain: Sequence[SubmitMarker],
    candidates: Sequence[tuple[str, datetime]],
    policy: ReconcilePolicy,
) -> Verdict:
    """Adopt only a forced match: as many candidates as uncertain submits, and an assignment
    of each candidate to the one uncertain submit whose window holds it that leaves no choice."""
    windows = {
        m.token: m.window(policy.skew_seconds, policy.submit_timeout_seconds) for m in uncertain
    }
    ids = tuple(sorted(pid for pid, _ in candidates))
    if len(candidates) != len(windows):
        return Verdict(
            "refuse",
            f"{len(candidates)} unknown prediction(s) ({', '.join(ids)}) for {len(windows)} "
            "uncertain submit(s) in the window: which is ours cannot be told",
            candidates=ids,
        )
    fits = {
        pid: {token for token, (lo, hi) in windows.items() if lo <= at <= hi}
        for pid, at in candidates
    }
    assigned: dict[str, str] = {}  # token -> prediction id
    progress = True
    while progress:
        progress = False
        for pid, tokens in fits.items():
            free = tokens - set(assigned)
            if pid not in assigned.values() and len(free) == 1:
                assigned[free.pop()] = pid
                progress = True
        for token in set(windows) - set(assigned):
            options = [p for p, tokens in fits.items() if token in tokens]
            options = [p for p in options if p not in assigned.values()]
            if len(options) == 1:
                assigned[token] = options[0]
                progress = True
    if mine.token in assigned and len(assigned) == len(windows):
        return Verdict(
            "adopt",
            f"prediction {assigned[mine.token]} is the only unknown one that fits this submit",
            prediction_id=assigned[mine.token],
            candidates=ids,
        )
    return Verdict(
        "refuse",
        f"unknown prediction(s) {', '.join(ids)} fit more than one uncertain submit",
        candidates=ids,
    )


async def _wait_for_other_submits(
    journal: SubmitJournal,
    mine: SubmitMarker,
    policy: ReconcilePolicy,
    clock: Callable[[], datetime],
) -> None:
    """Until every other submit sent before our window closed has been answered or given up
    (or is old enough to count as uncertain), so that its prediction is indexed or uncertain."""
    _, end = mine.window(policy.skew_seconds, policy.submit_timeout_seconds)
    deadline = clock() + timedelta(seconds=policy.in_flight_wait_seconds)
    delay = 0.05
    while clock() < deadline:
        pending = [
            m
            for m in await asyncio.to_thread(journal.markers, "in_flight")
            if m.token != mine.token
            and datetime.fromisoformat(m.sent_at) <= end
            and not _stale(m, policy, clock)
        ]
        if not pending:
            return
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


def _uncertain_submits(
    journal: SubmitJournal,
    mine: SubmitMarker,
    policy: ReconcilePolicy,
    clock: Callable[[], datetime],
) -> list[SubmitMarker]:
    """Uncertain submits (ours included) and dead in-flight ones whose windows overlap ours,
    and transitively theirs."""
    every = {m.token: m for m in journal.markers("uncertain")}
    every.update({m.token: m for m in journal.markers("in_flight") if _stale(m, policy, clock)})
    every[mine.token] = mine
    chosen = {mine.token: mine}
    grown = True
    while grown:
        grown = False
        lo, hi = _union(
            [m.window(policy.skew_seconds, policy.submit_timeout_seconds) for m in chosen.values()]
        )
        for token, marker in every.items():
            a, b = marker.window(policy.skew_seconds, policy.submit_timeout_seconds)
            if token not in chosen and a <= hi and b >= lo:
                chosen[token] = marker
                grown = True
    return list(chosen.values())


def _stale(marker: SubmitMarker, policy: ReconcilePolicy, clock: Callable[[], datetime]) -> bool:
    age = (clock() - datetime.fromisoformat(marker.sent_at)).total_seconds()
    return age > policy.submit_timeout_seconds + policy.skew_seconds


def _union(windows: Sequence[tuple[datetime, datetime]]) -> tuple[datetime, datetime]:
    return min(w[0] for w in windows), max(w[1] for w in windows)


def _resolution(value: str) -> float:
    """Seconds per unit of the last digit of an ISO 8601 time ("...:48.882Z" -> 0.001)."""
    found = re.search(r"T\d{2}:\d{2}:\d{2}(?:[.,](\d+))?", value)
    digits = len(found.group(1)) if found and found.group(1) else 0
    return 10.0**-digits
