"""The fault-injection suite through Dagster (see `fault_cases.py`), and what it found, pinned
where it happens."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from hunyuan_assets.client import (
    DEFAULT_MODEL,
    AsyncHunyuan3DClient,
    ClientSettings,
    HttpRetryPolicy,
    PollPolicy,
)
from hunyuan_assets.core.mesh_generation import GenerationPolicy, MeshGenerator, MeshRequest
from hunyuan_assets.core.reconciliation import ReconcilePolicy
from hunyuan_assets.core.sources import SAMPLES_DIR
from hunyuan_assets.core.store import LocalMeshStore

# -- what the suite found, pinned where it happens ---------------------------------------------
QUICK_RECONCILE = ReconcilePolicy(skew_seconds=2.0, settle_seconds=0.0, in_flight_wait_seconds=5)


def client_settings(emulator, max_attempts: int = 6) -> ClientSettings:
    return ClientSettings(
        api_key="test",
        base_url=emulator.base_url,
        poll=PollPolicy(initial_interval=0.05, max_interval=0.2, deadline=30),
        retry=HttpRetryPolicy(max_attempts=max_attempts, base_delay=0.01, max_delay=0.05),
    )


async def generate_one(emulator, store: LocalMeshStore, image: Path, max_attempts: int = 6):
    """One attempt of the `meshes` step for one picture, at the MeshGenerator level."""
    async with AsyncHunyuan3DClient(client_settings(emulator, max_attempts)) as client:
        url = await client.upload(image)
        sha = hashlib.sha256(image.read_bytes()).hexdigest()
        request = MeshRequest(image.name, str(image), sha, url)
        policy = GenerationPolicy(model=DEFAULT_MODEL, run_id="r1", reconcile=QUICK_RECONCILE)
        [outcome] = [o async for o in MeshGenerator(client, store, policy, 2).run([request])]
    return outcome


@pytest.mark.parametrize(("drops", "ends"), [(3, "completed"), (4, "failed")])
def test_a_submit_that_never_arrives_is_sent_again_up_to_the_clients_attempts(
    emulator, tmp_path, drops, ends
):
    """Each dropped submit is reconciled: the list shows nothing, so nothing was paid and it
    is sent again, each time with a row saying it never arrived, up to the client's max
    attempts (4 here); past them the attempt fails transient (a later one may submit)."""
    emulator.configure(rules=[{"endpoint": "submit", "kind": "drop", "count": drops}])
    store = LocalMeshStore(tmp_path / "store")
    outcome = asyncio.run(generate_one(emulator, store, SAMPLES_DIR / "mug.png", max_attempts=4))
    assert outcome.status == ends, outcome.error
    assert emulator.stats()["submissions"] == (1 if ends == "completed" else 0)
    superseded = [s.error for s in outcome.superseded]
    assert len(superseded) == min(drops, 3) and all("never arrived" in e for e in superseded)
    if ends == "failed":
        assert outcome.transient and "4 times" in outcome.error
