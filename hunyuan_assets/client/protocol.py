"""The WaveSpeed v3 protocol, without I/O: settings, the Prediction value, envelope parsing
into typed errors, retry decisions and backoff, the wait (its schedule from `polling.py`, its
deadline, what it observed), listing predictions page by page and reading the balance.

`http.py` wraps this core in two thin I/O shells (sync and async) with the same surface, so
both behave identically by construction. No Dagster here.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import mimetypes
import random
import re
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urljoin, urlsplit

import httpx

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
from hunyuan_assets.client.polling import (
    CompletionForecast,
    PollObservation,
    PollPolicy,
    PollSchedule,
)
from hunyuan_assets.client.polling import poll_intervals as poll_intervals  # re-exported

# Retries are logged by the shells under this name; the core only decides.
logger = logging.getLogger("hunyuan_assets.client")

DEFAULT_BASE_URL = "https://api.wavespeed.ai"
DEFAULT_MODEL = "wavespeed-ai/hunyuan3d/v2.1"
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "timeout", "deleted"})
MAX_UPLOAD_BYTES = 200 * 2**20  # the provider's documented upload limit
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# A 429/503 is answered before the task is created; any other failure of a sent submit may not be.
SUBMIT_RETRYABLE_STATUSES = frozenset({429, 503})
_TRANSIENT_API_CODES = frozenset({429, 500, 502, 503, 504, 5000, 5003, 5004})
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_BROKEN = (httpx.UnsupportedProtocol, httpx.InvalidURL, httpx.LocalProtocolError)
_WEB_SCHEMES = ("http", "https")  # never file:, ftp:, data: ... (images and outputs)
#: Statuses the predictions list documents as filters.
LIST_STATUSES = frozenset({"completed", "failed", "processing"})
MAX_PAGE_SIZE = 100
# Both documented balance routes; the first that exists is remembered per client.
BALANCE_PATHS = ("balance", "account/balance")
_CHUNK = 1 << 20
CallKind = Literal["submit", "read", "upload", "download"]


@dataclass(frozen=True)
class Timeouts:
    """Seconds; `connect` applies to every call, the others are read/write per call kind."""

    connect: float = 10.0
    read: float = 30.0
    submit: float = 60.0
    upload: float = 120.0
    download: float = 300.0


@dataclass(frozen=True)
class HttpRetryPolicy:
    """Exponential backoff `base_delay * 2**(n-1)`, +-`jitter` fraction, capped at `max_delay`.

    A Retry-After longer than `max_delay` ends retrying with `RateLimitedError.retry_after`
    set, so a scheduler can back off instead of blocking a worker.

    8 attempts by default: the delays (0.5 s doubling to the 30 s cap) then span about a
    minute, so a provider or proxy blip of that length is ridden out inside the request. With
    6 (15 s) every request in flight during a longer blip failed its partition, and the step
    retry that follows costs a 15 s+ wait and a re-run. With 30% of requests failing, 6 left
    1 request in ~1,400 failed (0.3**6): 2 of 6 demos over 40 images needed a step retry
    (test_faults.py's setting); 8 leave 1 in ~15,000.
    """

    max_attempts: int = 8
    base_delay: float = 0.5
    max_delay: float = 30.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("HttpRetryPolicy needs max_attempts >= 1 and delays >= 0")
        if not 0 <= self.jitter <= 1:
            raise ValueError("HttpRetryPolicy.jitter is a fraction between 0 and 1")


@dataclass(frozen=True)
class ClientSettings:
    """Everything a client needs. `api_key` is kept out of repr/str."""

    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    model: str = DEFAULT_MODEL
    timeouts: Timeouts = field(default_factory=Timeouts)
    poll: PollPolicy = field(default_factory=PollPolicy)
    retry: HttpRetryPolicy = field(default_factory=HttpRetryPolicy)
    max_download_bytes: int = 512 * 2**20
    # Connections kept open to the API (and upload/output hosts). Requests beyond it queue in
    # httpcore's pool, whose bookkeeping grows with the queue (encode/httpcore#1035): with
    # hundreds of predictions in flight that held the event loop for seconds. Size it to the
    # requests that can be in flight at once, e.g. `connections_for(max_concurrency)`.
    max_connections: int = 100

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ValueError("ClientSettings.max_connections must be at least 1")
        key = (self.api_key or "").strip()  # a key pasted with a newline breaks the header
        if not key:
            raise ValueError("The WaveSpeed API key is empty: set WAVESPEED_API_KEY.")
        if not (key.isascii() and key.isprintable()) or " " in key:
            # Caught here because httpx's own error for a bad header value would quote the key.
            raise ValueError(
                "The WaveSpeed API key has characters a header cannot carry (spaces, control "
                "or non-ASCII characters): check WAVESPEED_API_KEY."
            )
        object.__setattr__(self, "api_key", key)
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        object.__setattr__(self, "model", _model_path(self.model))


POOL_SIZE = 32  # connections per httpx pool (see `_Protocol.pools`)


def connections_for(max_concurrency: int) -> int:
    """Connections for `max_concurrency` predictions in flight: one poll each, plus the
    uploads and downloads running beside them (at most as many again), at least httpx's 100."""
    return max(100, 2 * max_concurrency + 8)


@dataclass(frozen=True)
class Prediction:
    """One remote task as last seen. `raw` is the whole `data` object of the envelope;
    `submitted_at`/`completed_at`/`wall_ms`/`polls`/`observation` are what this client
    observed (`observation`: when it completed, for the next forecast; see `polling.py`)."""

    id: str
    model: str
    status: str
    outputs: tuple[str, ...] = ()
    has_nsfw_contents: tuple[bool, ...] = ()
    created_at: str | None = None
    error: str | None = None
    inference_ms: int | None = None
    submitted_at: datetime | None = None
    completed_at: datetime | None = None
    wall_ms: int | None = None
    polls: int = 0
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    observation: PollObservation | None = field(default=None, compare=False, repr=False)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == "completed"

    @property
    def nsfw(self) -> bool:
        return any(self.has_nsfw_contents)


@dataclass(frozen=True)
class PredictionPage:
    """One page of the predictions list (newest first; inputs are never included)."""

    items: tuple[Prediction, ...]
    page: int
    page_size: int
    total: int | None  # matching predictions over all pages, when the API says

    @property
    def has_next(self) -> bool:
        if not self.items:
            return False
        if self.total is not None:
            return self.page * self.page_size < self.total
        return len(self.items) >= self.page_size


@dataclass(frozen=True)
class Balance:
    """The account's credit as the API reports it."""

    amount: float
    currency: str = "USD"


@dataclass(frozen=True)
class GenerationResult:
    prediction: Prediction
    image_url: str
    mesh_path: Path
    mesh_bytes: int
    download_ms: int


# --------------------------------------------------------------------------- sans-IO core


def parse_prediction(data: Mapping[str, Any], **observed: Any) -> Prediction:
    """The envelope's `data` object -> Prediction; `observed` sets the client-side fields."""
    pid = data.get("id")
    if not isinstance(pid, str) or not pid:
        raise ValueError("the answer has no prediction id")
    timings = data.get("timings")
    inference = timings.get("inference") if isinstance(timings, Mapping) else None
    return Prediction(
        id=pid,
        model=str(data.get("model") or ""),
        status=str(data.get("status") or "").lower(),
        outputs=tuple(str(u) for u in data.get("outputs") or ()),
        has_nsfw_contents=tuple(bool(f) for f in data.get("has_nsfw_contents") or ()),
        created_at=str(data.get("created_at") or "") or None,
        error=str(data.get("error") or "") or None,
        inference_ms=round(inference) if isinstance(inference, int | float) else None,
        raw=dict(data),
        **observed,
    )


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _message(body: Any, content: bytes, secret: str | None = None) -> str:
    """The human part of an error answer, short, with `secret` scrubbed (should it echo)."""
    text = body.get("message") or body.get("error") if isinstance(body, Mapping) else None
    if not text:
        raw = content[:4000].decode("utf-8", "replace")
        # Object stores (upload and output hosts) answer errors in XML: keep the human part.
        found = re.search(r"<Message>(.*?)</Message>", raw, re.S)
        text = found[1] if found else raw
    text = " ".join(str(text).split())[:500] or "no message"
    return text.replace(secret, "[redacted]") if secret else text


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def parse_envelope(
    status_code: int,
    headers: Mapping[str, str],
    content: bytes,
    *,
    kind: CallKind,
    where: str,
    prediction_id: str | None = None,
    secret: str | None = None,
) -> Mapping[str, Any]:
    """The `data` object of a `{code, message, data}` answer, or raise the typed error.

    `where` is "METHOD /path" for messages; `secret` is scrubbed from any API text.
    """
    try:
        body: Any = json.loads(content) if content else None
    except ValueError:
        body = None
    api_code = _int_or_none(body.get("code")) if isinstance(body, Mapping) else None
    ok_code = api_code in (None, 200)
    if 200 <= status_code < 300 and ok_code:
        data = body.get("data") if isinstance(body, Mapping) else None
        if isinstance(data, Mapping):
            return data
        text = f"{where} answered HTTP {status_code} without a JSON `data` object"
        if kind == "submit":
            raise SubmissionUncertainError(f"{text}. {_UNCERTAIN_ADVICE}", status_code=status_code)
        raise ServerError(text, status_code=status_code, prediction_id=prediction_id)
    message = _message(body, content, secret)
    raise error_for_status(
        kind,
        status_code,
        api_code=api_code,
        message=message,
        where=where,
        prediction_id=prediction_id,
        retry_after=parse_retry_after(headers.get("retry-after")),
    )


_UNCERTAIN_ADVICE = (
    "The prediction may have been created and billed, so it was NOT resubmitted. Check the "
    "WaveSpeed dashboard (or the predictions list) before submitting this image again."
)


def error_for_status(
    kind: CallKind,
    status_code: int,
    *,
    api_code: int | None,
    message: str,
    where: str,
    prediction_id: str | None = None,
    retry_after: float | None = None,
    api: bool = True,
) -> WaveSpeedError:
    """Map an HTTP status (or the body's `code` when HTTP said 200) to a typed error."""
    code = status_code if not 200 <= status_code < 300 else (api_code or 500)
    shown = f"HTTP {status_code}"
    if api_code is not None and api_code != status_code:
        shown += f", code {api_code}"
    kw: dict[str, Any] = {
        "status_code": status_code,
        "api_code": api_code,
        "prediction_id": prediction_id,
        "retry_after": retry_after,
    }
    if code in (401, 403) and api:
        return AuthenticationError(
            f"WaveSpeed refused the API key on {where} ({shown}: {message}). "
            "Check WAVESPEED_API_KEY (a valid key of an account with credit).",
            **kw,
        )
    if code == 429:
        wait = f"; retry after {retry_after:g} s" if retry_after is not None else ""
        return RateLimitedError(
            f"WaveSpeed rate limit on {where} ({shown}: {message}){wait}. Lower concurrency or "
            "move to a higher account tier.",
            **kw,
        )
    if kind == "submit" and (status_code in (500, 502, 504) or code in (5000, 5004)):
        # Only 429/503 are answered before a task exists. A gateway error means the request may
        # have reached the model service, and an internal error (or timeout) may come after the
        # task was created: either way it may be billed, so it is reconciled, never resent.
        return SubmissionUncertainError(f"{where} answered {shown}. {_UNCERTAIN_ADVICE}", **kw)
    if code == 404 and kind == "read" and prediction_id is not None:
        return PredictionNotFoundError(
            f"Prediction {prediction_id} is unknown to WaveSpeed ({shown}: {message}). Wrong "
            "id, another account's key, or older than the 7-day retention.",
            **kw,
        )
    if 500 <= code < 600 or 5000 <= code < 6000:
        transient = code in _TRANSIENT_API_CODES or 500 <= code < 600
        return ServerError(
            f"WaveSpeed server error on {where} ({shown}: {message}).", transient=transient, **kw
        )
    if 400 <= code < 500 or 1000 <= code < 2000:
        hint = "" if api else " The upload URL may have expired: upload the file again."
        return InvalidInputError(f"WaveSpeed rejected {where} ({shown}: {message}).{hint}", **kw)
    return WaveSpeedError(f"Unexpected answer to {where} ({shown}: {message}).", **kw)


def error_for_transport(
    kind: CallKind,
    exc: Exception,
    *,
    where: str,
    prediction_id: str | None = None,
    url: str | None = None,
) -> WaveSpeedError:
    """Map an httpx exception to a typed error, honest about whether a submit may exist."""
    reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
    # Broken requests (bad URL, a header h11 refuses) never leave: not sent, not worth retrying.
    broken = isinstance(exc, _BROKEN)
    not_sent = broken or isinstance(exc, _NOT_SENT)
    if kind == "download":
        if isinstance(exc, httpx.UnsupportedProtocol):
            # The URL itself was checked before sending, so a redirect led here.
            reason = f"it redirected to a URL that is not http(s) ({reason}); not followed"
        return OutputDownloadError(
            f"Downloading the output failed ({where}: {reason}).",
            url=url or "",
            prediction_id=prediction_id,
            transient=not (broken or isinstance(exc, httpx.TooManyRedirects)),
        )
    if kind == "submit" and not not_sent:
        return SubmissionUncertainError(
            f"No answer to {where} ({reason}). {_UNCERTAIN_ADVICE}", prediction_id=prediction_id
        )
    return ApiConnectionError(
        f"Could not complete {where} ({reason}). Check the network and the base URL.",
        request_sent=not not_sent,
        prediction_id=prediction_id,
        transient=not broken,
    )


def is_retryable(kind: CallKind, error: WaveSpeedError) -> bool:
    """Whether the same request may be sent again (see the module docstring for submits)."""
    if isinstance(error, SubmissionUncertainError | PredictionTimeoutError | OutputTooLargeError):
        return False
    if isinstance(error, ApiConnectionError):
        return error.transient and (kind != "submit" or not error.request_sent)
    status = error.status_code
    if kind == "submit":
        return status in SUBMIT_RETRYABLE_STATUSES
    if isinstance(error, OutputDownloadError):
        return error.transient and (status is None or status in RETRYABLE_STATUSES)
    if status is not None and 200 <= status < 300:
        return error.api_code in _TRANSIENT_API_CODES
    return status in RETRYABLE_STATUSES


def backoff_delay(
    policy: HttpRetryPolicy,
    attempt: int,
    *,
    retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based).

    Never less than `retry_after`; jittered so that many workers do not retry in step.
    """
    base = min(policy.max_delay, policy.base_delay * 2 ** (attempt - 1))
    delay = min(policy.max_delay, base * (1 + policy.jitter * (2 * rand() - 1)))
    if retry_after is not None:
        spread = min(policy.max_delay, retry_after * (1 + policy.jitter * rand()))
        delay = max(retry_after, delay, spread)
    return max(0.0, delay)


def retry_delay(
    policy: HttpRetryPolicy,
    kind: CallKind,
    error: WaveSpeedError,
    attempt: int,
    *,
    rand: Callable[[], float] = random.random,
) -> float | None:
    """The delay before attempt `attempt + 1`, or None when `error` should be raised now."""
    if attempt >= policy.max_attempts or not is_retryable(kind, error):
        return None
    retry_after = error.retry_after if error.status_code in (429, 503) else None
    if retry_after is not None and retry_after > policy.max_delay:
        return None
    return backoff_delay(policy, attempt, retry_after=retry_after, rand=rand)


def _model_path(model: str) -> str:
    path = model.strip().strip("/")
    if not path or any(part in ("", ".", "..") for part in path.split("/")) or "?" in path:
        raise ValueError(f"not a WaveSpeed model path: {model!r}")
    if path.split("/")[0] in ("predictions", "media"):
        raise ValueError(f"{model!r} is an API route, not a model path")
    return path


def _path_of(url: str) -> str:
    return urlsplit(url).path or "/"


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _now() -> datetime:
    return datetime.now(UTC)


def parse_time(value: str | None) -> datetime | None:
    """An API timestamp (ISO 8601, `Z` or offset; naive is UTC); None when absent or bad."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _iso8601(moment: datetime | str, name: str) -> str:
    if isinstance(moment, str):
        if parse_time(moment) is None:
            raise ValueError(f"{name} must be an ISO 8601 time, got {moment!r}")
        return moment
    if moment.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware (our clock and the API's are UTC)")
    return format_time(moment)


def format_time(moment: datetime) -> str:
    """An aware time as the API writes one: UTC, milliseconds, `Z`."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _is_remote(image: str | Path) -> bool:
    return isinstance(image, str) and urlsplit(image).scheme.lower() in ("http", "https")


@dataclass(frozen=True)
class _Request:
    kind: CallKind
    method: str
    url: str
    headers: Mapping[str, str] = field(repr=False)  # holds the key
    timeout: httpx.Timeout
    json: Any = None
    api: bool = True  # an endpoint of the WaveSpeed API (envelope + auth), not a file host

    @property
    def where(self) -> str:
        return f"{self.method} {_path_of(self.url)}"


class _Protocol:
    """Request building and answer reading shared by both shells (no I/O)."""

    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self.rand = random.Random().random
        self._origin = _origin(settings.base_url)
        self.balance_path = BALANCE_PATHS[0]  # moves to the route that answered

    def pools(self) -> list[httpx.Limits]:
        """The connection pools to spread requests over, `POOL_SIZE` connections each.

        httpcore walks every connection of a pool (a poll(2) and a getpeername(2) each) on
        every request and every response: with 600 connections in one pool that held the
        event loop for seconds at 300 predictions in flight. Pools of a few dozen keep each
        walk short. Every connection may stay open between polls: reopening one per poll
        costs a handshake (httpx keeps only 20 by default)."""
        count = max(1, math.ceil(self.settings.max_connections / POOL_SIZE))
        size = math.ceil(self.settings.max_connections / count)
        return [httpx.Limits(max_connections=size, max_keepalive_connections=size)] * count

    def timeout(self, kind: CallKind) -> httpx.Timeout:
        t = self.settings.timeouts
        seconds = {"submit": t.submit, "read": t.read, "upload": t.upload, "download": t.download}
        return httpx.Timeout(seconds[kind], connect=t.connect)

    def headers_for(self, url: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if _origin(url) == self._origin:  # the key never leaves for upload/CDN hosts
            headers["Authorization"] = f"Bearer {self.settings.api_key}"
        return headers

    def api(self, kind: CallKind, method: str, path: str, json: Any = None) -> _Request:
        url = f"{self.settings.base_url}/api/v3/{path}"
        headers = self.headers_for(url, {"Accept": "application/json"})
        return _Request(kind, method, url, headers, self.timeout(kind), json)

    def submit(self, image_url: str, model: str | None) -> _Request:
        if not image_url:
            raise ValueError("image_url is empty")
        scheme = urlsplit(image_url).scheme.lower()
        if scheme not in _WEB_SCHEMES:
            # Never quoted: a local path or a data: URL is nobody else's business.
            raise InvalidInputError(
                f"Refusing to submit an image URL with scheme {scheme or 'none'!r}: only "
                "http(s) URLs are sent to the API (it fetches the image itself)."
            )
        path = _model_path(model) if model else self.settings.model
        return self.api("submit", "POST", path, {"image": image_url})

    def result(self, prediction_id: str) -> _Request:
        if not prediction_id:
            raise ValueError("prediction_id is empty")
        return self.api("read", "GET", f"predictions/{quote(prediction_id, safe='')}/result")

    def upload_ticket(self, path: Path, content_type: str | None) -> tuple[_Request, int]:
        return self.upload_ticket_for(path.name, path.stat().st_size, content_type)

    def upload_ticket_for(
        self, filename: str, size: int, content_type: str | None
    ) -> tuple[_Request, int]:
        if size > MAX_UPLOAD_BYTES:
            raise UploadTooLargeError(
                f"{filename} is {size / 2**20:.1f} MiB; WaveSpeed accepts uploads up to "
                f"{MAX_UPLOAD_BYTES // 2**20} MiB. Downscale or recompress the image."
            )
        ctype = content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        body = {"filename": filename, "size": size, "content_type": ctype}
        return self.api("upload", "POST", "media/uploads", body), size

    def upload_put(self, ticket: Mapping[str, Any], size: int) -> tuple[_Request, str]:
        upload = ticket.get("upload")
        download_url = ticket.get("download_url")
        if not isinstance(upload, Mapping) or not upload.get("url") or not download_url:
            raise ServerError("The upload ticket lacks upload.url or download_url.")
        if str(upload.get("method") or "PUT").upper() != "PUT":
            raise ServerError(f"Unsupported upload method {upload.get('method')!r} in ticket.")
        url = urljoin(self.settings.base_url + "/", str(upload["url"]))
        extra = {str(k): str(v) for k, v in (upload.get("headers") or {}).items()}
        extra.setdefault("Content-Length", str(size))
        headers, timeout = self.headers_for(url, extra), self.timeout("upload")
        return _Request("upload", "PUT", url, headers, timeout, api=False), str(download_url)

    def list_predictions(
        self,
        *,
        page: int,
        page_size: int,
        model: str | None,
        status: str | None,
        created_after: datetime | str | None,
        created_before: datetime | str | None,
    ) -> _Request:
        """The documented POST body; the list is read-only, so the POST is retried like a GET."""
        for name, value, top in (("page", page, None), ("page_size", page_size, MAX_PAGE_SIZE)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
            if top is not None and value > top:
                raise ValueError(f"{name} must be at most {top} (the API's limit), got {value}")
        body: dict[str, Any] = {"page": page, "page_size": page_size}
        if model is not None:
            body["model"] = _model_path(model)
        if status is not None:
            if status not in LIST_STATUSES:
                raise ValueError(f"status must be one of {sorted(LIST_STATUSES)}, got {status!r}")
            body["status"] = status
        for name, moment in (("created_after", created_after), ("created_before", created_before)):
            if moment is not None:
                body[name] = _iso8601(moment, name)
        return self.api("read", "POST", "predictions", body)

    def prediction_page(self, req: _Request, data: Mapping[str, Any]) -> PredictionPage:
        items = data.get("items")
        if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
            raise ServerError(f"{req.where} answered without a list of `items`.")
        body = req.json or {}
        page = _int_or_none(data.get("page")) or int(body.get("page", 1))
        return PredictionPage(
            items=tuple(self.prediction(req, item) for item in items),
            page=page,
            page_size=int(body.get("page_size", MAX_PAGE_SIZE)),
            total=_int_or_none(data.get("total")),
        )

    def balance_request(self, path: str) -> _Request:
        return self.api("read", "GET", path)

    def balance(self, req: _Request, data: Mapping[str, Any]) -> Balance:
        amount = data.get("balance")
        try:
            value = float(amount)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            value = math.nan
        if isinstance(amount, bool) or not math.isfinite(value):
            raise ServerError(f"{req.where} answered without a numeric `balance`.")
        currency = data.get("currency")
        self.balance_path = req.url.rsplit("/api/v3/", 1)[-1]
        return Balance(value, str(currency) if currency else "USD")

    def download(self, url: str, prediction_id: str | None = None) -> _Request:
        scheme = urlsplit(url).scheme.lower()
        if scheme not in _WEB_SCHEMES:
            raise OutputDownloadError(
                f"Refusing to download the output {scheme or 'relative'}:{_path_of(url)}: only "
                "http(s) URLs are fetched.",
                url=url,
                prediction_id=prediction_id,
                transient=False,
            )
        return _Request("download", "GET", url, self.headers_for(url), self.timeout("download"))

    def read(
        self,
        req: _Request,
        status: int,
        headers: Mapping[str, str],
        content: bytes,
        prediction_id: str | None = None,
    ) -> Mapping[str, Any]:
        if not req.api:
            if 200 <= status < 300:
                return {}
            raise error_for_status(
                req.kind,
                status,
                api_code=None,
                message=_message(None, content, self.settings.api_key),
                where=req.where,
                retry_after=parse_retry_after(headers.get("retry-after")),
                api=False,
            )
        return parse_envelope(
            status,
            headers,
            content,
            kind=req.kind,
            where=req.where,
            prediction_id=prediction_id,
            secret=self.settings.api_key,
        )

    def prediction(self, req: _Request, data: Mapping[str, Any], **observed: Any) -> Prediction:
        try:
            return parse_prediction(data, **observed)
        except ValueError as exc:
            if req.kind == "submit":
                raise SubmissionUncertainError(f"{req.where}: {exc}. {_UNCERTAIN_ADVICE}") from exc
            raise ServerError(f"{req.where}: {exc}.") from exc

    def check_download(
        self,
        req: _Request,
        status: int,
        headers: Mapping[str, str],
        limit: int,
        prediction_id: str | None,
    ) -> None:
        shown = _path_of(req.url)
        kw: dict[str, Any] = {"url": req.url, "prediction_id": prediction_id, "status_code": status}
        if status in (403, 404, 410):
            raise OutputExpiredError(
                f"The output {shown} is gone (HTTP {status}): output URLs expire, so download "
                "as soon as a prediction completes; a new prediction is needed now.",
                **kw,
            )
        if not 200 <= status < 300:
            retry_after = parse_retry_after(headers.get("retry-after"))
            raise OutputDownloadError(
                f"Downloading the output {shown} failed (HTTP {status}).",
                transient=status in RETRYABLE_STATUSES,
                retry_after=retry_after,
                **kw,
            )
        length = _int_or_none(headers.get("content-length"))
        if length is not None and length > limit:
            raise self.too_large(req, limit, length, prediction_id)

    def too_large(
        self, req: _Request, limit: int, size: int, pid: str | None
    ) -> OutputTooLargeError:
        return OutputTooLargeError(
            f"The output {_path_of(req.url)} is over the {limit}-byte limit (at least {size} "
            "bytes); raise max_download_bytes if this mesh is expected to be that large.",
            url=req.url,
            max_bytes=limit,
            prediction_id=pid,
        )

    def next_retry(self, req: _Request, error: WaveSpeedError, attempt: int) -> float | None:
        """Delay before the next attempt (and log it), or None to raise `error` now."""
        error.attempts = attempt
        delay = retry_delay(self.settings.retry, req.kind, error, attempt, rand=self.rand)
        if delay is not None:
            logger.warning(
                "retrying %s in %.2fs (attempt %d of %d failed: %s)",
                req.where,
                delay,
                attempt,
                self.settings.retry.max_attempts,
                error.message,
            )
        return delay

    def output_url(self, prediction: Prediction) -> str:
        if not prediction.outputs:
            raise PredictionFailedError(
                f"Prediction {prediction.id} completed without outputs.", prediction=prediction
            )
        return prediction.outputs[0]


class _PageWalk:
    """`iter_predictions`: which page to ask for next and which items are new (no I/O).

    The list is newest first, so predictions made during a walk push older ones onto later
    pages: items already yielded are skipped by id. Predictions that pass the 7-day retention
    meanwhile pull later ones forward, so one may be missed: a walk is a snapshot, not a ledger.
    """

    def __init__(self, protocol: _Protocol, page_size: int, **filters: Any) -> None:
        self._p, self._filters, self.page_size = protocol, filters, page_size
        protocol.list_predictions(page=1, page_size=page_size, **filters)  # bad input fails now
        self.page = 0
        self.done = False
        self._seen: set[str] = set()

    def next_request(self) -> _Request | None:
        if self.done:
            return None
        self.page += 1
        return self._p.list_predictions(page=self.page, page_size=self.page_size, **self._filters)

    def take(self, page: PredictionPage) -> list[Prediction]:
        new = [p for p in page.items if p.id not in self._seen]
        self._seen.update(p.id for p in new)
        # A page of nothing new ends the walk too, so a server that repeats a page cannot loop it.
        self.done = not page.has_next or not new
        return new


class _BalancePlan:
    """`get_balance`: the remembered route first, then the other documented one on a 404."""

    def __init__(self, protocol: _Protocol) -> None:
        self._p = protocol
        first = protocol.balance_path
        self._paths = [first, *(path for path in BALANCE_PATHS if path != first)]
        self._missing: list[str] = []

    def next_request(self) -> _Request:
        return self._p.balance_request(self._paths[len(self._missing)])

    def failed(self, req: _Request, error: WaveSpeedError) -> None:
        """Raise `error` unless another documented route is left to try."""
        if error.status_code != 404:
            raise error
        self._missing.append(req.where)
        if len(self._missing) < len(self._paths):
            return
        raise InvalidInputError(
            f"{' and '.join(self._missing)} both answered HTTP 404 at "
            f"{self._p.settings.base_url}: this API has no balance endpoint we know.",
            status_code=404,
            api_code=error.api_code,
        ) from error


# A forecast, or something that gives one (None while nothing is known), or nothing.
Forecast = CompletionForecast | Callable[[], CompletionForecast | None] | None


def _stretch_factor(prediction_id: str) -> float:
    """In [1, 2), fixed per prediction (so a wait's schedule is reproducible)."""
    return 1.0 + zlib.crc32(prediction_id.encode()) / 2**32


class _WaitPlan:
    """One `wait()`: when to poll, what a seen status means, what was observed (no I/O).

    The schedule runs in seconds since our own submit when the Prediction has `submitted_at`.
    A wait by id uses the API's `created_at` once the first poll returns it: good enough to
    schedule by, but our clock and the server's may differ, so it records no observation.
    """

    def __init__(
        self,
        target: Prediction | str,
        policy: PollPolicy,
        deadline: float | None,
        clock: Callable[[], float] = time.monotonic,
        *,
        forecast: Forecast = None,
        now: Callable[[], datetime] = _now,
        stretch: bool = False,
    ) -> None:
        self.prior = target if isinstance(target, Prediction) else None
        self._stretch = stretch  # stretch the adaptive schedule while learning (`_stretched`)
        self.prediction_id = target.id if isinstance(target, Prediction) else target
        if not self.prediction_id:
            raise ValueError("prediction id is empty")
        # A callable forecast is asked again while none is known: a wait that began before the
        # run's first observations switches to the learned schedule as soon as they exist.
        self._forecast_source = forecast if callable(forecast) else None
        self.forecast = forecast() if callable(forecast) else forecast
        self.policy = policy
        self.limit = policy.deadline if deadline is None else deadline
        self._clock, self._now = clock, now
        self._started = clock()
        self._ends = None if self.limit is None or math.isinf(self.limit) else clock() + self.limit
        submitted = self.prior.submitted_at if self.prior else None
        self._own_origin = submitted is not None
        # Seconds between the origin (the submit) and the start of this wait, once known.
        self._origin_age = None if submitted is None else (now() - submitted).total_seconds()
        self._schedule = PollSchedule(policy, self.forecast if self._own_origin else None)
        self._not_done_at = 0.0  # the submit's own answer said "not done" at ~0
        self._poll_at = 0.0
        # Resuming by id: the task may have finished long ago, so look at once.
        self._immediate = self.prior is None
        self.polls = 0
        self.last: Prediction | None = self.prior

    def _position(self) -> float:
        """Seconds since the origin (or since this wait began, while the origin is unknown)."""
        return (self._origin_age or 0.0) + self._clock() - self._started

    def already_done(self) -> Prediction | None:
        """The given Prediction itself when it is terminal already (no poll needed)."""
        if self.prior is None or not self.prior.is_terminal:
            return None
        done = self.prior
        if done.completed_at is None:
            done = self._observed(done)
        self.finish(done)
        return done

    def next_delay(self) -> float:
        """Seconds to sleep before the next poll; raises PredictionTimeoutError when out of time."""
        position = self._position()
        if self._immediate and self.polls == 0:
            self._poll_at = position
            return 0.0
        remaining = math.inf if self._ends is None else self._ends - self._clock()
        if remaining <= 0 and self.polls > 0:
            status = self.last.status if self.last else None
            raise PredictionTimeoutError(
                f"Prediction {self.prediction_id} is still {status!r} after waiting "
                f"{self.limit:g} s; it keeps running at WaveSpeed. Resume with "
                f"wait({self.prediction_id!r}).",
                prediction_id=self.prediction_id,
                status=status,
                prediction=self.last,
            )
        learning = self.waiting_to_learn
        if learning:
            assert self._forecast_source is not None
            self.forecast = self._forecast_source()
            if self.forecast is not None:
                self._schedule = PollSchedule(self.policy, self.forecast, learned_late=True)
        delay = self._schedule.next_poll(position) - position
        if learning and self.forecast is None and self._stretch:
            delay = self._stretched(delay)
        delay = max(0.0, min(delay, remaining))
        self._poll_at = position + delay
        return delay

    def replan(self) -> float:
        """`next_delay` again, once the forecast source may know more while a poll is planned:
        the learned schedule's next poll if it is sooner than the planned one, else that."""
        planned = self._poll_at
        delay = self.next_delay()
        left = planned - self._position()
        if left < delay:
            delay, self._poll_at = max(0.0, left), planned
        return delay

    def _stretched(self, delay: float) -> float:
        """Predictions submitted together would all poll at the same moments, and all notice
        their completions equally late. Stretched by a factor in [1, 2) fixed per prediction,
        their adaptive schedules cover the whole time line between them: some poll soon after
        the first completions, and what they observe lets the others poll on a forecast
        (`wake`, async client). A wait alone polls up to twice as sparsely until then."""
        return delay * _stretch_factor(self.prediction_id)

    @property
    def waiting_to_learn(self) -> bool:
        """No forecast yet, but a source that may have one later (our own submit: its clock)."""
        return self.forecast is None and self._forecast_source is not None and self._own_origin

    def observe(self, seen: Prediction) -> Prediction:
        """A polled Prediction, with what this client observed added."""
        self.polls += 1
        created = parse_time(seen.created_at)
        if self._origin_age is None and created is not None and self.forecast is not None:
            # By id: from now on, schedule in seconds since the API created the task.
            self._origin_age = (self._now() - created).total_seconds() - (
                self._clock() - self._started
            )
            self._schedule = PollSchedule(self.policy, self.forecast)
        observation = None
        if not seen.is_terminal:
            self._not_done_at = self._poll_at
        elif self._own_origin:
            observation = self._observation(seen, self._position())
        self.last = self._observed(seen, observation)
        return self.last

    def _observation(self, seen: Prediction, done_at: float) -> PollObservation | None:
        model = seen.model or (self.prior.model if self.prior else "")
        if not model:
            return None
        inference = None if seen.inference_ms is None else seen.inference_ms / 1000
        return PollObservation(
            model=model,
            prediction_id=seen.id,
            status=seen.status,
            not_done_s=max(0.0, min(self._not_done_at, done_at)),
            done_s=max(0.0, done_at),
            inference_s=inference,
            observed_at=self._now(),
        )

    def _observed(self, seen: Prediction, observation: PollObservation | None = None) -> Prediction:
        prior = self.prior
        submitted = prior.submitted_at if prior and prior.submitted_at else None
        submitted = submitted or parse_time(seen.created_at)
        observed: dict[str, Any] = {
            "submitted_at": submitted,
            "polls": (prior.polls if prior else 0) + self.polls,
            "observation": observation,
        }
        if seen.is_terminal:
            done = self._now()
            observed["completed_at"] = done
            if submitted is not None:
                observed["wall_ms"] = max(0, round((done - submitted).total_seconds() * 1000))
        return replace(seen, **observed)

    def finish(self, seen: Prediction) -> bool:
        """True when done; raises PredictionFailedError on a failed terminal status."""
        if seen.status == "completed":
            return True
        if seen.is_terminal:
            raise PredictionFailedError(
                f"Prediction {seen.id} {seen.status}: {seen.error or 'WaveSpeed gave no reason'}.",
                prediction=seen,
            )
        return False
