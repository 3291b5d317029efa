"""Retention per data class on real PostgreSQL, with back-dated rows.

Every class gets rows just inside and just outside its policy (and one
council overrides a default), so the tests prove that exactly the expired rows
go, nothing else; that a dry run counts the same and changes nothing; that the
job audits itself; and that audit_log stays append-only for everyone else.
The TimescaleDB variant runs the same checks on PGlite + TimescaleDB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest

from ingest.migrate import migrate
from streetsense import retention
from tests.support.pglite import PGliteTimescale, node_available

FILL = 1


def snapshot(conn: psycopg.Connection) -> dict[str, list]:
    """Everything the job may touch, as sorted rows."""
    q = {
        "readings": "SELECT d.device_id, r.time FROM readings r JOIN devices d ON d.id = r.device_id",
        "readings_hourly": "SELECT d.device_id, h.bucket FROM readings_hourly h JOIN devices d ON d.id = h.device_id",
        "readings_daily": "SELECT d.device_id, h.bucket FROM readings_daily h JOIN devices d ON d.id = h.device_id",
        "quarantine": "SELECT topic FROM quarantine",
        "crew_reports": "SELECT note FROM crew_reports",
        "route_plans": "SELECT reason FROM route_plans",
        "audit_log": "SELECT subject FROM audit_log WHERE action = 'test.row'",
        "consents": "SELECT household, recipient_name, recipient_contact, evidence, redacted_at IS NOT NULL FROM consents",
    }
    return {k: sorted(conn.execute(v).fetchall()) for k, v in q.items()}


def seed(conn: psycopg.Connection, *, rollups: bool = True) -> None:
    """Two councils; york keeps household readings 6 months instead of the default 13."""
    x = conn.execute
    x("INSERT INTO tenants (id, name) VALUES ('leeds', 'Leeds'), ('york', 'York')")
    x("""INSERT INTO assets (tenant, asset_id, bin_kind, household) VALUES
         ('leeds', 'h-1', 'household', 'hh-a1b2'), ('leeds', 's-1', 'street', NULL),
         ('york', 'h-2', 'household', 'hh-c3d4')""")
    for tenant, dev, kind, asset in (("leeds", "hh-1", "bin_fill", "h-1"), ("leeds", "st-1", "bin_fill", "s-1"),
                                     ("leeds", "air-1", "air", None), ("york", "hh-2", "bin_fill", "h-2")):
        x("INSERT INTO devices (tenant, device_id, kind, asset_id) VALUES (%s, %s, %s, %s)", (tenant, dev, kind, asset))
    if x("SELECT to_regproc('ss_ensure_partitions') IS NOT NULL").fetchone()[0]:
        # plain: a monthly partition for the oldest rows, so that a whole partition is dropped
        x("SELECT ss_ensure_partitions(now() - interval '11 years', now() - interval '11 years' + interval '1 second')")
    for dev in ("hh-1", "st-1", "air-1", "hh-2"):
        for age in ("1 day", "5 months", "7 months", "12 months", "14 months", "9 years", "11 years"):
            x("""INSERT INTO readings (time, device_id, metric, value)
                 SELECT date_trunc('hour', now() - %s::interval), id, %s, 42 FROM devices WHERE device_id = %s""",
              (age, FILL, dev))
            if rollups:
                for table, unit in (("readings_hourly", "hour"), ("readings_daily", "day")):
                    x(f"""INSERT INTO {table} SELECT date_trunc('{unit}', now() - %s::interval), id, %s, 1, 42, 42, 42, 42
                          FROM devices WHERE device_id = %s""", (age, FILL, dev))
    for age, topic in (("100 days", "q-old"), ("80 days", "q-new")):
        x("""INSERT INTO quarantine (received_at, topic, tenant, reason_code, reason, payload, payload_sha256)
             VALUES (now() - %s::interval, %s, 'leeds', 'malformed', 'bad', '\\x00', sha256(%s::bytea))""",
          (age, topic, topic.encode()))
    plans = {}
    for name, age in (("plan-old", "3 years"), ("plan-old-reported", "3 years"), ("plan-new", "1 year")):
        plans[name] = x("""INSERT INTO route_plans (tenant, plan_date, reason, inputs, plan, created_at)
                           VALUES ('leeds', (now() - %s::interval)::date, %s, '{}', '{}', now() - %s::interval)
                           RETURNING id""", (age, name, age)).fetchone()[0]
    for note, plan, age in (("report-old", "plan-old", "3 years"), ("report-recent", "plan-old-reported", "1 year"),
                            ("report-new", "plan-new", "1 day")):
        x("""INSERT INTO crew_reports (plan_id, tenant, route_id, asset_id, status, client_id, reported_at, received_at, note)
             VALUES (%s, 'leeds', 'r1', 's-1', 'collected', %s, now() - %s::interval, now() - %s::interval, %s)""",
          (plans[plan], note, age, age, note))
    for subject, age in (("audit-7y", "7 years"), ("audit-5y", "5 years"), ("audit-new", "1 day")):
        x("""INSERT INTO audit_log (at, actor, action, tenant, subject) VALUES (now() - %s::interval, 'test', 'test.row',
             'leeds', %s)""", (age, subject))
    for hh, withdrawn in (("hh-w2y", "2 years"), ("hh-w6m", "6 months"), ("hh-live", None)):
        x("""INSERT INTO consents (tenant, household, recipient_name, recipient_role, recipient_contact, purpose,
                                   evidence, granted_at, granted_by, withdrawn_at, withdrawn_by, withdrawal_reason)
             VALUES ('leeds', %s, 'Ann Example', 'daughter', 'ann@example.org', 'welfare', 'form 12',
                     now() - interval '3 years', 'clerk', now() - %s::interval,
                     CASE WHEN %s::text IS NULL THEN NULL ELSE 'clerk' END,
                     CASE WHEN %s::text IS NULL THEN NULL ELSE 'moved' END)""", (hh, withdrawn, withdrawn, withdrawn))
    retention.set_policy(conn, "household_readings", "6 months", "test", tenant="york", basis="york's own")


def expected_after(before: dict[str, list]) -> dict[str, list]:
    """What must remain, from the policies: computed independently of the job's SQL."""
    import datetime as dt

    now = dt.datetime.now(dt.timezone.utc)
    keep_days = {"hh-1": 13 * 31, "hh-2": 6 * 31, "st-1": 3650, "air-1": 3650}
    # ages are 1 day .. 11 years; months and years are far enough apart that 31-day months decide the same
    out = dict(before)
    out["readings"] = [(d, t) for d, t in before["readings"] if now - t < dt.timedelta(days=keep_days[d])]
    for rollup in ("readings_hourly", "readings_daily"):     # household rollups go with their readings
        out[rollup] = [(d, t) for d, t in before[rollup]
                       if not d.startswith("hh") or now - t < dt.timedelta(days=keep_days[d])]
    out["quarantine"] = [("q-new",)]
    out["crew_reports"] = [("report-new",), ("report-recent",)]
    out["route_plans"] = [("plan-new",), ("plan-old-reported",)]
    out["audit_log"] = [("audit-5y",), ("audit-new",)]
    out["consents"] = sorted([("hh-live", "Ann Example", "ann@example.org", "form 12", False),
                              ("hh-w6m", "Ann Example", "ann@example.org", "form 12", False),
                              ("hh-w2y", "[redacted]", "redacted@invalid", "[redacted]", True)])
    return out


