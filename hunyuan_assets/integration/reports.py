"""What each partition reports: check evaluations and materialization metadata.

The `image_meshes` step (mesh_step.py) reports every partition itself; these functions turn one
registration or `MeshOutcome` into the events it yields (log rows are written by the core).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import dagster as dg

from hunyuan_assets.core.mesh_generation import MeshOutcome
from hunyuan_assets.core.registration import Registration

if TYPE_CHECKING:
    import pandas as pd

SOURCE_CHECK = "image_decodes"
CHECK_GLB_VALID = "glb_valid"
CHECK_PBR_TEXTURED = "pbr_textured"
CHECK_FACE_BUDGET = "face_budget"
CHECK_NOT_NSFW = "not_nsfw"
CHECK_CLOSED = "closed_surface"


def check_evaluation(
    asset: dg.AssetKey, name: str, key: str, passed: bool, metadata: dict, target: Any = None
) -> dg.AssetCheckEvaluation:
    """One check's result for one partition (Dagster 1.13's AssetCheckResult has no partition);
    `target` is the materialization it checked (`compat.latest_materialization_target`)."""
    return dg.AssetCheckEvaluation(
        asset_key=asset,
        check_name=name,
        passed=passed,
        metadata={k: v for k, v in metadata.items() if v is not None},
        partition=key,
        target_materialization_data=target,
    )


def mesh_check_evaluations(
    asset: dg.AssetKey, outcome: MeshOutcome, min_faces: int, max_faces: int, target: Any = None
) -> Iterator[dg.AssetCheckEvaluation]:
    key = outcome.request.partition_key

    def _check(name: str, key: str, passed: bool, metadata: dict) -> dg.AssetCheckEvaluation:
        return check_evaluation(asset, name, key, passed, metadata, target)

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
        # Set when the submit's answer was lost and the prediction was found in the list.
        "adopted_after_lost_answer": d.get("adopted"),
        # Usage, in the style of dagster-openai: what this partition cost the account.
        "wavespeed.predictions": 0 if outcome.status == "reused" else 1,
        "wavespeed.inference_seconds": round((d.get("inference_ms") or 0) / 1000, 3),
        "wavespeed.cost_usd": outcome.cost_usd,
    }
    if outcome.thumbnail_jpeg:
        metadata["preview"] = dg.MetadataValue.md(preview_markdown(outcome.thumbnail_jpeg))
    return {k: v for k, v in metadata.items() if v is not None}


def source_metadata(registration: Registration) -> dict:
    """What a registered image's materialization shows. A presigned S3 URL is a credential
    for the object: it is never shown, only where the image lives."""
    info, ref = registration.info, registration.ref
    assert info is not None
    metadata: dict = {
        "sha256": info.sha256,
        "bytes": info.size,
        "width": info.width,
        "height": info.height,
        "format": info.format,
        "image_uri": ref.uri,
        "relative_path": ref.relative_path,
        "fingerprint": ref.fingerprint,
    }
    if registration.image_url and not ref.uri.startswith("s3://"):
        metadata["image_url"] = dg.MetadataValue.url(registration.image_url)
    return metadata


def preview_markdown(thumbnail_jpeg: bytes) -> str:
    """The thumbnail inline: every event carries it, so it is a few KB (the full-size PNG
    stays in the store beside the mesh)."""
    return f"![preview](data:image/jpeg;base64,{base64.b64encode(thumbnail_jpeg).decode()})"


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


def spend_markdown(spend: pd.DataFrame) -> str:
    """Spend per day and model (a DataFrame from `log.spend_by_day_and_model`) as a table."""
    import pandas as pd

    lines = ["| date (UTC) | model | predictions | cost (USD) |", "| --- | --- | --- | --- |"]
    for row in spend.itertuples(index=False):
        cost = "unknown (no price set)" if pd.isna(row.cost_usd) else f"{row.cost_usd:.2f}"
        lines.append(f"| {row.date} | {row.model} | {row.predictions} | {cost} |")
    if len(lines) == 2:
        lines.append("| - | - | 0 | 0.00 |")
    return "\n".join(lines)


def spend_total_metadata(spend: pd.DataFrame) -> dict:
    """The log's total cost, absent while any paid prediction had no price: unknown is not 0."""
    if spend["cost_usd"].isna().any():
        return {}
    return {"cost_usd": float(spend["cost_usd"].sum()) if len(spend) else 0.0}
