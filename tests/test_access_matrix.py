"""Every route of the real app, called over real HTTP against a real, migrated
PostgreSQL, with every role (tokens made by streetsense.tokens), no token, and
revoked, expired, wrong and malformed tokens.

The expected matrix below is written out by hand, independently of the
``require(...)`` declarations in api/: a wrong declaration, a route nobody
declared, or a route missing from this table fails here.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import httpx
import psycopg
import pytest
from fastapi import Depends, FastAPI

from api.app import create_app
from api.auth import api_routes, check_declared, declared_roles, require
from streetsense import tokens
from tests.support.api_auth import bearer, make_token
from tests.support.http import serve

TENANT = "leeds"
HOUSEHOLD = "hh-0001"

EVERYONE = frozenset({"admin", "operations", "field_engineer", "crew", "resident", "public", "integration"})
DEVICE_READ = frozenset({"admin", "operations", "field_engineer", "integration"})
DEVICE_WRITE = frozenset({"admin", "field_engineer"})
ALERT_READ = frozenset({"admin", "operations", "integration"})
OPS = frozenset({"admin", "operations"})
HOUSEHOLD_ROLES = frozenset({"admin", "resident"})
PLAN_READ = frozenset({"admin", "operations", "crew", "integration"})
CREW = frozenset({"admin", "operations", "crew"})

EXPECTED: dict[tuple[str, str], frozenset[str]] = {
    ("GET", "/health"): EVERYONE,
    ("GET", "/devices"): DEVICE_READ,
    ("POST", "/devices"): DEVICE_WRITE,
    ("GET", "/devices/{tenant}/{device_id}"): DEVICE_READ,
    ("PATCH", "/devices/{tenant}/{device_id}"): DEVICE_WRITE,
    ("DELETE", "/devices/{tenant}/{device_id}"): DEVICE_WRITE,
    ("GET", "/readings"): DEVICE_READ,
    ("GET", "/alerts"): ALERT_READ,
    ("GET", "/alerts/{alert_id}"): ALERT_READ,
    ("POST", "/alerts/{alert_id}/acknowledge"): OPS,
    ("POST", "/alerts/{alert_id}/resolve"): OPS,
    ("POST", "/alerts/{alert_id}/dismiss"): OPS,
    ("POST", "/consents"): HOUSEHOLD_ROLES,
    ("GET", "/consents"): HOUSEHOLD_ROLES,
    ("POST", "/consents/{consent_id}/withdraw"): HOUSEHOLD_ROLES,
    ("GET", "/residents/{tenant}/households/{household}/export"): HOUSEHOLD_ROLES,
    ("POST", "/routes/plans"): OPS,
    ("GET", "/routes/plans/{plan_id}"): PLAN_READ,
    ("POST", "/routes/plans/{plan_id}/replan"): OPS,
    ("PUT", "/routes/fleets/{tenant}/{name}"): OPS,
    ("GET", "/routes/fleets/{tenant}/{name}"): PLAN_READ,
    ("GET", "/crew/{plan_id}/{route_id}"): CREW,
    ("GET", "/crew/{plan_id}/{route_id}.gpx"): CREW,
    ("GET", "/crew/{plan_id}/{route_id}.geojson"): CREW,
    ("POST", "/crew/{plan_id}/{route_id}/reports"): CREW,
}
#: Open data: every GET under these prefixes is for everyone, anonymous included.
OPEN_PREFIXES = ("/sta/v1.1", "/opendata/v1/")

# values for path and required query parameters, by name
VALUES = {"tenant": TENANT, "device_id": "bin-0001", "device": "bin-0001", "metric": "fill", "alert_id": "1",
          "consent_id": "1", "household": HOUSEHOLD, "plan_id": "1", "route_id": "r1", "name": "default",
          "ident": f"{TENANT}.air-0001", "fmt": "csv", "dataset": "air", "type_": "AirQualityObserved"}


def expected(method: str, path: str) -> frozenset[str]:
    if (method, path) in EXPECTED:
        return EXPECTED[(method, path)]
    if method == "GET" and path.startswith(OPEN_PREFIXES):
        return EVERYONE
    raise KeyError(f"{method} {path} is not in the expected access matrix: add it to tests/test_access_matrix.py")


def operations(spec: dict) -> list[tuple[str, str, dict]]:
    out = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            out.append((method.upper(), path, op))
    return out


def request_for(path: str, op: dict) -> tuple[str, dict]:
    url = re.sub(r"\{(\w+)\}", lambda m: VALUES[m.group(1)], path)
    query = {p["name"]: VALUES[p["name"]] for p in op.get("parameters", [])
             if p["in"] == "query" and p.get("required")}
    return url, query


@pytest.fixture
def town(db_url):
    with psycopg.connect(db_url, autocommit=True) as c:
        c.execute("INSERT INTO tenants VALUES ('leeds', 'Leeds City Council'), ('york', 'City of York Council')")
        c.execute("""INSERT INTO assets (tenant, asset_id, bin_kind, household)
                     VALUES ('leeds', 'BIN-1', 'household', %s)""", (HOUSEHOLD,))
        c.execute("""INSERT INTO devices (tenant, device_id, kind, asset_id)
                     VALUES ('leeds', 'bin-0001', 'bin_fill', 'BIN-1'), ('leeds', 'air-0001', 'air', NULL)""")
    creds: dict[str, dict[str, str]] = {"public": {}}
    for role in tokens.TOKEN_ROLES:
        creds[role] = bearer(make_token(db_url, role, TENANT, household=HOUSEHOLD if role == "resident" else None))
    creds["platform_admin"] = bearer(make_token(db_url, "admin", None))
    revoked = make_token(db_url, "admin", None, name="gone")
    with psycopg.connect(db_url, autocommit=True) as c:
        assert tokens.revoke(c, tokens.parse(revoked), "test")
    expired = make_token(db_url, "admin", None, name="old", expires_in=timedelta(seconds=-1))
    good = make_token(db_url, "admin", None, name="victim")
    wrong_secret = good[:-6] + ("AAAAAA" if not good.endswith("AAAAAA") else "BBBBBB")
    bad = {"revoked": bearer(revoked), "expired": bearer(expired), "wrong_secret": bearer(wrong_secret),
           "malformed": bearer("not-a-token"), "basic_scheme": {"Authorization": "Basic YWRtaW46YWRtaW4="},
           "api_key_wrong": {"X-API-Key": wrong_secret}}
    with serve(create_app(db_url)) as base:
        yield base, creds, bad


def test_every_route_is_declared_as_expected():
    app = create_app("postgresql://unused.invalid/x")
    spec_ops = {(m, p) for m, p, _ in operations(app.openapi())}
    declared = {(m, path): declared_roles(dep) for methods, path, dep in api_routes(app) for m in methods}
    assert set(declared) == spec_ops                  # every API route is in the spec, and the other way round
    wrong = {f"{m} {p}": (sorted(roles or ()), sorted(expected(m, p)))
             for (m, p), roles in declared.items() if roles != expected(m, p)}
    assert not wrong, f"declared vs expected roles differ: {wrong}"
    stale = {k for k in EXPECTED if k not in spec_ops}
    assert not stale, f"expected-matrix entries with no route: {stale}"


def test_an_undeclared_route_is_refused():
    app = FastAPI()

    @app.get("/secret")
    def secret() -> dict:
        return {}

    with pytest.raises(RuntimeError, match="GET /secret"):
        check_declared(app)

    @app.get("/fine")
    def fine(_: Annotated[object, Depends(require("admin"))]) -> dict:
        return {}

    with pytest.raises(RuntimeError) as e:
        check_declared(app)
    assert "/secret" in str(e.value) and "/fine" not in str(e.value)
    with pytest.raises(ValueError):
        require("superuser")


def test_access_matrix_over_http(town):
    base, creds, bad = town
    spec = httpx.get(base + "/openapi.json").json()
    ops = operations(spec)
    assert len(ops) >= 40
    mismatches = []
    calls = 0
    with httpx.Client(base_url=base, timeout=60) as http:
        for method, path, op in ops:
            url, query = request_for(path, op)
            body = {} if method in ("POST", "PUT", "PATCH") else None
            allowed = expected(method, path)
            for who, headers in creds.items():
                role = "admin" if who == "platform_admin" else who
                r = http.request(method, url, params=query, json=body, headers=headers)
                calls += 1
                if role in allowed:
                    ok = r.status_code not in (401, 403) and r.status_code < 500
                    want = "not 401/403/5xx"
                elif role == "public":
                    ok = r.status_code == 401 and r.headers.get("www-authenticate") == "Bearer"
                    want = "401"
                else:
                    ok = r.status_code == 403
                    want = "403"
                if not ok:
                    mismatches.append(f"{who:15} {method} {path}: {r.status_code} (want {want}) {r.text[:120]}")
            for who, headers in bad.items():           # a bad credential is refused even on open routes
                r = http.request(method, url, params=query, json=body, headers=headers)
                calls += 1
                if r.status_code != 401:
                    mismatches.append(f"{who:15} {method} {path}: {r.status_code} (want 401)")
    assert not mismatches, "\n" + "\n".join(mismatches)
    assert calls == len(ops) * (len(creds) + len(bad))


def test_tokens_cli_shows_the_token_once_and_stores_only_its_hash(db_url, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from streetsense.cli import app
    from streetsense.settings import get_settings

    with psycopg.connect(db_url, autocommit=True) as c:
        c.execute("INSERT INTO tenants VALUES ('leeds', 'Leeds City Council')")
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("STREETSENSE_DATA_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    try:
        run = CliRunner().invoke
        r = run(app, ["tokens", "create", "--name", "ops-anna", "--role", "operations", "--tenant", "leeds"])
        assert r.exit_code == 0, r.output
        info, token = r.output.strip().splitlines()
        key_id = json.loads(info)["key_id"]
        assert tokens.parse(token) == key_id
        out = tmp_path / "eng.token"
        r = run(app, ["tokens", "create", "--name", "eng", "--role", "field_engineer", "--tenant", "leeds",
                      "--expires-days", "30", "--out", str(out)])
        assert r.exit_code == 0 and "ss_" not in r.output and out.stat().st_mode & 0o777 == 0o600
        assert run(app, ["tokens", "create", "--name", "x", "--role", "crew"]).exit_code != 0     # needs a tenant
        listed = run(app, ["tokens", "list"]).output
        assert key_id in listed and token not in listed and out.read_text().strip() not in listed
        with psycopg.connect(db_url) as c:
            stored = c.execute("SELECT token_hash FROM api_tokens WHERE key_id = %s", (key_id,)).fetchone()[0]
        assert bytes(stored) == tokens.token_hash(token) and token.encode() not in bytes(stored)
        assert json.loads(run(app, ["tokens", "revoke", key_id]).output)["revoked"] is True
        assert run(app, ["tokens", "revoke", key_id]).exit_code == 1
        assert key_id not in run(app, ["tokens", "list"]).output
        assert key_id in run(app, ["tokens", "list", "--all"]).output
        # the Grafana datasource role: its DSN goes to a 0600 file, never to the output
        r = run(app, ["db", "datasource-role", "--tenant", "leeds", "--role", f"grafana_t_{tmp_path.name[-8:]}"])
        assert r.exit_code == 0, r.output
        dsn_file = Path(json.loads(r.output)["dsn_file"])
        assert dsn_file.stat().st_mode & 0o777 == 0o600
        dsn = dsn_file.read_text().strip()
        assert "password=" in dsn and dsn.split("password=")[1].split()[0] not in r.output
        with psycopg.connect(dsn) as c:
            assert c.execute("SELECT count(*) FROM tenants").fetchone()[0] == 1
        role = json.loads(r.output)["role"]
        with psycopg.connect(db_url, autocommit=True) as c:
            c.execute(f'DROP OWNED BY "{role}"')
            c.execute(f'DROP ROLE "{role}"')
    finally:
        get_settings.cache_clear()
