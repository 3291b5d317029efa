"""Look at and replay quarantined messages (``streetsense quarantine …``).

Replay republishes the raw bytes to their original topic at QoS 1 and stamps
``replayed_at`` once the broker has acknowledged them. Ingest then stores them
(idempotently) or quarantines them again, which re-arms the row with the new
reason. So a replay can never lose a message. Replayed messages carry the
MQTT 5 user property ``ss-replay``, so ingest lets them past the per-device
rate limit (replaying ``rate_limited`` messages is an operator's decision).
The property is an HMAC-SHA256 of the topic and payload under a per-database
key (``ingest_replay_key``, migration 0013) that only database users can read:
a device cannot mark its own publishes as replays to dodge the limit.

>>> key = bytes(32)
>>> mark = replay_mark(key, "ss/v1/demo/bin-1/up", b"[]")
>>> is_replay(key, "ss/v1/demo/bin-1/up", b"[]", mark), is_replay(key, "ss/v1/demo/bin-1/up", b"[1]", mark)
(True, False)
>>> is_replay(None, "ss/v1/demo/bin-1/up", b"[]", mark), is_replay(key, "ss/v1/demo/bin-1/up", b"[]", "1")
(False, False)
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from streetsense.mqtt import make_client, publish_all


def stats(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Pending (not replayed) quarantine rows per reason, with the newest example's text."""
    rows = conn.execute(
        """SELECT reason_code, count(*), max(received_at), (array_agg(reason ORDER BY received_at DESC))[1]
           FROM quarantine WHERE replayed_at IS NULL GROUP BY reason_code ORDER BY count(*) DESC""").fetchall()
    return [{"reason_code": r[0], "count": r[1], "latest": r[2].isoformat(), "example": r[3]} for r in rows]


def load_replay_key(conn: psycopg.Connection) -> bytes | None:
    """The database's replay-signing key, or None where migration 0013 has not run."""
    if conn.execute("SELECT to_regclass('ingest_replay_key')").fetchone()[0] is None:
        return None
    row = conn.execute("SELECT secret FROM ingest_replay_key").fetchone()
    return bytes(row[0]) if row else None


def replay_mark(key: bytes, topic: str, payload: bytes) -> str:
    """The ``ss-replay`` property for one message: hex HMAC-SHA256(key, topic NUL payload)."""
    return hmac.new(key, topic.encode() + b"\0" + bytes(payload), hashlib.sha256).hexdigest()


def is_replay(key: bytes | None, topic: str, payload: bytes, mark: str) -> bool:
    """Whether ``mark`` is a valid replay signature for this message (constant-time compare)."""
    return key is not None and hmac.compare_digest(mark.encode(), replay_mark(key, topic, payload).encode())


def replay(conn: psycopg.Connection, mqtt_url: str, *, reason_code: str | None = None, tenant: str | None = None,
           limit: int = 100_000) -> int:
    """Republish pending quarantined messages; returns how many were handed to the broker."""
    rows = conn.execute(
        """SELECT id, topic, payload FROM quarantine
           WHERE replayed_at IS NULL AND topic LIKE 'ss/v1/%%'
             AND (%(r)s::text IS NULL OR reason_code = %(r)s) AND (%(t)s::text IS NULL OR tenant = %(t)s)
           ORDER BY id LIMIT %(n)s""", {"r": reason_code, "t": tenant, "n": limit}).fetchall()
    if not rows:
        return 0
    key = load_replay_key(conn)
    if key is None:
        raise RuntimeError("no replay key: run `streetsense db migrate` (migration 0013) first")

    def signed(topic: str, payload: bytes) -> Properties:
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = ("ss-replay", replay_mark(key, topic, payload))
        return props

    client = make_client(mqtt_url, "streetsense-replay", session=False)
    try:
        publish_all(client, [(topic, bytes(payload)) for _, topic, payload in rows], properties=signed)
    finally:
        client.disconnect()
    conn.execute("UPDATE quarantine SET replayed_at = now() WHERE id = ANY(%s)", ([r[0] for r in rows],))
    conn.commit()
    return len(rows)
