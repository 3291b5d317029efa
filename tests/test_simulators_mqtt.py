"""Simulators against a real (private) Mosquitto, the CLI, the bench, and the truth table in PostgreSQL."""

from __future__ import annotations

import collections
import json
import threading
import time

import paho.mqtt.client as mqtt
import psycopg
import pytest
import typer
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner

from contract import v1
from contract.decode import decode
from simulators.bench import bench_simulator
from simulators.cli import simulate_command
from simulators.engine import Simulation
from simulators.expect import TeePublisher, expected_readings
from simulators.fleet import build_fleet
from simulators.publisher import MqttPublisher, make_publisher
from simulators.runner import run
from simulators.scenario import load_scenario
from simulators.timebase import parse_start
from simulators.truth import TRUTH_DDL, TruthEvent, TruthWriter, insert_truth, read_jsonl
from tests.support.mosquitto import mosquitto_fixture

sim_broker = mosquitto_fixture(scope="module", name="sim_broker")

START = parse_start("2026-01-05")


class Collector:
    """An in-process subscriber that keeps every message."""

    def __init__(self, url_port: int, topic: str) -> None:
        self.msgs: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        c.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe(topic, qos=1)
        c.on_subscribe = lambda *a: self.ready.set()
        c.on_message = self._on
        c.connect("127.0.0.1", url_port)
        c.loop_start()
        assert self.ready.wait(10)
        self.c = c

    def _on(self, cl, u, m) -> None:
        with self.lock:
            self.msgs.append((m.topic, bytes(m.payload), bool(m.retain)))

    def wait(self, n: int, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.msgs) >= n:
                    return len(self.msgs)
            time.sleep(0.05)
        return len(self.msgs)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def test_every_message_arrives_byte_exact_through_the_broker(sim_broker):
    col = Collector(sim_broker.port, "ss/v1/tiny-town/#")
    try:
        sim = Simulation(build_fleet(load_scenario("tiny")), start_ms=START, days=0.5, node={"malformed_rate": 0.01})
        sent: list = []
        pub = TeePublisher(MqttPublisher(sim_broker.url), sent)
        st = run(sim, pub)
        assert st.acked and st.messages == len(sent) > 1000
        assert col.wait(len(sent)) == len(sent)
        got = collections.Counter((t, p) for t, p, _ in col.msgs)
        assert got == collections.Counter((t, p) for _, t, p, _, _ in sent)
        # what ingest should store: decoded from what was received equals decoded from what was sent
        exp_sent = expected_readings(sent, sim.fleet)
        exp_got = expected_readings([(None, t, p) for t, p, _ in col.msgs], sim.fleet)
        assert exp_sent.readings == exp_got.readings and len(exp_sent.readings) > 10_000
        assert exp_sent.malformed == exp_got.malformed > 0
        pub.close()
    finally:
        col.close()
    # retained status: a late subscriber gets one status per device that reported
    late = Collector(sim_broker.port, "ss/v1/tiny-town/+/status")
    try:
        n_dev = len({t for _, t, _, _, _ in sent if t.endswith("/status")})
        assert late.wait(n_dev, timeout=10) == n_dev
        for topic, payload, retained in late.msgs:
            assert retained and json.loads(payload)["state"] in ("online", "sleeping", "offline")
    finally:
        late.close()


def test_real_time_pacing(sim_broker):
    sim = Simulation(build_fleet(load_scenario("tiny")), start_ms=START + 7 * 3600_000, days=600 / 86400)
    pub = MqttPublisher(sim_broker.url)
    t0 = time.monotonic()
    st = run(sim, pub, speed=400)            # 600 simulated s at 400x = 1.5 s
    wall = time.monotonic() - t0
    pub.close()
    assert st.messages > 10
    assert 1.0 < wall < 6.0


