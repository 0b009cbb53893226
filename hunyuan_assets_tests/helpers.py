"""Reading what Dagster recorded, per partition, for assertions."""

import dagster as dg
from dagster._core.definitions.asset_key import AssetCheckKey
from dagster._core.storage.partition_status_cache import get_and_update_asset_status_cache_value

from hunyuan_assets.integration.assets import MESHES, images_partitions


def check_results(
    instance: dg.DagsterInstance, check_name: str, asset: dg.AssetKey = MESHES
) -> dict[str, bool]:
    """partition -> passed, for the latest evaluation of each partition."""
    records = instance.event_log_storage.get_asset_check_execution_history(
        AssetCheckKey(asset, check_name), limit=1000
    )
    found: dict[str, bool] = {}
    for record in records:  # newest first
        evaluation = record.event.dagster_event.event_specific_data if record.event else None
        if record.partition in found or not hasattr(evaluation, "passed"):
            continue
        found[record.partition] = evaluation.passed
    return found


def failed_partitions(instance: dg.DagsterInstance, asset: dg.AssetKey = MESHES) -> set[str]:
    status = get_and_update_asset_status_cache_value(instance, asset, images_partitions)
    assert status is not None
    return set(status.deserialize_failed_partition_subsets(images_partitions).get_partition_keys())
