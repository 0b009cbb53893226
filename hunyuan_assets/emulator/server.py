"""A local WaveSpeed v3 API: same paths, status codes and envelope as the real one.

Predictions live in memory and move created -> processing -> completed/failed over `latency`
seconds; the GLB is made in a background thread from the fetched input image. They are listed
(`POST /api/v3/predictions`) and found for `retention` seconds (7 days by default, measured on
the emulator's wall clock, which a test may replace). Each completed prediction costs `price`
from the account's `balance` (`GET /api/v3/balance`, `GET /api/v3/account/balance`). Faults
(see `faults.py`) are injected per request before the real handler runs, so a client sees
exactly what a flaky network or an overloaded provider would show it; `EmulatorServer.restart()`
is a crash and restart: connections cut, predictions forgotten, same port.

Bytes do not stay in memory: uploads and GLBs are spooled to a temporary directory the server
owns (deleted on stop) and served from there, so a long run with realistic 3.5 MB outputs costs
disk, not RAM. Mesh synthesis runs at most one per CPU at a time, however many predictions
are in flight: predictions queue for it instead of thrashing the machine. It runs on threads
(`synthesis="threads"`, quick to start: tests) or in worker processes (`"processes"`, the
standalone server's default), where it cannot hold the serving process's GIL: the real API
answers a submit or a poll in a round trip however busy its GPUs are, and so should this.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mimetypes
import multiprocessing
import os
import random
import re
import secrets
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, quote, unquote, urlsplit

import httpx

from hunyuan_assets.emulator.faults import BALANCE_ROUTES, ERROR_KINDS, FaultConfig, FaultRule

log = logging.getLogger("hunyuan_assets.emulator")

MAX_UPLOAD_BYTES = 200 * 2**20  # the provider's documented upload limit
SYNC_MODE_TIMEOUT = 60.0  # assumed: how long `enable_sync_mode` holds the submit open
_FETCH_TIMEOUT = 30.0
_STATUSES = ("created", "processing", "completed", "failed")
CORRUPTIONS = ("garbage", "truncated", "untextured")  # what `corrupt_output` may make
# Keep in step with meshgen.OUTPUT_PROFILES (not imported here: meshgen pulls in numpy).
OUTPUT_PROFILES = ("small", "realistic")
# Synthesis is CPU-bound: more at once than there are CPUs only adds memory and contention.
_SYNTHESIS_SLOTS = max(1, os.cpu_count() or 1)
SYNTHESIS_MODES = ("threads", "processes")
_LATENESS_KEPT = 100_000
_LIST_STATUSES = ("completed", "failed", "processing")  # the documented list filters
_MAX_PAGE_SIZE = 100
WallClock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _make_glb(image_bytes: bytes, seed: int, profile: str) -> bytes:
    # Imported on first use: meshgen pulls in numpy/PIL, and the CLI should start fast.
    from hunyuan_assets.emulator.meshgen import image_to_glb

    return image_to_glb(image_bytes, seed=seed, profile=profile)


def _start_synthesis_worker() -> None:
    """A worker process leaves Ctrl-C to the server (which stops it) and loads meshgen once."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import hunyuan_assets.emulator.meshgen  # noqa: F401


def _ready() -> None:
    """Nothing: submitted once per worker so that all of them are started up front."""


def _synthesis_pool(mode: str) -> Executor:
    """Where meshes are made. On threads, a synthesis holds the GIL and the requests being
    served wait their turn for it: on 2 CPUs, 32 submits sent while 32 realistic meshes
    were being made took 183 ms, against 100 ms with worker processes. Those are spawned,
    not forked (the server already runs threads), and loaded before the first prediction,
    so none of them waits ~0.5 s for numpy and Pillow to import."""
    if mode not in SYNTHESIS_MODES:
        raise ValueError(f"synthesis must be one of {list(SYNTHESIS_MODES)}, got {mode!r}")
    if mode == "threads":
        return ThreadPoolExecutor(_SYNTHESIS_SLOTS, thread_name_prefix="synthesis")
    pool = ProcessPoolExecutor(
        _SYNTHESIS_SLOTS,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_synthesis_worker,
    )
    for started in [pool.submit(_ready) for _ in range(_SYNTHESIS_SLOTS)]:  # one process each
        started.result()
    return pool


def _check_profile(profile: Any) -> str:
    if profile not in OUTPUT_PROFILES:
        raise ValueError(f"output_profile must be one of {list(OUTPUT_PROFILES)}, got {profile!r}")
    return str(profile)


@dataclass
class _Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    file: Path | None = None  # sent instead of `body`, straight from disk


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> _Response:
    return _Response(status, json.dumps(payload).encode(), headers=headers or {})


def _ok(data: Any) -> _Response:
    return _json(200, {"code": 200, "message": "success", "data": data})


def _json_object(body: bytes) -> dict | None:
    """A request body that must be a JSON object (an empty one is `{}`); None otherwise."""
    try:
        payload = json.loads(body or b"{}")
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def _error(
    status: int, code: int, message: str, headers: dict[str, str] | None = None
) -> _Response:
    return _json(status, {"code": code, "message": message}, headers)


