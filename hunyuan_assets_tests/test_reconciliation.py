"""Matching unknown predictions to uncertain submits (sans-IO); end to end in test_resume.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hunyuan_assets.core.reconciliation import ReconcilePolicy, SubmitMarker, match_candidates

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
