"""``streetsense bench rls``: what row-level security costs the API's readings queries.

Readings carry no tenant column: their policy (ingest/migrate.py
``secure_tables``) checks the row's device, ``ss_device_visible(device_id)``.
This loads ``devices`` (split over two councils) x ``days`` of 10-minute fill
readings into an embedded PostgreSQL (or ``DATABASE_URL``'s server, in a
scratch database), refreshes the rollups, and times each query with
``EXPLAIN (ANALYZE)`` (server execution time, median of ``repeats``): as the
owner (no RLS) and as ``streetsense_api`` bound to one council, the way the API
runs it.  It reports both times, their ratio, and whether the plans differ.
"""

from __future__ import annotations

import statistics
import tempfile
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from api import queries as q
from ingest.migrate import maintain, migrate

#: (name, SQL, what the parameters are)
QUERIES = (
    ("raw_1_device_1_day", q.RAW, "one device, one day of raw readings (the /readings default)"),
    ("hourly_1_device_7_days", q.HOURLY, "one device, 7 days of the hourly rollup"),
    ("binned_1_device_7_days", q.BINNED, "one device, 7 days in 6-hour buckets over raw readings"),
    ("fleet_hourly_1_day",
     """SELECT bucket, count(*) AS devices, avg(avg) AS mean FROM readings_hourly
        WHERE metric = %(metric_id)s AND bucket >= %(end)s - interval '1 day' AND bucket < %(end)s
        GROUP BY bucket ORDER BY bucket""",
     "every device of the council, one day of the hourly rollup (a dashboard-style fleet panel)"),
)


def _load(conn: psycopg.Connection, devices: int, days: int, end: datetime) -> int:
    conn.execute("INSERT INTO tenants VALUES ('north', 'North Council'), ('south', 'South Council')")
    conn.execute("""INSERT INTO devices (tenant, device_id, kind, status)
                    SELECT CASE WHEN i %% 2 = 0 THEN 'north' ELSE 'south' END, 'bin-' || i, 'bin_fill', 'active'
                    FROM generate_series(1, %s) i""", (devices,))
    start = end - timedelta(days=days)
    conn.execute("""INSERT INTO readings (time, device_id, metric, value)
                    SELECT t, d.id, 2, (extract(epoch FROM t)::bigint / 600 + d.id) %% 100 / 100.0
                    FROM devices d, generate_series(%s::timestamptz, %s::timestamptz - interval '10 minutes',
                                                    interval '10 minutes') t""", (start, end))
    n = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    conn.execute("""INSERT INTO ingest_log (worker, messages, readings, inserted, quarantined, min_time, max_time)
                    VALUES ('bench', 1, %s, %s, 0, %s, %s)""", (n, n, start, end))
    conn.execute("ANALYZE")
    return n


def _explain(conn: psycopg.Connection, sql: str, params: dict, repeats: int) -> tuple[float, list[str]]:
    times, nodes = [], []
    for _ in range(repeats):
        plan = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params).fetchone()[0][0]
        times.append(plan["Execution Time"])
        nodes = _nodes(plan["Plan"])
    return statistics.median(times), nodes


def _nodes(plan: dict) -> list[str]:
    out = [plan["Node Type"] + (f" on {plan['Relation Name']}" if "Relation Name" in plan else "")]
    for child in plan.get("Plans", []):
        out.extend(_nodes(child))
    return out


def run_bench(database_url: str | None = None, *, devices: int = 2000, days: int = 7, repeats: int = 15) -> dict:
    """Load, then time every query as owner and as the API role; the figures as a dict."""
    from streetsense.embedded import EmbeddedPostgres

    with tempfile.TemporaryDirectory(prefix="ss-bench-rls-") as tmp:
        pg = None if database_url else EmbeddedPostgres(Path(tmp) / "pg")
        admin_url = database_url or pg.url
        name = "bench_rls_" + uuid.uuid4().hex[:8]
        try:
            with psycopg.connect(admin_url, autocommit=True) as c:
                c.execute(f'CREATE DATABASE "{name}"')
            url = make_conninfo(**{**conninfo_to_dict(admin_url), "dbname": name})
            end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
            with psycopg.connect(url, autocommit=True) as c:
                migrate(c, timescale="off")
                n = _load(c, devices, days, end)
                maintain(c)
                c.execute("ANALYZE")
                pk = c.execute("SELECT id FROM devices WHERE tenant = 'north' ORDER BY id LIMIT 1").fetchone()[0]
                server = c.execute("SHOW server_version").fetchone()[0]
            base = {"pk": pk, "metric_id": 2, "limit": 100_000, "width": timedelta(hours=6), "end": end}
            args = {"raw_1_device_1_day": {"start": end - timedelta(days=1)}}
            out = {"devices": devices, "days": days, "readings": n, "tenants": 2, "repeats": repeats,
                   "server": f"PostgreSQL {server}", "queries": {}}
            with psycopg.connect(url, autocommit=True) as owner, psycopg.connect(url, autocommit=True) as api:
                api.execute("SET ROLE streetsense_api")
                api.execute("SELECT set_config('streetsense.tenant', 'north', false)")
                for qname, sql, what in QUERIES:
                    params = {**base, "start": end - timedelta(days=7), **args.get(qname, {})}
                    owner_ms, owner_plan = _explain(owner, sql, params, repeats)
                    api_ms, api_plan = _explain(api, sql, params, repeats)
                    rows_owner = len(owner.execute(sql, params).fetchall())
                    rows_api = len(api.execute(sql, params).fetchall())
                    out["queries"][qname] = {
                        "what": what, "owner_ms": round(owner_ms, 3), "api_rls_ms": round(api_ms, 3),
                        "ratio": round(api_ms / owner_ms, 2) if owner_ms else None,
                        "rows_owner": rows_owner, "rows_api": rows_api,
                        "plan_owner": owner_plan, "plan_api_rls": api_plan}
        finally:
            try:
                with psycopg.connect(admin_url, autocommit=True) as c:
                    c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                if pg is not None:
                    pg.stop()
    return out
