"""The simulated fleet published through an on-site gateway (gateway://):
nodes → gateway's local Mosquitto → gateway queue → central Mosquitto →
ingest → PostgreSQL, with the database equal to what the contract decoder
finds in the published bytes."""

from __future__ import annotations

import time

import psycopg

from simulators.engine import Simulation
from simulators.expect import expected_readings
from simulators.fleet import build_fleet
from simulators.publisher import ListPublisher, make_publisher
from simulators.register import register_fleet
from simulators.runner import run
from simulators.scenario import load_scenario
from tests.test_gateway_e2e import central, ingest, register, running, settings  # noqa: F401  (fixture)


def test_simulated_fleet_through_the_gateway(db_url, central, tmp_path):  # noqa: F811
    fleet = build_fleet(load_scenario("tiny"), seed=3)
    end = (int(time.time()) // 3600 - 2) * 3600 * 1000
    collected = ListPublisher()
    run(Simulation(fleet, start_ms=end - 12 * 3_600_000, days=0.5, seed=3), collected)
    exp = expected_readings([(None, t, p) for t, p, *_ in collected.messages], fleet)
    assert len(exp.readings) > 200
    register(db_url, [])                    # the ingest helper's readiness probe device
    with psycopg.connect(db_url) as c:
        register_fleet(c, fleet)
        c.commit()
    s = settings(tmp_path, central.url, tenant=fleet.tenant)
    with ingest(db_url, central.url), running(s):
        pub = make_publisher(f"gateway://127.0.0.1:{s.local_port}")
        for t, p, qos, retain in collected.messages:
            pub.publish(t, p, qos, retain)
        assert pub.flush(120)
        pub.close()
        deadline = time.monotonic() + 90
        got: dict = {}
        while time.monotonic() < deadline:
            with psycopg.connect(db_url) as c:
                rows = c.execute(
                    """SELECT d.tenant, d.device_id, m.name, (extract(epoch FROM r.time) * 1000)::bigint, r.value
                       FROM readings r JOIN devices d ON d.id = r.device_id JOIN metrics m ON m.id = r.metric
                       WHERE d.tenant = %s""", (fleet.tenant,)).fetchall()
            got = {(t, d, m, ms): v for t, d, m, ms, v in rows}
            if len(got) >= len(exp.readings):
                break
            time.sleep(0.3)
    assert got == exp.readings
