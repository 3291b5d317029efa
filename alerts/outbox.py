"""The delivery worker: drains the transactional outbox (``alert_deliveries``).

Rows are written in the same transaction as the alert change that calls for
them (:func:`alerts.store.enqueue`), so nothing is lost when a sink is down or
the worker is not running: a row waits until a sink acknowledges it.

One delivery, one lease:

1. **claim** (short transaction): due rows (``pending`` and ``next_attempt_at``
   passed, or ``sending`` with an expired lease: a worker died mid-send) are
   taken ``FOR UPDATE SKIP LOCKED``, set ``sending`` with a lease, and their
   attempt counter is raised *before* anything is sent. Several workers never
   take the same row, and a send that may have happened is always counted.
2. **send**, outside any transaction, with the row's idempotency key.
3. **finish** (short transaction, guarded by the attempt number so a worker
   whose lease expired cannot overwrite a newer attempt): ``delivered`` with
   the external id, or back to ``pending`` with exponential backoff and
   jitter, retried until acknowledged.

So delivery is at least once, and the idempotency key makes it take effect
once (see :mod:`alerts.sinks`). A sink that is unreachable is skipped for the
rest of the cycle (its other rows are put back untried) so an outage costs one
timeout per cycle, not one per row. A row cancelled while in flight (consent
withdrawn, alert closed) stays cancelled and records that it was sent anyway.

The worker also polls Open311 for the requests it created: a request closed
by the council resolves its alert.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from datetime import timedelta

import httpx
import psycopg
import structlog
from prometheus_client import Counter
from psycopg.rows import dict_row

from alerts import store
from alerts.sinks import EmailSink, Open311Sink, Pending, Sent, SinkError, WebhookSink

log = structlog.get_logger("alerts.outbox")

DELIVERIES = Counter("streetsense_alert_deliveries_total", "Outbox delivery attempts by sink kind and outcome",
                     ["sink_kind", "outcome"])

CLAIM = """WITH due AS (
        SELECT id FROM alert_deliveries
        WHERE (status = 'pending' AND next_attempt_at <= now())
           OR (status = 'sending' AND leased_until < now())
        ORDER BY next_attempt_at, id
        LIMIT %(n)s
        FOR UPDATE SKIP LOCKED)
    UPDATE alert_deliveries d SET status = 'sending', attempts = d.attempts + 1, last_attempt_at = now(),
           leased_until = now() + %(lease)s
    FROM due WHERE d.id = due.id
    RETURNING d.*"""

FINISH = """UPDATE alert_deliveries SET
        status = CASE WHEN status = 'cancelled' THEN 'cancelled' ELSE 'delivered' END,
        delivered_at = now(), leased_until = NULL, external_id = %(external_id)s, external_token = NULL,
        payload = CASE WHEN status = 'cancelled' THEN NULL ELSE %(payload)s END,
        last_error = CASE WHEN status = 'cancelled' THEN 'sent before the cancellation took effect' END
    WHERE id = %(id)s AND attempts = %(attempts)s AND status IN ('sending', 'cancelled')"""

RETRY = """UPDATE alert_deliveries SET
        status = CASE WHEN status = 'sending' THEN 'pending' ELSE status END, leased_until = NULL,
        last_error = %(error)s, next_attempt_at = now() + make_interval(secs => %(delay)s),
        external_token = coalesce(%(token)s, external_token), attempts = attempts - %(untried)s
    WHERE id = %(id)s AND attempts = %(attempts)s AND status IN ('sending', 'cancelled')"""

DUE_POLLS = """SELECT d.id, d.tenant, d.sink, d.alert_id, d.external_id, s.config
    FROM alert_deliveries d
    JOIN alert_sinks s ON s.tenant = d.tenant AND s.name = d.sink
    JOIN alerts a ON a.id = d.alert_id
    WHERE s.kind = 'open311' AND s.enabled AND d.status = 'delivered' AND d.external_id IS NOT NULL
      AND d.remote_status IS DISTINCT FROM 'closed' AND a.status IN ('open', 'acknowledged')
      AND (d.polled_at IS NULL OR d.polled_at < now() - %(every)s)
    ORDER BY d.polled_at NULLS FIRST, d.id LIMIT %(n)s"""


@dataclass
class OutboxConfig:
    batch: int = 20                          # rows claimed per cycle
    lease: timedelta = timedelta(seconds=60)  # longer than any one send can take
    backoff_base_s: float = 2.0
    backoff_cap_s: float = 3600.0
    poll_every: timedelta = timedelta(minutes=5)   # Open311 status polling, per request
    poll_batch: int = 50
    http_timeout_s: float = 10.0
    idle_s: float = 1.0                      # sleep when a cycle found nothing to do
    name: str = "outbox"


@dataclass
class CycleResult:
    delivered: int = 0
    pending_token: int = 0
    failed: int = 0
    skipped: int = 0
    polled: int = 0
    council_closed: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def busy(self) -> bool:
        return bool(self.delivered or self.failed or self.pending_token or self.polled)


class OutboxWorker:
    def __init__(self, db_url: str, config: OutboxConfig | None = None) -> None:
        self.db_url = db_url
        self.config = config or OutboxConfig()
        self.client = httpx.Client(timeout=self.config.http_timeout_s, follow_redirects=False)
        self.open311 = Open311Sink(self.client)
        self.sinks = {"webhook": WebhookSink(self.client), "open311": self.open311,
                      "email": EmailSink(self.config.http_timeout_s)}
        self._conn: psycopg.Connection | None = None

    @property
    def conn(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.db_url, autocommit=True, row_factory=dict_row)
        return self._conn

    def close(self) -> None:
        self.client.close()
        if self._conn is not None:
            self._conn.close()

    def backoff(self, attempts: int) -> float:
        """Seconds before the next try after ``attempts`` tries: exponential, capped, with jitter."""
        c = self.config
        return min(c.backoff_cap_s, c.backoff_base_s * 2 ** max(0, attempts - 1)) * random.uniform(0.5, 1.0)

    # --- one cycle ---

    def run_once(self) -> CycleResult:
        res = CycleResult()
        with self.conn.transaction():
            claimed = self.conn.execute(CLAIM, {"n": self.config.batch, "lease": self.config.lease}).fetchall()
        down: dict[tuple[str, str], float] = {}
        for d in claimed:
            key = (d["tenant"], d["sink"])
            kind = "unknown"
            if key in down:
                self._retry(d, "not tried: sink unreachable this cycle", down[key], untried=True)
                res.skipped += 1
                continue
            try:
                alert, sink = self._context(d)
                if sink is None or not sink["enabled"]:
                    raise SinkError(f"sink {d['sink']!r} is missing or disabled")
                kind = sink["kind"]
                outcome, payload = self.sinks[sink["kind"]].send(sink["config"], alert, d)
            except SinkError as e:
                delay = self.backoff(d["attempts"])
                self._retry(d, str(e), delay)
                res.failed += 1
                res.errors.append(str(e))
                DELIVERIES.labels(kind, "failed").inc()
                log.warning("delivery failed", delivery=d["id"], sink=d["sink"], attempts=d["attempts"],
                            retry_in_s=round(delay, 2), error=str(e))
                if e.down:
                    down[key] = delay
                continue
            except Exception as e:   # a bug or bad data must not stop the other deliveries
                self._retry(d, f"{type(e).__name__}: {e}", self.backoff(d["attempts"]))
                res.failed += 1
                res.errors.append(repr(e))
                log.exception("delivery crashed", delivery=d["id"])
                continue
            self._finish(d, alert, sink, outcome, payload)
            if isinstance(outcome, Pending):
                res.pending_token += 1
            else:
                res.delivered += 1
                DELIVERIES.labels(sink["kind"], "delivered").inc()
        self._poll_open311(res)
        return res

    def _context(self, d: dict) -> tuple[dict, dict | None]:
        # the bin's class and household pseudonym: a household bin's payload carries the pseudonym only
        alert = self.conn.execute("""SELECT a.*, s.bin_kind AS asset_bin_kind, s.household AS asset_household
                                     FROM alerts a LEFT JOIN assets s ON s.tenant = a.tenant AND s.asset_id = a.asset_id
                                     WHERE a.id = %s""", (d["alert_id"],)).fetchone()
        sink = self.conn.execute("SELECT kind, config, enabled FROM alert_sinks WHERE tenant = %s AND name = %s",
                                 (d["tenant"], d["sink"])).fetchone()
        return alert, sink

    def _retry(self, d: dict, error: str, delay: float, *, token: str | None = None, untried: bool = False) -> None:
        self.conn.execute(RETRY, {"id": d["id"], "attempts": d["attempts"], "error": error[:1000],
                                  "delay": delay, "token": token, "untried": 1 if untried else 0})

    def _finish(self, d: dict, alert: dict, sink: dict, outcome: Sent | Pending, payload: dict) -> None:
        with self.conn.transaction():
            if isinstance(outcome, Pending):
                self._retry(d, "open311 answered with a token; polling it for the request id",
                            self.backoff(1), token=outcome.token)
                return
            n = self.conn.execute(FINISH, {"id": d["id"], "attempts": d["attempts"],
                                           "external_id": outcome.external_id,
                                           "payload": store.jsonb(payload)}).rowcount
            if n == 0:
                log.warning("delivery finished after its lease was taken over", delivery=d["id"])
            if alert["welfare"]:
                store.audit(self.conn, self.config.name, "welfare.deliver", alert["tenant"],
                            alert["household"] or f"alert-{alert['id']}",
                            {"alert_id": alert["id"], "delivery_id": d["id"], "sink": d["sink"],
                             "event": d["event"]})

    # --- Open311 status ---

    def _poll_open311(self, res: CycleResult) -> None:
        due = self.conn.execute(DUE_POLLS, {"every": self.config.poll_every, "n": self.config.poll_batch}).fetchall()
        unreachable: set[tuple[str, str]] = set()
        for d in due:
            if (d["tenant"], d["sink"]) in unreachable:
                continue
            try:
                req = self.open311.status(d["config"], d["external_id"])
            except SinkError as e:
                if e.down:
                    unreachable.add((d["tenant"], d["sink"]))
                self.conn.execute("UPDATE alert_deliveries SET polled_at = now(), last_error = %s WHERE id = %s",
                                  (str(e)[:1000], d["id"]))
                continue
            res.polled += 1
            remote = (req or {}).get("status")
            with self.conn.transaction():
                self.conn.execute("UPDATE alert_deliveries SET polled_at = now(), remote_status = %s WHERE id = %s",
                                  (remote, d["id"]))
                if remote == "closed":
                    note = req.get("status_notes") or f"closed in Open311 request {d['external_id']}"
                    try:
                        store.close(self.conn, d["alert_id"], f"open311:{d['sink']}", "resolved", None,
                                    note, resolution="council")
                        res.council_closed += 1
                    except store.Conflict:
                        pass      # an operator closed it in the meantime

    # --- the loop ---

    def run(self, stop: threading.Event) -> None:
        """Deliver until ``stop`` is set; survives database restarts."""
        while not stop.is_set():
            try:
                res = self.run_once()
            except psycopg.OperationalError as e:
                log.warning("database unavailable", error=str(e))
                if self._conn is not None:
                    self._conn.close()
                stop.wait(max(self.config.idle_s, 1.0))
                continue
            if not res.busy:
                stop.wait(self.config.idle_s)
