"""Hostile input on real components: floods from one device, oversized payloads,
clock-skewed and far-future timestamps, unknown tenants and devices.

Every case ends in a stated outcome (docs/bad-input.md): stored, quarantined
with a reason and the raw bytes (replayable), or refused by the broker with an
MQTT 5 reason code. Real Mosquitto, real PostgreSQL, the real ingest worker
and gateway service; nothing is mocked.
"""

from __future__ import annotations

import time

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import REGISTRY

from contract import v1
from contract.decode import decode
from gateway.broker import MAX_PACKET_SIZE, LocalBroker
from gateway.drain import Lanes
from gateway.forwarder import Forwarder
from gateway.queue import DurableQueue, Row
from gateway.validate import MAX_REASON
from ingest.quarantine import replay
from ingest.ratelimit import RateLimiter
from streetsense.embedded import DEVICE_MAX_PACKET, RELAY_MAX_PACKET, MosquittoBroker, free_port
from streetsense.mqtt import make_client, publish_all
from tests.test_ingest_e2e import BASE, TENANT, register, worker_thread

pytestmark = pytest.mark.skipif(not MosquittoBroker.available(), reason="mosquitto is not installed")

FILL = v1.metric("fill")[0]


def rows_of(db_url: str) -> set[tuple]:
    with psycopg.connect(db_url) as c:
        return set(c.execute("""SELECT d.device_id, r.metric, (extract(epoch FROM r.time) * 1000)::bigint, r.value
                                FROM readings r JOIN devices d ON d.id = r.device_id
                                WHERE d.device_id <> 'probe'""").fetchall())


def expected(msgs: list[tuple[str, bytes]]) -> set[tuple]:
    out = set()
    for topic, payload in msgs:
        dev = v1.parse_topic(topic)[1]
        out |= {(dev, r.metric_id, r.time_ms, r.value)
                for r in decode(payload, device_id=dev, received_ms=int(time.time() * 1000)).readings}
    return out


def quarantine(db_url: str) -> list[tuple]:
    with psycopg.connect(db_url) as c:
        return c.execute("SELECT topic, reason_code, reason, payload, details, replayed_at FROM quarantine "
                         "WHERE device_id IS DISTINCT FROM 'probe' ORDER BY id").fetchall()


