"""Collection planning through the day: the council's time zone (a re-plan at 11:00 BST, the clocks-change
days), the crew's break placed by the drivers'-hours rule after the solve, the fleet from a per-tenant
configuration (YAML file, ``fleet_configs`` table, API), and a crew's "blocked" report re-planning around
the street.  Real PostgreSQL, real PyVRP, real HTTP."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone

import httpx
import numpy as np
import psycopg
import pytest
import typer
from psycopg.rows import dict_row

from routing import crew, plan as P
from routing.clock import DayClock
from routing.fleet import DEFAULT_FLEET_CONFIG, FleetError, load_fleet, parse_fleet
from routing.schedule import BreakRule, Visit, place_break, timeline
from routing.town import bin_states
from tests.test_routing import _seed_db, api, tiny  # noqa: F401  (fixtures)

BST_MONDAY = date(2026, 6, 1)
SPRING = date(2026, 3, 29)      # clocks go forward at 01:00 UTC (a Sunday)
AUTUMN = date(2026, 10, 25)     # clocks go back at 01:00 UTC
FLEET_YAML = """
timezone: Europe/London
vehicles:
  - name: big
    count: 2
    capacity_l: 8000
    capacity_kg: 1000
    shift: ["06:00", "14:30"]
    break: {after_h: 4.5, minutes: 45}
