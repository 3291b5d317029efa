"""Tenant isolation on a real PostgreSQL: two councils with devices, readings,
alerts (one a welfare alert), consents, route plans, crew reports and
quarantine.  Council A's tokens, every role, read nothing of council B through
any API route (lists hold none of B's rows, B's ids are 404); council A's
Grafana datasource role sees no B row in any table or view it may select, and
cannot widen that with SET, set_config, SET ROLE or temporary tables; a pooled
connection never carries one request's tenant into the next.

B's stored text carries the marker ``zzsecretb`` (street, ward, firmware,
summaries, consent details, plan inputs), which no request ever contains, so
finding it anywhere in a response or a row is a leak.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime, timedelta, timezone

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from api.app import create_app
from ingest.migrate import maintain, migrate
from streetsense import datasource, tokens
from tests.support.api_auth import bearer, make_token
from tests.support.http import serve

A, B = "leeds", "york"
MARK = {A: "zzsecreta", B: "zzsecretb"}
HH = {A: "hh-a1", B: "hh-b1"}
T0 = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=30)


def seed(db_url: str) -> dict[str, dict]:
    """Both councils' data, as the owner; returns the ids of each."""
    ids: dict[str, dict] = {}
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as c:
        for t, lat in ((A, 53.80), (B, 53.96)):
            m = MARK[t]
            c.execute("INSERT INTO tenants VALUES (%s, %s)", (t, f"{t} council"))
            c.execute("""INSERT INTO assets (tenant, asset_id, bin_kind, household, street, ward, lat, lon)
                         VALUES (%(t)s, 'hb-1', 'household', %(hh)s, %(m)s || ' street', %(m)s || '-ward', %(lat)s, -1.5),
                                (%(t)s, 'sb-1', 'street', NULL, %(m)s || ' road', %(m)s || '-ward', %(lat)s, -1.6)""",
                      {"t": t, "hh": HH[t], "m": m, "lat": lat})
            c.execute("""INSERT INTO devices (tenant, device_id, kind, asset_id, status, firmware, lat, lon)
                         VALUES (%(t)s, 'bin-h', 'bin_fill', 'hb-1', 'active', %(m)s, %(lat)s, -1.5),
                                (%(t)s, 'bin-s', 'bin_fill', 'sb-1', 'active', %(m)s, %(lat)s, -1.6),
                                (%(t)s, 'air-1', 'air', NULL, 'active', %(m)s, %(lat)s, -1.55)""",
                      {"t": t, "m": m, "lat": lat})
            pks = {r["device_id"]: r["id"] for r in c.execute("SELECT id, device_id FROM devices WHERE tenant = %s",
                                                               (t,))}
            base = 0.25 if t == A else 0.75
            c.execute("""INSERT INTO readings (time, device_id, metric, value)
                         SELECT %s::timestamptz + make_interval(hours => h), d, m.id, %s + h / 1000.0
                         FROM generate_series(0, 23) h, unnest(%s::bigint[]) d, metrics m
                         WHERE m.name = 'fill'""", (T0, base, [pks["bin-h"], pks["bin-s"]]))
            c.execute("""INSERT INTO readings (time, device_id, metric, value)
                         SELECT %s::timestamptz + make_interval(hours => h), %s, m.id, 10 + h
                         FROM generate_series(0, 23) h, metrics m WHERE m.name = 'pm25'""", (T0, pks["air-1"]))
            c.execute("""INSERT INTO ingest_log (worker, messages, readings, inserted, quarantined, min_time, max_time)
                         VALUES ('seed', 1, 72, 72, 0, %s, %s)""", (T0, T0 + timedelta(hours=23)))
            c.execute("INSERT INTO batches (device_id, seq, received_at, readings) VALUES (%s, 1, now(), 24)",
                      (pks["bin-h"],))
            consent = c.execute("""INSERT INTO consents (tenant, household, recipient_name, recipient_role,
                                       recipient_contact, purpose, evidence, granted_by)
                                   VALUES (%s, %s, %s || ' Recipient', 'daughter', 'someone@example.org', %s, %s, 'seed')
                                   RETURNING id""", (t, HH[t], m, m, m)).fetchone()["id"]
            alert = c.execute("""INSERT INTO alerts (tenant, kind, severity, entity, device_id, asset_id, window_start,
                                     summary, ward, lat, lon)
                                 VALUES (%s, 'overflow', 'high', 'sb-1', %s, 'sb-1', %s, %s || ' overflow', %s, %s, -1.6)
                                 RETURNING id""", (t, pks["bin-s"], T0, m, m, lat)).fetchone()["id"]
            welfare = c.execute("""INSERT INTO alerts (tenant, kind, severity, entity, device_id, asset_id, window_start,
                                       summary, welfare, household, consent_id)
                                   VALUES (%s, 'not_put_out_2', 'medium', 'hb-1', %s, 'hb-1', %s, %s || ' welfare',
                                           true, %s, %s) RETURNING id""",
                                (t, pks["bin-h"], T0, m, HH[t], consent)).fetchone()["id"]
            c.execute("""INSERT INTO alerts (tenant, kind, severity, entity, window_start, summary, lat, lon)
                         VALUES (%s, 'pothole', 'medium', %s || '-pothole', %s, %s, %s, -1.55)""",
                      (t, m, T0, m, lat))
            plan = c.execute("""INSERT INTO route_plans (tenant, plan_date, inputs, plan)
                                VALUES (%s, current_date, %s, %s) RETURNING id""",
                             (t, json.dumps({"marker": m}),
                              json.dumps({"feasible": True, "totals": {}, "marker": m, "routes": [
                                  {"route_id": "r1", "vehicle_type": "rcv", "events": [
                                      {"type": "stop", "asset_id": "hb-1", "household": HH[t], "street": m}]}]}))
                             ).fetchone()["id"]
            c.execute("""INSERT INTO crew_reports (plan_id, tenant, route_id, asset_id, status, client_id, reported_at,
                                                   note) VALUES (%s, %s, 'r1', 'hb-1', 'not_out', 'c1', now(), %s)""",
                      (plan, t, m))
            c.execute("""INSERT INTO quarantine (topic, tenant, device_id, reason_code, reason, payload, payload_sha256)
                         VALUES (%s, %s, 'bin-h', 'bad', %s, %s, %s)""",
                      (f"ss/v1/{t}/bin-h/up", t, m, m.encode(), m.encode().ljust(32, b"\0")))
            c.execute("INSERT INTO audit_log (actor, action, tenant, subject) VALUES ('seed', 'seed.row', %s, %s)", (t, m))
            ids[t] = {"pks": pks, "consent": consent, "alert": alert, "welfare": welfare, "plan": plan}
    with psycopg.connect(db_url) as c:
        maintain(c)
    return ids


