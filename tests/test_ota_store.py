"""Rollouts in a real PostgreSQL (0004_ota.sql), and on a real Mosquitto: retained
notices on cmd, acks in, halt on failures, notices withdrawn."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner

from streetsense.ota import bundle as B
from streetsense.ota import keys as K
from streetsense.ota import rollout as R
from streetsense.ota.cli import ota_app
from streetsense.ota.service import follow
from streetsense.ota.store import OtaStore, StoreError

TENANT = "leeds"


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    d = tmp_path_factory.mktemp("k")
    K.generate(d / "c.pem")
    return K.load_private(d / "c.pem")


def make_bundle(tmp_path, key, version="2.0.0", board="esp32", image=None) -> B.Bundle:
    files = {"ss/__init__.mpy": b"M\x06" + version.encode(), "ss/app.mpy": b"M\x06app" * 100}
    return B.make_bundle(files, tmp_path / f"{board}-{version}", key, board=board, version=version,
                         arch="bytecode", image=image)


def fleet(conn, n_esp=40, n_pico=5):
    conn.execute("INSERT INTO tenants (id, name) VALUES (%s, 'Leeds City Council'), ('york', 'York')", (TENANT,))
    rows = [(TENANT, f"bin-{i:04d}", "bin_fill", "esp32" if i % 3 else "esp32s3", "active") for i in range(n_esp)]
    rows += [(TENANT, f"air-{i:04d}", "air", "picow", "active") for i in range(n_pico)]
    rows += [(TENANT, "bin-9999", "bin_fill", "esp32", "retired"), ("york", "bin-0001", "bin_fill", "esp32", "active")]
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO devices (tenant, device_id, kind, board, status) VALUES (%s, %s, %s, %s, %s)", rows)
    conn.commit()


@pytest.fixture
def store(db_url):
    with psycopg.connect(db_url) as conn:
        fleet(conn)
        yield OtaStore(conn)


def ack(rid, state, version="2.0.0", **kw):
    return dict({"ota": version, "id": rid, "state": state, "ok": state not in ("failed", "rolled_back"),
                 "fw": "0.1.0"}, **kw)


def test_migration_creates_the_tables(db_url):
    with psycopg.connect(db_url) as c:
        names = {r[0] for r in c.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"firmware_releases", "ota_rollouts", "ota_device_status", "ota_groups", "ota_events"} <= names
        assert c.execute("SELECT name FROM schema_migrations WHERE version = 4").fetchone() == ("ota",)


def test_release_is_verified_and_idempotent(store, tmp_path, key):
    b = make_bundle(tmp_path, key)
    pub = K.public_bytes(key)
    rid = store.add_release(TENANT, b, "http://ota.example.org/esp32/2.0.0", [pub])
    assert store.add_release(TENANT, b, "http://ota.example.org/esp32/2.0.0/", [pub]) == rid
    rel = store.release(rid)
    assert rel.url.endswith("/2.0.0/") and rel.manifest_sha256.hex() == b.sha256 and not rel.image
    assert rel.notice(9) == b.notice(rel.url, 9)
    forged = B.make_bundle({"ss/app.mpy": b"different"}, tmp_path / "f", key, board="esp32", version="2.0.0",
                           arch="bytecode")
    with pytest.raises(StoreError, match="different manifest"):
        store.add_release(TENANT, forged, "http://ota.example.org/esp32/2.0.0/", [pub])
    from streetsense.ota.verify import VerifyError
    with pytest.raises(VerifyError):
        store.add_release(TENANT, make_bundle(tmp_path / "w", key, version="2.0.9"), "http://x/",
                          [K.public_bytes(K.Ed25519PrivateKey.generate())])


def test_rollout_waves_halt_resume_abort(store, tmp_path, key):
    b = make_bundle(tmp_path, key)
    rel = store.add_release(TENANT, b, "http://ota.example.org/esp32/2.0.0/", [K.public_bytes(key)])
    store.set_group(TENANT, "canary", ["bin-0001", "bin-0002", "bin-0003"])
    plan = R.Plan((R.Wave(100, ("canary",)), R.Wave(25), R.Wave(100)), max_failure_rate=0.2, min_reports=3,
                  advance_at=1.0)
    rid = store.start(rel, plan)
    s = store.status(rid)
    # the ESP32 profile serves esp32 and esp32s3 boards; picow, retired and other tenants stay out
    assert s["devices"] == 40 and s["status"] == "running" and s["wave"] == 0
    assert [w["size"] for w in s["stats"]][0] == 3
    expect = R.assign(R.Plan(plan.waves, salt="leeds:esp32:2.0.0"),
                      {f"bin-{i:04d}": (("canary",) if 1 <= i <= 3 else ()) for i in range(40)})
    assert [w["size"] for w in s["stats"]] == [Counter(expect.values())[i] for i in range(3)]
    with pytest.raises(StoreError, match="live rollout"):
        store.start(rel, plan)

    notes = dict(store.notices(rid))
    payload = json.loads(notes["ss/v1/leeds/bin-0001/cmd"])
    assert payload == b.notice("http://ota.example.org/esp32/2.0.0/", rid)
    assert sum(1 for p in notes.values() if p) == 3 and len(notes) == 40
    assert store.status(rid)["by_state"]["notified"] == 3

    # canaries all good -> wave 2 opens
    for d in ("bin-0001", "bin-0002", "bin-0003"):
        store.record_ack(TENANT, d, ack(rid, "downloading"))
        st = store.record_ack(TENANT, d, ack(rid, "running", fw="2.0.0"))
    assert (st.status, st.wave) == ("running", 1)
    wave1 = sorted(d for d, w in expect.items() if w == 1)
    assert len(wave1) == 10                         # deterministic: the salt is tenant:board:version
    # acks for another rollout, another version, an unknown device or a non-OTA ack are ignored
    assert store.record_ack(TENANT, wave1[0], ack(rid + 1, "failed")) is None
    assert store.record_ack(TENANT, wave1[0], ack(rid, "failed", version="9.9")) is None
    assert store.record_ack(TENANT, "nope", ack(rid, "failed")) is None
    assert store.record_ack(TENANT, wave1[0], {"cfg": 3, "ok": True}) is None
    # a retried failure does not count; 2 of 10 is not over 20 %, 2 of 3 reports is
    st = store.record_ack(TENANT, wave1[0], ack(rid, "failed", final=False, tries=1, error="http: cut short"))
    assert st.status == "running"
    st = store.record_ack(TENANT, wave1[0], ack(rid, "rolled_back", error="3 boots without a publish"))
    st = store.record_ack(TENANT, wave1[1], ack(rid, "failed", final=True, tries=3, error="hash mismatch: ss/app.mpy"))
    assert st.status == "running"
    st = store.record_ack(TENANT, wave1[2], ack(rid, "running"))
    assert st.status == "halted" and st.wave == 1 and st.reason == "wave 2: 2 of 3 reported failed (67% > 20%)"
    s = store.status(rid)
    assert s["failures"] == [{"device": wave1[0], "state": "rolled_back", "error": "3 boots without a publish"},
                             {"device": wave1[1], "state": "failed", "error": "hash mismatch: ss/app.mpy"}]
    # halted: nobody has the notice; late progress acks do not undo results
    assert all(p == b"" for _, p in store.notices(rid))
    store.record_ack(TENANT, wave1[0], ack(rid, "downloading"))
    assert store.status(rid)["failures"][0]["state"] == "rolled_back"
    n_events = store.conn.execute("SELECT count(*) FROM ota_events WHERE rollout_id = %s", (rid,)).fetchone()[0]
    assert n_events == 11

    st = store.resume(rid)
    assert st.status == "running" and st.excused == {wave1[0], wave1[1]}
    assert sum(1 for _, p in store.notices(rid) if p) == 3 + len(wave1)
    for d in wave1[3:]:
        st = store.record_ack(TENANT, d, ack(rid, "running"))
    assert st.wave == 2 and st.status == "running"
    st = store.abort(rid, "release withdrawn")
    assert st.status == "aborted" and all(p == b"" for _, p in store.notices(rid))
    with pytest.raises(R.RolloutError):
        store.halt(rid)
    assert store.rollouts(TENANT) == [{"id": rid, "tenant": TENANT, "board": "esp32", "version": "2.0.0",
                                       "status": "aborted", "wave": 2}]
    # aborted: the board is free for the next rollout
    rel2 = store.add_release(TENANT, make_bundle(tmp_path, key, "2.0.1"), "http://ota.example.org/esp32/2.0.1/",
                             [K.public_bytes(key)])
    assert store.start(rel2, R.Plan((R.Wave(100),))) > rid


def test_image_release_reaches_exactly_its_board(store, tmp_path, key):
    b = make_bundle(tmp_path, key, image=b"\xe9" + bytes(4000))
    rel = store.add_release(TENANT, b, "http://ota.example.org/img/", [K.public_bytes(key)])
    rid = store.start(rel, R.Plan((R.Wave(100),)))
    assert store.status(rid)["devices"] == sum(1 for i in range(40) if i % 3)       # esp32, not esp32s3
    p = make_bundle(tmp_path, key, board="picow")
    rid2 = store.start(store.add_release(TENANT, p, "http://ota.example.org/picow/", [K.public_bytes(key)]),
                       R.Plan((R.Wave(100),)))
    assert store.status(rid2)["devices"] == 5


def test_cli_rollout(db_url, tmp_path):
    with psycopg.connect(db_url) as conn:
        fleet(conn)
    r = CliRunner()
    assert r.invoke(ota_app, ["keygen", "--out", str(tmp_path / "k.pem")]).exit_code == 0
    key = K.load_private(tmp_path / "k.pem")
    b = make_bundle(tmp_path, key)
    db = ["--database-url", db_url]
    res = r.invoke(ota_app, ["rollout", "start", "--tenant", TENANT, "--bundle", str(b.path), "--url",
                             "http://ota.example.org/esp32/2.0.0/", "--pub", str(tmp_path / "k.pub"),
                             "--wave", "10", "--wave", "100", *db])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    rid = out["id"]
    assert out["waves"] == ["10%", "100%"] and out["devices"] == 40 and out["published"] is None
    res = r.invoke(ota_app, ["rollout", "halt", str(rid), "--reason", "smoke", *db])
    assert json.loads(res.output)["status"] == "halted"
    assert json.loads(r.invoke(ota_app, ["rollout", "status", str(rid), *db]).output)["reason"] == "smoke"
    assert json.loads(r.invoke(ota_app, ["rollout", "resume", str(rid), *db]).output)["status"] == "running"
    res = r.invoke(ota_app, ["rollout", "resume", str(rid), *db])
    assert res.exit_code == 1 and "not halted" in res.output
    # a tampered bundle never becomes a release
    (b.path / "files/ss/app.mpy").write_bytes(b"x")
    res = r.invoke(ota_app, ["rollout", "start", "--tenant", TENANT, "--bundle", str(b.path), "--url",
                             "http://ota.example.org/x/", "--pub", str(tmp_path / "k.pub"), *db])
    assert res.exit_code == 1 and "hash mismatch" in res.output


# --- on a real broker ---------------------------------------------------------------------------

def _retained(port: int, timeout: float = 5.0) -> dict[str, bytes]:
    """Every retained message on the tenant's cmd topics (waits until they stop coming)."""
    got: dict[str, bytes] = {}
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="probe", protocol=mqtt.MQTTv5)
    c.on_message = lambda _c, _u, m: got.__setitem__(m.topic, m.payload)
    c.connect("127.0.0.1", port)
    c.subscribe("ss/v1/leeds/+/cmd", qos=1)
    deadline = time.monotonic() + timeout
    settle = None
    while time.monotonic() < deadline:
        c.loop(timeout=0.05)
        if settle is None and got:
            settle = time.monotonic() + 0.3
        if settle and time.monotonic() > settle:
            break
    c.disconnect()
    return got


