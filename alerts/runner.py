"""The database-backed model runner: readings and device status in, alerts out.

One :meth:`Runner.step` is one transaction:

1. take the runner's advisory lock (one active runner per name; a second one
   idles), and load the checkpoint row ``FOR UPDATE``;
2. hand pending operator verdicts (``alert_feedback``) to the engine's
   ``feedback`` and record what it answered and whether its state changed;
3. read device status changes (``devices.updated_at``, with ``next_wake`` so
   sleep is not silence) and the readings of ingest batches committed since
   the watermark, and the crew reports (``crew_reports``, from the crew app)
   received since theirs, and feed them to the engine in time order; then ``tick``;
4. fold the findings into alerts (:func:`alerts.store.upsert_finding`), which
   queues their deliveries in the outbox;
5. save the engine and the watermarks: an engine that splits its state
   (``dump_parts``) keeps its core in ``alert_runner_state`` and each device
   in a row of ``alert_runner_devices``, and a step rewrites only the devices
   whose bytes changed (a town's engine is tens of MB; rewriting all of it
   every few seconds was megabytes of WAL a second at real-time rates).

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

Crew reports. ``crew_reports`` rows are taken in (received_at, id) order once
they are ``settle`` old, the watermark checkpointed in the same transaction,
so a report reaches the engine exactly once across restarts. Each becomes a
:class:`~stream_models.events.CrewReport` at its ``reported_at`` (the phone's
time: an offline queue may deliver it late) and is merged in time order with
the step's readings and status changes. ``collected`` is ground truth that the
bin was emptied, ``not_out`` decides "not put out" (and counts towards the
welfare finding, still gated by consent in :mod:`alerts.store`), ``blocked``
explains a missed collection; ``contaminated`` and ``damaged`` are not model
input (they say nothing about whether the bin was presented or emptied) and are
only counted. The bin's registry row is announced first if the engine does not
have it yet. A report that arrives after the engine judged its round is too
late to change that judgement (the engine keeps it for the bin's next one).

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
from psycopg.rows import dict_row, tuple_row

from alerts import store
from contract import v1
from stream_models.events import CREW_OUTCOMES, CrewReport, DeviceInfo, Reading, Status

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
    #: ... and no more batches than hold this many readings (the first always goes): a step holds its
    #: readings in memory, so this bounds the runner's working set when it catches up on a backlog
    max_readings: int = 20_000
    max_status: int = 5000                      # device status changes per step
    max_crew: int = 5000                        # crew reports per step
    #: on a first start, begin this far back (None: all history)
    initial_lookback: timedelta | None = timedelta(days=1)
    policy: store.Policy = field(default_factory=store.Policy)


@dataclass
class StepResult:
    ran: bool = True
    events: int = 0
    readings: int = 0
    status: int = 0
    crew: int = 0                               # crew reports fed to the engine
    crew_ignored: int = 0                       # crew reports read but not model input (contaminated, damaged)
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


def _event_time(ev: Any) -> int | None:
    if isinstance(ev, (Reading, Status, CrewReport)):
        return int(ev.time_ms)
    if isinstance(ev, tuple) and not hasattr(ev, "_fields") and len(ev) == 6:
        return int(ev[4])
    return None


def merge_in_time(events: Iterable[Any], crew: list[CrewReport]) -> list[Any]:
    """``events`` (already in time order) with ``crew`` (sorted by time) merged in: a report goes after
    every event of the same or an earlier time; events without a time keep their place.

    >>> r = [Reading("t", "b", "bin_fill", "fill", 10, 0.5), Reading("t", "b", "bin_fill", "fill", 30, 0.1)]
    >>> [type(e).__name__ for e in merge_in_time(r, [CrewReport("t", "hb-1", 10, "collected")])]
    ['Reading', 'CrewReport', 'Reading']
    """
    out: list[Any] = []
    i = 0
    for ev in events:
        t = _event_time(ev)
        while t is not None and i < len(crew) and crew[i].time_ms < t:
            out.append(crew[i])
            i += 1
        out.append(ev)
    out.extend(crew[i:])
    return out


def restore(factory: Callable[[], Engine], data: bytes | None) -> Engine:
    """A fresh engine, or one restored from a checkpoint (``loads`` may be a classmethod or in place)."""
    engine = factory()
    if data is None:
        return engine
    got = engine.loads(bytes(data))
    return got if got is not None else engine


def load_checkpoint(conn: psycopg.Connection, engine_cls: Any, runner: str = "default") -> Any:
    """The engine a runner last committed (core and per-device rows), for inspection; None if none yet."""
    cur = conn.cursor(row_factory=tuple_row)
    row = cur.execute("SELECT engine FROM alert_runner_state WHERE runner = %s", (runner,)).fetchone()
    if row is None or row[0] is None:
        return None
    if not hasattr(engine_cls, "load_parts"):
        return engine_cls.loads(bytes(row[0]))
    return engine_cls.load_parts(bytes(row[0]), _device_states(conn, runner))


def _device_states(conn: psycopg.Connection, runner: str) -> list[tuple[tuple[str, str], bytes]]:
    """((tenant, device id), state) of every device row a runner committed."""
    rows = conn.cursor(row_factory=tuple_row).execute(
        "SELECT dev_tenant, dev_id, state FROM alert_runner_devices WHERE runner = %s", (runner,)).fetchall()
    return [((t, d), bytes(b)) for t, d, b in rows]


def _digest(blob: bytes) -> bytes:
    return hashlib.blake2b(blob, digest_size=16).digest()


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
        self._saved: dict[tuple[str, str], bytes] = {}   # engine device key -> digest of its committed state
        self.saved_devices = 0                  # device states the last step wrote
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
                conn.execute(f"""INSERT INTO alert_runner_state (runner, log_at, status_at, crew_at)
                                 VALUES (%s, {start}, {start}, {start}) ON CONFLICT DO NOTHING""", (name,))
                st = conn.execute("SELECT * FROM alert_runner_state WHERE runner = %s FOR UPDATE", (name,)).fetchone()
                if self.engine is None or self.version != st["version"]:
                    self.engine, self._saved = self._restore(conn, st["engine"])
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
                for k in ("readings", "status", "crew", "crew_ignored", "findings", "feedback"):
                    stats[k] = stats.get(k, 0) + getattr(res, k)
                for k, v in res.outcomes.items():
                    stats[f"alerts_{k}"] = stats.get(f"alerts_{k}", 0) + v
                core, saved = self._save_devices(conn)
                conn.execute(
                    """UPDATE alert_runner_state SET engine = %s, version = version + 1, log_at = %s, log_id = %s,
                           status_at = %s, status_id = %s, crew_at = %s, crew_id = %s, registry = %s, stats = %s,
                           updated_at = now()
                       WHERE runner = %s""",
                    (core, *marks, store.jsonb(self._announced), store.jsonb(stats), name))
                if res.readings or res.status or res.crew or res.crew_ignored:
                    log.info("runner step", runner=name, saved_devices=self.saved_devices,
                             **{k: v for k, v in vars(res).items() if v})
            self.version = st["version"] + 1
            self._saved = saved
            return res
        except BaseException:
            self.engine = None        # ahead of the checkpoint that did not commit: reload it next time
            self.version = None
            self._announced = {}
            self._saved = {}
            raise

    def _restore(self, conn: psycopg.Connection, core: bytes | None) -> tuple[Engine, dict]:
        """The engine from its checkpoint: the core and, for an engine that splits its state
        (``dump_parts``/``load_parts``), each device's row of ``alert_runner_devices``."""
        fresh = self.factory()
        if core is None or not hasattr(fresh, "load_parts"):
            return restore(lambda: fresh, core), {}
        parts = _device_states(conn, self.config.name)
        return type(fresh).load_parts(bytes(core), parts), {k: _digest(b) for k, b in parts}

    def _save_devices(self, conn: psycopg.Connection) -> tuple[bytes, dict]:
        """Write the devices whose state changed since the last commit (and drop the ones the engine no
        longer has); the core of the engine to store beside them, and the digests once committed."""
        if not hasattr(self.engine, "dump_parts"):
            self.saved_devices = 0
            return _as_bytes(self.engine.dumps()), {}
        core, devices = self.engine.dump_parts()
        saved = {k: _digest(b) for k, b in devices.items()}
        changed = [(k, devices[k]) for k, d in saved.items() if self._saved.get(k) != d]
        gone = [k for k in self._saved if k not in saved]
        name = self.config.name
        if changed:
            conn.execute(
                """INSERT INTO alert_runner_devices (runner, dev_tenant, dev_id, state)
                   SELECT %s, t, d, s FROM unnest(%s::text[], %s::text[], %s::bytea[]) AS u(t, d, s)
                   ON CONFLICT (runner, dev_tenant, dev_id) DO UPDATE SET state = EXCLUDED.state""",
                (name, [k[0] for k, _ in changed], [k[1] for k, _ in changed], [b for _, b in changed]))
        if gone:
            conn.execute("""DELETE FROM alert_runner_devices WHERE runner = %s
                            AND (dev_tenant, dev_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))""",
                         (name, [k[0] for k in gone], [k[1] for k in gone]))
        self.saved_devices = len(changed)
        return core, saved

    def _state_hash(self) -> str:
        """SHA-256 of the engine's whole state (device by device where it splits: no one giant pickle)."""
        if not hasattr(self.engine, "dump_parts"):
            return hashlib.sha256(_as_bytes(self.engine.dumps())).hexdigest()
        core, devices = self.engine.dump_parts()
        h = hashlib.sha256(core)
        for k in sorted(devices):
            h.update(repr(k).encode())
            h.update(devices[k])
        return h.hexdigest()

    def _feedback(self, conn: psycopg.Connection) -> int:
        rows = conn.execute("""SELECT id, alert_id, tenant, kind, entity, verdict FROM alert_feedback
                               WHERE applied_at IS NULL ORDER BY id FOR UPDATE SKIP LOCKED""").fetchall()
        for r in rows:
            before = self._state_hash()
            changes = self.engine.feedback(r["kind"], r["entity"], r["verdict"] == "true_positive",
                                           tenant=r["tenant"])
            after = self._state_hash()
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
            """SELECT id, committed_at, min_time, max_time FROM (
                 SELECT id, committed_at, min_time, max_time, readings,
                        sum(readings) OVER (ORDER BY committed_at, id) AS upto
                 FROM ingest_log
                 WHERE committed_at >= %s AND (committed_at, id) > (%s, %s) AND committed_at < now() - %s
                 ORDER BY committed_at, id LIMIT %s) l
               WHERE upto - readings < %s
               ORDER BY committed_at, id""",
            (st["log_at"], st["log_at"], st["log_id"], c.settle, c.max_logs, max(1, c.max_readings))).fetchall()
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
        crew_rows = conn.execute(
            """SELECT id, tenant, asset_id, status, reported_at, received_at, note FROM crew_reports
               WHERE (received_at, id) > (%s, %s) AND received_at < now() - %s
               ORDER BY received_at, id LIMIT %s""",
            (st["crew_at"], st["crew_id"], c.settle, c.max_crew)).fetchall()
        crew = sorted((CrewReport(r["tenant"], r["asset_id"], _ms(r["reported_at"]), r["status"], r["note"] or "")
                       for r in crew_rows if r["status"] in CREW_OUTCOMES), key=lambda x: x.time_ms)
        res.crew, res.crew_ignored = len(crew), len(crew_rows) - len(crew)
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
        devices = self._devices(conn, {r["device_id"] for r in readings} | {s["id"] for s in status}
                                | self._bin_devices(conn, crew))
        events: list[Any] = []
        for pk in sorted(devices):            # a registry row before the device's first event, and on change
            info = device_info(devices[pk])
            fp = hashlib.sha256(store.dumps(info).encode()).hexdigest()[:16]
            if self._announced.get(str(pk)) != fp:
                events.append(info)
                self._announced[str(pk)] = fp
        events.extend(merge_in_time(self.event_factory(readings, status, devices), crew))
        res.events = len(events)
        log_mark = (logs[-1]["committed_at"], logs[-1]["id"]) if logs else (st["log_at"], st["log_id"])
        status_mark = (status[-1]["updated_at"], status[-1]["id"]) if status else (st["status_at"], st["status_id"])
        crew_mark = (crew_rows[-1]["received_at"], crew_rows[-1]["id"]) if crew_rows else (st["crew_at"], st["crew_id"])
        return events, (*log_mark, *status_mark, *crew_mark)

    @staticmethod
    def _bin_devices(conn: psycopg.Connection, crew: list[CrewReport]) -> set[int]:
        """The fill sensors of the bins the crew reported on (their registry rows go to the engine first)."""
        if not crew:
            return set()
        keys = sorted({(r.tenant, r.asset_id) for r in crew})
        rows = conn.execute(
            """SELECT d.id FROM devices d JOIN unnest(%s::text[], %s::text[]) AS k(tenant, asset_id)
                 ON d.tenant = k.tenant AND d.asset_id = k.asset_id
               WHERE d.kind = 'bin_fill'""", ([k[0] for k in keys], [k[1] for k in keys])).fetchall()
        return {r["id"] for r in rows}

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
            if not (res.readings or res.status or res.crew or res.crew_ignored):
                stop.wait(interval_s)