def test_cli_simulate(sim_broker, tmp_path):
    app = typer.Typer()
    app.command("simulate")(simulate_command)
    app.command("noop")(lambda: None)
    out = tmp_path / "truth.jsonl"
    devs = tmp_path / "devices.jsonl"
    r = CliRunner().invoke(app, ["simulate", "--scenario", "tiny", "--days", "0.5", "--speed", "max",
                                 "--devices", "bins=30,air=2,noise=2,road=1", "--seed", "5", "--start", "2026-01-05",
                                 "--mqtt-url", sim_broker.url, "--truth", str(out), "--devices-out", str(devs),
                                 "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["messages"] > 100 and res["acked"] and res["devices"] == 35
    assert res["devices_by_kind"] == {"bin_fill": 30, "air": 2, "noise": 2, "road": 1}
    events = read_jsonl(out)
    assert len(events) == res["truth_events"] > 0
    assert len(devs.read_text().splitlines()) == 35
    r2 = CliRunner().invoke(app, ["simulate", "--scenario", "tiny", "--days", "0.5", "--devices",
                                  "bins=30,air=2,noise=2,road=1", "--seed", "5", "--start", "2026-01-05",
                                  "--mqtt-url", "none", "--json"])
    assert r2.exit_code == 0, r2.output
    assert json.loads(r2.output)["messages"] == res["messages"]          # same seed, same run
    r3 = CliRunner().invoke(app, ["simulate", "--scenario", "no-such-town", "--mqtt-url", "none"])
    assert r3.exit_code == 2


def test_publish_targets():
    assert make_publisher("none").stats["published"] == 0
    with pytest.raises(ValueError):
        make_publisher("http://x")


def test_bench_reports_the_figures(sim_broker):
    res = bench_simulator(sim_broker.url, scale_devices=1500, scale_days=0.1, long_bins=100, long_days=0.25,
                          raw_messages=3000)
    raw, scale, long_ = res["raw"], res["scale"], res["long"]
    assert raw["all_received"] and raw["runs"] == 5 and raw["delivered_per_s_median"] > 0
    assert scale["devices"] == 1500 and scale["received"] == scale["messages"] > 0
    assert scale["readings_per_s"] > scale["messages_per_s"] > 0 and scale["vs_raw_broker_median"] > 0
    assert res["models"]["messages"] == scale["messages"]
    assert long_["sim_days_per_min"] > 0 and long_["all_acked"]
    json.dumps(res)


def test_truth_jsonl_and_table(fresh_db, tmp_path):
    sim = Simulation(build_fleet(load_scenario("tiny")), start_ms=START, days=1.0)
    truth = [e for b in sim.batches() for e in b.truth]
    p = tmp_path / "t.jsonl"
    with TruthWriter(p) as w:
        w.write_many(truth)
    back = read_jsonl(p)
    assert back == [TruthEvent(e.kind, e.entity, e.tenant, e.start_ms, e.end_ms, e.details, e.scenario) for e in truth]
    with psycopg.connect(fresh_db) as conn:
        conn.execute(TRUTH_DDL)
        n = insert_truth(conn, truth)
        conn.commit()
        assert n == len(truth)
        rows = conn.execute("SELECT kind, count(*) FROM truth_events WHERE scenario = %s GROUP BY kind",
                            ("tiny",)).fetchall()
        assert dict(rows) == dict(collections.Counter(e.kind for e in truth))
        first = truth[0]
        got = conn.execute("SELECT entity, tenant, start_ts, details FROM truth_events ORDER BY id LIMIT 1").fetchone()
        assert got[0] == first.entity and got[1] == "tiny-town"
        assert int(got[2].timestamp() * 1000) == first.start_ms
        assert got[3] == json.loads(json.dumps(first.details))
        ended = conn.execute("SELECT count(*) FROM truth_events WHERE end_ts IS NOT NULL").fetchone()[0]
        assert ended == sum(1 for e in truth if e.end_ms is not None)


def test_decoded_values_follow_the_contract_units(sim_broker):
    """Spot check of physical ranges after transit: fill, PM, noise levels, bump positions."""
    sim = Simulation(build_fleet(load_scenario("tiny")), start_ms=START + 6 * 3600_000, days=0.5)
    kinds = {d.device_id: d.kind for d in sim.fleet.devices}
    vals = collections.defaultdict(list)
    for m in sim.messages():
        _, dev, ch = v1.parse_topic(m.topic)
        if ch == "up":
            for r in decode(m.payload, device_id=dev, received_ms=m.send_ms, kind=kinds[dev]).readings:
                vals[r.metric].append(r.value)
    assert -1 <= min(vals["fill"]) and max(vals["fill"]) <= 1.0
    assert 0 < sorted(vals["pm25"])[len(vals["pm25"]) // 2] < 60
    assert 35 < min(vals["laeq"]) and max(vals["laeq"]) < 100
    assert all(52.9 < x < 53.0 for x in vals["lat"]) and all(4.0 <= x < 60 for x in vals["bump_g"])
    assert all(3.0 <= x <= 4.3 or 12 < x < 15 for x in vals["bat_v"])


def test_register_fleet_into_the_ingest_schema(db_url):
    from simulators.register import register_fleet

    fleet = build_fleet(load_scenario("tiny"))
    with psycopg.connect(db_url) as conn:
        assert register_fleet(conn, fleet) == len(fleet.devices)
        register_fleet(conn, fleet)                      # idempotent
        conn.commit()
        n = conn.execute("SELECT count(*) FROM devices WHERE tenant = %s", (fleet.tenant,)).fetchone()[0]
        assert n == len(fleet.devices)
        hh = conn.execute("SELECT count(*) FROM assets WHERE tenant = %s AND bin_kind = 'household' "
                          "AND household LIKE 'hh-%%'", (fleet.tenant,)).fetchone()[0]
        assert hh == sum(1 for d in fleet.devices if d.kind == "bin_fill" and d.asset.bin_kind == "household")
