"""The ingest worker: MQTT 5 shared subscription in, durable batches out.

Two threads per worker:

* the network thread drives paho's loop (a tight ``loop(timeout=0.01)``, the
  fast path measured here), decodes each message as it arrives (pure
  :class:`~ingest.handler.MessageHandler`), groups messages into batches by
  size or age, and sends PUBACKs the writer hands back;
* the writer thread commits each batch in one transaction
  (:class:`~ingest.store.ReadingStore`) and only then releases its acks.

Memory is bounded by the MQTT 5 Receive Maximum: the broker never has more
than that many unacknowledged messages out to a worker, so a slow database
slows the broker's delivery instead of growing a queue. Acks of messages
received on an earlier connection are dropped (the broker redelivers those and
the idempotent write absorbs the repeat), so a stale packet id can never
acknowledge a message that was not stored.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from psycopg_pool import ConnectionPool, PoolTimeout
from tenacity import Retrying, retry_if_exception_type, wait_exponential

from ingest import metrics as m
from ingest.handler import Handled, MessageHandler, batch_of
from ingest.quarantine import is_replay, load_replay_key
from ingest.ratelimit import DEFAULT_BURST, DEFAULT_RATE, RateLimiter
from ingest.registry import DeviceRegistry
from ingest.store import Batch, QuarantineRow, ReadingStore, WriteResult
from streetsense.embedded import MqttTarget
from streetsense.logs import get_logger

log = get_logger("ingest")

SESSION_NEVER_EXPIRES = 0xFFFFFFFF


@dataclass(frozen=True)
class IngestConfig:
    database_url: str
    mqtt_url: str
    group: str = "ingest"
    client_id: str | None = None
    shared: bool = True
    batch_readings: int = 5000
    batch_ms: int = 200
    receive_maximum: int = 2000
    use_copy: bool | None = None
    protocol: int = mqtt.MQTTv5
    #: database connections (1 for servers that take one connection at a time)
    pool_size: int = 2
    #: per-device rate limit (readings/s of device time, bucket size); rate 0 turns it off
    rate_readings_per_s: float = DEFAULT_RATE
    rate_burst: int = DEFAULT_BURST


@dataclass(slots=True)
class _Open:
    """The batch being filled by the network thread."""

    gen: int
    started: float
    handled: list[Handled] = field(default_factory=list)
    acks: list[tuple[int, int]] = field(default_factory=list)
    oldest_rx: float = 0.0
    readings: int = 0


class IngestWorker:
    """One ingest worker; run several (processes) against one broker to split load."""

    def __init__(self, cfg: IngestConfig, on_commit: Callable[[WriteResult, int], None] | None = None) -> None:
        self.cfg = cfg
        # Stable per worker slot: a restarted worker resumes its own persistent
        # session and receives what the broker queued for it while it was down.
        self.client_id = cfg.client_id or f"{cfg.group}-{socket.gethostname()}-0"
        self.on_commit = on_commit
        self.pool = ConnectionPool(cfg.database_url, min_size=1, max_size=cfg.pool_size, open=True,
                                   reconnect_timeout=3600, name=f"ingest-{self.client_id}")
        self.registry = DeviceRegistry(self.pool.connection)
        self.handler = MessageHandler(self.registry.get, RateLimiter(cfg.rate_readings_per_s, cfg.rate_burst))
        self._gen = 0
        self._open: _Open | None = None
        self._ready: deque[_Open] = deque()
        self._acks: deque[tuple[int, list[tuple[int, int]]]] = deque()
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self._pending = 0
        self._replay_key: bytes | None = None
        self.stats = {"messages": 0, "inserted": 0, "duplicates": 0, "quarantined": 0, "batches": 0}

    # --- network thread --------------------------------------------------

    def _client(self) -> mqtt.Client:
        t = MqttTarget.parse(self.cfg.mqtt_url)
        v5 = self.cfg.protocol == mqtt.MQTTv5
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=self.cfg.protocol,
                        manual_ack=True, clean_session=None if v5 else False)
        if t.username:
            c.username_pw_set(t.username, t.password)
        if t.tls:
            c.tls_set()
        c.max_inflight_messages_set(0)
        c.on_message = self._on_message
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        self._target = t
        return c

    def _connect(self, c: mqtt.Client) -> None:
        props = None
        if self.cfg.protocol == mqtt.MQTTv5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_NEVER_EXPIRES
            props.ReceiveMaximum = self.cfg.receive_maximum
            c.connect(self._target.host, self._target.port, keepalive=30, clean_start=False, properties=props)
        else:
            c.connect(self._target.host, self._target.port, keepalive=30)

    def _on_connect(self, c: mqtt.Client, userdata: object, flags: object, rc: object, props: object = None) -> None:
        if getattr(rc, "is_failure", False):
            log.error("mqtt connect refused", reason=str(rc))
            return
        self._gen += 1
        prefix = f"$share/{self.cfg.group}/" if self.cfg.shared else ""
        c.subscribe([(prefix + "ss/v1/+/+/up", 1), (prefix + "ss/v1/+/+/status", 1)])
        log.info("mqtt connected", client_id=self.client_id, session_present=getattr(flags, "session_present", None))

    def _on_disconnect(self, c: mqtt.Client, userdata: object, flags: object, rc: object, props: object = None) -> None:
        # Everything received on this connection and not yet acked will be redelivered.
        self._gen += 1
        log.warning("mqtt disconnected", reason=str(rc))

    def _is_replay(self, topic: str, payload: bytes, mark: str) -> bool:
        # The key is read once, on the first marked message. If the database is
        # unreachable the message is simply not treated as a replay: at worst it
        # is rate limited into quarantine again, from where it can be replayed.
        if self._replay_key is None:
            try:
                with self.pool.connection(timeout=5) as conn:
                    self._replay_key = load_replay_key(conn) or b""
            except Exception:
                log.warning("replay key unavailable; replay marker ignored", topic=topic)
                return False
        if not is_replay(self._replay_key or None, topic, payload, mark):
            m.FORGED_REPLAYS.inc()
            log.warning("ss-replay marker does not verify; treated as a live message", topic=topic)
            return False
        return True

    def _on_message(self, c: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        received_ms = int(now * 1000)
        # A site gateway that buffered this message (backhaul outage) stamps its
        # own receive time as user property "ss-rx" (Unix ms); judge the pack
        # against that, never later than now (a gateway clock ahead of ours).
        # "ss-invalid" is the gateway's verdict (honoured for rate_limited) and
        # "ss-replay" marks `streetsense quarantine replay` (no rate limit) when
        # its HMAC under the database's replay key checks out.
        mark, replay = None, False
        for k, v in getattr(msg.properties, "UserProperty", None) or ():
            if k == "ss-rx":
                try:
                    received_ms = min(int(v), received_ms)
                except ValueError:
                    pass
            elif k == "ss-invalid":
                mark = v
            elif k == "ss-replay":
                replay = self._is_replay(msg.topic, msg.payload, v)
        try:
            h = self.handler.handle(msg.topic, msg.payload, received_ms, replay=replay, mark=mark)
        except Exception as e:  # a bug in decoding must not kill the worker or lose the message
            log.exception("handler failed", topic=msg.topic)
            h = Handled(quarantine=QuarantineRow(msg.topic, None, None, "internal_error", f"handler error: {e!r}",
                                                 bytes(msg.payload)))
        h.topic = msg.topic
        h.payload = msg.payload
        m.MESSAGES.labels(h.channel or "invalid").inc()
        o = self._open
        if o is None or o.gen != self._gen:
            if o is not None and o.handled:
                self._close()
            o = self._open = _Open(self._gen, time.monotonic(), oldest_rx=now)
        o.handled.append(h)
        if msg.qos:
            o.acks.append((msg.mid, msg.qos))
        o.readings += h.readings
        self._pending += 1
        if o.readings >= self.cfg.batch_readings:
            self._close()

    def _close(self) -> None:
        o = self._open
        self._open = None
        if o is None or not o.handled:
            return
        with self._cv:
            self._ready.append(o)
            self._cv.notify()

    def _drain_acks(self, c: mqtt.Client) -> None:
        while self._acks:
            gen, acks = self._acks.popleft()
            if gen == self._gen:
                for mid, qos in acks:
                    c.ack(mid, qos)
            self._pending -= len(acks)

    def run(self, stop: threading.Event | None = None) -> None:
        """Run until ``stop`` is set (or :meth:`stop` is called)."""
        stop = stop or self._stop
        writer = threading.Thread(target=self._writer, args=(stop,), name="ingest-writer", daemon=True)
        writer.start()
        c = self._client()
        backoff = 0.1
        connected = False
        batch_s = self.cfg.batch_ms / 1000
        while not stop.is_set():
            if not connected:
                try:
                    self._connect(c)
                    connected = True
                    backoff = 0.1
                except OSError as e:
                    log.warning("mqtt connect failed", error=str(e), retry_in=backoff)
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
            rc = c.loop(timeout=0.01)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                connected = False
                self._gen += 1
                continue
            o = self._open
            if o is not None and o.handled and time.monotonic() - o.started >= batch_s:
                self._close()
            self._drain_acks(c)
            m.PENDING.set(self._pending)
            oldest = self._ready[0].oldest_rx if self._ready else (o.oldest_rx if o and o.handled else None)
            m.LAG.set(time.time() - oldest if oldest else 0.0)
        # Graceful stop: commit what is in hand, ack it, then disconnect.
        self._close()
        with self._cv:
            self._cv.notify()
        writer.join(30)
        if connected:
            self._drain_acks(c)
            for _ in range(20):
                c.loop(timeout=0.01)
            c.disconnect()

    def stop(self) -> None:
        self._stop.set()

    # --- writer thread ---------------------------------------------------

    def _writer(self, stop: threading.Event) -> None:
        use_copy = self.cfg.use_copy
        while True:
            with self._cv:
                while not self._ready and not stop.is_set():
                    self._cv.wait(0.1)
                if not self._ready:
                    break
                o = self._ready[0]
            for attempt in Retrying(retry=retry_if_exception_type((psycopg.OperationalError, PoolTimeout)),
                                    wait=wait_exponential(multiplier=0.1, max=5), reraise=True):
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        m.WRITE_ERRORS.inc()
                        log.warning("database write failed, retrying", attempt=attempt.retry_state.attempt_number)
                    with self.pool.connection() as conn:
                        store = ReadingStore(conn, self.client_id, use_copy)
                        use_copy = store.use_copy
                        t0 = time.perf_counter()
                        res = self._write(store, o)
            m.BATCH_SECONDS.observe(time.perf_counter() - t0)
            m.BATCH_READINGS.observe(res.inserted + res.duplicates)
            m.READINGS.inc(res.inserted)
            m.DUPLICATES.inc(res.duplicates)
            for h in o.handled:
                if h.quarantine is not None:
                    m.QUARANTINED.labels(h.quarantine.reason_code).inc()
                    if h.quarantine.reason_code == "rate_limited":
                        m.RATE_LIMITED.inc(max(1, h.rate_limited))
            with self._cv:
                self._ready.popleft()
            self._acks.append((o.gen, o.acks))
            self.stats["messages"] += len(o.handled)
            self.stats["inserted"] += res.inserted
            self.stats["duplicates"] += res.duplicates
            self.stats["quarantined"] += res.quarantined
            self.stats["batches"] += 1
            if self.on_commit:
                self.on_commit(res, len(o.handled))
        self.pool.close()

    def _write(self, store: ReadingStore, o: _Open) -> WriteResult:
        try:
            return store.write(batch_of(o.handled))
        except (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError) as e:
            # One message's content broke the batch: store message by message and
            # quarantine the ones the database refuses, so nothing is lost.
            log.warning("batch refused, retrying message by message", error=str(e))
            total = WriteResult(0, 0, 0)
            for h in o.handled:
                try:
                    r = store.write(batch_of([h]))
                except (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError) as e1:
                    r = store.write(Batch(quarantine=[QuarantineRow(
                        h.topic, None, None, "storage_rejected", f"database refused: {e1}", h.payload)], messages=1))
                total = WriteResult(total.inserted + r.inserted, total.duplicates + r.duplicates,
                                    total.quarantined + r.quarantined)
            return total