"""


def _states(fl, days=(0,), fill=0.9):
    n = len(fl.by_kind("bin_fill"))
    bins = bin_states(fl, fills=np.full(n, fill), rates=np.full(n, 0.05))
    for b in bins:
        b.round_days, b.frequency_weeks = tuple(days), 1
    return bins


def _stops(route):
    return [e for e in route["events"] if e["type"] == "stop"]


# ---- time zones ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("day, start_utc", [(SPRING, "05:00"), (AUTUMN, "06:00"), (date(2026, 1, 4), "06:00")])
def test_plan_on_a_clocks_change_day_has_consistent_etas(tiny, day, start_utc):
    sc, fl = tiny
    clock = DayClock(day, "Europe/London")
    out = P.plan_day(_states(fl, days=(6,)), day, sc.graph, (P.VehicleSpec("rcv", 2, 8_000, 1_000),),
                     P.PlanParams(time_limit_s=1))
    assert out["feasible"] and out["timezone"] == "Europe/London" and out["routes"]
    assert out["day_start_utc"] == clock.utc_iso(0)
    hs_close = clock.at_local_h(9.5)
    for r in out["routes"]:
        assert r["start"] == "06:00" and r["start_utc"] == f"{day.isoformat()}T{start_utc}:00Z"
        assert r["end_s"] <= clock.at_local_h(14.5) and r["shift"] == ["06:00", "14:30"]
        timed = [e for e in r["events"] if "eta_s" in e]
        for a, b in zip(timed, timed[1:]):
            assert a["eta_s"] <= b["eta_s"]
        for e in timed:
            utc = datetime.strptime(e["eta_utc"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
            # UTC instant, elapsed seconds and the local time the crew sees all agree
            assert (utc - clock.origin).total_seconds() == e["eta_s"]
            assert utc.astimezone(clock.zone).strftime("%H:%M") == e["eta"]
            if e["type"] == "stop" and e["tw_h"]:
                assert e["eta_s"] <= hs_close                       # high street before 09:30 local
        # the same elapsed axis in real seconds: legs add up across the change (no hour lost or gained)
        stops = _stops(r)
        if len(stops) >= 2:
            assert 0 < stops[1]["eta_s"] - stops[0]["eta_s"] < 3600


def test_replan_at_11_local_on_a_bst_day(db_url, tiny):
    """The crew has done the stops due by 11:00 BST; a re-plan at 11:00 local (10:00 UTC, given either way)
    restarts every working lorry at 11:00 local from its last collected bin."""
    from routing import store
    from routing.service import make_plan, replan_stored

    sc, fl = tiny
    _seed_db(db_url, fl)
    clock = DayClock(BST_MONDAY, "Europe/London")
    eleven = clock.at_local_h(11.0)
    with psycopg.connect(db_url, row_factory=dict_row, autocommit=True) as c:
        cfg = parse_fleet(FLEET_YAML.replace("capacity_l: 8000", "capacity_l: 3000"))
        pid, plan = make_plan(c, fl.tenant, BST_MONDAY, sc.graph, P.PlanParams(time_limit_s=1), fleet=cfg)
        assert plan["timezone"] == "Europe/London" and plan["routes"]
        last = {}
        for r in plan["routes"]:
            for k, e in enumerate(_stops(r)):
                if e["eta_s"] <= eleven and k < len(_stops(r)) - 1:
                    store.add_report(c, pid, fl.tenant, r["route_id"], e["asset_id"], "collected", f"c-{e['asset_id']}",
                                     clock.utc(e["eta_s"]))
                    last[r["route_id"]] = e
        assert last, "some stops are due before 11:00"
        for now in (datetime(2026, 6, 1, 10, 0, tzinfo=timezone.utc), datetime(2026, 6, 1, 11, 0)):
            nid, new = replan_stored(c, pid, now=now, graph=sc.graph, time_limit_s=1)
            assert new["replanned_at"] == "11:00" and new["replanned_at_utc"] == "2026-06-01T10:00:00Z"
            stored = store.get_plan(c, nid)["inputs"]
            assert stored["now_local"] == "11:00" and stored["now_utc"] == "2026-06-01T10:00:00Z"
            for r in new["routes"]:
                assert r["start"] == "11:00" and r["start_utc"] == "2026-06-01T10:00:00Z"
                assert all(e["eta_s"] >= eleven for e in r["events"] if "eta_s" in e)
                if r["route_id"] in last:                       # from where the lorry is: its last collected bin
                    assert r["from"] == pytest.approx([last[r["route_id"]]["lat"], last[r["route_id"]]["lon"]])
            done = {d["asset_id"] for d in new["done"]}
            assert done >= {e["asset_id"] for e in last.values()}
            assert not done & {e["asset_id"] for r in new["routes"] for e in _stops(r)}


# ---- breaks ---------------------------------------------------------------------------------------------------

H = 3600
# start 06:00 at 0; stops 1..4 one hour's drive apart, a minute's lift each; the shift ends at stop 4: 4 h driving
DUR = [[abs(i - j) * H for j in range(5)] for i in range(5)]


def _visits(tw4=(0, 1 << 62), tw2=(0, 1 << 62)):
    return [Visit("start", 0), Visit("stop", 1, 60, 0, name="s1"), Visit("stop", 2, 60, 1, tw=tw2, name="s2"),
            Visit("stop", 3, 60, 2, name="s3"), Visit("stop", 4, 60, 3, tw=tw4, name="s4"), Visit("end", 4)]


def test_break_goes_at_the_latest_legal_place_and_shifts_later_times():
    rule = BreakRule(after_h=3, minutes=45)                    # 45 min once 3 h of driving would be passed
    base = timeline(_visits(), DUR, 6 * H)
    s = place_break(_visits(), DUR, 6 * H, rule, shift_end_s=14 * H)
    assert s.break_after == 3 and s.break_drive_s == 3 * H <= rule.after_s     # after s3: 3 h driven, 4 h at s4
    assert s.drive_s[-1] - s.break_drive_s <= rule.after_s
    assert s.starts[:4] == base.starts[:4] and s.break_start_s == base.ends[3]
    assert [a - b for a, b in zip(s.starts[4:], base.starts[4:])] == [45 * 60] * 2
    assert s.violations == []
    duty = place_break(_visits(), DUR, 6 * H, BreakRule(after_h=1.5, minutes=30, basis="duty"))
    assert duty.break_after == 1 and duty.ends[1] - 6 * H <= 1.5 * H            # duty basis counts work too
    assert place_break(_visits(), DUR, 6 * H, BreakRule(after_h=4, minutes=45)).break_after is None   # 4 h: none
    assert place_break(_visits(), DUR, 6 * H, rule, taken=True).break_after is None


def test_break_moves_into_a_wait_to_keep_a_later_window():
    # s2's window opens at 09:00 (the lorry arrives 08:01 and waits); s4 must be served by 11:07 (it is at 11:02
    # without a break): a break after s3 (the latest legal place) or s2 misses it, after s1 the wait absorbs it
    base = timeline(_visits(tw2=(9 * H, 1 << 62)), DUR, 6 * H)
    assert base.starts[2] == 9 * H and base.starts[4] == 11 * H + 2 * 60
    s = place_break(_visits(tw2=(9 * H, 1 << 62), tw4=(0, 11 * H + 7 * 60)), DUR, 6 * H,
                    BreakRule(after_h=3, minutes=45), shift_end_s=16 * H)
    assert s.break_after == 1 and s.violations == [] and s.starts[2:] == base.starts[2:]


def test_a_break_that_must_break_a_window_or_the_shift_end_is_reported():
    # every legal place delays s4 past 10:08 and the end past 10:30: the least bad is used, and both are reported
    s = place_break(_visits(tw4=(0, 10 * H + 8 * 60)), DUR, 6 * H, BreakRule(after_h=3, minutes=45),
                    shift_end_s=10 * H + 30 * 60)
    kinds = sorted(v["type"] for v in s.violations)
    assert kinds == ["shift_end", "time_window"] and s.break_after == 3
    tw = next(v for v in s.violations if v["type"] == "time_window")
    assert tw["name"] == "s4" and tw["late_s"] == 45 * 60 - 5 * 60
    assert next(v for v in s.violations if v["type"] == "shift_end")["late_s"] == s.end_s - (10 * H + 30 * 60)
    first = place_break(_visits(), DUR, 6 * H, BreakRule(after_h=0.5, minutes=45))
    assert any(v["type"] == "break_rule" for v in first.violations)            # the first leg alone is 1 h


def test_breaks_in_a_solved_plan_are_legal_and_the_shift_end_holds(tiny):
    sc, fl = tiny
    # a short driving limit so the tiny town's routes need their break
    fleet = (P.VehicleSpec("rcv", 2, 6_000, 800, break_after_h=0.3, break_min=45),)
    out = P.plan_day(_states(fl), date(2026, 3, 2), sc.graph, fleet, P.PlanParams(time_limit_s=1))
    clock = DayClock(date(2026, 3, 2), "Europe/London")
    assert out["routes"]
    for r in out["routes"]:
        brk = [e for e in r["events"] if e["type"] == "break"]
        drives = [e["drive_s"] for e in r["events"] if e["type"] == "stop"]
        if drives[-1] <= 0.3 * H:
            assert brk == []
            continue
        assert len(brk) == 1 and brk[0]["drive_s"] <= 0.3 * H and brk[0]["rule"] == "45 min after 0.3 h driving"
        after = [e for e in r["events"][r["events"].index(brk[0]) + 1:] if "eta_s" in e]
        assert all(e["eta_s"] >= brk[0]["eta_s"] + 45 * 60 for e in after)
        assert r["end_s"] <= clock.at_local_h(14.5) or any(v["type"] == "shift_end" for v in r["violations"])
        assert r["feasible"] == (not r["violations"])
        page = crew.crew_page(sc.graph, 1, r, "/r", "/b")       # the crew's run sheet says when the break is
        assert f"break {brk[0]['eta']} (45 min)" in page
    assert out["totals"]["violations"] == sum(len(r["violations"]) for r in out["routes"])


def test_replan_after_the_break_does_not_take_it_again(tiny):
    sc, fl = tiny
    # a driving limit short enough that the break comes mid-round (its rule then wants a second one: reported)
    fleet = (P.VehicleSpec("rcv", 1, 20_000, 3_000, break_after_h=0.15, break_min=45),)
    plan = json.loads(json.dumps(P.plan_day(_states(fl), date(2026, 3, 2), sc.graph, fleet,
                                            P.PlanParams(time_limit_s=1))))
    r = plan["routes"][0]
    brk = next(e for e in r["events"] if e["type"] == "break")
    i = r["events"].index(brk)
    done = {e["asset_id"] for e in r["events"][:i] if e["type"] == "stop"}
    assert 0 < len(done) < r["stops"]
    new = P.replan(plan, sc.graph, now_s=brk["eta_s"] + 45 * 60, completed=done, params=P.PlanParams(time_limit_s=1))
    assert [e for e in new["routes"][0]["events"] if e["type"] == "break"] == []
    before = P.replan(plan, sc.graph, now_s=brk["eta_s"] - 60, completed=done, params=P.PlanParams(time_limit_s=1))
    assert sum(e["type"] == "break" for e in before["routes"][0]["events"]) == 1


# ---- the fleet from configuration ---------------------------------------------------------------------------------

def test_fleet_validation_names_every_problem(tmp_path):
    assert DEFAULT_FLEET_CONFIG.specs() == P.DEFAULT_FLEET
    bad = tmp_path / "fleet.yaml"
    bad.write_text("timezone: Mars/Olympus\nvehicles:\n  - {name: a, count: 1, capacity_l: 10, capacity_kg: 0}\n"
                   "  - {name: a, count: 2, capacity_l: 10, capacity_kg: 5, shift: ['06:00', '06:30'],"
                   " break: {minutes: 45}, colour: red}\n")
    with pytest.raises(FleetError) as e:
        load_fleet(bad)
    msg = str(e.value)
    assert str(bad) in msg
    for needle in ("timezone: Value error, unknown time zone 'Mars/Olympus'", "vehicles.0.capacity_kg",
                   "vehicles.1.colour: Extra inputs are not permitted"):
        assert needle in msg, msg
    with pytest.raises(FleetError, match="the 45 min break does not fit in the 0.5 h shift"):
        parse_fleet("vehicles: [{name: a, count: 1, capacity_l: 1, capacity_kg: 1, shift: ['06:00', '06:30']}]")
    with pytest.raises(FleetError, match="vehicle type names must be unique: a"):
        parse_fleet("vehicles: [{name: a, count: 1, capacity_l: 1, capacity_kg: 1},"
                    " {name: a, count: 1, capacity_l: 1, capacity_kg: 1}]")
    with pytest.raises(FleetError, match="cannot read fleet file"):
        load_fleet(tmp_path / "missing.yaml")
    with pytest.raises(FleetError, match="expected a mapping"):
        parse_fleet("- just a list")


def test_cli_plans_with_a_fleet_file_and_a_stored_fleet(db_url, tiny, tmp_path, capsys):
    from routing import service as svc
    from routing.cli import routes_fleet_command, routes_plan_command

    sc, fl = tiny
    _seed_db(db_url, fl)
    svc._graph.cache_clear()
    f = tmp_path / "fleet.yaml"
    g = svc.tenant_graph(fl.tenant)          # the CLI plans on the configured town (the default scenario)
    n = g.nodes[10]
    f.write_text(FLEET_YAML + f"depot: {{lat: {n.lat + 0.0001}, lon: {n.lon}}}\ntip: {{node: 20, name: Tip}}\n")
    plan = routes_plan_command(date="2026-03-02", tenant=fl.tenant, time_limit=1.0, database_url=db_url,
                               fleet=f, fleet_name=None, json_out=True)
    capsys.readouterr()
    assert {r["route_id"] for r in plan["routes"]} <= {"big-1", "big-2"} and plan["fleet_source"] == "given"
    assert plan["sites"]["depot"][2] == g.nearest_node(n.lat + 0.0001, n.lon)   # configured, snapped
    assert plan["sites"]["tip"][2] == 20
    with psycopg.connect(db_url, row_factory=dict_row) as c:
        inputs = c.execute("SELECT inputs FROM route_plans WHERE id = %s", (plan["plan_id"],)).fetchone()["inputs"]
    assert inputs["fleet_config"]["vehicles"][0]["name"] == "big" and inputs["fleet"][0]["break_min"] == 45
    bad = tmp_path / "bad.yaml"
    bad.write_text("vehicles: [{name: x, count: 1, capacity_l: 10}]\n")
    with pytest.raises(typer.BadParameter, match="vehicles.0.capacity_kg: Field required"):
        routes_plan_command(date="2026-03-02", tenant=fl.tenant, time_limit=1.0, database_url=db_url, fleet=bad,
                            fleet_name=None, json_out=True)
    # stored as the tenant's default: used when a plan names none
    routes_fleet_command(tenant=fl.tenant, file=f, name="default", check=False, database_url=db_url)
    assert json.loads(capsys.readouterr().out)["vehicles"] == 2
    plan2 = routes_plan_command(date="2026-03-02", tenant=fl.tenant, time_limit=1.0, database_url=db_url,
                                fleet=None, fleet_name=None, json_out=False)
    assert plan2["fleet_source"] == "fleet_configs:default" and "fleet: fleet_configs:default" in capsys.readouterr().out
    with pytest.raises(typer.BadParameter, match="no fleet configuration named 'winter'"):
        routes_plan_command(date="2026-03-02", tenant=fl.tenant, time_limit=1.0, database_url=db_url, fleet=None,
                            fleet_name="winter", json_out=True)


def _auth(tokens: dict, role: str = "operations") -> dict:
    return {"Authorization": f"Bearer {tokens[role]}"}


def test_api_fleet_config_plan_and_blocked_street_replan(api):  # noqa: F811
    """PUT a fleet (invalid: 422 naming the fields), plan with it by name; a crew's "blocked" report re-plans at
    once, and the re-plan closes the street: no remaining stop on it, and its travel times avoid it."""
    from routing.travel import Point, matrices

    base, sc, fl, tokens = api
    cfg = json.loads(json.dumps(parse_fleet(FLEET_YAML).dump()))
    with httpx.Client(base_url=base, timeout=60, headers=_auth(tokens)) as h:
        bad = h.put(f"/routes/fleets/{fl.tenant}/winter", json={**cfg, "timezone": "Nowhere/City"})
        assert bad.status_code == 422 and "unknown time zone 'Nowhere/City'" in bad.json()["detail"]
        assert h.put(f"/routes/fleets/{fl.tenant}/winter", json=cfg).status_code == 200
        assert h.get(f"/routes/fleets/{fl.tenant}/winter").json()["config"]["vehicles"][0]["name"] == "big"
        assert h.post("/routes/plans", json={"tenant": fl.tenant, "date": "2026-03-02", "time_limit_s": 1,
                                             "fleet": "summer"}).status_code == 422
        r = h.post("/routes/plans", json={"tenant": fl.tenant, "date": "2026-03-02", "time_limit_s": 1,
                                          "fleet": "winter"})
        assert r.status_code == 201, r.text
        s = r.json()
        assert s["timezone"] == "Europe/London" and {x["route_id"] for x in s["routes"]} <= {"big-1", "big-2"}
        pid = s["plan_id"]
        plan = h.get(f"/routes/plans/{pid}").json()["plan"]
        route = max(plan["routes"], key=lambda x: x["stops"])
        stops = _stops(route)
        edge = stops[len(stops) // 2]["edge_id"]
        on_edge = {e["asset_id"] for x in plan["routes"] for e in _stops(x) if e["edge_id"] == edge}
        rep = {"client_id": "b1", "asset_id": stops[len(stops) // 2]["asset_id"], "status": "blocked",
               "reported_at": "2026-03-02T09:00:00Z", "edge_id": edge}
        b = h.post(f"/crew/{pid}/{route['route_id']}/reports", json=rep, headers=_auth(tokens, "crew"))
        assert b.status_code == 201, b.text
        new = h.get(f"/routes/plans/{b.json()['replan_id']}").json()
    assert new["reason"] == "blocked_street" and edge in new["plan"]["closed_edges"]
    assert new["plan"]["replanned_at"] == "09:00"                  # from the crew's report time (GMT in March)
    assert all(x["start"] == "09:00" for x in new["plan"]["routes"])
    left = {e["asset_id"] for x in new["plan"]["routes"] for e in _stops(x)}
    assert left                                                    # the rest of the day is still served
    assert on_edge and not (left & on_edge) and on_edge <= {x["asset_id"] for x in new["plan"]["blocked"]}
    assert all(e["edge_id"] != edge for x in new["plan"]["routes"] for e in _stops(x))
    # the street is closed in the travel times the re-plan used: a path across it now costs more
    g = sc.graph
    e = g.edges[edge]
    ends = [Point(g.nodes[e.u].lat, g.nodes[e.u].lon, node=e.u), Point(g.nodes[e.v].lat, g.nodes[e.v].lon, node=e.v)]
    assert matrices(g, ends, {edge}).duration_s[0, 1] > matrices(g, ends).duration_s[0, 1]


def test_the_documented_fleet_example_validates():
    from pathlib import Path

    doc = (Path(__file__).parents[1] / "docs" / "routing.md").read_text()
    block = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    cfg = parse_fleet(block, "docs/routing.md")
    assert cfg.specs()[0] == P.DEFAULT_FLEET[0] and cfg.tip.node == 63
