"""The gateway against real Mosquitto processes: a local one (the gateway's own,
started and restarted by the service) and a central one (a MosquittoBroker).

Device (paho) -> local broker -> gateway -> central broker -> a subscriber
and/or the real ingest worker into PostgreSQL. Every test compares what
arrived with exactly what the devices sent.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest

from contract import v1
from gateway.queue import inspect_queue
from gateway.service import GatewayService
from gateway.settings import GatewaySettings
from ingest.worker import IngestConfig, IngestWorker
from streetsense.embedded import MosquittoBroker, free_port, wait_port
from streetsense.mqtt import make_client, publish_all

TENANT = "gwtown"
GW = "gw-test"
BASE = (int(time.time()) // 3600 - 48) * 3600      # two days ago, on the hour

pytestmark = pytest.mark.skipif(not MosquittoBroker.available(), reason="mosquitto is not installed")


# --- helpers -------------------------------------------------------------------

def packs(device: str, n: int, seq0: int = 0, per_pack: int = 20) -> list[tuple[str, bytes]]:
    out = []
    for seq in range(seq0, seq0 + n):
        recs = [("fill", (seq * per_pack + k) * 37 % 1000, (seq * per_pack + k) * 1000) for k in range(per_pack)]
        out.append((v1.topic(TENANT, device, v1.UP), v1.encode_json(device, BASE, seq, recs)))
    return out


def expected_rows(msgs: list[tuple[str, bytes]]) -> set[tuple]:
    from contract.decode import decode

    fill = v1.metric("fill")[0]
    rows = set()
    for topic, payload in msgs:
        dev = v1.parse_topic(topic)[1]
        p = decode(payload, device_id=dev, received_ms=int(time.time() * 1000))
        rows |= {(dev, fill, r.time_ms, r.value) for r in p.readings}
    return rows


class Sink:
    """A subscriber on the central broker recording every message with its
    user properties and arrival time. Persistent session, reconnects by itself,
    so it survives central broker restarts."""

    def __init__(self, url: str, client_id: str = "sink", topic: str = "ss/v1/#") -> None:
        self.msgs: list[tuple[str, bytes, dict[str, str], bool, float]] = []
        self.lock = threading.Lock()
        subscribed = threading.Event()
        self.c = make_client(url, client_id)
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda *a: subscribed.set()
        self.c.subscribe(topic, 1)
        self._stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()
        assert subscribed.wait(10)

    def _on_message(self, c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        props = dict(getattr(m.properties, "UserProperty", None) or [])
        with self.lock:
            self.msgs.append((m.topic, m.payload, props, bool(m.retain), time.time()))

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.c.loop(timeout=0.01) != mqtt.MQTT_ERR_SUCCESS:
                time.sleep(0.1)
                try:
                    self.c.reconnect()
                except OSError:
                    pass

    def up(self) -> list[tuple[str, bytes, dict[str, str], bool, float]]:
        with self.lock:
            return [m for m in self.msgs if m[0].endswith("/up")]

    def wait_unique(self, wanted: set[tuple[str, bytes]], timeout: float = 60) -> set[tuple[str, bytes]]:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                got = {(t, p) for t, p, *_ in self.msgs} & wanted
            if got == wanted or time.monotonic() > deadline:
                return got
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self.t.join(5)
        self.c.disconnect()


def node_publish(url: str, client_id: str, msgs: list[tuple[str, bytes]], timeout: float = 120,
                 stats: dict[str, int] | None = None, pace: float = 0.0) -> None:
    """Publish like a sensor node (umqtt.simple): MQTT 3.1.1, QoS 1, one message
    at a time, dropped from "flash" only after its PUBACK; a refused or broken
    link means reconnect later and send the same message again."""
    from paho.mqtt.enums import CallbackAPIVersion

    target = url.rsplit(":", 1)
    host, port = target[0].split("//")[1], int(target[1])
    stats = stats if stats is not None else {}
    deadline = time.monotonic() + timeout
    c: mqtt.Client | None = None
    i = 0
    while i < len(msgs):
        assert time.monotonic() < deadline, f"{len(msgs) - i} messages still on the node"
        if c is None:
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
            try:
                c.connect(host, port, keepalive=30)
            except OSError:
                stats["refused"] = stats.get("refused", 0) + 1
                c = None
                time.sleep(0.2)
                continue
        info = c.publish(*msgs[i], qos=1)
        ok = False
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5:
            if c.loop(timeout=0.01) != mqtt.MQTT_ERR_SUCCESS:
                break
            if info.rc == mqtt.MQTT_ERR_SUCCESS and info.is_published():
                ok = True
                break
        if ok:
            i += 1
            time.sleep(pace)
        else:
            c = None          # link broken: the message stays on the node
    if c is not None:
        c.disconnect()


def settings(tmp_path: Path, central_url: str, **kw: object) -> GatewaySettings:
    base: dict[str, object] = dict(tenant=TENANT, gateway_id=GW, central_url=central_url, data_dir=tmp_path / "gw",
                                   local_bind="127.0.0.1", local_port=free_port(), local_service_port=free_port(),
                                   sntp_port=0, health_interval_s=0.5, drain_rate=0)
    base.update(kw)
    return GatewaySettings(_env_file=None, **base)


def device_url(s: GatewaySettings) -> str:
    return f"mqtt://127.0.0.1:{s.local_port}"


@contextmanager
def running(s: GatewaySettings) -> Iterator[GatewayService]:
    """The gateway service on a thread, ready for devices when entered."""
    svc = GatewayService(s)
    stop = threading.Event()
    t = threading.Thread(target=svc.run, args=(stop,), name="gateway", daemon=True)
    t.start()
    try:
        assert svc.local_ready.wait(20), "gateway did not subscribe locally"
        wait_until(lambda: svc.broker is None or svc.broker.accepting, 20, "device listener not opened")
        wait_port("127.0.0.1", s.local_port)
        yield svc
    finally:
        stop.set()
        t.join(30)
        assert not t.is_alive(), "gateway did not stop"


def wait_until(cond: Callable[[], bool], timeout: float, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.02)


def queued(path: Path) -> list[tuple[str, bytes]]:
    """(topic, payload) of every message in a queue file, oldest first (own read-only connection)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [(t, bytes(p)) for t, p in db.execute(
            "SELECT t.topic, q.payload FROM queue q JOIN topics t ON t.id = q.topic_id ORDER BY q.id")]
    finally:
        db.close()


