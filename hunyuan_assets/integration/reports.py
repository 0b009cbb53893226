"""What each partition reports: check evaluations, materialization metadata, log rows.

The `image_meshes` step (assets.py) reports every partition itself (see its docstring); these
functions turn one `MeshOutcome` into the events and rows it yields and appends.
"""

import base64
import io
from collections.abc import Iterator

import dagster as dg

from hunyuan_assets.core.log import PredictionLogRow
from hunyuan_assets.core.mesh_generation import MeshOutcome
from hunyuan_assets.integration.lineage import PartitionMaterialization

SOURCE_CHECK = "image_decodes"
CHECK_GLB_VALID = "glb_valid"
CHECK_PBR_TEXTURED = "pbr_textured"
CHECK_FACE_BUDGET = "face_budget"
CHECK_NOT_NSFW = "not_nsfw"
CHECK_CLOSED = "closed_surface"


def check_evaluation(
    asset: dg.AssetKey, name: str, key: str, passed: bool, metadata: dict
) -> dg.AssetCheckEvaluation:
    """One check's result for one partition (Dagster 1.13's AssetCheckResult has no partition)."""
    return dg.AssetCheckEvaluation(
        asset_key=asset,
        check_name=name,
        passed=passed,
        metadata={k: v for k, v in metadata.items() if v is not None},
        partition=key,
    )


def mesh_check_evaluations(
    asset: dg.AssetKey, outcome: MeshOutcome, min_faces: int, max_faces: int
) -> Iterator[dg.AssetCheckEvaluation]:
    key = outcome.request.partition_key

    def _check(name: str, key: str, passed: bool, metadata: dict) -> dg.AssetCheckEvaluation:
        return check_evaluation(asset, name, key, passed, metadata)

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
        parsed and min_faces <= faces <= max_faces,
        {"faces": faces, "min_faces": min_faces, "max_faces": max_faces},
    )
    yield _check(
        CHECK_NOT_NSFW,
        key,
        not outcome.nsfw,
        {"nsfw": outcome.nsfw, "quarantined": outcome.quarantined},
    )
    yield _check(
        CHECK_CLOSED, key, bool(d.get("watertight")), {"watertight": bool(d.get("watertight"))}
    )


def mesh_metadata(outcome: MeshOutcome, model: str) -> dict:
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
        metadata["preview"] = dg.MetadataValue.md(preview_markdown(outcome.preview_png))
    return {k: v for k, v in metadata.items() if v is not None}


def preview_markdown(png: bytes, edge: int = 192) -> str:
    """A small JPEG thumbnail inline: every event carries it, so it is kept to a few KB (the
    full-size PNG stays in the store beside the mesh)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        thumb = image.convert("RGB")
        thumb.thumbnail((edge, edge))
        buffer = io.BytesIO()
        thumb.save(buffer, format="JPEG", quality=82)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return f"![preview](data:image/jpeg;base64,{encoded})"


def log_row(outcome: MeshOutcome, model: str, run_id: str, code_version: str) -> PredictionLogRow:
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
        polls=prediction.polls if prediction else 0,
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
        code_version=code_version,
    )


def error_log_row(
    key: str,
    src: PartitionMaterialization | None,
    model: str,
    run_id: str,
    error: str,
    code_version: str,
) -> PredictionLogRow:
    """A failure before or without a prediction of this attempt (still one row in the log)."""
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
        code_version=code_version,
    )


def summary_markdown(stats: dict) -> str:
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
