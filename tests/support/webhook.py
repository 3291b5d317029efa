"""A real webhook receiver on localhost (tests only), and the restartable HTTP
server it and the Open311 test server are built on.

The receiver checks signatures on its own (HMAC-SHA256 over
``"<timestamp>.<body>"``, independent of ``alerts.sinks``), rejects stale
timestamps, and processes each idempotency key once, as a council's receiver
should. It counts what arrived and what took effect by key, and can be told to
fail or to lose its answers (process, then drop the connection).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from streetsense.chaos.council import serve_on
from streetsense.embedded import free_port


class LocalServer:
    """A stdlib HTTP server on 127.0.0.1 that can be stopped (connections refused, like a dead sink)
    and started again on the same port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def start(self) -> "LocalServer":
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.handle(self, "GET")

            def do_POST(self) -> None:
                owner.handle(self, "POST")

            def log_message(self, *args) -> None:
                pass

        self._httpd, self._thread = serve_on(self.port, Handler, "webhook-test-server")
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(5)
            self._httpd = None

    def __enter__(self) -> "LocalServer":
        return self.start() if not self.running else self

    def __exit__(self, *exc) -> None:
        self.stop()


def reply(h: BaseHTTPRequestHandler, code: int, body: object) -> None:
    data = json.dumps(body).encode()
    h.send_response(code)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)


def drop(h: BaseHTTPRequestHandler) -> None:
    """Close the connection without an answer: the client cannot know whether it worked."""
    h.close_connection = True


def read_body(h: BaseHTTPRequestHandler) -> bytes:
    return h.rfile.read(int(h.headers.get("Content-Length") or 0))


class WebhookReceiver(LocalServer):
    def __init__(self, secret: str, *, tolerance_s: int = 300, port: int | None = None) -> None:
        super().__init__(port)
        self.secret = secret
        self.tolerance_s = tolerance_s
        self.arrived: Counter[str] = Counter()      # verified posts per idempotency key (retries included)
        self.effects: Counter[str] = Counter()      # processed per key: must never exceed 1
        self.events: list[dict] = []                # processed bodies, in order
        self.rejected: list[str] = []               # why unverified posts were refused
        self.fail_next = 0                          # answer 503 to this many verified posts
        self.lose_next = 0                          # process, then drop the answer, this many times

    def verify(self, ts: str | None, sig: str | None, body: bytes) -> str | None:
        if not ts or not sig or not ts.isdigit():
            return "missing signature headers"
        if abs(time.time() - int(ts)) > self.tolerance_s:
            return "stale timestamp"
        want = "sha256=" + hmac.new(self.secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, sig):
            return "bad signature"
        return None

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        if method != "POST":
            return reply(h, 405, {"error": "POST only"})
        body = read_body(h)
        why = self.verify(h.headers.get("X-StreetSense-Timestamp"), h.headers.get("X-StreetSense-Signature"), body)
        if why:
            with self.lock:
                self.rejected.append(why)
            return reply(h, 401, {"error": why})
        key = h.headers.get("Idempotency-Key") or ""
        with self.lock:
            self.arrived[key] += 1
            if self.fail_next > 0:
                self.fail_next -= 1
                return reply(h, 503, {"error": "try later"})
            if self.effects[key] == 0:           # a retry of a processed key is acknowledged, not redone
                self.effects[key] += 1
                self.events.append(json.loads(body))
            if self.lose_next > 0:
                self.lose_next -= 1
                return drop(h)
        reply(h, 200, {"ok": True})
