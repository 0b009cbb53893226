"""Materialize a set of a pipeline's image partitions in-process, as few runs as the keys allow.

Dynamic partitions are ordered by insertion; a run covers a contiguous range of them, so keys
that are not neighbours are split into several runs (one per contiguous range), and a range
into runs of at most `images_per_run` images, as the image sensor does: Dagster keeps every
event of a step until the step ends (~20 KB per image), so one run of 100,000 would not stay
flat in memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from hunyuan_assets.integration.compat import partition_range_tags
from hunyuan_assets.integration.factory import MeshPipeline
from hunyuan_assets.integration.sensors import MAX_IMAGES_PER_RUN, batched_ranges


def add_image_partitions(
    instance: dg.DagsterInstance, pipeline: MeshPipeline, keys: Sequence[str]
) -> list[str]:
    """Add the keys that are not partitions yet; returns every partition key, in order."""
    name = pipeline.settings.partitions
    existing = instance.get_dynamic_partitions(name)
    known = set(existing)
    new = [k for k in dict.fromkeys(keys) if k not in known]
    if new:
        instance.add_dynamic_partitions(name, new)
    return [*existing, *new]


def materialize_images(
    instance: dg.DagsterInstance,
    pipeline: MeshPipeline,
    keys: Sequence[str],
    *,
    selection: Sequence[dg.AssetKey] | None = None,
    run_config: dict | None = None,
    tags: dict[str, str] | None = None,
    images_per_run: int = MAX_IMAGES_PER_RUN,
) -> list[dg.ExecuteInProcessResult]:
    """One in-process run per contiguous range of `keys`, of at most `images_per_run`
    (usually exactly one run)."""
    settings = pipeline.settings
    chosen = list(selection or (settings.source_images_key, settings.meshes_key))
    ordered = add_image_partitions(instance, pipeline, keys)
    results = []
    for batch in batched_ranges(ordered, set(keys), images_per_run):
        results.append(
            dg.materialize(
                pipeline.assets,
                selection=chosen,
                instance=instance,
                resources=pipeline.resources,
                tags={**(tags or {}), **partition_range_tags(batch[0], batch[-1])},
                run_config=run_config,
                raise_on_error=False,
            )
        )
    return results


def materialize_prediction_log(
    instance: dg.DagsterInstance, pipeline: MeshPipeline, run_config: dict | None = None
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        pipeline.assets,
        selection=[pipeline.settings.prediction_log_key],
        instance=instance,
        resources=pipeline.resources,
        run_config=run_config,
        raise_on_error=False,
    )
