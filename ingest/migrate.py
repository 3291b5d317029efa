"""Versioned, idempotent SQL migrations (``streetsense db migrate``).

Files in ``ingest/schema`` are ``NNNN_name.sql`` (both storage variants) or
``NNNN_name.plain.sql`` / ``NNNN_name.timescale.sql`` (one per variant). The
variant is chosen once, on the first migration, and recorded: TimescaleDB when
the server offers the extension (unless ``timescale="off"``), plain PostgreSQL
partitions otherwise.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psycopg
from psycopg import sql

from contract import v1

SCHEMA_DIR = Path(__file__).parent / "schema"
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+?)(?:\.(plain|timescale))?\.sql$")
LOCK_KEY = 0x5757_0001

Variant = Literal["plain", "timescale"]


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    variant: str | None
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]


def migrations(variant: Variant) -> list[Migration]:
    """The migrations that apply to ``variant``, in order."""
    out = []
    for p in sorted(SCHEMA_DIR.glob("*.sql")):
        m = _FILE.match(p.name)
        if not m:
            raise ValueError(f"badly named migration {p.name}")
        if m.group(3) in (None, variant):
            out.append(Migration(int(m.group(1)), m.group(2), m.group(3), p))
    versions = [m.version for m in out]
    if len(versions) != len(set(versions)):
        raise ValueError(f"duplicate migration versions for {variant}: {versions}")
    return out


def storage_variant(conn: psycopg.Connection) -> Variant | None:
    """The variant recorded by an earlier migrate, or None on a fresh database."""
    row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return None
    row = conn.execute("SELECT variant FROM schema_migrations WHERE variant IS NOT NULL LIMIT 1").fetchone()
    return row[0] if row else None


def _choose_variant(conn: psycopg.Connection, timescale: str) -> Variant:
    if timescale == "off":
        return "plain"
    available = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
    if available:
        return "timescale"
    if timescale == "on":
        raise RuntimeError("timescale=on but this PostgreSQL server has no timescaledb extension")
    return "plain"


def migrate(conn: psycopg.Connection, *, timescale: str = "auto", retention_days: int = 3653) -> list[str]:
    """Apply pending migrations; return the names applied. Safe to run concurrently and repeatedly."""
    conn.autocommit = True
    conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    try:
        conn.execute("""CREATE TABLE IF NOT EXISTS schema_migrations (
            version integer PRIMARY KEY, name text NOT NULL, variant text,
            checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())""")
        variant = storage_variant(conn) or _choose_variant(conn, timescale)
        if variant == "timescale":
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        applied = {r[0]: r[1] for r in conn.execute("SELECT version, checksum FROM schema_migrations")}
        done = []
        for m in migrations(variant):
            if m.version in applied:
                if applied[m.version] != m.checksum:
                    raise RuntimeError(f"migration {m.version}_{m.name} changed after it was applied")
                continue
            with conn.transaction():
                conn.execute(m.sql)
                conn.execute("INSERT INTO schema_migrations (version, name, variant, checksum) VALUES (%s, %s, %s, %s)",
                             (m.version, m.name, m.variant, m.checksum))
            done.append(f"{m.version:04d}_{m.name}" + (f".{m.variant}" if m.variant else ""))
        _sync_metrics(conn)
        _policies(conn, variant, retention_days)
        secure_tables(conn)
        return done
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))


# --- row-level security ------------------------------------------------------
#: Roles subject to tenant isolation (created by 0009_access.sql).
API_ROLE = "streetsense_api"
DATASOURCE_ROLE = "streetsense_datasource"
#: Never granted to the restricted roles, whatever they contain.
SECRET_TABLES = frozenset({"api_tokens", "service_accounts", "device_credentials", "ss_role_tenants",
                           "ingest_replay_key",
                           # the model runner's state: every tenant's, and only the runner reads it
                           "alert_runner_state", "alert_runner_devices"})
#: Reference data without a tenant that datasource (Grafana) roles may read.
DATASOURCE_GLOBAL = frozenset({"metrics"})
DEVICE_COLUMNS = ("device_id", "device_pk")


@dataclass(frozen=True)
class Secured:
    """How :func:`secure_tables` treated one relation of the schema."""
    relation: str
    scope: Literal["tenant", "device", "global"]
    how: Literal["rls", "view", "none"]


def secure_tables(conn: psycopg.Connection) -> list[Secured]:
    """Tenant isolation for every relation of the schema, after all migrations (idempotent).

    The rule is generic, so tables other migrations add are covered without
    naming them:

    * a relation with a ``tenant`` column (or ``tenants`` itself, by ``id``) is
      tenant-scoped; one without it but with a ``device_id``/``device_pk``
      bigint is device-scoped: its rows are visible when their device is
      (``ss_device_visible``: an index probe of ``devices`` by primary key,
      which the planner runs as a semi-join).  Readings are keyed by the device
      surrogate on purpose: a tenant column would add 8+ bytes to each of
      billions of rows and to the COPY path, and a device never changes tenant;
    * tables and partitioned tables get RLS with one policy, ``tenant_isolation``
      (USING and WITH CHECK), built on ``ss_tenant_visible``;
    * what cannot carry RLS (views, materialized views, continuous aggregates,
      hypertables, which TimescaleDB will not compress with RLS on) is revoked
      from the restricted roles and re-exposed as a ``security_barrier`` view of
      the same name in ``ss_restricted`` that filters by the same predicate;
    * the API role may read and write the scoped tables and the global tables
      (not the secret ones); datasource roles may only read scoped relations
      and :data:`DATASOURCE_GLOBAL`.  Global views get no grant at all.
    """
    schema = conn.execute("SELECT current_schema()").fetchone()[0]
    ts = conn.execute("SELECT to_regclass('timescaledb_information.hypertables') IS NOT NULL").fetchone()[0]
    hyper = ({r[0] for r in conn.execute("SELECT hypertable_name FROM timescaledb_information.hypertables "
                                         "WHERE hypertable_schema = %s", (schema,))} if ts else set())
    rels = conn.execute(
        """SELECT c.relname, c.relkind::text,
                  EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant'
                          AND NOT a.attisdropped),
                  (SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid AND NOT a.attisdropped
                     AND a.attname = ANY(%s) AND a.atttypid = 'bigint'::regtype ORDER BY a.attname LIMIT 1),
                  (SELECT obj_description(p.oid, 'pg_policy') FROM pg_policy p
                   WHERE p.polrelid = c.oid AND p.polname = 'tenant_isolation'),
                  c.relrowsecurity
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm') AND NOT c.relispartition
           ORDER BY c.relname""", (list(DEVICE_COLUMNS), schema)).fetchall()
    out = []
    with conn.transaction():
        conn.execute(sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA {} TO {}").format(
            sql.Identifier(schema), sql.Identifier(API_ROLE)))
        conn.execute(_scope_functions(schema))
        for name, kind, has_tenant, device_col, policy_tag, rls_on in rels:
            if name == "ss_role_tenants":
                continue                                    # its own policy, in 0009_access.sql
            rel = sql.Identifier(schema, name)
            if has_tenant or name == "tenants":
                scope = "tenant"
                pred = sql.SQL("((SELECT {}()) OR {} = (SELECT {}()))").format(
                    sql.Identifier(schema, "ss_scope_all"), sql.Identifier("tenant" if has_tenant else "id"),
                    sql.Identifier(schema, "ss_scope_tenant"))
            elif device_col:
                scope = "device"
                pred = sql.SQL("((SELECT {all}()) OR {col} IN (SELECT d.id FROM {devices} d "
                               "WHERE d.tenant = (SELECT {tenant}())))").format(
                    all=sql.Identifier(schema, "ss_scope_all"), col=sql.Identifier(device_col),
                    devices=sql.Identifier(schema, "devices"), tenant=sql.Identifier(schema, "ss_scope_tenant"))
            else:
                scope = "global"
                pred = None
            restricted = sql.SQL("{}, {}").format(sql.Identifier(API_ROLE), sql.Identifier(DATASOURCE_ROLE))
            conn.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(rel, restricted))
            rls_capable = kind in ("r", "p") and name not in hyper
            if name in SECRET_TABLES:
                how = "none"
                if rls_capable and pred is not None and not rls_on:     # defence in depth; no grants anyway
                    conn.execute(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(rel))
            elif pred is None:
                how = "none"
                if kind in ("r", "p"):
                    conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(
                        rel, sql.Identifier(API_ROLE)))
                    if name in DATASOURCE_GLOBAL:
                        conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(rel, sql.Identifier(DATASOURCE_ROLE)))
            elif rls_capable:
                how = "rls"
                if not rls_on:                  # ALTER TABLE locks the table: only when needed (ingest may be busy)
                    conn.execute(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(rel))
                tag = "streetsense:" + hashlib.sha256(pred.as_string(conn).encode()).hexdigest()[:16]
                if policy_tag != tag:                           # missing, or made by an older rule
                    conn.execute(sql.SQL("DROP POLICY IF EXISTS tenant_isolation ON {}").format(rel))
                    conn.execute(sql.SQL("CREATE POLICY tenant_isolation ON {} USING ({}) WITH CHECK ({})").format(
                        rel, pred, pred))
                    conn.execute(sql.SQL("COMMENT ON POLICY tenant_isolation ON {} IS {}").format(rel, sql.Literal(tag)))
                privs = "SELECT" if name == "tenants" else "SELECT, INSERT, UPDATE, DELETE"
                conn.execute(sql.SQL("GRANT {} ON {} TO {}").format(sql.SQL(privs), rel, sql.Identifier(API_ROLE)))
                conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(rel, sql.Identifier(DATASOURCE_ROLE)))
            else:
                how = "view"
                view = sql.Identifier("ss_restricted", name)
                conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(view))
                conn.execute(sql.SQL("CREATE VIEW {} WITH (security_barrier) AS SELECT * FROM {} WHERE {}").format(
                    view, rel, pred))
                conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(view, restricted))
            out.append(Secured(name, scope, how))
    return out


def _scope_functions(schema: str) -> sql.Composed:
    """The scope of the current role, for the policies (replaced on every migrate).

    ``ss_scope_all()``: the API role bound to every tenant (``*``).
    ``ss_scope_tenant()``: the API role's bound tenant, or a tenant-bound login
    role's tenant (``ss_role_tenants``); NULL = none.  The policies call both in
    scalar sub-selects, so each runs once per query (an InitPlan), and a device
    policy is one hashed lookup per row.  Not SECURITY DEFINER: they must see
    the caller's ``current_user``.  Tables are schema-qualified, so a session's
    temporary table cannot shadow them.  ``ss_tenant_visible(t)`` and
    ``ss_device_visible(pk)`` say the same per row, for ad-hoc SQL.
    """
    return sql.SQL("""
