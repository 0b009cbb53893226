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
# A small skew: before any answered submit, a lost answer holds the next submit 2 x skew.
QUICK_RECONCILE = ReconcilePolicy(skew_seconds=0.5, settle_seconds=0.0, in_flight_wait_seconds=5)


def client_settings(emulator, max_attempts: int = 6) -> ClientSettings:
    return ClientSettings(
        api_key="test",
        base_url=emulator.base_url,
        poll=PollPolicy(initial_interval=0.05, max_interval=0.2, deadline=30),
        retry=HttpRetryPolicy(max_attempts=max_attempts, base_delay=0.01, max_delay=0.05),
    )


async def generate(emulator, store: LocalMeshStore, images: list[Path], max_attempts: int = 6):
    """One attempt of the `meshes` step for these pictures, at the MeshGenerator level, with
    every picture in flight at once; the outcomes in the pictures' order."""
    async with AsyncHunyuan3DClient(client_settings(emulator, max_attempts)) as client:
        requests = []
        for image in images:
            url = await client.upload(image)
            sha = hashlib.sha256(image.read_bytes()).hexdigest()
            requests.append(MeshRequest(image.name, str(image), sha, url))
        policy = GenerationPolicy(model=DEFAULT_MODEL, run_id="r1", reconcile=QUICK_RECONCILE)
        generator = MeshGenerator(client, store, policy, len(images))
        outcomes = {o.request.partition_key: o async for o in generator.run(requests)}
    return [outcomes[image.name] for image in images]


async def generate_one(emulator, store: LocalMeshStore, image: Path, max_attempts: int = 6):
    [outcome] = await generate(emulator, store, [image], max_attempts)
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


def test_two_lost_submits_at_once_are_told_apart(emulator, tmp_path):
    """Two pictures submitted together both lose their answers: one was made (dropped after
    the server accepted it), one never arrived. With windows of +-2 s both fitted the one
    prediction, so both were refused until a person looked. Sent one at a time, with windows
    from the provider's learned clock and none opened before the last one closed, the made
    one is adopted and the other sent again: two predictions in all."""
    images = []
    for name in ("first.png", "second.png", "warmup.png"):
        path = tmp_path / name
        path.write_bytes((SAMPLES_DIR / "mug.png").read_bytes() + name.encode())
        images.append(path)
    store = LocalMeshStore(tmp_path / "store")
    emulator.configure(
        rules=[
            {"endpoint": "submit", "kind": "drop_after_accept", "match": "first", "count": 1},
            {"endpoint": "submit", "kind": "drop", "match": "second", "count": 1},
        ]
    )
    first, second, warmup = asyncio.run(generate(emulator, store, images))
    assert [o.status for o in (first, second, warmup)] == ["completed"] * 3, (
        first.error,
        second.error,
    )
    assert emulator.stats()["submissions"] == 3
    assert first.details.get("adopted") and first.superseded == ()
    [never] = second.superseded
    assert "never arrived" in never.error and not second.details.get("adopted")
