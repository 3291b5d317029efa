"""The database-backed model runner: readings and device status in, alerts out.

One :meth:`Runner.step` is one transaction:

1. take the runner's advisory lock (one active runner per name; a second one
   idles), and load the checkpoint row ``FOR UPDATE``;
2. hand pending operator verdicts (``alert_feedback``) to the engine's
   ``feedback`` and record what it answered and whether its state changed;
3. read device status changes (``devices.updated_at``, with ``next_wake`` so
   sleep is not silence) and the readings of ingest batches committed since
   the watermark, and feed them to the engine in time order; then ``tick``;
4. fold the findings into alerts (:func:`alerts.store.upsert_finding`), which
   queues their deliveries in the outbox;
5. save the engine (``dumps()``) and the watermarks.

Everything commits together, so after a crash or restart the runner resumes
from the last checkpoint and replays exactly what was not committed: no
alert or delivery is duplicated and no reading is fed twice.

Watermarks. ``ingest_log`` rows are taken in (committed_at, id) order once
they are ``settle`` old (an ingest transaction commits right after it writes
its log row, so by then it is visible); their [min_time, max_time] ranges say
where the new readings are. Batches overlap in time, so a per-(device,
metric) high-water mark (``alert_runner_watermarks``) decides what is new:
each reading is fed once, in time order per device. A reading older than its
device's mark when it becomes visible (two packs of one device committed out
of order by two ingest workers across a step boundary) is not fed: online
models see each device's stream in order, and the late reading stays in
``readings`` for reports.

The engine is the pure ``stream_models.engine.Engine``: ``process(event) ->
list[Finding]``, ``tick(now_ms) -> list[Finding]``, ``feedback(alert_kind,
entity, verdict: bool, tenant=) -> changes``, ``dumps()``/``Engine.loads()``.
It is given ``stream_models.events``: a ``DeviceInfo`` registry row before a
device's first event and whenever the row changes (fingerprints of the rows
the engine has are checkpointed with it), then ``Status`` and ``Reading``
events in time order (built by ``event_factory``, :func:`default_events`
unless given).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import psycopg
import structlog
from psycopg.rows import dict_row

from alerts import store
from contract import v1
from stream_models.events import DeviceInfo, Reading, Status

log = structlog.get_logger("alerts.runner")

LOCK_NAMESPACE = 0x5757_0005


class Engine(Protocol):
    def process(self, event: Any) -> list: ...
    def tick(self, now_ms: int) -> Any: ...
    def feedback(self, alert_kind: str, entity: str, verdict: bool, tenant: str | None = None) -> Any: ...
    def dumps(self) -> bytes: ...
    def loads(self, data: bytes) -> Any: ...


@dataclass
class RunnerConfig:
    name: str = "default"
    settle: timedelta = timedelta(seconds=5)
    max_logs: int = 200                         # ingest batches per step
    max_status: int = 5000                      # device status changes per step
    #: on a first start, begin this far back (None: all history)
    initial_lookback: timedelta | None = timedelta(days=1)
    policy: store.Policy = field(default_factory=store.Policy)


@dataclass
class StepResult:
    ran: bool = True
    events: int = 0
    readings: int = 0
    status: int = 0
    findings: int = 0
    feedback: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


def _ms(t: datetime | None) -> int | None:
    return None if t is None else int(t.timestamp() * 1000)


def device_info(d: dict) -> DeviceInfo:
    """The registry row the engine keys devices on (the asset as a dict, its schedule flattened in)."""
    asset = {"asset_id": d["asset_id"], "bin_kind": d["bin_kind"], "capacity_l": d["capacity_l"],
             "depth_m": d["depth_m"], "household_id": d["household"], "street": d["street"], "ward": d["ward"],
             **(d["schedule"] or {})} if d["asset_id"] else {}
    return DeviceInfo(d["tenant"], d["device_id"], d["kind"], d["lat"], d["lon"], asset)


def default_events(readings: list[dict], status: list[dict], devices: dict[int, dict]) -> list[Any]:
    """``stream_models.events`` in time order: a :class:`Status` per device status change (state and the
    announced ``next_wake``, so sleep is not silence) and a :class:`Reading` per stored reading."""
    out: list[tuple[int, int, Any]] = []
    for s in status:
        if s["state"] is None:        # a registry edit, not a status message
            continue
        d = devices[s["id"]]
        t = _ms(s["updated_at"])
        out.append((t, 0, Status(d["tenant"], d["device_id"], t, s["state"], _ms(s["next_wake"]) or 0,
                                 received_ms=t)))
    for r in readings:
        d = devices.get(r["device_id"])
        if d is None:                 # not in the registry (never happens through ingest): nothing to key it on
            continue
        metric = v1.BY_ID[r["metric"]][1] if r["metric"] in v1.BY_ID else str(r["metric"])
        t = _ms(r["time"])
        out.append((t, 1, Reading(d["tenant"], d["device_id"], d["kind"], metric, t, r["value"])))
    out.sort(key=lambda x: (x[0], x[1]))
    return [e for _, _, e in out]


def restore(factory: Callable[[], Engine], data: bytes | None) -> Engine:
    """A fresh engine, or one restored from a checkpoint (``loads`` may be a classmethod or in place)."""
    engine = factory()
    if data is None:
        return engine
    got = engine.loads(bytes(data))
    return got if got is not None else engine


def _as_bytes(blob: Any) -> bytes:
    return blob.encode() if isinstance(blob, str) else bytes(blob)


class Runner:
    def __init__(self, db_url: str, engine_factory: Callable[[], Engine], config: RunnerConfig | None = None, *,
                 clock: Callable[[], float] = time.time,
                 event_factory: Callable[[list[dict], list[dict], dict[int, dict]], Iterable[Any]] = default_events
                 ) -> None:
        self.db_url = db_url
        self.factory = engine_factory
        self.config = config or RunnerConfig()
        self.clock = clock
        self.event_factory = event_factory
        self.engine: Engine | None = None
        self.version: int | None = None
        self._announced: dict[str, str] = {}   # device pk -> fingerprint of the registry row the engine has
        self._conn: psycopg.Connection | None = None

    @property
    def conn(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.db_url, row_factory=dict_row)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def step(self) -> StepResult:
        name = self.config.name
        conn = self.conn
        try:
            with conn.transaction():
                if not conn.execute("SELECT pg_try_advisory_xact_lock(%s, hashtext(%s)) AS ok",
                                    (LOCK_NAMESPACE, name)).fetchone()["ok"]:
                    return StepResult(ran=False)
                start = (f"now() - make_interval(secs => {self.config.initial_lookback.total_seconds()})"
                         if self.config.initial_lookback is not None else "'epoch'")
                conn.execute(f"""INSERT INTO alert_runner_state (runner, log_at, status_at)
                                 VALUES (%s, {start}, {start}) ON CONFLICT DO NOTHING""", (name,))
                st = conn.execute("SELECT * FROM alert_runner_state WHERE runner = %s FOR UPDATE", (name,)).fetchone()
                if self.engine is None or self.version != st["version"]:
                    self.engine = restore(self.factory, st["engine"])
                    self._announced = dict(st["registry"])
                res = StepResult()
                res.feedback = self._feedback(conn)
                events, marks = self._collect(conn, st, res)
                findings: list = []
                for ev in events:
                    findings.extend(self.engine.process(ev) or [])
                ticked = self.engine.tick(int(self.clock() * 1000))
                if isinstance(ticked, (list, tuple)):
                    findings.extend(ticked)
                res.findings = len(findings)
                for f in findings:
                    out = store.upsert_finding(conn, f, self.config.policy, actor=f"runner:{name}")
                    res.outcomes[out.outcome] = res.outcomes.get(out.outcome, 0) + 1
                stats = dict(st["stats"])
                for k in ("readings", "status", "findings", "feedback"):
                    stats[k] = stats.get(k, 0) + getattr(res, k)
                for k, v in res.outcomes.items():
                    stats[f"alerts_{k}"] = stats.get(f"alerts_{k}", 0) + v
                conn.execute(
                    """UPDATE alert_runner_state SET engine = %s, version = version + 1, log_at = %s, log_id = %s,
                           status_at = %s, status_id = %s, registry = %s, stats = %s, updated_at = now()
                       WHERE runner = %s""",
                    (_as_bytes(self.engine.dumps()), *marks, store.jsonb(self._announced), store.jsonb(stats), name))
                if res.readings or res.status:
                    log.info("runner step", runner=name, **{k: v for k, v in vars(res).items() if v})
            self.version = st["version"] + 1
            return res
        except BaseException:
            self.engine = None        # ahead of the checkpoint that did not commit: reload it next time
            self.version = None
            self._announced = {}
            raise

    def _feedback(self, conn: psycopg.Connection) -> int:
        rows = conn.execute("""SELECT id, alert_id, tenant, kind, entity, verdict FROM alert_feedback
                               WHERE applied_at IS NULL ORDER BY id FOR UPDATE SKIP LOCKED""").fetchall()
        for r in rows:
            before = hashlib.sha256(_as_bytes(self.engine.dumps())).hexdigest()
            changes = self.engine.feedback(r["kind"], r["entity"], r["verdict"] == "true_positive",
                                           tenant=r["tenant"])
            after = hashlib.sha256(_as_bytes(self.engine.dumps())).hexdigest()
            conn.execute("""UPDATE alert_feedback SET applied_at = now(), applied_by = %s, result = %s
                            WHERE id = %s""",
                         (self.config.name, store.jsonb({"changes": changes, "state_changed": before != after,
                                                         "state_before": before[:16], "state_after": after[:16]}),
                          r["id"]))
        return len(rows)

    def _collect(self, conn: psycopg.Connection, st: dict, res: StepResult) -> tuple[list, tuple]:
        c = self.config
        status = conn.execute(
            """SELECT id, tenant, device_id, kind, asset_id, state, status, next_wake, last_seen, updated_at
               FROM devices WHERE (updated_at, id) > (%s, %s) AND updated_at < now() - %s
               ORDER BY updated_at, id LIMIT %s""",
            (st["status_at"], st["status_id"], c.settle, c.max_status)).fetchall()
        logs = conn.execute(
            """SELECT id, committed_at, min_time, max_time FROM ingest_log
               WHERE committed_at >= %s AND (committed_at, id) > (%s, %s) AND committed_at < now() - %s
               ORDER BY committed_at, id LIMIT %s""",
            (st["log_at"], st["log_at"], st["log_id"], c.settle, c.max_logs)).fetchall()
        readings: list[dict] = []
        spans = [(g["min_time"], g["max_time"]) for g in logs if g["min_time"] is not None]
        if spans:
            lo, hi = min(s[0] for s in spans), max(s[1] for s in spans)
            rows = conn.execute(
                """SELECT r.time, r.device_id, r.metric, r.value
                   FROM readings r
                   LEFT JOIN alert_runner_watermarks w
                     ON w.runner = %s AND w.device_id = r.device_id AND w.metric = r.metric
                   WHERE r.time BETWEEN %s AND %s AND (w.time IS NULL OR r.time > w.time)
                   ORDER BY r.time, r.device_id, r.metric""", (c.name, lo, hi)).fetchall()
            readings = rows
        res.readings = len(readings)
        res.status = len(status)
        if readings:
            marks: dict[tuple[int, int], datetime] = {}
            for r in readings:                       # in time order: the last one is the newest
                marks[(r["device_id"], r["metric"])] = r["time"]
            d, m, t = zip(*((k[0], k[1], v) for k, v in marks.items()))
            conn.execute(
                """INSERT INTO alert_runner_watermarks (runner, device_id, metric, time)
                   SELECT %s, d, m, t FROM unnest(%s::bigint[], %s::smallint[], %s::timestamptz[]) AS u(d, m, t)
                   ON CONFLICT (runner, device_id, metric) DO UPDATE
                     SET time = greatest(alert_runner_watermarks.time, EXCLUDED.time)""",
                (c.name, list(d), list(m), list(t)))
        devices = self._devices(conn, {r["device_id"] for r in readings} | {s["id"] for s in status})
        events: list[Any] = []
        for pk in sorted(devices):            # a registry row before the device's first event, and on change
            info = device_info(devices[pk])
            fp = hashlib.sha256(store.dumps(info).encode()).hexdigest()[:16]
            if self._announced.get(str(pk)) != fp:
                events.append(info)
                self._announced[str(pk)] = fp
        events.extend(self.event_factory(readings, status, devices))
        res.events = len(events)
        log_mark = (logs[-1]["committed_at"], logs[-1]["id"]) if logs else (st["log_at"], st["log_id"])
        status_mark = (status[-1]["updated_at"], status[-1]["id"]) if status else (st["status_at"], st["status_id"])
        return events, (*log_mark, *status_mark)

    @staticmethod
    def _devices(conn: psycopg.Connection, ids: set[int]) -> dict[int, dict]:
        if not ids:
            return {}
        rows = conn.execute(
            """SELECT d.id, d.tenant, d.device_id, d.kind, d.asset_id, coalesce(d.lat, a.lat) AS lat,
                      coalesce(d.lon, a.lon) AS lon, d.next_wake, a.bin_kind, a.household, a.street, a.ward,
                      a.capacity_l, a.depth_m, a.schedule
               FROM devices d LEFT JOIN assets a ON a.tenant = d.tenant AND a.asset_id = d.asset_id
               WHERE d.id = ANY(%s)""", (list(ids),)).fetchall()
        return {r["id"]: r for r in rows}

    def run(self, stop: threading.Event, interval_s: float = 5.0) -> None:
        """Step until ``stop`` is set; survives database restarts and engine errors (logged, retried)."""
        while not stop.is_set():
            try:
                res = self.step()
            except psycopg.OperationalError as e:
                log.warning("database unavailable", error=str(e))
                self.close()
                stop.wait(interval_s)
                continue
            except Exception:
                log.exception("runner step failed; retrying from the last checkpoint")
                stop.wait(interval_s)
                continue
            if not (res.readings or res.status):
                stop.wait(interval_s)
