"""A loopback reverse proxy in front of the emulator, for tests that must see or pace the wire.

It keeps what clients really send (Authorization headers, the image URL of each submit) and
can hold requests at a gate until the test opens it: a barrier across processes at one exact
step of their work (e.g. every upload answered at once, so that every process claims its
pictures at the same moment). The Host header is forwarded, so the URLs the emulator hands out
(upload tickets, outputs) point at the proxy too and pass through it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

_HOP_BY_HOP = {"content-length", "connection", "transfer-encoding", "keep-alive", "accept-encoding"}


class ApiProxy:
    def __init__(self, target: str) -> None:
        self.authorizations: set[str] = set()
        self.submitted_images: list[str] = []
        self._lock = threading.Condition()
        self._gate: Callable[[str, str], bool] | None = None
        self._held = 0
        upstream = httpx.Client(base_url=target, timeout=120)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                owner._forward(self, upstream)

            do_POST = do_PUT = do_DELETE = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._upstream = upstream
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def hold(self, matches: Callable[[str, str], bool]) -> None:
        """Hold every request for which `matches(method, path)` until `release()`."""
        with self._lock:
            self._gate = matches

    def held(self) -> int:
        """How many requests are waiting at the gate now."""
        with self._lock:
            return self._held

    def release(self) -> None:
        with self._lock:
            self._gate = None
            self._lock.notify_all()

    def close(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._upstream.close()

    def _forward(self, handler: BaseHTTPRequestHandler, upstream: httpx.Client) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        method, path = handler.command, handler.path
        with self._lock:
            if auth := handler.headers.get("Authorization"):
                self.authorizations.add(auth)
            if method == "POST" and path.startswith("/api/v3/wavespeed-ai/"):
                self.submitted_images.append(str(json.loads(body or b"{}").get("image")))
            if self._gate is not None and self._gate(method, path):
                self._held += 1
                self._lock.wait_for(lambda: self._gate is None, timeout=120)
                self._held -= 1
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_BY_HOP}
        try:
            answer = upstream.request(method, path, content=body, headers=headers)
        except httpx.HTTPError:  # the emulator dropped the connection (an injected fault)
            handler.close_connection = True
            return
        handler.send_response(answer.status_code)
        for name, value in answer.headers.items():
            if name.lower() not in _HOP_BY_HOP:
                handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(answer.content)))
        handler.end_headers()
        handler.wfile.write(answer.content)
