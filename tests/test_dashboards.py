"""Dashboards as code: the committed JSON is what the builders make, it
round-trips through the Grafana Foundation SDK's Dashboard model, every
panel's SQL (macros expanded as Grafana's PostgreSQL datasource does) runs on
a real PostgreSQL loaded with a simulated week and returns the declared
columns, the provisioning files hold no secrets, and ``push_command`` speaks
Grafana's HTTP API through grafana-client (against a stand-in server: Grafana
itself is not installable here)."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import psycopg
import pytest
import yaml
from fastapi import FastAPI, HTTPException, Request

from dashboards import macros, panels as P
from dashboards.build import JSON_DIR, SCHEMA_VERSION, build_command, models, push_command, render
from dashboards.sqlquery import DS_TYPE, DS_UID, SqlQuery
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard
from tests.support.http import serve

ROOT = Path(__file__).resolve().parents[1]
VIZ = {"stat", "timeseries", "table", "geomap", "piechart", "barchart", "bargauge"}
# may legitimately be empty for a 7-day tiny town (the simulator may draw no such event / metric)
MAY_BE_EMPTY = {"Missed collections per day", "Missed collections", "Buffered readings (sum of hourly maxima)",
                "Late: last seen before the expected wake", "Confirmed defects", "Castings vs potholes"}


# --------------------------------------------------------------------------- JSON models


def test_committed_json_is_what_the_builders_make(tmp_path):
    build_command(tmp_path)
    made = sorted(p.name for p in tmp_path.glob("*.json"))
    assert made == sorted(p.name for p in JSON_DIR.glob("*.json")) == sorted(f"{s.uid}.json" for s in P.ALL)
    for name in made:
        assert (tmp_path / name).read_text() == (JSON_DIR / name).read_text(), f"{name} is stale: run the build"
    build_command(JSON_DIR, check=True)


@pytest.mark.parametrize("spec", P.ALL, ids=lambda s: s.uid)
def test_json_round_trips_through_the_sdk_model(spec):
    data = json.loads((JSON_DIR / f"{spec.uid}.json").read_text())
    model = Dashboard.from_json(data)
    again = json.loads(json.dumps(model, cls=JSONEncoder))
    assert again == data
    assert data["schemaVersion"] == SCHEMA_VERSION and data["uid"] == spec.uid
    assert [v["name"] for v in data["templating"]["list"]] == list(spec.variables)
    assert len(model.panels) == len(spec.panels)
    for p, ps in zip(model.panels, spec.panels, strict=True):
        assert p.type_val == ps.viz and p.type_val in VIZ and p.title == ps.title
        assert p.datasource.type_val == DS_TYPE and p.datasource.uid == DS_UID
        assert len(p.targets) == 1 and isinstance(p.targets[0], SqlQuery)     # decoded by our registered variant
        assert p.targets[0].raw_sql == ps.sql.strip() and p.targets[0].format == ps.format
        assert p.grid_pos.w == ps.w and p.grid_pos.h == ps.h and 0 <= p.grid_pos.x < 24
        if ps.format == "time_series":
            assert ps.columns[0] == "time" and "$__timeGroupAlias(" in ps.sql
    sql = " ".join(ps.sql for ps in spec.panels)
    for name in spec.variables:
        assert f"${name}" in sql or name == "kind" and "$kind" in sql, f"variable {name} unused"


def test_every_dashboard_asked_for_exists_and_reads_the_rollups():
    titles = {s.uid: [p.title for p in s.panels] for s in P.ALL}
    assert set(titles) == {"ss-operations", "ss-bins", "ss-air", "ss-noise", "ss-roads", "ss-fleet", "ss-alerts"}
    raw = [(s.uid, p.title) for s in P.ALL for p in s.panels if re.search(r"\breadings\b(?!_)", p.sql)]
    assert raw == []                                       # no panel scans raw readings
    # readings_hourly or readings_hourly_by_ward, or a rollup of migration 0014 made from readings_hourly
    assert sum(bool(re.search(r"readings_hourly|pm25_corrected_hourly_by_ward|bin_fill_trend_hourly", p.sql))
               for s in P.ALL for p in s.panels) >= 15
    assert {p.title for s in P.ALL for p in s.panels if "road_bump_events" in p.sql} == {
        "Confirmed defects", "Castings vs potholes"}


# --------------------------------------------------------------------------- macro expander

T0 = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(days=7)
VARS = {"tenant": macros.Var("tenant"), "ward": macros.Var("ward", True, True, "'__all'", ("n", "s")),
        "kind": macros.Var("kind", True, True, None, ("air", "noise"))}


def test_macros_expand_like_grafana_postgres():
    out = macros.expand("SELECT $__timeGroupAlias(h.bucket, '1h'), x FROM t WHERE $__timeFilter(h.bucket) "
                        "AND a > $__timeFrom() AND b < $__timeTo() AND $__timeGroup(c, 5m) > 0 "
                        "AND $__unixEpochFilter(e)", T0, T1)
    assert out == ("SELECT floor(extract(epoch from h.bucket)/3600)*3600 AS \"time\", x FROM t WHERE "
                   "h.bucket BETWEEN '2026-01-05T00:00:00Z' AND '2026-01-12T00:00:00Z' "
                   "AND a > '2026-01-05T00:00:00Z' AND b < '2026-01-12T00:00:00Z' "
                   "AND floor(extract(epoch from c)/300)*300 > 0 AND e >= 1767571200 AND e <= 1768176000")


def test_template_variables_single_multi_all_and_custom_all():
    sql = "t = '$tenant' AND w IN ($ward) AND k IN (${kind}) AND [[tenant]] = 1"
    assert macros.expand(sql, T0, T1, VARS, {"tenant": "o'k", "ward": ["n"], "kind": macros.ALL}) == \
        "t = 'o''k' AND w IN ('n') AND k IN ('air','noise') AND o''k = 1"
    assert macros.expand("w IN ($ward)", T0, T1, VARS, {"ward": macros.ALL}) == "w IN ('__all')"
    assert macros.expand("w IN ($ward)", T0, T1, VARS, {"ward": ["n", "s'"]}) == "w IN ('n','s''')"
    for bad in ("$nope", "$__timeFilter", "$__macro(x)"):
        with pytest.raises(ValueError):
            macros.expand(bad, T0, T1, VARS, {})
    with pytest.raises(ValueError):
        macros.expand("$tenant", T0, T1, VARS, {"tenant": ["a", "b"]})


# --------------------------------------------------------------------------- provisioning and push


def test_provisioning_files_name_the_datasource_and_hold_no_secrets():
    ds = yaml.safe_load((ROOT / "dashboards/provisioning/datasources.yaml").read_text())["datasources"]
    assert [(d["uid"], d["type"]) for d in ds] == [(DS_UID, DS_TYPE)]
    text = (ROOT / "dashboards/provisioning/datasources.yaml").read_text()
    assert "${STREETSENSE_PG_PASSWORD}" in ds[0]["secureJsonData"]["password"]
    for value in (ds[0]["url"], ds[0]["user"], ds[0]["jsonData"]["database"]):
        assert value.startswith("${")
    assert "password:" in text and text.count("password: ${") == 1
    prov = yaml.safe_load((ROOT / "dashboards/provisioning/dashboards.yaml").read_text())["providers"]
    assert prov[0]["type"] == "file" and prov[0]["options"]["path"].startswith("${STREETSENSE_DASHBOARDS_PATH")


def test_push_command_creates_the_folder_and_every_dashboard_over_http():
    app, seen = FastAPI(), {"folders": {}, "dashboards": [], "auth": set()}

    @app.middleware("http")
    async def auth(request: Request, call_next):
        seen["auth"].add(request.headers.get("authorization"))
        return await call_next(request)

    @app.get("/api/folders/{uid}")
    def get_folder(uid: str):
        if uid not in seen["folders"]:
            raise HTTPException(404, "folder not found")
        return seen["folders"][uid]

    @app.post("/api/folders")
    async def create_folder(request: Request):
        body = await request.json()
        seen["folders"][body["uid"]] = {"uid": body["uid"], "title": body["title"], "id": 1}
        return seen["folders"][body["uid"]]

    @app.post("/api/dashboards/db")
    async def save(request: Request):
        body = await request.json()
        seen["dashboards"].append(body)
        return {"status": "success", "uid": body["dashboard"]["uid"], "version": 1}

    with serve(app) as url:
        out = push_command(url, "glsa_test", "Street Sense")
        assert [r["uid"] for r in out] == [s.uid for s in P.ALL]
        push_command(url, "glsa_test", "Street Sense")          # second push: folder exists, overwrite
    assert seen["auth"] == {"Bearer glsa_test"}
    assert list(seen["folders"]) == ["streetsense-street-sense"]
    assert len(seen["dashboards"]) == 2 * len(P.ALL)
    assert all(d["overwrite"] and d["folderUid"] == "streetsense-street-sense" for d in seen["dashboards"])
    assert seen["dashboards"][0]["dashboard"]["panels"] == models()["ss-operations"]["panels"]


# --------------------------------------------------------------------------- every panel's SQL, for real


def variable_sets(loaded, conn) -> list[dict]:
    wards = [w for (w,) in conn.execute("SELECT DISTINCT ward FROM assets WHERE ward IS NOT NULL ORDER BY 1")]
    base = {"tenant": loaded.tenant, "tz": "Europe/London", "noise_day": "55", "noise_night": "45"}
    return [{**base, "ward": macros.ALL, "kind": macros.ALL},
            {**base, "ward": wards[:2], "kind": ["bin_fill", "air"]},
            {**base, "ward": [wards[-1]], "kind": ["noise"], "noise_day": "50", "noise_night": "40"}]


def run_every_panel(url: str, loaded, end: dt.datetime | None = None) -> dict[tuple[str, str], int]:
    """Run every panel of every dashboard for [loaded.start, end] under several variable
    settings; returns (uid, title) -> rows under the first (All) setting.

    ``end`` defaults to now.  The simulated week ends at midnight UTC, though, and
    panels that look at the hours just before the end of the range ("Time to
    full": the last 12 hourly means) find nothing there later in the day, a state
    live data never leaves them in; panels empty up to now are therefore run again
    on a range that ends an hour after the data."""
    if end is None:
        counts = run_every_panel(url, loaded, dt.datetime.now(dt.UTC))
        if any(n == 0 for n in counts.values()):
            again = run_every_panel(url, loaded, loaded.end + dt.timedelta(hours=1))
            counts = {k: n or again[k] for k, n in counts.items()}
        return counts
    counts = {}
    built = models()
    with psycopg.connect(url) as c:
        sets = variable_sets(loaded, c)
        for spec in P.ALL:
            variables = macros.dashboard_variables(built[spec.uid])
            for i, values in enumerate(sets):
                for p in spec.panels:
                    sql = macros.expand(p.sql, loaded.start, end, variables, values)
                    cur = c.execute(sql)
                    rows = cur.fetchall()
                    assert tuple(col.name for col in cur.description) == p.columns, (spec.uid, p.title)
                    if i == 0:
                        counts[(spec.uid, p.title)] = len(rows)
                    if p.format == "time_series" and rows:
                        t0, t1 = loaded.start.timestamp(), end.timestamp()
                        assert all(t0 - 86400 <= float(r[0]) <= t1 for r in rows), p.title
    return counts


def check_counts(counts: dict, loaded) -> None:
    empty = sorted(t for (_, t), n in counts.items() if n == 0 and t not in MAY_BE_EMPTY)
    assert not empty, f"panels without rows on a simulated week: {empty}"
    assert counts[("ss-operations", "Devices online")] == 1
    assert counts[("ss-air", "DAQI by site (24 h to the end of the range)")] == 3
    assert counts[("ss-bins", "Fill level")] == 60


@pytest.fixture
def week(db_url):
    from dashboards.simdata import load

    return db_url, load(db_url, days=7)


def test_every_panel_runs_on_plain_postgresql(week):
    url, loaded = week
    assert loaded.readings > 100_000 and loaded.alerts > 5 and loaded.quarantined > 0
    counts = run_every_panel(url, loaded)
    check_counts(counts, loaded)


def test_panel_values_agree_with_the_raw_readings(week):
    """Spot checks of what the panels compute, against raw readings."""
    url, loaded = week
    built = models()
    vals = {"tenant": loaded.tenant, "ward": macros.ALL, "kind": macros.ALL}
    end = loaded.end
    spec = next(p for p in P.AIR.panels if p.title.startswith("DAQI"))
    with psycopg.connect(url) as c:
        rows = c.execute(macros.expand(spec.sql, loaded.start, end, macros.dashboard_variables(built["ss-air"]),
                                       vals)).fetchall()
        for site, _w, _la, _lo, pm25, pm10, daqi, band in rows:
            raw = c.execute("""SELECT avg(value) FILTER (WHERE metric = 11), avg(value) FILTER (WHERE metric = 12)
                               FROM readings r JOIN devices d ON d.id = r.device_id
                               WHERE d.device_id = %s AND time >= %s AND time < %s""",
                            (site, end - dt.timedelta(hours=24), end)).fetchone()
            assert float(pm25) == pytest.approx(raw[0], abs=0.051) and float(pm10) == pytest.approx(raw[1], abs=0.051)
            bands25 = [12, 24, 36, 42, 48, 54, 59, 65, 71]
            bands10 = [17, 34, 51, 59, 67, 76, 84, 92, 101]
            expect = 1 + max(sum(round(float(pm25)) >= b for b in bands25), sum(round(float(pm10)) >= b for b in bands10))
            assert daqi == expect and band in ("Low", "Moderate", "High", "Very High")
        spec = P.OPERATIONS.panels[1]
        rows = c.execute(macros.expand(spec.sql, loaded.start, end, macros.dashboard_variables(built["ss-operations"]),
                                       vals)).fetchall()
        total = c.execute("SELECT count(*) FROM readings WHERE time >= %s AND time < %s", (loaded.start, end)).fetchone()[0]
        assert sum(float(v) for _, _, v in rows) * 3600 == pytest.approx(total)
