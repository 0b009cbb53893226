"""Jobs the sensor and schedules launch."""


import dagster as dg

from hunyuan_assets.assets import MESHES, SOURCE_IMAGES, images_partitions, prediction_log
from hunyuan_assets.locations import MeshStoreResource

mesh_job = dg.define_asset_job(
    "meshes_job",
    selection=[SOURCE_IMAGES, MESHES],
    partitions_def=images_partitions,
    description="Register images and generate their meshes; one run may cover many images.",
)

prediction_log_job = dg.define_asset_job(
    "prediction_log_job",
    selection=[prediction_log],
    description="Refresh the prediction log asset (row counts, status and latency summary).",
)


@dg.op(description="Merge the day's small parquet log files into one, crash-safely.")
def compact_prediction_log(context: dg.OpExecutionContext, mesh_store: MeshStoreResource) -> None:
    report = mesh_store.prediction_log().compact()
    context.log.info(f"compaction: {report}")
    context.add_output_metadata({"report": dg.MetadataValue.json(_as_json(report))})


@dg.job(description="Compact the append-only parquet prediction log.")
def compact_log_job() -> None:
    compact_prediction_log()


def _as_json(report) -> dict:
    if hasattr(report, "__dataclass_fields__"):
        from dataclasses import asdict

        return {k: v if isinstance(v, int | float | str | bool | list | dict) else str(v)
                for k, v in asdict(report).items()}
    return {"report": str(report)}
