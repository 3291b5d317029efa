"""Durable, idempotent storage of decoded batches (the ingest worker's I/O shell).

One call of :meth:`ReadingStore.write` is one transaction. Readings go in by
binary COPY, optimistically straight into ``readings`` inside a savepoint:
almost every batch is new data, and then this is as fast as the database can
take rows. If any row of the batch is already stored (a redelivery after a
crash, a device resending) the unique key (device, metric, time) refuses the
COPY, the savepoint rolls back, and the batch goes the careful way: binary
COPY into a per-connection staging table, then ``INSERT … SELECT … ON
CONFLICT DO NOTHING`` in key order. Quarantine rows, batch counters and device
state are written in the same transaction. Only after it commits does the worker acknowledge the MQTT
messages, so at-least-once delivery plus this idempotent write stores every
reading exactly once.

Servers that cannot COPY FROM STDIN (the PGlite/TimescaleDB build) take the
same rows through ``unnest`` of array parameters instead.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import psycopg

from ingest.pgcopy import COLUMNS, encode_readings

STAGE_DDL = """CREATE TEMP TABLE IF NOT EXISTS ingest_stage (
    time timestamptz NOT NULL, device_id bigint NOT NULL, metric smallint NOT NULL, value double precision NOT NULL
) ON COMMIT DELETE ROWS"""

MOVE_SQL = """INSERT INTO readings (time, device_id, metric, value)
    SELECT time, device_id, metric, value FROM ingest_stage ORDER BY device_id, metric, time
    ON CONFLICT DO NOTHING"""

UNNEST_SQL = """INSERT INTO readings (time, device_id, metric, value)
    SELECT timestamptz 'epoch' + ms * interval '1 millisecond', d, m, v
    FROM unnest(%s::bigint[], %s::bigint[], %s::smallint[], %s::float8[]) AS u(ms, d, m, v)
    ORDER BY d, m, ms
    ON CONFLICT DO NOTHING"""


@dataclass(slots=True)
class QuarantineRow:
    topic: str
    tenant: str | None
    device_id: str | None
    reason_code: str
    reason: str
    payload: bytes
    details: list[dict] = field(default_factory=list)


@dataclass(slots=True)
class Batch:
    """Everything one transaction writes. Readings are columns: epoch ms,
    device pk, metric id, value."""

    times_ms: list[int] = field(default_factory=list)
    devices: list[int] = field(default_factory=list)
    metric_ids: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    quarantine: list[QuarantineRow] = field(default_factory=list)
    #: (device pk, bseq, readings in pack, received ms)
    seqs: list[tuple[int, int, int, int]] = field(default_factory=list)
    #: device pk -> (last reading ms, last seq or None)
    seen: dict[int, tuple[int, int | None]] = field(default_factory=dict)
    #: device pk -> (state, firmware, next_wake unix s)
    status: dict[int, tuple[str, str, int]] = field(default_factory=dict)
    messages: int = 0

    @classmethod
    def from_rows(cls, rows: list[tuple[int, int, int, float]], **kw: object) -> "Batch":
        """Build from (ms, device pk, metric id, value) rows."""
        b = cls(**kw)  # type: ignore[arg-type]
        for ms, d, m, v in rows:
            b.add(ms, d, m, v)
        return b

    def add(self, ms: int, device: int, metric: int, value: float) -> None:
        self.times_ms.append(ms)
        self.devices.append(device)
        self.metric_ids.append(metric)
        self.values.append(value)

    def __len__(self) -> int:
        return len(self.times_ms)


@dataclass(frozen=True, slots=True)
class WriteResult:
    inserted: int
    duplicates: int
    quarantined: int


def supports_copy(conn: psycopg.Connection) -> bool:
    """Probe whether COPY FROM STDIN works on this server (it does not on PGlite)."""
    try:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("CREATE TEMP TABLE IF NOT EXISTS _ss_copy_probe (x int) ON COMMIT DROP")
            with cur.copy("COPY _ss_copy_probe (x) FROM STDIN") as cp:
                cp.write_row((1,))
        return True
    except psycopg.Error:
        if not conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
            conn.rollback()
        return False


class ReadingStore:
    """Writes :class:`Batch` objects through one connection (not thread-safe)."""

    def __init__(self, conn: psycopg.Connection, worker: str, use_copy: bool | None = None) -> None:
        self.conn = conn
        self.worker = worker
        self.fast_batches = 0
        self.staged_batches = 0
        conn.autocommit = False
        self.use_copy = supports_copy(conn) if use_copy is None else use_copy
        if self.use_copy:
            conn.execute(STAGE_DDL)   # per session; a no-op once it exists
        conn.commit()

    def write(self, batch: Batch) -> WriteResult:
        n = len(batch)
        with self.conn.transaction(), self.conn.cursor() as cur:
            inserted = 0
            if n:
                if self.use_copy:
                    data = encode_readings(batch.times_ms, batch.devices, batch.metric_ids, batch.values)
                    try:
                        with self.conn.transaction():
                            with cur.copy(f"COPY readings {COLUMNS} FROM STDIN (FORMAT BINARY)") as cp:
                                cp.write(data)
                        inserted = n
                        self.fast_batches += 1
                    except psycopg.errors.UniqueViolation:
                        with cur.copy(f"COPY ingest_stage {COLUMNS} FROM STDIN (FORMAT BINARY)") as cp:
                            cp.write(data)
                        cur.execute(MOVE_SQL)
                        inserted = cur.rowcount
                        self.staged_batches += 1
                else:
                    cur.execute(UNNEST_SQL, (batch.times_ms, batch.devices, batch.metric_ids, batch.values))
                    inserted = cur.rowcount
            if batch.quarantine:
                cur.executemany(
                    """INSERT INTO quarantine (topic, tenant, device_id, reason_code, reason, details, payload, payload_sha256)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
                       ON CONFLICT (topic, payload_sha256) DO UPDATE SET
                         times_seen = quarantine.times_seen + 1, replayed_at = NULL,
                         reason_code = EXCLUDED.reason_code, reason = EXCLUDED.reason, details = EXCLUDED.details""",
                    [(q.topic, q.tenant, q.device_id, q.reason_code, q.reason, json.dumps(q.details), q.payload,
                      hashlib.sha256(q.payload).digest()) for q in batch.quarantine])
            if batch.seqs:
                d, s, cnt, rcv = zip(*batch.seqs)
                cur.execute("""INSERT INTO batches (device_id, seq, readings, received_at)
                               SELECT d, s, n, timestamptz 'epoch' + r * interval '1 millisecond'
                               FROM unnest(%s::bigint[], %s::bigint[], %s::int[], %s::bigint[]) AS u(d, s, n, r)
                               ON CONFLICT DO NOTHING""",
                            (list(d), list(s), list(cnt), list(rcv)))
            if batch.seen:
                ids = sorted(batch.seen)  # fixed lock order: no deadlocks between workers
                cur.execute(
                    """UPDATE devices d SET last_seen = greatest(d.last_seen, timestamptz 'epoch' + u.ms * interval '1 millisecond'),
                              last_seq = CASE WHEN u.seq IS NULL THEN d.last_seq ELSE greatest(d.last_seq, u.seq) END
                       FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS u(id, ms, seq) WHERE d.id = u.id""",
                    (ids, [batch.seen[i][0] for i in ids], [batch.seen[i][1] for i in ids]))
            if batch.status:
                ids = sorted(batch.status)
                cur.execute(
                    """UPDATE devices d SET state = u.state, firmware = u.fw, updated_at = now(),
                              next_wake = CASE WHEN u.nw > 0 THEN to_timestamp(u.nw) END
                       FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::bigint[]) AS u(id, state, fw, nw) WHERE d.id = u.id""",
                    (ids, [batch.status[i][0] for i in ids], [batch.status[i][1] for i in ids], [batch.status[i][2] for i in ids]))
            times = batch.times_ms
            cur.execute(
                """INSERT INTO ingest_log (worker, messages, readings, inserted, quarantined, min_time, max_time)
                   VALUES (%s, %s, %s, %s, %s, timestamptz 'epoch' + %s * interval '1 millisecond',
                           timestamptz 'epoch' + %s * interval '1 millisecond')""",
                (self.worker, batch.messages, n, inserted, len(batch.quarantine),
                 min(times) if times else None, max(times) if times else None))
        return WriteResult(inserted, n - inserted, len(batch.quarantine))
