"""The package's own code location: one pipeline configured from the environment.

`dagster dev -w workspace.yaml` loads `defs`. In your own project, call `build_mesh_defs`
or add a `MeshesComponent` to `defs/` instead (see the README).

Settings (environment variables):
  HUNYUAN_NAME             the pipeline's name: asset keys hunyuan3d/meshes, ... (default hunyuan3d)
  WAVESPEED_API_KEY        the API key (never needed for the loopback emulator)
  WAVESPEED_BASE_URL       API root; unset means https://api.wavespeed.ai
  HUNYUAN_IMAGES           folder or s3://bucket/prefix of images (default: bundled samples)
  HUNYUAN_STORE            folder or s3://bucket/prefix for meshes, previews, records, log
                           (default: $DAGSTER_HOME/hunyuan_store, else ./.hunyuan_store)
  HUNYUAN_S3_ENDPOINT_URL  S3 endpoint for a local/compatible S3 server (e.g. moto, MinIO)
  HUNYUAN_MAX_CONCURRENCY  predictions in flight per run (default 2: WaveSpeed's Bronze tier)
  HUNYUAN_SENSOR_INTERVAL_SECONDS   how often the image sensor looks (default 30)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hunyuan_assets.client import DEFAULT_BASE_URL
from hunyuan_assets.core.sources import SAMPLES_DIR
from hunyuan_assets.integration.factory import build_mesh_defs

DEFAULT_NAME = "hunyuan3d"


def default_store_location() -> str:
    home = os.environ.get("DAGSTER_HOME")
    return str(Path(home) / "hunyuan_store") if home else str(Path.cwd() / ".hunyuan_store")


def settings_from_environment() -> dict[str, Any]:
    """`build_mesh_defs` arguments from the environment (see the module docstring)."""
    env = os.environ
    return {
        "name": env.get("HUNYUAN_NAME") or DEFAULT_NAME,
        "images": env.get("HUNYUAN_IMAGES") or str(SAMPLES_DIR),
        "store": env.get("HUNYUAN_STORE") or default_store_location(),
        "base_url": env.get("WAVESPEED_BASE_URL") or DEFAULT_BASE_URL,
        "max_concurrency": int(env.get("HUNYUAN_MAX_CONCURRENCY") or 2),
        "sensor_interval_seconds": int(env.get("HUNYUAN_SENSOR_INTERVAL_SECONDS") or 30),
        "s3_endpoint_url": env.get("HUNYUAN_S3_ENDPOINT_URL") or None,
    }


defs = build_mesh_defs(**settings_from_environment())
