"""Plans and crew reports in PostgreSQL (``ingest/schema/0007_routing.sql``), and the
planning inputs read from the registry, readings and alerts.

Forecast inputs per bin: the last reported ``fill`` and a rate from the readings
of the last ``lookback_days`` (the rise since the lowest reading after the last
emptying, per day; no rate when the bin was just emptied and has < 12 h of data).
"""

from __future__ import annotations

import json
from datetime import date as Date, datetime, time as Time, timedelta, timezone
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from routing.plan import BinState

if TYPE_CHECKING:
    from routing.fleet import FleetConfig

__all__ = ["load_bin_states", "save_plan", "get_plan", "latest_plan", "add_report", "reports", "supersede",
           "save_fleet", "get_fleet"]

BINS = """SELECT a.asset_id, a.bin_kind, coalesce(a.capacity_l, 240) AS capacity_l, a.lat, a.lon, a.household,
       coalesce(a.street, '') AS street, a.schedule, d.id AS device_pk
    FROM assets a LEFT JOIN devices d ON d.tenant = a.tenant AND d.asset_id = a.asset_id AND d.kind = 'bin_fill'
    WHERE a.tenant = %(tenant)s AND a.kind = 'bin' AND a.lat IS NOT NULL
    ORDER BY a.asset_id"""

FILLS = """SELECT r.device_id, r.time, r.value FROM readings r
    WHERE r.device_id = ANY(%(pks)s) AND r.metric = (SELECT id FROM metrics WHERE name = 'fill')
      AND r.time >= %(since)s AND r.time < %(until)s
    ORDER BY r.device_id, r.time"""

ALERTS = """SELECT asset_id, kind FROM alerts
    WHERE tenant = %(tenant)s AND status IN ('open', 'acknowledged') AND asset_id IS NOT NULL
      AND kind IN ('overflow', 'missed_collection')"""


def _rate(series: list[tuple[datetime, float]]) -> tuple[float | None, float | None, datetime | None]:
    """(last fill, rate per day, time of last) from one bin's readings."""
    if not series:
        return None, None, None
    t_last, f_last = series[-1]
    # start of the current fill cycle: after the last big drop (emptying)
    start = 0
    for i in range(1, len(series)):
        if series[i][1] < series[i - 1][1] - 0.25:
            start = i
    cyc = series[start:]
    t0, f0 = min(cyc, key=lambda x: x[1])
    days = (t_last - t0).total_seconds() / 86400
    rate = (f_last - f0) / days if days >= 0.5 else None
    return f_last, (max(0.0, rate) if rate is not None else None), t_last


def load_bin_states(conn, tenant: str, day: Date, graph=None, lookback_days: int = 7,
                    tz: str = "UTC") -> list[BinState]:
    """The bins of ``tenant`` as they stand at the start of ``day`` (local midnight in ``tz``)."""
    start = datetime.combine(day, Time(0), tzinfo=ZoneInfo(tz)).astimezone(timezone.utc)
    rows = conn.execute(BINS, {"tenant": tenant}).fetchall()
    pks = [r["device_pk"] for r in rows if r["device_pk"] is not None]
    fills: dict[int, list] = {}
    if pks:
        for r in conn.execute(FILLS, {"pks": pks, "since": start - timedelta(days=lookback_days),
                                      "until": start}).fetchall():
            fills.setdefault(r["device_id"], []).append((r["time"], float(r["value"])))
    alerts: dict[str, list[str]] = {}
    for r in conn.execute(ALERTS, {"tenant": tenant}).fetchall():
        alerts.setdefault(r["asset_id"], []).append(r["kind"])
    out = []
    for r in rows:
        s = r["schedule"] or {}
        f, rate, t_last = _rate(fills.get(r["device_pk"], []))
        edge = s.get("edge_id")
        street, cls = r["street"], ""
        if graph is not None and edge is not None and 0 <= int(edge) < len(graph.edges):
            street = street or graph.edges[int(edge)].name
            cls = graph.edges[int(edge)].road_class
        out.append(BinState(r["asset_id"], r["bin_kind"] or "household", float(r["capacity_l"]), r["lat"], r["lon"],
                            None if edge is None else int(edge), street, cls, f,
                            0.0 if t_last is None else (start - t_last).total_seconds() / 3600, rate,
                            tuple(s.get("round_days", ())), int(s.get("frequency_weeks", 1)),
                            int(s.get("week_parity", 0)), float(s.get("slot_h", 9.0)), r["household"],
                            tuple(alerts.get(r["asset_id"], ()))))
    return out


