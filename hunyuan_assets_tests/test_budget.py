"""The daily budget ledger: exact across concurrent submitters, on a folder and on S3."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from hunyuan_assets.core.budget import BudgetExceededError, DailyBudget
from hunyuan_assets.core.store import LocalMeshStore


def _try(budget: DailyBudget, label: str) -> bool:
    try:
        budget.reserve(label)
    except BudgetExceededError:
        return False
    return True


def test_concurrent_submitters_never_overspend(store):
    # each submitter has its own ledger object (own cache), as separate processes would
    budgets = [DailyBudget(store, limit_usd=1.0, price_usd=0.30) for _ in range(12)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        granted = list(pool.map(_try, budgets, [f"image-{i}" for i in range(12)]))
    assert sum(granted) == 3  # 3 x 0.30 <= 1.00 < 4 x 0.30
    assert DailyBudget(store, 1.0, 0.30).spent_usd() == pytest.approx(0.90)


def test_a_refused_submit_gives_its_slot_back(store):
    budget = DailyBudget(store, limit_usd=0.50, price_usd=0.30)
    slot = budget.reserve("first")
    with pytest.raises(BudgetExceededError, match=r"daily_budget_usd 0\.50"):
        budget.reserve("second")
    budget.release(slot)  # the API refused the first submit: nothing was paid
    assert budget.spent_usd() == 0
    budget.reserve("third")
    assert budget.spent_usd() == pytest.approx(0.30)


def test_each_utc_day_has_its_own_budget(store):
    day = [datetime(2026, 12, 1, 23, 59, tzinfo=UTC)]
    budget = DailyBudget(store, 0.30, 0.30, clock=lambda: day[0])
    budget.reserve("late on the first")
    with pytest.raises(BudgetExceededError, match="2026-12-01"):
        budget.reserve("still the first")
    day[0] = datetime(2026, 12, 2, 0, 1, tzinfo=UTC)
    budget.reserve("early on the second")
    assert budget.spent_usd("2026-12-01") == budget.spent_usd("2026-12-02") == pytest.approx(0.3)


def _reserve_in_process(root: str, label: str, results) -> None:
    results.put(_try(DailyBudget(LocalMeshStore(root), 1.0, 0.25), label))


def test_separate_processes_share_one_budget(tmp_path):
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [
        context.Process(target=_reserve_in_process, args=(str(tmp_path), f"p{i}", results))
        for i in range(6)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    granted = [results.get(timeout=10) for _ in workers]
    assert sum(granted) == 4  # 4 x 0.25 = 1.00, exactly the budget
