"""Recent poll observations per model, kept in the mesh store so the next run starts informed.

One small JSON object per model under `poll_history/<model slug>.json`, holding the newest
`limit` observations (`hunyuan_assets.client.PollObservation`). It is a hint for the poll
schedule, not a record: two runs that write at once may lose each other's latest observation
(the last writer wins), but each write replaces the whole object atomically (both stores
promise that), so a reader never sees a torn file. Anything unreadable (bad JSON, another
version, a wrong field) counts as "nothing known" and is replaced by the next write. A store
that fails is logged and treated the same way: a hint never fails a run. No Dagster here.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from typing import Any

from hunyuan_assets.client.polling import CompletionForecast, PollObservation, forecast_completion
from hunyuan_assets.core.store import MeshStore, model_slug

__all__ = ["PollHistory"]

logger = logging.getLogger("hunyuan_assets.core.poll_history")

_VERSION = 1
DEFAULT_PREFIX = "poll_history"
DEFAULT_LIMIT = 50


class PollHistory:
    """Loads, forecasts from and appends to the per-model observation lists in `store`.

    Thread-safe; each method does its own store I/O (call it from a thread in async code).
    """

    def __init__(
        self, store: MeshStore, *, prefix: str = DEFAULT_PREFIX, limit: int = DEFAULT_LIMIT
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.store, self.prefix, self.limit = store, prefix.strip("/"), limit
        self._lock = threading.Lock()

    def key_for(self, model: str) -> str:
        return f"{self.prefix}/{model_slug(model)}.json"

    def observations(self, model: str) -> list[PollObservation]:
        """What the store holds for `model`, oldest first; [] when nothing (readable) is there."""
        key = self.key_for(model)
        try:
            data = self.store.get_bytes(key)
        except Exception as exc:  # any store's own errors (OSError, botocore's ClientError...)
            logger.warning("could not read poll history %s (%s: %s)", key, type(exc).__name__, exc)
            return []
        if data is None:
            return []
        try:
            return _decode(data, model)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            logger.warning("ignoring unreadable poll history %s (%s)", key, exc)
            return []

    def forecast(
        self, model: str, *, min_observations: int = 3, recent: int = 20
    ) -> CompletionForecast | None:
        """The completion forecast for `model` (None until enough is known)."""
        return forecast_completion(
            self.observations(model), min_observations=min_observations, recent=recent
        )

    def record(self, observation: PollObservation) -> None:
        """Add `observation` to its model's list (newest `limit` kept) and write it back."""
        self.record_many([observation])

    def record_many(self, observations: Iterable[PollObservation]) -> None:
        """Add several at once: one read and one write per model, however many there are."""
        by_model: dict[str, list[PollObservation]] = {}
        for observation in observations:
            by_model.setdefault(observation.model, []).append(observation)
        with self._lock:  # one writer per process; other processes: the last writer wins
            for model, new in by_model.items():
                merged = {o.prediction_id: o for o in self.observations(model)}
                merged.update({o.prediction_id: o for o in new})
                kept = sorted(merged.values(), key=lambda o: o.observed_at)[-self.limit :]
                key = self.key_for(model)
                try:
                    self.store.put_bytes(key, _encode(model, kept))
                except Exception as exc:
                    logger.warning(
                        "could not write poll history %s (%s: %s)", key, type(exc).__name__, exc
                    )


def _encode(model: str, observations: list[PollObservation]) -> bytes:
    body = {
        "version": _VERSION,
        "model": model,
        "observations": [o.to_json() for o in observations],
    }
    return json.dumps(body, indent=1).encode()


def _decode(data: bytes, model: str) -> list[PollObservation]:
    body: Any = json.loads(data)
    if not isinstance(body, dict) or body.get("version") != _VERSION:
        raise ValueError("not a version-1 poll history")
    if body.get("model") != model:
        raise ValueError(f"it is the history of {body.get('model')!r}")
    items = body.get("observations")
    if not isinstance(items, list):
        raise ValueError("no list of observations")
    observations = [PollObservation.from_json(item) for item in items]
    if any(o.model != model for o in observations):
        raise ValueError("it holds another model's observations")
    return sorted(observations, key=lambda o: o.observed_at)
