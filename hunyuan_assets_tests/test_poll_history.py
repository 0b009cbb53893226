"""PollHistory on both stores (a folder and moto's S3): round trip, bound, corruption, races."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from hunyuan_assets.client import PollObservation
from hunyuan_assets.core.poll_history import PollHistory

MODEL = "wavespeed-ai/hunyuan3d/v2.1"
OTHER = "wavespeed-ai/hunyuan3d/v2.0"
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def seen(i: int, model: str = MODEL, done: float = 120.0) -> PollObservation:
    return PollObservation(
        model=model,
        prediction_id=f"p-{model[-4:]}-{i}",
        status="completed",
        not_done_s=done - 2 + i % 5,
        done_s=done + i % 5,
        inference_s=done - 1 + i % 5,
        observed_at=T0 + timedelta(minutes=i),
    )


def test_observations_round_trip_per_model_and_feed_the_forecast(store) -> None:
    history = PollHistory(store)
    assert history.observations(MODEL) == [] and history.forecast(MODEL) is None
    for i in range(4):
        history.record(seen(i))
    history.record(seen(0, OTHER, done=30.0))

    later = PollHistory(store)  # the next run: only the store carries over
    assert later.observations(MODEL) == [seen(i) for i in range(4)]
    assert later.observations(OTHER) == [seen(0, OTHER, done=30.0)]
    forecast = later.forecast(MODEL)
    assert forecast is not None and forecast.observations == 4
    assert forecast.earliest < 119 < 124 < forecast.latest
    assert later.forecast(OTHER) is None  # one observation is not enough
    assert store.exists(later.key_for(MODEL)) and later.key_for(MODEL) != later.key_for(OTHER)


def test_the_list_is_bounded_newest_kept_and_deduplicated(store) -> None:
    history = PollHistory(store, limit=5)
    for i in [*range(8), 7, 3]:  # 7 and 3 again: same prediction ids
        history.record(seen(i))
    kept = history.observations(MODEL)
    assert [o.prediction_id for o in kept] == [seen(i).prediction_id for i in range(3, 8)]


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b"[1, 2]",
        b'{"version": 2, "model": "wavespeed-ai/hunyuan3d/v2.1", "observations": []}',
        b'{"version": 1, "model": "someone/else", "observations": []}',
        b'{"version": 1, "model": "wavespeed-ai/hunyuan3d/v2.1", "observations": [{"a": 1}]}',
        b'{"version": 1, "model": "wavespeed-ai/hunyuan3d/v2.1", "observations": [[1]]}',
        b'{"version": 1, "model": "wavespeed-ai/hunyuan3d/v2.1", "observations": {}}',
    ],
)
def test_a_corrupt_file_means_nothing_known_and_is_replaced(store, content, caplog) -> None:
    history = PollHistory(store)
    store.put_bytes(history.key_for(MODEL), content)
    assert history.observations(MODEL) == [] and history.forecast(MODEL) is None
    assert "unreadable poll history" in caplog.text
    history.record(seen(1))
    assert history.observations(MODEL) == [seen(1)]


def test_concurrent_writers_never_leave_a_torn_file(store, caplog) -> None:
    # Two "runs" (separate PollHistory objects, as two processes would have) write at once.
    writers = [PollHistory(store), PollHistory(store)]
    barrier = threading.Barrier(len(writers))

    def write(history: PollHistory, offset: int) -> None:
        barrier.wait()
        for i in range(10):
            history.record(seen(offset + 2 * i))

    threads = [threading.Thread(target=write, args=(h, n)) for n, h in enumerate(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    kept = PollHistory(store).observations(MODEL)
    # Every record() reads before it writes: none of those reads met a half-written file.
    assert "unreadable poll history" not in caplog.text
    # Last writer wins, so some may be lost, but what is there is whole and readable.
    assert kept and len({o.prediction_id for o in kept}) == len(kept)
    assert {o.prediction_id for o in kept} <= {seen(i).prediction_id for i in range(20)}


def test_a_failing_store_is_a_hint_lost_not_a_run_failed(tmp_path, caplog) -> None:
    from hunyuan_assets.core.store import LocalMeshStore

    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the store's folder should be")
    history = PollHistory(LocalMeshStore(blocked))
    history.record(seen(1))  # cannot write under a file: logged, not raised
    assert history.observations(MODEL) == [] and history.forecast(MODEL) is None
    assert "could not write poll history" in caplog.text
