"""Outcomes as prediction-log rows: one row per attempt, failures and reuses included.

No Dagster here: the generator appends these rows itself, before the Dagster layer reports the
outcome, so a prediction is in the log even if the process dies right after.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from hunyuan_assets.core.log import PredictionLogRow
from hunyuan_assets.core.registration import Registration

if TYPE_CHECKING:
    from hunyuan_assets.core.mesh_generation import MeshOutcome


@dataclass(frozen=True)
class RowContext:
    """What every row of one run says besides the outcome."""

    pipeline: str
    model: str
    run_id: str
    code_version: str


def registration_failure_row(context: RowContext, registration: Registration) -> PredictionLogRow:
    """An image that never reached the API (unreadable, not an image, upload refused)."""
    return PredictionLogRow(
        partition_key=registration.ref.partition_key,
        image_uri=registration.ref.uri,
        image_sha256=registration.content_sha256,
        model=context.model,
        status="failed",
        error=registration.error or "registration failed",
        error_type="RegistrationError",
        run_id=context.run_id,
        code_version=context.code_version,
        pipeline=context.pipeline,
        cost_usd=0.0,
    )


def failure_row(
    context: RowContext,
    partition_key: str,
    error: str,
    *,
    image_uri: str | None = None,
    image_sha256: str | None = None,
    error_type: str | None = None,
) -> PredictionLogRow:
    """A partition that failed before any prediction of this attempt (still one row)."""
    return PredictionLogRow(
        partition_key=partition_key,
        image_uri=image_uri,
        image_sha256=image_sha256,
        model=context.model,
        status="failed",
        error=error,
        error_type=error_type,
        run_id=context.run_id,
        code_version=context.code_version,
        pipeline=context.pipeline,
        cost_usd=0.0,
    )


def outcome_rows(context: RowContext, outcome: MeshOutcome) -> list[PredictionLogRow]:
    """The outcome's row, after one row per earlier prediction it replaced (superseded)."""
    request, prediction, d = outcome.request, outcome.prediction, outcome.details
    row = PredictionLogRow(
        partition_key=request.partition_key,
        image_uri=request.image_uri,
        image_sha256=request.image_sha256,
        prediction_id=(prediction.id if prediction else d.get("prediction_id")),
        model=context.model,
        status=outcome.status,
        error=outcome.error,
        error_type=outcome.error_type,
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
        run_id=context.run_id,
        reused_from=outcome.reused_from,
        quarantined=outcome.quarantined,
        code_version=context.code_version,
        pipeline=context.pipeline,
        cost_usd=outcome.cost_usd,
    )
    earlier = [
        replace(
            failure_row(
                context,
                request.partition_key,
                f"superseded: {old.error}",
                image_uri=request.image_uri,
                image_sha256=request.image_sha256,
                error_type="Superseded",
            ),
            prediction_id=old.prediction_id or None,
            attempt=old.attempt,
            cost_usd=old.cost_usd,
        )
        for old in outcome.superseded
    ]
    return [*earlier, row]
