"""Register a fleet (tenant, assets, devices) in the database from plain rows,
as produced by ``simulators.fleet.Fleet.to_rows()`` or a council's inventory.

Household bins carry only a pseudonymous household id, never a name or address.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import psycopg


def _asset(row: dict[str, Any]) -> tuple | None:
    a = row.get("asset") or {}
    if "bin_kind" in a:
        schedule = {k: a.get(k) for k in ("frequency_weeks", "round_days", "week_parity", "round_id", "slot_h",
                                           "edge_id", "location_class", "expected_fill_per_day") if k in a}
        return (row["tenant"], a["asset_id"], "bin", a["bin_kind"], a.get("capacity_l"), a.get("depth_m"),
                a.get("household_id"), row["lat"], row["lon"], json.dumps(schedule))
    if "site_id" in a:
        return (row["tenant"], a["site_id"], "site", None, None, None, None, row["lat"], row["lon"],
                json.dumps({"site_type": a.get("site_type"), "edge_id": a.get("edge_id")}))
    if "vehicle_id" in a:
        return (row["tenant"], a["vehicle_id"], "vehicle", None, None, None, None, None, None,
                json.dumps({k: a.get(k) for k in ("vehicle_type", "shift_days", "shift_start_h", "shift_end_h")}))
    return None


def register_fleet(conn: psycopg.Connection, rows: Iterable[dict[str, Any]], tenant_name: str | None = None,
                   status: str = "active") -> int:
    """Upsert tenants, assets and devices; returns the number of devices written."""
    rows = list(rows)
    with conn.transaction(), conn.cursor() as cur:
        for t in sorted({r["tenant"] for r in rows}):
            cur.execute("INSERT INTO tenants (id, name) VALUES (%s, %s) ON CONFLICT (id) DO NOTHING",
                        (t, tenant_name or t))
        assets = [a for a in (_asset(r) for r in rows) if a is not None]
        cur.executemany(
            """INSERT INTO assets (tenant, asset_id, kind, bin_kind, capacity_l, depth_m, household, lat, lon, schedule)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (tenant, asset_id) DO UPDATE SET schedule = EXCLUDED.schedule""", assets)
        devs = []
        for r in rows:
            a = _asset(r)
            devs.append((r["tenant"], r["device_id"], r["kind"], r.get("board", "esp32"), r.get("fw") or None,
                         r.get("lat"), r.get("lon"), a[1] if a else None, status))
        cur.executemany(
            """INSERT INTO devices (tenant, device_id, kind, board, firmware, lat, lon, asset_id, status)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (tenant, device_id) DO UPDATE SET asset_id = EXCLUDED.asset_id,
                 lat = EXCLUDED.lat, lon = EXCLUDED.lon""", devs)
    return len(rows)