@pytest.fixture
def councils(db_url):
    ids = seed(db_url)
    return db_url, ids


# ------------------------------------------------------------------------------------------------ the API

def _requests(spec: dict, ids: dict) -> list[tuple[str, str, str, dict, dict | None]]:
    """Every operation, aimed at council B's rows: (method, template, url, query, body)."""
    b = ids[B]
    values = {"tenant": B, "device_id": "bin-h", "alert_id": str(b["welfare"]), "consent_id": str(b["consent"]),
              "household": HH[B], "plan_id": str(b["plan"]), "route_id": "r1", "name": "default",
              "ident": f"{B}.air-1", "fmt": "geojson", "dataset": "bins", "type_": "WasteContainer"}
    query_values = {"tenant": B, "device": "bin-s", "metric": "fill"}
    bodies = {"/devices": {"tenant": B, "device_id": "new-1", "kind": "air"},
              "/consents": {"tenant": B, "household": HH[B], "recipient_name": "X", "recipient_role": "friend",
                            "recipient_contact": "x@example.org", "purpose": "p", "evidence": "e"},
              "/routes/plans": {"tenant": B, "date": str(T0.date()), "time_limit_s": 1},
              "/crew/{plan_id}/{route_id}/reports": {"client_id": "z", "asset_id": "hb-1", "status": "collected",
                                                     "reported_at": T0.isoformat()},
              "/alerts/{alert_id}/resolve": {"verdict": "true_positive"}}
    out = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            url = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)
            query = {p["name"]: query_values[p["name"]] for p in op.get("parameters", [])
                     if p["in"] == "query" and p.get("required")}
            if p_t := next((p for p in op.get("parameters", []) if p["in"] == "query" and p["name"] == "tenant"),
                           None):
                query[p_t["name"]] = B
            body = bodies.get(path, {}) if method in ("post", "put", "patch") else None
            out.append((method.upper(), path, url, query, body))
    return out


