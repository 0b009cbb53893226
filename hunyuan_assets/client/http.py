"""WaveSpeed v3 client for Hunyuan3D: submit an image, wait for the mesh, download the GLB.

Two thin I/O shells with the same surface, `Hunyuan3DClient` (httpx.Client) and
`AsyncHunyuan3DClient` (httpx.AsyncClient), around one sans-IO core in `protocol.py` (request
building, envelope parsing, retry and polling schedules, the wait deadline). No Dagster here.

Safety rules the shells keep:
- A submit POST is resent only when it provably never reached the API (connection refused
  or not opened, or HTTP 429/503). Otherwise a lost answer raises `SubmissionUncertainError`:
  the task may exist and be billed, so resubmitting is the caller's informed choice.
- The API key goes only to the API's own origin (never to upload or output hosts) and never
  into a message, repr or log line; logs name the method and path only.

    with Hunyuan3DClient(ClientSettings(api_key=key)) as client:
        result = client.generate(Path("chair.png"), Path("out/chair.glb"))
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from hunyuan_assets.client.errors import WaveSpeedError
from hunyuan_assets.client.protocol import (
    _CHUNK,
    MAX_PAGE_SIZE,
    Balance,
    ClientSettings,
    Forecast,
    GenerationResult,
    Prediction,
    PredictionPage,
    _BalancePlan,
    _is_remote,
    _now,
    _PageWalk,
    _part_path,
    _Protocol,
    _Request,
    _WaitPlan,
    error_for_transport,
    logger,
)


async def _maybe_await(value: Any) -> None:
    if inspect.isawaitable(value):
        await value


DOWNLOAD_THREADS = 8  # outputs downloaded at once by an async client (threads made as needed)
_WRITE_BATCH = 256 * 1024  # bytes per write: few thread hops, little memory per download


def _write_all(fh: BinaryIO, chunks: list[bytes], *, sync: bool = False) -> None:
    fh.write(b"".join(chunks))
    if sync:
        fh.flush()
        os.fsync(fh.fileno())


async def _read_chunks(path: Path) -> AsyncIterator[bytes]:
    fh = await asyncio.to_thread(open, path, "rb")
    try:
        while chunk := await asyncio.to_thread(fh.read, _CHUNK):
            yield chunk
    finally:
        fh.close()


def _discard(part: Path) -> None:
    try:
        part.unlink(missing_ok=True)
    except OSError:
        logger.warning("could not remove partial download %s", part)


_USER_AGENT = f"hunyuan-assets httpx/{httpx.__version__}"


# --------------------------------------------------------------------------- sync shell


class Hunyuan3DClient:
    """Blocking client. Thread-safe enough to share (httpx.Client is); close() when done."""

    def __init__(
        self, settings: ClientSettings, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.settings = settings
        self._p = _Protocol(settings)
        # Blocking calls are few at a time: one pool of all the connections is enough.
        limits = httpx.Limits(
            max_connections=settings.max_connections,
            max_keepalive_connections=settings.max_connections,
        )
        self._http = httpx.Client(
            transport=transport, headers={"User-Agent": _USER_AGENT}, limits=limits
        )

    def __enter__(self) -> Hunyuan3DClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _retrying(self, req: _Request, once: Callable[[], Any], pid: str | None = None) -> Any:
        attempt = 0
        while True:
            attempt += 1
            logger.debug("%s (attempt %d)", req.where, attempt)
            try:
                return once()
            except WaveSpeedError as exc:
                error = exc
            except (httpx.RequestError, httpx.InvalidURL) as exc:
                error = error_for_transport(
                    req.kind, exc, where=req.where, prediction_id=pid, url=req.url
                )
                error.__cause__ = exc
            delay = self._p.next_retry(req, error, attempt)
            if delay is None:
                raise error
            time.sleep(delay)

    def _call(self, req: _Request, pid: str | None = None) -> Mapping[str, Any]:
        def once() -> Mapping[str, Any]:
            r = self._http.request(
                req.method, req.url, headers=req.headers, json=req.json, timeout=req.timeout
            )
            return self._p.read(req, r.status_code, r.headers, r.content, pid)

        return self._retrying(req, once, pid)

    def submit(self, image_url: str, *, model: str | None = None) -> Prediction:
        """POST the task. Sent again only if it provably never got through."""
        req = self._p.submit(image_url, model)
        submitted_at = _now()
        return self._p.prediction(req, self._call(req), submitted_at=submitted_at)

    def get(self, prediction_id: str) -> Prediction:
        req = self._p.result(prediction_id)
        return self._p.prediction(req, self._call(req, prediction_id))

    def wait(
        self,
        prediction: Prediction | str,
        *,
        deadline: float | None = None,
        on_poll: Callable[[Prediction], None] | None = None,
        forecast: Forecast = None,
    ) -> Prediction:
        """Poll until terminal. An id is polled at once; a fresh Prediction on the schedule:
        adaptive, or learned from `forecast` (`polling.py`). The result's `.observation`
        says when it completed, for the next forecast."""
        plan = _WaitPlan(prediction, self.settings.poll, deadline, forecast=forecast)
        done = plan.already_done()
        while done is None:
            delay = plan.next_delay()
            if delay:
                time.sleep(delay)
            seen = plan.observe(self.get(plan.prediction_id))
            if on_poll is not None:
                on_poll(seen)
            done = seen if plan.finish(seen) else None
        return done

    def list_predictions(
        self,
        *,
        page: int = 1,
        page_size: int = MAX_PAGE_SIZE,
        model: str | None = None,
        status: str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
    ) -> PredictionPage:
        """One page of the account's predictions of the last 7 days, newest first (no inputs).
        For browsing and reconciling (e.g. after a SubmissionUncertainError), not for polling."""
        req = self._p.list_predictions(
            page=page,
            page_size=page_size,
            model=model,
            status=status,
            created_after=created_after,
            created_before=created_before,
        )
        return self._p.prediction_page(req, self._call(req))

    def iter_predictions(
        self,
        *,
        model: str | None = None,
        status: str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> Iterator[Prediction]:
        """Every prediction matching the filter, page after page (each id once)."""
        walk = _PageWalk(
            self._p,
            page_size,
            model=model,
            status=status,
            created_after=created_after,
            created_before=created_before,
        )

        def pages() -> Iterator[Prediction]:
            while (req := walk.next_request()) is not None:
                yield from walk.take(self._p.prediction_page(req, self._call(req)))

        return pages()

    def get_balance(self) -> Balance:
        """The account's credit; either documented route (the other is tried on a 404)."""
        plan = _BalancePlan(self._p)
        while True:
            req = plan.next_request()
            try:
                return self._p.balance(req, self._call(req))
            except WaveSpeedError as exc:
                plan.failed(req, exc)

    def upload(self, path: Path, content_type: str | None = None) -> str:
        """Upload a local file (ticket + PUT); returns the URL to pass as `image`."""
        path = Path(path)
        ticket_req, size = self._p.upload_ticket(path, content_type)
        put_req, download_url = self._p.upload_put(self._call(ticket_req), size)

        def once() -> None:
            with path.open("rb") as fh:
                r = self._http.request(
                    "PUT", put_req.url, headers=put_req.headers, content=fh, timeout=put_req.timeout
                )
                self._p.read(put_req, r.status_code, r.headers, r.content)

        self._retrying(put_req, once)
        return download_url

    def upload_bytes(self, data: bytes, filename: str, content_type: str | None = None) -> str:
        """Upload bytes held in memory under `filename`; returns the URL to pass as `image`."""
        ticket_req, size = self._p.upload_ticket_for(filename, len(data), content_type)
        put_req, download_url = self._p.upload_put(self._call(ticket_req), size)

        def once() -> None:
            r = self._http.request(
                "PUT", put_req.url, headers=put_req.headers, content=data, timeout=put_req.timeout
            )
            self._p.read(put_req, r.status_code, r.headers, r.content)

        self._retrying(put_req, once)
        return download_url

    def download(self, url: str, dest: Path, *, max_bytes: int | None = None) -> int:
        """Stream `url` to `dest` (via dest.part, atomically); returns the byte count."""
        return self._download(url, Path(dest), max_bytes)

    def _download(self, url: str, dest: Path, max_bytes: int | None, pid: str | None = None) -> int:
        req, part = self._p.download(url, pid), _part_path(dest)
        limit = self.settings.max_download_bytes if max_bytes is None else max_bytes

        def once() -> int:
            with self._http.stream(
                "GET", req.url, headers=req.headers, timeout=req.timeout, follow_redirects=True
            ) as r:
                self._p.check_download(req, r.status_code, r.headers, limit, pid)
                total = 0
                with part.open("wb", buffering=_WRITE_BATCH) as fh:  # fewer, larger writes
                    for chunk in r.iter_bytes():  # as read: no re-chunking copies
                        total += len(chunk)
                        if total > limit:
                            raise self._p.too_large(req, limit, total, pid)
                        fh.write(chunk)
                    fh.flush()
                    os.fsync(fh.fileno())
                return total

        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            size = self._retrying(req, once, pid)
            os.replace(part, dest)
        except BaseException:
            _discard(part)
            raise
        return size

    def generate(
        self,
        image: str | Path,
        dest: Path,
        *,
        model: str | None = None,
        on_submitted: Callable[[Prediction], None] | None = None,
        forecast: Forecast = None,
    ) -> GenerationResult:
        """Upload (if local), submit, wait, and download the mesh at once (URLs expire).

        `on_submitted` runs before the wait: record the prediction id there, so a crash
        or a PredictionTimeoutError can be resumed with `wait(id)` instead of paid twice.
        """
        image_url = image if _is_remote(image) else self.upload(Path(image))
        prediction = self.submit(str(image_url), model=model)
        if on_submitted is not None:
            on_submitted(prediction)
        done = self.wait(prediction, forecast=forecast)
        started = time.monotonic()
        size = self._download(self._p.output_url(done), Path(dest), None, done.id)
        elapsed = round((time.monotonic() - started) * 1000)
        return GenerationResult(done, str(image_url), Path(dest), size, elapsed)