def save_plan(conn, tenant: str, day: Date | str, inputs: dict, plan: dict, parent_id: int | None = None,
              reason: str = "planned") -> int:
    with conn.transaction():
        if parent_id is not None:
            conn.execute("UPDATE route_plans SET status = 'superseded' WHERE id = %s", (parent_id,))
        row = conn.execute(
            "INSERT INTO route_plans (tenant, plan_date, parent_id, reason, inputs, plan) "
            "VALUES (%s, %s, %s, %s, %s::jsonb, %s::jsonb) RETURNING id",
            (tenant, str(day), parent_id, reason, json.dumps(inputs, default=str), json.dumps(plan, default=str))
        ).fetchone()
    return int(row["id"] if isinstance(row, dict) else row[0])


def get_plan(conn, plan_id: int) -> dict | None:
    row = conn.execute("SELECT id, tenant, plan_date, status, parent_id, reason, plan, inputs, created_at "
                       "FROM route_plans WHERE id = %s", (plan_id,)).fetchone()
    if row is None:
        return None
    return row if isinstance(row, dict) else dict(zip(
        ("id", "tenant", "plan_date", "status", "parent_id", "reason", "plan", "inputs", "created_at"), row))


def latest_plan(conn, plan_id: int) -> int:
    """Follow re-plans from ``plan_id`` to the active descendant."""
    cur = plan_id
    while True:
        row = conn.execute("SELECT id FROM route_plans WHERE parent_id = %s ORDER BY id DESC LIMIT 1",
                           (cur,)).fetchone()
        if row is None:
            return cur
        cur = row["id"] if isinstance(row, dict) else row[0]


def add_report(conn, plan_id: int, tenant: str, route_id: str, asset_id: str, status: str, client_id: str,
               reported_at: datetime, note: str = "", edge_id: int | None = None) -> tuple[dict, bool]:
    """Insert a crew report; (row, created) — a resend with the same client_id is a no-op."""
    row = conn.execute(
        "INSERT INTO crew_reports (plan_id, tenant, route_id, asset_id, status, client_id, reported_at, note, edge_id) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (plan_id, client_id) DO NOTHING "
        "RETURNING id, plan_id, route_id, asset_id, status, client_id, reported_at, received_at",
        (plan_id, tenant, route_id, asset_id, status, client_id, reported_at, note, edge_id)).fetchone()
    if row is not None:
        return dict(row), True
    row = conn.execute("SELECT id, plan_id, route_id, asset_id, status, client_id, reported_at, received_at, "
                       "replan_id FROM crew_reports WHERE plan_id = %s AND client_id = %s",
                       (plan_id, client_id)).fetchone()
    return dict(row), False


def reports(conn, plan_ids: list[int]) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(
        "SELECT id, plan_id, route_id, asset_id, status, client_id, reported_at, received_at, edge_id, replan_id "
        "FROM crew_reports WHERE plan_id = ANY(%s) ORDER BY reported_at, id", (plan_ids,)).fetchall()]


def supersede(conn, report_id: int, replan_id: int) -> None:
    conn.execute("UPDATE crew_reports SET replan_id = %s WHERE id = %s", (replan_id, report_id))


def save_fleet(conn, tenant: str, name: str, cfg: "FleetConfig") -> None:
    """Store (or replace) the tenant's fleet configuration ``name`` (validated before it gets here)."""
    conn.execute(
        "INSERT INTO fleet_configs (tenant, name, config) VALUES (%s, %s, %s::jsonb) "
        "ON CONFLICT (tenant, name) DO UPDATE SET config = EXCLUDED.config, updated_at = now()",
        (tenant, name, json.dumps(cfg.dump())))


def get_fleet(conn, tenant: str, name: str) -> "FleetConfig | None":
    """The tenant's fleet configuration ``name``, validated again (None if there is none)."""
    from routing.fleet import validate_fleet

    row = conn.execute("SELECT config FROM fleet_configs WHERE tenant = %s AND name = %s", (tenant, name)).fetchone()
    if row is None:
        return None
    cfg = row["config"] if isinstance(row, dict) else row[0]
    return validate_fleet(cfg, f"fleet_configs {tenant}/{name}")