def test_council_a_tokens_read_nothing_of_council_b(councils):
    db_url, ids = councils
    a_tokens = {role: make_token(db_url, role, A, household=HH[A] if role == "resident" else None)
                for role in tokens.TOKEN_ROLES}
    with serve(create_app(db_url)) as base, httpx.Client(base_url=base, timeout=60) as http:
        # positive controls: each role does see its own council's data
        for role in ("admin", "operations", "field_engineer", "integration"):
            got = http.get("/devices", params={"tenant": A}, headers=bearer(a_tokens[role])).json()
            assert sorted(d["device_id"] for d in got) == ["air-1", "bin-h", "bin-s"], role
        for role in ("admin", "operations", "integration"):
            got = http.get("/alerts", params={"tenant": A}, headers=bearer(a_tokens[role])).json()
            assert ids[A]["alert"] in [x["id"] for x in got], role
        assert http.get(f"/routes/plans/{ids[A]['plan']}", headers=bearer(a_tokens["crew"])).status_code == 200
        own = http.get(f"/residents/{A}/households/{HH[A]}/export", headers=bearer(a_tokens["resident"]))
        assert own.status_code == 200 and MARK[A] in own.text
        assert len(http.get("/consents", params={"tenant": A}, headers=bearer(a_tokens["admin"])).json()) == 1
        # anonymous open data has both councils' public sites (published by design) ...
        assert MARK[B] in http.get("/sta/v1.1/Things").text
        # ... and the platform admin sees both councils
        platform = bearer(make_token(db_url, "admin", None))
        assert len(http.get("/devices", params={"tenant": B}, headers=platform).json()) == 3

        spec = http.get("/openapi.json").json()
        requests = _requests(spec, ids)
        leaks, calls = [], 0
        for role, tok in a_tokens.items():
            for method, path, url, query, body in requests:
                r = http.request(method, url, params=query, json=body, headers=bearer(tok))
                calls += 1
                where = f"{role} {method} {path} -> {r.status_code}"
                if MARK[B] in r.text or HH[B] in r.text:
                    leaks.append(f"{where}: B data in the response: {r.text[:200]}")
                if method != "GET" and r.status_code < 300:
                    leaks.append(f"{where}: a write into council B succeeded")
                if method == "GET" and "{" in path and r.status_code not in (403, 404, 422):
                    # a direct B id: 404 (not found), or 403 when the role may not use the route at all
                    if not path.startswith(("/sta/", "/opendata/")):
                        leaks.append(f"{where}: direct B id answered")
                if method == "GET" and r.status_code == 200 and path in ("/devices", "/alerts", "/consents"):
                    if r.json() != []:
                        leaks.append(f"{where}: B list not empty: {r.text[:200]}")
        assert calls == len(a_tokens) * len(requests)
        assert not leaks, "\n" + "\n".join(leaks)
        # open data asked for with a council token is that council's only
        things = http.get("/sta/v1.1/Things", headers=bearer(a_tokens["operations"])).json()["value"]
        assert things and {t["properties"]["tenant"] for t in things} == {A}
    with psycopg.connect(db_url) as c:              # nothing of B was changed by A's attempts
        assert c.execute("SELECT count(*) FROM devices WHERE tenant = %s AND status = 'active'", (B,)).fetchone()[0] == 3
        assert c.execute("SELECT count(*) FROM consents WHERE tenant = %s AND withdrawn_at IS NULL",
                         (B,)).fetchone()[0] == 1
        assert c.execute("SELECT count(*) FROM alerts WHERE tenant = %s AND status = 'open'", (B,)).fetchone()[0] == 3


