"""Typed errors of the WaveSpeed client.

Every error carries what a caller needs to decide what to do next: the prediction id (so a
running task can be resumed instead of paid for twice), the HTTP status, the API's own
`code`, and `transient` (worth trying again later). Messages never contain the API key.
All names are re-exported by `hunyuan_assets.client`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hunyuan_assets.client.protocol import Prediction

__all__ = [
    "ApiConnectionError",
    "AuthenticationError",
    "InvalidInputError",
    "OutputDownloadError",
    "OutputExpiredError",
    "OutputTooLargeError",
    "PredictionFailedError",
    "PredictionNotFoundError",
    "PredictionTimeoutError",
    "RateLimitedError",
    "ServerError",
    "SubmissionUncertainError",
    "UploadTooLargeError",
    "WaveSpeedError",
]


def _restore(cls: type[WaveSpeedError], message: str, state: dict[str, Any]) -> WaveSpeedError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class WaveSpeedError(Exception):
    """Base class: something went wrong talking to WaveSpeed."""

    transient_default = False

    def __init__(
        self,
        message: str,
        *,
        prediction_id: str | None = None,
        status_code: int | None = None,
        api_code: int | None = None,
        transient: bool | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.prediction_id = prediction_id
        self.status_code = status_code
        self.api_code = api_code
        self.transient = self.transient_default if transient is None else transient
        #: Seconds the server asked us to wait (Retry-After), where it said so.
        self.retry_after = retry_after
        #: How many HTTP attempts were made before this error was raised.
        self.attempts = 1

    def __str__(self) -> str:
        if self.attempts > 1:
            return f"{self.message} (gave up after {self.attempts} attempts)"
        return self.message

    def __repr__(self) -> str:
        parts = [repr(str(self))]
        for name in ("prediction_id", "status_code", "api_code"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructor arguments defeat Exception's default pickling, and
        # Dagster's multiprocess executor may need to move these between processes.
        return (_restore, (type(self), self.message, dict(self.__dict__)))


class AuthenticationError(WaveSpeedError):
    """HTTP 401/403 from the API: the key is missing, wrong or not allowed to do this."""


class RateLimitedError(WaveSpeedError):
    """HTTP 429: too many requests for the account tier; `retry_after` says how long to wait."""

    transient_default = True


class InvalidInputError(WaveSpeedError):
    """The API refused the request as given (4xx or code 1xxx): fix the input, do not retry."""


class UploadTooLargeError(InvalidInputError):
    """The file is over the provider's upload limit; refused before any byte is sent."""


class PredictionNotFoundError(WaveSpeedError):
    """The result endpoint does not know this id (wrong id, other account, or past retention)."""


class PredictionFailedError(WaveSpeedError):
    """The task ended failed, cancelled, timed out or deleted; `.prediction` has the details."""

    def __init__(self, message: str, *, prediction: Prediction, **kwargs: Any) -> None:
        kwargs.setdefault("prediction_id", prediction.id)
        super().__init__(message, **kwargs)
        self.prediction = prediction
        self.error = prediction.error


class PredictionTimeoutError(WaveSpeedError):
    """We stopped waiting; the task goes on at WaveSpeed. Resume with `wait(prediction_id)`."""

    transient_default = True

    def __init__(
        self,
        message: str,
        *,
        prediction_id: str,
        status: str | None,
        prediction: Prediction | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, prediction_id=prediction_id, **kwargs)
        self.status = status
        self.prediction = prediction


class ServerError(WaveSpeedError):
    """5xx (or a 5xxx `code`) from the API, still failing after retries."""

    transient_default = True


class ApiConnectionError(WaveSpeedError):
    """The API could not be reached (or did not answer in time), still after retries."""

    transient_default = True

    def __init__(self, message: str, *, request_sent: bool = True, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        #: False when the failure happened before any request byte left (safe to resend).
        self.request_sent = request_sent


class SubmissionUncertainError(WaveSpeedError):
    """A submit was sent but no answer came back: the task may exist and be billed.

    Never retried automatically (`transient` is False on purpose, so generic retry
    wrappers do not resubmit either). Check the WaveSpeed dashboard or the predictions
    list before submitting the same image again.
    """


class OutputDownloadError(WaveSpeedError):
    """Fetching an output file failed; `.url` is the output URL."""

    def __init__(self, message: str, *, url: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.url = url


class OutputExpiredError(OutputDownloadError):
    """The output URL answers 403/404/410: it expired (outputs are kept 7 days at most)."""


class OutputTooLargeError(OutputDownloadError):
    """The output is bigger than the allowed `max_bytes`; nothing was kept on disk."""

    def __init__(self, message: str, *, url: str, max_bytes: int, **kwargs: Any) -> None:
        super().__init__(message, url=url, **kwargs)
        self.max_bytes = max_bytes
