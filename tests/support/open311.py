"""A real Open311 GeoReport v2 server on localhost (tests only).

Implements what StreetSense uses, as the spec describes it: ``GET
services.json``, ``POST requests.json`` (form-encoded: api_key, service_code,
lat, long, description, ``attribute[code]``...; answers ``[{service_request_id,
service_notice, account_id}]``, or ``[{token}]`` in token mode),
``GET requests.json`` (service_code, status, start_date, end_date filters),
``GET requests/{id}.json`` and ``GET tokens/{token}.json``. Errors are
``[{code, description}]``. The test can close a request (as a council officer
would), stop the server (a dead sink), or make it lose its next answers
(the request is created, the client never hears).
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from tests.support.webhook import LocalServer, drop, read_body, reply

_ATTR = re.compile(r"^attribute\[(.+)\]$")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


class Open311Server(LocalServer):
    def __init__(self, *, api_key: str = "test-key", services: dict[str, str] | None = None,
                 prefix: str = "/open311/v2", tokens: bool = False, port: int | None = None) -> None:
        super().__init__(port)
        self.api_key = api_key
        self.services = services or {"BIN-OVERFLOW": "Overflowing litter bin", "POTHOLE": "Pothole",
                                     "GENERAL": "General street issue"}
        self.prefix = prefix.rstrip("/")
        self.tokens = tokens
        self.requests: dict[str, dict] = {}
        self.token_ids: dict[str, str] = {}
        self.posts = 0                  # POSTs that reached the server (retries included)
        self.lose_next = 0              # create the request, then drop the answer, this many times
        self._ids = itertools.count(1001)

    @property
    def base_url(self) -> str:
        return self.url + self.prefix

    def created_by_ref(self, attribute: str = "streetsense_ref") -> Counter[str]:
        """Service requests created per client reference: must never exceed 1."""
        with self.lock:
            return Counter(r["attributes"].get(attribute, "") for r in self.requests.values())

    def close_request(self, sid: str, notes: str = "Emptied by the crew") -> None:
        with self.lock:
            r = self.requests[sid]
            r.update(status="closed", status_notes=notes, updated_datetime=_now())

    @staticmethod
    def _public(r: dict) -> dict:
        return {k: v for k, v in r.items() if k not in ("attributes", "api_key", "token")}

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        u = urlsplit(h.path)
        if not u.path.startswith(self.prefix + "/"):
            return reply(h, 404, [{"code": 404, "description": "not found"}])
        path = u.path[len(self.prefix) + 1:]
        q = {k: v[-1] for k, v in parse_qs(u.query).items()}
        if method == "GET" and path == "services.json":
            return reply(h, 200, [{"service_code": c, "service_name": n, "type": "realtime", "metadata": False,
                                   "keywords": "", "group": "street", "description": n}
                                  for c, n in self.services.items()])
        if method == "POST" and path == "requests.json":
            return self._create(h, {k: v[-1] for k, v in parse_qs(read_body(h).decode()).items()})
        if method == "GET" and path == "requests.json":
            return self._search(h, q)
        m = re.fullmatch(r"requests/([^/]+)\.json", path)
        if method == "GET" and m:
            with self.lock:
                r = self.requests.get(m.group(1))
            if r is None:
                return reply(h, 404, [{"code": 404, "description": "no such service request"}])
            return reply(h, 200, [self._public(r)])
        m = re.fullmatch(r"tokens/([^/]+)\.json", path)
        if method == "GET" and m:
            with self.lock:
                sid = self.token_ids.get(m.group(1))
            if sid is None:
                return reply(h, 404, [{"code": 404, "description": "no such token"}])
            return reply(h, 200, [{"service_request_id": sid, "token": m.group(1)}])
        return reply(h, 404, [{"code": 404, "description": "not found"}])

    def _create(self, h: BaseHTTPRequestHandler, form: dict[str, str]) -> None:
        with self.lock:
            self.posts += 1
        if form.get("api_key") != self.api_key:
            return reply(h, 403, [{"code": 403, "description": "invalid api_key"}])
        if form.get("service_code") not in self.services:
            return reply(h, 400, [{"code": 400, "description": "service_code not found"}])
        if not (form.get("lat") and form.get("long")) and not form.get("address_string") and not form.get("address_id"):
            return reply(h, 400, [{"code": 400, "description": "a location is required"}])
        attrs = {m.group(1): v for k, v in form.items() if (m := _ATTR.match(k))}
        with self.lock:
            sid = str(next(self._ids))
            now = _now()
            r = {"service_request_id": sid, "status": "open", "status_notes": None,
                 "service_code": form["service_code"], "service_name": self.services[form["service_code"]],
                 "description": form.get("description", ""), "agency_responsible": "Test Council",
                 "requested_datetime": now, "updated_datetime": now,
                 "lat": float(form["lat"]) if form.get("lat") else None,
                 "long": float(form["long"]) if form.get("long") else None,
                 "address_id": form.get("address_id"), "form": dict(form),
                 "attributes": attrs, "api_key": form["api_key"]}
            self.requests[sid] = r
            lose = self.lose_next > 0
            if lose:
                self.lose_next -= 1
            answer: dict = {"service_request_id": sid, "service_notice": "Thank you", "account_id": None}
            if self.tokens:
                token = f"tok-{sid}"
                self.token_ids[token] = sid
                answer = {"token": token}
        if lose:
            return drop(h)
        reply(h, 200, [answer])

    def _search(self, h: BaseHTTPRequestHandler, q: dict[str, str]) -> None:
        with self.lock:
            rows = list(self.requests.values())
        if q.get("service_request_id"):
            ids = set(q["service_request_id"].split(","))
            rows = [r for r in rows if r["service_request_id"] in ids]
        if q.get("service_code"):
            rows = [r for r in rows if r["service_code"] in q["service_code"].split(",")]
        if q.get("status"):
            rows = [r for r in rows if r["status"] in q["status"].split(",")]
        if q.get("start_date"):
            rows = [r for r in rows if _parse_time(r["requested_datetime"]) >= _parse_time(q["start_date"])]
        if q.get("end_date"):
            rows = [r for r in rows if _parse_time(r["requested_datetime"]) <= _parse_time(q["end_date"])]
        reply(h, 200, [self._public(r) for r in rows[-1000:]])