def test_a_pooled_connection_never_carries_a_tenant_into_the_next_request(councils):
    db_url, ids = councils
    ops = {t: bearer(make_token(db_url, "operations", t)) for t in (A, B)}
    # one connection serves every request, so a tenant left bound would show at once
    with serve(create_app(db_url, pool_size=1)) as base, httpx.Client(base_url=base, timeout=30) as http:
        for i in range(6):
            for t in (A, B):
                other = B if t == A else A
                assert http.get(f"/devices/{t}/bin-h", headers=ops[t]).json()["firmware"] == MARK[t]
                assert http.get(f"/devices/{other}/bin-h", headers=ops[t]).status_code == 404
                # a failed request (bad body, refused write, bad token) in between changes nothing
                http.post("/devices", json={"tenant": other, "device_id": "x", "kind": "air"}, headers=ops[t])
                assert http.get("/devices", params={"tenant": other}, headers=bearer("ss_0123456789ab_" + "A" * 43)
                                ).status_code == 401
            # anonymous: open data only, and never a bound tenant's private rows
            assert http.get("/devices", params={"tenant": A}).status_code == 401


# --------------------------------------------------------------------------- the Grafana datasource role

def _connect_as(db_url: str, dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, autocommit=True)


def _leaks(c: psycopg.Connection, b_pks: set[int]) -> tuple[list[str], int, int]:
    """(leaks, relations read, rows seen) over every relation this role may SELECT."""
    rels = c.execute("""SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
                          AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                          AND n.nspname !~ '^pg_(toast|temp)'      -- the session's own temporary tables
                          AND has_table_privilege(c.oid, 'SELECT')
                        ORDER BY 1, 2""").fetchall()
    leaks, seen = [], 0
    for schema, name in rels:
        rows = c.execute(f'SELECT to_jsonb(t) AS j FROM "{schema}"."{name}" t').fetchall()
        seen += len(rows)
        for (j,) in rows:
            text = json.dumps(j)
            if (MARK[B] in text or j.get("tenant") == B or j.get("id") == B
                    or (("device_id" in j or "device_pk" in j) and (j.get("device_id") in b_pks
                                                                   or j.get("device_pk") in b_pks))):
                leaks.append(f"{schema}.{name}: {text[:160]}")
    return leaks, len(rels), seen


def test_datasource_role_sees_only_its_tenant_and_cannot_escape(councils, tmp_path):
    db_url, ids = councils
    b_pks = set(ids[B]["pks"].values())
    suffix = re.sub(r"\W", "", tmp_path.name)[-12:].lower()
    with psycopg.connect(db_url, autocommit=True) as c:
        role, password = datasource.create_role(c, A, f"grafana_{A}_{suffix}")
        with pytest.raises(ValueError, match="bound to tenant"):
            datasource.create_role(c, B, role)                       # one role, one tenant, for good
        c.execute("ANALYZE")                                          # statistics exist (pg_stats must not leak them)
    dsn = datasource.dsn(db_url, role, password)
    try:
        with _connect_as(db_url, dsn) as c:
            assert c.execute("SELECT current_user").fetchone()[0] == role
            leaks, nrel, seen = _leaks(c, b_pks)
            assert not leaks, leaks
            assert nrel >= 10 and seen > 50                          # it really reads the tables it may
            assert c.execute("SELECT count(*) FROM devices").fetchone()[0] == 3
            assert c.execute("SELECT count(DISTINCT device_id) FROM readings").fetchone()[0] == 3
            assert c.execute("SELECT count(*) FROM readings_hourly").fetchone()[0] > 0
            assert c.execute("""SELECT count(*) FROM pg_stats WHERE most_common_vals::text LIKE %s
                                   OR histogram_bounds::text LIKE %s""",
                             (f"%{MARK[B]}%", f"%{MARK[B]}%")).fetchone()[0] == 0
            for secret in ("api_tokens", "service_accounts", "device_credentials", "ingest_log"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    c.execute(f"SELECT 1 FROM public.{secret} LIMIT 1")
            # escapes: settings, roles, shadow tables
            c.execute("SET streetsense.tenant = 'york'")
            c.execute("SELECT set_config('streetsense.tenant', '*', false)")
            assert _leaks(c, b_pks)[0] == []
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute("SET ROLE streetsense_api")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute("SET SESSION AUTHORIZATION postgres")
            c.execute("SET ROLE streetsense_datasource")               # its group: sees no tenant at all
            assert c.execute("SELECT count(*) FROM devices").fetchone()[0] == 0
            c.execute("RESET ROLE")
            c.execute("CREATE TEMP TABLE ss_role_tenants (role name, tenant text)")
            c.execute("INSERT INTO ss_role_tenants VALUES (current_user, 'york')")
            c.execute("SET search_path = pg_temp, ss_restricted, public")
            assert _leaks(c, b_pks)[0] == []
            assert c.execute("SELECT count(*) FROM public.devices").fetchone()[0] == 3
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute("INSERT INTO public.ss_role_tenants VALUES (current_user, 'york')")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute("UPDATE public.devices SET firmware = 'x'")
    finally:
        with psycopg.connect(db_url, autocommit=True) as c:
            c.execute(f'DROP OWNED BY "{role}"')
            c.execute(f'DROP ROLE "{role}"')


def test_scram_verifier_matches_the_server(db_url):
    """The datasource password reaches the server only as a verifier: check ours is the server's own."""
    with psycopg.connect(db_url, autocommit=True) as c:
        c.execute("SET password_encryption = 'scram-sha-256'")
        name = "ss_scram_probe"
        c.execute(f"DROP ROLE IF EXISTS {name}")
        c.execute(f"CREATE ROLE {name} PASSWORD 'correct horse battery'")
        try:
            stored = c.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (name,)).fetchone()[0]
        finally:
            c.execute(f"DROP ROLE {name}")
    m = re.match(r"^SCRAM-SHA-256\$(\d+):([^$]+)\$", stored)
    assert m
    ours = datasource.scram_sha256("correct horse battery", salt=base64.b64decode(m.group(2)),
                                   iterations=int(m.group(1)))
    assert ours == stored


