"""Queue -> central broker: QoS 1 publishes, deleted from the queue on PUBACK.

Each message goes out with its original topic and payload and three MQTT 5
user properties:

* ``ss-rx``: the gateway's receive time (Unix ms). The central ingest uses it
  as the receive time (clamped to its own clock), so a reading buffered for a
  day is judged against the time it really arrived, not the time it was
  drained;
* ``ss-gw``: the gateway id;
* ``ss-invalid``: present only when the gateway found the message invalid
  (``"<code>: <detail>"``, see :mod:`gateway.validate`).

Duplicates are bounded: a message is deleted only after its PUBACK, so a crash
or a lost connection re-sends at most the window in flight (``inflight``) plus
the acks not yet flushed to SQLite (at most ``FLUSH_ROWS`` or ``FLUSH_S``
worth); the central store is idempotent on (device, metric, time).

Retained messages (device status): forwarding order is per lane, so an older
retained status can leave after a newer one. Only the newest queued-ever
retained message of a topic goes out retained; older ones go out as plain
messages, so the centre's retained state is always the newest.

>>> user_properties([("ss-rx", "1767225600000"), ("ss-gw", "gw-1")])
b'%&\\x00\\x05ss-rx\\x00\\r1767225600000&\\x00\\x05ss-gw\\x00\\x04gw-1'
"""

from __future__ import annotations

import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.drain import BACKLOG, Lanes
from gateway.queue import DurableQueue, Row

#: acked rows are deleted in one transaction when this many are waiting ...
FLUSH_ROWS = 1000
#: ... or when the oldest has waited this long
FLUSH_S = 0.05
#: a message the broker refused (PUBACK >= 0x80) is retried after this long
RETRY_S = 1.0


def _vbi(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def _utf8(s: str) -> bytes:
    b = s.encode()
    return len(b).to_bytes(2, "big") + b


def user_properties(pairs: list[tuple[str, str]]) -> bytes:
    """MQTT 5 PUBLISH properties holding only user properties, packed (length first)."""
    body = b"".join(b"\x26" + _utf8(k) + _utf8(v) for k, v in pairs)
    return _vbi(len(body)) + body


def fast_paho_properties() -> None:
    """Make paho's ``Properties()`` cheap (idempotent, process-wide).

    paho builds its three constant lookup tables afresh in every Properties
    object (~25 µs), and the gateway makes three per forwarded message (the
    incoming PUBLISH, the outgoing PUBLISH, the central PUBACK). This shares
    one set of tables; paho only ever reads them, so behaviour is unchanged.
    """
    if getattr(Properties, "_ss_fast", False):
        return
    proto = Properties(PacketTypes.PUBLISH)
    types, names, table = proto.types, proto.names, proto.properties
    compressed = [n.replace(" ", "") for n in names]

    def __init__(self: Properties, packetType: int) -> None:
        d = self.__dict__
        d["packetType"] = packetType
        d["types"] = types
        d["names"] = names
        d["properties"] = table

    def clear(self: Properties) -> None:
        d = self.__dict__
        for c in compressed:
            d.pop(c, None)

    Properties.__init__ = __init__  # type: ignore[method-assign]
    Properties.clear = clear  # type: ignore[method-assign]
    Properties._ss_fast = True  # type: ignore[attr-defined]


class PackedProperties(Properties):
    """PUBLISH properties packed once by hand (paho's generic packing costs
    ~15 µs a message on the forwarder's hot path)."""

    def __init__(self, packed: bytes) -> None:
        super().__init__(PacketTypes.PUBLISH)
        object.__setattr__(self, "_packed", packed)

    def pack(self) -> bytes:
        return self._packed  # type: ignore[attr-defined,no-any-return]


class Forwarder:
    """Publishes what the lanes choose; deletes on PUBACK."""

    def __init__(self, queue: DurableQueue, lanes: Lanes, gateway_id: str,
                 on_acked: Callable[[list[Row], float], None] | None = None) -> None:
        self.queue = queue
        self.lanes = lanes
        self.gateway_id = gateway_id
        self._gw = b"\x26" + _utf8("ss-gw") + _utf8(gateway_id)
        self._rx_key = b"\x26" + _utf8("ss-rx")
        self.client: mqtt.Client | None = None
        self.inflight: dict[int, tuple[Row, str]] = {}
        self.n_backlog = 0
        self.acked: list[Row] = []
        self._acked_t = 0.0
        self._retry_at = 0.0
        self.on_acked = on_acked
        self.sent = 0
        self.forwarded = 0
        self.forwarded_readings = 0
        self.refused_by_broker = 0

    def props(self, row: Row) -> PackedProperties:
        body = self._rx_key + _utf8(str(row.rx_ms)) + self._gw
        if row.reason is not None:
            body += b"\x26" + _utf8("ss-invalid") + _utf8(row.reason)
        return PackedProperties(_vbi(len(body)) + body)

    # --- connection ------------------------------------------------------

    def attach(self, client: mqtt.Client) -> None:
        """A new central connection (CONNACK received): re-send everything queued."""
        self.flush(force=True)
        self.client = client
        client.on_publish = self._on_publish
        self.inflight.clear()
        self.n_backlog = 0
        q = self.queue
        first = q.first_id()
        self.lanes.reset(first if first is not None else q.next_id, q.next_id - 1)

    def detach(self) -> None:
        """Connection lost: unacked messages stay queued and are sent again."""
        self.flush(force=True)
        self.client = None
        self.inflight.clear()
        self.n_backlog = 0
        self.lanes.disconnected()

    # --- sending ---------------------------------------------------------

    def pump(self, now: float) -> int:
        """Hand the next messages to paho; returns how many."""
        c = self.client
        if c is None:
            return 0
        n_live = len(self.inflight) - self.n_backlog
        batch = self.lanes.next_batch(now, n_live, self.n_backlog, self.queue.read, retry_ok=now >= self._retry_at)
        retained = self.queue.retained
        for row, lane in batch:
            retain = row.retain and retained.get(row.topic, 0) <= row.id
            info = c.publish(row.topic, row.payload, qos=1, retain=retain, properties=self.props(row))
            self.inflight[info.mid] = (row, lane)
            if lane == BACKLOG:
                self.n_backlog += 1
        self.sent += len(batch)
        return len(batch)

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, rc: object, props: object = None) -> None:
        e = self.inflight.pop(mid, None)
        if e is None or client is not self.client:
            return          # our own health message, or a stale connection
        row, lane = e
        if lane == BACKLOG:
            self.n_backlog -= 1
        if getattr(rc, "is_failure", False):
            # e.g. "not authorized" / "quota exceeded": keep it, try again later
            self.refused_by_broker += 1
            self._retry_at = time.monotonic() + RETRY_S
            self.lanes.failed(row)
            return
        if not self.acked:
            self._acked_t = time.monotonic()
        self.acked.append(row)

    def flush(self, force: bool = False) -> int:
        """Delete acked messages from the queue (batched); returns how many."""
        acked = self.acked
        if not acked or not (force or len(acked) >= FLUSH_ROWS or time.monotonic() - self._acked_t >= FLUSH_S):
            return 0
        ids = [r.id for r in acked]
        readings = sum(r.readings for r in acked)
        self.queue.delete(ids, readings)
        self.lanes.done(ids)
        self.acked = []
        self.forwarded += len(ids)
        self.forwarded_readings += readings
        if self.on_acked:
            self.on_acked(acked, time.time())
        return len(ids)
