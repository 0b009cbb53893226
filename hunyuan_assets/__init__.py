"""hunyuan_assets: images -> textured 3D meshes with WaveSpeed AI's Hunyuan3D v2.1, in Dagster.

Layers, lowest first:
  client       WaveSpeed v3 over httpx (sync + async), Prediction, typed errors; no Dagster
  resource     Hunyuan3DResource: Dagster configuration -> client
  assets       source_images -> meshes -> prediction_log, partitioned by image
  sensors, schedules   new/changed images -> runs; refresh of failed/stale; log compaction
  definitions  the wiring `dagster dev` loads (`hunyuan_assets.definitions:defs`)

The public names below are imported on first use (PEP 562), so `hunyuan_assets.client` and
the emulator load in a fraction of a second without importing Dagster.
"""

import importlib
from typing import Any

_PUBLIC = {
    # the WaveSpeed client (no Dagster)
    "Hunyuan3DClient": "client",
    "AsyncHunyuan3DClient": "client",
    "ClientSettings": "client",
    "Timeouts": "client",
    "PollPolicy": "client",
    "HttpRetryPolicy": "client",
    "Prediction": "client",
    "GenerationResult": "client",
    "DEFAULT_BASE_URL": "client",
    "DEFAULT_MODEL": "client",
    # its errors
    "WaveSpeedError": "client",
    "AuthenticationError": "client",
    "RateLimitedError": "client",
    "InvalidInputError": "client",
    "UploadTooLargeError": "client",
    "PredictionNotFoundError": "client",
    "PredictionFailedError": "client",
    "PredictionTimeoutError": "client",
    "ServerError": "client",
    "ApiConnectionError": "client",
    "SubmissionUncertainError": "client",
    "OutputDownloadError": "client",
    "OutputExpiredError": "client",
    "OutputTooLargeError": "client",
    # Dagster resources
    "Hunyuan3DResource": "integration.resource",
    "ImagesResource": "integration.locations",
    "MeshStoreResource": "integration.locations",
    # the asset graph
    "images_partitions": "integration.assets",
    "image_meshes": "integration.assets",
    "prediction_log": "integration.assets",
    "SOURCE_IMAGES": "integration.assets",
    "MESHES": "integration.assets",
    "MeshesConfig": "integration.assets",
    # automation
    "image_sensor": "integration.sensors",
    "refresh_schedule": "integration.schedules",
    "compaction_schedule": "integration.schedules",
    # storage
    "PredictionLog": "core.log",
    "PredictionLogRow": "core.log",
    "MeshStore": "core.store",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'hunyuan_assets' has no attribute {name!r}")
    return getattr(importlib.import_module(f"hunyuan_assets.{module}"), name)
