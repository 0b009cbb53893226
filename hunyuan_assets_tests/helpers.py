"""Building a test pipeline, and reading what Dagster recorded per partition, for assertions."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from hunyuan_assets.integration.compat import (
    latest_materialization_target,
    partition_range_of,
    partition_status,
    recent_check_results,
    sensor_run_tags,
)
from hunyuan_assets.integration.factory import MeshPipeline, build_mesh_pipeline
from hunyuan_assets.integration.resource import Hunyuan3DResource
from hunyuan_assets.integration.sensors import SensorLimits, build_image_sensor

NAME = "test"  # every test pipeline's name, unless a test needs two
SOURCE_IMAGES = dg.AssetKey([NAME, "source_images"])
MESHES = dg.AssetKey([NAME, "meshes"])
PREDICTION_LOG = dg.AssetKey([NAME, "prediction_log"])
PARTITIONS = f"{NAME}_images"


def pipeline_for(emulator, images: Path | str, store: Path | str, **options) -> MeshPipeline:
    """A pipeline named NAME over `images` and `store`, talking to `emulator`."""
    options.setdefault("name", NAME)
    return build_mesh_pipeline(
        images=str(images), store=str(store), base_url=emulator.base_url, **options
    )


# Polls fast enough for the emulator (the resource's defaults follow the provider's advice).
FAST_POLL = {"poll_initial_interval": 0.05, "poll_max_interval": 0.2}


def with_hunyuan3d(pipeline: MeshPipeline, **fields) -> MeshPipeline:
    """The pipeline with its Hunyuan3DResource rebuilt with `fields` (polling, deadlines):
    options `build_mesh_defs` does not take, because production has no use for them."""
    key = pipeline.settings.hunyuan3d_resource
    old: Hunyuan3DResource = pipeline.resources[key]
    resource = Hunyuan3DResource(
        **{
            "api_key": old.api_key,
            "base_url": old.base_url,
            "model": old.model,
            "max_concurrency": old.max_concurrency,
            **fields,
        }
    )
    return dataclasses.replace(pipeline, resources={**pipeline.resources, key: resource})


def partition_keys(pipeline: MeshPipeline) -> list[str]:
    images = pipeline.resources[pipeline.settings.images_resource]
    return [ref.partition_key for ref in images.open().list_images()]


def mesh_store_of(pipeline: MeshPipeline):
    return pipeline.resources[pipeline.settings.mesh_store_resource].open()


def check_results(
    instance: dg.DagsterInstance, check_name: str, asset: dg.AssetKey = MESHES
) -> dict[str, bool]:
    """partition -> passed, for the latest evaluation of each partition."""
    found: dict[str, bool] = {}
    for key in instance.get_dynamic_partitions(f"{asset.path[0]}_images"):
        results = recent_check_results(instance, dg.AssetCheckKey(asset, check_name), key, 1)
        if results:
            found[key] = results[0].passed
    return found


def failed_partitions(instance: dg.DagsterInstance, asset: dg.AssetKey = MESHES) -> set[str]:
    partitions = dg.DynamicPartitionsDefinition(name=f"{asset.path[0]}_images")
    return set(partition_status(instance, asset, partitions).failed)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def requested_keys(request: dg.RunRequest, partitions: list[str]) -> list[str]:
    """The partitions a run request covers: its partition key, or its partition range."""
    if request.partition_key:
        return [request.partition_key]
    span = partition_range_of(request.tags)
    assert span is not None, f"a request with neither a partition nor a range: {request}"
    start, end = partitions.index(span[0]), partitions.index(span[1])
    return partitions[start : end + 1]


@dataclass
class Deployment:
    """One pipeline's definitions against a real instance, driven tick by tick."""

    instance: dg.DagsterInstance
    pipeline: MeshPipeline
    defs: dg.Definitions = field(init=False)

    def __post_init__(self) -> None:
        self.defs = self.pipeline.definitions

    @classmethod
    def of(cls, instance, emulator, images: str | Path, store: str | Path, **options) -> Deployment:
        return cls(instance, pipeline_for(emulator, images, store, **options))

    @property
    def settings(self):
        return self.pipeline.settings

    @property
    def resources(self) -> dict:
        return dict(self.pipeline.resources)

    @property
    def sensor(self) -> dg.SensorDefinition:
        """The pipeline's image sensor."""
        return self.defs.resolve_sensor_def(self.settings.job_name("image_sensor"))

    def schedule(self, what: str) -> dg.ScheduleDefinition:
        """The pipeline's `refresh` or `compaction` schedule."""
        return self.defs.resolve_schedule_def(self.settings.job_name(f"{what}_schedule"))

    def sensor_with(self, limits: SensorLimits) -> dg.SensorDefinition:
        """The pipeline's image sensor with other limits (same name, job and resources)."""
        return build_image_sensor(self.settings, self.pipeline.jobs.meshes, limits)

    def tick(self, cursor: str | None, sensor: dg.SensorDefinition | None = None):
        """Evaluate one tick as the daemon does (Dagster resolves and checks run requests),
        then apply its add requests as the daemon would."""
        # instance_ref too: without it Dagster cannot load dynamic partitions to check a
        # RunRequest's partition_key ("The instance is not available to load partitions").
        with dg.build_sensor_context(
            instance=self.instance,
            instance_ref=self.instance.get_ref(),
            cursor=cursor,
            resources=self.resources,
            definitions=self.defs,
        ) as context:
            data = (sensor or self.sensor).evaluate_tick(context)
        assert data.skip_message is None or not data.run_requests
        for request in data.dynamic_partitions_requests:
            assert isinstance(request, dg.AddDynamicPartitionsRequest), request  # never deletes
            assert request.partitions_def_name == self.settings.partitions
            self.instance.add_dynamic_partitions(
                request.partitions_def_name, request.partition_keys
            )
        return data

    def execute(self, request: dg.RunRequest, instigator: str | None = None):
        """Run what a request asks for, in process, tagged as the daemon tags it (as launched
        by `instigator`, default the image sensor)."""
        job = self.defs.resolve_job_def(self.pipeline.jobs.meshes.name)
        return job.execute_in_process(
            instance=self.instance,
            partition_key=request.partition_key,
            tags=sensor_run_tags(request, instigator or self.sensor.name),
            raise_on_error=False,
        )

    def partitions(self) -> list[str]:
        return self.instance.get_dynamic_partitions(self.settings.partitions)


def assert_target_is_the_latest_record(
    instance: dg.DagsterInstance, asset: dg.AssetKey, partition: str
) -> None:
    """`latest_materialization_target` (one query) names the partition's latest
    materialization as its whole record does: storage id, run, timestamp to the microsecond."""
    target = latest_materialization_target(instance, asset, partition)
    [record] = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset, asset_partitions=[partition]), limit=1
    ).records
    assert target is not None
    assert (target.storage_id, target.run_id) == (record.storage_id, record.run_id)
    assert abs(target.timestamp - record.timestamp) <= 1e-6
