"""How late the event loop runs its callbacks: the measure of "nothing blocks the loop".

A monitor task asks to wake every `interval` seconds and records how much later than asked it
actually woke. With hundreds of predictions in flight on one loop, a call that holds the loop
(or the GIL) for 100 ms shows up here as 100 ms of lag. No Dagster here.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class LoopLag:
    """Lateness samples in milliseconds (bounded: the newest `keep` are kept)."""

    interval: float = 0.05
    keep: int = 20_000
    samples: list[float] = field(default_factory=list)

    async def watch(self) -> None:
        """Run until cancelled."""
        while True:
            asked = time.perf_counter()
            await asyncio.sleep(self.interval)
            late = (time.perf_counter() - asked - self.interval) * 1000
            self.samples.append(max(0.0, late))
            if len(self.samples) > self.keep:
                del self.samples[: len(self.samples) - self.keep]

    def summary(self) -> dict[str, float]:
        if not self.samples:
            return {}
        ordered = sorted(self.samples)
        pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
        return {"p50_ms": round(pick(0.5), 1), "p99_ms": round(pick(0.99), 1),
                "max_ms": round(ordered[-1], 1), "samples": len(ordered)}  # fmt: skip
