"""Look at and replay quarantined messages (``streetsense quarantine …``).

Replay republishes the raw bytes to their original topic at QoS 1 and stamps
``replayed_at`` once the broker has acknowledged them. Ingest then stores them
(idempotently) or quarantines them again, which re-arms the row with the new
reason. So a replay can never lose a message. Replayed messages carry the
MQTT 5 user property ``ss-replay``, so ingest lets them past the per-device
rate limit (replaying ``rate_limited`` messages is an operator's decision).
"""

from __future__ import annotations

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
    client = make_client(mqtt_url, "streetsense-replay", session=False)
    try:
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = ("ss-replay", "1")
        publish_all(client, [(topic, bytes(payload)) for _, topic, payload in rows], properties=props)
    finally:
        client.disconnect()
    conn.execute("UPDATE quarantine SET replayed_at = now() WHERE id = ANY(%s)", ([r[0] for r in rows],))
    conn.commit()
    return len(rows)
