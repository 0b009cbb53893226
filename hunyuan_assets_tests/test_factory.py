"""build_mesh_defs: several independent pipelines in one code location, cost and budget."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from hunyuan_assets import build_mesh_defs
from hunyuan_assets.core.log import PredictionLog
from hunyuan_assets.core.sources import SAMPLES_DIR
from hunyuan_assets.integration.backfill import materialize_images, materialize_prediction_log
from hunyuan_assets.integration.lineage import latest_materializations
from hunyuan_assets.integration.schedules import plan_refresh
from hunyuan_assets_tests.helpers import (
    MESHES,
    PREDICTION_LOG,
    failed_partitions,
    mesh_store_of,
    partition_keys,
    pipeline_for,
)


def folder_with(tmp_path: Path, name: str, *pictures: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for picture in pictures:
        shutil.copy(SAMPLES_DIR / picture, folder / picture)
    return folder


def test_two_pipelines_side_by_side_share_a_store_and_never_pay_twice(emulator, instance, tmp_path):
    store = tmp_path / "shared_store"
    products = pipeline_for(
        emulator, folder_with(tmp_path, "products", "mug.png", "vase.jpg"), store, name="products"
    )
    concepts = pipeline_for(
        emulator, folder_with(tmp_path, "concepts", "mug.png", "duck.png"), store, name="concepts"
    )

    @dg.asset
    def teams_own_asset() -> None: ...

    merged = dg.Definitions.merge(
        products.definitions, concepts.definitions, dg.Definitions(assets=[teams_own_asset])
    )
    dg.Definitions.validate_loadable(merged)
    keys = {key.to_user_string() for key in merged.resolve_all_asset_keys()}
    assert {
        "products/source_images",
        "products/meshes",
        "products/prediction_log",
        "concepts/source_images",
        "concepts/meshes",
        "concepts/prediction_log",
        "teams_own_asset",
    } <= keys
    assert {job.name for job in merged.jobs or []} >= {"products_meshes_job", "concepts_meshes_job"}
    assert {s.name for s in merged.sensors or []} == {
        "products_image_sensor",
        "products_dead_run_sensor",
        "concepts_image_sensor",
        "concepts_dead_run_sensor",
    }
    assert set(merged.resources or {}) == {
        f"{name}_{role}"
        for name in ("products", "concepts")
        for role in ("hunyuan3d", "images", "mesh_store")
    }

    for pipeline in (products, concepts):
        [result] = materialize_images(instance, pipeline, partition_keys(pipeline))
        assert result.success
    # mug.png is in both: paid once, the second pipeline reuses the stored mesh
    assert emulator.stats()["submissions"] == 3
    products_mug = latest_materializations(instance, products.settings.meshes_key, ["mug.png"])
    concepts_mug = latest_materializations(instance, concepts.settings.meshes_key, ["mug.png"])
    assert concepts_mug["mug.png"].metadata["status"] == "reused"
    assert concepts_mug["mug.png"].metadata["wavespeed.cost_usd"] == 0.0  # reuse costs nothing
    # no price is configured, so a paid prediction's cost is unknown, never claimed to be 0
    assert "wavespeed.cost_usd" not in products_mug["mug.png"].metadata
    usage = instance.fetch_observations(products.settings.meshes_key, limit=1).records[0]
    assert "wavespeed.cost_usd" not in usage.asset_observation.metadata
    assert (
        concepts_mug["mug.png"].metadata["mesh_uri"] == products_mug["mug.png"].metadata["mesh_uri"]
    )
    assert instance.get_dynamic_partitions("products_images") == ["mug.png", "vase.jpg"]
    assert instance.get_dynamic_partitions("concepts_images") == ["duck.png", "mug.png"]

    log = PredictionLog(mesh_store_of(products)).read()
    assert set(log["pipeline"]) == {"products", "concepts"}
    paid = log[log["status"] == "completed"]
    assert len(paid) == 3 and paid["cost_usd"].isna().all()
    assert (log[log["status"] == "reused"]["cost_usd"] == 0).all()
    assert materialize_prediction_log(instance, concepts).success
    summary = instance.get_latest_materialization_event(dg.AssetKey(["concepts", "prediction_log"]))
    metadata = summary.asset_materialization.metadata
    assert metadata["dagster/row_count"].value == 2  # its own rows
    assert "cost_usd" not in metadata
    assert "| 1 | unknown (no price set) |" in metadata["spend_by_day_and_model"].value


def test_names_and_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="pipeline name"):
        build_mesh_defs("Bad Name", images=str(tmp_path), store=str(tmp_path))
    with pytest.raises(TypeError, match="max_concurency"):
        build_mesh_defs("ok", images=str(tmp_path), store=str(tmp_path), max_concurency=3)
    with pytest.raises(ValueError, match="price_per_prediction_usd"):
        build_mesh_defs("ok", images=str(tmp_path), store=str(tmp_path), daily_budget_usd=1.0)
    defs = build_mesh_defs("quiet", images=str(tmp_path), store=str(tmp_path), automation=False)
    assert {s.default_status for s in defs.sensors or []} == {dg.DefaultSensorStatus.STOPPED}
    statuses = {s.default_status for s in defs.schedules or []}
    assert statuses == {dg.DefaultScheduleStatus.STOPPED}
    api_key = (defs.resources or {})["quiet_hunyuan3d"].api_key
    assert isinstance(api_key, dg.EnvVar) and api_key.env_var_name == "WAVESPEED_API_KEY"
    assert (defs.resources or {})["quiet_hunyuan3d"].max_submits_in_flight == 1
    with pytest.raises(ValueError, match="max_submits_in_flight"):
        build_mesh_defs("ok", images=str(tmp_path), store=str(tmp_path), max_submits_in_flight=0)
    fast = build_mesh_defs(
        "fast", images=str(tmp_path), store=str(tmp_path), max_submits_in_flight=8
    )
    assert (fast.resources or {})["fast_hunyuan3d"].max_submits_in_flight == 8


def test_budget_allows_one_prediction_and_fails_the_rest_naming_it(
    emulator, instance, images_dir, tmp_path
):
    pipeline = pipeline_for(
        emulator, images_dir, tmp_path / "store", price_per_prediction_usd=0.30,
        daily_budget_usd=0.50, max_concurrency=1,
    )  # fmt: skip
    keys = partition_keys(pipeline)
    assert len(keys) == 3
    [result] = materialize_images(instance, pipeline, keys)

    assert not result.success
    assert emulator.stats()["submissions"] == 1
    failed = failed_partitions(instance)
    assert len(failed) == 2
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.event_specific_data.error.message.count("daily_budget_usd 0.50") == 2

    log = PredictionLog(mesh_store_of(pipeline)).read()
    assert len(log) == 3
    assert log["cost_usd"].sum() == pytest.approx(0.30)
    refused = log[log["error_type"] == "BudgetExceededError"]
    assert set(refused["partition_key"]) == failed
    assert refused["prediction_id"].isna().all() and (refused["cost_usd"] == 0).all()

    done = next(iter(set(keys) - failed))
    meta = latest_materializations(instance, MESHES, [done])[done].metadata
    assert meta["wavespeed.cost_usd"] == pytest.approx(0.30)
    run = instance.get_run_by_id(result.run_id)
    assert run.tags["wavespeed/cost_usd"] == "0.3"
    assert run.tags["wavespeed/predictions_submitted"] == "1"
    usage = instance.fetch_observations(MESHES, limit=1).records[0].asset_observation
    assert usage.metadata["wavespeed.failed"].value == 0  # refusals were never predictions
    assert usage.metadata["wavespeed.not_submitted"].value == 2
    assert usage.metadata["wavespeed.cost_usd"].value == pytest.approx(0.30)
    balance = emulator.stats()["balance"]
    assert usage.metadata["wavespeed.balance_usd"].value == pytest.approx(balance)
    assert run.tags["wavespeed/balance_usd"] == str(balance)

    # the refresh schedule leaves budget refusals alone until tomorrow (UTC)
    plan = plan_refresh(instance, log, pipeline.settings)
    assert set(plan.abandoned) == failed and not set(plan.reasons) & failed
    assert all("daily_budget_usd" in why for why in plan.abandoned.values())
    tomorrow = pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=1)
    later = plan_refresh(instance, log, pipeline.settings, now=tomorrow.to_pydatetime())
    assert failed <= set(later.reasons)

    # a rerun with the budget spent submits nothing more
    again = materialize_images(instance, pipeline, sorted(failed))  # 1 or 2 ranges
    assert not any(r.success for r in again) and emulator.stats()["submissions"] == 1

    assert materialize_prediction_log(instance, pipeline).success
    summary = instance.get_latest_materialization_event(PREDICTION_LOG).asset_materialization
    assert summary.metadata["cost_usd"].value == pytest.approx(0.30)
    assert "| 1 | 0.30 |" in summary.metadata["spend_by_day_and_model"].value
