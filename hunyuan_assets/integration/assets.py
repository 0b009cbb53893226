"""The asset graph: source_images -> meshes -> prediction_log, one partition per image.

`source_images` and `meshes` are computed by one step (a subsettable multi-asset) that runs
many partitions at once (single-run backfills) and reports each partition's materialization
and checks itself. So one bad image fails only its own partitions: the others are stored,
logged and shown as materialized, and the step then fails naming the bad ones, which Dagster
marks failed (a failed step marks exactly the partitions it did not report, dagster #21072).
Either asset can be materialized alone; `meshes` then reads the registered images' metadata.
"""

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Literal

import dagster as dg
from pydantic import Field

from hunyuan_assets.core.log import PredictionLog, summarize
from hunyuan_assets.core.mesh_generation import (
    GenerationPolicy,
    MeshGenerator,
    MeshRequest,
)
from hunyuan_assets.core.registration import Registration, register_images
from hunyuan_assets.core.sources import ImageRef, ImageSource
from hunyuan_assets.core.threads import iterate_async
from hunyuan_assets.integration.lineage import (
    PartitionMaterialization,
    derived_version_tags,
    latest_materializations,
    partitions_materialized_in_run,
    source_version_tags,
)
from hunyuan_assets.integration.locations import ImagesResource, MeshStoreResource
from hunyuan_assets.integration.reports import (
    CHECK_CLOSED,
    CHECK_FACE_BUDGET,
    CHECK_GLB_VALID,
    CHECK_NOT_NSFW,
    CHECK_PBR_TEXTURED,
    SOURCE_CHECK,
    check_evaluation,
    error_log_row,
    log_row,
    mesh_check_evaluations,
    mesh_metadata,
    summary_markdown,
)
from hunyuan_assets.integration.resource import Hunyuan3DResource

IMAGES = "images"  # the dynamic partitions' name
images_partitions = dg.DynamicPartitionsDefinition(name=IMAGES)

SOURCE_CODE_VERSION = "1"
# Bump when the way meshes are produced changes; lineage then shows meshes stale by code.
MESH_CODE_VERSION = "1"
GROUP = "hunyuan3d"
WAVESPEED_POOL = "wavespeed"


class MeshesConfig(dg.Config):
    nsfw_policy: Literal["keep", "quarantine", "fail"] = Field(
        default="quarantine",
        description="What to do with a mesh the provider flags NSFW: keep it, store it under "
        "quarantine/ (default), or store it under quarantine/ and fail the partition.",
    )
    reuse_identical_images: bool = Field(
        default=True,
        description="Images with the same sha256 share one prediction and one stored mesh.",
    )
    max_faces: int = Field(default=200_000, description="Face budget checked per mesh.")
    min_faces: int = Field(default=100, description="Fewer faces than this fails the budget.")
    preview_size: int = Field(default=256, description="Preview PNG edge in pixels.")


source_checks = [
    dg.AssetCheckSpec(
        SOURCE_CHECK,
        asset="source_images",
        partitions_def=images_partitions,
        description="The file decodes as an image and was made reachable by the API.",
    )
]
mesh_checks = [
    dg.AssetCheckSpec(
        CHECK_GLB_VALID,
        asset="meshes",
        partitions_def=images_partitions,
        description="The GLB parses as glTF 2.0 and has geometry.",
    ),
    dg.AssetCheckSpec(
        CHECK_PBR_TEXTURED,
        asset="meshes",
        partitions_def=images_partitions,
        description="A PBR material with a base-colour texture.",
    ),
    dg.AssetCheckSpec(
        CHECK_FACE_BUDGET,
        asset="meshes",
        partitions_def=images_partitions,
        description="Face count within [min_faces, max_faces].",
    ),
    dg.AssetCheckSpec(
        CHECK_NOT_NSFW,
        asset="meshes",
        partitions_def=images_partitions,
        description="The provider did not flag the output NSFW.",
    ),
    dg.AssetCheckSpec(
        CHECK_CLOSED,
        asset="meshes",
        partitions_def=images_partitions,
        description="Closed surface once welded by position (UV seams split raw vertices).",
    ),
]