def test_follow_on_mosquitto_halts_and_withdraws(db_url, broker, tmp_path, key):
    with psycopg.connect(db_url) as conn:
        fleet(conn)
        s = OtaStore(conn)
        rel = s.add_release(TENANT, make_bundle(tmp_path, key), "http://ota.example.org/esp32/2.0.0/",
                            [K.public_bytes(key)])
        rid = s.start(rel, R.Plan((R.Wave(30), R.Wave(100)), max_failure_rate=0.25, min_reports=3, advance_at=0.5))
        first = sorted(d for d, w in R.assign(R.Plan((R.Wave(30), R.Wave(100)), salt="leeds:esp32:2.0.0"),
                                              {f"bin-{i:04d}": () for i in range(40)}).items() if w == 0)
    port = broker.port
    stop = threading.Event()
    changes: list[R.State] = []
    t = threading.Thread(target=follow, args=(db_url, rid, broker.url, stop), kwargs={"on_change": changes.append})
    t.start()
    try:
        deadline = time.monotonic() + 10
        while not changes and time.monotonic() < deadline:
            time.sleep(0.05)
        got = _retained(port)
        assert {t for t, p in got.items() if p} == {f"ss/v1/leeds/{d}/cmd" for d in first}
        # devices answer on ack like ss/ota.py does
        dev = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="nodes", protocol=mqtt.MQTTv5)
        dev.connect("127.0.0.1", port)
        half = len(first) // 2 + 1
        for d in first[:half]:
            dev.publish(f"ss/v1/leeds/{d}/ack", json.dumps(ack(rid, "running", fw="2.0.0")), qos=1)
        deadline = time.monotonic() + 10
        while (not changes or changes[-1].wave < 1) and time.monotonic() < deadline:
            dev.loop(timeout=0.05)
        assert changes[-1].wave == 1 and changes[-1].status == "running"
        time.sleep(0.3)
        assert sum(1 for p in _retained(port).values() if p) == 40       # wave 2 open: everyone
        wave2 = [f"bin-{i:04d}" for i in range(40) if f"bin-{i:04d}" not in first]
        for d in wave2[:3]:
            dev.publish(f"ss/v1/leeds/{d}/ack", json.dumps(ack(rid, "rolled_back", error="crashed")), qos=1)
        deadline = time.monotonic() + 10
        while changes[-1].status != "halted" and time.monotonic() < deadline:
            dev.loop(timeout=0.05)
        assert changes[-1].status == "halted" and changes[-1].reason.startswith("wave 2: 3 of 3")
        time.sleep(0.3)
        assert not any(_retained(port).values())                          # withdrawn everywhere
        dev.disconnect()
    finally:
        stop.set()
        t.join(15)
    with psycopg.connect(db_url) as conn:
        assert OtaStore(conn).status(rid)["status"] == "halted"