def check_retention(conn: psycopg.Connection, variant: str) -> None:
    before = snapshot(conn)
    assert len(before["readings"]) == 28
    want = expected_after(before)

    dry = retention.apply(conn, dry_run=True, batch=3)
    assert snapshot(conn) == before                             # a dry run changes nothing
    assert conn.execute("SELECT count(*) FROM audit_log WHERE action = 'retention.apply'").fetchone()[0] == 0

    done = retention.apply(conn, batch=3)                      # small batches: many transactions per class
    assert done.dropped["partitions" if variant == "plain" else "chunks"] >= 1    # 11-year-old rows went whole
    after = snapshot(conn)
    assert after == want
    gone = {k: len(before[k]) - len(after[k]) for k in before}
    assert dry.rows == done.rows
    assert sum(dry.rows["household_readings"].values()) + sum(dry.rows["public_readings"].values()) \
        == gone["readings"]
    assert dry.rows["household_readings"] == {"leeds": 3, "york": 5}
    assert dry.rows["public_readings"] == {"leeds": 2}
    assert dry.rows["quarantine_raw"] == {"leeds": 1} and dry.rows["crew_reports"] == {"leeds": 1}
    assert dry.rows["route_plans"] == {"leeds": 1} and dry.rows["audit_log"] == {"leeds": 1}
    assert dry.rows["withdrawn_consents"] == {"leeds": 1}
    assert gone["readings_hourly"] == gone["readings_daily"] == 8
    assert dry.rollups_deleted == done.rollups_deleted == 16

    audit = {(r[0], r[1]): r[2] for r in conn.execute(
        "SELECT subject, tenant, details FROM audit_log WHERE action = 'retention.apply' AND actor = 'retention'")}
    assert audit[("household_readings", "york")]["rows"] == 5
    assert audit[("household_readings", "york")]["keep"] == "6 mons"
    assert audit[("household_readings", "leeds")]["keep"] == "1 year 1 mon"
    assert audit[("audit_log", "leeds")]["rows"] == 1 and audit[("withdrawn_consents", "leeds")]["rows"] == 1

    again = retention.apply(conn)
    assert again.to_json()["total"] == 0 and snapshot(conn) == after