CREATE OR REPLACE FUNCTION {s}.ss_scope_all() RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT current_user = 'streetsense_api' AND coalesce(current_setting('streetsense.tenant', true) = '*', false)
$$;
CREATE OR REPLACE FUNCTION {s}.ss_scope_tenant() RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN current_user = 'streetsense_api' THEN nullif(current_setting('streetsense.tenant', true), '')
                ELSE (SELECT r.tenant FROM {s}.ss_role_tenants r WHERE r.role = current_user) END
$$;
CREATE OR REPLACE FUNCTION {s}.ss_tenant_visible(t text) RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT {s}.ss_scope_all() OR coalesce(t = {s}.ss_scope_tenant(), false)
$$;
CREATE OR REPLACE FUNCTION {s}.ss_device_visible(pk bigint) RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT EXISTS (SELECT 1 FROM {s}.devices d WHERE d.id = pk AND {s}.ss_tenant_visible(d.tenant))
$$;
""").format(s=sql.Identifier(schema))


def _sync_metrics(conn: psycopg.Connection) -> None:
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO metrics (id, name, unit, decimals, min_value, max_value, kinds)
               VALUES (%s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, unit = EXCLUDED.unit,
                 decimals = EXCLUDED.decimals, min_value = EXCLUDED.min_value,
                 max_value = EXCLUDED.max_value, kinds = EXCLUDED.kinds""",
            [(m[0], m[1], m[2], m[3], m[4], m[5], m[6]) for m in v1.METRICS])


