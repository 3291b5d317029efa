"""The gateway's durable queue: one SQLite file in WAL mode.

Schema (``queue`` holds each message until the central broker has acked it)::

    queue(id INTEGER PRIMARY KEY AUTOINCREMENT,  -- arrival order, never reused
          rx_ms INTEGER,        -- gateway receive time (Unix ms), sent as ss-rx
          topic_id INTEGER,     -- -> topics(id): topics repeat, stored once
          flags INTEGER,        -- bit 0: published retained
          readings INTEGER,     -- readings in the pack (for depth in readings)
          reason TEXT,          -- NULL, or why the message is invalid (ss-invalid)
          payload BLOB)         -- the device's bytes, untouched
    topics(id, topic)
    retained(topic_id PRIMARY KEY, max_id)  -- newest retained message per topic
    devices(device_id PRIMARY KEY, first_ms, last_ms)

Durability: appends commit with ``synchronous=FULL`` (the WAL is fsynced
before the commit returns), because the gateway acknowledges the local broker
right after an append and an acknowledged message must survive a power cut.
Deletes commit with ``synchronous=NORMAL``: a delete lost in a power cut only
means the message is sent again, which the central store absorbs
(idempotency key (device, metric, time)), and it saves one fsync per ack batch.
WAL (rather than a rollback journal) makes each commit one sequential append.

Size: :meth:`DurableQueue.used_bytes` counts pages in use (page_count minus
freelist), which is what the ``max_bytes`` bound applies to; freed pages are
reused, and given back to the file system with an incremental vacuum when the
queue runs empty.

>>> import tempfile, pathlib
>>> q = DurableQueue(pathlib.Path(tempfile.mkdtemp()) / "q.sqlite3")
>>> rows = q.append([Item(1767225600000, "ss/v1/t/d1/up", b"[1]", False, 1, None)])
>>> (rows[0].id, q.depth, q.readings), [r.payload for r in q.read(0, 10**9, 10)]
((1, 1, 1), [b'[1]'])
>>> q.delete([1], readings=1), q.depth
(1, 0)
>>> q.close()
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

RETAIN = 1
#: 16 KiB pages: a typical pack (48 readings, ~2 KB) is just over half a 4 KiB
#: page, so 4 KiB pages would hold one row each (~50% empty, measured 86
#: bytes per reading); 16 KiB pages hold seven.
PAGE_SIZE = 16384

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    rx_ms    INTEGER NOT NULL,
    topic_id INTEGER NOT NULL,
    flags    INTEGER NOT NULL,
    readings INTEGER NOT NULL,
    reason   TEXT,
    payload  BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS topics (id INTEGER PRIMARY KEY, topic TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS retained (topic_id INTEGER PRIMARY KEY, max_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS devices (device_id TEXT PRIMARY KEY, first_ms INTEGER NOT NULL, last_ms INTEGER NOT NULL);
"""


class Item(NamedTuple):
    """A message to append."""

    rx_ms: int
    topic: str
    payload: bytes
    retain: bool
    readings: int
    reason: str | None


class Row(NamedTuple):
    """A queued message."""

    id: int
    rx_ms: int
    topic: str
    payload: bytes
    retain: bool
    readings: int
    reason: str | None


