"""hunyuan_assets: images -> textured 3D meshes with WaveSpeed AI's Hunyuan3D v2.1, in Dagster.

Layers, lowest first:
  client      WaveSpeed v3 over httpx (sync + async), Prediction, typed errors; no Dagster
  resource    Hunyuan3DResource: Dagster configuration -> client
  assets      source_images -> meshes -> prediction_log, partitioned by image
  sensors, schedules   new/changed images -> runs; refresh of failed/stale; log compaction
  definitions the wiring `dagster dev` loads (`hunyuan_assets.definitions:defs`)
"""

from hunyuan_assets.assets import (
    MESHES,
    SOURCE_IMAGES,
    MeshesConfig,
    image_meshes,
    images_partitions,
    prediction_log,
)
from hunyuan_assets.client import (
    DEFAULT_BASE_URL,
    DEFAULT_MODEL,
    AsyncHunyuan3DClient,
    ClientSettings,
    GenerationResult,
    HttpRetryPolicy,
    Hunyuan3DClient,
    PollPolicy,
    Prediction,
    Timeouts,
)
from hunyuan_assets.errors import (
    ApiConnectionError,
    AuthenticationError,
    InvalidInputError,
    OutputDownloadError,
    OutputExpiredError,
    OutputTooLargeError,
    PredictionFailedError,
    PredictionNotFoundError,
    PredictionTimeoutError,
    RateLimitedError,
    ServerError,
    SubmissionUncertainError,
    WaveSpeedError,
)
from hunyuan_assets.locations import ImagesResource, MeshStoreResource
from hunyuan_assets.log import PredictionLog, PredictionLogRow
from hunyuan_assets.resource import Hunyuan3DResource
from hunyuan_assets.schedules import compaction_schedule, refresh_schedule
from hunyuan_assets.sensors import image_sensor

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "MESHES",
    "SOURCE_IMAGES",
    "ApiConnectionError",
    "AsyncHunyuan3DClient",
    "AuthenticationError",
    "ClientSettings",
    "GenerationResult",
    "HttpRetryPolicy",
    "Hunyuan3DClient",
    "Hunyuan3DResource",
    "ImagesResource",
    "InvalidInputError",
    "MeshStoreResource",
    "MeshesConfig",
    "OutputDownloadError",
    "OutputExpiredError",
    "OutputTooLargeError",
    "PollPolicy",
    "Prediction",
    "PredictionFailedError",
    "PredictionLog",
    "PredictionLogRow",
    "PredictionNotFoundError",
    "PredictionTimeoutError",
    "RateLimitedError",
    "ServerError",
    "SubmissionUncertainError",
    "Timeouts",
    "WaveSpeedError",
    "compaction_schedule",
    "image_sensor",
    "image_meshes",
    "images_partitions",
    "prediction_log",
    "refresh_schedule",
]
