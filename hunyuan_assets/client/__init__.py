"""The WaveSpeed v3 client for Hunyuan3D: submit an image, wait for the mesh, download the GLB.

No Dagster here. `protocol.py` is the sans-IO core (settings, `Prediction`, envelope parsing
into typed errors, retry decisions, the wait, listing and balance); `polling.py` the poll
schedules (adaptive, and learned from a `CompletionForecast`); `http.py` holds the two thin
httpx shells with the same surface (`Hunyuan3DClient`, `AsyncHunyuan3DClient`); `errors.py`
the typed errors.

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
from hunyuan_assets.client.polling import (
    CompletionForecast,
    PollObservation,
    PollPolicy,
    PollSchedule,
    forecast_completion,
    poll_intervals,
)
from hunyuan_assets.client.protocol import (
    DEFAULT_BASE_URL,
    DEFAULT_MODEL,
    MAX_UPLOAD_BYTES,
    TERMINAL_STATUSES,
    Balance,
    ClientSettings,
    GenerationResult,
    HttpRetryPolicy,
    Prediction,
    PredictionPage,
    Timeouts,
    backoff_delay,
    connections_for,
    is_retryable,
    parse_envelope,
    parse_prediction,
    parse_retry_after,
    retry_delay,
)

__all__ = [
    "DEFAULT_BASE_URL", "DEFAULT_MODEL", "MAX_UPLOAD_BYTES", "TERMINAL_STATUSES",
    "ApiConnectionError", "AsyncHunyuan3DClient", "AuthenticationError", "Balance",
    "ClientSettings", "CompletionForecast", "GenerationResult", "HttpRetryPolicy",
    "Hunyuan3DClient", "InvalidInputError", "OutputDownloadError", "OutputExpiredError",
    "OutputTooLargeError", "PollObservation", "PollPolicy", "PollSchedule", "Prediction",
    "PredictionFailedError", "PredictionNotFoundError", "PredictionPage",
    "PredictionTimeoutError", "RateLimitedError", "ServerError", "SubmissionUncertainError",
    "Timeouts", "UploadTooLargeError", "WaveSpeedError", "backoff_delay", "connections_for",
    "forecast_completion",
    "is_retryable", "parse_envelope", "parse_prediction", "parse_retry_after", "poll_intervals",
    "retry_delay",
]  # fmt: skip
