"""``streetsense bench api`` on a tiny fleet: the JSON has the promised shape and
every dashboard panel and SensorThings endpoint was timed."""

from __future__ import annotations

import json

from dashboards import panels as P
from dashboards.bench import bench_api


def test_bench_api_small_run_times_every_panel(pg_admin_url):
    res = bench_api(devices=50, days=2, repeats=3, database_url=pg_admin_url)
    json.dumps(res, default=str)                                   # serialisable
    assert res["devices"] == 50 and res["days"] == 2 and res["target_p99_ms"] == 100.0
    assert res["rows"]["devices"] == 50 and res["rows"]["readings"] > 5_000
    assert res["rows"]["readings_hourly"] > 0 and res["rows"]["alerts"] > 0 and res["rows"]["batches"] > 0
    assert res["load_s"]["total"] > 0 and res["load_s"]["panel_rollups"] >= 0
    assert res["rows"]["readings_hourly_by_ward"] > 0 and res["rows"]["ingest_lag_hourly"] > 0
    assert res["rows"]["road_bump_events"] > 0
    assert len(res["load_average_1_5_15_min"]["before_timing"]) == 3 and res["cpus"] >= 1
    timed = {(p["dashboard"], p["panel"]) for p in res["panels"]}
    assert timed == {(s.uid, p.title) for s in P.ALL for p in s.panels}
    for p in res["panels"]:
        assert p["n"] == 3 and 0 < p["p50_ms"] <= p["p99_ms"] <= p["max_ms"] and isinstance(p["ok"], bool)
    for key in ("panels_overall", "sta_overall"):
        assert res[key]["n"] > 0 and res[key]["p50_ms"] <= res[key]["p99_ms"]
    assert res["panels_overall"]["n"] == 3 * len(timed)
    names = {s["endpoint"] for s in res["sta"]}
    assert {"Things", "Locations", "Datastreams", "Observations", "Datastreams('id')/Observations"} <= names
    assert all(s["status"] == [200] for s in res["sta"])
    assert all(set(o) >= {"panel", "p99_ms", "explain", "fix"} for o in res["panels_over_target"])