def queue_used_bytes(path: Path) -> int:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return ((db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0])
                * db.execute("PRAGMA page_size").fetchone()[0])
    finally:
        db.close()


@pytest.fixture
def central(tmp_path: Path) -> Iterator[MosquittoBroker]:
    b = MosquittoBroker(tmp_path / "central").start()
    try:
        yield b
    finally:
        b.stop()


# --- PostgreSQL via the real ingest worker ------------------------------------------

def register(db_url: str, devices: list[str]) -> None:
    with psycopg.connect(db_url) as c:
        c.execute("INSERT INTO tenants (id, name) VALUES (%s, 'Gateway Town') ON CONFLICT DO NOTHING", (TENANT,))
        c.cursor().executemany("INSERT INTO devices (tenant, device_id, kind) VALUES (%s, %s, 'bin_fill')",
                               [(TENANT, d) for d in [*devices, "probe"]])


def stored(db_url: str) -> set[tuple]:
    with psycopg.connect(db_url) as c:
        return set(c.execute("""SELECT d.device_id, r.metric, (extract(epoch FROM r.time) * 1000)::bigint, r.value
                                FROM readings r JOIN devices d ON d.id = r.device_id
                                WHERE d.device_id <> 'probe'""").fetchall())


def count_rows(db_url: str) -> int:
    with psycopg.connect(db_url) as c:
        return c.execute("SELECT count(*) FROM readings r JOIN devices d ON d.id = r.device_id "
                         "WHERE d.device_id <> 'probe'").fetchone()[0]