SOURCE_IMAGES = dg.AssetKey("source_images")
MESHES = dg.AssetKey("meshes")


@dg.multi_asset(
    name="image_meshes",
    specs=[
        dg.AssetSpec(
            SOURCE_IMAGES,
            description="One image per partition: sha256 (its data version), size, format, and "
            "a URL the API can fetch (a media upload for local files, a presigned URL for S3).",
            code_version=SOURCE_CODE_VERSION,
            group_name=GROUP,
            kinds={"image"},
            partitions_def=images_partitions,
            skippable=True,
        ),
        dg.AssetSpec(
            MESHES,
            description="A textured GLB per image from Hunyuan3D v2.1, stored in the mesh store "
            "with a PNG preview, prediction lineage and per-partition checks.",
            deps=[SOURCE_IMAGES],
            code_version=MESH_CODE_VERSION,
            group_name=GROUP,
            kinds={"glb"},
            partitions_def=images_partitions,
            skippable=True,
        ),
    ],
    check_specs=[*source_checks, *mesh_checks],
    partitions_def=images_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    # can_subset: either asset alone, and per-partition check results as optional outputs.
    can_subset=True,
    pool=WAVESPEED_POOL,
    retry_policy=dg.RetryPolicy(
        max_retries=3, delay=15, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
    ),
)
def image_meshes(
    context: dg.AssetExecutionContext,
    config: MeshesConfig,
    hunyuan3d: Hunyuan3DResource,
    images: ImagesResource,
    mesh_store: MeshStoreResource,
) -> Iterator:
    """Register images, then turn them into meshes, with up to `max_concurrency` predictions in
    flight. Identical pictures share one prediction; every prediction id is recorded before it
    is awaited, so retries and reruns resume instead of paying again; every attempt is logged."""
    failures: dict[str, str] = {}
    transient: set[str] = set()
    selected = context.selected_asset_keys
    if SOURCE_IMAGES in selected:
        keys = _keys_to_do(context, SOURCE_IMAGES)
        yield from _register_partitions(
            context, keys, images, hunyuan3d, mesh_store, failures, transient
        )
    if MESHES in selected:
        keys = _keys_to_do(context, MESHES)
        yield from _mesh_partitions(
            context, keys, config, hunyuan3d, images, mesh_store, failures, transient
        )
    if failures:
        summary = "; ".join(f"{k}: {v}" for k, v in sorted(failures.items()))
        message = f"{len(failures)} of {len(context.partition_keys)} image(s) failed: {summary}"
        if transient:
            # Rate limits, 5xx, timeouts: the RetryPolicy runs the step again, which skips the
            # partitions already reported and resumes recorded predictions (nothing paid twice).
            raise TransientFailure(message)
        raise dg.Failure(description=message, allow_retries=False)


class TransientFailure(Exception):
    """Some partitions failed for reasons worth retrying (rate limits, 5xx, timeouts)."""


def _keys_to_do(context: dg.AssetExecutionContext, asset_key: dg.AssetKey) -> list[str]:
    keys = list(context.partition_keys)
    if context.retry_number > 0:
        done = partitions_materialized_in_run(context.instance, context.run.run_id, asset_key)
        keys = [k for k in keys if k not in done]
    return keys


