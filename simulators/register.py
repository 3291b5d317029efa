"""Register a simulated fleet with the backend (tenant, assets, devices) before publishing.

Ingest quarantines packs from unknown devices, so the demo and end-to-end
tests register ``Fleet.devices`` first.  Parameterised SQL against the
ingest schema (``ingest/schema/0001_core.sql``); idempotent (``ON CONFLICT DO
NOTHING``); runs in the caller's transaction.

    with psycopg.connect(url) as conn:
        register_fleet(conn, fleet)
        conn.commit()
"""

from __future__ import annotations

import json
from typing import Any

from simulators.fleet import BinAsset, Fleet, SiteAsset, VehicleAsset

__all__ = ["register_fleet", "asset_row"]


def asset_row(d) -> tuple[str, str, str | None, float | None, float | None, str | None, str, float, float]:
    """(asset_id, kind, bin_kind, capacity_l, depth_m, household, schedule json, lat, lon) for a device."""
    a = d.asset
    if isinstance(a, BinAsset):
        sched = {"round_id": a.round_id, "round_days": list(a.round_days), "frequency_weeks": a.frequency_weeks,
                 "week_parity": a.week_parity, "slot_h": a.slot_h, "edge_id": a.edge_id}
        return (a.asset_id, "bin", a.bin_kind, float(a.capacity_l), float(a.depth_m), a.household_id,
                json.dumps(sched), d.lat, d.lon)
    if isinstance(a, SiteAsset):
        return (a.site_id, "lamp_post", None, None, None, None, json.dumps({"site_type": a.site_type}), d.lat, d.lon)
    if isinstance(a, VehicleAsset):
        sched = {"vehicle_type": a.vehicle_type, "shift_days": list(a.shift_days),
                 "shift_start_h": a.shift_start_h, "shift_end_h": a.shift_end_h}
        return (a.vehicle_id, "vehicle", None, None, None, None, json.dumps(sched), d.lat, d.lon)
    raise TypeError(f"unknown asset {a!r}")


def register_fleet(conn: Any, fleet: Fleet, tenant_name: str | None = None) -> int:
    """Insert the tenant, every asset and every device; returns the number of devices given."""
    tenant = fleet.tenant
    with conn.cursor() as cur:
        cur.execute("INSERT INTO tenants (id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                    (tenant, tenant_name or fleet.scenario.description or fleet.scenario.name))
        assets = [(tenant, *asset_row(d)) for d in fleet.devices]
        cur.executemany(
            "INSERT INTO assets (tenant, asset_id, kind, bin_kind, capacity_l, depth_m, household, schedule, lat, lon) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s) ON CONFLICT DO NOTHING", assets)
        rows = [(tenant, d.device_id, d.kind, d.board, d.fw or None, d.lat, d.lon, asset_row(d)[0])
                for d in fleet.devices]
        cur.executemany(
            "INSERT INTO devices (tenant, device_id, kind, board, firmware, lat, lon, asset_id) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING", rows)
    return len(fleet.devices)