@contextmanager
def ingest(db_url: str, central_url: str) -> Iterator[IngestWorker]:
    w = IngestWorker(IngestConfig(db_url, central_url, client_id="ingest-gw-test", batch_readings=500))
    stop = threading.Event()
    t = threading.Thread(target=w.run, args=(stop,), daemon=True)
    t.start()
    # subscribed once a probe published straight to the centre is stored
    pub = make_client(central_url, "probe", session=False)
    deadline = time.monotonic() + 30
    seq = 0
    while True:
        publish_all(pub, [(v1.topic(TENANT, "probe", v1.UP), v1.encode_json("probe", BASE, seq, [("fill", 1, seq)]))])
        seq += 1
        time.sleep(0.2)
        with psycopg.connect(db_url) as c:
            if c.execute("SELECT 1 FROM readings r JOIN devices d ON d.id = r.device_id "
                         "WHERE d.device_id = 'probe'").fetchone():
                break
        assert time.monotonic() < deadline, "ingest worker did not subscribe"
    pub.disconnect()
    try:
        yield w
    finally:
        stop.set()
        t.join(30)


def wait_rows(db_url: str, n: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while (got := count_rows(db_url)) < n and time.monotonic() < deadline:
        time.sleep(0.1)
    return got


# --- tests ---------------------------------------------------------------------------

def test_device_to_postgres_exact_payloads_rx_stamp_and_invalid_marked(db_url, central, tmp_path):
    devices = [f"bin-{i:04d}" for i in range(5)]
    register(db_url, devices)
    good = [m for d in devices for m in packs(d, 10)]
    d = devices[0]
    bad = {
        (v1.topic(TENANT, d, v1.UP), b"{not json"): "bad_encoding",
        (v1.topic(TENANT, d, v1.UP), v1.encode_json("bin-9999", BASE, 1, [("fill", 1, 0)])): "bad_base_name",
        (v1.topic(TENANT, d, v1.UP), v1.encode_json(d, BASE, 99, [("fill", 5000, 0), ("temp", 2100, 0)])):
            "records_rejected",
        (v1.topic(TENANT, d, v1.STATUS), b'{"state":"dancing","fw":"1","t":0}'): "bad_status",
    }
    status = (v1.topic(TENANT, d, v1.STATUS), v1.encode_status("online", "0.1.0", BASE))
    sink = Sink(central.url)
    s = settings(tmp_path, central.url)
    with ingest(db_url, central.url), running(s) as svc:
        dev = make_client(device_url(s), "dev-a")
        t0 = int(time.time() * 1000)
        publish_all(dev, good[:25] + list(bad) + good[25:])
        dev.publish(*status, qos=1, retain=True)
        publish_all(dev, [])
        wanted = {*good, *bad, status}
        assert sink.wait_unique(wanted) == wanted
        t1 = int(time.time() * 1000)
        assert wait_rows(db_url, 50 * 20 + 1) >= 50 * 20 + 1
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with psycopg.connect(db_url) as c:
                if c.execute("SELECT count(*) FROM quarantine").fetchone()[0] >= len(bad):
                    break
            time.sleep(0.1)
        wait_until(lambda: svc.queue.depth == 0, 5, "acked messages deleted")
        health = svc.health()
    sink.close()
    arrived = [m for m in sink.msgs if (m[0], m[1]) in wanted]
    # exact bytes, each once, each stamped with the gateway receive time and id
    assert Counter((t, p) for t, p, *_ in arrived) == Counter(wanted)
    for t, p, props, _retain, _at in arrived:
        assert props["ss-gw"] == GW
        assert t0 <= int(props["ss-rx"]) <= t1
        if (t, p) in bad:
            assert props["ss-invalid"].split(":")[0] == bad[(t, p)]
        else:
            assert "ss-invalid" not in props
    assert health.quarantined == len(bad) and health.queue_depth == 0
    # the centre stored exactly the valid readings and quarantined the invalid ones with reasons
    assert stored(db_url) - {(d, v1.metric("temp")[0], BASE * 1000, 21.0)} == expected_rows(good)
    with psycopg.connect(db_url) as c:
        reasons = sorted(r[0] for r in c.execute("SELECT reason_code FROM quarantine"))
        received = dict(c.execute("""SELECT d.device_id || ':' || b.seq, (extract(epoch FROM b.received_at) * 1000)::bigint
                                     FROM batches b JOIN devices d ON d.id = b.device_id
                                     WHERE d.device_id <> 'probe'""").fetchall())
    assert reasons == sorted(bad.values())
    # the ingest used the gateway's receive time (ss-rx), not its own
    rx = {v1.parse_topic(t)[1] + ":" + str(json.loads(p)[0]["bseq"]): int(props["ss-rx"])
          for t, p, props, *_ in arrived if (t, p) in set(good)}
    assert received and all(received[k] == rx[k] for k in rx)
    # the device's retained status is retained centrally too
    late = Sink(central.url, "late", v1.topic(TENANT, d, v1.STATUS))
    wait_until(lambda: late.msgs, 5, "retained status")
    assert late.msgs[0][1] == status[1] and late.msgs[0][3]
    late.close()


def test_backhaul_outage_buffers_then_drains_oldest_first_without_starving_live(central, tmp_path):
    sink = Sink(central.url)
    s = settings(tmp_path, central.url, drain_rate=1000, inflight=100)
    with running(s) as svc:
        dev = make_client(device_url(s), "dev-backlog")
        warm = packs("bin-0001", 20)
        publish_all(dev, warm)
        assert sink.wait_unique(set(warm)) == set(warm)
        time.sleep(0.5)          # let the sink's own PUBACKs reach the centre before it stops
        central.stop()
        wait_until(lambda: not svc.central_up, 10, "gateway noticed the outage")
        backlog = packs("bin-0001", 3000, seq0=1000)
        publish_all(dev, backlog)
        status_t = v1.topic(TENANT, "bin-0001", v1.STATUS)
        old_status = v1.encode_status("sleeping", "0.1.0", BASE, BASE + 600)
        dev.publish(status_t, old_status, qos=1, retain=True)
        publish_all(dev, [])
        wait_until(lambda: len(queued(s.queue_file)) >= len(backlog) + 1, 30, "backlog stored")
        assert queued(s.queue_file) == backlog + [(status_t, old_status)]    # all of it, on disk, in order
        assert inspect_queue(s.queue_file)["readings"] == len(backlog) * 20
        central.start()
        wait_until(lambda: svc.central_up, 30, "gateway reconnected")
        # a newer retained status arrives live and overtakes the buffered one
        new_status = v1.encode_status("online", "0.1.0", BASE + 700)
        dev.publish(status_t, new_status, qos=1, retain=True)
        publish_all(dev, [])
        live = packs("bin-0002", 120)
        sent_at: dict[bytes, float] = {}
        live_dev = make_client(device_url(s), "dev-live")
        publish_all(live_dev, live, rate=40, on_sent=lambda i, t: sent_at.__setitem__(live[i][1], t))
        wanted = set(warm + backlog + live)
        assert sink.wait_unique(wanted, timeout=60) == wanted
        time.sleep(0.3)
    sink.close()
    ups = sink.up()
    counts = Counter((t, p) for t, p, *_ in ups)
    assert counts == Counter(wanted), "each message exactly once"
    arrival = {(t, p): at for t, p, _props, _r, at in ups}
    # the backlog came back oldest first, at the configured rate
    backlog_order = [(t, p) for t, p, *_ in ups if (t, p) in set(backlog)]
    assert backlog_order == backlog
    drain_s = arrival[backlog[-1]] - arrival[backlog[0]]
    assert 2.0 <= drain_s <= 8.0, f"3000 messages at 1000/s took {drain_s:.2f} s"
    # live messages kept flowing during the drain with a bounded latency
    during = [p for _t, p in live if sent_at[p] < arrival[backlog[-1]]]
    assert len(during) >= 40, "live messages were published while the backlog drained"
    lat = sorted(arrival[(v1.topic(TENANT, "bin-0002", v1.UP), p)] - sent_at[p] for p in during)
    assert lat[len(lat) // 2] < 0.25 and lat[-1] < 1.5, f"live latency p50 {lat[len(lat) // 2]:.3f} max {lat[-1]:.3f}"
    # both statuses were forwarded, but the centre keeps the newest one retained
    statuses = [(p, r) for t, p, _props, r, _at in sink.msgs if t == status_t]
    assert sorted(p for p, _ in statuses) == sorted([old_status, new_status])
    late = Sink(central.url, "late-status", status_t)
    wait_until(lambda: late.msgs, 5, "retained status")
    late.close()
    assert [m[1] for m in late.msgs] == [new_status]


def _gateway_proc(s: GatewaySettings, log: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env.update({f"STREETSENSE_GATEWAY_{k.upper()}": str(v) for k, v in {
        "tenant": s.tenant, "gateway_id": s.gateway_id, "central_url": s.central_url, "data_dir": s.data_dir,
        "local_bind": s.local_bind, "local_port": s.local_port, "local_service_port": s.local_service_port,
        "sntp_port": 0, "drain_rate": 0, "inflight": s.inflight, "commit_max": s.commit_max}.items()})
    return subprocess.Popen([sys.executable, "-c", "from gateway.cli import app; app()", "run"], env=env,
                            stdout=subprocess.DEVNULL, stderr=log.open("ab"))


def test_gateway_killed_with_sigkill_loses_nothing_and_duplicates_only_in_flight(db_url, central, tmp_path):
    devices = [f"bin-{i:04d}" for i in range(10)]
    register(db_url, devices)
    msgs = [m for seq in range(150) for d in devices for m in packs(d, 1, seq0=seq)]   # 1,500 packs
    log = tmp_path / "gateway.log"
    s = settings(tmp_path, central.url, inflight=100, commit_max=200)
    sink = Sink(central.url)
    pid_file = s.broker_dir / "mosquitto.pid"
    proc = _gateway_proc(s, log)
    try:
        with ingest(db_url, central.url):
            wait_port("127.0.0.1", s.local_port, timeout=30)     # opened only once the gateway has subscribed
            dev = make_client(device_url(s), "dev-kill")
            progress = [0]
            pub = threading.Thread(target=publish_all, args=(dev, msgs), daemon=True,
                                   kwargs={"rate": 600, "on_sent": lambda i, t: progress.__setitem__(0, i + 1)})
            pub.start()
            wait_until(lambda: len(sink.up()) >= 400, 30, "forwarding started")
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            sent_at_kill = progress[0]
            broker_pid = int(pid_file.read_text())
            os.kill(broker_pid, 0)                    # the devices' broker survived the gateway
            time.sleep(0.5)                           # devices keep publishing into the gateway's session
            proc = _gateway_proc(s, log)
            pub.join(60)
            assert sink.wait_unique(set(msgs), timeout=60) == set(msgs), log.read_text()[-3000:]
            assert int(pid_file.read_text()) == broker_pid, "the restarted gateway adopted the running broker"
            n = len(expected_rows(msgs))
            assert wait_rows(db_url, n) == n
            time.sleep(0.5)
            assert stored(db_url) == expected_rows(msgs), "the central store has each reading exactly once"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        sink.close()
    assert not pid_file.exists(), "a graceful stop stops the managed broker"
    ups = sink.up()
    counts = Counter((t, p) for t, p, *_ in ups)
    dups = {k: c for k, c in counts.items() if c > 1}
    # duplicates: at most the window in flight + unflushed acks + one uncommitted batch
    assert len(dups) <= 100 + 1000 + 200 and all(c == 2 for c in dups.values())
    # ... and only messages in flight at the kill: published before it, and not long before
    index = {m: i for i, m in enumerate(msgs)}
    repeated = sorted(index[k] for k in dups)
    print(f"published at kill: {sent_at_kill}, repeated: {len(repeated)} "
          f"(publish index {repeated[0] if repeated else '-'}..{repeated[-1] if repeated else '-'})")
    assert all(sent_at_kill - 100 - 1000 - 200 <= i < sent_at_kill for i in repeated)


def test_full_queue_refuses_devices_then_recovers_without_loss(tmp_path):
    central = MosquittoBroker(tmp_path / "central").start()
    sink = Sink(central.url)                     # its persistent session outlives the outage
    central.stop()
    max_bytes = 1024 * 1024                       # the smallest bound allowed
    s = settings(tmp_path, central.url, max_bytes=max_bytes, refuse_fraction=0.75, resume_fraction=0.4)
    msgs = packs("bin-0003", 800, per_pack=100)   # ~3.3 MB of packs: three times the bound
    try:
        with running(s) as svc:
            node: dict[str, int] = {}
            errors: list[BaseException] = []

            def run_node() -> None:
                try:
                    node_publish(device_url(s), "bin-0003", msgs, stats=node, pace=0.003)
                except BaseException as e:  # noqa: BLE001
                    errors.append(e)

            pub = threading.Thread(target=run_node, daemon=True)
            pub.start()
            wait_until(lambda: svc.refusals >= 1, 30, "queue full")
            health = s.data_dir / "health.json"

            def health_says_refusing() -> bool:
                try:
                    return bool(json.loads(health.read_bytes()).get("refusing"))
                except (OSError, ValueError):
                    return False             # not written yet, or caught mid-replace

            # the health file is written periodically: wait for it rather than guess its period
            wait_until(health_says_refusing, 15, "health file says refusing")
            # refused: the device listener is closed, devices cannot connect and keep their data
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", s.local_port), timeout=2).close()
            used = queue_used_bytes(s.queue_file)
            assert used <= max_bytes
            h = json.loads(health.read_bytes())
            assert h["refusing"] and h["refusals"] >= 1 and h["queue_bytes"] <= max_bytes
            assert pub.is_alive(), f"the device is still holding messages {errors}"
            assert node.get("refused", 0) >= 1
            central.start()
            got = sink.wait_unique(set(msgs), timeout=90)
            pub.join(30)
            assert got == set(msgs) and not errors
            wait_until(lambda: svc.refusing_since is None and svc.broker.accepting, 10, "listener reopened")
            wait_until(lambda: svc.queue.depth == 0, 10, "queue drained")
    finally:
        sink.close()
        central.stop()
    counts = Counter((t, p) for t, p, *_ in sink.up())
    assert set(counts) == set(msgs)
    assert sum(c - 1 for c in counts.values()) <= 50, "only messages caught in a broker restart repeat"


def test_downlink_cfg_cmd_relay_uplink_ack_health_and_sntp(central, tmp_path):
    from prometheus_client import generate_latest

    cfg1 = json.dumps({"rev": 3, "cadence": {"tx_s": 600}}).encode()
    boss = make_client(central.url, "backend", session=False)
    publish_all(boss, [])
    boss.publish(v1.topic(TENANT, "bin-0001", v1.CFG), cfg1, qos=1, retain=True)   # before the gateway exists
    publish_all(boss, [])
    sink = Sink(central.url, "sink-ack", f"ss/v1/{TENANT}/+/ack")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("127.0.0.1", 0))
        sntp_port = u.getsockname()[1]
    s = settings(tmp_path, central.url, devices="bin-0001", sntp_port=sntp_port, sntp_bind="127.0.0.1")
    with running(s) as svc:
        got: list[tuple[str, bytes, bool]] = []
        node = make_client(device_url(s), "bin-0001", session=False)
        node.on_message = lambda c, u, m: got.append((m.topic, m.payload, bool(m.retain)))
        node.subscribe([(v1.topic(TENANT, "bin-0001", v1.CFG), 1), (v1.topic(TENANT, "bin-0001", v1.CMD), 1)])

        def pump_until(cond: Callable[[], bool], timeout: float = 10) -> None:
            deadline = time.monotonic() + timeout
            while not cond():
                node.loop(0.01)
                boss.loop(0.01)
                assert time.monotonic() < deadline

        pump_until(lambda: any(t.endswith("/cfg") for t, *_ in got))      # the retained cfg came down
        assert got[0][:2] == (v1.topic(TENANT, "bin-0001", v1.CFG), cfg1)
        boss.publish(v1.topic(TENANT, "bin-0001", v1.CMD), b'{"op":"selftest"}', qos=1)
        pump_until(lambda: any(t.endswith("/cmd") for t, *_ in got))
        assert (v1.topic(TENANT, "bin-0001", v1.CMD), b'{"op":"selftest"}', False) in got
        ack = b'{"cfg":3,"ok":true}'
        node.publish(v1.topic(TENANT, "bin-0001", v1.ACK), ack, qos=1)
        pump_until(lambda: any(m[1] == ack for m in sink.msgs))
        # a device the gateway did not know: learnt from its first message, then served cfg
        other = make_client(device_url(s), "bin-0002", session=False)
        got2: list[bytes] = []
        other.on_message = lambda c, u, m: got2.append(m.payload)
        other.subscribe(v1.topic(TENANT, "bin-0002", v1.CFG), 1)
        publish_all(other, packs("bin-0002", 1))
        wait_until(lambda: "bin-0002" in svc.relay.known, 5, "device learnt")
        time.sleep(0.3)
        boss.publish(v1.topic(TENANT, "bin-0002", v1.CFG), b'{"rev":1}', qos=1, retain=True)
        deadline = time.monotonic() + 10
        while not got2 and time.monotonic() < deadline:
            other.loop(0.01)
            boss.loop(0.01)
        assert got2 == [b'{"rev":1}']
        # the relayed cfg is retained locally: a node that connects later still gets it
        late = make_client(device_url(s), "bin-0001-b", session=False)
        got3: list[tuple[bytes, bool]] = []
        late.on_message = lambda c, u, m: got3.append((m.payload, bool(m.retain)))
        late.subscribe(v1.topic(TENANT, "bin-0001", v1.CFG), 1)
        deadline = time.monotonic() + 5
        while not got3 and time.monotonic() < deadline:
            late.loop(0.01)
        assert got3 == [(cfg1, True)]
        # SNTP from the running service, hand-made request
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(2)
            u.sendto(bytes([0x1B]) + bytes(47), ("127.0.0.1", sntp_port))
            rep, _ = u.recvfrom(64)
        from gateway.sntp import from_ntp

        assert rep[0] & 7 == 4 and abs(from_ntp(rep[40:48]) - time.time()) < 1.0
        time.sleep(0.6)
        health_file = json.loads((s.data_dir / "health.json").read_bytes())
    # retained health on the centre, and Prometheus figures
    hs = Sink(central.url, "health", f"ss/v1/{TENANT}/{GW}/health")
    wait_until(lambda: hs.msgs, 5, "retained health")
    hs.close()
    sink.close()
    last = json.loads(hs.msgs[-1][1])
    assert last == {"gateway": GW, "state": "offline"}, "graceful stop leaves 'offline' retained"
    assert health_file["gateway"] == GW and health_file["state"] == "online"
    assert health_file["devices"] == 2 and health_file["central_connected"] is True
    assert {"queue_depth", "oldest_age_s", "forward_rate", "queue_bytes", "refusing"} <= set(health_file)
    metrics = generate_latest().decode()
    for name in ("streetsense_gateway_queue_depth", "streetsense_gateway_oldest_age_seconds",
                 "streetsense_gateway_forward_rate", "streetsense_gateway_refusals_total",
                 "streetsense_gateway_quarantined_total", "streetsense_gateway_downlink_total"):
        assert name in metrics


def test_bench_runs_small_and_reports_every_figure(tmp_path):
    from gateway.bench import bench_gateway

    res = bench_gateway(readings=4800, json=True, pack=48, devices=10, work_dir=tmp_path / "bench", timeout=120)
    assert res["messages"] == 100 and res["readings"] == 4800
    assert res["raw_broker"]["msgs_per_s"] > 0 and res["gateway"]["msgs_per_s"] > 0
    out = res["outage"]
    assert out["buffered_messages"] == 100 and out["duplicates_at_subscriber"] >= 0
    assert 30 < out["bytes_per_reading_used"] < 2000 and out["drain_seconds"] > 0