# Continuous aggregates: (view, refresh window in days, schedule of the refresh policy).
CAGG_REFRESH = (("readings_hourly", 35, "5 minutes"), ("readings_daily", 400, "1 hour"))


def _policies(conn: psycopg.Connection, variant: Variant, retention_days: int) -> None:
    if variant == "timescale":
        conn.execute("SELECT add_compression_policy('readings', interval '7 days', if_not_exists => true)")
        # A policy is replaced only when the settings change it, so job ids stay put across runs.
        if _policy_differs(conn, "policy_retention", "readings", "drop_after", retention_days):
            with conn.transaction():
                conn.execute("SELECT remove_retention_policy('readings', if_exists => true)")
                conn.execute("SELECT add_retention_policy('readings', make_interval(days => %s))", (retention_days,))
        for view, days, every in CAGG_REFRESH:
            # The refresh window must stop at the retention horizon: drop_chunks logs the dropped
            # range as invalidated, and a refresh over it recomputes those buckets from no rows,
            # i.e. deletes the hourly/daily rollups of every dropped day. (Plain PostgreSQL keeps
            # its rollups when partitions are dropped; so does this, with the window capped.)
            start = min(days, retention_days)
            if _policy_differs(conn, "policy_refresh_continuous_aggregate", view, "start_offset", start):
                with conn.transaction():
                    conn.execute("SELECT remove_continuous_aggregate_policy(%s::regclass, if_exists => true)", (view,))
                    conn.execute("""SELECT add_continuous_aggregate_policy(%s::regclass,
                                        start_offset => make_interval(days => %s), end_offset => NULL,
                                        schedule_interval => %s::interval)""", (view, start, every))
    else:
        maintain_plain(conn, retention_days)


