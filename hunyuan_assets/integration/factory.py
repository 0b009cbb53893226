"""`build_mesh_defs`: one complete, independent images -> meshes pipeline as Definitions.

The Python way to adopt the integration; `MeshesComponent` (component.py) is the YAML way and
calls the same builder. Every name a pipeline adds to a code location starts with its `name`,
so pipelines for product photos, concept art and scans sit side by side in one project:

    defs = dg.Definitions.merge(
        build_mesh_defs("products", images="s3://photos/products", store="s3://meshes/shared"),
        build_mesh_defs("concepts", images="/data/concept_art", store="s3://meshes/shared"),
        my_other_defs,
    )

Pipelines that share a store share its prediction records and meshes, so the same picture is
never paid for twice across them; all of them share the `wavespeed` pool (the account's
concurrency limit is one number).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import dagster as dg
from dagster_aws.s3 import S3Resource

from hunyuan_assets.integration.assets import build_mesh_assets
from hunyuan_assets.integration.jobs import MeshJobs, build_jobs
from hunyuan_assets.integration.locations import ImagesResource, MeshStoreResource
from hunyuan_assets.integration.resource import Hunyuan3DResource, is_loopback
from hunyuan_assets.integration.run_health import build_dead_run_sensor
from hunyuan_assets.integration.schedules import build_compaction_schedule, build_refresh_schedule
from hunyuan_assets.integration.sensors import build_image_sensor
from hunyuan_assets.integration.settings import API_KEY_ENV, MeshDefsSettings


@dataclass(frozen=True)
class MeshPipeline:
    """Everything one pipeline defines; `definitions` is what a code location loads."""

    settings: MeshDefsSettings
    assets: list[dg.AssetsDefinition]
    jobs: MeshJobs
    sensors: list[dg.SensorDefinition]
    schedules: list[dg.ScheduleDefinition]
    resources: dict[str, Any]

    @property
    def definitions(self) -> dg.Definitions:
        return dg.Definitions(
            assets=self.assets,
            jobs=self.jobs.all(),
            sensors=self.sensors,
            schedules=self.schedules,
            resources=self.resources,
        )


def build_mesh_defs(name: str, images: str, store: str, **options: Any) -> dg.Definitions:
    """Assets, checks, jobs, sensor, schedules and resources of one images -> meshes pipeline.

    Args:
        name: prefixes everything: asset keys `[name, "source_images"]`, `[name, "meshes"]`,
            `[name, "prediction_log"]`, the partitions `<name>_images`, jobs, sensor,
            schedules, resource keys `<name>_hunyuan3d` / `_images` / `_mesh_store`; the group.
        images: a folder, or `s3://bucket/prefix`, of images (one partition each).
        store: a folder, or `s3://bucket/prefix`, for meshes, previews, records and the log.

    Options (keyword): `model_path` (default wavespeed-ai/hunyuan3d/v2.1), `base_url` (the API or
    the local emulator), `api_key` (default `EnvVar("WAVESPEED_API_KEY")`; not needed for a
    loopback emulator), `max_concurrency` (predictions in flight, default 2: WaveSpeed's
    Bronze tier), `max_submits_in_flight` (submits awaiting their answer at once, default 1:
    see Hunyuan3DResource), `nsfw_policy` ("keep", "quarantine" (default), "fail"),
    `reuse_identical_images` (default True), `min_faces`/`max_faces` (the face budget check),
    `preview_size` (px), `automation` (sensor and schedules running by default, default True),
    `sensor_interval_seconds` (30), `refresh_cron`, `compaction_cron`, `s3_endpoint_url`
    (MinIO, moto...), `price_per_prediction_usd` (no default: the price is not confirmed),
    `daily_budget_usd` (refuse submissions past it, per UTC day, across runs and processes).
    """
    return build_mesh_pipeline(name, images, store, **options).definitions


def build_mesh_pipeline(name: str, images: str, store: str, **options: Any) -> MeshPipeline:
    """As `build_mesh_defs`, keeping the parts at hand (the demo and the tests use them)."""
    unknown = set(options) - set(MeshDefsSettings.__dataclass_fields__) - {"_partitions"}
    if unknown:
        raise TypeError(f"build_mesh_defs got unknown option(s): {', '.join(sorted(unknown))}")
    settings = MeshDefsSettings(name=name, images=str(images), store=str(store), **options)
    jobs = build_jobs(settings)
    return MeshPipeline(
        settings=settings,
        assets=build_mesh_assets(settings),
        jobs=jobs,
        sensors=[
            build_image_sensor(settings, jobs.meshes),
            # Under the local run launcher a killed run would stay STARTED and hold back its
            # partitions' refreshes: this fails it, and run retries resume its predictions.
            build_dead_run_sensor(
                settings.job_name("dead_run_sensor"),
                [job.name for job in jobs.all()],
                default_status=dg.DefaultSensorStatus.RUNNING
                if settings.automation
                else dg.DefaultSensorStatus.STOPPED,
            ),
        ],
        schedules=[
            build_refresh_schedule(settings, jobs.meshes),
            build_compaction_schedule(settings, jobs.compact_log),
        ],
        resources=build_resources(settings),
    )


def build_resources(settings: MeshDefsSettings) -> dict[str, Any]:
    s3 = S3Resource(endpoint_url=settings.s3_endpoint_url)
    return {
        settings.hunyuan3d_resource: Hunyuan3DResource(
            api_key=_api_key(settings),
            base_url=settings.base_url,
            model=settings.model_path,
            max_concurrency=settings.max_concurrency,
            max_submits_in_flight=settings.max_submits_in_flight,
        ),
        settings.images_resource: ImagesResource(location=settings.images, s3=s3),
        settings.mesh_store_resource: MeshStoreResource(location=settings.store, s3=s3),
    }


def _api_key(settings: MeshDefsSettings) -> str:
    """The key as configured; the loopback emulator needs none, so an unset default is fine."""
    key = settings.api_key
    default = isinstance(key, dg.EnvVar) and key.env_var_name == API_KEY_ENV
    if default and is_loopback(settings.base_url) and not os.environ.get(API_KEY_ENV):
        return ""
    return key
