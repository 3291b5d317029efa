"""The API over real HTTP (uvicorn) against a real, migrated PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx
import psycopg
import pytest

from api.app import create_app
from ingest.migrate import maintain
from ingest.store import Batch, ReadingStore
from tests.support.api_auth import admin_headers, bearer, make_token
from tests.support.http import serve

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def seed(db_url: str) -> None:
    with psycopg.connect(db_url) as c:
        c.execute("INSERT INTO tenants VALUES ('leeds', 'Leeds City Council')")
        c.execute("INSERT INTO devices (tenant, device_id, kind) VALUES ('leeds', 'bin-0001', 'bin_fill')")
        pk = c.execute("SELECT id FROM devices").fetchone()[0]
    # 48 hours of 10-minute fill readings: value = hour of the series / 100
    rows = [(int((T0 + timedelta(minutes=10 * i)).timestamp() * 1000), pk, 2, (i // 6) / 100) for i in range(288)]
    store = ReadingStore(psycopg.connect(db_url), "test")
    store.write(Batch.from_rows(rows, messages=1))
    store.conn.close()
    with psycopg.connect(db_url) as c:
        maintain(c)


@pytest.fixture
def api(db_url):
    seed(db_url)
    with serve(create_app(db_url)) as base, httpx.Client(base_url=base, timeout=10,
                                                          headers=admin_headers(db_url, "leeds")) as client:
        yield client


def test_health_and_openapi(api):
    r = api.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["storage"] == "plain"
    spec = api.get("/openapi.json").json()
    assert {"/health", "/devices", "/readings", "/devices/{tenant}/{device_id}"} <= set(spec["paths"])


def test_device_crud(api):
    body = {"tenant": "leeds", "device_id": "air-0007", "kind": "air", "board": "picow", "lat": 53.8, "lon": -1.55}
    r = api.post("/devices", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "provisioned" and r.json()["board"] == "picow"
    assert api.post("/devices", json=body).status_code == 409
    assert api.post("/devices", json={**body, "device_id": "Bad Id"}).status_code == 422
    assert api.post("/devices", json={**body, "tenant": "nowhere"}).status_code == 404
    assert api.post("/devices", json={**body, "device_id": "x-1", "asset_id": "NO-SUCH"}).status_code == 422
    r = api.patch("/devices/leeds/air-0007", json={"status": "active", "firmware": "0.2.0"})
    assert r.status_code == 200 and r.json()["status"] == "active" and r.json()["lat"] == 53.8
    listed = api.get("/devices", params={"tenant": "leeds", "kind": "air"}).json()
    assert [d["device_id"] for d in listed] == ["air-0007"]
    assert api.delete("/devices/leeds/air-0007").status_code == 204
    assert api.get("/devices/leeds/air-0007").json()["status"] == "retired"
    assert api.get("/devices/leeds/nope").status_code == 404


def test_readings_raw_and_buckets(api):
    p = {"tenant": "leeds", "device": "bin-0001", "metric": "fill",
         "start": T0.isoformat(), "end": (T0 + timedelta(hours=48)).isoformat()}
    raw = api.get("/readings", params=p).json()
    assert raw["unit"] == "/" and len(raw["points"]) == 288
    assert raw["points"][6]["value"] == pytest.approx(0.01)
    hourly = api.get("/readings", params={**p, "bucket": "1h"}).json()["buckets"]
    assert len(hourly) == 48 and all(b["n"] == 6 for b in hourly)
    assert hourly[5]["avg"] == pytest.approx(0.05)
    daily = api.get("/readings", params={**p, "bucket": "1d"}).json()["buckets"]
    assert [b["n"] for b in daily] == [144, 144]
    assert daily[0]["max"] == pytest.approx(0.23) and daily[1]["min"] == pytest.approx(0.24)
    q30 = api.get("/readings", params={**p, "bucket": "30m"}).json()["buckets"]
    assert len(q30) == 96 and q30[0]["n"] == 3
    assert api.get("/readings", params={**p, "bucket": "fortnightly"}).status_code == 422
    assert api.get("/readings", params={**p, "metric": "nonsense"}).status_code == 404
    assert api.get("/readings", params={**p, "device": "bin-9999"}).status_code == 404


def test_tokens(db_url):
    seed(db_url)
    tok = make_token(db_url, "operations", "leeds")
    with serve(create_app(db_url)) as base, httpx.Client(base_url=base) as c:
        assert c.get("/devices", params={"tenant": "leeds"}).status_code == 401
        assert c.get("/devices", params={"tenant": "leeds"}, headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = c.get("/devices", params={"tenant": "leeds"}, headers=bearer(tok))
        assert ok.status_code == 200 and len(ok.json()) == 1
        assert c.get("/devices", params={"tenant": "leeds"}, headers={"X-API-Key": tok}).status_code == 200
