"""Sampling a running pipeline: ingest lag and throughput from the database,
the gateway's buffer from its health file, the workers' backpressure from
their Prometheus metrics, and the memory of every service from ``/proc``
(psutil).

**Lag** is end to end from the gateway to durable storage: for every device
batch stored in a sampling window, ``batches.stored_at − batches.received_at``
(``received_at`` is the gateway's receive time, ``ss-rx``). The window lags
the clock by :data:`VISIBILITY_S` so rows whose transaction committed a
little after their ``stored_at`` are not missed. A reading held up anywhere
(gateway queue, central broker, a dead worker's session, a database outage)
shows as lag when it finally lands.

**Memory** of a service is the RSS of its process tree; for PostgreSQL it is
the PSS (shared buffers counted once, not once per backend).

>>> s = Sample(t=0.0, window=(0.0, 1.0))
>>> s.good(lag_ok_s=5.0)
False
>>> Sample(t=0.0, window=(0.0, 1.0), batches=10, lag_p99_s=0.4).good(lag_ok_s=5.0)
True
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import psutil
import psycopg

__all__ = ["Sample", "Monitor", "memory_mb", "percentile"]

#: seconds a batch row may take from its stored_at to being visible (commit)
VISIBILITY_S = 2.0

LAG_SQL = """SELECT count(*), coalesce(sum(readings), 0),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - received_at)),
       percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - received_at)),
       max(extract(epoch FROM stored_at - received_at))
    FROM batches WHERE received_at >= %(lo)s AND stored_at > %(a)s AND stored_at <= %(b)s"""

STORED_SQL = """SELECT coalesce(sum(inserted), 0) FROM ingest_log WHERE committed_at > %(a)s AND committed_at <= %(b)s"""


def percentile(xs: list[float], p: float) -> float | None:
    """Nearest-rank percentile (None for no data).

    >>> percentile([3.0, 1.0, 2.0], 50), percentile([], 99)
    (2.0, None)
    """
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


def memory_mb(pid: int | None, pss: bool = False) -> float | None:
    """RSS (or PSS) of ``pid`` and its descendants in MiB; None when it is not running."""
    if pid is None:
        return None
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0
    for p in procs:
        try:
            total += p.memory_full_info().pss if pss else p.memory_info().rss
        except psutil.Error:
            continue
    return round(total / 2**20, 1)


@dataclass
class Sample:
    t: float                                  # wall clock when taken (Unix s)
    window: tuple[float, float]               # the storage window it describes (Unix s)
    batches: int = 0                          # device batches stored in the window
    readings_per_s: float | None = None       # new rows per second in the window (ingest_log)
    lag_p50_s: float | None = None
    lag_p99_s: float | None = None
    lag_max_s: float | None = None
    gateway_queue: int | None = None          # messages buffered at the gateway
    gateway_oldest_s: float | None = None     # age of the oldest buffered message
    gateway_connected: bool | None = None     # gateway's central connection up
    ingest_pending: int | None = None         # unacked messages held by workers (sum)
    ingest_lag_s: float | None = None         # oldest received, not committed message (max over workers)
    db_bytes: int | None = None
    published: int | None = None              # feed's published count
    feed_behind_s: float | None = None        # feed behind its schedule (it could not keep up)
    memory_mb: dict[str, float | None] = field(default_factory=dict)
    db_error: str | None = None

    def good(self, lag_ok_s: float) -> bool:
        """Data flowing with p99 lag under ``lag_ok_s`` and nothing old left in the gateway."""
        return (self.batches > 0 and self.lag_p99_s is not None and self.lag_p99_s <= lag_ok_s
                and (self.gateway_oldest_s is None or self.gateway_oldest_s <= lag_ok_s))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["window"] = list(self.window)
        return d


def _ts(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=timezone.utc)


def _scrape(port: int) -> tuple[float, float] | None:
    """(pending messages, lag s) from a worker's /metrics."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=0.5) as r:
            text = r.read().decode()
    except OSError:
        return None
    pending = lag = 0.0
    for fam in text_string_to_metric_families(text):
        if fam.name == "streetsense_ingest_pending_messages":
            pending = sum(s.value for s in fam.samples)
        elif fam.name == "streetsense_ingest_lag_seconds":
            lag = max((s.value for s in fam.samples), default=0.0)
    return pending, lag


