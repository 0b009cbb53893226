"""The WaveSpeed client: its pure core directly, its two I/O shells over real loopback HTTP.

Most tests talk to the in-process emulator (`emulator` fixture); a tiny scripted HTTP server
covers what the emulator cannot show (close-delimited bodies, Retry-After on 503, an API that
echoes the key back). Delays in settings are tiny so the module stays fast.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image, ImageDraw

from hunyuan_assets.client import (
    DEFAULT_MODEL,
    MAX_UPLOAD_BYTES,
    TERMINAL_STATUSES,
    ApiConnectionError,
    AsyncHunyuan3DClient,
    AuthenticationError,
    Balance,
    ClientSettings,
    CompletionForecast,
    GenerationResult,
    HttpRetryPolicy,
    Hunyuan3DClient,
    InvalidInputError,
    OutputDownloadError,
    OutputExpiredError,
    OutputTooLargeError,
    PollPolicy,
    Prediction,
    PredictionFailedError,
    PredictionNotFoundError,
    PredictionTimeoutError,
    RateLimitedError,
    ServerError,
    SubmissionUncertainError,
    Timeouts,
    UploadTooLargeError,
    WaveSpeedError,
)
from hunyuan_assets.client import http as client_http
from hunyuan_assets.client.protocol import (
    _WaitPlan,
    backoff_delay,
    error_for_transport,
    is_retryable,
    parse_envelope,
    parse_prediction,
    parse_retry_after,
    poll_intervals,
    retry_delay,
)

FAST_POLL = PollPolicy(initial_interval=0.05, max_interval=0.2, multiplier=2.0, deadline=20.0)
FAST_RETRY = HttpRetryPolicy(max_attempts=6, base_delay=0.01, max_delay=1.0, jitter=0.0)
LOGGER = "hunyuan_assets.client"


# --------------------------------------------------------------------------- helpers


def settings_for(base_url: str, api_key: str, **overrides: Any) -> ClientSettings:
    values: dict[str, Any] = {"poll": FAST_POLL, "retry": FAST_RETRY}
    values.update(overrides)
    return ClientSettings(api_key=api_key, base_url=base_url, **values)


def assert_key_hidden(api_key: str, *things: object) -> None:
    """Neither the thing nor anything it was caused by shows the key."""
    for thing in things:
        seen: set[int] = set()
        current: object | None = thing
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            assert api_key not in str(current)
            assert api_key not in repr(current)
            current = getattr(current, "__cause__", None) or getattr(current, "__context__", None)


@pytest.fixture
def image_path(tmp_path: Path) -> Path:
    """A small PNG the emulator can turn into a mesh: a red disc on white."""
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).ellipse((10, 10, 54, 54), fill=(200, 30, 30))
    path = tmp_path / "disc.png"
    image.save(path)
    return path


@pytest.fixture
def client(emulator, api_key: str) -> Iterator[Hunyuan3DClient]:
    with Hunyuan3DClient(settings_for(emulator.base_url, api_key)) as c:
        yield c


@pytest.fixture
def image_url(client: Hunyuan3DClient, image_path: Path) -> str:
    return client.upload(image_path)


class Naps:
    """Stands in for the `time` module of the sync client: records each sleep it asks for, and
    still sleeps."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.seconds.append(seconds)
        time.sleep(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.fixture
def naps(monkeypatch: pytest.MonkeyPatch) -> Naps:
    """The delays the sync client chose, exactly: assertions on them hold on a loaded machine,
    where wall-clock durations only have lower bounds."""
    recorder = Naps()
    monkeypatch.setattr(client_http, "time", recorder)
    return recorder


def requests_to(emulator, endpoint: str) -> int:
    return emulator.stats()["requests"].get(endpoint, 0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Reply:
    status: int
    body: bytes | Callable[[BaseHTTPRequestHandler], bytes] = b""
    headers: dict[str, str] = field(default_factory=dict)


class ScriptedServer:
    """Loopback HTTP/1.0 server answering each path from a script (the last reply repeats).

    HTTP/1.0 lets a body end at connection close, with no Content-Length: the case where a
    download size is only known while streaming.
    """

    def __init__(self) -> None:
        self.script: dict[str, list[Reply]] = {}
        self.hits: dict[str, int] = {}
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:
                self._reply()

            def do_POST(self) -> None:
                self._reply()

            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self) -> None:
                path = urlsplit(self.path).path
                owner.hits[path] = owner.hits.get(path, 0) + 1
                replies = owner.script.get(path) or [Reply(404, b"no script")]
                reply = replies.pop(0) if len(replies) > 1 else replies[0]
                body = reply.body(self) if callable(reply.body) else reply.body
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.close()


def data(**fields: Any) -> dict[str, Any]:
    base = {
        "id": "p-1",
        "model": DEFAULT_MODEL,
        "outputs": [],
        "has_nsfw_contents": [],
        "status": "processing",
        "created_at": "2026-01-02T03:04:05.678Z",
        "error": "",
        "timings": {"inference": 0},
    }
    return base | fields


def envelope(status: int, body: bytes, kind: str = "read", **kw: Any) -> Any:
    return parse_envelope(status, {}, body, kind=kind, where="GET /x", **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the pure core


def test_backoff_schedule_doubles_and_is_capped() -> None:
    policy = HttpRetryPolicy(max_attempts=10, base_delay=0.5, max_delay=5.0, jitter=0.0)
    delays = [backoff_delay(policy, n) for n in range(1, 7)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_backoff_jitter_stays_within_bounds_and_cap() -> None:
    policy = HttpRetryPolicy(base_delay=1.0, max_delay=3.0, jitter=0.25)
    assert backoff_delay(policy, 1, rand=lambda: 0.0) == pytest.approx(0.75)
    assert backoff_delay(policy, 1, rand=lambda: 1.0) == pytest.approx(1.25)
    assert backoff_delay(policy, 3, rand=lambda: 1.0) == pytest.approx(3.0)  # 4 * 1.25, capped
    spread = {round(backoff_delay(policy, 1), 6) for _ in range(50)}
    assert len(spread) > 10 and all(0.75 <= d <= 1.25 for d in spread)


def test_backoff_never_earlier_than_retry_after() -> None:
    policy = HttpRetryPolicy(base_delay=0.1, max_delay=10.0, jitter=0.25)
    for attempt in range(1, 5):
        assert backoff_delay(policy, attempt, retry_after=2.0, rand=lambda: 0.0) >= 2.0
    assert backoff_delay(policy, 1, retry_after=2.0, rand=lambda: 1.0) == pytest.approx(2.5)


def test_retry_delay_decisions() -> None:
    policy = HttpRetryPolicy(max_attempts=3, base_delay=0.1, max_delay=5.0, jitter=0.0)
    limited = RateLimitedError("slow down", status_code=429, retry_after=1.5)
    assert retry_delay(policy, "read", limited, 1) == 1.5
    assert retry_delay(policy, "read", limited, 3) is None  # attempts used up
    too_long = RateLimitedError("slow down", status_code=429, retry_after=60.0)
    assert retry_delay(policy, "read", too_long, 1) is None  # the caller gets .retry_after
    server = ServerError("boom", status_code=502)
    assert retry_delay(policy, "read", server, 2) == pytest.approx(0.2)
    assert retry_delay(policy, "read", InvalidInputError("bad", status_code=400), 1) is None


@pytest.mark.parametrize(
    ("error", "submit_retried", "read_retried"),
    [
        (RateLimitedError("x", status_code=429), True, True),
        (ServerError("x", status_code=503), True, True),
        (ServerError("x", status_code=500), False, True),
        (ServerError("x", status_code=504), False, True),
        (ApiConnectionError("x", request_sent=False), True, True),
        (ApiConnectionError("x", request_sent=True), False, True),
        (SubmissionUncertainError("x"), False, False),
        (AuthenticationError("x", status_code=401), False, False),
        (InvalidInputError("x", status_code=400), False, False),
        (ServerError("x", status_code=200, api_code=5003), False, True),
    ],
)
def test_which_errors_are_retried(error: WaveSpeedError, submit_retried, read_retried) -> None:
    assert is_retryable("submit", error) is submit_retried
    assert is_retryable("read", error) is read_retried


def test_transport_errors_are_honest_about_submits() -> None:
    request = httpx.Request("POST", "http://h/api/v3/m")

    def submit_error(exc: Exception) -> WaveSpeedError:
        return error_for_transport("submit", exc, where="POST /api/v3/m")

    refused = submit_error(httpx.ConnectError("refused", request=request))
    assert isinstance(refused, ApiConnectionError) and not refused.request_sent
    assert is_retryable("submit", refused)
    lost = submit_error(httpx.ReadTimeout("timed out", request=request))
    assert isinstance(lost, SubmissionUncertainError) and not lost.transient
    assert "billed" in str(lost) and "NOT resubmitted" in str(lost)
    for never_sent in (httpx.UnsupportedProtocol("ftp?"), httpx.InvalidURL("bad")):
        broken = submit_error(never_sent)
        assert isinstance(broken, ApiConnectionError) and not is_retryable("submit", broken)
    read = error_for_transport(
        "read", httpx.RemoteProtocolError("gone", request=request), where="GET /x"
    )
    assert isinstance(read, ApiConnectionError) and is_retryable("read", read)


def test_poll_intervals_grow_by_multiplier_up_to_the_cap() -> None:
    gen = poll_intervals(PollPolicy(initial_interval=2.0, max_interval=10.0, multiplier=1.5))
    assert [round(next(gen), 3) for _ in range(7)] == [2.0, 3.0, 4.5, 6.75, 10.0, 10.0, 10.0]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_wait_plan_clips_the_last_sleep_to_the_deadline_then_times_out() -> None:
    clock = FakeClock()
    pending = parse_prediction(data(status="processing"))
    policy = PollPolicy(initial_interval=2.0, max_interval=20.0, multiplier=1.5, deadline=10.0)
    plan = _WaitPlan(pending, policy, None, clock)
    slept = []
    with pytest.raises(PredictionTimeoutError) as caught:
        while True:
            delay = plan.next_delay()
            slept.append(delay)
            clock.now += delay
            assert not plan.finish(plan.observe(pending))
    assert slept == [2.0, 3.0, 4.5, 0.5]  # the last nap ends exactly at the deadline
    assert caught.value.prediction_id == "p-1" and caught.value.status == "processing"
    assert caught.value.transient and "wait('p-1')" in str(caught.value)


def test_wait_plan_returns_a_terminal_prediction_without_polling() -> None:
    done = parse_prediction(data(status="completed", outputs=["http://o/m.glb"]))
    plan = _WaitPlan(done, PollPolicy(), None, FakeClock())
    seen = plan.already_done()
    assert seen is not None and seen.succeeded and seen.polls == 0
    assert seen.completed_at is not None
    cancelled = _WaitPlan(parse_prediction(data(status="cancelled")), PollPolicy(), None)
    with pytest.raises(PredictionFailedError, match="cancelled"):
        cancelled.already_done()


def test_wait_plan_by_id_looks_at_once_and_failed_status_raises() -> None:
    plan = _WaitPlan("p-1", PollPolicy(), deadline=5.0, clock=FakeClock())
    assert plan.next_delay() == 0.0
    failed = plan.observe(parse_prediction(data(status="failed", error="no mesh")))
    assert failed.polls == 1 and failed.completed_at is not None
    with pytest.raises(PredictionFailedError) as caught:
        plan.finish(failed)
    assert caught.value.prediction_id == "p-1" and caught.value.error == "no mesh"
    assert "no mesh" in str(caught.value)


def test_parse_prediction_reads_the_data_object() -> None:
    raw = data(
        status="completed",
        outputs=["https://cdn/x/mesh.glb"],
        has_nsfw_contents=[True],
        timings={"inference": 41234},
    )
    p = parse_prediction(raw)
    assert (p.id, p.model, p.status) == ("p-1", DEFAULT_MODEL, "completed")
    assert p.outputs == ("https://cdn/x/mesh.glb",) and p.has_nsfw_contents == (True,)
    assert p.inference_ms == 41234 and p.error is None and p.created_at == raw["created_at"]
    assert p.raw == raw and p.is_terminal and p.succeeded and p.nsfw
    assert p.submitted_at is None and p.polls == 0
    pending = parse_prediction(data(timings=None, error="", has_nsfw_contents=None))
    assert pending.inference_ms is None and pending.error is None and not pending.nsfw
    assert not pending.is_terminal and TERMINAL_STATUSES >= {"cancelled", "timeout", "deleted"}


def test_parse_envelope_success_and_error_codes() -> None:
    ok = b'{"code": 200, "message": "success", "data": {"id": "p-1"}}'
    assert envelope(200, ok) == {"id": "p-1"}
    with pytest.raises(InvalidInputError) as bad:  # a non-200 code in a 200 body is an error
        envelope(200, b'{"code": 1401, "message": "invalid parameter: image"}')
    assert bad.value.api_code == 1401 and "invalid parameter: image" in str(bad.value)
    with pytest.raises(ServerError) as busy:
        envelope(200, b'{"code": 5003, "message": "unavailable"}')
    assert busy.value.transient and is_retryable("read", busy.value)
    with pytest.raises(AuthenticationError, match="WAVESPEED_API_KEY"):
        envelope(401, b'{"code": 401, "message": "Unauthorized"}')
    with pytest.raises(PredictionNotFoundError) as missing:
        envelope(404, b'{"code": 404, "message": "not found"}', prediction_id="p-9")
    assert missing.value.prediction_id == "p-9" and "p-9" in str(missing.value)
    with pytest.raises(InvalidInputError):
        envelope(404, b'{"code": 404, "message": "not found"}', kind="upload")
    with pytest.raises(ServerError) as gateway:
        envelope(502, b"<html>bad gateway</html>")
    assert gateway.value.status_code == 502 and "bad gateway" in str(gateway.value)
    with pytest.raises(RateLimitedError) as limited:
        parse_envelope(429, {"retry-after": "3"}, b"", kind="read", where="GET /x")
    assert limited.value.retry_after == 3.0


def test_parse_envelope_submit_answers_that_hide_the_outcome_are_uncertain() -> None:
    for status, body in [
        (200, b"not json"),
        (200, b'{"code": 200}'),
        (500, b"internal error"),
        (504, b"timeout"),
        (200, b'{"code": 5000, "message": "internal error"}'),
    ]:
        with pytest.raises(SubmissionUncertainError):
            envelope(status, body, kind="submit")
    with pytest.raises(ServerError):  # the same answers to a GET are plain (retryable) errors
        envelope(200, b"not json")


def test_parse_envelope_scrubs_the_key_from_api_text(api_key: str) -> None:
    body = f'{{"code": 400, "message": "bad header: Bearer {api_key}"}}'.encode()
    with pytest.raises(InvalidInputError) as caught:
        envelope(400, body, secret=api_key)
    assert_key_hidden(api_key, caught.value)
    assert "[redacted]" in str(caught.value)


def test_parse_retry_after_seconds_and_dates() -> None:
    assert parse_retry_after("2") == 2.0 and parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    now = datetime(2026, 1, 1, tzinfo=UTC)
    when = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(when, now=now) == pytest.approx(30.0)


def test_settings_hide_the_key_and_reject_an_empty_one(api_key: str) -> None:
    settings = ClientSettings(api_key=f"  {api_key}\n", base_url="http://h/", model="/a/b/")
    assert settings.api_key == api_key and settings.base_url == "http://h"
    assert settings.model == "a/b"
    assert_key_hidden(api_key, settings)
    with pytest.raises(ValueError, match="WAVESPEED_API_KEY"):
        ClientSettings(api_key=" ")
    for bad in ("two words", "caf\u00e9-key", "key\x00"):
        with pytest.raises(ValueError, match="WAVESPEED_API_KEY") as caught:
            ClientSettings(api_key=bad)
        assert bad not in str(caught.value)
    with pytest.raises(ValueError):
        ClientSettings(api_key="k", model="predictions/x")
    assert Timeouts().submit == 60.0 and PollPolicy().initial_interval == 2.0


def test_errors_pickle_with_their_fields() -> None:
    prediction = parse_prediction(data(status="failed", error="nope"))
    for error in [
        PredictionFailedError("failed", prediction=prediction),
        PredictionTimeoutError("late", prediction_id="p-1", status="processing"),
        OutputTooLargeError("big", url="http://o/m.glb", max_bytes=10),
        ApiConnectionError("down", request_sent=False),
    ]:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
        assert copy.__dict__.keys() == error.__dict__.keys()


# --------------------------------------------------------------------------- sync over HTTP


def test_generate_uploads_submits_waits_and_downloads(
    client: Hunyuan3DClient, emulator, image_path: Path, tmp_path: Path
) -> None:
    seen: list[Prediction] = []
    dest = tmp_path / "out" / "mesh.glb"
    before = datetime.now(UTC)
    result = client.generate(image_path, dest, on_submitted=seen.append)

    assert isinstance(result, GenerationResult)
    p = result.prediction
    assert [s.id for s in seen] == [p.id] and seen[0].submitted_at is not None
    assert p.succeeded and p.model == DEFAULT_MODEL and len(p.outputs) == 1
    assert p.has_nsfw_contents == (False,) and not p.nsfw and p.error is None
    assert p.inference_ms is not None and p.inference_ms > 0
    assert p.submitted_at is not None and p.completed_at is not None
    assert before <= p.submitted_at <= p.completed_at and p.submitted_at.tzinfo is not None
    assert p.wall_ms == round((p.completed_at - p.submitted_at).total_seconds() * 1000)
    assert p.polls >= 1 and p.polls == emulator.stats()["result_requests"]
    assert result.image_url.endswith("/disc.png")
    assert result.mesh_path == dest and dest.read_bytes()[:4] == b"glTF"
    assert result.mesh_bytes == dest.stat().st_size and result.download_ms >= 0
    assert not dest.with_name("mesh.glb.part").exists()
    stats = emulator.stats()
    assert (stats["uploads"], stats["submissions"], stats["output_downloads"]) == (1, 1, 1)


def test_polling_interval_grows_until_the_cap(
    emulator, api_key: str, image_path: Path, naps: Naps
) -> None:
    poll = PollPolicy(initial_interval=0.02, max_interval=0.32, multiplier=2.0, deadline=20.0)
    polls: list[Prediction] = []

    def on_poll(p: Prediction) -> None:
        polls.append(p)
        if len(polls) == 6:  # the mesh is made by now; let the task finish
            emulator.configure(hold=False)

    with Hunyuan3DClient(settings_for(emulator.base_url, api_key, poll=poll)) as client:
        url = client.upload(image_path)
        emulator.configure(hold=True)
        prediction = client.submit(url)
        done = client.wait(prediction, on_poll=on_poll)

    # One nap before each poll (a fresh Prediction is first polled after initial_interval),
    # x2 each time, capped at 0.32.
    schedule = [0.02, 0.04, 0.08, 0.16, 0.32] + [0.32] * (len(naps.seconds) - 5)
    assert naps.seconds == pytest.approx(schedule)
    assert done.succeeded and done.polls == len(polls) == len(naps.seconds) >= 7
    assert emulator.stats()["result_requests"] == done.polls


def test_deadline_raises_resumable_timeout_then_wait_by_id(
    client: Hunyuan3DClient, emulator, image_url, api_key: str, naps: Naps
) -> None:
    emulator.configure(hold=True)
    prediction = client.submit(image_url)
    started = time.monotonic()
    with pytest.raises(PredictionTimeoutError) as caught:
        client.wait(prediction, deadline=0.3)
    assert time.monotonic() - started >= 0.3  # not before the deadline
    # ... and not long after it: the naps follow FAST_POLL's schedule, the last one clipped so
    # that together they never sleep past the deadline; then one last poll, and the error.
    assert len(naps.seconds) >= 2 and sum(naps.seconds) <= 0.3 + 1e-9, naps.seconds
    assert naps.seconds[:2] == pytest.approx([0.05, 0.1])
    assert caught.value.prediction is not None
    assert caught.value.prediction.polls == len(naps.seconds)
    error = caught.value
    assert error.prediction_id == prediction.id and error.transient
    assert error.status in ("created", "processing") and error.prediction is not None
    assert prediction.id in str(error)
    assert_key_hidden(api_key, error)

    emulator.configure(hold=False)
    done = client.wait(error.prediction_id)  # a new wait, as after a crash: only the id
    assert done.succeeded and done.outputs
    assert done.submitted_at is not None and done.wall_ms is not None  # from created_at
    stats = emulator.stats()
    assert stats["submissions"] == 1 and stats["predictions"]["completed"] == 1


def test_429_storm_honours_retry_after(
    client: Hunyuan3DClient, emulator, image_url, caplog: pytest.LogCaptureFixture, naps: Naps
) -> None:
    prediction = client.submit(image_url)
    emulator.configure(
        rules=[{"endpoint": "result", "kind": "429", "count": 3, "retry_after": 0.1}]
    )
    caplog.set_level(logging.WARNING, logger=LOGGER)
    assert client.get(prediction.id).id == prediction.id
    assert naps.seconds == pytest.approx([0.1] * 3)  # Retry-After, not base_delay (0.01)
    retries = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert len(retries) == 3
    assert all("in 0.10s" in r.getMessage() and "429" in r.getMessage() for r in retries)
    assert requests_to(emulator, "result") == 4


def test_retry_after_beyond_max_delay_is_handed_to_the_caller(client, emulator, image_url):
    prediction = client.submit(image_url)
    emulator.configure(rules=[{"endpoint": "result", "kind": "429", "count": -1, "retry_after": 5}])
    with pytest.raises(RateLimitedError) as caught:
        client.get(prediction.id)
    assert caught.value.retry_after == 5.0 and caught.value.transient
    assert caught.value.prediction_id == prediction.id
    assert requests_to(emulator, "result") == 1


def test_5xx_and_dropped_connections_are_retried_on_get(client, emulator, image_url):
    prediction = client.submit(image_url)
    rules = [{"endpoint": "result", "kind": k, "count": 1} for k in ("500", "502", "drop", "504")]
    emulator.configure(rules=rules)
    assert client.get(prediction.id).id == prediction.id
    assert requests_to(emulator, "result") == 5


def test_5xx_after_retries_is_a_server_error(emulator, api_key: str, image_path: Path) -> None:
    policy = HttpRetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.1, jitter=0.0)
    with Hunyuan3DClient(settings_for(emulator.base_url, api_key, retry=policy)) as client:
        prediction = client.submit(client.upload(image_path))
        emulator.configure(rules=[{"endpoint": "result", "kind": "500", "count": -1}])
        with pytest.raises(ServerError) as caught:
            client.get(prediction.id)
    error = caught.value
    assert error.status_code == 500 and error.transient and error.attempts == 3
    assert error.prediction_id == prediction.id and "after 3 attempts" in str(error)
    assert requests_to(emulator, "result") == 3
    assert_key_hidden(api_key, error)


def test_submit_is_not_resent_when_the_answer_is_lost(client, emulator, image_url, api_key):
    emulator.configure(rules=[{"endpoint": "submit", "kind": "drop_after_accept", "count": 1}])
    with pytest.raises(SubmissionUncertainError) as caught:
        client.submit(image_url)
    assert "billed" in str(caught.value) and not caught.value.transient
    assert_key_hidden(api_key, caught.value)
    stats = emulator.stats()
    assert stats["submissions"] == 1 and stats["requests"]["submit"] == 1


def test_submit_read_timeout_is_uncertain_not_retried(emulator, api_key: str, image_path: Path):
    timeouts = Timeouts(connect=2.0, submit=0.2)
    with Hunyuan3DClient(settings_for(emulator.base_url, api_key, timeouts=timeouts)) as client:
        url = client.upload(image_path)
        emulator.configure(rules=[{"endpoint": "submit", "kind": "slow", "delay": 0.6}])
        with pytest.raises(SubmissionUncertainError) as caught:
            client.submit(url)
    assert "ReadTimeout" in str(caught.value)
    assert emulator.stats()["submissions"] == 1 and requests_to(emulator, "submit") == 1


def test_submit_is_retried_on_429_and_503(client, emulator, image_url) -> None:
    emulator.configure(
        rules=[
            {"endpoint": "submit", "kind": "429", "count": 1, "retry_after": 0.05},
            {"endpoint": "submit", "kind": "503", "count": 1},
        ]
    )
    prediction = client.submit(image_url)
    assert prediction.status in ("created", "processing") and prediction.submitted_at
    assert emulator.stats()["submissions"] == 1 and requests_to(emulator, "submit") == 3


def test_submit_500_is_uncertain_not_retried(client, emulator, image_url) -> None:
    """An internal error may come after the task was created (and billed): like a lost
    answer, it is for the caller to reconcile, never resent."""
    emulator.configure(rules=[{"endpoint": "submit", "kind": "500", "count": 1}])
    with pytest.raises(SubmissionUncertainError) as caught:
        client.submit(image_url)
    assert caught.value.status_code == 500 and not caught.value.transient
    assert requests_to(emulator, "submit") == 1


def test_connection_refused_is_retried_even_for_submit(api_key: str, caplog) -> None:
    policy = HttpRetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.1, jitter=0.0)
    settings = settings_for(f"http://127.0.0.1:{free_port()}", api_key, retry=policy)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with Hunyuan3DClient(settings) as client, pytest.raises(ApiConnectionError) as caught:
        client.submit("http://images.example/cat.png")
    assert not caught.value.request_sent and caught.value.attempts == 3
    assert len([r for r in caplog.records if r.name == LOGGER]) == 2
    assert_key_hidden(api_key, caught.value)


def test_failed_task_raises_with_id_and_api_error(client, emulator, image_path, tmp_path):
    emulator.configure(fail_tasks={"count": 1, "error": "mesh exploded"})
    submitted: list[Prediction] = []
    dest = tmp_path / "mesh.glb"
    with pytest.raises(PredictionFailedError) as caught:
        client.generate(image_path, dest, on_submitted=submitted.append)
    error = caught.value
    assert error.prediction_id == submitted[0].id and error.error == "mesh exploded"
    assert error.prediction.status == "failed" and "mesh exploded" in str(error)
    assert error.prediction.completed_at is not None and not error.transient
    assert not dest.exists()


def test_nsfw_flags_are_parsed(client, emulator, image_url) -> None:
    emulator.configure(nsfw={"count": 1})
    done = client.wait(client.submit(image_url))
    assert done.has_nsfw_contents == (True,) and done.nsfw


def test_expired_output_url(client, emulator, image_path, tmp_path) -> None:
    emulator.configure(output_ttl=0)
    dest = tmp_path / "mesh.glb"
    with pytest.raises(OutputExpiredError) as caught:
        client.generate(image_path, dest)
    error = caught.value
    assert error.status_code == 403 and error.url.endswith("mesh.glb") and error.prediction_id
    assert "expire" in str(error)
    assert not dest.exists() and not dest.with_name("mesh.glb.part").exists()
    assert requests_to(emulator, "output") == 1  # not retried


def test_max_bytes_refuses_and_leaves_no_file(client, emulator, image_url, tmp_path) -> None:
    done = client.wait(client.submit(image_url))
    dest = tmp_path / "mesh.glb"
    with pytest.raises(OutputTooLargeError) as caught:
        client.download(done.outputs[0], dest, max_bytes=1000)
    assert caught.value.max_bytes == 1000 and caught.value.url == done.outputs[0]
    assert not dest.exists() and not dest.with_name("mesh.glb.part").exists()
    size = client.download(done.outputs[0], dest)
    assert size == dest.stat().st_size > 1000


def test_max_bytes_is_enforced_while_streaming(scripted, api_key, tmp_path) -> None:
    scripted.script["/big.glb"] = [Reply(200, b"x" * 300_000)]  # no Content-Length
    dest = tmp_path / "big.glb"
    with Hunyuan3DClient(settings_for(scripted.base_url, api_key)) as client:
        with pytest.raises(OutputTooLargeError):
            client.download(f"{scripted.base_url}/big.glb", dest, max_bytes=100_000)
        assert not dest.exists() and not dest.with_name("big.glb.part").exists()
        assert client.download(f"{scripted.base_url}/big.glb", dest) == 300_000
    assert scripted.hits["/big.glb"] == 2


def test_download_retries_503_honouring_retry_after(scripted, api_key, tmp_path, naps) -> None:
    scripted.script["/m.glb"] = [Reply(503, headers={"Retry-After": "0.2"}), Reply(200, b"glTF..")]
    scripted.script["/gone.glb"] = [Reply(410, b"gone")]
    settings = settings_for(scripted.base_url, api_key, max_download_bytes=10)
    with Hunyuan3DClient(settings) as client:
        assert client.download(f"{scripted.base_url}/m.glb", tmp_path / "m.glb") == 6
        assert naps.seconds == pytest.approx([0.2])
        with pytest.raises(OutputExpiredError):
            client.download(f"{scripted.base_url}/gone.glb", tmp_path / "gone.glb")
    assert (tmp_path / "m.glb").read_bytes() == b"glTF.." and scripted.hits["/m.glb"] == 2


def test_upload_put_is_retried_and_too_large_files_never_leave(
    client: Hunyuan3DClient, emulator, image_path: Path, tmp_path: Path
) -> None:
    emulator.configure(rules=[{"endpoint": "upload_put", "kind": "503", "count": 1}])
    url = client.upload(image_path)
    assert url.endswith("/disc.png") and requests_to(emulator, "upload_put") == 2
    huge = tmp_path / "huge.png"
    with huge.open("wb") as fh:
        fh.truncate(MAX_UPLOAD_BYTES + 1)  # sparse: nothing is really written
    with pytest.raises(UploadTooLargeError, match="200 MiB"):
        client.upload(huge)
    assert requests_to(emulator, "upload") == 1


def test_unknown_prediction_is_not_found(client, emulator) -> None:
    with pytest.raises(PredictionNotFoundError) as caught:
        client.get("does-not-exist")
    assert caught.value.status_code == 404 and caught.value.prediction_id == "does-not-exist"
    assert requests_to(emulator, "result") == 1


def test_rejected_key_is_an_authentication_error(scripted, api_key: str) -> None:
    # The emulator accepts any well-formed bearer token, so a refusing API is scripted here.
    unauthorized = Reply(401, b'{"code": 401, "message": "Unauthorized: invalid API key"}')
    scripted.script[f"/api/v3/{DEFAULT_MODEL}"] = [unauthorized]
    with Hunyuan3DClient(settings_for(scripted.base_url, api_key)) as client:
        with pytest.raises(AuthenticationError) as caught:
            client.submit("http://images.example/cat.png")
    error = caught.value
    assert error.status_code == 401 and "WAVESPEED_API_KEY" in str(error)
    assert "invalid API key" in str(error) and not error.transient
    assert scripted.hits[f"/api/v3/{DEFAULT_MODEL}"] == 1
    assert_key_hidden(api_key, error)


def test_the_key_never_reaches_logs_or_errors(
    emulator, api_key: str, image_path: Path, tmp_path: Path, scripted, caplog
) -> None:
    caplog.set_level(logging.DEBUG)  # root: includes httpx and httpcore
    errors: list[BaseException] = []
    settings = settings_for(emulator.base_url, api_key)
    emulator.configure(
        rules=[
            {"endpoint": "result", "kind": "429", "count": 1, "retry_after": 0.01},
            {"endpoint": "result", "kind": "drop", "count": 1},
            {"endpoint": "upload", "kind": "502", "count": 1},
        ]
    )
    with Hunyuan3DClient(settings) as client:
        client.generate(image_path, tmp_path / "ok.glb")
        emulator.configure(rules=[{"endpoint": "submit", "kind": "drop_after_accept"}])
        for call in (
            lambda: client.submit("http://images.example/cat.png"),
            lambda: client.get("nope"),
        ):
            try:
                call()
            except WaveSpeedError as exc:
                errors.append(exc)
    scripted.script["/api/v3/predictions/echo/result"] = [
        Reply(
            400, lambda h: f'{{"code": 1400, "message": "{h.headers["Authorization"]}"}}'.encode()
        )
    ]
    with Hunyuan3DClient(settings_for(scripted.base_url, api_key)) as client:
        try:
            client.get("echo")
        except InvalidInputError as exc:
            errors.append(exc)
        assert_key_hidden(api_key, client._p.result("p-1"))  # requests in tracebacks' locals
    assert [type(e) for e in errors] == [
        SubmissionUncertainError,
        PredictionNotFoundError,
        InvalidInputError,
    ]
    assert_key_hidden(api_key, settings, *errors)
    assert api_key not in caplog.text
    for record in caplog.records:
        assert api_key not in record.getMessage()
    assert any(r.name == LOGGER and r.levelno == logging.WARNING for r in caplog.records)
    assert any(r.name.startswith("httpx") for r in caplog.records)


def test_the_key_goes_only_to_the_api_origin(scripted, api_key, tmp_path) -> None:
    seen: dict[str, str | None] = {}

    def record(handler: BaseHTTPRequestHandler) -> bytes:
        seen[handler.path] = handler.headers.get("Authorization")
        return b"glTF"

    scripted.script["/m.glb"] = [Reply(200, record)]
    other_origin = scripted.base_url.replace("127.0.0.1", "localhost")
    with Hunyuan3DClient(settings_for(scripted.base_url, api_key)) as client:
        client.download(f"{other_origin}/m.glb", tmp_path / "a.glb")
        assert seen["/m.glb"] is None
        client.download(f"{scripted.base_url}/m.glb", tmp_path / "b.glb")
        assert seen["/m.glb"] == f"Bearer {api_key}"


# --------------------------------------------------------------------------- async twin


def test_async_generate_and_resume(emulator, api_key: str, image_path: Path, tmp_path: Path):
    async def scenario() -> tuple[GenerationResult, Prediction, list[str]]:
        settings = settings_for(emulator.base_url, api_key)
        statuses: list[str] = []

        async def on_poll(p: Prediction) -> None:
            statuses.append(p.status)

        async with AsyncHunyuan3DClient(settings) as client:
            result = await client.generate(image_path, tmp_path / "a.glb")
            emulator.configure(hold=True)
            pending = await client.submit(result.image_url)
            with pytest.raises(PredictionTimeoutError) as caught:
                await client.wait(pending, deadline=0.2, on_poll=on_poll)
            emulator.configure(hold=False)
            resumed = await client.wait(caught.value.prediction_id, on_poll=on_poll)
            return result, resumed, statuses

    result, resumed, statuses = asyncio.run(scenario())
    assert result.prediction.succeeded and result.prediction.polls >= 1
    assert result.mesh_path.read_bytes()[:4] == b"glTF"
    assert result.mesh_bytes == result.mesh_path.stat().st_size
    assert resumed.succeeded and statuses[-1] == "completed" and len(statuses) >= 2
    stats = emulator.stats()
    assert stats["submissions"] == 2 and stats["uploads"] == 1


def test_async_wait_that_is_told_the_forecast_polls_on_it_at_once(
    emulator, api_key: str, image_path: Path
) -> None:
    """A wait without a forecast sleeps its adaptive interval (30 s here) unless `wake` is
    set: then it plans again on the forecast just learned and polls within a second."""
    slow = PollPolicy(initial_interval=30.0, max_interval=30.0, delay_cost=400.0, deadline=90)
    known: list[CompletionForecast] = []

    async def scenario() -> Prediction:
        asked, wake = asyncio.Event(), asyncio.Event()

        def forecast() -> CompletionForecast | None:
            asked.set()
            return known[0] if known else None

        async with AsyncHunyuan3DClient(settings_for(emulator.base_url, api_key, poll=slow)) as c:
            submitted = await c.submit(await c.upload(image_path))
            assert submitted.submitted_at is not None
            # Half a second old: inside the window below, where polls may be dense.
            submitted = replace(submitted, submitted_at=submitted.submitted_at - timedelta(0, 0.5))
            waiting = asyncio.create_task(c.wait(submitted, forecast=forecast, wake=wake))
            await asyncio.wait_for(asked.wait(), 10)  # it planned its first poll: 30-60 s away
            known.append(CompletionForecast(0.0, 20.0, 1.0))
            wake.set()
            return await asyncio.wait_for(waiting, 10)  # not 30 s: it woke and planned again

    done = asyncio.run(scenario())
    assert done.succeeded and done.observation is not None


def test_async_submit_is_not_resent_and_get_retries(emulator, api_key: str, image_path: Path):
    async def scenario() -> tuple[WaveSpeedError, Prediction]:
        async with AsyncHunyuan3DClient(settings_for(emulator.base_url, api_key)) as client:
            url = await client.upload(image_path)
            emulator.configure(rules=[{"endpoint": "submit", "kind": "drop_after_accept"}])
            with pytest.raises(SubmissionUncertainError) as caught:
                await client.submit(url)
            emulator.configure(rules=[{"endpoint": "result", "kind": "503", "count": 2}])
            prediction = await client.submit(url)
            return caught.value, await client.get(prediction.id)

    error, seen = asyncio.run(scenario())
    assert_key_hidden(api_key, error)
    assert seen.id
    stats = emulator.stats()
    assert stats["submissions"] == 2 and stats["requests"]["submit"] == 2
    assert stats["requests"]["result"] == 3


def test_async_download_limit_leaves_no_file(scripted, api_key: str, tmp_path: Path) -> None:
    scripted.script["/big.glb"] = [Reply(200, b"x" * 50_000)]
    dest = tmp_path / "big.glb"

    async def scenario() -> None:
        async with AsyncHunyuan3DClient(settings_for(scripted.base_url, api_key)) as client:
            with pytest.raises(OutputDownloadError):
                await client.download(f"{scripted.base_url}/big.glb", dest, max_bytes=10_000)

    asyncio.run(scenario())
    assert not dest.exists() and not dest.with_name("big.glb.part").exists()


@pytest.mark.parametrize("transport", ["default", "given"])
def test_async_download_of_several_mib_is_whole(
    scripted, api_key: str, tmp_path: Path, transport: str
) -> None:
    """Many write batches (256 KiB) and not a multiple of one: every byte, in order. By
    default a blocking client downloads in the async client's threads; through a transport
    the caller gives (async), on the event loop."""
    payload = os.urandom(3 * (1 << 20) + 4099)
    scripted.script["/mesh.glb"] = [Reply(200, payload)]
    dest = tmp_path / "mesh.glb"
    given = httpx.AsyncHTTPTransport() if transport == "given" else None

    async def scenario() -> tuple[int, int]:
        settings = settings_for(scripted.base_url, api_key)
        async with AsyncHunyuan3DClient(settings, transport=given) as client:
            size = await client.download(f"{scripted.base_url}/mesh.glb", dest)
            return size, len(client._file_threads._threads)

    size, threads_used = asyncio.run(scenario())
    assert size == len(payload)
    assert threads_used == (1 if transport == "default" else 0)
    assert dest.read_bytes() == payload
    assert [p.name for p in tmp_path.iterdir()] == ["mesh.glb"]


# --------------------------------------------------------------------------- list and balance


def test_list_and_iterate_predictions_with_filters(client, emulator) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    made = [client.submit(f"http://127.0.0.1:9/{i}.png").id for i in range(5)]
    page = client.list_predictions(page=1, page_size=2, model=DEFAULT_MODEL)
    assert [p.id for p in page.items] == made[::-1][:2]  # newest first
    assert (page.page, page.page_size, page.total, page.has_next) == (1, 2, 5, True)
    assert all(isinstance(p, Prediction) and "image" not in p.raw for p in page.items)
    last = client.list_predictions(page=3, page_size=2)
    assert [p.id for p in last.items] == made[:1] and not last.has_next
    walked = list(client.iter_predictions(page_size=2, created_after=before))
    assert [p.id for p in walked] == made[::-1]
    assert requests_to(emulator, "list") == 2 + 3  # 3 pages of 2 for 5 items
    assert list(client.iter_predictions(created_after=datetime.now(UTC) + timedelta(hours=1))) == []
    assert list(client.iter_predictions(model="wavespeed-ai/hunyuan3d/v2.0")) == []


def test_list_refuses_bad_input_before_sending(client, emulator) -> None:
    for bad in (
        {"page": 0},
        {"page_size": 101},
        {"page_size": True},
        {"status": "done"},
        {"created_after": datetime(2026, 1, 1)},  # naive: which zone?
        {"created_before": "last tuesday"},
        {"model": "predictions/x"},
    ):
        with pytest.raises(ValueError):
            client.list_predictions(**bad)
        with pytest.raises(ValueError):
            client.iter_predictions(
                **{k: v for k, v in bad.items() if k != "page"} or {"page_size": 0}
            )
    assert requests_to(emulator, "list") == 0


def test_the_list_post_is_retried_like_a_get(client, emulator) -> None:
    emulator.configure(
        rules=[
            {"endpoint": "list", "kind": "503", "count": 1},
            {"endpoint": "list", "kind": "drop", "count": 1},
        ]
    )
    assert client.list_predictions().total == 0
    assert requests_to(emulator, "list") == 3


def test_the_list_tells_a_dropped_submit_from_a_lost_answer(client, emulator, image_url) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    outcomes = {}
    for kind in ("drop", "drop_after_accept"):
        emulator.configure(rules=[{"endpoint": "submit", "kind": kind, "match": kind}])
        with pytest.raises(SubmissionUncertainError):
            client.submit(f"{image_url}?{kind}")
        outcomes[kind] = list(client.iter_predictions(created_after=before))
    assert outcomes["drop"] == []  # never processed
    assert len(outcomes["drop_after_accept"]) == 1  # it exists: do not submit it again


def test_balance_from_either_route_falls_back_on_404_and_remembers(emulator, api_key) -> None:
    with Hunyuan3DClient(settings_for(emulator.base_url, api_key)) as client:
        assert client.get_balance() == Balance(100.0, "USD")  # `data.balance` only: USD
        emulator.configure(balance_routes=["account/balance"])
        assert client.get_balance() == Balance(100.0, "USD")
        assert client.get_balance().amount == 100.0
        assert requests_to(emulator, "balance") == 1 + 2 + 1  # the 404 is paid once
        emulator.configure(balance_routes=[])
        with pytest.raises(InvalidInputError, match="both answered HTTP 404") as caught:
            client.get_balance()
        assert caught.value.status_code == 404 and not caught.value.transient


def test_balance_decreases_as_predictions_complete(client, emulator, image_url) -> None:
    emulator.configure(price=0.4)
    start = client.get_balance().amount
    client.wait(client.submit(image_url))
    assert start - client.get_balance().amount == pytest.approx(0.4)


# --------------------------------------------------------------------------- learned polling


def test_wait_with_a_forecast_returns_an_honest_observation(emulator, api_key, image_path):
    poll = PollPolicy(
        initial_interval=0.05, max_interval=0.2, multiplier=2.0, deadline=20.0, burst_interval=0.01
    )
    with Hunyuan3DClient(settings_for(emulator.base_url, api_key, poll=poll)) as client:
        url = client.upload(image_path)
        client.wait(client.submit(url))  # make the mesh once (cached), so timings are the latency
        polls_before = requests_to(emulator, "result")
        started = time.monotonic()  # before our submit: our clock's zero is later than this
        done = client.wait(client.submit(url), forecast=CompletionForecast.around(0.3))
    seen = done.observation
    assert seen is not None and seen.prediction_id == done.id and seen.status == "completed"
    assert seen.model == DEFAULT_MODEL and seen.inference_s == done.inference_ms / 1000
    timeline = emulator.timeline(done.id)
    assert timeline is not None and timeline[1] is not None
    created, completed = timeline
    # The true end, in seconds since our submit, is in [completed - created, completed - started];
    # the observation must contain it (10 ms of slack for our wall clock -> monotonic offset).
    assert seen.not_done_s <= completed - started + 0.01
    assert seen.earliest_s <= completed - started + 0.01
    assert seen.done_s >= completed - created - 0.01
    assert done.polls == requests_to(emulator, "result") - polls_before


def test_async_wait_with_a_forecast_observes_too(emulator, api_key, image_path) -> None:
    async def scenario() -> Prediction:
        async with AsyncHunyuan3DClient(settings_for(emulator.base_url, api_key)) as client:
            url = await client.upload(image_path)
            return await client.wait(
                await client.submit(url), forecast=CompletionForecast.around(1)
            )

    done = asyncio.run(scenario())
    assert done.succeeded and done.observation is not None
    assert done.observation.not_done_s < done.observation.done_s
    assert done.polls == requests_to(emulator, "result")


def test_async_list_iterate_and_balance(emulator, api_key) -> None:
    async def scenario() -> tuple[list[str], list[str], Balance]:
        async with AsyncHunyuan3DClient(settings_for(emulator.base_url, api_key)) as client:
            made = [(await client.submit(f"http://127.0.0.1:9/{i}.png")).id for i in range(3)]
            emulator.configure(balance_routes=["account/balance"])
            walked = [p.id async for p in client.iter_predictions(page_size=2)]
            return made, walked, await client.get_balance()

    made, walked, balance = asyncio.run(scenario())
    assert walked == made[::-1] and balance == Balance(100.0, "USD")
    assert requests_to(emulator, "list") == 2 and requests_to(emulator, "balance") == 2


# --------------------------------------------------------------------------- timeouts, URLs


def test_a_result_read_timeout_is_retried_then_reported(emulator, api_key, image_path) -> None:
    timeouts = Timeouts(connect=2.0, read=0.2)
    retry = HttpRetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.1, jitter=0.0)
    with Hunyuan3DClient(
        settings_for(emulator.base_url, api_key, timeouts=timeouts, retry=retry)
    ) as client:
        prediction = client.submit("http://127.0.0.1:9/x.png")
        emulator.configure(rules=[{"endpoint": "result", "kind": "slow", "delay": 0.6}])
        assert client.get(prediction.id).id == prediction.id  # one timeout, then an answer
        emulator.configure(rules=[{"endpoint": "result", "kind": "slow", "delay": 0.6, "count": 2}])
        with pytest.raises(ApiConnectionError) as caught:
            client.get(prediction.id)
    assert "ReadTimeout" in str(caught.value) and caught.value.transient
    assert caught.value.attempts == 2 and requests_to(emulator, "result") == 4


