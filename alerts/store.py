"""Alerts, consents, routing, the outbox and the audit log in PostgreSQL.

Every function takes a connection and runs inside the caller's transaction,
so an alert change, the deliveries it calls for, its audit rows and the model
runner's checkpoint commit together or not at all.

Rules, in :func:`upsert_finding`:

- **One open alert per problem** (tenant, kind, entity): a new finding for a
  problem with an open or acknowledged alert is folded into it: evidence is
  appended (capped), the window extends, severity only ever rises, and the
  explanation and suggested action become the latest ones.
- **Rate limits**: an escalation re-notifies the sinks at most once per
  ``renotify_after`` (except a rise to critical, which always does; and a
  sink that the alert reaches for the first time, e.g. one routed only from
  ``high`` up, hears at once); after a problem's alert is closed, findings for it are
  counted on that alert and dropped for ``cooldown``; more than ``storm_limit``
  new alerts of one kind in a tenant within an hour are stored but muted (not
  sent).
- **Welfare** findings become alerts only for a household with a live
  consent, read ``FOR SHARE`` so a concurrent withdrawal waits for this
  transaction and then closes what it made. Without consent nothing about the
  household is stored.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Jsonb

SEVERITIES = ("info", "low", "medium", "high", "critical")
RANK = {s: i for i, s in enumerate(SEVERITIES)}
VERDICTS = ("true_positive", "false_positive")
WELFARE_ROLES = frozenset({"admin", "operations"})
REDACTED = "[redacted: consent withdrawn]"


@dataclass(frozen=True)
class Policy:
    #: after a problem's alert is closed, no new alert for it this soon (findings are counted)
    cooldown: timedelta = timedelta(hours=6)
    #: an escalation notifies the sinks again at most this often
    renotify_after: timedelta = timedelta(hours=1)
    #: new alerts per tenant and kind per hour that are sent; beyond it they are stored muted
    storm_limit: int = 200
    #: evidence entries kept per alert (the first and the newest)
    evidence_cap: int = 50


@dataclass(frozen=True)
class Upserted:
    outcome: Literal["opened", "updated", "escalated", "suppressed", "no_consent"]
    alert_id: int | None
    deliveries: int = 0


class NotFound(LookupError):
    pass


class Conflict(RuntimeError):
    pass


# --- JSON ------------------------------------------------------------------------------------------

def _default(o: Any) -> Any:
    if hasattr(o, "tolist"):          # numpy scalars and arrays
        return o.tolist()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if isinstance(o, datetime):
        return o.isoformat()
    return str(o)


def _clean(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None                    # JSON has no NaN/inf; PostgreSQL jsonb refuses them
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def dumps(o: Any) -> str:
    return json.dumps(_clean(json.loads(json.dumps(o, default=_default))), separators=(",", ":"))


def jsonb(o: Any) -> Jsonb:
    return Jsonb(o, dumps=dumps)


def ms_to_dt(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


# --- audit -----------------------------------------------------------------------------------------

def audit(conn: psycopg.Connection, actor: str, action: str, tenant: str | None, subject: str,
          details: dict | None = None) -> None:
    """Append to ``audit_log`` (append-only; migration 0003)."""
    conn.execute("INSERT INTO audit_log (actor, action, tenant, subject, details) VALUES (%s, %s, %s, %s, %s)",
                 (actor, action, tenant, subject, jsonb(details or {})))


def _subject(alert: dict) -> str:
    # welfare rows are filed under the household, so "who touched this household's data" is one query
    return alert["household"] if alert.get("welfare") and alert.get("household") else f"alert-{alert['id']}"


# --- findings -> alerts ----------------------------------------------------------------------------

def _evidence_entry(f: Any) -> dict:
    return {"severity": f.severity, "window_start": ms_to_dt(f.window_start_ms),
            "window_end": ms_to_dt(f.window_end_ms), "explanation": f.explanation,
            "suggested_action": f.suggested_action, "evidence": f.evidence}


def _cap(entries: list, cap: int) -> list:
    return entries if len(entries) <= cap else [entries[0], *entries[-(cap - 1):]]


def _place(cur: psycopg.Cursor, f: Any) -> dict:
    """Device pk, ward and a location for the finding's entity (the finding's own location first)."""
    row = cur.execute(
        """SELECT d.id AS device_pk, coalesce(%(asset)s, d.asset_id) AS asset_id,
                  coalesce(a.ward, a2.ward) AS ward,
                  coalesce(d.lat, a.lat, a2.lat) AS lat, coalesce(d.lon, a.lon, a2.lon) AS lon
           FROM (SELECT 1) one
           LEFT JOIN devices d ON d.tenant = %(tenant)s AND d.device_id = %(device)s
           LEFT JOIN assets a ON a.tenant = %(tenant)s AND a.asset_id = %(asset)s
           LEFT JOIN assets a2 ON a2.tenant = %(tenant)s AND a2.asset_id = d.asset_id""",
        {"tenant": f.tenant, "device": f.device_id, "asset": f.asset_id}).fetchone()
    if f.lat is not None and f.lon is not None:
        row["lat"], row["lon"] = f.lat, f.lon
    return row


def upsert_finding(conn: psycopg.Connection, f: Any, policy: Policy = Policy(), *,
                   actor: str = "runner") -> Upserted:
    """Fold one finding into the alerts (see the module docstring for the rules)."""
    if f.severity not in RANK:
        raise ValueError(f"unknown severity {f.severity!r}")
    cur = conn.cursor(row_factory=dict_row)
    consent = None
    if f.welfare:
        if not f.household:
            return Upserted("no_consent", None)
        consent = cur.execute(
            """SELECT id, recipient_name, recipient_contact, purpose FROM consents
               WHERE tenant = %s AND household = %s AND withdrawn_at IS NULL FOR SHARE""",
            (f.tenant, f.household)).fetchone()
        if consent is None:
            return Upserted("no_consent", None)
    entry = _evidence_entry(f)
    ws, we = ms_to_dt(f.window_start_ms), ms_to_dt(f.window_end_ms)
    cur_alert = cur.execute(
        """SELECT *, now() AS db_now FROM alerts
           WHERE tenant = %s AND kind = %s AND entity = %s AND status IN ('open', 'acknowledged') FOR UPDATE""",
        (f.tenant, f.kind, f.entity)).fetchone()

    if cur_alert is not None:
        a = cur_alert
        rose = RANK[f.severity] > RANK[a["severity"]]
        severity = f.severity if rose else a["severity"]
        evidence = _cap([*a["evidence"], entry], policy.evidence_cap)
        cur.execute(
            """UPDATE alerts SET severity = %(sev)s, window_start = least(window_start, %(ws)s),
                   window_end = greatest(window_end, %(we)s, %(ws)s),
                   summary = %(summary)s, suggested_action = %(action)s,
                   explanation = %(expl)s, evidence = %(evidence)s, findings = findings + 1,
                   lat = coalesce(%(lat)s, lat), lon = coalesce(%(lon)s, lon), updated_at = now()
               WHERE id = %(id)s""",
            {"sev": severity, "ws": ws, "we": we, "summary": f.explanation, "action": f.suggested_action,
             "expl": jsonb(entry), "evidence": jsonb(evidence), "lat": f.lat, "lon": f.lon, "id": a["id"]})
        n = 0
        if rose and not a["muted"]:
            due = (severity == "critical" or a["notified_at"] is None
                   or a["db_now"] - a["notified_at"] >= policy.renotify_after)
            # sinks already told are rate-limited; a sink the alert now reaches for the first time is told now
            n = enqueue(conn, a["id"], f"escalated:{severity}", only_new_sinks=not due)
            if n:
                cur.execute("UPDATE alerts SET notified_severity = %s, notified_at = now() WHERE id = %s",
                            (severity, a["id"]))
        return Upserted("escalated" if rose else "updated", a["id"], n)

    # a new problem, unless it was closed moments ago
    recent = cur.execute(
        """SELECT id FROM alerts WHERE tenant = %s AND kind = %s AND entity = %s
             AND closed_at > now() - %s AND resolution IS DISTINCT FROM 'consent_withdrawn'
           ORDER BY closed_at DESC LIMIT 1""",
        (f.tenant, f.kind, f.entity, policy.cooldown)).fetchone()
    if recent is not None:
        cur.execute("UPDATE alerts SET suppressed = suppressed + 1 WHERE id = %s", (recent["id"],))
        return Upserted("suppressed", recent["id"])
    sent_this_hour = cur.execute(
        """SELECT count(*) AS n FROM alerts WHERE tenant = %s AND kind = %s AND NOT muted
             AND created_at > now() - interval '1 hour'""", (f.tenant, f.kind)).fetchone()["n"]
    muted = sent_this_hour >= policy.storm_limit
    place = _place(cur, f)
    alert_id = cur.execute(
        """INSERT INTO alerts (tenant, kind, severity, entity, device_id, asset_id, lat, lon, ward,
                               window_start, window_end, explanation, summary, suggested_action, evidence,
                               findings, first_severity, welfare, household, consent_id, muted)
           VALUES (%(tenant)s, %(kind)s, %(sev)s, %(entity)s, %(device)s, %(asset)s, %(lat)s, %(lon)s,
                   %(ward)s, %(ws)s, %(we)s, %(expl)s, %(summary)s, %(action)s, %(evidence)s, 1, %(sev)s,
                   %(welfare)s, %(household)s, %(consent)s, %(muted)s)
           RETURNING id""",
        {"tenant": f.tenant, "kind": f.kind, "sev": f.severity, "entity": f.entity,
         "device": place["device_pk"], "asset": place["asset_id"], "lat": place["lat"], "lon": place["lon"],
         "ward": place["ward"], "ws": ws, "we": we, "expl": jsonb(entry), "summary": f.explanation,
         "action": f.suggested_action, "evidence": jsonb([entry]), "welfare": bool(f.welfare),
         "household": f.household if f.welfare else None, "consent": consent["id"] if consent else None,
         "muted": muted}).fetchone()["id"]
    if consent is not None:
        audit(conn, actor, "welfare.raise", f.tenant, f.household,
              {"alert_id": alert_id, "consent_id": consent["id"], "kind": f.kind, "asset_id": f.asset_id})
    n = 0 if muted else enqueue(conn, alert_id, "opened")
    if n:
        cur.execute("UPDATE alerts SET notified_severity = severity, notified_at = now() WHERE id = %s", (alert_id,))
    return Upserted("opened", alert_id, n)


# --- routing and the outbox ------------------------------------------------------------------------

ROUTES = """SELECT DISTINCT s.name AS sink, s.kind
    FROM alert_routes r JOIN alert_sinks s ON s.tenant = r.tenant AND s.name = r.sink
    WHERE r.tenant = %(tenant)s AND s.enabled
      AND (r.kinds IS NULL OR %(kind)s = ANY (r.kinds))
      AND ss_severity_rank(%(severity)s) >= ss_severity_rank(r.min_severity)
      AND r.welfare = %(welfare)s
      AND (r.ward IS NULL OR r.ward = %(ward)s)
      AND (r.min_lat IS NULL OR (%(lat)s::float8 BETWEEN r.min_lat AND r.max_lat
                                 AND %(lon)s::float8 BETWEEN r.min_lon AND r.max_lon))
    ORDER BY s.name"""


def routes_for(conn: psycopg.Connection, alert: dict) -> list[dict]:
    """The sinks an alert goes to under the routing rules (kind, severity, ward or bounding box)."""
    return conn.cursor(row_factory=dict_row).execute(ROUTES, {
        "tenant": alert["tenant"], "kind": alert["kind"], "severity": alert["severity"],
        "welfare": alert["welfare"], "ward": alert["ward"], "lat": alert["lat"], "lon": alert["lon"]}).fetchall()


def enqueue(conn: psycopg.Connection, alert_id: int, event: str, *, only_new_sinks: bool = False) -> int:
    """Queue ``event`` of the alert for every routed sink (``only_new_sinks``: those that have had
    nothing about this alert yet); returns how many rows were added.

    (alert, sink, event) is unique, so queuing twice adds nothing. Open311 gets
    one service request per incident (``opened`` only). Welfare alerts never go
    to Open311 (its requests are public in many councils) and are addressed to
    the consent's named recipient.
    """
    cur = conn.cursor(row_factory=dict_row)
    alert = cur.execute(
        """SELECT a.*, c.recipient_contact FROM alerts a LEFT JOIN consents c ON c.id = a.consent_id
           WHERE a.id = %s""", (alert_id,)).fetchone()
    told = {r["sink"] for r in cur.execute("SELECT DISTINCT sink FROM alert_deliveries WHERE alert_id = %s",
                                           (alert_id,))} if only_new_sinks else set()
    added = 0
    for r in routes_for(conn, alert):
        if r["kind"] == "open311" and (event != "opened" or alert["welfare"]):
            continue
        if r["sink"] in told:
            continue
        cur.execute(
            """INSERT INTO alert_deliveries (alert_id, tenant, sink, event, idempotency_key, recipient)
               VALUES (%s, %s, %s, %s, 'ss_' || replace(gen_random_uuid()::text, '-', ''), %s)
               ON CONFLICT (alert_id, sink, event) DO NOTHING""",
            (alert_id, alert["tenant"], r["sink"], event,
             alert["recipient_contact"] if alert["welfare"] else None))
        added += cur.rowcount
    return added


def add_sink(conn: psycopg.Connection, tenant: str, name: str, kind: str, config: dict,
             *, enabled: bool = True) -> None:
    conn.execute("""INSERT INTO alert_sinks (tenant, name, kind, config, enabled) VALUES (%s, %s, %s, %s, %s)
                    ON CONFLICT (tenant, name) DO UPDATE SET kind = EXCLUDED.kind, config = EXCLUDED.config,
                      enabled = EXCLUDED.enabled""", (tenant, name, kind, jsonb(config), enabled))


def add_route(conn: psycopg.Connection, tenant: str, sink: str, *, kinds: list[str] | None = None,
              min_severity: str = "info", ward: str | None = None,
              bbox: tuple[float, float, float, float] | None = None, welfare: bool = False) -> int:
    """A routing rule; ``bbox`` is (min_lat, min_lon, max_lat, max_lon)."""
    b = bbox or (None, None, None, None)
    return conn.cursor(row_factory=tuple_row).execute(
        """INSERT INTO alert_routes (tenant, sink, kinds, min_severity, ward, min_lat, min_lon, max_lat, max_lon,
                                     welfare) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
        (tenant, sink, kinds, min_severity, ward, *b, welfare)).fetchone()[0]


