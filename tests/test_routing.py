"""Collection planning: CVRPLIB reading and both solvers on a small instance, stop
selection with reasons, the PyVRP model (vehicle types, reloads, windows, breaks),
re-planning, storage, the CLI command and the HTTP routes (real PostgreSQL, real
uvicorn).  The X benchmark itself is run by ``streetsense bench routing`` only."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone

import httpx
import numpy as np
import psycopg
import pytest
from fastapi import FastAPI
from psycopg.rows import dict_row

from routing import plan as P
from routing.cvrplib import fleet_size, load_instance, rounded_euclidean, solve_ortools, solve_pyvrp
from routing.town import bin_states
from simulators.fleet import build_fleet
from simulators.scenario import load_scenario

MONDAY = date(2026, 3, 2)


@pytest.fixture(scope="module")
def tiny():
    sc = load_scenario("tiny")
    fl = build_fleet(sc, counts={"bins": 60, "air": 0, "noise": 0, "road": 0})
    return sc, fl


def _vrp(tmp_path, n=25, seed=3):
    rng = np.random.default_rng(seed)
    xy = rng.integers(0, 1000, (n + 1, 2))
    dem = [0] + rng.integers(1, 10, n).tolist()
    lines = ["NAME : X-n26-k3", "TYPE : CVRP", f"DIMENSION : {n + 1}", "EDGE_WEIGHT_TYPE : EUC_2D", "CAPACITY : 50",
             "NODE_COORD_SECTION"] + [f"{i + 1} {x} {y}" for i, (x, y) in enumerate(xy)] + ["DEMAND_SECTION"] + \
            [f"{i + 1} {d}" for i, d in enumerate(dem)] + ["DEPOT_SECTION", "1", "-1", "EOF"]
    p = tmp_path / "X-n26-k3.vrp"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_cvrplib_both_solvers_same_matrix(tmp_path):
    inst = load_instance(_vrp(tmp_path))
    assert inst.k == 3 and inst.dist.dtype == np.int64
    assert (inst.dist == rounded_euclidean(inst.coords)).all()
    a, b = solve_pyvrp(inst, 1.0), solve_ortools(inst, 1.0)
    assert a["feasible"] and b["feasible"]
    assert a["routes"] <= fleet_size(inst.k) and b["routes"] <= fleet_size(inst.k)
    assert a["cost"] == a["solver_cost"] and b["cost"] == b["solver_cost"]     # same matrix, same cost
    assert a["cost"] <= b["cost"] * 1.05


def test_bench_routing_json(tmp_path, capsys):
    from routing.bench import bench_routing

    p = _vrp(tmp_path)
    (tmp_path / "X_bks_costs.csv").write_text("instance,sol_cost\nX-n26-k3,1\n")
    res = bench_routing(tmp_path, time_limit=0.5, instances="1", json_out=True)
    out = json.loads(capsys.readouterr().out)
    assert out["instances"] == 1 and out["results"][0]["instance"] == p.stem
    assert set(out["summary"]) == {"pyvrp", "ortools"} and res["summary"]["pyvrp"]["solved"] == 1


def _states(fl, fill=0.5, rate=0.1):
    n = len(fl.by_kind("bin_fill"))
    return bin_states(fl, fills=np.full(n, fill), rates=np.full(n, rate))


def test_select_stops_reasons(tiny):
    sc, fl = tiny
    bins = _states(fl)
    street = next(b for b in bins if b.bin_kind == "street")
    street.fill, street.rate_per_day = 0.9, 0.1
    house = next(b for b in bins if b.bin_kind == "household" and b.round_days == (0,) and b.frequency_weeks == 1)
    off = next(b for b in bins if b.bin_kind == "household" and 0 not in b.round_days)
    off.alerts = ("overflow",)
    light = next(b for b in bins if b.bin_kind == "street" and b is not street)
    light.fill, light.rate_per_day = 0.1, 0.01
    stops, skipped = P.select_stops(bins, MONDAY)
    by = {s.asset_id: s for s in stops}
    assert by[street.asset_id].reasons == ["fill"] and by[street.asset_id].predicted_fill >= 0.9
    assert by[house.asset_id].reasons[0] == "scheduled" and by[house.asset_id].required
    assert by[off.asset_id].reasons == ["alert:overflow"] and by[off.asset_id].required
    assert light.asset_id not in by and skipped["light"] >= 1
    risky = P.BinState("x", "street", 240, 0, 0, fill=0.6, rate_per_day=0.45)   # 0.79 today, > 1 tomorrow
    (s,), _ = P.select_stops([risky], MONDAY, P.PlanParams())
    assert "overflow_risk" in s.reasons
    # demand policy skips a light household bin on its round day
    house.fill, house.rate_per_day = 0.1, 0.0
    stops2, _ = P.select_stops(bins, MONDAY, P.PlanParams(household_policy="demand"))
    assert house.asset_id not in {s.asset_id for s in stops2}


def test_plan_model_reloads_windows_breaks(tiny):
    sc, fl = tiny
    bins = _states(fl, fill=0.9, rate=0.05)
    for b in bins:                 # everything due today
        b.round_days, b.frequency_weeks = (0,), 1
    fleet = (P.VehicleSpec("small", 1, 2_500, 400, shift_start_h=6.0, shift_end_h=14.0, break_after_h=1.0,
                           break_basis="duty"),
             P.VehicleSpec("mini", 1, 1_000, 150, shift_start_h=6.0, shift_end_h=14.0, break_after_h=1.0,
                           break_basis="duty"))
    out = P.plan_day(bins, MONDAY, sc.graph, fleet, P.PlanParams(time_limit_s=2))
    assert out["feasible"] and not out["unserved"] and out["totals"]["stops"] == len(bins)
    assert out["totals"]["trips"] > 2                       # 60 bins x ~200 L need several trips to the tip
    for r in out["routes"]:
        stops = [e for e in r["events"] if e["type"] == "stop"]
        for t, litres in enumerate(r["trip_litres"]):
            assert litres <= r["capacity_l"] + len(stops)      # rounding up per stop
        assert sum(e["type"] == "break" for e in r["events"]) == 1
        assert sum(e["type"] == "unload" for e in r["events"]) == r["trips"]   # every trip ends at the tip
        for e in stops:
            if e["tw_h"]:
                assert e["eta_s"] <= 9.5 * 3600                     # high street before shopping hours
            assert e["reasons"]
    hs = [e for r in out["routes"] for e in r["events"] if e["type"] == "stop" and e["tw_h"]]
    assert hs, "tiny town has high-street litter bins"


def test_replan_blocked_street_and_breakdown(tiny):
    sc, fl = tiny
    bins = _states(fl, fill=0.9)
    for b in bins:
        b.round_days, b.frequency_weeks = (0,), 1
    fleet = (P.VehicleSpec("rcv", 2, 8_000, 1_000),)
    plan = json.loads(json.dumps(P.plan_day(bins, MONDAY, sc.graph, fleet, P.PlanParams(time_limit_s=1))))
    r1, r2 = plan["routes"][0], plan["routes"][1]
    s1 = [e for e in r1["events"] if e["type"] == "stop"]
    done = {e["asset_id"] for e in s1[:5]}
    blocked_edge = next(e["edge_id"] for e in s1[8:] + [x for x in r2["events"] if x["type"] == "stop"])
    on_blocked = {e["asset_id"] for r in plan["routes"] for e in r["events"]
                  if e["type"] == "stop" and e["edge_id"] == blocked_edge and e["asset_id"] not in done}
    new = P.replan(plan, sc.graph, now_s=9 * 3600, completed=done, blocked_edges={blocked_edge},
                   broken={r2["route_id"]}, params=P.PlanParams(time_limit_s=1))
    left = {e["asset_id"] for r in new["routes"] for e in r["events"] if e["type"] == "stop"}
    assert {d["asset_id"] for d in new["done"]} == done and not (left & done)
    assert {b["asset_id"] for b in new["blocked"]} == on_blocked and not (left & on_blocked)
    assert len(left) + len(new["unserved"]) == len(bins) - len(done) - len(on_blocked)
    assert all(r["route_id"] != r2["route_id"] for r in new["routes"])
    assert all(e["eta_s"] >= 9 * 3600 for r in new["routes"] for e in r["events"] if e["type"] == "stop")


def _seed_db(url, fl):
    from simulators.register import register_fleet

    with psycopg.connect(url, autocommit=True) as c:
        register_fleet(c, fl)
        met = c.execute("SELECT id FROM metrics WHERE name = 'fill'").fetchone()[0]
        devs = c.execute("SELECT id, asset_id FROM devices WHERE kind = 'bin_fill' ORDER BY id").fetchall()
        rows = []
        for k, (pk, _a) in enumerate(devs):
            for h in range(0, 48, 6):
                t = datetime(2026, 2, 28, tzinfo=timezone.utc).timestamp() + h * 3600
                rows.append((pk, met, datetime.fromtimestamp(t, timezone.utc), 0.3 + 0.01 * h + 0.005 * (k % 10)))
        with c.cursor() as cur:
            cur.executemany("INSERT INTO readings (device_id, metric, time, value) VALUES (%s, %s, %s, %s)", rows)
        c.execute("INSERT INTO alerts (tenant, kind, severity, entity, asset_id, window_start) "
                  "VALUES (%s, 'overflow', 'medium', %s, %s, now())",
                  (fl.tenant, devs[-1][1], devs[-1][1]))
        return devs[-1][1]


def test_store_and_cli(db_url, tiny, capsys):
    from routing.cli import routes_plan_command
    from routing.store import load_bin_states

    sc, fl = tiny
    alerted = _seed_db(db_url, fl)
    with psycopg.connect(db_url, row_factory=dict_row) as c:
        states = load_bin_states(c, fl.tenant, MONDAY, sc.graph)
    assert len(states) == 60 and all(s.fill is not None and s.rate_per_day > 0.2 for s in states)
    assert next(s for s in states if s.asset_id == alerted).alerts == ("overflow",)
    import routing.service as svc
    svc._graph.cache_clear()
    plan = routes_plan_command(date="2026-03-02", tenant=fl.tenant, time_limit=1.0, database_url=db_url,
                               json_out=True)
    printed = json.loads(capsys.readouterr().out)
    assert printed["plan_id"] == plan["plan_id"] and plan["feasible"]
    with psycopg.connect(db_url) as c:
        n, inputs = c.execute("SELECT count(*), max(inputs::text) FROM route_plans").fetchone()
    assert n == 1 and alerted in inputs


@pytest.fixture
def api(db_url, tiny):
    from contextlib import asynccontextmanager

    from api import routes
    from api.auth import make_pool
    from tests.support.api_auth import make_token, mount
    from tests.support.http import serve

    sc, fl = tiny
    _seed_db(db_url, fl)
    pool = make_pool(db_url, max_size=4)

    @asynccontextmanager
    async def lifespan(app):
        pool.open(wait=True)
        yield
        pool.close()

    app = FastAPI(lifespan=lifespan)
    mount(app, pool)
    app.include_router(routes.router(pool, graph=sc.graph, replan_time_limit_s=1.0))
    tokens = {role: make_token(db_url, role, fl.tenant) for role in ("operations", "crew")}
    with serve(app) as base:
        yield base, sc, fl, tokens


def test_api_plan_crew_report_replan(api):
    base, sc, fl, tokens = api
    with httpx.Client(base_url=base, timeout=60, headers={"Authorization": f"Bearer {tokens['operations']}"}) as h:
        r = h.post("/routes/plans", json={"tenant": fl.tenant, "date": "2026-03-02", "time_limit_s": 1})
        assert r.status_code == 201, r.text
        s = r.json()
        pid, route = s["plan_id"], s["routes"][0]
        assert route["crew_url"] == f"/crew/{pid}/{route['route_id']}"
        page = h.get(route["crew_url"])
        assert page.status_code == 200 and "<svg" in page.text and "localStorage" in page.text
        assert "http://" not in page.text.replace("http://www.w3.org/2000/svg", "")   # no external resources
        gpx = h.get(route["crew_url"] + ".gpx")
        assert gpx.status_code == 200 and "<gpx" in gpx.text and "<wpt" in gpx.text
        gj = h.get(route["crew_url"] + ".geojson").json()
        assert gj["features"][0]["geometry"]["type"] == "LineString"
        stops = [e for e in h.get(f"/routes/plans/{pid}").json()["plan"]["routes"][0]["events"] if e["type"] == "stop"]
        rep = {"client_id": "c1", "asset_id": stops[0]["asset_id"], "status": "collected",
               "reported_at": "2026-03-02T08:00:00Z"}
        url = f"{route['crew_url']}/reports"
        assert h.post(url, json=rep).status_code == 201
        again = h.post(url, json=rep)
        assert again.status_code == 200 and again.json()["created"] is False        # resend is a no-op
        blk = {"client_id": "c2", "asset_id": stops[3]["asset_id"], "status": "blocked",
               "reported_at": "2026-03-02T08:05:00Z", "edge_id": stops[3]["edge_id"]}
        b = h.post(url, json=blk)
        assert b.status_code == 201 and b.json()["replan_id"] > pid
        nid = b.json()["replan_id"]
        newp = h.get(f"/routes/plans/{nid}").json()
        assert newp["parent_id"] == pid and newp["reason"] == "blocked_street"
        assert stops[0]["asset_id"] in {d["asset_id"] for d in newp["plan"]["done"]}
        assert stops[3]["asset_id"] in {d["asset_id"] for d in newp["plan"]["blocked"]}
        assert h.get(f"/routes/plans/{pid}").json()["latest_id"] == nid
        if route["route_id"] in {x["route_id"] for x in newp["plan"]["routes"]}:
            red = h.get(route["crew_url"])                      # the crew page follows the re-plan
            assert red.status_code == 307 and red.headers["location"] == f"/crew/{nid}/{route['route_id']}"
        assert h.post(f"/routes/plans/{pid}/replan", json={"now": "2026-03-03T09:00:00Z"}).status_code == 422
        br = h.post(f"/routes/plans/{pid}/replan", json={"broken": [route["route_id"]], "time_limit_s": 1,
                                                        "now": "2026-03-02T10:00:00"})
        assert br.status_code == 201 and route["route_id"] not in {x["route_id"] for x in br.json()["routes"]}
        assert h.post(url, json={**rep, "status": "bogus"}).status_code == 422
        assert h.get(f"/crew/{pid}/nope").status_code == 404


def test_bench_collection_small():
    from routing.bench import bench_collection

    r = bench_collection("tiny", days=3, json_out=False, time_limit_s=0.3)
    f, d = r["fixed"], r["demand"]
    assert f["lifts"] > 0 and d["lifts"] > 0 and d["lifts"] < f["lifts"]
    assert f["km"] > 0 and d["unserved"] == 0 and f["unserved"] == 0
    assert set(r["reduction_pct"]) >= {"lifts", "km", "lorry_hours", "lorry_trips"}


def test_travel_fallback_and_closed_edges(tiny):
    from routing.travel import Point, matrices

    sc, _ = tiny
    g = sc.graph
    pts = [Point(g.depot.lat, g.depot.lon, node=g.depot.node), Point(g.tipping.lat, g.tipping.lon, node=g.tipping.node)]
    m = matrices(g, pts)
    _, secs = g.shortest_path(g.depot.node, g.tipping.node)
    assert abs(m.duration_s[0, 1] - secs) <= 1 and m.fallback == 0
    # close every edge at the tipping site: the haversine fallback takes over
    closed = {eid for _, eid in g.neighbors(g.tipping.node)}
    m2 = matrices(g, pts, closed)
    assert m2.fallback == 2 and m2.distance_m[0, 1] > 0
    m3 = matrices(None, pts)
    assert m3.fallback == 4 and m3.duration_s[0, 1] > 0