def _register_partitions(
    context: dg.AssetExecutionContext,
    keys: list[str],
    images: ImagesResource,
    hunyuan3d: Hunyuan3DResource,
    mesh_store: MeshStoreResource,
    failures: dict[str, str],
    transient: set[str],
) -> Iterator:
    source = images.open()
    log = mesh_store.prediction_log()
    run_id = context.run.run_id
    refs = {ref.partition_key: ref for ref in source.list_images()}
    for key in keys:
        if key not in refs:
            failures[key] = f"no such image in {source.uri}"
            log.append(
                [
                    error_log_row(
                        key, None, hunyuan3d.model, run_id, failures[key], MESH_CODE_VERSION
                    )
                ]
            )
            yield check_evaluation(
                SOURCE_IMAGES, SOURCE_CHECK, key, False, {"error": failures[key]}
            )

    for reg in _register(source, [refs[k] for k in keys if k in refs], hunyuan3d):
        key = reg.ref.partition_key
        if not reg.ok or reg.info is None:
            failures[key] = reg.error or "unknown error"
            if reg.transient:
                transient.add(key)
            # Never submitted, but logged: the audit trail shows every image that was tried.
            row = error_log_row(
                key, None, hunyuan3d.model, run_id, failures[key], MESH_CODE_VERSION
            )
            log.append([replace(row, image_uri=reg.ref.uri, image_sha256=reg.content_sha256)])
            evidence = {
                "error": reg.error,
                "sha256": reg.content_sha256,
                "fingerprint": reg.ref.fingerprint,
            }
            yield check_evaluation(SOURCE_IMAGES, SOURCE_CHECK, key, False, evidence)
            continue
        info = reg.info
        yield dg.AssetMaterialization(
            asset_key=SOURCE_IMAGES,
            partition=key,
            metadata={
                "sha256": info.sha256,
                "bytes": info.size,
                "width": info.width,
                "height": info.height,
                "format": info.format,
                "image_uri": reg.ref.uri,
                "relative_path": reg.ref.relative_path,
                "image_url": dg.MetadataValue.url(reg.image_url or ""),
                "url_expires_at": reg.url_expires_at.isoformat() if reg.url_expires_at else "",
                "fingerprint": reg.ref.fingerprint,
            },
            tags=source_version_tags(info.sha256, SOURCE_CODE_VERSION),
        )
        yield check_evaluation(SOURCE_IMAGES, SOURCE_CHECK, key, True, {"sha256": info.sha256})


def _register(
    source: ImageSource, refs: list[ImageRef], hunyuan3d: Hunyuan3DResource
) -> list[Registration]:
    """Hash, validate and upload (or presign) `refs`; uploads are cheap, so twice the
    prediction concurrency run at once."""

    async def register() -> list[Registration]:
        async with hunyuan3d.get_async_client() as client:
            return await register_images(source, refs, client, hunyuan3d.max_concurrency * 2)

    return asyncio.run(register())


def _mesh_partitions(
    context: dg.AssetExecutionContext,
    keys: list[str],
    config: MeshesConfig,
    hunyuan3d: Hunyuan3DResource,
    images: ImagesResource,
    mesh_store: MeshStoreResource,
    failures: dict[str, str],
    transient: set[str],
) -> Iterator:
    run_id = context.run.run_id
    keys = [k for k in keys if k not in failures]  # its image did not register: already failed
    sources = latest_materializations(context.instance, SOURCE_IMAGES, keys)
    store = mesh_store.open()
    log = PredictionLog(store)
    model = hunyuan3d.model

    requests: list[MeshRequest] = []
    for key in keys:
        src = sources.get(key)
        if src is None or not src.metadata.get("sha256"):
            failures[key] = (
                "source_images has no materialization for this image; materialize it first"
            )
            log.append([error_log_row(key, src, model, run_id, failures[key], MESH_CODE_VERSION)])
            continue
        requests.append(_mesh_request(key, src))
    stale = [r.partition_key for r in requests if _url_expired(sources[r.partition_key])]
    if stale:
        requests = _renew_urls(requests, stale, images, hunyuan3d, failures)
        for key in stale:
            if key in failures:
                log.append(
                    [
                        error_log_row(
                            key, sources[key], model, run_id, failures[key], MESH_CODE_VERSION
                        )
                    ]
                )

    policy = GenerationPolicy(
        model=model,
        nsfw_policy=config.nsfw_policy,
        reuse_identical_images=config.reuse_identical_images,
        preview_size=config.preview_size,
        run_id=run_id,
    )

    async def generate():
        async with hunyuan3d.get_async_client() as client:
            generator = MeshGenerator(client, store, policy, hunyuan3d.max_concurrency)
            async for outcome in generator.run(requests):
                yield outcome

    for outcome in iterate_async(generate):
        key = outcome.request.partition_key
        earlier = [
            replace(
                error_log_row(
                    key, sources[key], model, run_id, f"superseded: {old.error}", MESH_CODE_VERSION
                ),
                prediction_id=old.prediction_id,
                attempt=old.attempt,
            )
            for old in outcome.superseded
        ]
        log.append([*earlier, log_row(outcome, model, run_id, MESH_CODE_VERSION)])
        if outcome.status == "failed":
            failures[key] = outcome.error or "failed"
            if outcome.transient:
                transient.add(key)
            context.log.error(f"{key}: {outcome.error}")
        if outcome.mesh_uri is None:
            continue
        tags = derived_version_tags(MESH_CODE_VERSION, {SOURCE_IMAGES: sources[key]}, model)
        if outcome.status != "failed":
            yield dg.AssetMaterialization(
                asset_key=MESHES, partition=key, metadata=mesh_metadata(outcome, model), tags=tags
            )
        yield from mesh_check_evaluations(MESHES, outcome, config.min_faces, config.max_faces)