# --- lifecycle -------------------------------------------------------------------------------------

def get_alert(conn: psycopg.Connection, alert_id: int, *, lock: bool = False) -> dict:
    row = conn.cursor(row_factory=dict_row).execute(
        "SELECT * FROM alerts WHERE id = %s" + (" FOR UPDATE" if lock else ""), (alert_id,)).fetchone()
    if row is None:
        raise NotFound(f"no alert {alert_id}")
    return row


def acknowledge(conn: psycopg.Connection, alert_id: int, actor: str, comment: str | None = None) -> dict:
    a = get_alert(conn, alert_id, lock=True)
    if a["status"] != "open":
        raise Conflict(f"alert {alert_id} is {a['status']}, not open")
    conn.execute("""UPDATE alerts SET status = 'acknowledged', acknowledged_at = now(), acknowledged_by = %s,
                        comment = coalesce(%s, comment), updated_at = now() WHERE id = %s""",
                 (actor, comment, alert_id))
    audit(conn, actor, "alert.acknowledge", a["tenant"], _subject(a),
          {"alert_id": alert_id, "kind": a["kind"], "comment": comment})
    return get_alert(conn, alert_id)


def close(conn: psycopg.Connection, alert_id: int, actor: str, status: Literal["resolved", "dismissed"],
          verdict: str | None, comment: str | None = None, *,
          resolution: Literal["operator", "council"] = "operator") -> dict:
    """Resolve or dismiss an open or acknowledged alert.

    A verdict is audited and queued for the model runner (``alert_feedback``),
    which hands it to the engine and records what changed. Deliveries not yet
    made are cancelled: a dismissed false alarm must not become a council job.
    """
    if verdict is not None and verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}")
    a = get_alert(conn, alert_id, lock=True)
    if a["status"] not in ("open", "acknowledged"):
        raise Conflict(f"alert {alert_id} is already {a['status']}")
    conn.execute("""UPDATE alerts SET status = %s, closed_at = now(), closed_by = %s, resolution = %s,
                        verdict = %s, comment = coalesce(%s, comment), updated_at = now() WHERE id = %s""",
                 (status, actor, resolution, verdict, comment, alert_id))
    cancelled = conn.execute(
        """UPDATE alert_deliveries SET status = 'cancelled', cancelled_at = now(), cancelled_reason = %s
           WHERE alert_id = %s AND status = 'pending'""", (f"alert {status}", alert_id)).rowcount
    if verdict is not None:
        conn.execute("""INSERT INTO alert_feedback (alert_id, tenant, kind, entity, verdict, actor)
                        VALUES (%s, %s, %s, %s, %s, %s)""",
                     (alert_id, a["tenant"], a["kind"], a["entity"], verdict, actor))
    action = {"resolved": "alert.resolve", "dismissed": "alert.dismiss"}[status]
    if resolution == "council":
        action = "alert.council_close"
    audit(conn, actor, action, a["tenant"], _subject(a),
          {"alert_id": alert_id, "kind": a["kind"], "verdict": verdict, "comment": comment,
           "deliveries_cancelled": cancelled})
    return get_alert(conn, alert_id)


