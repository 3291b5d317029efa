"""Retention per data class: delete (or redact) what is older than its policy.

Policies live in ``retention_policies`` (migration 0010): a platform default per
data class, overridable per council.  :func:`apply` works class by class in
batches of parameterised statements, each batch its own transaction, and
appends one ``retention.apply`` row per class and tenant to ``audit_log``.
``dry_run`` counts and changes nothing.

Readings are split by what the sensor is on: a device whose asset is a
household bin (``devices.asset_id`` -> ``assets.bin_kind = 'household'``)
gives ``household_readings``; every other device ``public_readings``.  Whole
monthly partitions (plain) or chunks (TimescaleDB) older than the longest
reading policy of any council are dropped first, in one step; the finer
classes are then deleted row by row.  Household rollups (``readings_hourly``,
``readings_daily``) go with their readings: they are per device.

audit_log is append-only (trigger): its rows past policy are deleted only here,
with the transaction flag ``streetsense.retention`` that the trigger checks
together with the row's age.

>>> [c.name for c in CLASSES]
['household_readings', 'public_readings', 'quarantine_raw', 'crew_reports', 'route_plans', 'audit_log', 'withdrawn_consents']
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, Optional

import psycopg
import typer
from psycopg.types.json import Jsonb

ACTOR = "retention"
REDACTED = "[redacted]"
REDACTED_CONTACT = "redacted@invalid"

#: per-tenant cutoffs of one class: tenant -> the instant before which data goes
_CUT = """SELECT t.id AS tenant, now() - ss_retention_keep(t.id, %(cls)s) AS before FROM tenants t"""


@dataclass(frozen=True)
class DataClass:
    """One data class: ``candidates`` selects (tenant, key...) of expired rows; ``act`` acts on a batch of them."""
    name: str
    candidates: str            # SELECT tenant, <key columns> ... (uses %(cls)s): what a dry run counts
    act: str                   # one batch: (tenant, rows) of what it deleted/redacted (params cls, batch)
    audit: bool = False        # deletes audit_log rows (needs the trigger's flag)


_READINGS = """
    SELECT d.tenant, r.device_id, r.metric, r.{t} AS t
    FROM {table} r JOIN devices d ON d.id = r.device_id
    LEFT JOIN assets a ON a.tenant = d.tenant AND a.asset_id = d.asset_id
    JOIN ({cut}) c ON c.tenant = d.tenant
    WHERE coalesce(a.bin_kind = 'household', false) = {household} AND r.{t} < c.before
      AND r.{t} < %(upto)s"""        # the latest cutoff of any council: a constant, so partitions/chunks prune


def _readings(name: str, household: bool) -> DataClass:
    sel = _READINGS.format(t="time", table="readings", cut=_CUT, household=str(household).lower())
    return DataClass(name, sel, f"""
        WITH gone AS (DELETE FROM readings WHERE (device_id, metric, time) IN (
                          SELECT device_id, metric, t FROM ({sel}) x LIMIT %(batch)s)
                      RETURNING device_id)
        SELECT d.tenant, count(*) FROM gone JOIN devices d ON d.id = gone.device_id GROUP BY d.tenant""")


def _by_id(name: str, table: str, time_col: str, extra: str = "", preview: str = "") -> DataClass:
    base = f"""SELECT q.tenant, q.id FROM {table} q
               WHERE q.{time_col} < now() - ss_retention_keep(q.tenant, %(cls)s)"""
    sel = f"{base} {extra}"
    return DataClass(name, f"{base} {preview or extra}", f"""
        WITH gone AS (DELETE FROM {table} WHERE id IN (SELECT id FROM ({sel} ORDER BY q.id DESC LIMIT %(batch)s) x)
                      RETURNING tenant)
        SELECT tenant, count(*) FROM gone GROUP BY tenant""", audit=table == "audit_log")


CLASSES: tuple[DataClass, ...] = (
    _readings("household_readings", True),
    _readings("public_readings", False),
    _by_id("quarantine_raw", "quarantine", "received_at"),
    _by_id("crew_reports", "crew_reports", "received_at"),
    # a plan goes once no report or re-plan refers to it (re-plans first: newest ids first, and the
    # loop runs until nothing moves); a dry run assumes the expired reports and re-plans gone
    _by_id("route_plans", "route_plans", "created_at", """
        AND NOT EXISTS (SELECT 1 FROM crew_reports c WHERE c.plan_id = q.id OR c.replan_id = q.id)
        AND NOT EXISTS (SELECT 1 FROM route_plans p WHERE p.parent_id = q.id)""", preview="""
        AND NOT EXISTS (SELECT 1 FROM crew_reports c WHERE (c.plan_id = q.id OR c.replan_id = q.id)
                        AND c.received_at >= now() - ss_retention_keep(c.tenant, 'crew_reports'))
        AND NOT EXISTS (SELECT 1 FROM route_plans p WHERE p.parent_id = q.id
                        AND p.created_at >= now() - ss_retention_keep(p.tenant, 'route_plans'))"""),
    _by_id("audit_log", "audit_log", "at"),
    DataClass("withdrawn_consents", """
        SELECT q.tenant, q.id FROM consents q
        WHERE q.withdrawn_at IS NOT NULL AND q.redacted_at IS NULL
          AND q.withdrawn_at < now() - ss_retention_keep(q.tenant, %(cls)s)""", f"""
        WITH gone AS (UPDATE consents SET recipient_name = '{REDACTED}', recipient_role = '{REDACTED}',
               recipient_contact = '{REDACTED_CONTACT}', evidence = '{REDACTED}', withdrawal_reason = NULL,
               redacted_at = now()
        WHERE id IN (SELECT id FROM consents q
                     WHERE q.withdrawn_at IS NOT NULL AND q.redacted_at IS NULL
                       AND q.withdrawn_at < now() - ss_retention_keep(q.tenant, %(cls)s)
                     ORDER BY q.id LIMIT %(batch)s)
        RETURNING tenant)
        SELECT tenant, count(*) FROM gone GROUP BY tenant"""),
)
_BY_NAME = {c.name: c for c in CLASSES}


@dataclass
class Report:
    """What a run did (or, dry, would do): rows per class and tenant, whole partitions/chunks dropped."""
    dry_run: bool
    rows: dict[str, dict[str, int]] = field(default_factory=dict)
    dropped: dict[str, Any] = field(default_factory=dict)
    rollups_deleted: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "rows": self.rows,
                "total": sum(sum(v.values()) for v in self.rows.values()),
                "dropped": self.dropped, "rollups_deleted": self.rollups_deleted}


def policies(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every policy row (defaults first), with the class's action."""
    cur = conn.execute("""SELECT p.data_class, p.tenant, p.keep::text AS keep, c.action, p.basis, p.updated_at,
                                 p.updated_by
                          FROM retention_policies p JOIN retention_classes c USING (data_class)
                          ORDER BY p.tenant NULLS FIRST, p.data_class""")
    cols = [d.name for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def set_policy(conn: psycopg.Connection, data_class: str, keep: str, actor: str, *, tenant: str | None = None,
               basis: str = "") -> None:
    """Create or change a policy (the table's trigger audits it)."""
    if data_class not in _BY_NAME:
        raise ValueError(f"unknown data class {data_class!r}: one of {', '.join(_BY_NAME)}")
    with conn.transaction():
        conn.execute("SELECT set_config('streetsense.actor', %s, true)", (actor,))
        cur = conn.execute("""UPDATE retention_policies SET keep = %s::interval, basis = %s, updated_at = now(),
                                     updated_by = %s
                              WHERE data_class = %s AND tenant IS NOT DISTINCT FROM %s""",
                           (keep, basis, actor, data_class, tenant))
        if cur.rowcount == 0:
            conn.execute("""INSERT INTO retention_policies (tenant, data_class, keep, basis, updated_by)
                            VALUES (%s, %s, %s::interval, %s, %s)""", (tenant, data_class, keep, basis, actor))


def _variant(conn: psycopg.Connection) -> str:
    row = conn.execute("SELECT variant FROM schema_migrations WHERE variant IS NOT NULL LIMIT 1").fetchone()
    return row[0] if row else "plain"


def _reading_horizon(conn: psycopg.Connection) -> Any:
    """Before this instant no council keeps any reading: whole partitions/chunks can go."""
    return conn.execute("""SELECT now() - max(greatest(ss_retention_keep(t.id, 'household_readings'),
                                                         ss_retention_keep(t.id, 'public_readings')))
                           FROM (SELECT id FROM tenants UNION ALL SELECT NULL) t""").fetchone()[0]


def _drop_whole(conn: psycopg.Connection, dry_run: bool) -> tuple[dict[str, Any], Counter[tuple[str, str]]]:
    """Drop the partitions/chunks entirely past every reading policy; their rows per (class, tenant)."""
    horizon = _reading_horizon(conn)
    if _variant(conn) == "timescale":
        n, upto = conn.execute("""SELECT count(*), max(range_end) FROM timescaledb_information.chunks
                                  WHERE hypertable_name = 'readings' AND range_end <= %s""", (horizon,)).fetchone()
        where = "r.time < %(upto)s"
        info: dict[str, Any] = {"chunks": n}
    else:
        n, upto = conn.execute("""SELECT count(*), max((to_date(substr(c.relname, 10), 'YYYYMM') + interval '1 month')
                                                        ::timestamp AT TIME ZONE 'UTC')
                                  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                                  WHERE i.inhparent = 'readings'::regclass AND c.relname ~ '^readings_[0-9]{6}$'
                                    AND ((to_date(substr(c.relname, 10), 'YYYYMM') + interval '1 month')::timestamp
                                         AT TIME ZONE 'UTC') <= %s""", (horizon,)).fetchone()
        where = "r.time < %(upto)s AND r.tableoid <> 'readings_default'::regclass"
        info = {"partitions": n}
    info["before"] = horizon.isoformat()
    counts: Counter[tuple[str, str]] = Counter()
    if not n:
        return info, counts
    for tenant, household, rows in conn.execute(f"""
            SELECT d.tenant, coalesce(a.bin_kind = 'household', false), count(*)
            FROM readings r JOIN devices d ON d.id = r.device_id
            LEFT JOIN assets a ON a.tenant = d.tenant AND a.asset_id = d.asset_id
            WHERE {where} GROUP BY 1, 2""", {"upto": upto}):
        counts[("household_readings" if household else "public_readings", tenant)] += rows
    if not dry_run:
        if "chunks" in info:
            conn.execute("SELECT drop_chunks('readings', older_than => %s::timestamptz)", (horizon,))
        else:
            conn.execute("SELECT ss_drop_partitions_before(%s)", (horizon,))
    return info, counts


def _rollup_tables(conn: psycopg.Connection) -> list[str]:
    """Where per-device rollups are stored: the tables (plain) or the caggs' materialization hypertables."""
    if _variant(conn) != "timescale":
        return ["readings_hourly", "readings_daily"]
    rows = conn.execute("""SELECT format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name)
                           FROM timescaledb_information.continuous_aggregates
                           WHERE view_name IN ('readings_hourly', 'readings_daily')""").fetchall()
    return [r[0] for r in rows]


def _latest_cutoff(conn: psycopg.Connection, name: str) -> Any:
    return conn.execute("""SELECT max(now() - ss_retention_keep(t.id, %s))
                           FROM (SELECT id FROM tenants UNION ALL SELECT NULL) t""", (name,)).fetchone()[0]


def _household_rollups(conn: psycopg.Connection, dry_run: bool, batch: int) -> int:
    total = 0
    upto = _latest_cutoff(conn, "household_readings")
    for table in _rollup_tables(conn):
        sel = _READINGS.format(t="bucket", table=table, cut=_CUT, household="true")
        if dry_run:
            total += conn.execute(f"SELECT count(*) FROM ({sel}) x",
                                  {"cls": "household_readings", "upto": upto}).fetchone()[0]
            continue
        while True:
            with conn.transaction():
                n = conn.execute(f"""DELETE FROM {table} WHERE (device_id, metric, bucket) IN (
                                       SELECT device_id, metric, t FROM ({sel}) x LIMIT %(batch)s)""",
                                 {"cls": "household_readings", "batch": batch, "upto": upto}).rowcount
            total += n
            if n < batch:
                break
    return total


def apply(conn: psycopg.Connection, *, dry_run: bool = False, batch: int = 10_000,
          classes: Iterable[str] | None = None, actor: str = ACTOR) -> Report:
    """Enforce every policy (or only ``classes``); return what was (or would be) removed."""
    conn.autocommit = True
    names = list(classes) if classes is not None else [c.name for c in CLASSES]
    unknown = set(names) - set(_BY_NAME)
    if unknown:
        raise ValueError(f"unknown data classes: {sorted(unknown)}")
    rep = Report(dry_run)
    whole: Counter[tuple[str, str]] = Counter()
    if classes is None:
        rep.dropped, whole = _drop_whole(conn, dry_run)
    for name in names:
        dc = _BY_NAME[name]
        # rows in dropped partitions/chunks count for their class (a dry run finds them among the candidates)
        counts: Counter[str] = Counter({t: n for (c, t), n in whole.items() if c == name and not dry_run})
        params = {"cls": name, "batch": batch, "upto": _latest_cutoff(conn, name)}
        if dry_run:
            for tenant, n in conn.execute(f"SELECT tenant, count(*) FROM ({dc.candidates}) x GROUP BY tenant",
                                          params):
                counts[tenant or ""] += n
        else:
            while True:
                with conn.transaction():
                    if dc.audit:
                        conn.execute("SELECT set_config('streetsense.retention', 'on', true)")
                    got = conn.execute(dc.act, params).fetchall()
                for tenant, n in got:
                    counts[tenant or ""] += n
                if not got:         # until nothing moves (a batch may free the next: re-plans, then plans)
                    break
            if name == "household_readings":
                rep.rollups_deleted = _household_rollups(conn, dry_run, batch)
            _audit(conn, name, counts, actor, rep)
        if dry_run and name == "household_readings":
            rep.rollups_deleted = _household_rollups(conn, True, batch)
        rep.rows[name] = dict(sorted(counts.items()))
    return rep


def _audit(conn: psycopg.Connection, name: str, counts: Counter[str], actor: str, rep: Report) -> None:
    if not counts:
        return
    with conn.transaction():
        conn.execute("SELECT set_config('streetsense.actor', %s, true)", (actor,))
        for tenant, n in sorted(counts.items()):
            details: dict[str, Any] = {"data_class": name, "rows": n,
                                       "keep": conn.execute("SELECT ss_retention_keep(%s, %s)::text",
                                                            (tenant or None, name)).fetchone()[0]}
            if name == "household_readings":
                details["rollups_deleted"] = rep.rollups_deleted
            conn.execute("""INSERT INTO audit_log (actor, action, tenant, subject, details)
                            VALUES (%s, 'retention.apply', %s, %s, %s)""",
                         (actor, tenant or None, name, Jsonb(details)))


# --- command line (`streetsense retention …`) -------------------------------------------------------

def cli_app() -> Any:
    """The ``retention`` Typer group (built lazily: ``streetsense --help`` stays fast)."""
    import json

    app = typer.Typer(help="Retention per data class: policies, and enforcing them.", no_args_is_help=True)

    def _conn() -> psycopg.Connection:
        from streetsense.settings import get_settings

        url = get_settings().database_url
        if not url:
            raise typer.BadParameter("DATABASE_URL is not set")
        return psycopg.connect(url, autocommit=True)

    def _print(obj: Any, as_json: bool) -> None:
        if as_json:
            print(json.dumps(obj, default=str, indent=2))
        else:
            for k, v in (obj.items() if isinstance(obj, dict) else enumerate(obj)):
                print(f"{k}: {v}")

    @app.command("show")
    def show(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
        """The policies in force: platform defaults and each council's own."""
        from streetsense.settings import get_settings

        with _conn() as conn:
            rows = policies(conn)
            horizon = conn.execute("SELECT extract(epoch FROM max(keep)) / 86400 FROM retention_policies "
                                   "WHERE data_class IN ('household_readings', 'public_readings')").fetchone()[0]
        days = get_settings().retention_days
        warnings = []
        if horizon and days < float(horizon):
            warnings.append(f"STREETSENSE_RETENTION_DAYS={days} drops every reading after {days} days "
                            f"(db maintain / TimescaleDB policy), before the longest reading policy "
                            f"({float(horizon):.0f} days): raise it to at least that")
        _print({"policies": rows, "warnings": warnings}, as_json)

    @app.command("apply")
    def apply_cmd(dry_run: Annotated[bool, typer.Option("--dry-run", help="count, change nothing")] = False,
                  as_json: Annotated[bool, typer.Option("--json")] = False,
                  batch: Annotated[int, typer.Option(help="rows per transaction")] = 10_000,
                  data_class: Annotated[Optional[list[str]], typer.Option("--class", help="only these classes")] = None,
                  ) -> None:
        """Delete (or redact) everything past its policy; audited."""
        with _conn() as conn:
            rep = apply(conn, dry_run=dry_run, batch=batch, classes=data_class or None)
        _print(rep.to_json(), as_json)

    @app.command("set")
    def set_cmd(data_class: Annotated[str, typer.Argument(help="e.g. household_readings")],
                keep: Annotated[str, typer.Argument(help="a PostgreSQL interval, e.g. '13 months'")],
                tenant: Annotated[Optional[str], typer.Option(help="one council (default: the platform default)")] = None,
                basis: Annotated[str, typer.Option(help="why this long")] = "",
                actor: Annotated[str, typer.Option(help="who is changing it (audited)")] = "cli") -> None:
        """Create or change a policy."""
        with _conn() as conn:
            try:
                set_policy(conn, data_class, keep, actor, tenant=tenant, basis=basis)
            except (ValueError, psycopg.Error) as e:
                raise typer.BadParameter(str(e).strip()) from None
        print(json.dumps({"data_class": data_class, "tenant": tenant, "keep": keep}))

    return app
