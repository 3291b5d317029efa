"""After the run: the database against what was really sent, and the council's
webhook log against the outbox.

**Readings.** The feed recorded every ``up`` message it published (the bytes,
:mod:`streetsense.chaos.feed`). Each is decoded here with the contract
decoder, as ingest does, into the idempotency key (device, metric, time) and
the value; the keys are loaded into a temporary table by COPY and compared
with ``readings`` in SQL (no million-row sets in Python):

- ``sent``: distinct keys in the published bytes (the simulator's own
  duplicate sends counted once);
- ``lost``: sent keys with no row;
- ``duplicated``: rows beyond one per key plus rows whose key was never sent;
- ``value_mismatch``: rows whose value differs from the one sent.

**Deliveries.** Every outbox row for the council's webhook that is not
cancelled must have taken effect at the receiver exactly once per
idempotency key; a post the receiver answered 200 more than once is a
redundant delivery (counted as a duplicate).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import psycopg

from contract import v1
from contract.decode import PackError, decode
from streetsense.chaos.council import Council
from streetsense.chaos.feed import read_record

__all__ = ["compare_readings", "compare_deliveries", "wait_deliveries", "truth_rows"]

#: far enough ahead that the decoder's "not from the future" check never bites (the feed runs in the past)
_NO_FUTURE_CHECK_MS = 1 << 60


def truth_rows(messages: Iterable[tuple[str, bytes]], kinds: dict[str, str]) -> Iterable[tuple]:
    """(device_id, metric id, epoch ms, value) of every reading the decoder accepts in ``messages``.

    >>> from contract import v1
    >>> msg = (v1.topic("t", "bin-1", v1.UP), v1.encode_json("bin-1", 1767225600, 1, [("fill", 420, 0)]))
    >>> list(truth_rows([msg], {"bin-1": "bin_fill"}))
    [('bin-1', 2, 1767225600000, 0.42)]
    """
    for topic, payload in messages:
        try:
            _, dev, ch = v1.parse_topic(topic)
        except ValueError:
            continue
        if ch != v1.UP:
            continue
        try:
            pack = decode(payload, device_id=dev, received_ms=_NO_FUTURE_CHECK_MS, kind=kinds.get(dev))
        except PackError:
            continue
        for r in pack.readings:
            yield dev, r.metric_id, r.time_ms, r.value


def compare_readings(db_url: str, tenant: str, record: Path, kinds: dict[str, str],
                     exclude: tuple[str, ...] = ()) -> dict:
    """Sent, stored, lost, duplicated and mismatched readings of ``tenant`` (see module docstring)."""
    t0 = time.monotonic()
    with psycopg.connect(db_url) as c:
        c.execute("CREATE TEMP TABLE chaos_sent (device text, metric smallint, ms bigint, value float8)")
        n_rows = 0
        with c.cursor().copy("COPY chaos_sent (device, metric, ms, value) FROM STDIN") as cp:
            for row in truth_rows(read_record(record), kinds):
                cp.write_row(row)
                n_rows += 1
        c.execute("""CREATE TEMP TABLE chaos_truth AS
                     SELECT d.id AS device_id, s.metric, timestamptz 'epoch' + s.ms * interval '1 millisecond' AS time,
                            min(s.value) AS value, count(*) AS sends
                     FROM chaos_sent s JOIN devices d ON d.tenant = %s AND d.device_id = s.device
                     GROUP BY 1, 2, 3""", (tenant,))
        c.execute("CREATE INDEX ON chaos_truth (device_id, metric, time)")
        c.execute("ANALYZE chaos_truth")
        unregistered = c.execute(
            """SELECT count(*) FROM chaos_sent s
               WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.tenant = %s AND d.device_id = s.device)""",
            (tenant,)).fetchone()[0]
        sent = c.execute("SELECT count(*) FROM chaos_truth").fetchone()[0]
        stored, distinct = c.execute(
            """SELECT count(*), count(DISTINCT (r.device_id, r.metric, r.time))
               FROM readings r JOIN devices d ON d.id = r.device_id
               WHERE d.tenant = %s AND NOT (d.device_id = ANY(%s))""", (tenant, list(exclude))).fetchone()
        lost = c.execute(
            """SELECT count(*) FROM chaos_truth k WHERE NOT EXISTS (
                   SELECT 1 FROM readings r WHERE r.device_id = k.device_id AND r.metric = k.metric
                                              AND r.time = k.time)""").fetchone()[0]
        unsent = c.execute(
            """SELECT count(*) FROM readings r JOIN devices d ON d.id = r.device_id
               WHERE d.tenant = %s AND NOT (d.device_id = ANY(%s)) AND NOT EXISTS (
                   SELECT 1 FROM chaos_truth k WHERE k.device_id = r.device_id AND k.metric = r.metric
                                                 AND k.time = r.time)""", (tenant, list(exclude))).fetchone()[0]
        mismatch = c.execute(
            """SELECT count(*) FROM chaos_truth k JOIN readings r
                 ON r.device_id = k.device_id AND r.metric = k.metric AND r.time = k.time
               WHERE abs(r.value - k.value) > 1e-9 * greatest(1, abs(k.value))""").fetchone()[0]
        quarantined = dict(c.execute(
            """SELECT reason_code, count(*) FROM quarantine WHERE tenant = %s OR tenant IS NULL
               GROUP BY 1 ORDER BY 1""", (tenant,)).fetchall())
        c.rollback()
    return {"sent_readings": sent, "sent_reading_copies": n_rows, "stored": stored, "lost": lost,
            "duplicated": (stored - distinct) + unsent, "duplicate_rows": stored - distinct,
            "rows_never_sent": unsent, "value_mismatch": mismatch, "unregistered_device_readings": unregistered,
            "quarantined_messages_by_reason": quarantined, "verify_s": round(time.monotonic() - t0, 1)}


def _pending(db_url: str, tenant: str, sink: str) -> int:
    with psycopg.connect(db_url) as c:
        return c.execute("""SELECT count(*) FROM alert_deliveries
                            WHERE tenant = %s AND sink = %s AND status IN ('pending', 'sending')""",
                         (tenant, sink)).fetchone()[0]


def wait_deliveries(db_url: str, tenant: str, sink: str, timeout: float) -> float | None:
    """Seconds until no delivery to ``sink`` is pending (None: still pending at ``timeout``)."""
    t0 = time.monotonic()
    while True:
        try:
            if _pending(db_url, tenant, sink) == 0:
                return round(time.monotonic() - t0, 1)
        except psycopg.OperationalError:
            pass
        if time.monotonic() - t0 > timeout:
            return None
        time.sleep(0.5)


def compare_deliveries(db_url: str, tenant: str, sink: str, council: Council) -> dict:
    """Outbox rows for ``sink`` against what took effect at the council's receiver."""
    with psycopg.connect(db_url) as c:
        rows = c.execute("SELECT idempotency_key, status FROM alert_deliveries WHERE tenant = %s AND sink = %s",
                         (tenant, sink)).fetchall()
        alerts = c.execute("SELECT count(*), count(*) FILTER (WHERE muted) FROM alerts WHERE tenant = %s",
                           (tenant,)).fetchone()
    due = {k for k, s in rows if s != "cancelled"}
    every = {k for k, _ in rows}
    with council.lock:
        took_effect = set(council.effects)
        multi = {k: n for k, n in council.accepted.items() if n > 1}
    s = council.summary()
    return {"alerts": alerts[0], "alerts_muted_by_storm_limit": alerts[1], "expected": len(due),
            "received": len(took_effect & every), "missing": len(due - took_effect),
            "unknown_keys": len(took_effect - every), "still_pending": sum(1 for _, st in rows
                                                                           if st in ("pending", "sending")),
            "redundant": sum(n - 1 for n in multi.values()), "posts": s["posts"], "refused_503": s["refused_503"],
            "unverified": s["unverified"]}
