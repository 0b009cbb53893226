"""Wiring: environment -> resources -> Definitions. `dagster dev` and the CLI load `defs`.

Settings (environment variables):
  WAVESPEED_API_KEY        the API key (never needed for the loopback emulator)
  WAVESPEED_BASE_URL       API root; unset means https://api.wavespeed.ai
  HUNYUAN_IMAGES           folder or s3://bucket/prefix of images (default: bundled samples)
  HUNYUAN_STORE            folder or s3://bucket/prefix for meshes, previews, records, log
                           (default: $DAGSTER_HOME/hunyuan_store, else ./.hunyuan_store)
  HUNYUAN_S3_ENDPOINT_URL  S3 endpoint for a local/compatible S3 server (e.g. moto, MinIO)
  HUNYUAN_MAX_CONCURRENCY  predictions in flight per run (default 2: WaveSpeed's Bronze tier)
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from dagster_aws.s3 import S3Resource

from hunyuan_assets.client import DEFAULT_BASE_URL
from hunyuan_assets.core.sources import SAMPLES_DIR
from hunyuan_assets.integration.assets import image_meshes, prediction_log
from hunyuan_assets.integration.jobs import compact_log_job, mesh_job, prediction_log_job
from hunyuan_assets.integration.locations import ImagesResource, MeshStoreResource
from hunyuan_assets.integration.resource import API_KEY_ENV, Hunyuan3DResource, _is_loopback
from hunyuan_assets.integration.schedules import compaction_schedule, refresh_schedule
from hunyuan_assets.integration.sensors import image_sensor


def default_store_location() -> str:
    home = os.environ.get("DAGSTER_HOME")
    base = Path(home) if home else Path.cwd() / ".hunyuan_store"
    return str(base / "hunyuan_store") if home else str(base)


def build_resources(
    *,
    images: str | None = None,
    store: str | None = None,
    base_url: str | None = None,
    max_concurrency: int | None = None,
) -> dict:
    """Resources from arguments, falling back to the environment (see the module docstring)."""
    env = os.environ
    base_url = base_url or env.get("WAVESPEED_BASE_URL") or DEFAULT_BASE_URL
    s3 = S3Resource(endpoint_url=env.get("HUNYUAN_S3_ENDPOINT_URL") or None)
    # The loopback emulator accepts any key; everywhere else the key must come from the env.
    api_key = "" if _is_loopback(base_url) and not env.get(API_KEY_ENV) else dg.EnvVar(API_KEY_ENV)
    concurrency = max_concurrency or int(env.get("HUNYUAN_MAX_CONCURRENCY", "2"))
    return {
        "hunyuan3d": Hunyuan3DResource(
            api_key=api_key, base_url=base_url, max_concurrency=concurrency
        ),
        "images": ImagesResource(
            location=images or env.get("HUNYUAN_IMAGES") or str(SAMPLES_DIR), s3=s3
        ),
        "mesh_store": MeshStoreResource(
            location=store or env.get("HUNYUAN_STORE") or default_store_location(), s3=s3
        ),
    }


def build_definitions(**overrides) -> dg.Definitions:
    return dg.Definitions(
        assets=[image_meshes, prediction_log],
        jobs=[mesh_job, prediction_log_job, compact_log_job],
        sensors=[image_sensor],
        schedules=[refresh_schedule, compaction_schedule],
        resources=build_resources(**overrides),
    )


defs = build_definitions()
