"""The poll schedules and the completion forecast, sans-IO, on a fake clock.

`simulate` drives the real `_WaitPlan` (the core both client shells share) against a task
that completes at a known second, so the schedule's cost (result requests) and noticing delay
are computed, not timed: these tests measure no wall-clock time at all.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from hunyuan_assets.client import (
    CompletionForecast,
    PollObservation,
    PollPolicy,
    PollSchedule,
    forecast_completion,
    parse_prediction,
    poll_intervals,
)
from hunyuan_assets.client.polling import AGREEING_OBSERVATIONS, MAX_RELATIVE_SPAN
from hunyuan_assets.client.protocol import _WaitPlan

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MODEL = "wavespeed-ai/hunyuan3d/v2.1"


class Clocks:
    """A monotonic clock and the matching wall clock, both moved by hand."""

    def __init__(self, start: datetime = T0) -> None:
        self.start, self.now = start, 0.0

    def mono(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return self.start + timedelta(seconds=self.now)


def raw(status: str, *, inference_ms: int = 0, created_at: str = "2026-03-01T12:00:00Z") -> dict:
    return {
        "id": "p-1",
        "model": MODEL,
        "status": status,
        "outputs": ["http://o/m.glb"] if status == "completed" else [],
        "created_at": created_at,
        "timings": {"inference": inference_ms},
    }


def simulate(
    duration: float,
    forecast: CompletionForecast | None,
    *,
    policy: PollPolicy | None = None,
    start: datetime = T0,
    inference: bool = True,
) -> tuple[int, float, PollObservation | None, list[float]]:
    """Wait on a fresh submit of a task that completes `duration` s after it, on fake clocks.
    Returns (result requests, noticing delay, observation, poll times since the submit).
    `inference` reports model time as the emulator does: all but the short `created` phase."""
    clocks = Clocks(start)
    submitted = parse_prediction(raw("created"), submitted_at=clocks.wall())
    plan = _WaitPlan(
        submitted, policy or PollPolicy(), None, clocks.mono, forecast=forecast, now=clocks.wall
    )
    times = []
    while True:
        clocks.now += plan.next_delay()
        times.append(clocks.now)
        done = clocks.now >= duration
        model_ms = round(1000 * (duration - min(0.1 * duration, 0.5))) if inference else 0
        seen = plan.observe(
            parse_prediction(raw("completed" if done else "processing", inference_ms=model_ms))
        )
        if plan.finish(seen):
            return seen.polls, clocks.now - duration, seen.observation, times


def learned(task: float, *, count: int = 30, seed: int = 3, inference: bool = True):
    """The forecast after `count` tasks of `task` s +- 20 %, each waited on with the forecast
    learned from the ones before it (the first few with the adaptive schedule)."""
    rng = random.Random(seed)
    observations: list[PollObservation] = []
    for i in range(count):
        forecast = forecast_completion(observations)
        start = T0 + timedelta(hours=i)
        _, _, observation, _ = simulate(
            rng.uniform(task * 0.8, task * 1.2), forecast, start=start, inference=inference
        )
        assert observation is not None
        observations.append(observation)
    forecast = forecast_completion(observations)
    assert forecast is not None
    return forecast, observations


def grid(task: float, points: int = 201) -> list[float]:
    return [task * 0.8 + task * 0.4 * i / (points - 1) for i in range(points)]


def observation(not_done: float, done: float, **kw) -> PollObservation:
    values = {
        "model": MODEL,
        "prediction_id": f"p-{not_done}-{done}",
        "status": "completed",
        "not_done_s": not_done,
        "done_s": done,
        "inference_s": None,
        "observed_at": T0,
    }
    values.update(kw)
    return PollObservation(**values)


# --------------------------------------------------------------------------- the schedule


def test_without_a_forecast_the_schedule_is_the_adaptive_one() -> None:
    policy = PollPolicy()
    schedule, intervals = PollSchedule(policy), poll_intervals(policy)
    now = 0.0
    for _ in range(12):
        at = schedule.next_poll(now)
        assert at - now == pytest.approx(next(intervals))
        now = at + 0.3  # the answer took a while: the next interval counts from the answer


def test_learned_schedule_is_sparse_before_the_window_and_dense_inside() -> None:
    policy = PollPolicy()
    forecast = CompletionForecast(earliest=96.0, latest=144.0, expected=120.0)
    schedule = PollSchedule(policy, forecast)
    times, now = [], 0.0
    while now < 200:
        now = schedule.next_poll(now)
        times.append(now)
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    before = [t for t in times if t < forecast.earliest]
    inside = [t for t in times if forecast.earliest <= t < forecast.latest]
    # Before the window: anchors a factor early_growth apart, ending at the first window poll.
    assert len(before) == 2 and before[1] == pytest.approx(before[0] * policy.early_growth)
    assert inside[0] == pytest.approx(96 + 0.5 * (2 * 48 / policy.delay_cost) ** 0.5)
    assert inside[0] == pytest.approx(before[1] * policy.early_growth)
    # Inside: gaps shrink towards the end of the window.
    inner = [b - a for a, b in zip(inside, inside[1:], strict=False)]
    assert all(b <= a + 1e-9 for a, b in zip(inner, inner[1:], strict=False)), inner
    assert len(inside) >= 10  # dense: against 3 polls of the adaptive schedule in that span
    # Short gaps (< initial_interval) only inside the window, at most max_burst, never < burst.
    short = [(t, g) for t, g in zip(times, gaps, strict=False) if g < policy.initial_interval]
    assert 0 < len(short) <= policy.max_burst
    assert all(forecast.earliest < t <= forecast.latest + policy.initial_interval for t, _ in short)
    assert all(g >= policy.burst_interval - 1e-9 for _, g in short)
    # After the window: the adaptive schedule again, from its start.
    after = [t for t in times if t >= forecast.latest]
    after_gaps = [b - a for a, b in zip(after, after[1:], strict=False)]
    expected = poll_intervals(policy)
    assert after_gaps == pytest.approx([next(expected) for _ in after_gaps])


def test_short_task_polls_first_at_the_window_and_bursts_inside_it() -> None:
    policy = PollPolicy()
    schedule = PollSchedule(policy, CompletionForecast(2.4, 3.6, 3.0))
    first = schedule.next_poll(0.0)
    assert 2.4 < first < 3.6  # no poll before the expected completion...
    assert first >= policy.initial_interval  # ...and none sooner than ~2 s after the submit
    second = schedule.next_poll(first)
    assert policy.burst_interval <= second - first < policy.initial_interval


def test_burst_allowance_is_spent_then_gaps_are_back_to_initial_interval() -> None:
    policy = PollPolicy(max_burst=2)
    schedule = PollSchedule(policy, CompletionForecast(2.0, 10.0, 6.0))
    now, gaps = 9.0, []
    for _ in range(3):
        at = schedule.next_poll(now)
        gaps.append(at - now)
        now = min(at, 9.5)  # stay near the end of the window, where gaps are shortest
    assert gaps[0] < 2.0 and gaps[1] < 2.0 and gaps[2] == pytest.approx(2.0)


# --------------------------------------------------------------------------- the targets


def test_on_120s_tasks_the_learned_schedule_beats_the_default_on_requests_and_delay() -> None:
    forecast, _ = learned(120.0)
    ours = [simulate(d, forecast)[:2] for d in grid(120.0)]
    default = [simulate(d, None)[:2] for d in grid(120.0)]
    ours_gets, ours_delay = (statistics.mean(x) for x in zip(*ours, strict=True))
    default_gets, default_delay = (statistics.mean(x) for x in zip(*default, strict=True))
    assert default_delay > 9  # the figure the brief starts from (~9.6 s)
    assert ours_gets <= default_gets
    assert ours_delay <= 2.0


def test_on_3s_tasks_the_learned_schedule_notices_within_half_a_second() -> None:
    forecast, _ = learned(3.0)
    ours = [simulate(d, forecast)[:2] for d in grid(3.0)]
    assert statistics.mean(delay for _, delay in ours) <= 0.5
    assert statistics.mean(gets for gets, _ in ours) <= 2.5


def test_a_wrong_forecast_costs_a_bounded_amount() -> None:
    forecast = CompletionForecast.around(120.0)
    policy = PollPolicy()
    window_polls = sum(
        forecast.earliest <= t < forecast.latest for t in simulate(1000.0, forecast)[3]
    )
    for duration in (1.0, 10.0, 40.0, 300.0, 900.0):
        gets, delay, _, times = simulate(duration, forecast)
        default_gets, default_delay, _, _ = simulate(duration, None)
        # Later than forecast: the adaptive schedule resumes, so at most the window's polls more.
        assert gets <= default_gets + window_polls
        if duration > forecast.latest:
            assert delay <= policy.max_interval
        else:  # earlier: seen by the next anchor, at most early_growth x the elapsed time
            assert duration + delay <= policy.early_growth * max(duration, times[0])


# --------------------------------------------------------------------------- observations


def test_wait_observation_brackets_the_completion_and_inference_narrows_it() -> None:
    _, _, seen, times = simulate(10.0, None)
    assert seen is not None and seen.status == "completed" and seen.model == MODEL
    assert times[-2] == seen.not_done_s < 10.0 <= seen.done_s == times[-1]
    assert seen.earliest_s == pytest.approx(9.5)  # inference: 10 s minus the 0.5 s created phase
    _, _, plain, _ = simulate(10.0, None, inference=False)
    assert plain is not None and plain.earliest_s == plain.not_done_s


def test_waits_that_did_not_see_the_completion_observe_nothing() -> None:
    clocks = Clocks()
    by_id = _WaitPlan("p-1", PollPolicy(), None, clocks.mono, now=clocks.wall)
    assert by_id.next_delay() == 0.0
    assert by_id.observe(parse_prediction(raw("completed"))).observation is None  # API clock
    done = parse_prediction(raw("completed"), submitted_at=T0)
    plan = _WaitPlan(done, PollPolicy(), None, clocks.mono, now=clocks.wall)
    assert (finished := plan.already_done()) is not None and finished.observation is None


def test_a_failed_task_is_observed_but_never_forecast_from() -> None:
    clocks = Clocks()
    submitted = parse_prediction(raw("created"), submitted_at=T0)
    plan = _WaitPlan(submitted, PollPolicy(), None, clocks.mono, now=clocks.wall)
    clocks.now += plan.next_delay()
    failed = plan.observe(parse_prediction(raw("failed")))
    assert failed.observation is not None and failed.observation.status == "failed"
    assert forecast_completion([failed.observation] * 5) is None


def test_a_wait_by_id_schedules_from_the_api_created_at_once_it_knows_it() -> None:
    clocks = Clocks()
    created = (T0 - timedelta(seconds=100)).isoformat().replace("+00:00", "Z")
    forecast = CompletionForecast(96.0, 144.0, 120.0)
    plan = _WaitPlan("p-1", PollPolicy(), None, clocks.mono, forecast=forecast, now=clocks.wall)
    assert plan.next_delay() == 0.0
    plan.observe(parse_prediction(raw("processing", created_at=created)))
    # 100 s after creation is inside the window: the window's gap, not the adaptive 2 s.
    assert plan.next_delay() == pytest.approx((2 * 44 / PollPolicy().delay_cost) ** 0.5)


def test_observations_round_trip_through_json_and_reject_nonsense() -> None:
    seen = observation(3.0, 4.5, inference_s=4.1)
    assert PollObservation.from_json(seen.to_json()) == seen
    for bad in (
        {"not_done_s": 5.0, "done_s": 4.0},
        {"done_s": float("nan")},
        {"not_done_s": -1.0},
        {"model": ""},
        {"observed_at": datetime(2026, 1, 1)},
    ):
        values = {"not_done": bad.pop("not_done_s", 1.0), "done": bad.pop("done_s", 2.0)}
        with pytest.raises(ValueError):
            observation(**values, **bad)


# --------------------------------------------------------------------------- the forecast


def test_no_forecast_before_enough_completed_observations() -> None:
    assert forecast_completion([]) is None
    assert forecast_completion([observation(100, 104), observation(110, 113)]) is None
    failed = [observation(100, 104, status="failed", prediction_id=str(i)) for i in range(5)]
    assert forecast_completion(failed) is None
    with pytest.raises(ValueError):
        forecast_completion([], min_observations=1)


def test_forecast_window_covers_what_was_seen_with_a_margin() -> None:
    seen = [observation(d - 1.0, d + 1.0, prediction_id=str(d)) for d in (100, 110, 120, 130, 140)]
    forecast = forecast_completion(seen)
    assert forecast is not None and forecast.observations == 5
    assert forecast.earliest < 100 and forecast.latest > 140
    assert forecast.earliest > 80 and forecast.latest < 160  # a margin, not a guess
    assert forecast.earliest <= forecast.expected <= forecast.latest
    assert forecast.expected == pytest.approx(120, abs=1)


def test_forecast_uses_the_most_recent_observations() -> None:
    old = [observation(d, d + 1, prediction_id=f"old{d}", observed_at=T0) for d in range(10, 20)]
    new = [
        observation(d, d + 1, prediction_id=f"new{d}", observed_at=T0 + timedelta(days=1))
        for d in range(100, 110)
    ]
    forecast = forecast_completion(new + old, recent=10)  # order of the input does not matter
    assert forecast is not None and forecast.earliest > 90


def test_one_late_noticed_completion_moves_the_window_by_a_bounded_step() -> None:
    narrow = [observation(d, d + 2, prediction_id=str(d)) for d in range(100, 140, 2)]
    before = forecast_completion(narrow)
    # Seen done at 98 s after a silent stretch from 25 s (a miss before the window).
    after = forecast_completion([*narrow[1:], observation(25.0, 98.0, prediction_id="miss")])
    assert before is not None and after is not None
    assert after.earliest >= 98 * (1 - MAX_RELATIVE_SPAN) - 0.1 * (after.latest - after.earliest)
    assert after.earliest < before.earliest  # it still counts: the window moved earlier


def test_observations_that_all_overlap_make_the_overlap_the_window() -> None:
    """Tasks of one duration (3.0 s): hits bound it from the model time to the poll, misses
    from the poll before to the one after; their overlap is where it lies."""
    hits = [observation(0.0, 3.0 + d, inference_s=2.7, prediction_id=f"h{d}") for d in (0.05, 0.1)]
    misses = [observation(2.95 - d, 3.4, prediction_id=f"m{d}") for d in (0.0, 0.1, 0.2)]
    seen = (hits + misses) * 2  # 10, all overlapping in [2.95, 3.05]
    forecast = forecast_completion(seen)
    assert forecast is not None and forecast.observations == 10
    assert forecast.earliest == pytest.approx(2.95 - 0.06)
    assert forecast.latest == pytest.approx(3.05 + 0.06)
    assert forecast.expected == pytest.approx(3.0)
    assert [gets for gets, *_ in (simulate(d, forecast) for d in (2.96, 3.0, 3.04))] == [1, 1, 1]
    # One stray task (created late: not done at 3.2 s) neither pins the window nor breaks it.
    stray = forecast_completion([*seen, observation(3.2, 3.3, prediction_id="late")])
    assert stray == replace(forecast, observations=11)
    # Fewer than AGREEING_OBSERVATIONS, or two that do not overlap: the mixture, wider.
    two = [observation(3.2, 3.3, prediction_id=f"late{i}") for i in range(2)]
    for others in (seen[: AGREEING_OBSERVATIONS - 1], [*seen, *two]):
        wider = forecast_completion(others)
        assert wider is not None and wider.latest - wider.earliest > 0.3


def test_forecast_by_hand() -> None:
    forecast = CompletionForecast.around(120, spread=0.25)
    assert (forecast.earliest, forecast.expected, forecast.latest) == (90, 120, 150)
    for bad in ((10, 5, 8), (-1, 1, 2), (0, 0, 0)):
        with pytest.raises(ValueError):
            CompletionForecast(*bad)


def test_a_wide_observation_is_kept_next_to_its_most_telling_bound() -> None:
    # Model time binds (the task ended soon after it, unless it queued): keep that end.
    assert observation(2.0, 5.0, inference_s=2.7).likely_span() == pytest.approx((2.7, 3.95))
    # Only the polls bound it: the completion was most likely seen soon after it happened.
    assert observation(25.0, 98.0).likely_span() == pytest.approx((73.5, 98.0))
    # Narrow enough already: untouched.
    assert observation(96.0, 100.0, inference_s=96.5).likely_span() == (96.5, 100.0)
    # Queued: the not-done poll is the later lower bound, so the inference says nothing here.
    assert observation(380.0, 400.0, inference_s=100.0).likely_span() == (380.0, 400.0)


def test_three_cold_start_observations_already_give_a_window_around_the_truth() -> None:
    # The first waits use the adaptive schedule (2 s, 5 s, ...): seen done at 5 s.
    cold = [
        observation(2.0, 5.0, inference_s=d - 0.3, prediction_id=str(d)) for d in (2.5, 3.0, 3.5)
    ]
    forecast = forecast_completion(cold)
    assert forecast is not None and 1.0 < forecast.earliest < 2.5 and 3.5 < forecast.latest < 6.0


def simulate_wave(count: int, duration: float, *, learn: bool) -> tuple[float, int]:
    """`count` predictions submitted together on a cold start (no history), each completing
    after `duration` s, on a fake clock. With `learn`, they share one forecast source, and
    once it knows a window every wait still on the adaptive schedule plans its next poll
    again, as `AsyncHunyuan3DClient.wait(..., wake=...)` does. Returns (mean noticing
    delay, result requests)."""
    clocks = Clocks()
    observations: list[PollObservation] = []

    def source() -> CompletionForecast | None:
        return forecast_completion(observations)

    plans = [
        _WaitPlan(
            parse_prediction({**raw("created"), "id": f"wave-{i}"}, submitted_at=T0),
            PollPolicy(),
            None,
            clocks.mono,
            forecast=source if learn else None,
            now=clocks.wall,
            stretch=learn,
        )
        for i in range(count)
    ]
    due = {i: plan.next_delay() for i, plan in enumerate(plans)}
    noticed: list[float] = []
    known = False
    while due:
        i = min(due, key=due.__getitem__)
        clocks.now = due.pop(i)
        status = "completed" if clocks.now >= duration else "processing"
        seen = plans[i].observe(
            parse_prediction(raw(status, inference_ms=round(1000 * (duration - 0.3))))
        )
        if plans[i].finish(seen):
            noticed.append(clocks.now - duration)
            assert seen.observation is not None
            observations.append(seen.observation)
        else:
            due[i] = clocks.now + plans[i].next_delay()
        if learn and not known and source() is not None:
            known = True  # the wake: every wait still learning plans again, from now
            for j in due:
                if plans[j].waiting_to_learn:
                    due[j] = clocks.now + plans[j].replan()
    return statistics.mean(noticed), sum(plan.polls for plan in plans)


@pytest.mark.parametrize(("count", "task", "at_most"), [(16, 3.0, 0.5), (100, 30.0, 0.2)])
def test_a_cold_wave_learns_from_its_own_first_completions(count, task, at_most) -> None:
    """Predictions submitted together with nothing known: on the adaptive schedule all poll
    at the same moments (2, 5, 9.5, ... s) and notice equally late (3 s tasks at 5 s, 30 s
    tasks at 41.6 s). Stretched apart, some notice the first completions early, the window
    they give lets the rest poll inside it: far less late, and no more requests."""
    alone_delay, alone_requests = simulate_wave(count, task, learn=False)
    assert alone_delay == pytest.approx({3.0: 2.0, 30.0: 11.5625}[task])
    delay, requests = simulate_wave(count, task, learn=True)
    assert delay < at_most * alone_delay
    assert requests <= alone_requests


def test_only_waits_that_learn_together_stretch_their_schedule() -> None:
    """A plain wait keeps the adaptive schedule exactly, and so does a learning one alone;
    learning together (`stretch`, the async client's `wake`) stretches it by a factor in
    [1, 2) fixed by the prediction id."""
    clocks = Clocks()

    def first_delay(prediction_id: str, forecast, stretch: bool = True) -> float:
        submitted = parse_prediction({**raw("created"), "id": prediction_id}, submitted_at=T0)
        plan = _WaitPlan(
            submitted, PollPolicy(), None, clocks.mono, forecast=forecast, stretch=stretch
        )
        return plan.next_delay()

    assert {first_delay(f"p-{i}", None) for i in range(20)} == {2.0}
    assert {first_delay(f"p-{i}", lambda: None, stretch=False) for i in range(20)} == {2.0}
    known = CompletionForecast(10.0, 20.0, 15.0)
    assert {first_delay(f"p-{i}", known) for i in range(20)} == {first_delay("x", known)}
    spread = [first_delay(f"p-{i}", lambda: None) for i in range(20)]
    assert all(2.0 <= d < 4.0 for d in spread) and len(set(spread)) == 20
    assert first_delay("p-7", lambda: None) == first_delay("p-7", lambda: None)


def test_an_agreed_window_keeps_the_tight_lower_bound_of_older_misses() -> None:
    """3 s tasks: a wave that missed (polled at 2.95 s, seen done at 3.45 s) bounds them from
    below; the hits after it only by their model time (2.7 s). Twenty hits later the window
    still starts at the misses, so the next wave's first poll is after 3 s, not before it."""
    misses = [
        observation(2.95, 3.45, inference_s=2.7, prediction_id=f"m{i}", observed_at=T0)
        for i in range(10)
    ]
    hits = [
        observation(
            0.0, 3.05, inference_s=2.7, prediction_id=f"h{i}", observed_at=T0 + timedelta(1)
        )
        for i in range(20)
    ]
    forecast = forecast_completion(misses + hits)
    assert forecast is not None and forecast.earliest == pytest.approx(2.95 - 0.06)
    assert simulate(3.0, forecast)[0] == 1  # one GET, after the completion
    alone = forecast_completion(hits)  # what the last 20 alone say: from the model time
    assert alone is not None and alone.earliest == pytest.approx(2.7 - 0.06, abs=0.01)
    assert simulate(3.0, alone)[0] == 2  # its first poll comes before the completion
    # Older observations that do not overlap the recent ones (the model was slower) are not used.
    slower = [observation(3.5, 3.9, prediction_id=f"s{i}", observed_at=T0) for i in range(10)]
    assert forecast_completion(slower + hits) == alone


def test_a_wait_that_learns_its_window_late_polls_soon_not_initial_interval_later() -> None:
    policy = PollPolicy()
    forecast = CompletionForecast(2.6, 3.2, 2.9)
    # Just before the window's first poll: that poll, a burst apart, not 2 s later.
    before = PollSchedule(policy, forecast)
    first = PollSchedule(policy, forecast).next_poll(0.0)
    assert before.next_poll(first - 0.1) == pytest.approx(first - 0.1 + policy.burst_interval)
    # After the window (a cold wave learned only then): one poll soon, then the adaptive one.
    after = PollSchedule(policy, forecast, learned_late=True)
    assert after.next_poll(3.5) == pytest.approx(3.5 + policy.burst_interval)
    assert after.next_poll(4.0) == pytest.approx(4.0 + policy.initial_interval)
    # A wait that had its forecast all along (or resumes by id) is past its window: adaptive.
    plain = PollSchedule(policy, forecast)
    assert plain.next_poll(3.5) == pytest.approx(3.5 + policy.initial_interval)
    # Without bursts left, never under initial_interval outside the window.
    none = PollSchedule(PollPolicy(max_burst=0), forecast, learned_late=True)
    assert none.next_poll(3.5) == pytest.approx(3.5 + policy.initial_interval)


def test_wide_observations_that_overlap_by_chance_do_not_make_an_agreed_window() -> None:
    """Measured (bench_polling, 3 s +-20 % tasks): five seen on the adaptive schedule (done at
    ~5 s), ten on forecasts from them. All 15 overlap, but only in one task's own
    [3.574, 3.576] s; as the window it made every later task late (0.77 s on average). Their
    model times alone (2.25-3.24 s) say the durations differ: the mixture, not the overlap."""
    seen = [
        observation(nd, done, inference_s=inf, prediction_id=str(i))
        for i, (nd, inf, done) in enumerate([
            (2.003, 3.199, 5.006), (2.002, 2.921, 5.005), (2.043, 2.296, 5.089),
            (2.002, 2.427, 5.046), (2.043, 2.252, 5.087), (2.569, 2.853, 3.576),
            (2.569, 2.386, 3.649), (2.569, 2.656, 3.608), (2.569, 2.649, 3.616),
            (3.574, 3.239, 4.288), (0.0, 2.694, 3.639), (0.0, 3.057, 3.639),
            (0.0, 2.367, 3.681), (0.0, 2.413, 3.639), (0.0, 2.256, 3.681),
        ])
    ]  # fmt: skip
    forecast = forecast_completion(seen)
    assert forecast is not None and forecast.earliest < 3.0 and forecast.latest > 3.6
    delays = [simulate(d, forecast)[1] for d in grid(3.0)]
    assert statistics.mean(delays) <= 0.5