class DurableQueue:
    """Append, read in id order, delete when acknowledged. One thread at a time."""

    def __init__(self, path: Path, synchronous: str = "FULL") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.synchronous = synchronous
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        # page size and auto_vacuum only take effect on a new file
        self.db.execute(f"PRAGMA page_size={PAGE_SIZE}")
        self.db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.execute("PRAGMA journal_size_limit=8388608")  # WAL truncated back to 8 MiB after checkpoints
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(_SCHEMA)
        self.page_size: int = self.db.execute("PRAGMA page_size").fetchone()[0]
        self._topic_id: dict[str, int] = {}
        self._topic: dict[int, str] = {}
        for tid, t in self.db.execute("SELECT id, topic FROM topics"):
            self._topic_id[t] = tid
            self._topic[tid] = t
        self.retained: dict[str, int] = {self._topic[tid]: mid for tid, mid in
                                         self.db.execute("SELECT topic_id, max_id FROM retained")}
        depth, readings = self.db.execute("SELECT count(*), coalesce(sum(readings), 0) FROM queue").fetchone()
        self.depth: int = depth
        self.readings: int = readings
        seq = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'queue'").fetchone()
        self.next_id: int = (seq[0] if seq else 0) + 1

    # --- writes ----------------------------------------------------------

    def append(self, items: Sequence[Item]) -> list[Row]:
        """Store ``items`` in one transaction; durable when this returns."""
        if not items:
            return []
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            rows = []
            params = []
            rid = self.next_id
            retained: dict[int, int] = {}
            for it in items:
                tid = self._topic_id.get(it.topic)
                if tid is None:
                    tid = db.execute("INSERT INTO topics (topic) VALUES (?)", (it.topic,)).lastrowid
                    self._topic_id[it.topic] = tid
                    self._topic[tid] = it.topic
                flags = RETAIN if it.retain else 0
                if it.retain:
                    retained[tid] = rid
                params.append((rid, it.rx_ms, tid, flags, it.readings, it.reason, it.payload))
                rows.append(Row(rid, it.rx_ms, it.topic, it.payload, it.retain, it.readings, it.reason))
                rid += 1
            db.executemany("INSERT INTO queue (id, rx_ms, topic_id, flags, readings, reason, payload) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)", params)
            if retained:
                db.executemany("INSERT INTO retained (topic_id, max_id) VALUES (?, ?) "
                               "ON CONFLICT (topic_id) DO UPDATE SET max_id = excluded.max_id",
                               list(retained.items()))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            self._topic_id = {t: i for i, t in self.db.execute("SELECT id, topic FROM topics")}
            self._topic = {i: t for t, i in self._topic_id.items()}
            raise
        self.next_id = rid
        for tid, mid in retained.items():
            self.retained[self._topic[tid]] = mid
        self.depth += len(rows)
        self.readings += sum(it.readings for it in items)
        return rows

    def delete(self, ids: Iterable[int], readings: int) -> int:
        """Remove acknowledged messages (``readings``: their reading count). Returns rows deleted."""
        ids = list(ids)
        if not ids:
            return 0
        db = self.db
        if self.synchronous != "NORMAL":
            db.execute("PRAGMA synchronous=NORMAL")
        try:
            db.execute("BEGIN IMMEDIATE")
            n = db.executemany("DELETE FROM queue WHERE id = ?", [(i,) for i in ids]).rowcount
            db.execute("COMMIT")
        finally:
            if self.synchronous != "NORMAL":
                db.execute(f"PRAGMA synchronous={self.synchronous}")
        self.depth -= n
        self.readings -= readings
        if self.depth == 0:
            self.readings = 0
        return n

    def note_devices(self, seen: dict[str, int]) -> None:
        """Record devices seen (device id -> last receive ms)."""
        if seen:
            self.db.executemany("INSERT INTO devices (device_id, first_ms, last_ms) VALUES (?, ?, ?) "
                                "ON CONFLICT (device_id) DO UPDATE SET last_ms = max(last_ms, excluded.last_ms)",
                                [(d, ms, ms) for d, ms in seen.items()])

    def reclaim(self) -> None:
        """Give free pages back to the file system (cheap when the queue is empty)."""
        self.db.executescript("PRAGMA incremental_vacuum;")   # (execute() would free one page only)
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    # --- reads -----------------------------------------------------------

    def read(self, first_id: int, last_id: int, limit: int) -> list[Row]:
        """Up to ``limit`` queued rows with first_id <= id <= last_id, oldest first."""
        topic = self._topic
        return [Row(i, rx, topic[tid], p, bool(f & RETAIN), n, reason) for i, rx, tid, f, n, reason, p in
                self.db.execute("SELECT id, rx_ms, topic_id, flags, readings, reason, payload FROM queue "
                                "WHERE id >= ? AND id <= ? ORDER BY id LIMIT ?", (first_id, last_id, limit))]

    def first_id(self) -> int | None:
        r = self.db.execute("SELECT min(id) FROM queue").fetchone()
        return r[0]

    def oldest_rx_ms(self) -> int | None:
        r = self.db.execute("SELECT rx_ms FROM queue ORDER BY id LIMIT 1").fetchone()
        return r[0] if r else None

    def known_devices(self, since_ms: int = 0) -> list[str]:
        return [d for (d,) in self.db.execute("SELECT device_id FROM devices WHERE last_ms >= ? ORDER BY device_id",
                                              (since_ms,))]

    def used_bytes(self) -> int:
        """Bytes of database pages in use (the max_bytes bound applies to this)."""
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        free = self.db.execute("PRAGMA freelist_count").fetchone()[0]
        return (pages - free) * self.page_size

    def file_bytes(self) -> int:
        """Bytes on disk: database file plus WAL."""
        total = 0
        for suffix in ("", "-wal"):
            try:
                total += Path(str(self.path) + suffix).stat().st_size
            except FileNotFoundError:
                pass
        return total

    def close(self) -> None:
        self.db.close()


def inspect_queue(path: Path) -> dict[str, int | None]:
    """Depth, readings, bytes and oldest receive time of a queue file, read-only
    (for ``gateway status`` while the service runs)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        depth, readings = db.execute("SELECT count(*), coalesce(sum(readings), 0) FROM queue").fetchone()
        first = db.execute("SELECT rx_ms FROM queue ORDER BY id LIMIT 1").fetchone()
        oldest = first[0] if first else None
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        size = db.execute("PRAGMA page_size").fetchone()[0]
        devices = db.execute("SELECT count(*) FROM devices").fetchone()[0]
    finally:
        db.close()
    return {"depth": depth, "readings": readings, "oldest_rx_ms": oldest, "used_bytes": (pages - free) * size,
            "devices": devices}
