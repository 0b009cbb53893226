"""A daily spending limit that holds across runs, processes and hosts sharing a mesh store.

Every submission first takes a numbered slot in the day's ledger (`budget/<UTC date>/<n>.json`,
created with the store's create-if-absent write, so each number has exactly one owner). A slot
records what the submission may cost. After taking slot n, the submitter adds up the slots
numbered up to n (completed and in-flight predictions alike) and goes ahead only if that stays
within the budget; otherwise it gives the slot back and refuses. Numbers only grow and a given
back slot is marked, never deleted, so a later claimant can never slip under an earlier one's
sum: two processes racing for the last dollar cannot both win.

A submission the API refused (nothing was created, so nothing was paid) gives its slot back. A
prediction that failed keeps its slot: whether a failed task is billed is not documented, so
it is counted as spent. No Dagster here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from hunyuan_assets.core.store import MeshStore

_SLOT = re.compile(r"^(\d{8})\.(json|released)$")


class BudgetExceededError(Exception):
    """Submitting would take the day's spend past `daily_budget_usd`: not submitted."""

    transient = False  # not worth a step retry: the budget resets tomorrow (UTC)


@dataclass(frozen=True)
class BudgetSlot:
    day: str
    number: int
    cost_usd: float


class DailyBudget:
    """`reserve()` before a submit, `release()` when the API refused it."""

    def __init__(
        self,
        store: MeshStore,
        limit_usd: float,
        price_usd: float,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.limit_usd = limit_usd
        self.price_usd = price_usd
        self._clock = clock
        self._costs: dict[tuple[str, int], float] = {}  # slots never change their cost: cache

    def _prefix(self, day: str) -> str:
        return f"budget/{day}/"

    def reserve(self, label: str) -> BudgetSlot:
        """A slot for one submission, or BudgetExceededError naming the budget."""
        day = self._clock().date().isoformat()
        body = json.dumps(
            {"cost_usd": self.price_usd, "for": label, "at": self._clock().isoformat()}
        ).encode()
        while True:
            slots, released = self._listing(day)
            number = max(slots, default=0) + 1
            if self.store.create_exclusive(f"{self._prefix(day)}{number:08d}.json", body):
                break  # else another submitter took that number first: look again
        self._costs[(day, number)] = self.price_usd
        slots, released = self._listing(day)
        spent = sum(self._cost(day, n) for n in slots if n <= number and n not in released)
        slot = BudgetSlot(day, number, self.price_usd)
        if spent > self.limit_usd + 1e-9:
            self.release(slot)
            raise BudgetExceededError(
                f"daily_budget_usd {self.limit_usd:.2f} reached for {day} (UTC): "
                f"{spent - self.price_usd:.2f} USD spent or in flight, and one more prediction "
                f"costs {self.price_usd:.2f}. Not submitted; it is tried again once the budget "
                "allows (tomorrow, or with a higher budget)."
            )
        return slot

    def release(self, slot: BudgetSlot) -> None:
        self.store.put_bytes(f"{self._prefix(slot.day)}{slot.number:08d}.released", b"")

    def spent_usd(self, day: str | None = None) -> float:
        """What the day's slots add up to (completed plus in flight)."""
        day = day or self._clock().date().isoformat()
        slots, released = self._listing(day)
        return sum(self._cost(day, n) for n in slots if n not in released)

    def _listing(self, day: str) -> tuple[list[int], set[int]]:
        slots: list[int] = []
        released: set[int] = set()
        for key in self.store.list_keys(self._prefix(day)):
            found = _SLOT.match(key.rsplit("/", 1)[-1])
            if found:
                (slots.append if found[2] == "json" else released.add)(int(found[1]))
        return slots, released

    def _cost(self, day: str, number: int) -> float:
        cached = self._costs.get((day, number))
        if cached is not None:
            return cached
        data = self.store.get_bytes(f"{self._prefix(day)}{number:08d}.json")
        try:
            cost = float(json.loads(data or b"{}").get("cost_usd", self.price_usd))
        except (ValueError, TypeError):
            cost = self.price_usd  # unreadable: assume it cost what ours does
        self._costs[(day, number)] = cost
        return cost
