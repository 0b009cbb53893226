"""The jobs a pipeline's sensor and schedules launch."""

from dataclasses import dataclass
from typing import Any

import dagster as dg

from hunyuan_assets.core.log import CompactionReport
from hunyuan_assets.integration.locations import MeshStoreResource
from hunyuan_assets.integration.settings import MeshDefsSettings

# What `dg.define_asset_job` returns (its class is not public API).
AssetJob = Any

# One compaction at a time per store: `PredictionLog.compact` recovers every journal it finds,
# including a running compaction's. dagster.yaml gives every pool one slot (`default_limit: 1`).
COMPACTION_POOL = "prediction_log_compaction"


@dataclass(frozen=True)
class MeshJobs:
    meshes: AssetJob
    prediction_log: AssetJob
    compact_log: dg.JobDefinition

    def all(self) -> list:
        return [self.meshes, self.prediction_log, self.compact_log]


def build_jobs(settings: MeshDefsSettings) -> MeshJobs:
    meshes = dg.define_asset_job(
        settings.job_name("meshes_job"),
        selection=[settings.source_images_key, settings.meshes_key],  # partitioned as they are
        description="Register images and generate their meshes; one run may cover many images.",
    )
    prediction_log = dg.define_asset_job(
        settings.job_name("prediction_log_job"),
        selection=[settings.prediction_log_key],
        description="Refresh the prediction log asset (rows, status, latency and spend summary).",
    )

    @dg.op(
        name=settings.job_name("compact_prediction_log"),
        description="Merge each day's small parquet log files into one, crash-safely.",
        pool=COMPACTION_POOL,
        required_resource_keys={settings.mesh_store_resource},
    )
    def compact_prediction_log(context: dg.OpExecutionContext) -> None:
        mesh_store: MeshStoreResource = getattr(context.resources, settings.mesh_store_resource)
        report = mesh_store.prediction_log().compact()
        context.log.info(
            f"compaction: {report.files_merged} file(s) -> {report.files_written}, "
            f"{report.rows_written} row(s), {report.duplicates_dropped} duplicate(s) dropped, "
            f"{report.journals_recovered} interrupted compaction(s) recovered"
        )
        context.add_output_metadata(compaction_metadata(report))

    @dg.job(
        name=settings.job_name("compact_log_job"),
        description="Compact the append-only parquet prediction log.",
    )
    def compact_log_job() -> None:
        compact_prediction_log()

    return MeshJobs(meshes, prediction_log, compact_log_job)


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
