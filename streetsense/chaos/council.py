"""A fake council system at the end of the alert outbox: a signed-webhook
receiver over real HTTP (``http.server`` on 127.0.0.1) that chaos can break.

It verifies each post (:func:`alerts.sinks.verify_webhook`), and counts per
idempotency key what arrived, what it answered 200 to (``accepted``) and what
took effect (``effects``: a key's first accepted post; a council receiver
applies a key once). A sender that delivers exactly once per key has
``accepted[key] == 1`` for every key; ``accepted[key] > 1`` means the sender
posted again after a 200 (a redundant delivery).

Outage modes: ``"503"`` answers every post 503 (down for maintenance),
``"down"`` stops the server (connections refused), ``None`` is healthy.

>>> c = Council("s3cret").start()
>>> import httpx, time
>>> from alerts.sinks import sign
>>> ts = int(time.time()); body = b'{"alert": 1}'
>>> h = {"Idempotency-Key": "k1", "X-StreetSense-Timestamp": str(ts), "X-StreetSense-Signature": sign("s3cret", ts, body)}
>>> c.outage("503"); httpx.post(c.url, content=body, headers=h).status_code
503
>>> c.outage(None); [httpx.post(c.url, content=body, headers=h).status_code for _ in range(2)]
[200, 200]
>>> c.arrived["k1"], c.accepted["k1"], c.effects["k1"], c.refused
(3, 2, 1, 1)
>>> c.stop()
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from alerts.sinks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_webhook
from streetsense.embedded import free_port

__all__ = ["Council", "serve_on"]


def serve_on(port: int, handler: type[BaseHTTPRequestHandler],
             name: str) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """Serve ``handler`` on 127.0.0.1:``port`` in a daemon thread.  Binding is retried
    for up to 10 s, so a server stopped on purpose can come back on the same port."""
    deadline = time.monotonic() + 10
    while True:
        try:
            httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True)
    thread.start()
    return httpd, thread


class Council:
    """Signed-webhook receiver on 127.0.0.1 with a switchable outage."""

    def __init__(self, secret: str, port: int | None = None) -> None:
        self.secret = secret
        self.port = port or free_port()
        self.lock = threading.Lock()
        self.arrived: Counter[str] = Counter()    # verified posts per key, whatever the answer
        self.accepted: Counter[str] = Counter()   # answered 200
        self.effects: Counter[str] = Counter()    # applied (first accepted post of a key)
        self.first_at: dict[str, float] = {}      # when each key took effect (Unix s)
        self.refused = 0                          # posts answered 503 during an outage
        self.unverified = 0                       # bad or missing signatures
        self.mode: str | None = None
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/streetsense"

    def start(self) -> "Council":
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                owner._post(self)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd, self._thread = serve_on(self.port, Handler, "council")
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            if self._thread is not None:
                self._thread.join(5)
            self._httpd = None

    def outage(self, mode: str | None) -> None:
        """``"503"``, ``"down"`` or ``None`` (healthy)."""
        if mode not in (None, "503", "down"):
            raise ValueError(f"unknown outage mode {mode!r}")
        if mode == "down":
            self.stop()
        elif self._httpd is None:
            self.start()
        self.mode = mode

    def _answer(self, h: BaseHTTPRequestHandler, code: int) -> None:
        body = b'{"ok": true}' if code == 200 else b'{"error": "unavailable"}'
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _post(self, h: BaseHTTPRequestHandler) -> None:
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        if not verify_webhook(self.secret, h.headers.get(TIMESTAMP_HEADER), h.headers.get(SIGNATURE_HEADER), body):
            with self.lock:
                self.unverified += 1
            return self._answer(h, 401)
        key = h.headers.get("Idempotency-Key") or ""
        with self.lock:
            self.arrived[key] += 1
            if self.mode == "503":
                self.refused += 1
                code = 503
            else:
                self.accepted[key] += 1
                if not self.effects[key]:
                    self.effects[key] = 1
                    self.first_at[key] = time.time()
                code = 200
        self._answer(h, code)

    def summary(self) -> dict[str, int]:
        with self.lock:
            return {"keys": len(self.effects), "posts": sum(self.arrived.values()), "refused_503": self.refused,
                    "redundant": sum(n - 1 for n in self.accepted.values() if n > 1),
                    "unverified": self.unverified}