# ------------------------------------------------------------------------- audit of personal-data reads

def test_reads_of_household_data_are_audited_with_the_principal(councils):
    db_url, ids = councils
    names = {role: f"{role}-1" for role in tokens.TOKEN_ROLES}
    tok = {role: bearer(make_token(db_url, role, A, household=HH[A] if role == "resident" else None,
                                   name=names[role])) for role in tokens.TOKEN_ROLES}
    span = {"start": T0.isoformat(), "end": (T0 + timedelta(days=1)).isoformat()}

    def trail() -> list[tuple]:
        with psycopg.connect(db_url) as c:
            return c.execute("""SELECT actor, action, tenant, subject, details ->> 'role', details ->> 'via'
                                FROM audit_log WHERE actor LIKE '%%-1' ORDER BY id""").fetchall()

    with serve(create_app(db_url)) as base, httpx.Client(base_url=base, timeout=30) as http:
        def get(role: str, path: str, **params) -> None:
            r = http.get(path, params=params, headers=tok[role])
            assert r.status_code == 200, (role, path, r.text)

        # not personal: a street bin's readings, a plan read by nobody, open data
        get("operations", "/readings", tenant=A, device="bin-s", metric="fill", **span)
        get("operations", "/sta/v1.1/Things")
        assert trail() == []
        get("resident", f"/residents/{A}/households/{HH[A]}/export")
        get("admin", "/consents", tenant=A)
        get("operations", "/alerts", tenant=A)                        # lists the welfare alert
        get("integration", "/alerts", tenant=A)                       # no welfare alerts for machines: no row
        get("operations", f"/alerts/{ids[A]['welfare']}")
        get("crew", f"/routes/plans/{ids[A]['plan']}")                # a stop at the household's bin
        get("field_engineer", "/readings", tenant=A, device="bin-h", metric="fill", **span)
    assert trail() == [
        ("resident-1", "household.export", A, HH[A], "resident", None),
        ("admin-1", "consent.view", A, HH[A], "admin", None),
        ("operations-1", "welfare.view", A, HH[A], "operations", "list"),
        ("operations-1", "welfare.view", A, HH[A], "operations", "detail"),
        ("crew-1", "route.view", A, HH[A], "crew", "plan"),
        ("field_engineer-1", "readings.view", A, HH[A], "field_engineer", "readings:fill"),
    ]


# ------------------------------------------------------------------- the rule covers tables added later