def wait_for(cond, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def counter(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


# --- floods from one device ------------------------------------------------------

def flood(dev: str, n: int, per_pack: int = 50, seq0: int = 0, t0: int = BASE) -> list[tuple[str, bytes]]:
    """``n`` packs one second of device time apart, ``per_pack`` readings each: 50 readings/s."""
    return [(v1.topic(TENANT, dev, v1.UP),
             v1.encode_json(dev, t0 + s, seq0 + s, [("fill", (s * 7 + k) % 1000, k * 10) for k in range(per_pack)]))
            for s in range(n)]


def calm(dev: str, n: int) -> list[tuple[str, bytes]]:
    """A well-behaved node: 10 readings every 10 minutes."""
    return [(v1.topic(TENANT, dev, v1.UP),
             v1.encode_json(dev, BASE + s * 600, s, [("fill", (s + k) % 1000, k * 60) for k in range(10)]))
            for s in range(n)]


def split(msgs: list[tuple[str, bytes]], rate: float, burst: int) -> tuple[list, list]:
    """What a limiter with these settings lets through, message by message, in this order."""
    lim = RateLimiter(rate, burst)
    ok, over = [], []
    for topic, payload in msgs:
        tenant, dev, _ = v1.parse_topic(topic)
        p = decode(payload, device_id=dev, received_ms=int(time.time() * 1000))
        (ok if lim.allow(f"{tenant}/{dev}", max(p.times_ms), len(p)) else over).append((topic, payload))
    return ok, over


def assert_limited(db_url: str, ok: list, over: list) -> None:
    """Once it has all arrived: exactly ``ok`` stored, exactly ``over`` quarantined ``rate_limited``."""
    wait_for(lambda: len(quarantine(db_url)) >= len(over) and len(rows_of(db_url)) >= len(expected(ok)),
             what="stored and quarantined")
    time.sleep(0.5)
    assert rows_of(db_url) == expected(ok)
    q = quarantine(db_url)
    assert {(t, bytes(p)) for t, _, _, p, _, _ in q} == set(over)
    assert {code for _, code, _, _, _, _ in q} == {"rate_limited"}
    assert all("rate limit" in reason for _, _, reason, _, _, _ in q)


def test_flood_from_one_device_is_quarantined_rate_limited_others_flow_and_replay_loses_nothing(db_url, broker):
    hog, *others = register(db_url, 3)
    rate, burst = 5.0, 200
    burst_msgs = flood(hog, 40)                                   # 2,000 readings in 40 s of device time
    later = flood(hog, 1, seq0=100, t0=BASE + 3600)               # the same node an hour later: refilled
    quiet = [m for d in others for m in calm(d, 8)]
    msgs = burst_msgs[:20] + quiet[:8] + burst_msgs[20:] + quiet[8:] + later
    ok, over = split(msgs, rate, burst)
    assert len(over) >= 30 and all(v1.parse_topic(t)[1] == hog for t, _ in over)
    status = (v1.topic(TENANT, hog, v1.STATUS), v1.encode_status("online", "0.3.0", BASE))
    before = counter("streetsense_ingest_rate_limited_readings_total")
    with worker_thread(db_url, broker.url, rate_readings_per_s=rate, rate_burst=burst):
        publish_all(make_client(broker.url, "flood-pub"), [*msgs, status])
        # nothing dropped: what was let through is stored, the excess is in quarantine, raw bytes and reason
        assert_limited(db_url, ok, over)
        # the other devices were not slowed at all, and the hog's later pack and status went through
        assert expected(quiet + later) <= rows_of(db_url)
        with psycopg.connect(db_url) as c:
            assert c.execute("SELECT state, firmware FROM devices WHERE device_id = %s", (hog,)).fetchone() == \
                ("online", "0.3.0")
        assert counter("streetsense_ingest_rate_limited_readings_total") - before == \
            sum(len(decode(p, device_id=hog, received_ms=2**62).times_ms) for _, p in over)
        # an operator decides to let it in: replay skips the limit, and then every reading is stored
        with psycopg.connect(db_url) as c:
            assert replay(c, broker.url, reason_code="rate_limited") == len(over)
        wait_for(lambda: rows_of(db_url) == expected(msgs), what="replayed flood stored")
        time.sleep(0.5)
    q = quarantine(db_url)
    assert len(q) == len(over) and all(r[5] is not None for r in q), "replayed rows are not re-armed"


def test_a_device_cannot_forge_the_replay_marker_to_dodge_the_limit(db_url, broker):
    """``ss-replay`` is an HMAC under the database's key: a flooder that sets it
    itself (a plain "1", or a signature made with some other key) is still
    rate limited, and its excess is quarantined, not lost."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from ingest.quarantine import replay_mark

    (hog,) = register(db_url, 1)
    rate, burst = 5.0, 200
    msgs = flood(hog, 30)
    ok, over = split(msgs, rate, burst)
    assert len(over) >= 20

    def forged(topic: str, payload: bytes) -> Properties:
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = ("ss-replay", "1" if hash(payload) % 2 else replay_mark(b"x" * 32, topic, payload))
        return props

    before = counter("streetsense_ingest_forged_replay_marks_total")
    with worker_thread(db_url, broker.url, rate_readings_per_s=rate, rate_burst=burst):
        publish_all(make_client(broker.url, "forger"), msgs, properties=forged)
        assert_limited(db_url, ok, over)
        assert counter("streetsense_ingest_forged_replay_marks_total") - before == len(msgs)
        # the operator's signed replay still gets them in
        with psycopg.connect(db_url) as c:
            assert replay(c, broker.url, reason_code="rate_limited") == len(over)
        wait_for(lambda: rows_of(db_url) == expected(msgs), what="signed replay stored")


# --- through a gateway ---------------------------------------------------------------

def test_gateway_marks_a_flood_rate_limited_and_the_centre_quarantines_exactly_that(db_url, tmp_path):
    from tests import test_gateway_e2e as gw

    hog, calm_dev = "bin-0100", "bin-0101"
    gw.register(db_url, [hog, calm_dev])
    burst_msgs = [(v1.topic(gw.TENANT, hog, v1.UP),
                   v1.encode_json(hog, gw.BASE + s, s, [("fill", (s + k) % 1000, k * 10) for k in range(50)]))
                  for s in range(30)]
    quiet = gw.packs(calm_dev, 10)
    msgs = burst_msgs[:10] + quiet + burst_msgs[10:]
    _, over = split(msgs, 5, 200)
    assert len(over) >= 20 and all(v1.parse_topic(t)[1] == hog for t, _ in over)
    central = MosquittoBroker(tmp_path / "central").start()
    try:
        s = gw.settings(tmp_path, central.url, rate_readings_per_s=5, rate_burst=200)
        sink = gw.Sink(central.url)
        with gw.ingest(db_url, central.url), gw.running(s) as svc:
            publish_all(make_client(gw.device_url(s), "dev-flood"), msgs)
            assert sink.wait_unique(set(msgs)) == set(msgs), "everything forwarded, nothing kept on the Pi"
            wait_for(lambda: len(quarantine(db_url)) >= len(over), what="central quarantine")
            health = svc.health()
        sink.close()
    finally:
        central.stop()
    marked = {(t, p) for t, p, props, *_ in sink.msgs if props.get("ss-invalid", "").startswith("rate_limited")}
    assert marked == set(over)
    q = quarantine(db_url)
    assert {(t, bytes(p)) for t, code, _, p, _, _ in q if code == "rate_limited"} == set(over)
    assert all(code == "rate_limited" for _, code, *_ in q)
    assert gw.stored(db_url) == expected([m for m in msgs if m not in set(over)])
    assert health.quarantined == len(over)


# --- oversized payloads -------------------------------------------------------------

def test_oversized_payload_is_quarantined_too_large_and_a_bigger_packet_refused_by_the_broker(db_url, broker):
    dev, = register(db_url, 1)
    topic = v1.topic(TENANT, dev, v1.UP)
    pack = v1.encode_json(dev, BASE, 1, [("fill", 500, 0)])
    too_large = pack + b" " * (v1.MAX_PAYLOAD + 4000 - len(pack))      # valid JSON, over the contract's 64 KiB
    assert v1.MAX_PAYLOAD < len(too_large) < RELAY_MAX_PACKET
    after = (topic, v1.encode_json(dev, BASE + 60, 2, [("fill", 600, 0)]))
    disconnects: list = []
    acks: dict[int, object] = {}
    with worker_thread(db_url, broker.url):
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="big-pub", protocol=mqtt.MQTTv5)
        c.on_disconnect = lambda cl, u, f, rc, p=None: disconnects.append(rc)
        c.on_publish = lambda cl, u, mid, rc, p=None: acks.__setitem__(mid, rc)
        c.connect("127.0.0.1", broker.port)
        info = c.publish(topic, too_large, qos=1)
        while info.mid not in acks:
            c.loop(0.05)
        assert not acks[info.mid].is_failure                 # the broker took it: ingest judges it
        big = c.publish(topic, b"[" + b" " * RELAY_MAX_PACKET + b"]", qos=1)
        deadline = time.monotonic() + 10
        while not disconnects and time.monotonic() < deadline:
            c.loop(0.05)
        assert disconnects and disconnects[0].value == 0x95 and disconnects[0].getName() == "Packet too large"
        assert big.mid not in acks
        # the broker and the worker carry on: the device's next pack is stored
        publish_all(make_client(broker.url, "after-pub"), [after])
        wait_for(lambda: len(rows_of(db_url)) == 1 and quarantine(db_url), what="next pack and quarantine")
        time.sleep(0.3)
    q = quarantine(db_url)
    assert [(t, code, bytes(p)) for t, code, _, p, _, _ in q] == [(topic, "too_large", too_large)]
    assert rows_of(db_url) == expected([after])


def test_gateway_broker_refuses_oversized_packets_and_the_centre_takes_all_it_forwards(tmp_path):
    """The gateway's local broker lets payloads up to twice the contract limit in
    (to be forwarded and quarantined centrally) and refuses bigger packets; the
    central broker always has room for what the gateway forwards, with its longest
    topic and its longest ``ss-invalid`` mark."""
    lb = LocalBroker(tmp_path / "gw", device_port=free_port(), service_port=free_port(), device_bind="127.0.0.1")
    central = MosquittoBroker(tmp_path / "central").start()
    lb.start()
    try:
        got: list[int] = []
        sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gw-svc", protocol=mqtt.MQTTv5)
        sub.on_message = lambda c, u, m: got.append(len(m.payload))
        sub.connect("127.0.0.1", lb.service_port)
        sub.subscribe("ss/v1/#", qos=1)
        for _ in range(10):
            sub.loop(0.05)
        long_topic = v1.topic("t" * v1.MAX_ID_LEN, "d" * v1.MAX_ID_LEN, v1.UP)
        # the packet: type byte, 3-byte remaining length, topic, packet id, empty properties, payload.
        # Mosquitto 2.0 leaves the length bytes out of its count, so the payload one byte over
        # ``fits + 3`` is refused by any counting, and ``fits`` is within the limit by any counting.
        fits = DEVICE_MAX_PACKET - 1 - 3 - (2 + len(long_topic)) - 2 - 1
        assert 16384 <= DEVICE_MAX_PACKET - 4 < 2097152          # so the remaining length takes 3 bytes
        disc: list = []
        dev = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="node", protocol=mqtt.MQTTv5)
        dev.on_disconnect = lambda c, u, f, rc, p=None: disc.append(rc)
        dev.connect("127.0.0.1", lb.device_port)
        ok = dev.publish(long_topic, b"x" * fits, qos=1)
        while not ok.is_published():
            dev.loop(0.05)
            sub.loop(0.01)
        deadline = time.monotonic() + 5
        while fits not in got and time.monotonic() < deadline:
            sub.loop(0.05)
        assert fits in got, "the largest packet a device may send reaches the gateway"
        dev.publish(long_topic, b"x" * (fits + 4), qos=1)
        while not disc and time.monotonic() < deadline + 5:
            dev.loop(0.05)
        assert disc and disc[0].value == 0x95
        assert f"max_packet_size {MAX_PACKET_SIZE}" in lb.conf_path.read_text()
        from streetsense.identity.mosquitto import MAX_PACKET as CENTRAL
        assert CENTRAL == RELAY_MAX_PACKET, "the production central broker takes what gateways relay"

        # forwarded to the centre with the gateway's stamps and the longest possible mark
        fw = Forwarder(DurableQueue(tmp_path / "q.sqlite3"), Lanes(window=10, drain_rate=0), "g" * v1.MAX_ID_LEN)
        reason = "…" * MAX_REASON
        row = Row(1, int(time.time() * 1000), long_topic, b"x" * fits, False, 0, reason)
        up = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gw-up", protocol=mqtt.MQTTv5)
        acks: list = []
        up.on_publish = lambda c, u, mid, rc, p=None: acks.append(rc)
        up.on_disconnect = lambda c, u, f, rc, p=None: acks.append(rc)
        up.connect("127.0.0.1", central.port)
        up.publish(row.topic, row.payload, qos=1, properties=fw.props(row))
        deadline = time.monotonic() + 10
        while not acks and time.monotonic() < deadline:
            up.loop(0.05)
        assert acks and not acks[0].is_failure, f"central broker refused a forwarded packet: {acks}"
    finally:
        lb.stop()
        central.stop()


# --- clock skew -------------------------------------------------------------------------

def test_clock_skew_small_drift_stored_future_and_pre_2020_records_quarantined(db_url, broker):
    dev, = register(db_url, 1)
    topic = v1.topic(TENANT, dev, v1.UP)
    now = int(time.time())
    drift = (topic, v1.encode_json(dev, now + 240, 1, [("fill", 100, 0)]))                  # clock 4 min fast
    mixed = (topic, v1.encode_json(dev, now, 2, [("fill", 200, 0), ("temp", 2000, 660_000)]))  # one record +11 min
    future = (topic, v1.encode_json(dev, 4102444800, 3, [("fill", 300, 0), ("temp", 1500, 0)]))   # year 2100
    rtc_reset = (topic, v1.encode_json(dev, 946684800, 4, [("fill", 400, 0)]))              # RTC back at 2000-01-01
    # buffered by a gateway: judged against the gateway's receive time (ss-rx), two hours ago
    rx = (now - 7200) * 1000
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("ss-rx", str(rx)), ("ss-gw", "gw-1")]
    buffered_ok = (topic, v1.encode_json(dev, now - 7200 + 300, 5, [("fill", 500, 0)]))      # 5 min after rx
    buffered_bad = (topic, v1.encode_json(dev, now - 3600, 6, [("fill", 600, 0)]))           # 1 h after rx
    with worker_thread(db_url, broker.url):
        pub = make_client(broker.url, "skew-pub")
        publish_all(pub, [drift, mixed, future, rtc_reset])
        publish_all(pub, [buffered_ok, buffered_bad], properties=props)
        wait_for(lambda: len(quarantine(db_url)) >= 4 and len(rows_of(db_url)) >= 3, what="skew outcomes")
        time.sleep(0.3)
    assert rows_of(db_url) == {(dev, FILL, (now + 240) * 1000, 0.1), (dev, FILL, now * 1000, 0.2),
                               (dev, FILL, (now - 7200 + 300) * 1000, 0.5)}
    q = {bytes(p): (code, details) for _, code, _, p, details, _ in quarantine(db_url)}
    assert set(q) == {mixed[1], future[1], rtc_reset[1], buffered_bad[1]}
    assert all(code == "records_rejected" for code, _ in q.values())
    assert [d["index"] for d in q[mixed[1]][1]] == [1]
    assert {d["code"] for _, details in q.values() for d in details} == {"impossible_time"}
    assert len(q[future[1]][1]) == 2
    with psycopg.connect(db_url) as c:
        got = c.execute("SELECT (extract(epoch FROM received_at) * 1000)::bigint FROM batches b "
                        "JOIN devices d ON d.id = b.device_id WHERE seq = 5").fetchone()
    assert got == (rx,), "the gateway's receive time is the receive time"


# --- unknown tenants and devices ----------------------------------------------------------

def test_unknown_tenants_and_devices_quarantined_worker_survives_and_replay_stores_them(db_url, broker):
    known, = register(db_url, 1)
    ghosts = [(v1.topic(f"nowhere-{i % 3}", f"ghost-{i}", v1.UP),
               v1.encode_json(f"ghost-{i}", BASE, i, [("fill", i, 0)])) for i in range(300)]
    bad_topics = [("ss/v1/Bad_Tenant/x/up", b"[]"), ("ss/v1/-t/x/up", b"{}"), ("ss/v1/t/" + "d" * 65 + "/up", b"x")]
    good = (v1.topic(TENANT, known, v1.UP), v1.encode_json(known, BASE, 1, [("fill", 123, 0)]))
    with worker_thread(db_url, broker.url):
        publish_all(make_client(broker.url, "ghost-pub"), [*ghosts, *bad_topics, good])
        wait_for(lambda: len(quarantine(db_url)) >= len(ghosts) + len(bad_topics) and rows_of(db_url),
                 what="ghosts quarantined")
        q = quarantine(db_url)
        reasons = {bytes(p): code for _, code, _, p, _, _ in q}
        assert all(reasons[p] == "unknown_device" for _, p in ghosts)
        assert all(reasons[p] == "bad_topic" for _, p in bad_topics)
        assert rows_of(db_url) == expected([good])
        # the council registers one of the new tenants and its devices; replay stores exactly those
        with psycopg.connect(db_url) as c:
            c.execute("INSERT INTO tenants (id, name) VALUES ('nowhere-1', 'Late Town')")
            c.cursor().executemany("INSERT INTO devices (tenant, device_id, kind) VALUES ('nowhere-1', %s, 'bin_fill')",
                                   [(f"ghost-{i}",) for i in range(1, 300, 3)])
            c.commit()
            time.sleep(1.1)                  # past the registry's reload interval
            assert replay(c, broker.url, reason_code="unknown_device", tenant="nowhere-1") == 100
        wait_for(lambda: len(rows_of(db_url)) == 101, what="replayed ghosts stored")
    with psycopg.connect(db_url) as c:
        pending = c.execute("SELECT tenant, count(*) FROM quarantine WHERE replayed_at IS NULL "
                            "AND reason_code = 'unknown_device' GROUP BY tenant ORDER BY tenant").fetchall()
    assert pending == [("nowhere-0", 100), ("nowhere-2", 100)]


def test_ever_older_timestamps_run_dry_the_history_allowance_and_are_quarantined(db_url, broker):
    """A node whose timestamps only go back (a broken RTC, or a replay attack) never moves its clock,
    so its bucket never refills: history is allowed up to the allowance (a full flash ring twice over),
    then every further pack is quarantined ``rate_limited``. The default limits, the real worker."""
    (dev,) = register(db_url, 1)
    live = (v1.topic(TENANT, dev, v1.UP), v1.encode_json(dev, BASE, 0, [("fill", 500, 0)]))
    back = [(v1.topic(TENANT, dev, v1.UP),
             v1.encode_json(dev, BASE - k * 600, k, [("fill", (k + j) % 1000, j) for j in range(100)]))
            for k in range(1, 141)]                          # 14,000 readings, each pack 10 min older
    ok, over = split([live, *back], 20.0, 2000)
    assert len(over) >= 30 and live in ok                    # the allowance (10,000) runs dry
    with worker_thread(db_url, broker.url):
        publish_all(make_client(broker.url, "older-pub"), [live, *back])
        assert_limited(db_url, ok, over)


# --- the default limit and the simulated fleet ----------------------------------------------

def test_default_rate_limit_never_touches_any_simulated_kind_even_ten_times_tighter() -> None:
    """Two simulated days of every kind (road vehicles included, with the node shell's
    duplicates and re-ordering): the default limit, and one ten times tighter, refuse nothing."""
    import datetime as dt

    from contract.decode import PackError
    from ingest.ratelimit import DEFAULT_BURST, DEFAULT_RATE
    from simulators.engine import Simulation
    from simulators.fleet import build_fleet
    from simulators.scenario import load_scenario

    fleet = build_fleet(load_scenario("tiny"), counts="bins=20,air=3,noise=3,road=3", seed=3)
    start = int(dt.datetime(2026, 1, 5, tzinfo=dt.UTC).timestamp() * 1000)        # a Monday: road shifts
    default, tight = RateLimiter(), RateLimiter(DEFAULT_RATE / 10, DEFAULT_BURST // 10)
    packs, kinds = 0, set()
    for b in Simulation(fleet, start_ms=start, days=2, seed=3).batches():
        for m in b.messages:
            if not m.topic.endswith("/up"):
                continue
            tenant, dev, _ = v1.parse_topic(m.topic)
            try:
                p = decode(m.payload, device_id=dev, received_ms=m.send_ms)
            except PackError:
                continue                 # the shell's deliberately malformed packs
            if len(p):
                packs += 1
                kinds.add(dev.split("-")[0])
                assert default.allow(f"{tenant}/{dev}", max(p.times_ms), len(p))
                assert tight.allow(f"{tenant}/{dev}", max(p.times_ms), len(p)), f"{dev} at {max(p.times_ms)}"
    assert packs > 1000 and kinds == {"bin", "air", "noise", "road"}
