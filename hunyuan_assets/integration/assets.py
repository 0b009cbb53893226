"""The asset graph of one pipeline: source_images -> meshes -> prediction_log, one partition
per image, with per-partition checks.

`source_images` and `meshes` are computed by one step (a subsettable multi-asset) that runs
many partitions at once (single-run backfills) and reports each partition's materialization
and checks itself, as soon as that partition is done (see `mesh_step.py`). So one bad image
fails only its own partitions: the others are stored, logged and shown as materialized, and
the step then fails naming the bad ones, which Dagster marks failed (a failed step marks
exactly the partitions it did not report, dagster #21072). Either asset can be materialized
alone; `meshes` then reads what `source_images` registered from the mesh store.
"""

from collections.abc import Iterator
from typing import get_args

import dagster as dg
from pydantic import Field, field_validator

from hunyuan_assets.core.log import spend_by_day_and_model, summarize
from hunyuan_assets.integration.locations import MeshStoreResource
from hunyuan_assets.integration.mesh_step import MeshStep
from hunyuan_assets.integration.reports import (
    CHECK_CLOSED,
    CHECK_FACE_BUDGET,
    CHECK_GLB_VALID,
    CHECK_NOT_NSFW,
    CHECK_PBR_TEXTURED,
    SOURCE_CHECK,
    spend_markdown,
    spend_total_metadata,
    summary_markdown,
)
from hunyuan_assets.integration.settings import WAVESPEED_POOL, MeshDefsSettings, NsfwPolicy

SOURCE_CODE_VERSION = "1"
# Bump when the way meshes are produced changes; lineage then shows meshes stale by code.
MESH_CODE_VERSION = "1"


class MeshesConfig(dg.Config):
    """Per-run overrides of the pipeline's settings (empty: use the pipeline's)."""

    # `str` because Dagster config has no optional Literal; checked below.
    nsfw_policy: str | None = Field(
        default=None,
        description="What to do with a mesh the provider flags NSFW: 'keep' it, store it under "
        "quarantine/ ('quarantine'), or store it under quarantine/ and fail the partition "
        "('fail').",
    )
    reuse_identical_images: bool | None = Field(
        default=None,
        description="Images with the same sha256 share one prediction and one stored mesh.",
    )
    max_faces: int | None = Field(default=None, description="Face budget checked per mesh.")
    min_faces: int | None = Field(default=None, description="Fewer faces fail the budget.")
    preview_size: int | None = Field(default=None, description="Preview PNG edge in pixels.")

    @field_validator("nsfw_policy")
    @classmethod
    def _known_policy(cls, value: str | None) -> str | None:
        if value not in (None, *get_args(NsfwPolicy)):
            raise ValueError(f"nsfw_policy must be one of {get_args(NsfwPolicy)}, got {value!r}")
        return value


MESH_CHECKS = {
    CHECK_GLB_VALID: "The GLB parses as glTF 2.0 and has geometry.",
    CHECK_PBR_TEXTURED: "A PBR material with a base-colour texture.",
    CHECK_FACE_BUDGET: "Face count within [min_faces, max_faces].",
    CHECK_NOT_NSFW: "The provider did not flag the output NSFW.",
    CHECK_CLOSED: "Closed surface once welded by position (UV seams split raw vertices).",
}


def build_mesh_assets(settings: MeshDefsSettings) -> list[dg.AssetsDefinition]:
    """This pipeline's `image_meshes` step (source_images + meshes) and `prediction_log`."""
    partitions = settings.partitions_def
    source_key, meshes_key = settings.source_images_key, settings.meshes_key
    check_specs = [
        dg.AssetCheckSpec(
            SOURCE_CHECK,
            asset=source_key,
            partitions_def=partitions,
            description="The file decodes as an image and was made reachable by the API.",
        ),
        *(
            dg.AssetCheckSpec(name, asset=meshes_key, partitions_def=partitions, description=text)
            for name, text in MESH_CHECKS.items()
        ),
    ]

    @dg.multi_asset(
        name=f"{settings.name}_image_meshes",
        specs=[
            dg.AssetSpec(
                source_key,
                description="One image per partition: sha256 (its data version), size, format, "
                "and how the API fetches it (a media upload for local files, a presigned URL "
                "made just before submitting for S3).",
                code_version=SOURCE_CODE_VERSION,
                group_name=settings.group,
                kinds={"image"},
                partitions_def=partitions,
                skippable=True,
            ),
            dg.AssetSpec(
                meshes_key,
                description="A textured GLB per image from Hunyuan3D v2.1, stored in the mesh "
                "store with a PNG preview, prediction lineage, cost and per-partition checks.",
                deps=[source_key],
                code_version=MESH_CODE_VERSION,
                group_name=settings.group,
                kinds={"glb"},
                partitions_def=partitions,
                skippable=True,
            ),
        ],
        check_specs=check_specs,
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        # can_subset: either asset alone, and per-partition check results as optional outputs.
        can_subset=True,
        pool=WAVESPEED_POOL,
        retry_policy=dg.RetryPolicy(
            max_retries=3, delay=15, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
        ),
        required_resource_keys={
            settings.hunyuan3d_resource,
            settings.images_resource,
            settings.mesh_store_resource,
        },
    )
    def image_meshes(context: dg.AssetExecutionContext, config: MeshesConfig) -> Iterator:
        """Register images and turn them into meshes, streaming, with up to `max_concurrency`
        predictions in flight. Identical pictures share one prediction; every prediction id is
        recorded before it is awaited, so retries and reruns resume instead of paying again;
        every attempt is logged."""
        yield from MeshStep(context, settings, config, MESH_CODE_VERSION).run()

    @dg.asset(
        key=settings.prediction_log_key,
        deps=[meshes_key],
        group_name=settings.group,
        kinds={"parquet"},
        code_version="2",
        required_resource_keys={settings.mesh_store_resource},
    )
    def prediction_log(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        """Every prediction attempt of this pipeline as parquet rows (append-only, hive-partitioned
        by date): timings, status, errors, NSFW flags and cost, with spend per day and model."""
        mesh_store: MeshStoreResource = getattr(context.resources, settings.mesh_store_resource)
        log = mesh_store.prediction_log()
        frame = log.read()
        mine = frame[frame["pipeline"].isna() | (frame["pipeline"] == settings.name)]
        stats = summarize(mine)
        spend = spend_by_day_and_model(mine)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(mine),
                "location": dg.MetadataValue.path(log.location_uri),
                "summary": dg.MetadataValue.md(summary_markdown(stats)),
                "spend_by_day_and_model": dg.MetadataValue.md(spend_markdown(spend)),
                "predictions": stats.get("total_predictions", 0),
                **spend_total_metadata(spend),
                "nsfw_rate": float(stats.get("nsfw_rate", 0.0)),
            }
        )

    return [image_meshes, prediction_log]