@dg.asset(
    deps=[MESHES],
    group_name=GROUP,
    kinds={"parquet"},
    code_version="1",
)
def prediction_log(mesh_store: MeshStoreResource) -> dg.MaterializeResult:
    """Every prediction attempt as parquet rows (append-only, hive-partitioned by date):
    timings, status, errors and NSFW flags, for auditing cost, speed and safety."""
    log = mesh_store.prediction_log()
    frame = log.read()
    stats = summarize(frame)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(frame),
            "location": dg.MetadataValue.path(log.location_uri),
            "summary": dg.MetadataValue.md(summary_markdown(stats)),
            "predictions": stats.get("total_predictions", 0),
            "nsfw_rate": float(stats.get("nsfw_rate", 0.0)),
        }
    )


def _mesh_request(key: str, src: PartitionMaterialization) -> MeshRequest:
    return MeshRequest(
        partition_key=key,
        image_uri=str(src.metadata.get("image_uri", "")),
        image_sha256=str(src.metadata["sha256"]),
        image_url=str(src.metadata.get("image_url", "")),
    )


def _url_expired(src: PartitionMaterialization) -> bool:
    expires = src.metadata.get("url_expires_at")
    if not expires:
        return True
    return datetime.fromisoformat(str(expires)) <= datetime.now(UTC)


def _renew_urls(
    requests: list[MeshRequest],
    stale: list[str],
    images: ImagesResource,
    hunyuan3d: Hunyuan3DResource,
    failures: dict,
) -> list[MeshRequest]:
    """Re-upload (or re-sign) images whose registered URL is past the provider's retention."""
    source = images.open()
    refs = {ref.partition_key: ref for ref in source.list_images()}

    found = [refs[k] for k in stale if k in refs]
    renewed = {reg.ref.partition_key: reg for reg in _register(source, found, hunyuan3d)}
    result = []
    for request in requests:
        if request.partition_key not in stale:
            result.append(request)
            continue
        reg = renewed.get(request.partition_key)
        if reg is None or not reg.ok or reg.info is None or not reg.image_url:
            failures[request.partition_key] = (
                f"{request.partition_key}: its upload expired and could not be renewed: "
                f"{reg.error if reg else 'image no longer in the source'}"
            )
        elif reg.info.sha256 != request.image_sha256:
            failures[request.partition_key] = (
                f"{request.partition_key}: the image changed since source_images was "
                "materialized; materialize source_images again"
            )
        else:
            result.append(
                MeshRequest(
                    request.partition_key, request.image_uri, request.image_sha256, reg.image_url
                )
            )
    return result