def _storage_error(status: int, code: str, message: str) -> _Response:
    """What an object store (S3/OSS presigned URL) answers: XML, not the API envelope."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    )
    return _Response(status, body.encode(), "application/xml")


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _safe_filename(name: str) -> str:
    name = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name if name not in ("", ".", "..") else "upload"


def _corruption(selector: Any, image: str, fail_error: str | None) -> str | None:
    if fail_error is not None or selector is None or not selector.take(image):
        return None
    return selector.error if selector.error in CORRUPTIONS else "garbage"


def _corrupt(glb: bytes, how: str | None) -> bytes:
    """A broken output for tests of mesh checks: not a GLB at all, a GLB cut short (served
    whole, so only the file itself shows it), or a GLB with no material."""
    if how == "garbage":
        return b"<html>502 Bad Gateway</html>" + glb[:64]
    if how == "truncated":
        return glb[: len(glb) * 2 // 3]
    if how == "untextured":
        return _without_materials(glb)
    return glb


def _without_materials(glb: bytes) -> bytes:
    """The same GLB with its materials, textures and images dropped from the JSON chunk (the
    binary chunk is kept as it is: its image bytes are simply no longer referenced)."""
    json_length, _ = struct.unpack_from("<II", glb, 12)
    tree = json.loads(glb[20 : 20 + json_length])
    for name in ("materials", "textures", "images", "samplers"):
        tree.pop(name, None)
    for mesh in tree.get("meshes", []):
        for primitive in mesh.get("primitives", []):
            primitive.pop("material", None)
    text = json.dumps(tree, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    rest = glb[20 + json_length :]
    header = struct.pack("<4sII", b"glTF", 2, 12 + 8 + len(text) + len(rest))
    return header + struct.pack("<I4s", len(text), b"JSON") + text + rest


class _InputError(Exception):
    """The input image could not be used; the message becomes the prediction's `error`."""


@dataclass
class _Prediction:
    id: str
    model: str
    image: str
    duration: float
    created_at: datetime
    submitted: float  # time.monotonic()
    fail_error: str | None  # set when a `fail_tasks` fault selected this prediction
    nsfw: bool
    corrupt: str | None  # one of CORRUPTIONS: a `corrupt_output` fault selected this one
    webhook: str | None  # recorded, not delivered (webhooks are a later capability)
    profile: str  # the output profile when it was submitted
    status: str = "created"
    error: str = ""
    output: Path | None = None  # the spooled GLB, once completed
    output_token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    inference_ms: int = 0
    completed: float | None = None  # time.monotonic() when terminal; output URLs expire from here
    sequence: int = 0  # creation order, to list same-millisecond predictions newest first
    # Set when terminal (or the emulator stops). Sync-mode submits wait on this, not on the
    # emulator's condition: with hundreds in flight, waking every waiter at every completion
    # costs more than the work itself.
    finished: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Media:
    filename: str
    content_type: str
    path: Path | None = None  # the spooled bytes; None until the PUT arrives


