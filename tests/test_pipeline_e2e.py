"""The whole path with the simulator's fleet: the firmware's encoder → real
Mosquitto → ingest worker → PostgreSQL. The database must hold exactly the
readings the contract decoder finds in what was published (duplicates and
out-of-order delivery included), and every malformed pack must be quarantined."""

from __future__ import annotations

import time

import psycopg

from contract import v1
from contract.decode import PackError, decode
from simulators.engine import Simulation
from simulators.expect import expected_readings
from simulators.fleet import build_fleet
from simulators.publisher import ListPublisher, MqttPublisher
from simulators.register import register_fleet
from simulators.runner import run
from simulators.scenario import load_scenario
from tests.test_ingest_e2e import worker_thread


def test_simulated_fleet_stored_exactly(db_url, broker):
    fleet = build_fleet(load_scenario("tiny"), seed=7)
    end = (int(time.time()) // 3600 - 2) * 3600 * 1000
    sim = Simulation(fleet, start_ms=end - 86_400_000, days=1.0, seed=7, node={"malformed_rate": 0.02})
    collected = ListPublisher()
    run(sim, collected)                                  # the exact bytes, decided up front
    msgs = collected.messages
    exp = expected_readings([(None, t, p) for t, p, *_ in msgs], fleet)
    assert exp.malformed > 0 and len(exp.readings) > 1000

    with psycopg.connect(db_url) as c:
        register_fleet(c, fleet)
        c.execute("INSERT INTO devices (tenant, device_id, kind) VALUES (%s, 'probe', 'bin_fill')", (fleet.tenant,))
        c.commit()
    with worker_thread(db_url, broker.url, probe_tenant=fleet.tenant):
        pub = MqttPublisher(broker.url, client_id="sim-fleet")
        for t, p, qos, retain in msgs:
            pub.publish(t, p, qos, retain)
        assert pub.flush(120)
        pub.close()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with psycopg.connect(db_url) as c:
                n = c.execute("""SELECT count(*) FROM readings r JOIN devices d ON d.id = r.device_id
                                 WHERE d.device_id <> 'probe'""").fetchone()[0]
            if n >= len(exp.readings):
                break
            time.sleep(0.2)
        time.sleep(1.0)
    with psycopg.connect(db_url) as c:
        rows = c.execute("""SELECT d.tenant, d.device_id, m.name, (extract(epoch FROM r.time) * 1000)::bigint, r.value
                            FROM readings r JOIN devices d ON d.id = r.device_id JOIN metrics m ON m.id = r.metric
                            WHERE d.device_id <> 'probe'""").fetchall()
        quarantined = {(t, bytes(p)) for t, p in c.execute(
            "SELECT topic, payload FROM quarantine WHERE topic LIKE '%/up'").fetchall()}
    got = {(t, d, m, ms): v for t, d, m, ms, v in rows}
    kinds = {d.device_id: d.kind for d in fleet.devices}
    assert len(rows) == len(got) == len(exp.readings)
    assert got == exp.readings
    # every up pack the contract decoder refuses (whole or in part) is quarantined, nothing else
    refused = set()
    for t, p, *_ in msgs:
        _, dev, ch = v1.parse_topic(t)
        if ch != v1.UP:
            continue
        try:
            if decode(p, device_id=dev, received_ms=int(time.time() * 1000), kind=kinds[dev]).rejects:
                refused.add((t, p))
        except PackError:
            refused.add((t, p))
    assert len(refused) >= exp.malformed > 0
    assert quarantined == refused