def _policy_differs(conn: psycopg.Connection, proc: str, relation: str, key: str, days: int) -> bool:
    """Whether the ``proc`` job on ``relation`` is missing or its ``key`` is not ``days`` days."""
    row = conn.execute(
        """SELECT (config ->> %s)::interval IS DISTINCT FROM make_interval(days => %s)
           FROM timescaledb_information.jobs
           WHERE proc_name = %s AND hypertable_schema = current_schema() AND hypertable_name = %s""",
        (key, days, proc, relation)).fetchone()
    return row is None or row[0]


def maintain_plain(conn: psycopg.Connection, retention_days: int) -> dict[str, int]:
    """Plain-PostgreSQL housekeeping: partitions ahead, retention, rollups."""
    # Monthly partitions cover the retention window and three months ahead;
    # anything older (a device's very late burst) lands in the default partition.
    made = conn.execute("SELECT ss_ensure_partitions(now() - make_interval(days => %s), now() + interval '3 months')",
                        (retention_days,)).fetchone()[0]
    dropped = conn.execute("SELECT ss_drop_partitions_before(now() - make_interval(days => %s))",
                           (retention_days,)).fetchone()[0]
    conn.execute("DELETE FROM readings_default WHERE time < now() - make_interval(days => %s)", (retention_days,))
    hours = conn.execute("SELECT ss_refresh_rollups()").fetchone()[0]
    return {"partitions_created": made, "partitions_dropped": dropped, "hours_refreshed": hours}


def maintain(conn: psycopg.Connection, retention_days: int = 3653) -> dict[str, int]:
    """Periodic housekeeping for whichever variant the database uses."""
    conn.autocommit = True
    if storage_variant(conn) == "plain":
        return maintain_plain(conn, retention_days)
    return {}
