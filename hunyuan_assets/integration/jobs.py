"""Jobs the sensor and schedules launch."""

import dagster as dg

from hunyuan_assets.core.log import CompactionReport
from hunyuan_assets.integration.assets import (
    MESHES,
    SOURCE_IMAGES,
    prediction_log,
)
from hunyuan_assets.integration.locations import MeshStoreResource

mesh_job = dg.define_asset_job(
    "meshes_job",
    selection=[SOURCE_IMAGES, MESHES],  # partitioned by images, as the assets are
    description="Register images and generate their meshes; one run may cover many images.",
)

prediction_log_job = dg.define_asset_job(
    "prediction_log_job",
    selection=[prediction_log],
    description="Refresh the prediction log asset (row counts, status and latency summary).",
)


# One compaction at a time: `PredictionLog.compact` recovers every journal it finds, including
# a running compaction's. dagster.yaml gives every pool one slot (`default_limit: 1`).
COMPACTION_POOL = "prediction_log_compaction"


@dg.op(
    description="Merge each day's small parquet log files into one, crash-safely.",
    pool=COMPACTION_POOL,
)
def compact_prediction_log(context: dg.OpExecutionContext, mesh_store: MeshStoreResource) -> None:
    report = mesh_store.prediction_log().compact()
    context.log.info(
        f"compaction: {report.files_merged} file(s) -> {report.files_written}, "
        f"{report.rows_written} row(s), {report.duplicates_dropped} duplicate(s) dropped, "
        f"{report.journals_recovered} interrupted compaction(s) recovered"
    )
    context.add_output_metadata(compaction_metadata(report))


@dg.job(description="Compact the append-only parquet prediction log.")
def compact_log_job() -> None:
    compact_prediction_log()


def compaction_metadata(report: CompactionReport) -> dict:
    """The report as run metadata: counts as numbers (plottable), days as lists."""
    return {
        "files_merged": report.files_merged,
        "files_written": report.files_written,
        "rows_written": report.rows_written,
        "duplicates_dropped": report.duplicates_dropped,
        "journals_recovered": report.journals_recovered,
        "days_compacted": dg.MetadataValue.json(list(report.partitions)),
        "days_skipped": dg.MetadataValue.json(list(report.partitions_skipped)),
    }
