"""The WaveSpeed v3 client for Hunyuan3D: submit an image, wait for the mesh, download the GLB.

No Dagster here. `protocol.py` is the sans-IO core (settings, `Prediction`, envelope parsing
into typed errors, retry and poll schedules); `http.py` holds its two thin httpx shells with
the same surface (`Hunyuan3DClient`, `AsyncHunyuan3DClient`); `errors.py` the typed errors.

    with Hunyuan3DClient(ClientSettings(api_key=key)) as client:
        result = client.generate(Path("chair.png"), Path("out/chair.glb"))
"""

from hunyuan_assets.client.errors import (
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
    UploadTooLargeError,
    WaveSpeedError,
)
from hunyuan_assets.client.http import AsyncHunyuan3DClient, Hunyuan3DClient
from hunyuan_assets.client.protocol import (
    DEFAULT_BASE_URL,
    DEFAULT_MODEL,
    MAX_UPLOAD_BYTES,
    TERMINAL_STATUSES,
    ClientSettings,
    GenerationResult,
    HttpRetryPolicy,
    PollPolicy,
    Prediction,
    Timeouts,
    backoff_delay,
    is_retryable,
    parse_envelope,
    parse_prediction,
    parse_retry_after,
    poll_intervals,
    retry_delay,
)

__all__ = [
    "DEFAULT_BASE_URL", "DEFAULT_MODEL", "MAX_UPLOAD_BYTES", "TERMINAL_STATUSES",
    "ApiConnectionError", "AsyncHunyuan3DClient", "AuthenticationError", "ClientSettings",
    "GenerationResult", "HttpRetryPolicy", "Hunyuan3DClient", "InvalidInputError",
    "OutputDownloadError", "OutputExpiredError", "OutputTooLargeError", "PollPolicy",
    "Prediction", "PredictionFailedError", "PredictionNotFoundError", "PredictionTimeoutError",
    "RateLimitedError", "ServerError", "SubmissionUncertainError", "Timeouts",
    "UploadTooLargeError", "WaveSpeedError", "backoff_delay", "is_retryable", "parse_envelope",
    "parse_prediction", "parse_retry_after", "poll_intervals", "retry_delay",
]  # fmt: skip
