"""The audit of API reads of personal (household-linked) data, in ``audit_log``.

One row per household a response shows, filed under the household's pseudonym
(``subject``), so a subject-access export can tell a resident who looked at
their data.  The actor is the principal's name; its role and token id go in
``details``.  Reads audited here: route plans and crew pages/exports with
household bins on them (``route.view``) and readings of a household's bin
(``readings.view``); subject access (``household.export``), the consent register
(``consent.view``) and welfare alerts (``welfare.view``) are audited where they
are served (api/opendata.py, api/consents.py, api/alerts.py).
"""

from __future__ import annotations

import json
from typing import Any

import psycopg

from api.auth import Principal


def who(p: Principal) -> dict[str, Any]:
    """What an audit row says about the caller besides the name.

    >>> who(Principal("anna", "operations", "leeds", None, 7))
    {'role': 'operations', 'token_id': 7}
    """
    return {"role": p.role, "token_id": p.token_id}


def record(conn: psycopg.Connection, p: Principal, action: str, tenant: str, households: list[str],
           details: dict[str, Any]) -> int:
    """One ``audit_log`` row per household in ``households`` (one statement); returns the rows written."""
    subjects = sorted(set(households))
    if not subjects:
        return 0
    conn.execute("""INSERT INTO audit_log (actor, action, tenant, subject, details)
                    SELECT %s, %s, %s, s, %s FROM unnest(%s::text[]) s""",
                 (p.name, action, tenant, json.dumps({**details, **who(p)}), subjects))
    return len(subjects)


def plan_households(conn: psycopg.Connection, tenant: str, plan: dict, route_id: str | None = None) -> list[str]:
    """The households whose bins are stops of ``plan`` (of one route, if given)."""
    assets = [e["asset_id"] for rt in plan.get("routes", []) if route_id is None or rt.get("route_id") == route_id
              for e in rt.get("events", []) if e.get("type") == "stop" and e.get("asset_id")]
    if not assets:
        return []
    return [r["household"] if isinstance(r, dict) else r[0] for r in conn.execute(
        """SELECT DISTINCT household AS household FROM assets
           WHERE tenant = %s AND asset_id = ANY(%s) AND household IS NOT NULL""", (tenant, assets))]


def route_view(conn: psycopg.Connection, p: Principal, tenant: str, plan_id: int, plan: dict,
               route_id: str | None, via: str) -> int:
    """Audit a read of a plan (or one route of it) that shows household bins."""
    return record(conn, p, "route.view", tenant, plan_households(conn, tenant, plan, route_id),
                  {"plan_id": plan_id, "route_id": route_id, "via": via})


def readings_view(conn: psycopg.Connection, p: Principal, tenant: str, device_pk: int, via: str) -> int:
    """Audit a read of readings when the device is on a household's bin."""
    rows = conn.execute("""SELECT a.household AS household FROM devices d
                           JOIN assets a ON a.tenant = d.tenant AND a.asset_id = d.asset_id
                           WHERE d.id = %s AND a.household IS NOT NULL""", (device_pk,)).fetchall()
    hh = [r["household"] if isinstance(r, dict) else r[0] for r in rows]
    return record(conn, p, "readings.view", tenant, hh, {"device_pk": device_pk, "via": via})
