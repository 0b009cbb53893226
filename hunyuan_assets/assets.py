"""The asset graph: source_images -> meshes -> prediction_log, one partition per image.

Both partitioned assets run many partitions in one step (single-run backfills) and report each
partition's materialization and checks themselves, so one bad image fails only its partition:
the others are stored, logged and shown as materialized, and the step then fails naming the
bad ones (Dagster marks exactly those partitions failed).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Literal

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluation

from hunyuan_assets.lineage import (
    PartitionMaterialization,
    derived_version_tags,
    latest_materializations,
    partitions_materialized_in_run,
    source_version_tags,
)
from hunyuan_assets.locations import ImagesResource, MeshStoreResource
from hunyuan_assets.log import PredictionLog, PredictionLogRow, summarize
from hunyuan_assets.mesh_generation import (
    GenerationPolicy,
    MeshGenerator,
    MeshOutcome,
    MeshRequest,
)
from hunyuan_assets.registration import Registration, register_images
from hunyuan_assets.resource import Hunyuan3DResource
from hunyuan_assets.threads import iterate_async

images_partitions = dg.DynamicPartitionsDefinition(name="images")

SOURCE_CODE_VERSION = "1"
# Bump when the way meshes are produced changes; lineage then shows meshes stale by code.
MESH_CODE_VERSION = "1"
GROUP = "hunyuan3d"
WAVESPEED_POOL = "wavespeed"

SOURCE_CHECK = "image_decodes"
CHECK_GLB_VALID = "glb_valid"
CHECK_PBR_TEXTURED = "pbr_textured"
CHECK_FACE_BUDGET = "face_budget"
CHECK_NOT_NSFW = "not_nsfw"
CHECK_CLOSED = "closed_surface"


class MeshesConfig(dg.Config):
    nsfw_policy: Literal["keep", "quarantine", "fail"] = dg.Field(
        default="quarantine",
        description="What to do with a mesh the provider flags NSFW: keep it, store it under "
        "quarantine/ (default), or store it under quarantine/ and fail the partition.",
    )
    reuse_identical_images: bool = dg.Field(
        default=True,
        description="Images with the same sha256 share one prediction and one stored mesh.",
    )
    max_faces: int = dg.Field(default=200_000, description="Face budget checked per mesh.")
    min_faces: int = dg.Field(default=100, description="Fewer faces than this fails the budget.")
    preview_size: int = dg.Field(default=256, description="Preview PNG edge in pixels.")


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


@dg.asset(
    partitions_def=images_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    output_required=False,
    code_version=SOURCE_CODE_VERSION,
    check_specs=source_checks,
    group_name=GROUP,
    kinds={"image"},
)
def source_images(
    context: dg.AssetExecutionContext, images: ImagesResource, hunyuan3d: Hunyuan3DResource
) -> Iterator:
    """One image per partition: sha256 (its data version), size, format, and a URL the API can
    fetch (a WaveSpeed media upload for local files, a presigned URL for S3)."""
    source = images.open()
    refs = {ref.partition_key: ref for ref in source.list_images()}
    keys = list(context.partition_keys)
    missing = [k for k in keys if k not in refs]

    async def register() -> list[Registration]:
        async with hunyuan3d.get_async_client() as client:
            found = [refs[k] for k in keys if k in refs]
            return await register_images(source, found, client, hunyuan3d.max_concurrency * 2)

    failed: dict[str, str] = {k: f"{k}: no such image in {source.uri}" for k in missing}
    for reg in asyncio.run(register()):
        key = reg.ref.partition_key
        if not reg.ok or reg.info is None:
            failed[key] = reg.error or "unknown error"
            yield _check(SOURCE_CHECK, key, False, {"error": reg.error}, asset="source_images")
            continue
        info = reg.info
        yield dg.AssetMaterialization(
            asset_key=context.asset_key,
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
        yield _check(SOURCE_CHECK, key, True, {"sha256": info.sha256}, asset="source_images")
    if failed:
        # Not raised: a bad image must not stop the meshes step for the good ones in this run.
        context.log.error(
            f"{len(failed)} image(s) could not be registered: "
            + "; ".join(f"{k}: {v}" for k, v in sorted(failed.items()))
        )


@dg.asset(
    partitions_def=images_partitions,
    deps=[source_images],
    backfill_policy=dg.BackfillPolicy.single_run(),
    output_required=False,
    code_version=MESH_CODE_VERSION,
    check_specs=mesh_checks,
    pool=WAVESPEED_POOL,
    retry_policy=dg.RetryPolicy(
        max_retries=3, delay=15, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
    ),
    group_name=GROUP,
    kinds={"glb"},
)
def meshes(
    context: dg.AssetExecutionContext,
    config: MeshesConfig,
    hunyuan3d: Hunyuan3DResource,
    images: ImagesResource,
    mesh_store: MeshStoreResource,
) -> Iterator:
    """A textured GLB per image from Hunyuan3D v2.1, stored in the mesh store with a preview.

    Up to `max_concurrency` predictions are in flight at once; identical pictures share one
    prediction; every prediction id is recorded before it is awaited, so retries and reruns
    resume instead of paying again. Each attempt is a row in the prediction log."""
    instance = context.instance
    run_id = context.run.run_id
    keys = list(context.partition_keys)
    if context.retry_number > 0:
        done = partitions_materialized_in_run(instance, run_id, context.asset_key)
        keys = [k for k in keys if k not in done]
    sources = latest_materializations(instance, source_images.key, keys)
    store = mesh_store.open()
    log = PredictionLog(store)
    model = hunyuan3d.model

    failures: dict[str, MeshOutcome | str] = {}
    requests: list[MeshRequest] = []
    stale_urls = []
    for key in keys:
        src = sources.get(key)
        if src is None or not src.metadata.get("sha256"):
            failures[key] = (
                f"{key}: source_images has no valid materialization; the image is missing "
                "or could not be decoded (see the source_images image_decodes check)"
            )
            continue
        if _url_expired(src):
            stale_urls.append(key)
        requests.append(_mesh_request(key, src))
    if stale_urls:
        requests = _renew_urls(requests, stale_urls, images, hunyuan3d, failures)

    for key, reason in list(failures.items()):
        log.append([_log_row_for_error(key, sources.get(key), model, run_id, str(reason))])

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
        log.append([_log_row(outcome, model, run_id)])
        if outcome.status == "failed":
            failures[key] = outcome
            context.log.error(f"{key}: {outcome.error}")
        if outcome.mesh_uri is None:
            continue
        tags = derived_version_tags(
            MESH_CODE_VERSION, {source_images.key: sources[key]}, model
        )
        yield dg.AssetMaterialization(
            asset_key=context.asset_key,
            partition=key,
            metadata=_mesh_metadata(outcome, model),
            tags=tags,
        )
        yield from _mesh_check_evaluations(outcome, config)

    if failures:
        summary = "; ".join(
            f"{k}: {v.error if isinstance(v, MeshOutcome) else v}" for k, v in sorted(failures.items())
        )
        message = f"{len(failures)} of {len(context.partition_keys)} partition(s) failed: {summary}"
        transient = [v for v in failures.values() if isinstance(v, MeshOutcome) and v.transient]
        if transient:
            # Transient failures (rate limits, 5xx, timeouts) go through the RetryPolicy;
            # recorded prediction ids make the retry resume rather than pay again.
            raise RuntimeError(message)
        raise dg.Failure(description=message, allow_retries=False)


@dg.asset(
    deps=[meshes],
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
            "summary": dg.MetadataValue.md(_summary_markdown(stats)),
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

    async def renew() -> list[Registration]:
        async with hunyuan3d.get_async_client() as client:
            found = [refs[k] for k in stale if k in refs]
            return await register_images(source, found, client, hunyuan3d.max_concurrency * 2)

    renewed = {reg.ref.partition_key: reg for reg in asyncio.run(renew())}
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
                MeshRequest(request.partition_key, request.image_uri, request.image_sha256, reg.image_url)
            )
    return result


def _check(
    name: str, key: str, passed: bool, metadata: dict, *, asset: str = "meshes"
) -> AssetCheckEvaluation:
    return AssetCheckEvaluation(
        asset_key=dg.AssetKey(asset),
        check_name=name,
        passed=passed,
        metadata={k: v for k, v in metadata.items() if v is not None},
        partition=key,
    )


def _mesh_check_evaluations(outcome: MeshOutcome, config: MeshesConfig) -> Iterator:
    key = outcome.request.partition_key
    d = outcome.details
    parsed = d.get("faces") is not None
    faces = int(d.get("faces") or 0)
    yield _check(
        CHECK_GLB_VALID, key, parsed and faces > 0, {"faces": faces, "error": d.get("mesh_error")}
    )
    textured = bool(d.get("has_pbr_material")) and bool(d.get("has_base_color_texture"))
    yield _check(
        CHECK_PBR_TEXTURED,
        key,
        textured,
        {
            "has_pbr_material": bool(d.get("has_pbr_material")),
            "has_base_color_texture": bool(d.get("has_base_color_texture")),
        },
    )
    yield _check(
        CHECK_FACE_BUDGET,
        key,
        parsed and config.min_faces <= faces <= config.max_faces,
        {"faces": faces, "min_faces": config.min_faces, "max_faces": config.max_faces},
    )
    yield _check(
        CHECK_NOT_NSFW, key, not outcome.nsfw, {"nsfw": outcome.nsfw, "quarantined": outcome.quarantined}
    )
    yield _check(CHECK_CLOSED, key, bool(d.get("watertight")), {"watertight": bool(d.get("watertight"))})


def _mesh_metadata(outcome: MeshOutcome, model: str) -> dict:
    d = outcome.details
    metadata: dict = {
        "prediction_id": d.get("prediction_id") or "",
        "model": model,
        "status": outcome.status,
        "input_sha256": outcome.request.image_sha256,
        "image_uri": outcome.request.image_uri,
        "mesh_uri": dg.MetadataValue.path(outcome.mesh_uri or ""),
        "preview_uri": dg.MetadataValue.path(outcome.preview_uri or ""),
        "output_url": dg.MetadataValue.url(d.get("output_url") or ""),
        "inference_ms": d.get("inference_ms"),
        "wall_ms": d.get("wall_ms"),
        "polls": d.get("polls"),
        "has_nsfw_contents": dg.MetadataValue.json(list(d.get("has_nsfw_contents") or [])),
        "nsfw": outcome.nsfw,
        "quarantined": outcome.quarantined,
        "vertices": d.get("vertices"),
        "faces": d.get("faces"),
        "materials": d.get("materials"),
        "textures": d.get("textures"),
        "has_pbr_material": d.get("has_pbr_material"),
        "has_base_color_texture": d.get("has_base_color_texture"),
        "file_bytes": d.get("file_bytes"),
        "attempt": outcome.attempt,
        "resumed_prediction": outcome.resumed,
        "reused_from": outcome.reused_from or "",
    }
    if outcome.preview_png:
        encoded = base64.b64encode(outcome.preview_png).decode()
        metadata["preview"] = dg.MetadataValue.md(f"![preview](data:image/png;base64,{encoded})")
    return {k: v for k, v in metadata.items() if v is not None}


def _log_row(outcome: MeshOutcome, model: str, run_id: str) -> PredictionLogRow:
    prediction = outcome.prediction
    d = outcome.details
    return PredictionLogRow(
        partition_key=outcome.request.partition_key,
        image_uri=outcome.request.image_uri,
        image_sha256=outcome.request.image_sha256,
        prediction_id=(prediction.id if prediction else d.get("prediction_id")),
        model=model,
        status=outcome.status,
        error=outcome.error,
        submitted_at=prediction.submitted_at if prediction else None,
        completed_at=prediction.completed_at if prediction else None,
        inference_ms=prediction.inference_ms if prediction else None,
        wall_ms=prediction.wall_ms if prediction else None,
        polls=prediction.polls if prediction else None,
        attempt=outcome.attempt,
        has_nsfw_contents=list(prediction.has_nsfw_contents) if prediction else [],
        nsfw=outcome.nsfw,
        output_url=(prediction.outputs[0] if prediction and prediction.outputs else None),
        mesh_uri=outcome.mesh_uri,
        mesh_bytes=d.get("file_bytes"),
        vertices=d.get("vertices"),
        faces=d.get("faces"),
        run_id=run_id,
        reused_from=outcome.reused_from,
        quarantined=outcome.quarantined,
        code_version=MESH_CODE_VERSION,
    )


def _log_row_for_error(
    key: str, src: PartitionMaterialization | None, model: str, run_id: str, error: str
) -> PredictionLogRow:
    meta = src.metadata if src else {}
    return PredictionLogRow(
        partition_key=key,
        image_uri=str(meta.get("image_uri") or "") or None,
        image_sha256=str(meta.get("sha256") or "") or None,
        prediction_id=None,
        model=model,
        status="failed",
        error=error,
        run_id=run_id,
        code_version=MESH_CODE_VERSION,
    )


def _summary_markdown(stats: dict) -> str:
    lines = ["| measure | value |", "| --- | --- |"]
    for status, count in sorted((stats.get("counts_by_status") or {}).items()):
        lines.append(f"| status: {status} | {count} |")
    for name in (
        "total_predictions",
        "distinct_images",
        "inference_ms_p50",
        "inference_ms_p95",
        "wall_ms_p50",
        "wall_ms_p95",
        "nsfw_rate",
    ):
        if name in stats:
            lines.append(f"| {name} | {stats[name]} |")
    return "\n".join(lines)