def test_a_table_added_by_a_later_migration_is_isolated_too(db_url):
    with psycopg.connect(db_url, autocommit=True) as c:
        before = dict(c.execute("SELECT polrelid::regclass::text, oid FROM pg_policy WHERE polname = 'tenant_isolation'"))
        c.execute("INSERT INTO tenants VALUES ('leeds', 'L'), ('york', 'Y')")
        c.execute("INSERT INTO devices (tenant, device_id, kind) VALUES ('leeds', 'd', 'air'), ('york', 'd', 'air')")
        # what a migration 0013 might add: one table with a tenant, one keyed by device
        c.execute("CREATE TABLE later_notes (tenant text NOT NULL, note text NOT NULL)")
        c.execute("CREATE TABLE later_samples (device_id bigint NOT NULL, v real NOT NULL)")
        c.execute("INSERT INTO later_notes VALUES ('leeds', 'a'), ('york', 'b')")
        c.execute("INSERT INTO later_samples SELECT id, 1 FROM devices")
        assert migrate(c, timescale="off") == []
        after = dict(c.execute("SELECT polrelid::regclass::text, oid FROM pg_policy WHERE polname = 'tenant_isolation'"))
        assert {k: v for k, v in after.items() if k in before} == before      # unchanged policies are left alone
        assert {"later_notes", "later_samples"} <= set(after)
        c.execute("SET ROLE streetsense_api")
        c.execute("SELECT set_config('streetsense.tenant', 'leeds', false)")
        assert c.execute("SELECT note FROM later_notes").fetchall() == [("a",)]
        assert c.execute("SELECT count(*) FROM later_samples").fetchone()[0] == 1
        with pytest.raises(psycopg.errors.InsufficientPrivilege):            # WITH CHECK: no writing into york
            c.execute("INSERT INTO later_notes VALUES ('york', 'x')")


def test_timescale_variant_isolates_through_restricted_views():
    """On PGlite + TimescaleDB (runs as a superuser; roles and RLS are real, but there are no
    login roles, so the datasource role is exercised with SET ROLE here)."""
    from tests.support.pglite import PGliteTimescale, node_unavailable_reason

    if (why := node_unavailable_reason()) is not None:
        pytest.skip(why)

    with PGliteTimescale() as pg, psycopg.connect(pg.url, autocommit=True) as c:
        migrate(c, timescale="on", retention_days=30)
        c.execute("INSERT INTO tenants VALUES ('leeds', 'L'), ('york', 'Y')")
        c.execute("INSERT INTO devices (tenant, device_id, kind) VALUES ('leeds', 'd', 'air'), ('york', 'd', 'air')")
        c.execute("""INSERT INTO readings SELECT now() - make_interval(hours => h), d.id, 1, h
                     FROM devices d, generate_series(1, 30) h""")
        for view in ("readings_hourly", "readings_daily"):
            c.execute(f"CALL refresh_continuous_aggregate('{view}', now() - interval '3 days', now())")
        chunk = c.execute("SELECT format('%I.%I', chunk_schema, chunk_name) FROM timescaledb_information.chunks "
                          "WHERE hypertable_name = 'readings' LIMIT 1").fetchone()[0]
        leeds = c.execute("SELECT id FROM devices WHERE tenant = 'leeds'").fetchone()[0]
        role = "grafana_leeds_pglite"
        c.execute(f"DROP ROLE IF EXISTS {role}")
        c.execute(f"CREATE ROLE {role} IN ROLE streetsense_datasource")
        c.execute("INSERT INTO ss_role_tenants VALUES (%s, 'leeds')", (role,))
        for who, bind in (("streetsense_api", "leeds"), (role, None)):
            c.execute(f"SET ROLE {who}")
            c.execute("SET search_path = ss_restricted, public")
            if bind:
                c.execute("SELECT set_config('streetsense.tenant', %s, false)", (bind,))
            else:
                c.execute("SELECT set_config('streetsense.tenant', '*', false)")   # ignored for a bound role
            for rel in ("readings", "readings_hourly", "readings_daily"):
                devs = {r[0] for r in c.execute(f"SELECT DISTINCT device_id FROM {rel}")}
                assert devs == {leeds}, (who, rel, devs)
            for rel in ("public.readings", "public.readings_hourly", chunk):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    c.execute(f"SELECT 1 FROM {rel} LIMIT 1")
            c.execute("RESET ROLE")
