"""Open data over real HTTP on a real PostgreSQL with a simulated town: the
SensorThings subset (api/sta.py), CSV/GeoJSON/NGSI-LD downloads and the
household export (api/opendata.py).  Household bin data must never be public."""

from __future__ import annotations

import csv
import io
import itertools
import json

import httpx
import psycopg
import pytest
from fastapi import FastAPI

from api import opendata, sta
from api.auth import make_pool
from tests.support.api_auth import bearer, make_token, mount
from tests.support.http import serve


@pytest.fixture(scope="module")
def town(pg_admin_url, tmp_path_factory):
    import uuid

    from dashboards.simdata import load
    from ingest.migrate import migrate
    from tests.conftest import _with_db

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(pg_admin_url, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    url = _with_db(pg_admin_url, name)
    with psycopg.connect(url) as c:
        migrate(c, timescale="off")
    loaded = load(url, days=2)
    with psycopg.connect(url) as c:
        house = c.execute("""SELECT d.device_id, a.household FROM devices d JOIN assets a USING (tenant, asset_id)
                             WHERE a.bin_kind = 'household' ORDER BY 1""").fetchall()
        street = [r[0] for r in c.execute("""SELECT d.device_id FROM devices d JOIN assets a USING (tenant, asset_id)
                                             WHERE a.bin_kind = 'street'""")]
    pool = make_pool(url, max_size=2, open=True)
    app = FastAPI()
    mount(app, pool)
    resident = bearer(make_token(url, "resident", loaded.tenant, household=house[0][1]))
    admin = bearer(make_token(url, "admin", loaded.tenant))
    app.include_router(sta.router(pool))
    app.include_router(opendata.router(pool))
    try:
        with serve(app) as base:
            yield {"url": url, "base": base, "loaded": loaded, "house": house, "street": street,
                   "resident": resident, "admin": admin}
    finally:
        pool.close()
        with psycopg.connect(pg_admin_url, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def get(town, path, **params):
    r = httpx.get(town["base"] + path, params=params, timeout=30)
    assert r.status_code == 200, r.text
    return r


def test_things_are_public_sites_only_and_household_bins_never_appear(town):
    assert town["house"] and town["street"]
    things = get(town, "/sta/v1.1/Things", **{"$top": 1000, "$count": "true"}).json()
    names = {t["name"] for t in things["value"]}
    assert things["@iot.count"] == len(names) == 3 + 3 + len(town["street"])
    assert set(town["street"]) <= names
    household_ids = {d for d, _ in town["house"]}
    households = {h for _, h in town["house"]}
    assert not names & household_ids
    # nowhere in any public output: not as a thing, datastream, observation, download or NGSI-LD entity
    bodies = [json.dumps(get(town, f"/sta/v1.1/{e}", **{"$top": 1000}).json())
              for e in ("Things", "Locations", "Datastreams", "Observations")]
    bodies += [get(town, f"/opendata/v1/{d}.{f}").text for d in ("air", "noise", "bins") for f in ("csv", "geojson")]
    bodies += [get(town, f"/opendata/v1/ngsi-ld/{t}").text
               for t in ("WasteContainer", "AirQualityObserved", "NoiseLevelObserved")]
    bodies.append(get(town, "/opendata/v1/road-defects.geojson").text)
    for body in bodies:
        for ident in household_ids | households:
            assert f'"{ident}"' not in body and f",{ident}," not in body and f"{ident}." not in body
    dev = sorted(household_ids)[0]
    tenant = town["loaded"].tenant
    assert httpx.get(f"{town['base']}/sta/v1.1/Things('{tenant}.{dev}')").status_code == 404
    assert httpx.get(f"{town['base']}/sta/v1.1/Datastreams('{tenant}.{dev}.fill')").status_code == 404


def test_paging_links_filter_and_orderby(town):
    first = get(town, "/sta/v1.1/Things", **{"$top": 2, "$orderby": "name desc"}).json()
    assert len(first["value"]) == 2 and first["value"][0]["name"] > first["value"][1]["name"]
    t = first["value"][0]
    assert t["@iot.selfLink"].endswith(f"/Things('{t['@iot.id']}')")
    assert httpx.get(t["@iot.selfLink"]).json()["@iot.id"] == t["@iot.id"]
    nxt = httpx.get(first["@iot.nextLink"]).json()
    assert nxt["value"][0]["name"] < first["value"][1]["name"]
    air = get(town, "/sta/v1.1/Things", **{"$filter": "properties/kind eq 'air'"}).json()["value"]
    assert len(air) == 3 and all(x["properties"]["kind"] == "air" for x in air)
    ds = get(town, f"/sta/v1.1/Things('{air[0]['@iot.id']}')/Datastreams").json()["value"]
    assert {d["ObservedProperty"]["name"] for d in ds} >= {"pm25", "pm10"}
    pm = next(d for d in ds if d["ObservedProperty"]["name"] == "pm25")
    assert pm["unitOfMeasurement"]["symbol"] == "ug/m3"
    start = town["loaded"].start.isoformat().replace("+00:00", "Z")
    obs = get(town, f"/sta/v1.1/Datastreams('{pm['@iot.id']}')/Observations",
              **{"$filter": f"phenomenonTime ge {start} and result gt 0", "$orderby": "phenomenonTime desc",
                 "$top": 5}).json()
    assert len(obs["value"]) == 5 and "@iot.nextLink" in obs
    times = [o["phenomenonTime"] for o in obs["value"]]
    assert times == sorted(times, reverse=True) and all(o["result"] > 0 for o in obs["value"])
    with psycopg.connect(town["url"]) as c:
        n = c.execute("""SELECT count(*) FROM readings_hourly h JOIN devices d ON d.id = h.device_id
                         WHERE d.tenant || '.' || d.device_id = %s AND h.metric = 11 AND h.avg > 0""",
                      (air[0]["@iot.id"],)).fetchone()[0]
    counted = get(town, f"/sta/v1.1/Datastreams('{pm['@iot.id']}')/Observations",
                  **{"$filter": "result gt 0", "$count": "true", "$top": 1}).json()["@iot.count"]
    assert counted == n
    for bad in ("name sw 'x'", "secret eq 1", "name eq 'x' or name eq 'y'"):
        assert httpx.get(town["base"] + "/sta/v1.1/Things", params={"$filter": bad}).status_code == 400
    loc = get(town, "/sta/v1.1/Locations", **{"$top": 1}).json()["value"][0]
    assert loc["location"]["type"] == "Point" and loc["encodingType"] == "application/geo+json"


def test_unfiltered_observations_page_through_every_row_once_in_datastream_order(town):
    """The default order walks readings_hourly's key (device, metric, hour): every page is a
    slice of one total order, so following nextLink yields each observation exactly once."""
    page = get(town, "/sta/v1.1/Observations", **{"$top": 500, "$count": "true"}).json()
    total, seen = page["@iot.count"], []
    while True:
        seen += [o["@iot.id"] for o in page["value"]]
        if "@iot.nextLink" not in page:
            break
        page = httpx.get(page["@iot.nextLink"], timeout=30).json()
    assert total > 500 and len(seen) == len(set(seen)) == total
    ds = [i.rsplit(".", 1) for i in seen]
    runs = [k for k, _ in itertools.groupby(d for d, _ in ds)]
    assert len(runs) == len(set(runs)) > 1                   # one datastream after another
    for _, grp in itertools.groupby(ds, key=lambda x: x[0]):
        times = [int(t) for _, t in grp]
        assert times == sorted(times)                         # hours ascending within each
    # single entities are found by their id's parts (indexed columns); ids of another shape name nothing
    one = ds[0][0]
    assert get(town, f"/sta/v1.1/Datastreams('{one}')").json()["@iot.id"] == one
    assert get(town, f"/sta/v1.1/Things('{one.rsplit('.', 1)[0]}')").json()["@iot.id"] == one.rsplit(".", 1)[0]
    for bad in ("Things('nodots')", f"Things('{one}')", f"Datastreams('{one.rsplit('.', 1)[0]}')",
                f"Datastreams('{one}.x')/Observations", "Datastreams('..')"):
        assert httpx.get(f"{town['base']}/sta/v1.1/{bad}").status_code == 404, bad


def test_downloads_and_ngsi_ld(town):
    rows = list(csv.DictReader(io.StringIO(get(town, "/opendata/v1/bins.csv").text)))
    assert rows and {r["device_id"] for r in rows} <= set(town["street"])
    air = get(town, "/opendata/v1/air.geojson").json()
    assert air["type"] == "FeatureCollection" and len(air["features"]) == 3
    wc = get(town, "/opendata/v1/ngsi-ld/WasteContainer").json()
    assert wc and all(e["type"] == "WasteContainer" and e["id"].startswith("urn:ngsi-ld:WasteContainer:") for e in wc)
    assert all(e["fillingLevel"]["type"] == "Property" and 0 <= e["fillingLevel"]["value"] <= 1 for e in wc)
    aq = get(town, "/opendata/v1/ngsi-ld/AirQualityObserved").json()
    assert all(e["pm25"]["unitCode"] == "GQ" and e["location"]["type"] == "GeoProperty" for e in aq)
    nl = get(town, "/opendata/v1/ngsi-ld/NoiseLevelObserved").json()
    assert len(nl) == 3 and all("LAeq" in e and "dateObserved" in e for e in nl)
    assert get(town, "/opendata/v1/road-defects.geojson").json()["type"] == "FeatureCollection"


def test_household_export_is_complete_and_audited(town):
    dev, household = town["house"][0]
    tenant = town["loaded"].tenant
    path = f"/residents/{tenant}/households/{household}/export"
    assert httpx.get(town["base"] + path).status_code == 401                       # never public
    body = httpx.get(town["base"] + path, headers=town["resident"]).json()       # the household itself
    assert [d["device_id"] for d in body["devices"]] == [d for d, h in town["house"] if h == household]
    assert body["assets"][0]["household"] == household and body["readings_hourly"]
    assert {r["device_id"] for r in body["readings_hourly"]} == {dev}
    assert body["consent_page"].startswith("/consents?")
    with psycopg.connect(town["url"]) as c:
        assert c.execute("SELECT count(*) FROM audit_log WHERE action = 'household.export' AND subject = %s",
                         (household,)).fetchone()[0] == 1
    assert httpx.get(f"{town['base']}/residents/{tenant}/households/nobody/export",
                     headers=town["admin"]).status_code == 404
    other = next(h for _, h in town["house"] if h != household)     # a resident sees only their own household
    assert httpx.get(f"{town['base']}/residents/{tenant}/households/{other}/export",
                     headers=town["resident"]).status_code == 404
    assert httpx.get(f"{town['base']}/residents/{tenant}/households/{other}/export",
                     headers=town["admin"]).status_code == 200
