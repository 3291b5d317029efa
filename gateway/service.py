"""The gateway service: one thread drives both MQTT connections and the queue.

::

    devices ──► local Mosquitto ──► Intake ──► SQLite queue ──► Forwarder ──► central broker
                       ▲   (ack after commit)     (WAL, fsync)  (delete on PUBACK)   │
                       └──────────────────── Relay (cfg retained, cmd) ◄─────────────┘

One ``select`` over the local and the central socket, with paho driven by
hand (``loop_read`` / ``loop_write`` / ``loop_misc``): the tight-loop fast
path, for two clients at once, with no locks, and the SQLite work in the same
thread between network events. Only two things run elsewhere: the blocking
TCP connect to the central broker (so an unreachable backhaul never stalls
the local side) and the SNTP server.

The managed local broker's device listener is opened only once the gateway's
persistent session exists on it (a fresh broker starts closed, the gateway
subscribes, then it opens), so nothing a device publishes can arrive before
there is a subscriber to queue it for.

>>> from gateway.settings import GatewaySettings
>>> import tempfile, pathlib
>>> s = GatewaySettings(_env_file=None, tenant="t", gateway_id="gw-1", manage_broker=False, sntp_port=0,
...                     data_dir=pathlib.Path(tempfile.mkdtemp()))
>>> svc = GatewayService(s)
>>> svc.health().queue_depth, svc.health().gateway
(0, 'gw-1')
>>> svc.close()
"""

from __future__ import annotations

import select
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from contract import v1
from gateway import health as hm
from gateway.broker import LocalBroker
from gateway.drain import Lanes
from gateway.forwarder import Forwarder, fast_paho_properties
from gateway.health import Health, health_payload, health_topic, offline_payload, write_health_file
from gateway.intake import Intake
from gateway.queue import DurableQueue, Row
from gateway.relay import Relay
from gateway.settings import GatewaySettings
from gateway.sntp import SntpServer
from ingest.ratelimit import RateLimiter
from streetsense.embedded import MqttTarget
from streetsense.identity.mosquitto import gateway_client_id
from streetsense.logs import get_logger, redact_url

log = get_logger("gateway")

LOCAL_SESSION_EXPIRY = 0xFFFFFFFF       # never: the local session is the devices' lifeline
CENTRAL_SESSION_EXPIRY = 7 * 86400      # cmd/cfg queued centrally for a week of gateway downtime
CENTRAL_RECEIVE_MAXIMUM = 100
#: longest wait between connection attempts to the central broker (s): bounds
#: how late a drain starts after the backhaul returns
CENTRAL_BACKOFF_MAX = 5.0
#: most packets read from one socket per turn, so commits, acks and forwarding
#: interleave with reading (a long burst stalled both windows)
READ_BURST = 100


def _read(c: mqtt.Client) -> int:
    """Read every packet waiting on ``c``'s socket.

    paho's ``loop_read()`` reads one packet per call when nothing is in flight
    outbound (it sizes its burst by in-flight counts), i.e. one select per
    message on the intake side; this reads until the socket would block. Uses
    paho's private ``_packet_read`` (paho pinned in uv.lock).
    """
    for _ in range(READ_BURST):
        if c._sock is None:  # noqa: SLF001
            return mqtt.MQTT_ERR_NO_CONN
        rc = c._packet_read()  # noqa: SLF001
        if rc == mqtt.MQTT_ERR_AGAIN:
            return mqtt.MQTT_ERR_SUCCESS
        if rc > 0:
            return c._loop_rc_handle(rc)  # noqa: SLF001
    return mqtt.MQTT_ERR_SUCCESS


def _client(url: str, client_id: str) -> tuple[mqtt.Client, MqttTarget]:
    t = MqttTarget.parse(url)
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=True)
    if t.username:
        c.username_pw_set(t.username, t.password)
    if t.tls:
        c.tls_set()
    c.max_queued_messages_set(0)
    c.connect_timeout = 5.0
    return c, t


