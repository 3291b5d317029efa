"""Local broker -> durable queue, acknowledged only after the commit.

The gateway's local session is MQTT 5, persistent (never expires), QoS 1,
with manual acks and a Receive Maximum: Mosquitto has at most that many
unacknowledged messages out to the gateway, and keeps the rest queued for the
session (also while the gateway is down).

Each message is stamped with the gateway's receive time, checked against the
contract (:mod:`gateway.validate`), and collected; every ``commit_ms`` or
``commit_max`` messages the collection is appended to SQLite in one
transaction (fsynced) and only then are the PUBACKs sent (group commit). A
crash before the commit: Mosquitto redelivers. A crash between commit and
PUBACK: the batch is stored twice and forwarded twice (bounded by
``commit_max``; the central store dedupes).

Per-device rate limit (:class:`~ingest.ratelimit.RateLimiter`, readings per
second of device time): a pack over its device's limit is stored and forwarded
like any invalid message, marked ``ss-invalid: rate_limited: …``; the central
ingest quarantines it as ``rate_limited`` (replayable). The device's other
packs, and every other device, keep flowing.

The device's own PUBACK comes from Mosquitto, before the gateway has the
message; what protects a reading in that window is Mosquitto's session queue
(saved on shutdown and every ``autosave_interval``) and, for a power cut
inside the window, nothing but its size: one group commit, ~10 ms.

Hard bound: when appending would take the queue past ``max_bytes``, nothing is
stored or acknowledged; the messages stay with Mosquitto (counted as
``held``) until the forwarder has freed space. The device listener is closed
well before that (``refuse_fraction``, see :mod:`gateway.broker`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import paho.mqtt.client as mqtt

from gateway import health as hm
from gateway.queue import DurableQueue, Item, Row
from gateway.validate import MAX_REASON, Verdict, classify_timed
from ingest.ratelimit import RateLimiter

#: bytes per row on top of payload and reason, for the hard-bound estimate
ROW_OVERHEAD = 64
#: pages are never quite full: bytes of pages per byte of rows, upper bound
PAGE_SLACK = 1.25


class Intake:
    def __init__(self, queue: DurableQueue, *, max_bytes: int, commit_max: int = 500, commit_ms: float = 10.0,
                 on_device: Callable[[str, int], None] | None = None, limiter: RateLimiter | None = None) -> None:
        self.queue = queue
        self.limiter = limiter if limiter is not None else RateLimiter()
        self.max_bytes = max_bytes
        self.commit_max = commit_max
        self.commit_s = commit_ms / 1000
        self.on_device = on_device
        self.client: mqtt.Client | None = None
        self.pending: list[tuple[Item, int, int]] = []
        self._first = 0.0
        self._held_from = 0        # pending[:_held_from] were already counted as held
        self.holding = False
        self.stored = 0
        self.held = 0
        self.quarantined = 0

    def attach(self, client: mqtt.Client) -> None:
        self.client = client
        client.on_message = self._on_message
        self.pending = []
        self._held_from = 0

    def detach(self) -> None:
        """Connection lost: uncommitted messages were not acked; the broker redelivers them."""
        self.client = None
        self.pending = []
        self._held_from = 0

    def _on_message(self, c: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if c is not self.client:
            return
        now = time.time()
        rx_ms = int(now * 1000)
        payload = msg.payload
        try:
            v, newest_ms = classify_timed(msg.topic, payload, rx_ms)
        except Exception as e:  # noqa: BLE001 - a checker bug must not stop the intake or lose the message
            v, newest_ms = Verdict(None, None, 0, f"internal_error: {type(e).__name__}: {e}"[:MAX_REASON]), 0
        readings, reason = v.readings, v.reason
        lim = self.limiter
        if readings and not lim.allow(msg.topic.rsplit("/", 1)[0], newest_ms, readings):
            hm.RATE_LIMITED.inc(readings)
            reason = (f"rate_limited: over {lim.rate:g} readings/s of device time (bursts of {lim.burst:g}); "
                      f"{readings} readings held back")
            readings = 0
        if not self.pending:
            self._first = time.monotonic()
        self.pending.append((Item(rx_ms, msg.topic, payload, bool(msg.retain), readings, reason),
                             msg.mid, msg.qos))
        if v.device_id is not None and self.on_device is not None:
            self.on_device(v.device_id, rx_ms)

    def due(self, now: float) -> bool:
        return bool(self.pending) and (len(self.pending) >= self.commit_max or now - self._first >= self.commit_s)

    def wait_s(self, now: float) -> float:
        """Seconds until the collection is due (inf when empty)."""
        if not self.pending:
            return float("inf")
        return max(0.0, self._first + self.commit_s - now)

    def commit(self) -> list[Row]:
        """Append what was collected, then acknowledge it; returns the stored rows."""
        pending = self.pending
        c = self.client
        if not pending or c is None:
            return []
        # conservative: rows fill pages only partly (measured ~85%), plus a page for the B-tree
        room = (self.max_bytes - self.queue.used_bytes() - 2 * self.queue.page_size) / PAGE_SLACK
        take = 0
        for it, _, _ in pending:
            room -= len(it.payload) + len(it.reason or "") + ROW_OVERHEAD
            if room < 0:
                break
            take += 1
        self.holding = take < len(pending)
        if self.holding:
            # Hard bound: store what fits, leave the rest unacked with the broker.
            new = len(pending) - max(self._held_from, take)
            if new > 0:
                self.held += new
                hm.HELD.inc(new)
            self._held_from = len(pending) - take
            self._first = time.monotonic()   # look again after the next interval
            if take == 0:
                return []
        batch, self.pending = pending[:take], pending[take:]
        items = [it for it, _, _ in batch]
        rows = self.queue.append(items)
        for _, mid, qos in batch:
            if qos:
                c.ack(mid, qos)
        if not self.holding:
            self._held_from = 0
        self.stored += len(rows)
        bad: dict[str, int] = {}
        channels: dict[str, int] = {}
        for it in items:
            ch = it.topic.rsplit("/", 1)[-1]
            channels[ch] = channels.get(ch, 0) + 1
            if it.reason is not None:
                code = it.reason.split(":", 1)[0]
                bad[code] = bad.get(code, 0) + 1
        for ch, n in channels.items():
            hm.RECEIVED.labels(ch).inc(n)
        for code, n in bad.items():
            hm.QUARANTINED.labels(code).inc(n)
            self.quarantined += n
        return rows