class Monitor:
    """Takes a :class:`Sample` every ``interval`` seconds on its own thread.

    ``pids`` returns the current root pid of each service (they change when a
    service is restarted); ``pss`` names services measured by PSS.
    """

    def __init__(self, db_url: str, pids: Callable[[], dict[str, int | None]], *, interval: float = 1.0,
                 gateway_health: Path | None = None, worker_ports: list[int] | None = None,
                 feed_status: Callable[[], dict] | None = None, lookback_s: float = 120.0,
                 pss: tuple[str, ...] = ("postgres",), db_size_every: float = 10.0) -> None:
        self.db_url = db_url
        self.pids = pids
        self.interval = interval
        self.gateway_health = gateway_health
        self.worker_ports = worker_ports or []
        self.feed_status = feed_status
        self.lookback_s = lookback_s
        self.pss = pss
        self.db_size_every = db_size_every
        #: lag is looked for in batches received since this time (set at a fault's start, so a long backlog is seen)
        self.since: float | None = None
        self.samples: list[Sample] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection | None = None
        self._db_size_at = 0.0
        self._db_bytes: int | None = None

    def start(self) -> "Monitor":
        self._last = time.time() - VISIBILITY_S
        self._thread = threading.Thread(target=self._run, name="chaos-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        if self._conn is not None:
            self._conn.close()

    def _run(self) -> None:
        nxt = time.monotonic()
        while not self._stop.is_set():
            nxt += self.interval
            s = self.sample()
            with self.lock:
                self.samples.append(s)
            self._stop.wait(max(0.0, nxt - time.monotonic()))

    def latest(self) -> Sample | None:
        with self.lock:
            return self.samples[-1] if self.samples else None

    def since_t(self, t: float) -> list[Sample]:
        with self.lock:
            return [s for s in self.samples if s.window[1] > t]

    def _db(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self.db_url, autocommit=True, connect_timeout=2)
        return self._conn

    def sample(self) -> Sample:
        now = time.time()
        a, b = self._last, now - VISIBILITY_S
        s = Sample(t=now, window=(a, b))
        lo = min(a - self.lookback_s, (self.since - 30.0) if self.since is not None else a)
        try:
            c = self._db()
            n, _, p50, p99, mx = c.execute(LAG_SQL, {"lo": _ts(lo), "a": _ts(a), "b": _ts(b)}).fetchone()
            stored = c.execute(STORED_SQL, {"a": _ts(a), "b": _ts(b)}).fetchone()[0]
            s.batches = n
            s.lag_p50_s, s.lag_p99_s, s.lag_max_s = (None if v is None else round(float(v), 3)
                                                     for v in (p50, p99, mx))
            s.readings_per_s = round(stored / max(1e-9, b - a), 1)
            if now >= self._db_size_at:
                self._db_size_at = now + self.db_size_every
                self._db_bytes = c.execute("SELECT pg_database_size(current_database())").fetchone()[0]
            s.db_bytes = self._db_bytes
            self._last = b
        except psycopg.Error as e:
            # the database is down (a fault): the window stays open and is read once it is back
            s.db_error = type(e).__name__
            s.window = (a, a)
            if self._conn is not None:
                self._conn.close()
            self._conn = None
        if self.gateway_health is not None:
            try:
                h = json.loads(self.gateway_health.read_text())
                s.gateway_queue = h.get("queue_depth")
                s.gateway_oldest_s = h.get("oldest_age_s")
                s.gateway_connected = h.get("central_connected")
            except (FileNotFoundError, ValueError):
                pass
        scraped = [x for x in (_scrape(p) for p in self.worker_ports) if x is not None]
        if scraped:
            s.ingest_pending = int(sum(x[0] for x in scraped))
            s.ingest_lag_s = round(max(x[1] for x in scraped), 3)
        if self.feed_status is not None:
            st = self.feed_status()
            s.published = st.get("published")
            s.feed_behind_s = st.get("behind_s")
        s.memory_mb = {name: memory_mb(pid, pss=name in self.pss) for name, pid in self.pids().items()}
        return s