# --- consent register ------------------------------------------------------------------------------

CONSENT_COLUMNS = ("id, tenant, household, recipient_name, recipient_role, recipient_contact, purpose, evidence, "
                   "granted_at, granted_by, withdrawn_at, withdrawn_by, withdrawal_reason")


def grant_consent(conn: psycopg.Connection, *, tenant: str, household: str, recipient_name: str,
                  recipient_role: str, recipient_contact: str, purpose: str, evidence: str, actor: str,
                  granted_at: datetime | None = None) -> dict:
    try:
        with conn.transaction():
            row = conn.cursor(row_factory=dict_row).execute(
                f"""INSERT INTO consents (tenant, household, recipient_name, recipient_role, recipient_contact,
                                          purpose, evidence, granted_at, granted_by)
                    VALUES (%s, %s, %s, %s, %s, %s, %s, coalesce(%s, now()), %s) RETURNING {CONSENT_COLUMNS}""",
                (tenant, household, recipient_name, recipient_role, recipient_contact, purpose, evidence,
                 granted_at, actor)).fetchone()
    except psycopg.errors.UniqueViolation:
        raise Conflict(f"household {household!r} already has a live consent; withdraw it first") from None
    audit(conn, actor, "consent.grant", tenant, household,
          {"consent_id": row["id"], "recipient_role": recipient_role, "purpose": purpose})
    return row


