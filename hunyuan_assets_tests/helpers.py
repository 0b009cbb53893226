"""Building a test pipeline, and reading what Dagster recorded per partition, for assertions."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from hunyuan_assets.integration.compat import partition_status, recent_check_results
from hunyuan_assets.integration.factory import MeshPipeline, build_mesh_pipeline

NAME = "test"  # every test pipeline's name, unless a test needs two
SOURCE_IMAGES = dg.AssetKey([NAME, "source_images"])
MESHES = dg.AssetKey([NAME, "meshes"])
PREDICTION_LOG = dg.AssetKey([NAME, "prediction_log"])
PARTITIONS = f"{NAME}_images"


def pipeline_for(emulator, images: Path | str, store: Path | str, **options) -> MeshPipeline:
    """A pipeline named NAME over `images` and `store`, talking to `emulator`."""
    options.setdefault("name", NAME)
    return build_mesh_pipeline(
        images=str(images), store=str(store), base_url=emulator.base_url, **options
    )


def partition_keys(pipeline: MeshPipeline) -> list[str]:
    images = pipeline.resources[pipeline.settings.images_resource]
    return [ref.partition_key for ref in images.open().list_images()]


def mesh_store_of(pipeline: MeshPipeline):
    return pipeline.resources[pipeline.settings.mesh_store_resource].open()


def check_results(
    instance: dg.DagsterInstance, check_name: str, asset: dg.AssetKey = MESHES
) -> dict[str, bool]:
    """partition -> passed, for the latest evaluation of each partition."""
    found: dict[str, bool] = {}
    for key in instance.get_dynamic_partitions(f"{asset.path[0]}_images"):
        results = recent_check_results(instance, dg.AssetCheckKey(asset, check_name), key, 1)
        if results:
            found[key] = results[0].passed
    return found


def failed_partitions(instance: dg.DagsterInstance, asset: dg.AssetKey = MESHES) -> set[str]:
    partitions = dg.DynamicPartitionsDefinition(name=f"{asset.path[0]}_images")
    return set(partition_status(instance, asset, partitions).failed)