class GatewayService:
    """Everything on the Pi except the local broker process itself."""

    def __init__(self, settings: GatewaySettings) -> None:
        s = self.s = settings
        fast_paho_properties()
        if not v1.valid_id(s.gateway_id) or not v1.valid_id(s.tenant):
            raise ValueError("gateway_id and tenant must be contract identifiers ([a-z0-9-], 1..64)")
        s.data_dir.mkdir(parents=True, exist_ok=True)
        self.queue = DurableQueue(s.queue_file, s.synchronous)
        self.lanes = Lanes(window=s.inflight, drain_rate=s.drain_rate, now=time.monotonic())
        self.forwarder = Forwarder(self.queue, self.lanes, s.gateway_id, on_acked=self._acked)
        self.relay = Relay(s.tenant, devices=[*s.devices, *self.queue.known_devices()], relay_all=s.relay_all)
        self.intake = Intake(self.queue, max_bytes=s.max_bytes, commit_max=s.commit_max, commit_ms=s.commit_ms,
                             on_device=self._device, limiter=RateLimiter(s.rate_readings_per_s, s.rate_burst))
        self.broker: LocalBroker | None = None
        if s.manage_broker:
            self.broker = LocalBroker(s.broker_dir, device_port=s.local_port, service_port=s.local_service_port,
                                      device_bind=s.local_bind, password_file=s.password_file, acl_file=s.acl_file)
        self.sntp: SntpServer | None = None
        self.health_topic = health_topic(s.tenant, s.gateway_id)
        # derived from the central account's secret: no other account can name (and take over) the session
        self.client_id = gateway_client_id(s.gateway_id, MqttTarget.parse(s.central_url).password)
        self.local: mqtt.Client | None = None
        self.central: mqtt.Client | None = None
        self.central_up = False           # CONNACK received, forwarder attached
        self.local_ready = threading.Event()   # local subscriptions acknowledged
        self._open_after_subscribe = False     # fresh broker: open the device listener once subscribed
        self._connecting: threading.Thread | None = None
        self._connect_result: tuple[mqtt.Client, BaseException | None] | None = None
        self._central_retry_at = 0.0
        self._central_backoff = 0.5
        self._local_retry_at = 0.0
        self._seen: dict[str, int] = {}
        self._seen_flush = 0.0
        self._misc_at = 0.0
        self._health_at = 0.0
        self._bounds_at = 0.0
        self._rate_t = time.monotonic()
        self._rate_n = 0
        self.forward_rate = 0.0
        self.refusals = 0
        self.refusing_since: float | None = None
        self.started = time.time()

    # --- callbacks from the parts ---------------------------------------

    def _device(self, device_id: str, rx_ms: int) -> None:
        self._seen[device_id] = rx_ms
        self.relay.note_device(device_id)

    def _acked(self, rows: list[Row], now: float) -> None:
        hm.FORWARDED.inc(len(rows))
        hm.FORWARDED_READINGS.inc(sum(r.readings for r in rows))
        obs = hm.FORWARD_LATENCY.observe
        for r in rows:
            obs(max(0.0, now - r.rx_ms / 1000))

    # --- local broker ----------------------------------------------------

    def _start_broker(self) -> None:
        b = self.broker
        if b is None:
            return
        full = self.queue.used_bytes() >= self.s.refuse_at_bytes
        fresh = not (b.data_dir / "mosquitto.db").exists() and not b.alive()
        # A broker without our session would drop what devices publish before we
        # subscribe: start it closed, subscribe, then open (see _on_local_subscribe).
        b.start(accept_devices=not full and not fresh)
        if full:
            self._refusing(True)

    def _refusing(self, on: bool) -> None:
        if on and self.refusing_since is None:
            self.refusing_since = time.monotonic()
            self.refusals += 1
            hm.REFUSALS.inc()
            hm.REFUSING.set(1)
            log.warning("queue full: device listener closed, devices keep their data",
                        used_bytes=self.queue.used_bytes(), max_bytes=self.s.max_bytes)
        elif not on and self.refusing_since is not None:
            log.info("queue drained: device listener open again",
                     refused_s=round(time.monotonic() - self.refusing_since, 1))
            self.refusing_since = None
            hm.REFUSING.set(0)

    def _set_accepting(self, accept: bool) -> None:
        """Restart the local broker with the device listener open or closed."""
        b = self.broker
        if b is None or b.accepting == accept:
            return
        # Store and ack what we hold so the restart redelivers as little as possible.
        if self.intake.pending:
            self.forwarder.lanes.committed(self.intake.commit())
        c = self.local
        if c is not None:
            self._local_goodbye(c)
            self._local_lost()
        b.set_accepting(accept)
        self._connect_local()

    def _check_bounds(self, now: float, force: bool = False) -> None:
        """Close the device listener at refuse_at, reopen it at resume_at."""
        b = self.broker
        if b is None or (not force and now < self._bounds_at):
            return
        self._bounds_at = now + 0.2
        used = self.queue.used_bytes()
        hm.QUEUE_BYTES.set(used)
        if b.accepting and used >= self.s.refuse_at_bytes:
            self._refusing(True)
            self._set_accepting(False)
        elif not b.accepting and used <= self.s.resume_at_bytes and self.local_ready.is_set():
            self._refusing(False)
            self._set_accepting(True)

    # --- connections -----------------------------------------------------

    def _connect_local(self) -> None:
        url = self.broker.service_url if self.broker else self.s.local_service_url
        c, t = _client(url, self.client_id)
        c.max_inflight_messages_set(20)        # downlink only; the local broker's default receive maximum
        c.on_connect = self._on_local_connect
        c.on_subscribe = self._on_local_subscribe
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = LOCAL_SESSION_EXPIRY
        props.ReceiveMaximum = self.s.receive_maximum
        try:
            c.connect(t.host, t.port, keepalive=30, clean_start=False, properties=props)
        except OSError as e:
            log.warning("local broker connect failed", error=str(e))
            self._local_retry_at = time.monotonic() + 1.0
            return
        self.local = c
        self.intake.attach(c)
        self.relay.local_connected(c)

    def _on_local_connect(self, c: mqtt.Client, userdata: object, flags: object, rc: object,
                          props: object = None) -> None:
        if getattr(rc, "is_failure", False):
            log.error("local broker refused the gateway", reason=str(rc))
            return
        base = v1.PREFIX + self.s.tenant + "/+/"
        # retainAsPublished: a retained status stays retained upstream; retainHandling 1:
        # retained messages only for a new subscription, not at every reconnect.
        opts = SubscribeOptions(qos=1, retainAsPublished=True, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
        c.subscribe([(base + ch, opts) for ch in (v1.UP, v1.STATUS, v1.ACK)])

    def _on_local_subscribe(self, c: mqtt.Client, userdata: object, mid: int, rcs: object,
                            props: object = None) -> None:
        if c is not self.local:
            return
        if any(getattr(r, "is_failure", False) for r in (rcs or [])):  # type: ignore[union-attr]
            log.error("local subscription refused", reasons=[str(r) for r in rcs])  # type: ignore[union-attr]
            return
        first = not self.local_ready.is_set()
        self.local_ready.set()
        if first and self.broker is not None and not self.broker.accepting and self.refusing_since is None:
            self._open_after_subscribe = True

    @staticmethod
    def _local_goodbye(c: mqtt.Client, timeout: float = 2.0) -> None:
        """DISCONNECT and wait until the broker closes the socket: it has then
        read every PUBACK sent before, so nothing acked is redelivered."""
        deadline = time.monotonic() + timeout
        while c.want_write() and c.socket() is not None and time.monotonic() < deadline:
            if c.loop_write() != mqtt.MQTT_ERR_SUCCESS:
                break
        sock = c.socket()
        if sock is None:
            return
        try:
            # paho's disconnect() closes the socket as soon as DISCONNECT is
            # written; send it by hand (MQTT 5, normal disconnection) and read on.
            sock.sendall(b"\xe0\x00")
            while time.monotonic() < deadline:
                select.select([sock], [], [], 0.05)
                try:
                    if not sock.recv(65536):
                        break
                except BlockingIOError:
                    continue
        except OSError:
            pass
        try:
            c._sock_close()  # noqa: SLF001
        except Exception:  # noqa: BLE001
            pass

    def _local_lost(self) -> None:
        self.local = None
        self.intake.detach()
        self.relay.local_lost()

    def _start_central_connect(self) -> None:
        c, t = _client(self.s.central_url, self.client_id)
        c.max_inflight_messages_set(0)         # the lanes bound the window themselves
        c.on_connect = self._on_central_connect
        c.will_set(self.health_topic, offline_payload(self.s.gateway_id), qos=1, retain=True)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = CENTRAL_SESSION_EXPIRY
        props.ReceiveMaximum = CENTRAL_RECEIVE_MAXIMUM
        self._connect_result = None

        def connect() -> None:
            try:
                c.connect(t.host, t.port, keepalive=30, clean_start=False, properties=props)
                self._connect_result = (c, None)
            except Exception as e:  # noqa: BLE001 - any failure means "try again later"
                self._connect_result = (c, e)

        self._connecting = threading.Thread(target=connect, name="central-connect", daemon=True)
        self._connecting.start()

    def _poll_central_connect(self, now: float) -> None:
        if self._connecting is not None:
            if self._connecting.is_alive():
                return
            self._connecting = None
            c, err = self._connect_result or (None, RuntimeError("no result"))
            if err is not None or c is None:
                log.warning("central broker unreachable", url=redact_url(self.s.central_url), error=str(err),
                            retry_in=self._central_backoff)
                self._central_retry_at = now + self._central_backoff
                self._central_backoff = min(self._central_backoff * 2, CENTRAL_BACKOFF_MAX)
                return
            self.central = c            # CONNACK still to come
            return
        if self.central is None and now >= self._central_retry_at:
            self._start_central_connect()

    def _on_central_connect(self, c: mqtt.Client, userdata: object, flags: object, rc: object,
                            props: object = None) -> None:
        if c is not self.central:
            return
        if getattr(rc, "is_failure", False):
            log.error("central broker refused the gateway", reason=str(rc))
            self._central_lost(c)
            return
        self._central_backoff = 0.5
        self.central_up = True
        hm.CENTRAL_UP.set(1)
        self.forwarder.attach(c)
        self.relay.central_connected(c)
        log.info("central broker connected", url=redact_url(self.s.central_url),
                 session_present=getattr(flags, "session_present", None), backlog=self.queue.depth)
        self._health_at = 0.0           # publish health now

    def _central_lost(self, c: mqtt.Client | None = None) -> None:
        if self.central is None:
            return
        if self.central_up:
            log.warning("central broker connection lost", queued=self.queue.depth)
        try:
            (c or self.central)._sock_close()  # noqa: SLF001
        except Exception:  # noqa: BLE001
            pass
        self.central = None
        self.central_up = False
        hm.CENTRAL_UP.set(0)
        self.forwarder.detach()
        self.relay.central_lost()
        self._central_retry_at = time.monotonic() + self._central_backoff
        self._central_backoff = min(self._central_backoff * 2, CENTRAL_BACKOFF_MAX)

    # --- health ----------------------------------------------------------

    def health(self) -> Health:
        q = self.queue
        now = time.time()
        oldest = q.oldest_rx_ms()
        hour_ago = int((now - 3600) * 1000)
        active = sum(1 for ms in self._seen.values() if ms >= hour_ago)
        return Health(gateway=self.s.gateway_id, t=int(now), queue_depth=q.depth, queue_readings=q.readings,
                      queue_bytes=q.used_bytes(), max_bytes=self.s.max_bytes,
                      oldest_age_s=round(max(0.0, now - oldest / 1000), 3) if oldest is not None else 0.0,
                      forward_rate=round(self.forward_rate, 1), forwarded=self.forwarder.forwarded,
                      central_connected=self.central_up, draining=self.lanes.backlog_pending and self.central_up,
                      devices=len(self.relay.known), devices_active_1h=max(active, 0),
                      refusing=self.refusing_since is not None, refusals=self.refusals, held=self.intake.held,
                      quarantined=self.intake.quarantined, central_rejects=self.forwarder.refused_by_broker)

    def _health_tick(self, now: float) -> None:
        dt = now - self._rate_t
        if dt > 0:
            self.forward_rate = (self.forwarder.forwarded - self._rate_n) / dt
        self._rate_t, self._rate_n = now, self.forwarder.forwarded
        h = self.health()
        hm.QUEUE_DEPTH.set(h.queue_depth)
        hm.QUEUE_READINGS.set(h.queue_readings)
        hm.QUEUE_BYTES.set(h.queue_bytes)
        hm.OLDEST_AGE.set(h.oldest_age_s)
        hm.FORWARD_RATE.set(h.forward_rate)
        hm.DEVICES.set(h.devices)
        payload = health_payload(h)
        try:
            write_health_file(self.s.data_dir / "health.json", payload)
        except OSError as e:
            log.warning("cannot write health.json", error=str(e))
        if self.central is not None and self.central_up:
            self.central.publish(self.health_topic, payload, qos=1, retain=True)

    # --- main loop -------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set."""
        s = self.s
        if s.sntp_port:
            try:
                self.sntp = SntpServer(s.sntp_bind, s.sntp_port, assume_synced=s.sntp_assume_synced).start()
            except OSError as e:
                log.error("sntp server not started", port=s.sntp_port, error=str(e))
        try:
            self._start_broker()
            self._connect_local()
            while not stop.is_set():
                self._step()
        finally:
            self._shutdown()

    def _step(self) -> None:
        now = time.monotonic()
        if self.local is None and now >= self._local_retry_at:
            self._connect_local()
        self._poll_central_connect(now)
        # paho's publish() writes straight to the socket and, on a write error
        # (link cut mid-publish), closes it itself: such a client has no socket
        # left to select on, so nothing else would ever notice it is gone.
        for c in (self.local, self.central):
            if c is not None and c.socket() is None:
                self._lost(c)
        if self._open_after_subscribe:
            self._open_after_subscribe = False
            self._check_bounds(now, force=True)      # opens the device listener unless the queue is full
        clients = [c for c in (self.local, self.central) if c is not None and c.socket() is not None]
        # how long we may sleep
        timeout = 0.05
        timeout = min(timeout, self.intake.wait_s(now))
        if self.forwarder.acked:
            timeout = min(timeout, 0.02)
        if self.central_up:
            f = self.forwarder
            timeout = min(timeout, self.lanes.wake_in(now, len(f.inflight) - f.n_backlog, f.n_backlog))
        rl = [c.socket() for c in clients]
        wl = [c.socket() for c in clients if c.want_write()]
        if rl:
            try:
                r, w, _ = select.select(rl, wl, [], max(0.0, timeout))
            except (OSError, ValueError):
                r, w = rl, []
        else:
            time.sleep(max(0.0, min(timeout, 0.05)))
            r, w = [], []
        for c in clients:
            sock = c.socket()
            rc = mqtt.MQTT_ERR_SUCCESS
            if sock in r:
                rc = _read(c)
            if rc == mqtt.MQTT_ERR_SUCCESS and c.socket() is not None and (sock in w or c.want_write()):
                rc = c.loop_write()
            if rc != mqtt.MQTT_ERR_SUCCESS or c.socket() is None:
                self._lost(c)
        now = time.monotonic()
        if self.intake.due(now):
            rows = self.intake.commit()
            if rows:
                self.lanes.committed(rows)
                self._check_bounds(now, force=True)
        self.forwarder.pump(now)
        if self.forwarder.flush():
            self._check_bounds(now)
        self.relay.pump()
        for c in (self.local, self.central):
            if c is not None and c.want_write() and c.socket() is not None:
                if c.loop_write() != mqtt.MQTT_ERR_SUCCESS:
                    self._lost(c)
        if now >= self._misc_at:
            self._misc_at = now + 1.0
            for c in (self.local, self.central):
                if c is not None and c.socket() is not None and c.loop_misc() != mqtt.MQTT_ERR_SUCCESS:
                    self._lost(c)
            self._check_bounds(now)
            if self._seen and now >= self._seen_flush:
                self._seen_flush = now + 5.0
                self.queue.note_devices(self._seen)
            if self.queue.depth == 0 and self.queue.used_bytes() > 8 * 1024 * 1024:
                self.queue.reclaim()
        if now >= self._health_at:
            self._health_at = now + self.s.health_interval_s
            self._health_tick(now)

    def _lost(self, c: mqtt.Client) -> None:
        if c is self.local:
            log.warning("local broker connection lost")
            self._local_lost()
            self._local_retry_at = time.monotonic() + 0.2
        elif c is self.central:
            self._central_lost(c)

    def _shutdown(self) -> None:
        """Store and ack what is in hand, delete what is acked, say goodbye."""
        try:
            if self.intake.pending and self.local is not None:
                self.lanes.committed(self.intake.commit())
            deadline = time.monotonic() + 1.0
            while self.forwarder.inflight and self.central_up and time.monotonic() < deadline:
                c = self.central
                if c is None or c.loop(timeout=0.01) != mqtt.MQTT_ERR_SUCCESS:
                    break
            self.forwarder.flush(force=True)
            self.queue.note_devices(self._seen)
            for c in (self.local, self.central):
                if c is not None:
                    for _ in range(20):
                        if not c.want_write() or c.loop_write() != mqtt.MQTT_ERR_SUCCESS:
                            break
            if self.central is not None and self.central_up:
                self.central.publish(self.health_topic, offline_payload(self.s.gateway_id), qos=1, retain=True)
                for _ in range(20):
                    self.central.loop(timeout=0.01)
                self.central.disconnect()
            if self.local is not None:
                self._local_goodbye(self.local)
        finally:
            if self.sntp is not None:
                self.sntp.stop()
            if self.broker is not None and not self.s.keep_broker:
                self.broker.stop()
            self.close()
            log.info("gateway stopped", queued=self.queue.depth)

    def close(self) -> None:
        self.queue.close()


def read_health(data_dir: Path) -> bytes | None:
    """The last health.json the service wrote, if any."""
    try:
        return (data_dir / "health.json").read_bytes()
    except FileNotFoundError:
        return None
