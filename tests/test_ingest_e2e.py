"""End to end through a real Mosquitto into a real PostgreSQL.

Publish → broker → ingest worker → rows; duplicates and re-ordering; malformed
input to quarantine; a worker killed with SIGKILL mid-stream; a broker restart
mid-stream. Every test compares the database with exactly what was sent.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from contract import v1
from ingest.worker import IngestConfig, IngestWorker
from streetsense.mqtt import make_client, publish_all

TENANT = "testtown"
BASE = (int(time.time()) // 3600 - 72) * 3600  # three days ago, on the hour


def register(db_url: str, n: int, kind: str = "bin_fill") -> list[str]:
    ids = [f"bin-{i:04d}" for i in range(n)]
    with psycopg.connect(db_url) as c:
        c.execute("INSERT INTO tenants (id, name) VALUES (%s, 'Test Town') ON CONFLICT DO NOTHING", (TENANT,))
        c.cursor().executemany("INSERT INTO devices (tenant, device_id, kind) VALUES (%s, %s, %s)",
                               [(TENANT, d, kind) for d in [*ids, "probe"]])
    return ids


def make_packs(devices: list[str], packs_per_device: int, per_pack: int = 20) -> tuple[list[tuple[str, bytes]], set]:
    """Messages and the exact set of (device, metric id, epoch ms, value) they carry."""
    msgs, expected = [], set()
    fill = v1.metric("fill")
    for d in devices:
        for seq in range(packs_per_device):
            recs = []
            for k in range(per_pack):
                i = seq * per_pack + k
                q = (i * 37 + len(d)) % 1000
                recs.append(("fill", q, i * 60_000))
                expected.add((d, fill[0], BASE * 1000 + i * 60_000, q / 1000))
            msgs.append((v1.topic(TENANT, d, v1.UP), v1.encode_json(d, BASE, seq, recs)))
    return msgs, expected


def stored(db_url: str) -> list[tuple]:
    with psycopg.connect(db_url) as c:
        return c.execute("""SELECT d.device_id, r.metric, (extract(epoch FROM r.time) * 1000)::bigint, r.value
                            FROM readings r JOIN devices d ON d.id = r.device_id
                            WHERE d.device_id <> 'probe'""").fetchall()


def wait_count(db_url: str, n: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    got = -1
    while time.monotonic() < deadline:
        with psycopg.connect(db_url) as c:
            got = c.execute("""SELECT count(*) FROM readings r JOIN devices d ON d.id = r.device_id
                               WHERE d.device_id <> 'probe'""").fetchone()[0]
        if got >= n:
            return got
        time.sleep(0.1)
    return got


def wait_subscribed(db_url: str, mqtt_url: str, timeout: float = 60, protocol: int = 5, tenant: str = TENANT) -> None:
    """Until the worker's subscription exists the broker has nobody to queue for;
    a probe reading (device 'probe', registered with the others) that arrives in
    the database proves it does."""
    pub = make_client(mqtt_url, "probe", session=False, protocol=protocol)
    deadline = time.monotonic() + timeout
    seq = 0
    while time.monotonic() < deadline:
        publish_all(pub, [(v1.topic(tenant, "probe", v1.UP), v1.encode_json("probe", BASE, seq, [("fill", 1, seq)]))])
        seq += 1
        time.sleep(0.3)
        with psycopg.connect(db_url) as c:
            if c.execute("SELECT 1 FROM readings r JOIN devices d ON d.id = r.device_id "
                         "WHERE d.device_id = 'probe' LIMIT 1").fetchone():
                pub.disconnect()
                return
    raise TimeoutError("ingest worker did not subscribe")


@contextmanager
def worker_thread(db_url: str, mqtt_url: str, probe_tenant: str = TENANT, **kw) -> Iterator[IngestWorker]:
    w = IngestWorker(IngestConfig(db_url, mqtt_url, client_id=kw.pop("client_id", "ingest-test"), **kw))
    stop = threading.Event()
    t = threading.Thread(target=w.run, args=(stop,), daemon=True)
    t.start()
    wait_subscribed(db_url, mqtt_url, protocol=kw.get("protocol", 5), tenant=probe_tenant)
    try:
        yield w
    finally:
        stop.set()
        t.join(30)
        assert not t.is_alive(), "worker did not stop"


def worker_process(db_url: str, mqtt_url: str, log: Path) -> subprocess.Popen:
    env = dict(os.environ, DATABASE_URL=db_url, MQTT_URL=mqtt_url, STREETSENSE_INGEST_BATCH_READINGS="500")
    return subprocess.Popen([sys.executable, "-c", "from streetsense.cli import app; app()", "ingest", "run"],
                            env=env, stdout=subprocess.DEVNULL, stderr=log.open("ab"))


def test_publish_to_rows_exactly(db_url, broker):
    devices = register(db_url, 20)
    msgs, expected = make_packs(devices, 10)
    with worker_thread(db_url, broker.url) as w:
        pub = make_client(broker.url, "dev-pub")
        publish_all(pub, msgs)
        assert wait_count(db_url, len(expected)) == len(expected)
    assert set(stored(db_url)) == expected
    assert w.stats["quarantined"] == 0
    with psycopg.connect(db_url) as c:
        # batch counters: every (device, seq) once, no gaps
        assert c.execute("SELECT count(*) FROM batches b JOIN devices d ON d.id = b.device_id "
                         "WHERE d.device_id LIKE 'bin-%'").fetchone()[0] == len(msgs)
        assert c.execute("SELECT count(*) FROM devices WHERE last_seq = 9 AND last_seen IS NOT NULL AND device_id LIKE 'bin-%'").fetchone()[0] == 20


def test_duplicates_and_reordering_store_each_reading_once(db_url, broker):
    devices = register(db_url, 10)
    msgs, expected = make_packs(devices, 8)
    noisy = msgs + random.Random(1).sample(msgs, 30)   # 30 redelivered packs
    random.Random(2).shuffle(noisy)                    # out of order
    with worker_thread(db_url, broker.url) as w:
        publish_all(make_client(broker.url, "dev-pub"), noisy)
        wait_count(db_url, len(expected))
        time.sleep(0.5)
    rows = stored(db_url)
    assert len(rows) == len(expected) and set(rows) == expected
    assert w.stats["duplicates"] == 30 * 20
    with psycopg.connect(db_url) as c:
        assert c.execute("SELECT count(*) FROM batches b JOIN devices d ON d.id = b.device_id "
                         "WHERE d.device_id LIKE 'bin-%'").fetchone()[0] == len(msgs)


def test_malformed_input_is_quarantined_with_reasons_and_worker_survives(db_url, broker):
    devices = register(db_url, 2)
    good, expected = make_packs(devices, 2)
    d = devices[0]
    bad = [
        (v1.topic(TENANT, d, v1.UP), b"{not json"),
        (v1.topic(TENANT, d, v1.UP), b"\x9f\x01"),
        (v1.topic(TENANT, "ghost-1", v1.UP), v1.encode_json("ghost-1", BASE, 1, [("fill", 1, 0)])),
        (v1.topic("othertown", d, v1.UP), v1.encode_json(d, BASE, 1, [("fill", 1, 0)])),
        (v1.topic(TENANT, d, v1.UP), v1.encode_json("bin-9999", BASE, 1, [("fill", 1, 0)])),
        (v1.topic(TENANT, d, v1.UP), v1.encode_json(d, BASE, 99, [("fill", 5000, 0), ("temp", 2100, 0)])),
        (v1.topic(TENANT, d, v1.UP), v1.encode_json(d, BASE + 86400 * 30, 98, [("fill", 100, 0)])),
        (v1.topic(TENANT, d, v1.UP), v1.encode_json(d, 946684800, 97, [("fill", 100, 0)])),
        (v1.topic(TENANT, d, v1.STATUS), b'{"state":"dancing","fw":"1","t":0}'),
    ]
    mixed = good[:2] + bad + good[2:]
    with worker_thread(db_url, broker.url):
        publish_all(make_client(broker.url, "dev-pub"), mixed)
        wait_count(db_url, len(expected) + 1)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with psycopg.connect(db_url) as c:
                if c.execute("SELECT count(*) FROM quarantine").fetchone()[0] >= len(bad):
                    break
            time.sleep(0.1)
    with psycopg.connect(db_url) as c:
        q = c.execute("SELECT topic, reason_code, reason, payload FROM quarantine ORDER BY id").fetchall()
        temp = c.execute("SELECT value FROM readings WHERE metric = %s", (v1.metric("temp")[0],)).fetchall()
    reasons = sorted(r[1] for r in q)
    assert reasons == sorted(["bad_encoding", "bad_encoding", "unknown_device", "unknown_device", "bad_base_name",
                              "records_rejected", "records_rejected", "records_rejected", "bad_status"])
    assert all(r[2] for r in q), "every quarantine row says why"
    assert {bytes(r[3]) for r in q} == {p for _, p in bad}, "raw bytes kept"
    # the partly bad pack kept its good record; nothing else leaked in
    assert temp == [(21.0,)]
    assert set(stored(db_url)) - {(d, v1.metric("temp")[0], BASE * 1000, 21.0)} == expected


def test_killed_worker_loses_and_doubles_nothing(db_url, broker, tmp_path):
    log = tmp_path / "worker.log"
    devices = register(db_url, 50)
    msgs, expected = make_packs(devices, 40)    # 2,000 packs, 40,000 readings
    proc = worker_process(db_url, broker.url, log)
    wait_subscribed(db_url, broker.url)
    pub = make_client(broker.url, "dev-pub")
    half = len(msgs) // 2
    publish_all(pub, msgs[:half])
    # kill -9 while it is busy with the first half
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with psycopg.connect(db_url) as c:
            n = c.execute("SELECT count(*) FROM readings").fetchone()[0]
        if n > 0:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = n
    publish_all(pub, msgs[half:])          # broker queues these for the offline session
    proc = worker_process(db_url, broker.url, log)
    try:
        got = wait_count(db_url, len(expected), timeout=90)
        time.sleep(1.0)
    finally:
        proc.terminate()
        proc.wait(30)
    rows = stored(db_url)
    assert 0 < killed_at < len(expected), f"the kill landed mid-stream; worker log:\n{log.read_text()[-3000:]}"
    assert got == len(expected), f"worker log:\n{log.read_text()[-3000:]}"
    assert len(rows) == len(expected) and set(rows) == expected


def test_broker_restart_mid_stream_loses_nothing(db_url, broker):
    devices = register(db_url, 20)
    msgs, expected = make_packs(devices, 30)    # 600 packs
    with worker_thread(db_url, broker.url, batch_readings=300):
        pub = make_client(broker.url, "dev-pub")
        restarted = threading.Event()

        def restart_when(i: int, _t: float) -> None:
            if i == 250 and not restarted.is_set():
                restarted.set()
                broker.restart()          # graceful: mosquitto saves its queues, then comes back

        publish_all(pub, msgs, rate=400, on_sent=restart_when)
        assert restarted.is_set()
        got = wait_count(db_url, len(expected), timeout=90)
    rows = stored(db_url)
    assert got == len(expected)
    assert len(rows) == len(expected) and set(rows) == expected


def test_quarantined_unknown_device_replayed_after_registration(db_url, broker):
    from ingest.quarantine import replay, stats

    register(db_url, 1)
    late = "bin-late"
    msgs, expected = make_packs([late], 3)
    with worker_thread(db_url, broker.url):
        publish_all(make_client(broker.url, "dev-pub"), msgs)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with psycopg.connect(db_url) as c:
                if c.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 3:
                    break
            time.sleep(0.1)
        with psycopg.connect(db_url) as c:
            assert [s["reason_code"] for s in stats(c)] == ["unknown_device"]
            c.execute("INSERT INTO devices (tenant, device_id, kind) VALUES (%s, %s, 'bin_fill')", (TENANT, late))
            c.commit()
            time.sleep(1.1)  # the worker reloads its registry at most once a second
            assert replay(c, broker.url, reason_code="unknown_device") == 3
        assert wait_count(db_url, len(expected)) == len(expected)
    assert set(stored(db_url)) == expected
    with psycopg.connect(db_url) as c:
        assert stats(c) == []
        assert c.execute("SELECT count(*) FROM quarantine WHERE replayed_at IS NOT NULL").fetchone()[0] == 3


def test_embedded_amqtt_fallback_when_mosquitto_is_missing(db_url, tmp_path, monkeypatch):
    """No mosquitto on PATH: the embedded default is amqtt in-process (MQTT 3.1.1,
    so one worker with a plain persistent subscription)."""
    import paho.mqtt.client as mqtt

    from streetsense import embedded

    monkeypatch.setattr(embedded.MosquittoBroker, "available", classmethod(lambda cls: False))
    devices = register(db_url, 5)
    msgs, expected = make_packs(devices, 4)
    with embedded.services(db_url, None, tmp_path) as svc:
        assert isinstance(svc.broker, embedded.AmqttBroker) and not svc.shared_subscriptions
        with worker_thread(db_url, svc.mqtt_url, shared=False, protocol=mqtt.MQTTv311):
            publish_all(make_client(svc.mqtt_url, "dev-pub", protocol=mqtt.MQTTv311), msgs)
            assert wait_count(db_url, len(expected)) == len(expected)
    assert set(stored(db_url)) == expected