# --------------------------------------------------------------------------- async shell


class AsyncHunyuan3DClient:
    """The asyncio twin of `Hunyuan3DClient`; every method is a coroutine."""

    def __init__(
        self, settings: ClientSettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.settings = settings
        self._p = _Protocol(settings)
        # Several small pools, used in turn (see `_Protocol.pools`); a given transport is one.
        limits = self._p.pools() if transport is None else [httpx.Limits()]
        tls = httpx.create_ssl_context()  # one for all pools: making one costs ~20 ms
        self._pools = [
            httpx.AsyncClient(
                transport=transport, headers={"User-Agent": _USER_AGENT}, limits=each, verify=tls
            )
            for each in limits
        ]
        self._turn = itertools.cycle(self._pools)
        # Outputs (a few MB each, from a file host) are read by a blocking client in threads:
        # through httpx's async stack (anyio, 64 KiB a read, two epoll changes each) a 3.7 MB
        # download cost ~12 ms of user CPU on the event loop's thread; blocking, ~7 ms beside
        # it. Few threads: at C=300 each one competes with the loop for the GIL. A given
        # transport is async, so its downloads stay on the loop.
        self._files = Hunyuan3DClient(settings) if transport is None else None
        self._file_threads = ThreadPoolExecutor(DOWNLOAD_THREADS, "hunyuan-download")

    @property
    def _http(self) -> httpx.AsyncClient:
        return next(self._turn)

    async def __aenter__(self) -> AsyncHunyuan3DClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        for pool in self._pools:
            await pool.aclose()
        self._file_threads.shutdown(wait=False, cancel_futures=True)
        if self._files is not None:
            self._files.close()

    aclose = close

    async def _retrying(
        self, req: _Request, once: Callable[[], Awaitable[Any]], pid: str | None = None
    ) -> Any:
        attempt = 0
        while True:
            attempt += 1
            logger.debug("%s (attempt %d)", req.where, attempt)
            try:
                return await once()
            except WaveSpeedError as exc:
                error = exc
            except (httpx.RequestError, httpx.InvalidURL) as exc:
                error = error_for_transport(
                    req.kind, exc, where=req.where, prediction_id=pid, url=req.url
                )
                error.__cause__ = exc
            delay = self._p.next_retry(req, error, attempt)
            if delay is None:
                raise error
            await asyncio.sleep(delay)

    async def _call(self, req: _Request, pid: str | None = None) -> Mapping[str, Any]:
        async def once() -> Mapping[str, Any]:
            r = await self._http.request(
                req.method, req.url, headers=req.headers, json=req.json, timeout=req.timeout
            )
            return self._p.read(req, r.status_code, r.headers, r.content, pid)

        return await self._retrying(req, once, pid)

    async def submit(self, image_url: str, *, model: str | None = None) -> Prediction:
        req = self._p.submit(image_url, model)
        submitted_at = _now()
        return self._p.prediction(req, await self._call(req), submitted_at=submitted_at)

    async def get(self, prediction_id: str) -> Prediction:
        req = self._p.result(prediction_id)
        return self._p.prediction(req, await self._call(req, prediction_id))

    async def wait(
        self,
        prediction: Prediction | str,
        *,
        deadline: float | None = None,
        on_poll: Callable[[Prediction], Any] | None = None,
        forecast: Forecast = None,
        wake: asyncio.Event | None = None,
    ) -> Prediction:
        """As `Hunyuan3DClient.wait`; `on_poll` may be a plain function or a coroutine.

        `wake`, with a callable `forecast`, for many waits that learn together: set it when
        the forecast becomes known. Until then each wait's adaptive schedule is stretched by
        a factor in [1, 2) fixed per prediction (so they do not all poll at the same moments);
        once set, a wait still on it plans its next poll at once on the learned schedule
        (never later than it had planned), instead of sleeping out its interval."""
        plan = _WaitPlan(
            prediction, self.settings.poll, deadline, forecast=forecast, stretch=wake is not None
        )
        done = plan.already_done()
        while done is None:
            delay = plan.next_delay()
            if delay and wake is not None and plan.waiting_to_learn and not wake.is_set():
                try:
                    await asyncio.wait_for(wake.wait(), delay)
                    delay = plan.replan()  # the forecast is known now
                except TimeoutError:
                    delay = 0.0
            if delay:
                await asyncio.sleep(delay)
            seen = plan.observe(await self.get(plan.prediction_id))
            if on_poll is not None:
                await _maybe_await(on_poll(seen))
            done = seen if plan.finish(seen) else None
        return done

    async def list_predictions(
        self,
        *,
        page: int = 1,
        page_size: int = MAX_PAGE_SIZE,
        model: str | None = None,
        status: str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
    ) -> PredictionPage:
        req = self._p.list_predictions(
            page=page,
            page_size=page_size,
            model=model,
            status=status,
            created_after=created_after,
            created_before=created_before,
        )
        return self._p.prediction_page(req, await self._call(req))

    def iter_predictions(
        self,
        *,
        model: str | None = None,
        status: str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> AsyncIterator[Prediction]:
        """As `Hunyuan3DClient.iter_predictions`: `async for prediction in ...`."""
        walk = _PageWalk(
            self._p,
            page_size,
            model=model,
            status=status,
            created_after=created_after,
            created_before=created_before,
        )

        async def pages() -> AsyncIterator[Prediction]:
            while (req := walk.next_request()) is not None:
                for prediction in walk.take(self._p.prediction_page(req, await self._call(req))):
                    yield prediction

        return pages()

    async def get_balance(self) -> Balance:
        plan = _BalancePlan(self._p)
        while True:
            req = plan.next_request()
            try:
                return self._p.balance(req, await self._call(req))
            except WaveSpeedError as exc:
                plan.failed(req, exc)

    async def upload(self, path: Path, content_type: str | None = None) -> str:
        path = Path(path)
        ticket_req, size = self._p.upload_ticket(path, content_type)
        put_req, download_url = self._p.upload_put(await self._call(ticket_req), size)

        async def once() -> None:
            r = await self._http.request(
                "PUT",
                put_req.url,
                headers=put_req.headers,
                content=_read_chunks(path),
                timeout=put_req.timeout,
            )
            self._p.read(put_req, r.status_code, r.headers, r.content)

        await self._retrying(put_req, once)
        return download_url

    async def upload_bytes(
        self, data: bytes, filename: str, content_type: str | None = None
    ) -> str:
        ticket_req, size = self._p.upload_ticket_for(filename, len(data), content_type)
        put_req, download_url = self._p.upload_put(await self._call(ticket_req), size)

        async def once() -> None:
            r = await self._http.request(
                "PUT", put_req.url, headers=put_req.headers, content=data, timeout=put_req.timeout
            )
            self._p.read(put_req, r.status_code, r.headers, r.content)

        await self._retrying(put_req, once)
        return download_url

    async def download(self, url: str, dest: Path, *, max_bytes: int | None = None) -> int:
        return await self._download(url, Path(dest), max_bytes)

    async def _download(
        self, url: str, dest: Path, max_bytes: int | None, pid: str | None = None
    ) -> int:
        if self._files is not None:
            # A cancelled wait leaves its thread to finish or time out; its `.part` is removed.
            return await asyncio.get_running_loop().run_in_executor(
                self._file_threads, self._files._download, url, dest, max_bytes, pid
            )
        req, part = self._p.download(url, pid), _part_path(dest)
        limit = self.settings.max_download_bytes if max_bytes is None else max_bytes

        async def once() -> int:
            async with self._http.stream(
                "GET", req.url, headers=req.headers, timeout=req.timeout, follow_redirects=True
            ) as r:
                self._p.check_download(req, r.status_code, r.headers, limit, pid)
                total, buffered, pending = 0, 0, []
                with part.open("wb") as fh:
                    # Writes go to a thread 256 KiB at a time: the kernel's copy into the page
                    # cache (~3 ms per MB on a small VM) would otherwise block the loop.
                    async for chunk in r.aiter_bytes():  # as read: no re-chunking copies
                        total += len(chunk)
                        if total > limit:
                            raise self._p.too_large(req, limit, total, pid)
                        pending.append(chunk)
                        buffered += len(chunk)
                        if buffered >= _WRITE_BATCH:
                            await asyncio.to_thread(_write_all, fh, pending)
                            buffered, pending = 0, []
                    await asyncio.to_thread(_write_all, fh, pending, sync=True)
                return total

        await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
        try:
            size = await self._retrying(req, once, pid)
            os.replace(part, dest)
        except BaseException:
            _discard(part)
            raise
        return size

    async def generate(
        self,
        image: str | Path,
        dest: Path,
        *,
        model: str | None = None,
        on_submitted: Callable[[Prediction], Any] | None = None,
        forecast: Forecast = None,
    ) -> GenerationResult:
        image_url = image if _is_remote(image) else await self.upload(Path(image))
        prediction = await self.submit(str(image_url), model=model)
        if on_submitted is not None:
            await _maybe_await(on_submitted(prediction))
        done = await self.wait(prediction, forecast=forecast)
        started = time.monotonic()
        size = await self._download(self._p.output_url(done), Path(dest), None, done.id)
        elapsed = round((time.monotonic() - started) * 1000)
        return GenerationResult(done, str(image_url), Path(dest), size, elapsed)
