"""Materialize a set of image partitions in-process, as few single runs as the keys allow.

Dynamic partitions are ordered by insertion; a run covers a contiguous range of them, so keys
that are not neighbours are split into several runs (one per contiguous range).
"""

from collections.abc import Sequence

import dagster as dg

from hunyuan_assets.integration.assets import (
    IMAGES,
    MESHES,
    SOURCE_IMAGES,
    image_meshes,
    prediction_log,
)
from hunyuan_assets.integration.compat import partition_range_tags
from hunyuan_assets.integration.sensors import contiguous_ranges

ALL_ASSETS = [image_meshes, prediction_log]


def add_image_partitions(instance: dg.DagsterInstance, keys: Sequence[str]) -> list[str]:
    """Add the keys that are not partitions yet; returns every partition key, in order."""
    existing = instance.get_dynamic_partitions(IMAGES)
    known = set(existing)
    new = [k for k in dict.fromkeys(keys) if k not in known]
    if new:
        instance.add_dynamic_partitions(IMAGES, new)
    return [*existing, *new]


def materialize_images(
    instance: dg.DagsterInstance,
    resources: dict,
    keys: Sequence[str],
    *,
    selection: Sequence[dg.AssetKey] = (SOURCE_IMAGES, MESHES),
    run_config: dict | None = None,
    tags: dict[str, str] | None = None,
) -> list[dg.ExecuteInProcessResult]:
    """One in-process run per contiguous range of `keys` (usually exactly one run)."""
    ordered = add_image_partitions(instance, keys)
    results = []
    for start, end in contiguous_ranges(ordered, set(keys)):
        range_tags = partition_range_tags(start, end)
        results.append(
            dg.materialize(
                ALL_ASSETS,
                selection=list(selection),
                instance=instance,
                resources=resources,
                tags={**(tags or {}), **range_tags},
                run_config=run_config,
                raise_on_error=False,
            )
        )
    return results


def materialize_prediction_log(
    instance: dg.DagsterInstance, resources: dict, run_config: dict | None = None
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        ALL_ASSETS,
        selection=[prediction_log],
        instance=instance,
        resources=resources,
        run_config=run_config,
        raise_on_error=False,
    )
