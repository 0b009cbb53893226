"""Matching unknown predictions to uncertain submits, and their windows (sans-IO); end to end in
test_resume.py and test_faults.py."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from hunyuan_assets.core.reconciliation import (
    ClockOffsets,
    ReconcilePolicy,
    SubmitMarker,
    match_candidates,
)

T0 = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)
POLICY = ReconcilePolicy(skew_seconds=0.5)


def marker(token: str, start: float, end: float) -> SubmitMarker:
    at = lambda s: (T0 + timedelta(seconds=s)).isoformat()  # noqa: E731
    return SubmitMarker(token, f"{token}.png", at(start), at(end))


def created(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_one_unknown_prediction_for_one_uncertain_submit_is_adopted():
    mine = marker("a", 0, 1)
    verdict = match_candidates(mine, [mine], [("p1", created(0.4))], POLICY)
    assert (verdict.action, verdict.prediction_id) == ("adopt", "p1")


def test_more_candidates_than_uncertain_submits_is_refused_naming_them():
    mine = marker("a", 0, 1)
    verdict = match_candidates(mine, [mine], [("p1", created(0.4)), ("p2", created(0.6))], POLICY)
    assert verdict.action == "refuse" and verdict.candidates == ("p1", "p2")
    assert "p1" in verdict.reason and "p2" in verdict.reason


def test_disjoint_windows_tell_two_uncertain_submits_apart():
    mine, other = marker("a", 0, 1), marker("b", 5, 6)
    candidates = [("late", created(5.5)), ("early", created(0.2))]
    verdict = match_candidates(mine, [mine, other], candidates, POLICY)
    assert (verdict.action, verdict.prediction_id) == ("adopt", "early")


def test_a_forced_chain_of_overlaps_is_resolved():
    # b overlaps a and c; the candidate only b's window holds is b's, so the rest follow
    a, b, c = marker("a", 0, 1), marker("b", 0.8, 3.2), marker("c", 3, 4)
    candidates = [("pa", created(0.1)), ("pb", created(2.0)), ("pc", created(3.9))]
    verdict = match_candidates(a, [a, b, c], candidates, POLICY)
    assert (verdict.action, verdict.prediction_id) == ("adopt", "pa")


def test_two_candidates_in_two_shared_windows_cannot_be_told_apart():
    mine, other = marker("a", 0, 2), marker("b", 0.5, 2.5)
    candidates = [("p1", created(1.0)), ("p2", created(1.5))]
    verdict = match_candidates(mine, [mine, other], candidates, POLICY)
    assert verdict.action == "refuse"


def test_a_candidate_outside_every_window_is_never_adopted():
    mine = marker("a", 0, 1)
    verdict = match_candidates(mine, [mine], [("outsider", created(30))], POLICY)
    assert verdict.action == "refuse"


# -- windows from the provider's learned clock ------------------------------------------------
def test_clock_offsets_are_bounded_by_each_answered_submit():
    clocks = ClockOffsets()
    assert clocks.bounds() is None
    # their clock runs 3.000 s ahead; created between our send and our answer
    clocks.learn(T0, T0 + timedelta(seconds=0.2), "2026-12-01T10:00:03.100Z")
    clocks.learn(
        T0 + timedelta(seconds=5), T0 + timedelta(seconds=5.05), "2026-12-01T10:00:08.020Z"
    )
    low, high = clocks.bounds()
    assert low == pytest.approx(2.97) and high == pytest.approx(3.021)  # +1 ms: ms resolution
    # a provider that stamps whole seconds widens the bound by a second
    coarse = ClockOffsets()
    coarse.learn(T0, T0 + timedelta(seconds=0.1), "2026-12-01T10:00:03Z")
    assert coarse.bounds() == (pytest.approx(2.9), pytest.approx(4.0))


def test_contradicting_samples_fall_back_to_their_hull():
    clocks = ClockOffsets()
    clocks.learn(T0, T0 + timedelta(seconds=0.1), "2026-12-01T10:00:00.050Z")  # ~0 s
    clocks.learn(T0, T0 + timedelta(seconds=0.1), "2026-12-01T10:00:01.050Z")  # ~1 s
    assert clocks.bounds() == (pytest.approx(-0.05), pytest.approx(1.051))


def test_a_learned_window_opens_at_the_send_and_a_guard_keeps_the_next_one_apart():
    clocks = ClockOffsets()
    clocks.learn(T0, T0 + timedelta(seconds=0.01), "2026-12-01T10:00:00.005Z")
    sent = T0 + timedelta(seconds=10)
    lost = replace(
        clocks.marker("a", "a.png", sent), failed_at=(sent + timedelta(seconds=1)).isoformat()
    )
    start, end = lost.window(POLICY.skew_seconds, 60)
    assert start > sent - timedelta(seconds=0.1)  # not the skew's 0.5 s before the send
    assert end >= sent + timedelta(seconds=1 + POLICY.skew_seconds)  # a late arrival is ours
    after = sent + timedelta(seconds=1 + lost.guard_seconds(POLICY.skew_seconds))
    next_start, _ = clocks.marker("b", "b.png", after).window(POLICY.skew_seconds, 60)
    assert next_start > end
    # nothing learned yet: the skew on both sides, and a guard of both
    unknown = marker("c", 0, 1)
    assert unknown.guard_seconds(POLICY.skew_seconds) == 2 * POLICY.skew_seconds