def test_outputs_are_fetched_only_over_http_s(scripted, api_key, tmp_path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not for download")
    scripted.script["/to-file.glb"] = [Reply(302, headers={"Location": secret.as_uri()})]
    scripted.script["/to-ftp.glb"] = [Reply(302, headers={"Location": "ftp://127.0.0.1/m.glb"})]
    dest = tmp_path / "out" / "m.glb"
    with Hunyuan3DClient(settings_for(scripted.base_url, api_key)) as client:
        for url in (secret.as_uri(), "ftp://127.0.0.1/m.glb", "data:,glTF", "m.glb"):
            with pytest.raises(OutputDownloadError, match="only http") as refused:
                client.download(url, dest)
            assert not refused.value.transient and refused.value.attempts == 1
        for path in ("/to-file.glb", "/to-ftp.glb"):
            with pytest.raises(OutputDownloadError, match="not http") as redirected:
                client.download(f"{scripted.base_url}{path}", dest)
            assert not redirected.value.transient and scripted.hits[path] == 1  # not retried
    assert not dest.exists() and not dest.with_name("m.glb.part").exists()

    async def scenario() -> OutputDownloadError:
        async with AsyncHunyuan3DClient(settings_for(scripted.base_url, api_key)) as client:
            with pytest.raises(OutputDownloadError, match="not http") as caught:
                await client.download(f"{scripted.base_url}/to-file.glb", dest)
            return caught.value

    assert not asyncio.run(scenario()).transient and scripted.hits["/to-file.glb"] == 2
