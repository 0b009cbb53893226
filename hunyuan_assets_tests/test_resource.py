"""Hunyuan3DResource inside materialized assets, against the emulator over loopback."""

from pathlib import Path

import dagster as dg
import pytest

from hunyuan_assets import Hunyuan3DResource
from hunyuan_assets.core.sources import SAMPLES_DIR


@dg.asset
def duck_mesh(context: dg.AssetExecutionContext, hunyuan3d: Hunyuan3DResource):
    out = Path(context.instance.storage_directory()) / "duck.glb"
    with hunyuan3d.get_client() as client:
        result = client.generate(SAMPLES_DIR / "duck.png", out)
    return dg.MaterializeResult(
        metadata={
            "prediction_id": result.prediction.id,
            "bytes": result.mesh_bytes,
            "polls": result.prediction.polls,
        }
    )


@dg.asset
async def two_meshes(context: dg.AssetExecutionContext, hunyuan3d: Hunyuan3DResource):
    import asyncio

    folder = Path(context.instance.storage_directory())
    async with hunyuan3d.get_async_client() as client:
        results = await asyncio.gather(
            *(
                client.generate(SAMPLES_DIR / n, folder / f"{n}.glb")
                for n in ("mug.png", "vase.jpg")
            )
        )
    return dg.MaterializeResult(
        metadata={"ids": dg.MetadataValue.json([r.prediction.id for r in results])}
    )


def test_resource_in_a_materialized_asset(emulator, api_key, monkeypatch):
    monkeypatch.setenv("WAVESPEED_API_KEY", api_key)
    resource = Hunyuan3DResource(
        api_key=dg.EnvVar("WAVESPEED_API_KEY"),
        base_url=emulator.base_url,
        poll_initial_interval=0.05,
        poll_max_interval=0.2,
    )
    with dg.instance_for_test() as instance:
        result = dg.materialize([duck_mesh], resources={"hunyuan3d": resource}, instance=instance)
        assert result.success
        meta = result.asset_materializations_for_node("duck_mesh")[0].metadata
        assert meta["bytes"].value > 10_000 and meta["polls"].value >= 1
        assert emulator.stats()["submissions"] == 1 and emulator.stats()["uploads"] == 1


def test_async_client_from_the_resource(emulator):
    resource = Hunyuan3DResource(base_url=emulator.base_url, poll_initial_interval=0.05)
    with dg.instance_for_test() as instance:
        result = dg.materialize([two_meshes], resources={"hunyuan3d": resource}, instance=instance)
    assert result.success
    assert emulator.stats()["submissions"] == 2


def test_missing_key_against_the_real_api_names_the_variable(monkeypatch):
    monkeypatch.delenv("WAVESPEED_API_KEY", raising=False)
    resource = Hunyuan3DResource(api_key="", base_url="https://api.wavespeed.ai")
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [duck_mesh], resources={"hunyuan3d": resource}, instance=instance, raise_on_error=False
        )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_failure)
    text = str(failure.event_specific_data)
    assert "WAVESPEED_API_KEY" in text


def test_unset_envvar_fails_before_any_request(monkeypatch):
    monkeypatch.delenv("WAVESPEED_API_KEY", raising=False)
    resource = Hunyuan3DResource(api_key=dg.EnvVar("WAVESPEED_API_KEY"))
    with pytest.raises(Exception, match="WAVESPEED_API_KEY"):
        dg.materialize([duck_mesh], resources={"hunyuan3d": resource})


def test_every_field_is_described():
    fields = Hunyuan3DResource.model_fields
    assert {"api_key", "base_url", "model", "max_concurrency", "wait_deadline"} <= set(fields)
    for name, field in fields.items():
        assert field.description, f"{name} has no description"


def test_max_concurrency_defaults_to_the_lowest_tier():
    assert Hunyuan3DResource().max_concurrency == 2


def test_submits_are_sent_one_at_a_time_unless_told():
    assert Hunyuan3DResource().max_submits_in_flight == 1
    with pytest.raises(dg.DagsterInvalidConfigError, match="max_submits_in_flight"):
        Hunyuan3DResource(api_key="k", max_submits_in_flight=0).client_settings()