def check_audit_log_append_only(conn: psycopg.Connection) -> None:
    conn.execute("""INSERT INTO audit_log (at, actor, action, tenant, subject)
                    VALUES (now() - interval '8 years', 'test', 'test.row', 'leeds', 'ancient')""")
    for stmt in ("DELETE FROM audit_log WHERE subject = 'ancient'",           # expired, but not the job
                 "UPDATE audit_log SET actor = 'x' WHERE subject = 'ancient'"):
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute(stmt)
    with conn.transaction():                                     # the job's flag, on a row inside its policy
        conn.execute("SELECT set_config('streetsense.retention', 'on', true)")
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            with conn.transaction():
                conn.execute("DELETE FROM audit_log WHERE subject = 'audit-new'")
        assert conn.execute("DELETE FROM audit_log WHERE subject = 'ancient'").rowcount == 1


def test_retention_plain(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        seed(conn)
        check_retention(conn, "plain")
        check_audit_log_append_only(conn)


def test_policies_are_editable_per_tenant_and_audited(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO tenants (id, name) VALUES ('leeds', 'Leeds')")
        defaults = {p["data_class"]: p["keep"] for p in retention.policies(conn) if p["tenant"] is None}
        assert defaults == {"household_readings": "1 year 1 mon", "public_readings": "10 years",
                            "quarantine_raw": "90 days", "crew_reports": "2 years", "route_plans": "2 years",
                            "audit_log": "6 years", "withdrawn_consents": "1 year"}
        retention.set_policy(conn, "public_readings", "15 years", "alice", tenant="leeds", basis="council records")
        retention.set_policy(conn, "public_readings", "12 years", "bob", tenant="leeds")
        assert conn.execute("SELECT ss_retention_keep('leeds', 'public_readings')::text").fetchone()[0] == "12 years"
        assert conn.execute("SELECT ss_retention_keep('other', 'public_readings')::text").fetchone()[0] == "10 years"
        changes = conn.execute("""SELECT actor, details->>'op', details->>'keep', details->>'was' FROM audit_log
                                  WHERE action = 'retention.policy' ORDER BY id""").fetchall()
        assert changes == [("alice", "insert", "15 years", None), ("bob", "update", "12 years", "15 years")]
        with pytest.raises(psycopg.errors.CheckViolation):       # the audit trail cannot be made to vanish
            retention.set_policy(conn, "audit_log", "1 day", "mallory", tenant="leeds")
        with pytest.raises(ValueError, match="unknown data class"):
            retention.set_policy(conn, "everything", "1 day", "mallory")
    # migrating again changes nothing (idempotent) and keeps the edits
    with psycopg.connect(db_url) as conn:
        assert migrate(conn, timescale="off") == []
        assert conn.execute("SELECT count(*) FROM retention_policies").fetchone()[0] == 8


def test_cli_show_and_dry_run(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        seed(conn, rollups=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREETSENSE_") and k != "DATABASE_URL_FILE"}
    # a backstop shorter than the longest reading policy is warned about
    env.update(DATABASE_URL=db_url, STREETSENSE_CONFIG="/nonexistent.toml", STREETSENSE_RETENTION_DAYS="730")
    run = lambda *a: subprocess.run([sys.executable, "-c", "from streetsense.cli import app; app()", "retention", *a],
                                    env=env, capture_output=True, text=True, timeout=120)
    r = run("show", "--json")
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert {(p["tenant"], p["data_class"]) for p in shown["policies"]} >= {(None, "audit_log"), ("york", "household_readings")}
    assert any("STREETSENSE_RETENTION_DAYS=730" in w for w in shown["warnings"])
    r = run("apply", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["dry_run"] is True and out["rows"]["household_readings"] == {"leeds": 3, "york": 5}
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 28


@pytest.fixture
def timescale() -> Iterator[str]:
    if not node_available():
        pytest.skip("node/PGlite not available")
    with PGliteTimescale(queue_timeout=20.0) as pg:
        yield pg.url


@pytest.mark.timescale
def test_retention_timescale(timescale):
    with psycopg.connect(timescale) as conn:
        migrate(conn, timescale="on")
    with psycopg.connect(timescale, autocommit=True) as conn:
        seed(conn, rollups=False)
        # rollups on TimescaleDB are continuous aggregates: materialize them from the readings
        for view in ("readings_hourly", "readings_daily"):
            conn.execute(f"CALL refresh_continuous_aggregate('{view}', NULL, NULL)")
        check_retention(conn, "timescale")