def withdraw_consent(conn: psycopg.Connection, consent_id: int, actor: str, reason: str | None = None) -> dict:
    """Withdraw at once: welfare alerts under this consent are closed (if open) and redacted, deliveries
    not yet made are cancelled, and what was sent is no longer kept. Returns the consent and counts."""
    cur = conn.cursor(row_factory=dict_row)
    c = cur.execute(f"SELECT {CONSENT_COLUMNS} FROM consents WHERE id = %s FOR UPDATE", (consent_id,)).fetchone()
    if c is None:
        raise NotFound(f"no consent {consent_id}")
    if c["withdrawn_at"] is not None:
        raise Conflict(f"consent {consent_id} was already withdrawn")
    c = cur.execute(f"""UPDATE consents SET withdrawn_at = now(), withdrawn_by = %s, withdrawal_reason = %s
                        WHERE id = %s RETURNING {CONSENT_COLUMNS}""", (actor, reason, consent_id)).fetchone()
    closed = cur.execute(
        """UPDATE alerts SET status = 'dismissed', closed_at = now(), closed_by = %s,
               resolution = 'consent_withdrawn', updated_at = now()
           WHERE consent_id = %s AND status IN ('open', 'acknowledged')""", (actor, consent_id)).rowcount
    # what is left says only that a welfare alert existed under this consent, and how it ended
    redacted = cur.execute(
        """UPDATE alerts SET summary = %s, suggested_action = '', explanation = '{}', evidence = '[]',
               comment = NULL, lat = NULL, lon = NULL, household = NULL, asset_id = NULL, device_id = NULL,
               ward = NULL, entity = 'redacted-' || id, redacted_at = now(), updated_at = now()
           WHERE consent_id = %s AND redacted_at IS NULL""", (REDACTED, consent_id)).rowcount
    cancelled = cur.execute(
        """UPDATE alert_deliveries d SET status = 'cancelled', cancelled_at = now(),
               cancelled_reason = 'consent withdrawn'
           FROM alerts a WHERE a.id = d.alert_id AND a.consent_id = %s AND d.status IN ('pending', 'sending')""",
        (consent_id,)).rowcount
    cur.execute("""UPDATE alert_deliveries d SET payload = NULL, recipient = NULL
                   FROM alerts a WHERE a.id = d.alert_id AND a.consent_id = %s""", (consent_id,))
    audit(conn, actor, "consent.withdraw", c["tenant"], c["household"],
          {"consent_id": consent_id, "reason": reason, "alerts_closed": closed, "alerts_redacted": redacted,
           "deliveries_cancelled": cancelled})
    return {"consent": c, "alerts_closed": closed, "alerts_redacted": redacted,
            "deliveries_cancelled": cancelled}
