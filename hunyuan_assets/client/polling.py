"""When to poll a prediction, without I/O: the adaptive schedule, and one that learns.

The adaptive schedule (`PollPolicy`, `poll_intervals`) knows nothing about the task: 2 s, then
x1.5 per poll, capped at 20 s. On a 120 s task it notices completion ~10 s late on average.

The learned schedule uses a `CompletionForecast`, a window [earliest, latest] in seconds since
our own submit, built by `forecast_completion` from what earlier waits observed for the same
model (`PollObservation`: completion lay between the last not-done poll and the first done poll;
when the last 8 or more overlap, but for strays, and their model times agree, the tasks took one
duration and the window is the overlap, narrowed by the older observations that overlap it too).
`PollSchedule` then polls rarely before the window and densely inside it:

- before the window: anchor points at first/r, first/r**2, ... (r = `early_growth`), so a task
  that ends unexpectedly early is still seen within r times its duration; at least
  `initial_interval` apart;
- inside (the first poll half a gap after `earliest`, as nothing is expected before it): the
  gap at time t is sqrt(2 (latest - t) / delay_cost). For a completion time uniform
  over the window this minimises E[requests] + delay_cost * E[noticing delay]; gaps shrink
  towards the end, where few tasks are left to pay for the extra polls;
- gaps shorter than `initial_interval` (the provider asks for ~2 s) happen only inside the
  window (the one that ends at its first poll included), never under `burst_interval`, and
  at most `max_burst` times per wait;
- after the window: the adaptive schedule again, from its start (a wait that learned the
  window only after it had ended looks once, a burst apart, first).

A wait with no forecast yet but a source that may have one soon (a run still learning) keeps
the adaptive schedule stretched by a factor in [1, 2) fixed per prediction, so predictions
submitted together do not all poll at the same moments (`_WaitPlan` in protocol.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = [
    "CompletionForecast",
    "PollObservation",
    "PollPolicy",
    "PollSchedule",
    "forecast_completion",
    "poll_intervals",
]

#: An observation is assumed to span at most this fraction of its upper bound. A completion
#: seen only after a long silent stretch (a sparse poll before the window, or the adaptive
#: schedule's long gaps) says little about where in it the task ended; spread over all of it,
#: one such observation would drag the window far off. The span is kept next to the bound
#: that says most: the model time (`timings.inference`) when that is the later lower bound,
#: as the task ended shortly after it unless it queued, else the first done poll.
MAX_RELATIVE_SPAN = 0.25
_EDGE_QUANTILE = 0.05  # the window spans the 5..95 % quantiles of the observations, padded
_LEAST_PAD = 0.02  # ... on each side by at least this fraction of the expected duration
#: This many observations whose windows all overlap (and whose model times agree) make the
#: overlap the forecast; all but this fraction (at least one) on each side (`_overlap`).
AGREEING_OBSERVATIONS = 8
_AGREEMENT_TRIM = 0.05


@dataclass(frozen=True)
class PollPolicy:
    """How to poll. A Hunyuan3D task takes minutes, so start at ~2 s and back off.

    `deadline` (seconds per `wait` call; None = wait forever) bounds our waiting only.
    `initial_interval` is also the shortest gap outside a forecast's window; the other
    fields shape the learned schedule (module docstring).
    """

    initial_interval: float = 2.0
    max_interval: float = 20.0
    multiplier: float = 1.5
    deadline: float | None = 1800.0
    #: Requests that one second less noticing delay is worth, inside a forecast's window.
    delay_cost: float = 4.0
    #: Before the window, each poll is at least this many times later than the previous one.
    early_growth: float = 4.0
    #: Shortest gap between polls (capped at initial_interval), allowed only inside the
    #: window and only `max_burst` times per wait.
    burst_interval: float = 0.5
    max_burst: int = 4

    def __post_init__(self) -> None:
        if self.initial_interval < 0 or self.max_interval < self.initial_interval:
            raise ValueError("PollPolicy needs 0 <= initial_interval <= max_interval")
        if self.multiplier < 1:
            raise ValueError("PollPolicy.multiplier must be >= 1")
        if self.delay_cost <= 0 or self.early_growth <= 1:
            raise ValueError("PollPolicy needs delay_cost > 0 and early_growth > 1")
        if self.burst_interval < 0 or self.max_burst < 0:
            raise ValueError("PollPolicy needs burst_interval >= 0 and max_burst >= 0")


def poll_intervals(policy: PollPolicy) -> Iterator[float]:
    """initial, initial*m, initial*m^2, ... capped at max_interval, forever."""
    interval = policy.initial_interval
    while True:
        yield interval
        interval = min(policy.max_interval, interval * policy.multiplier)


def _number(value: Any, name: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class PollObservation:
    """What one wait saw of one prediction, in seconds since our own submit.

    The task ended after `not_done_s` (the start of the last poll that was not terminal, or
    0) and at the latest at `done_s` (the answer of the first terminal poll). `inference_s`
    (the API's `timings.inference`) is model time, so the end was no earlier than that either.
    """

    model: str
    prediction_id: str
    status: str
    not_done_s: float
    done_s: float
    inference_s: float | None
    observed_at: datetime

    def __post_init__(self) -> None:
        if not self.model or not self.prediction_id or not self.status:
            raise ValueError("PollObservation needs a model, a prediction id and a status")
        for name in ("not_done_s", "done_s"):
            _number(getattr(self, name), name)
        _number(self.inference_s, "inference_s", optional=True)
        if self.not_done_s > self.done_s:
            raise ValueError("PollObservation.not_done_s is after done_s")
        if self.observed_at.tzinfo is None:
            raise ValueError("PollObservation.observed_at must be timezone-aware")

    @property
    def earliest_s(self) -> float:
        """The earliest the task can have ended (inference time narrows the poll interval)."""
        return min(self.done_s, max(self.not_done_s, self.inference_s or 0.0))

    def likely_span(self) -> tuple[float, float]:
        """Where the completion most likely lies: [earliest_s, done_s], at most
        `MAX_RELATIVE_SPAN` * done_s wide (see there for which end is kept)."""
        low, high = self.earliest_s, self.done_s
        width = MAX_RELATIVE_SPAN * high
        if high - low <= width:
            return low, high
        if self.inference_s is not None and self.inference_s > self.not_done_s:
            return low, low + width
        return high - width, high

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "prediction_id": self.prediction_id,
            "status": self.status,
            "not_done_s": round(self.not_done_s, 3),
            "done_s": round(self.done_s, 3),
            "inference_s": None if self.inference_s is None else round(self.inference_s, 3),
            "observed_at": self.observed_at.isoformat(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PollObservation:
        """Raises ValueError (or TypeError/KeyError) on anything that is not one of ours."""
        observed_at = datetime.fromisoformat(str(data["observed_at"]))
        return cls(
            model=str(data["model"]),
            prediction_id=str(data["prediction_id"]),
            status=str(data["status"]),
            not_done_s=float(data["not_done_s"]),
            done_s=float(data["done_s"]),
            inference_s=None if data.get("inference_s") is None else float(data["inference_s"]),
            observed_at=observed_at,
        )


@dataclass(frozen=True)
class CompletionForecast:
    """When a new prediction should complete, in seconds since its submit."""

    earliest: float
    latest: float
    expected: float
    observations: int = 0  # how many observations it rests on (0: given by hand)

    def __post_init__(self) -> None:
        for name in ("earliest", "latest", "expected"):
            _number(getattr(self, name), name)
        if not self.earliest <= self.expected <= self.latest or self.latest <= 0:
            raise ValueError(
                "CompletionForecast needs 0 <= earliest <= expected <= latest and latest > 0"
            )

    @classmethod
    def around(cls, seconds: float, spread: float = 0.2) -> CompletionForecast:
        """A forecast by hand: `seconds` +- `spread` (a fraction), e.g. before any history."""
        if not 0 <= spread < 1:
            raise ValueError("spread is a fraction in [0, 1)")
        return cls(seconds * (1 - spread), seconds * (1 + spread), seconds)


def _mixture_quantile(spans: list[tuple[float, float]], q: float) -> float:
    """The q-quantile of an equal-weight mixture of uniform distributions over `spans`."""
    points = sorted({x for span in spans for x in span})

    def cdf(x: float) -> float:
        return sum(min(1.0, max(0.0, (x - a) / (b - a))) for a, b in spans) / len(spans)

    below, below_cdf = points[0], 0.0
    for point in points[1:]:
        at = cdf(point)
        if at >= q:  # the CDF is linear between consecutive span ends
            return below + (point - below) * (q - below_cdf) / max(at - below_cdf, 1e-12)
        below, below_cdf = point, at
    return points[-1]


def forecast_completion(
    observations: Iterable[PollObservation], *, min_observations: int = 3, recent: int = 20
) -> CompletionForecast | None:
    """A window from the last `recent` completed observations (older ones that agree with
    them may narrow it); None below `min_observations`.

    Each observation is spread uniformly over its `likely_span()`; the window spans the 5 %
    and 95 % quantiles of that mixture, widened on each side by range / (n - 1), the expected
    part of a uniform spread that n samples miss (at least 2 % of the median). Unless they
    all agree on one duration (`_agreed_window`).
    """
    if min_observations < 2 or recent < min_observations:
        raise ValueError("forecast_completion needs 2 <= min_observations <= recent")
    done = [o for o in observations if o.status == "completed"]
    done.sort(key=lambda o: o.observed_at)
    chosen = done[-recent:]
    if len(chosen) < min_observations:
        return None
    agreed = _agreed_window(chosen, older=done[: -len(chosen)])
    if agreed is not None:
        return agreed
    spans = []
    for o in chosen:
        low, high = o.likely_span()
        spans.append((low, max(high, low + 1e-3)))  # a zero-width span is a point
    low_q = _mixture_quantile(spans, _EDGE_QUANTILE)
    high_q = _mixture_quantile(spans, 1 - _EDGE_QUANTILE)
    median = _mixture_quantile(spans, 0.5)
    pad = max((high_q - low_q) / (len(chosen) - 1), _LEAST_PAD * median)
    earliest = max(0.0, low_q - pad)
    latest = max(high_q + pad, earliest + 1e-3)
    return CompletionForecast(earliest, latest, min(max(median, earliest), latest), len(chosen))


def _agreed_window(
    chosen: Sequence[PollObservation], older: Sequence[PollObservation] = ()
) -> CompletionForecast | None:
    """When at least `AGREEING_OBSERVATIONS` windows overlap (but for strays, `_overlap`), the
    tasks took one duration (a warm model, the emulator) and it lies where they overlap: that,
    padded by 2 %. The mixture spreads each observation over its own span instead, and its
    first poll comes too early half the time (simulated, 3 s tasks: noticed 0.30 s late with
    1.58 GETs, 0.08 s with 1.08).

    Wide observations overlap whatever the durations: 3 s +-20 % tasks seen on the adaptive
    schedule (done at 5 s) all overlapped in [3.57, 3.58] s, and that window made every later
    task late (measured: 0.77 s). Their model times (`timings.inference`, a property of each
    task, not of when it was polled) said otherwise: 2.25-3.57 s. So where most observations
    carry one, the model times must agree too, within twice the pad.

    The overlap is then narrowed further by the `older` observations (newest first) for as
    long as each still overlaps it (both ends trimmed, `_overlap`). A poll that hits the
    window only bounds the task from below by its model time (the emulator's 2.7 s of a 3 s
    task); the tight lower bounds come from the misses, the polls just before a completion.
    A window that forgot them after 20 waits moved its first poll early again, so every other
    wave of 32 missed and was seen 0.5 s late (measured, N=200, L=3 s: waves alternating 1.0
    and 1.5 GETs each)."""
    if len(chosen) < AGREEING_OBSERVATIONS:
        return None
    low, high = _overlap(chosen)
    if low > high:
        return None
    model_times = [o.inference_s for o in chosen if o.inference_s is not None]
    if 2 * len(model_times) >= len(chosen) and (
        max(model_times) - min(model_times) > 2 * _LEAST_PAD * (low + high) / 2
    ):
        return None
    pool = list(chosen)
    for o in reversed(older):
        if o.earliest_s > high or o.done_s < low:
            break
        pool.append(o)
    narrowed = _overlap(pool)
    if narrowed[0] <= narrowed[1]:
        low, high = narrowed
    middle = (low + high) / 2
    pad = _LEAST_PAD * middle
    earliest = max(0.0, low - pad)
    return CompletionForecast(earliest, max(high + pad, earliest + 1e-3), middle, len(chosen))


def _overlap(observations: Sequence[PollObservation]) -> tuple[float, float]:
    """Where the observations overlap, but for the few most extreme on each side: one stray
    task (created late behind a busy loop: seen not done 0.19 s after the others were done)
    would otherwise pin the window on itself, and every poll it places lands after it."""
    k = max(2, math.ceil(_AGREEMENT_TRIM * len(observations)))
    lows = sorted(o.earliest_s for o in observations)
    highs = sorted(o.done_s for o in observations)
    return lows[-k], highs[k - 1]


class PollSchedule:
    """When to poll next, in seconds since the submit; one instance per wait (it counts)."""

    def __init__(
        self,
        policy: PollPolicy,
        forecast: CompletionForecast | None = None,
        *,
        learned_late: bool = False,
    ) -> None:
        """`learned_late`: for a wait that polled on the adaptive schedule until the run could
        forecast (see `_WaitPlan`); if the window is already over by its first plan, the task
        has most likely completed, so it looks once soon instead of restarting the adaptive
        schedule (seen: cold-wave 3 s tasks noticed 2.3-2.7 s late)."""
        self.policy = policy
        self.forecast = forecast
        self._intervals = poll_intervals(policy)  # no forecast, or after its window
        self._bursts = 0
        self._look_soon_if_over = learned_late  # until the first plan
        if forecast is not None:
            # The first poll inside the window waits half a gap: nothing is expected before it.
            self._first = forecast.earliest + 0.5 * self._window_gap(forecast.earliest)

    def _window_gap(self, t: float) -> float:
        assert self.forecast is not None
        left = max(0.0, self.forecast.latest - t)
        return min(self.policy.max_interval, math.sqrt(2 * left / self.policy.delay_cost))

    def next_poll(self, now: float) -> float:
        """The time of the next poll, given that the previous one (or the wait) is at `now`."""
        policy, forecast = self.policy, self.forecast
        look_soon, self._look_soon_if_over = self._look_soon_if_over, False
        if forecast is None:
            return now + next(self._intervals)
        least = now + policy.initial_interval
        burst = min(policy.burst_interval, policy.initial_interval)
        if now < self._first:
            anchor = self._first
            while anchor / policy.early_growth >= max(least, 1e-6):
                anchor /= policy.early_growth
            if anchor < least and self._take_burst():
                # The window's first poll comes sooner than initial_interval after this one
                # (a wait that learned its forecast late, just before the window): a burst,
                # not a wait of initial_interval past it (seen: 3 s tasks noticed 1.7 s late).
                return max(anchor, now + burst)
            return max(anchor, least)
        if now < forecast.latest:
            gap = self._window_gap(now)
            if gap < policy.initial_interval:
                gap = max(gap, burst) if self._take_burst() else policy.initial_interval
            return now + gap
        if look_soon and self._take_burst():
            return now + burst
        return now + next(self._intervals)

    def _take_burst(self) -> bool:
        """One of the wait's `max_burst` gaps shorter than initial_interval, if any is left."""
        if self._bursts >= self.policy.max_burst:
            return False
        self._bursts += 1
        return True