class _Emulator:
    """All state, behind one condition variable (it is also the lock)."""

    def __init__(
        self,
        config: Mapping[str, Any],
        seed: int,
        output_profile: str,
        synthesis: Executor,
        wall: WallClock = _utc_now,
    ) -> None:
        self._initial = dict(config)
        self._initial_profile = _check_profile(output_profile)
        self.output_profile = self._initial_profile
        self.seed = seed
        self.wall = wall
        self._cond = threading.Condition()
        self._rng = random.Random(seed)
        self._fault_rng = random.Random(f"faults:{seed}")  # its own stream: jitter draws differ
        self._stopping = False
        self.config = FaultConfig()
        self.config.merge(self._initial)
        self._predictions: dict[str, _Prediction] = {}
        self._media: dict[str, _Media] = {}
        self._counters = self._zero_counters()
        self._sequence = 0
        # per finished prediction, finish - deadline; the last ones only, so memory stays flat
        self._late_ms: deque[float] = deque(maxlen=_LATENESS_KEPT)
        # Spooled bytes: one GLB file per distinct (picture, seed, profile, corruption), so a
        # picture submitted again is served without synthesis; one file per upload.
        self._spool: Path | None = None
        self._outputs: dict[str, Path] = {}
        self._in_progress: dict[str, threading.Event] = {}
        # Synthesis on a few workers of its own, not on each prediction's thread: glibc gives
        # every thread that allocates its own arena, and 300 threads each synthesising once
        # held ~4x the memory (measured: 354 vs 91 MiB peak RSS at 300 in flight).
        self._synthesis = synthesis

    @staticmethod
    def _zero_counters() -> dict[str, Any]:
        return {
            "submissions": 0,
            "result_requests": 0,
            "list_requests": 0,
            "balance_requests": 0,
            "uploads": 0,
            "output_downloads": 0,
            "faults_injected": 0,
            "faults": {},  # what was injected, by kind: see _count_fault
            "spent": 0.0,
            "restarts": 0,
            "in_flight": 0,  # predictions created and not yet terminal
            "max_in_flight": 0,  # the most at once: what the clients' concurrency achieved
            "requests": {},
        }

    def successor(self) -> _Emulator:
        """The emulator after a crash and restart: predictions (and their tasks) are gone.

        What lives outside the process in reality survives: uploaded media (object storage),
        the account (balance, spending), the fault settings and the counters, which belong to
        whoever runs the test.
        """
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            for p in self._predictions.values():
                p.finished.set()  # a sync-mode submit in flight returns (its connection is cut)
            # The synthesis workers carry on: they stand for the provider's GPUs, not its API.
            after = _Emulator(
                self._initial, self.seed, self._initial_profile, self._synthesis, self.wall
            )
            after.output_profile = self.output_profile
            after._rng, after._fault_rng = self._rng, self._fault_rng
            after.config, after._media = self.config, self._media
            # The spool (uploads, and GLBs already made: a cache) passes to the successor, so
            # only its stop() deletes it. Our tasks stop at their next step, writing nothing.
            after._spool, after._outputs = self._spool, self._outputs
            self._spool = None
            after._counters, after._late_ms = self._counters, self._late_ms
            after._counters["restarts"] += 1
            after._counters["in_flight"] = 0  # the forgotten ones will never finish
            return after

    # -- control ---------------------------------------------------------------------------
    def configure(self, body: Mapping[str, Any]) -> dict[str, Any]:
        with self._cond:
            faults = dict(body) if isinstance(body, Mapping) else body
            profile = self.output_profile
            if isinstance(faults, dict) and "output_profile" in faults:
                profile = _check_profile(faults.pop("output_profile"))
            self.config.merge(faults)  # validates all before changing anything
            self.output_profile = profile  # for predictions submitted from now on
            self._cond.notify_all()  # a released hold or a shorter latency takes effect now
            return self._config_json()

    def config_json(self) -> dict[str, Any]:
        with self._cond:
            return self._config_json()

    def _config_json(self) -> dict[str, Any]:
        return dict(self.config.to_json(), output_profile=self.output_profile)

    def reset(self) -> None:
        """Faults, counters (so the balance too) and the fault generator back to the start;
        predictions and media are kept."""
        with self._cond:
            self.config = FaultConfig()
            self.config.merge(self._initial)
            self.output_profile = self._initial_profile
            self._counters = self._zero_counters()
            self._fault_rng = random.Random(f"faults:{self.seed}")
            self._late_ms.clear()
            self._cond.notify_all()

    def stats(self) -> dict[str, Any]:
        """Named counters count work done (predictions created, results answered, media stored,
        GLBs served); `requests` counts every request per endpoint, faulted ones included;
        `faults` counts what was injected by kind (`faults_injected`: the rules' share);
        `late_ms` says how long after their latency the last predictions finished (an emulator
        that keeps up stays near 0; `hold` makes it grow on purpose)."""
        with self._cond:
            by_status = dict.fromkeys(_STATUSES, 0)
            for p in self._predictions.values():
                by_status[p.status] = by_status.get(p.status, 0) + 1
            counters = self._counters
            stats = dict(
                counters, requests=dict(counters["requests"]), faults=dict(counters["faults"])
            )
            stats["spent"] = round(stats["spent"], 6)
            stats["predictions"] = by_status
            stats["balance"] = self._balance()
            late = sorted(self._late_ms)
            stats["late_ms"] = {
                "finished": len(late),
                "p50": round(late[len(late) // 2], 1) if late else None,
                "p95": round(late[int(len(late) * 0.95)], 1) if late else None,
                "max": round(late[-1], 1) if late else None,
            }
            return stats

    def stop(self) -> None:
        """Stop every prediction and delete the spooled bytes (outputs, uploads)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            for p in self._predictions.values():
                p.finished.set()  # sync-mode submits return now
            spool, self._spool = self._spool, None
            self._outputs.clear()
            for media in self._media.values():
                media.path = None
        self._synthesis.shutdown(wait=False, cancel_futures=True)
        if spool is not None:
            shutil.rmtree(spool, ignore_errors=True)

    @property
    def spool_dir(self) -> Path | None:
        with self._cond:
            return self._spool

    def _spool_file(self, kind: str, name: str) -> Path:
        """A path in the server's spool directory (made on first use)."""
        with self._cond:
            if self._stopping:
                raise RuntimeError("the emulator is stopping")
            if self._spool is None:
                self._spool = Path(tempfile.mkdtemp(prefix="hunyuan-emulator-"))
                (self._spool / "outputs").mkdir()
                (self._spool / "media").mkdir()
            return self._spool / kind / name

    def count(self, name: str) -> None:
        with self._cond:
            self._counters[name] += 1

    def count_request(self, endpoint: str) -> None:
        with self._cond:
            requests = self._counters["requests"]
            requests[endpoint] = requests.get(endpoint, 0) + 1

    def take_rule(self, endpoint: str, subject: str) -> FaultRule | None:
        with self._cond:
            rule = self.config.take_rule(endpoint, subject, self._fault_rng.random)
            if rule is not None:
                self._counters["faults_injected"] += 1
                self._count_fault(f"{endpoint} {rule.kind}")
            return rule

    def give_back(self, endpoint: str, rule: FaultRule) -> None:
        """A rule taken for a request it turned out not to apply to: uncounted, its use back."""
        with self._cond:
            self._counters["faults_injected"] -= 1
            faults, name = self._counters["faults"], f"{endpoint} {rule.kind}"
            faults[name] -= 1
            if not faults[name]:
                del faults[name]
            if rule.remaining >= 0:
                rule.remaining += 1

    def _count_fault(self, name: str) -> None:
        """Under the lock: one more fault of this "<endpoint> <kind>" (rules), "task <fault>"
        (fail_tasks, corrupt_output) or "output expired" (output_ttl)."""
        faults = self._counters["faults"]
        faults[name] = faults.get(name, 0) + 1

    # -- predictions -----------------------------------------------------------------------
    def submit(
        self, model: str, image: str, webhook: str | None, base: str
    ) -> tuple[_Prediction, dict]:
        with self._cond:
            latency, jitter = self.config.latency, self.config.jitter
            fail = self.config.fail_tasks
            nsfw = self.config.nsfw
            fail_error = None
            if fail is not None and fail.take(image):
                fail_error = fail.error or "Task failed: injected by the emulator (fail_tasks)"
            prediction = _Prediction(
                id=uuid.uuid4().hex,  # unique across runs, like the real ids; only jitter is seeded
                model=model,
                image=image,
                duration=max(0.0, latency + self._rng.uniform(-jitter, jitter)),
                created_at=self.wall(),
                submitted=time.monotonic(),
                fail_error=fail_error,
                nsfw=fail_error is None and nsfw is not None and nsfw.take(image),
                corrupt=_corruption(self.config.corrupt_output, image, fail_error),
                webhook=webhook,
                sequence=self._sequence,
                profile=self.output_profile,
            )
            self._sequence += 1
            self._predictions[prediction.id] = prediction
            self._counters["submissions"] += 1
            self._counters["in_flight"] += 1
            self._counters["max_in_flight"] = max(
                self._counters["max_in_flight"], self._counters["in_flight"]
            )
            if prediction.fail_error is not None:
                self._count_fault("task fail_tasks")
            if prediction.corrupt is not None:
                self._count_fault(f"task corrupt_output:{prediction.corrupt}")
            data = self._render(prediction, base)
        threading.Thread(
            target=self._run, args=(prediction,), name=f"task-{prediction.id[:8]}", daemon=True
        ).start()
        return prediction, data

    def get(self, prediction_id: str) -> _Prediction | None:
        """The prediction, unless unknown or past the retention."""
        with self._cond:
            p = self._predictions.get(prediction_id)
            return p if p is not None and self._retained(p, self.wall()) else None

    def timeline(self, prediction_id: str) -> tuple[float, float | None] | None:
        with self._cond:
            p = self._predictions.get(prediction_id)
            return None if p is None else (p.submitted, p.completed)

    def _retained(self, p: _Prediction, now: datetime) -> bool:
        return (now - p.created_at).total_seconds() <= self.config.retention

    def list_predictions(
        self, *, page: int, page_size: int, filters: Mapping[str, Any], base: str
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of the retained predictions matching `filters`, newest first, and the total."""
        with self._cond:
            now = self.wall()
            matching = [p for p in self._predictions.values() if self._listed(p, filters, now)]
            matching.sort(key=lambda p: (p.created_at, p.sequence), reverse=True)
            chosen = matching[(page - 1) * page_size : page * page_size]
            return [self._render(p, base, listed=True) for p in chosen], len(matching)

    def _listed(self, p: _Prediction, filters: Mapping[str, Any], now: datetime) -> bool:
        after, before = filters.get("created_after"), filters.get("created_before")
        return (
            self._retained(p, now)
            and filters.get("model") in (None, p.model)
            and filters.get("status") in (None, p.status)
            and (after is None or p.created_at >= after)  # both bounds inclusive, as documented
            and (before is None or p.created_at <= before)
        )

    def _balance(self) -> float:
        return round(self.config.balance - self._counters["spent"], 6)

    def balance(self) -> float:
        with self._cond:
            return self._balance()

    def render(self, prediction: _Prediction, base: str) -> dict[str, Any]:
        with self._cond:
            return self._render(prediction, base)

    @staticmethod
    def _render(p: _Prediction, base: str, *, listed: bool = False) -> dict[str, Any]:
        """The API's prediction object. Never the input: the list leaves it out, and so does
        the result endpoint of this model."""
        outputs = (
            [f"{base}/_emulator/outputs/{p.id}/{p.output_token}/mesh.glb"]
            if p.status == "completed"
            else []
        )
        rendered: dict[str, Any] = {
            "id": p.id,
            "model": p.model,
            "outputs": outputs,
            "urls": {"get": f"{base}/api/v3/predictions/{p.id}/result"},
            "has_nsfw_contents": [p.nsfw] * len(outputs),
            "status": p.status,
            "created_at": _iso(p.created_at),
            "error": p.error,
            "timings": {"inference": p.inference_ms},
        }
        if listed and p.completed is not None:
            # The docs show it on some list items: wall time of the task, in milliseconds.
            rendered["executionTime"] = round((p.completed - p.submitted) * 1000)
        return rendered

    def wait_terminal(self, prediction: _Prediction, timeout: float) -> bool:
        return prediction.finished.wait(timeout)

    def _run(self, p: _Prediction) -> None:
        """The prediction's life: a short `created` phase, then make the GLB, then finish at
        the deadline (or later, while `hold` is on)."""
        with self._cond:
            self._cond.wait_for(lambda: self._stopping, timeout=min(p.duration * 0.1, 0.5))
            if self._stopping:
                return
            p.status = "processing"
        started = time.monotonic()
        output, error = None, p.fail_error
        if error is None:
            try:
                output = self._generate(p.image, p.profile, p.corrupt)
            except _InputError as exc:
                error = str(exc)
            except Exception as exc:  # a bug in mesh synthesis must not leave the task hanging
                if self._stopping:  # the spool went away under us: nobody is waiting
                    return
                log.exception("mesh synthesis failed for %s", p.id)
                error = f"internal error while generating the mesh: {type(exc).__name__}: {exc}"
        deadline = p.submitted + p.duration
        with self._cond:
            while not self._stopping:
                remaining = deadline - time.monotonic()
                if self.config.hold:
                    self._cond.wait()
                elif remaining > 0:
                    self._cond.wait(remaining)
                else:
                    break
            if self._stopping:
                return
            now = time.monotonic()
            p.status, p.error, p.output = (
                ("failed", error, None) if error else ("completed", "", output)
            )
            p.inference_ms = round((now - started) * 1000)
            p.completed = now
            self._counters["in_flight"] = max(0, self._counters["in_flight"] - 1)
            if p.status == "completed":
                self._counters["spent"] += self.config.price
            self._late_ms.append((now - deadline) * 1000)
        p.finished.set()

    def _generate(self, url: str, profile: str, corrupt: str | None) -> Path:
        """The spooled GLB for this picture: made once per distinct (picture, seed, profile,
        corruption), by one thread while the others with the same key wait for it."""
        image = self._fetch(url)
        key = f"{hashlib.sha256(image).hexdigest()}-{self.seed}-{profile}-{corrupt or 'ok'}"
        while True:
            with self._cond:
                if key in self._outputs:
                    return self._outputs[key]
                making = self._in_progress.get(key)
                if making is None:
                    making = self._in_progress[key] = threading.Event()
                    break
            making.wait()  # another thread is making it; then look again (it may have failed)
        try:
            try:
                glb = self._synthesis.submit(_make_glb, image, self.seed, profile).result()
            except ValueError as exc:
                prefix = "input is not a decodable image"
                message = str(exc) if str(exc).startswith(prefix) else f"{prefix}: {exc}"
                raise _InputError(message) from exc
            path = self._spool_file("outputs", f"{key}.glb")
            path.write_bytes(_corrupt(glb, corrupt))
            with self._cond:
                self._outputs[key] = path
            return path
        finally:
            with self._cond:
                self._in_progress.pop(key, None)
            making.set()

    def _fetch(self, url: str) -> bytes:
        # Our own upload URLs are read from the spool, so they work behind any port mapping.
        own = re.fullmatch(r"/_emulator/media/([^/]+)/([^/]+)", urlsplit(url).path)
        if own is not None:
            media = self.media(own.group(1), unquote(own.group(2)))
            if media is not None and media.path is not None:
                try:
                    return media.path.read_bytes()
                except OSError:
                    pass  # deleted by a stop: fetch it like anyone else would
        try:
            response = httpx.get(url, timeout=_FETCH_TIMEOUT, follow_redirects=True)
        except httpx.HTTPError as exc:
            raise _InputError(f"could not fetch input image: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise _InputError(f"could not fetch input image: HTTP {response.status_code}")
        return response.content

    # -- media and outputs -----------------------------------------------------------------
    def new_ticket(self, filename: str, content_type: str) -> str:
        token = secrets.token_urlsafe(12)
        with self._cond:
            self._media[token] = _Media(filename, content_type)
        return token

    def put_media(self, token: str, filename: str, data: bytes, content_type: str | None) -> bool:
        with self._cond:
            media = self._media.get(token)
            if media is None or media.filename != filename:
                return False
        # Written outside the lock, to a fresh name, then swapped in: a PUT that replaces an
        # upload never shows a reader half a file.
        path = self._spool_file("media", f"{token}-{secrets.token_hex(4)}")
        path.write_bytes(data)
        with self._cond:
            old, media.path = media.path, path
            media.content_type = content_type or media.content_type
            self._counters["uploads"] += 1
        if old is not None:
            old.unlink(missing_ok=True)
        return True

    def media(self, token: str, filename: str) -> _Media | None:
        with self._cond:
            media = self._media.get(token)
            return media if media is not None and media.filename == filename else None

    def output(self, prediction_id: str, token: str) -> Path | str:
        """The spooled GLB's path, or "missing" / "expired"."""
        with self._cond:
            p = self._predictions.get(prediction_id)
            if p is None or p.output_token != token or p.output is None or p.completed is None:
                return "missing"
            if not self._retained(p, self.wall()):
                return "missing"  # past the retention, an output URL no longer resolves
            ttl = self.config.output_ttl  # the current setting, so a test can expire old outputs
            if ttl is not None and time.monotonic() - p.completed > ttl:
                self._count_fault("output expired")
                return "expired"
            self._counters["output_downloads"] += 1
            return p.output


# -- HTTP ------------------------------------------------------------------------------------
class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 resets connections in bursts of concurrent clients.
    # (and 128 still dropped SYNs when 600 clients connected at once: connect timeouts).
    request_queue_size = 1024
    emulator: _Emulator

    def server_activate(self) -> None:
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().server_activate()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up between requests (after a dropped or cut answer) is normal
        under fault injection, not an error worth a traceback on stderr."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def cut_connections(self) -> None:
        """Close every open connection, keep-alive ones too, as a dying process would."""
        with self._open_lock:
            connections = list(self._open)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _HTTPServerV6(_HTTPServer):
    address_family = socket.AF_INET6


_Route = tuple[str, Callable[["_Handler", dict[str, str], bytes], _Response], dict[str, str]]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes. With Nagle's algorithm on, the body waited for
    # the client's delayed ACK of the headers: ~40 ms on one request in four (measured on
    # sequential submits), which no real API front end adds.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    @property
    def emulator(self) -> _Emulator:
        return self.server.emulator

    @property
    def base(self) -> str:
        """The origin the client used, so URLs we hand out work from where it stands."""
        host = self.headers.get("Host", "")
        if not re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+", host):
            host = f"127.0.0.1:{self.server.server_port}"
        return f"http://{host}"

    # -- plumbing --------------------------------------------------------------------------
    def _dispatch(self) -> None:
        try:
            body = self._read_body()
        except ValueError as exc:
            self.close_connection = True
            self._send(_error(400, 1400, str(exc)))
            return
        path = urlsplit(self.path).path
        route = self._route(path)
        try:
            if route is None:
                if path.startswith("/api/v3/") and not self._authorized():
                    self._send(_unauthorized())
                else:
                    self._send(_error(404, 404, f"no such endpoint: {self.command} {path}"))
                return
            endpoint, handler, params = route
            rule = None
            if endpoint != "control":
                self.emulator.count_request(endpoint)
                rule = self.emulator.take_rule(endpoint, self._subject(endpoint, params, body))
            kind = rule.kind if rule is not None else None
            if kind == "drop":
                self._drop()
            elif rule is not None and kind in ERROR_KINDS:
                self._send(_fault_response(rule))
            elif endpoint in ("submit", "result", "list", "balance", "upload") and not (
                self._authorized()
            ):
                self._send(_unauthorized())
            else:
                response = handler(self, params, body)
                if rule is not None and kind == "truncate" and not 200 <= response.status < 300:
                    # Only an answer with content is cut: an error is sent whole, uninjected.
                    self.emulator.give_back(endpoint, rule)
                    kind = None
                if rule is not None and kind == "drop_after_accept":
                    time.sleep(rule.delay)  # 0 unless given: a proxy that gives up late
                    self._drop()
                    return
                if rule is not None and kind == "slow":
                    time.sleep(rule.delay)
                self._send(response, truncate=kind == "truncate")
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True  # the client went away, or a restart cut it off
        except Exception:
            log.exception("emulator error on %s %s", self.command, path)
            self._send(_error(500, 5000, "internal error in the emulator"))

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
                if sum(map(len, chunks)) > MAX_UPLOAD_BYTES + 2**20:
                    raise ValueError("request body exceeds the 200 MB limit")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_UPLOAD_BYTES + 2**20:
            raise ValueError("request body exceeds the 200 MB limit")
        return self.rfile.read(length) if length else b""

    def _authorized(self) -> bool:
        authorization = self.headers.get("Authorization", "").strip()
        return re.fullmatch(r"Bearer\s+\S+", authorization) is not None

    def _send(self, response: _Response, *, truncate: bool = False) -> None:
        """Send the response; `truncate` sends the full Content-Length but only half the body,
        then closes, as a proxy or CDN that dies mid-transfer does."""
        source = None
        if response.file is not None:
            try:
                source = response.file.open("rb")
            except OSError:  # deleted by a stop while this request was on its way
                response = _storage_error(404, "NoSuchKey", "The specified key does not exist.")
        length = os.fstat(source.fileno()).st_size if source else len(response.body)
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(length))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if truncate:
                body = source.read() if source is not None else response.body
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self._drop()
            elif source is not None:
                self.connection.sendfile(source)  # zero-copy, and without holding the GIL
            else:
                self.wfile.write(response.body)
        finally:
            if source is not None:
                source.close()

    def _drop(self) -> None:
        """Close the socket without a single byte of response, like a dead load balancer."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _subject(self, endpoint: str, params: dict[str, str], body: bytes) -> str:
        """What a rule's `match` is tested against: the image URL where there is one."""
        if endpoint == "submit":
            return str(_json_body(body).get("image", ""))
        if endpoint == "result":
            prediction = self.emulator.get(params["id"])
            return f"{prediction.image if prediction else ''}\n{params['id']}"
        if endpoint == "upload":
            return f"{unquote(self.path)}\n{_json_body(body).get('filename', '')}"
        return unquote(self.path)

    def _route(self, path: str) -> _Route | None:
        method = self.command
        if path.startswith("/api/v3/"):
            rest = path[len("/api/v3/") :].strip("/")
            if method == "POST" and rest == "media/uploads":
                return "upload", _Handler._upload_ticket, {}
            if method == "POST" and rest == "media/upload/binary":
                return "upload", _Handler._upload_binary, {}
            if m := re.fullmatch(r"predictions/([^/]+)/result", rest):
                return ("result", _Handler._result, {"id": m[1]}) if method == "GET" else None
            if method == "POST" and rest == "predictions":
                return "list", _Handler._list, {}
            if method == "GET" and rest in BALANCE_ROUTES:
                return "balance", _Handler._balance, {"route": rest}
            if (
                method == "POST"
                and rest
                and not rest.startswith(("predictions", "media/", "account"))
            ):
                return "submit", _Handler._submit, {"model": rest}
            return None
        if method == "PUT" and (m := re.fullmatch(r"/_emulator/uploads/([^/]+)/([^/]+)", path)):
            return "upload_put", _Handler._upload_put, {"token": m[1], "filename": unquote(m[2])}
        if method == "GET" and (m := re.fullmatch(r"/_emulator/media/([^/]+)/([^/]+)", path)):
            return "media", _Handler._media, {"token": m[1], "filename": unquote(m[2])}
        if method == "GET" and (
            m := re.fullmatch(r"/_emulator/outputs/([^/]+)/([^/]+)/mesh\.glb", path)
        ):
            return "output", _Handler._output, {"id": m[1], "token": m[2]}
        control = {
            ("GET", "/_emulator/stats"): _Handler._stats,
            ("POST", "/_emulator/reset"): _Handler._reset,
            ("GET", "/_emulator/faults"): _Handler._get_faults,
            ("POST", "/_emulator/faults"): _Handler._set_faults,
        }
        handler = control.get((method, path.rstrip("/")))
        return ("control", handler, {}) if handler else None

    # -- the API -----------------------------------------------------------------------------
    def _submit(self, params: dict[str, str], body: bytes) -> _Response:
        payload = _json_object(body)
        if payload is None:
            return _error(400, 1400, "request body must be a JSON object")
        image = payload.get("image")
        if image is None or image == "":
            return _error(400, 1400, "missing required parameter: image")
        if not isinstance(image, str) or urlsplit(image).scheme not in ("http", "https"):
            return _error(400, 1401, "invalid parameter: image must be an http(s) URL")
        query = parse_qs(urlsplit(self.path).query)
        webhook = query["webhook"][0] if "webhook" in query else payload.get("webhook_url")
        webhook = webhook if isinstance(webhook, str) else None
        prediction, data = self.emulator.submit(params["model"], image, webhook, self.base)
        if payload.get("enable_sync_mode") is True:
            # The SDK's sync mode holds the POST open until the task is terminal.
            done = self.emulator.wait_terminal(prediction, SYNC_MODE_TIMEOUT)
            data = self.emulator.render(prediction, self.base)
            if not done:
                data["error"] = f"Sync mode timed out after {SYNC_MODE_TIMEOUT:g}s"
        return _ok(data)

    def _result(self, params: dict[str, str], body: bytes) -> _Response:
        self.emulator.count("result_requests")
        prediction = self.emulator.get(params["id"])
        if prediction is None:
            return _error(404, 404, f"prediction {params['id']} not found")
        return _ok(self.emulator.render(prediction, self.base))

    def _list(self, params: dict[str, str], body: bytes) -> _Response:
        """`POST /api/v3/predictions`: validated as documented, newest first, no inputs."""
        self.emulator.count("list_requests")
        payload = _json_object(body)
        if payload is None:
            return _error(400, 1400, "request body must be a JSON object")
        for name in ("page", "page_size"):
            if name not in payload:
                return _error(400, 1400, f"missing required parameter: {name}")
        page, size = payload["page"], payload["page_size"]
        if isinstance(page, bool) or not isinstance(page, int) or page < 1:
            return _error(400, 1401, "invalid parameter: page must be an integer >= 1")
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= _MAX_PAGE_SIZE:
            return _error(
                400,
                1401,
                f"invalid parameter: page_size must be an integer from 1 to {_MAX_PAGE_SIZE}",
            )
        filters: dict[str, Any] = {}
        model, status = payload.get("model"), payload.get("status")
        if model is not None and (not isinstance(model, str) or not model.strip("/")):
            return _error(400, 1401, "invalid parameter: model must be a model path")
        if model is not None:
            filters["model"] = model.strip("/")
        if status is not None and status not in _LIST_STATUSES:
            return _error(
                400, 1401, f"invalid parameter: status must be one of {list(_LIST_STATUSES)}"
            )
        filters["status"] = status
        for name in ("created_after", "created_before"):
            value = payload.get(name)
            if value is None:
                continue
            moment = _parse_iso8601(value)
            if moment is None:
                return _error(400, 1401, f"invalid parameter: {name} must be an ISO 8601 time")
            filters[name] = moment
        items, total = self.emulator.list_predictions(
            page=page, page_size=size, filters=filters, base=self.base
        )
        return _ok({"page": page, "total": total, "items": items})

    def _balance(self, params: dict[str, str], body: bytes) -> _Response:
        if params["route"] not in self.emulator.config_json()["balance_routes"]:
            return _error(404, 404, f"no such endpoint: GET /api/v3/{params['route']}")
        self.emulator.count("balance_requests")
        amount = self.emulator.balance()
        if params["route"] == "balance":
            return _ok({"balance": amount})  # this docs page shows no currency
        return _ok({"balance": amount, "currency": "USD"})

    def _upload_ticket(self, params: dict[str, str], body: bytes) -> _Response:
        payload = _json_body(body)
        filename, size = payload.get("filename"), payload.get("size")
        if not isinstance(filename, str) or not filename.strip():
            return _error(400, 1400, "missing required parameter: filename")
        if size is not None and (not isinstance(size, int) or size < 0):
            return _error(400, 1401, "invalid parameter: size must be a non-negative integer")
        if isinstance(size, int) and size > MAX_UPLOAD_BYTES:
            return _error(400, 1401, "invalid parameter: the file exceeds the 200 MB upload limit")
        name = _safe_filename(filename)
        content_type = payload.get("content_type") or (
            mimetypes.guess_type(name)[0] or "application/octet-stream"
        )
        token = self.emulator.new_ticket(name, str(content_type))
        quoted = quote(name, safe="")
        return _ok(
            {
                "upload": {
                    "method": "PUT",
                    "url": f"{self.base}/_emulator/uploads/{token}/{quoted}",
                    "headers": {"Content-Type": str(content_type)},
                },
                "download_url": f"{self.base}/_emulator/media/{token}/{quoted}",
            }
        )

    def _upload_put(self, params: dict[str, str], body: bytes) -> _Response:
        # A presigned URL: no Authorization header, the token in the path is the credential.
        stored = self.emulator.put_media(
            params["token"], params["filename"], body, self.headers.get("Content-Type")
        )
        if not stored:
            return _storage_error(403, "AccessDenied", "No upload ticket for this URL")
        etag = f'"{hashlib.md5(body).hexdigest()}"'  # noqa: S324 (an ETag, as S3 computes it)
        return _Response(200, headers={"ETag": etag})

    def _upload_binary(self, params: dict[str, str], body: bytes) -> _Response:
        """The legacy multipart upload (older SDKs): one form field named `file`."""
        ctype = self.headers.get("Content-Type", "")
        boundary = re.search(r'boundary="?([^";]+)"?', ctype)
        if not ctype.startswith("multipart/form-data") or boundary is None:
            return _error(400, 1400, "expected a multipart/form-data body with a `file` field")
        for part in body.split(b"--" + boundary[1].encode())[1:-1]:
            # Exactly one CRLF of framing on each side: the data may itself end in CRLF.
            part = part.removeprefix(b"\r\n").removesuffix(b"\r\n")
            raw_head, _, data = part.partition(b"\r\n\r\n")
            head = raw_head.decode("utf-8", "replace")
            if not re.search(r'name="file"', head):
                continue
            filename = re.search(r'filename="([^"]*)"', head)
            part_type = re.search(r"(?im)^content-type:\s*(\S+)", head)
            name = _safe_filename(filename[1] if filename else "upload")
            content_type = part_type[1] if part_type else mimetypes.guess_type(name)[0]
            token = self.emulator.new_ticket(name, content_type or "application/octet-stream")
            self.emulator.put_media(token, name, data, None)
            return _ok(
                {
                    "type": (content_type or "application/octet-stream").split("/")[0],
                    "download_url": f"{self.base}/_emulator/media/{token}/{quote(name, safe='')}",
                    "filename": name,
                    "size": len(data),
                }
            )
        return _error(400, 1400, "missing required form field: file")

    def _media(self, params: dict[str, str], body: bytes) -> _Response:
        media = self.emulator.media(params["token"], params["filename"])
        if media is None or media.path is None:
            return _storage_error(404, "NoSuchKey", "The specified key does not exist.")
        return _Response(200, content_type=media.content_type, file=media.path)

    def _output(self, params: dict[str, str], body: bytes) -> _Response:
        glb = self.emulator.output(params["id"], params["token"])
        if glb == "expired":
            return _storage_error(403, "AccessDenied", "Request has expired")
        if isinstance(glb, str):
            return _storage_error(404, "NoSuchKey", "The specified key does not exist.")
        return _Response(200, content_type="model/gltf-binary", file=glb)

    # -- control -----------------------------------------------------------------------------
    def _stats(self, params: dict[str, str], body: bytes) -> _Response:
        return _json(200, self.emulator.stats())

    def _reset(self, params: dict[str, str], body: bytes) -> _Response:
        self.emulator.reset()
        return _json(200, {"ok": True})

    def _get_faults(self, params: dict[str, str], body: bytes) -> _Response:
        return _json(200, self.emulator.config_json())

    def _set_faults(self, params: dict[str, str], body: bytes) -> _Response:
        try:
            return _json(200, self.emulator.configure(json.loads(body or b"{}")))
        except ValueError as exc:
            return _error(400, 400, f"invalid faults: {exc}")


def _parse_iso8601(value: Any) -> datetime | None:
    """An ISO 8601 time (a trailing Z, an offset, or none: then UTC, assumed) or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _json_body(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _unauthorized() -> _Response:
    return _error(401, 401, "Unauthorized: missing or invalid Authorization: Bearer <API key>")


def _fault_response(rule: FaultRule) -> _Response:
    status = int(rule.kind)
    if status == 429:
        limited = {} if rule.retry_after is None else {"Retry-After": f"{rule.retry_after:g}"}
        return _error(429, 429, "Too many requests: rate limit exceeded", limited)
    # A 503 may say when to come back too; other 5xx never do.
    explicit = status == 503 and rule.explicit_retry_after and rule.retry_after is not None
    headers = {"Retry-After": f"{rule.retry_after:g}"} if explicit else None
    return _error(
        status, status, f"{HTTPStatus(status).phrase} (injected by the emulator)", headers
    )


class EmulatorServer:
    """The emulator on a daemon thread, for tests and benchmarks.

    >>> with EmulatorServer(latency=0.2) as emulator:
    ...     emulator.configure(rules=[{"endpoint": "submit", "kind": "429"}])
    ...     # point a client at emulator.base_url
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latency: float = 2.0,
        jitter: float = 0.0,
        output_ttl: float | None = None,
        seed: int = 0,
        output_profile: str = "small",
        balance: float = 100.0,
        price: float | None = None,
        retention: float | None = None,
        clock: WallClock | None = None,
        synthesis: str = "threads",
    ) -> None:
        """`output_profile` "small" makes quick test meshes; "realistic" makes them the size
        of the real model's (~40k faces, 2048 px PBR textures, ~3.5 MB). Raises ValueError
        for an unknown profile or `synthesis` mode ("threads", or "processes": see the
        module's docstring; those are started here and stopped by `stop`). `clock` is the
        wall clock for `created_at` and the retention (a test may move it); `balance` (USD)
        and `price` (per completed prediction) model the account."""
        self._address = (host, port)
        config: dict[str, Any] = {
            "latency": latency,
            "jitter": jitter,
            "output_ttl": output_ttl,
            "balance": balance,
        }
        if price is not None:
            config["price"] = price
        if retention is not None:
            config["retention"] = retention
        synthesis_pool = _synthesis_pool(synthesis)
        try:
            self._emulator = _Emulator(
                config, seed, output_profile, synthesis_pool, clock or _utc_now
            )
        except BaseException:  # a bad setting: no worker process outlives the refusal
            synthesis_pool.shutdown(cancel_futures=True)
            raise
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        if self._httpd is None:
            server_class = _HTTPServerV6 if ":" in self._address[0] else _HTTPServer
            httpd = server_class(self._address, _Handler)
            httpd.emulator = self._emulator
            self._thread = threading.Thread(
                target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            self._httpd = httpd
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end every prediction and delete the spooled outputs and uploads."""
        if self._httpd is None:
            return
        self._emulator.stop()
        self._close_http()

    def _close_http(self) -> None:
        assert self._httpd is not None
        self._httpd.shutdown()
        self._httpd.cut_connections()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd, self._thread = None, None

    def restart(self) -> Self:
        """Crash and come back on the same port: every open connection is cut (a request in
        flight gets no answer), predictions are forgotten (their ids answer 404), running
        tasks never finish. Uploaded media, the account, faults and counters stay."""
        if self._httpd is None:
            raise RuntimeError("the emulator is not running: call start() first")
        port = self._httpd.server_port
        self._close_http()
        self._emulator = self._emulator.successor()
        self._address = (self._address[0], port)
        return self.start()

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the emulator is not running: call start() first")
        host, port = self._address[0], self._httpd.server_port
        if host in ("0.0.0.0", "::", ""):  # listening everywhere: loopback reaches it
            host = "127.0.0.1"
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def stats(self) -> dict[str, Any]:
        return self._emulator.stats()

    def timeline(self, prediction_id: str) -> tuple[float, float | None] | None:
        """When a prediction was created and finished, on this process's `time.monotonic()`
        (the API has no completion time): for in-process tests and benchmarks only."""
        return self._emulator.timeline(prediction_id)

    @property
    def spool_dir(self) -> Path | None:
        """The directory holding uploads (media/) and GLBs (outputs/): made on first use,
        deleted by `stop`."""
        return self._emulator.spool_dir

    def configure(self, **faults: Any) -> None:
        """Same body as `POST /_emulator/faults`; raises ValueError on a bad setting."""
        self._emulator.configure(faults)

    def reset(self) -> None:
        self._emulator.reset()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
