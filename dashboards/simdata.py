"""Load a database with a simulated town, through the real ingest path
(contract decoder -> ingest.handler.MessageHandler -> ingest.store.ReadingStore),
for the dashboard and open-data tests and demos.

Besides the readings it sets what the simulators do not produce: a ward on
every asset (by quadrant of the town), and alerts with lifecycles, operator
verdicts and deliveries made from the run's ground truth, so the alert panels
have rows.  (The real alert runner is another engineer's; this only seeds.)
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

import psycopg

from ingest.handler import MessageHandler
from ingest.registry import DeviceInfo
from ingest.store import ReadingStore
from ingest.handler import batch_of
from simulators.engine import Simulation
from simulators.fleet import build_fleet
from simulators.register import register_fleet
from simulators.scenario import load_scenario

DAY_MS = 86_400_000
WARDS = ("north-east", "north-west", "south-east", "south-west")
ALERT_KINDS = {"missed_collection": "missed_collection", "overflow": "overflow_forecast", "pothole": "pothole",
               "dead_battery": "battery_low", "noise_party": "noise_exceedance", "air_episode": "pm_episode",
               "not_put_out": "not_put_out", "fire": "fire_risk", "sensor_stuck": "sensor_stuck"}


@dataclass
class Loaded:
    tenant: str
    start: dt.datetime
    end: dt.datetime
    devices: int
    readings: int
    quarantined: int
    alerts: int
    truth: list = field(default_factory=list, repr=False)


def midnight_days_ago(days: int) -> int:
    now = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return int((now - dt.timedelta(days=days)).timestamp() * 1000)


def load(url: str, *, days: float = 7, start_ms: int | None = None, scenario: str = "tiny",
         counts: dict | str | None = None, seed: int = 7, node: dict | None = None) -> Loaded:
    """Simulate ``days`` (by default ending at midnight UTC today) and store it in ``url``.

    One connection at a time (PGlite-safe).
    """
    fleet = build_fleet(load_scenario(scenario), counts=counts, seed=seed)
    start_ms = midnight_days_ago(int(days)) if start_ms is None else start_ms
    with psycopg.connect(url) as c:
        register_fleet(c, fleet)
        lat0, lon0 = c.execute("SELECT avg(lat), avg(lon) FROM assets WHERE tenant = %s", (fleet.tenant,)).fetchone()
        c.execute("""UPDATE assets SET ward = CASE WHEN lat >= %(lat)s THEN 'north-' ELSE 'south-' END
                                            || CASE WHEN lon >= %(lon)s THEN 'east' ELSE 'west' END
                     WHERE tenant = %(t)s AND kind <> 'vehicle' AND lat IS NOT NULL""",
                  {"lat": lat0, "lon": lon0, "t": fleet.tenant})
        reg = {(t, d): DeviceInfo(pk, k, s) for pk, t, d, k, s in
               c.execute("SELECT id, tenant, device_id, kind, status FROM devices WHERE tenant = %s", (fleet.tenant,))}
        c.commit()
        handler = MessageHandler(lambda t, d: reg.get((t, d)))
        store = ReadingStore(c, "simdata")
        sim = Simulation(fleet, start_ms=start_ms, days=days, seed=seed,
                         node={"malformed_rate": 0.003, **(node or {})})
        truth, readings, quarantined = [], 0, 0
        for b in sim.batches():
            truth.extend(b.truth)
            if b.messages:
                r = store.write(batch_of([handler.handle(m.topic, m.payload, m.send_ms) for m in b.messages]))
                readings += r.inserted
                quarantined += r.quarantined
        n_alerts = seed_alerts(c, fleet.tenant, truth)
        c.commit()
        c.autocommit = True
        c.execute("SELECT ss_refresh_rollups()")
        if c.execute("SELECT variant FROM schema_migrations WHERE variant IS NOT NULL LIMIT 1").fetchone()[0] == "timescale":
            for view in ("readings_hourly", "readings_daily"):
                c.execute(f"CALL refresh_continuous_aggregate('{view}', NULL, NULL)")
    start = dt.datetime.fromtimestamp(start_ms / 1000, dt.UTC)
    return Loaded(fleet.tenant, start, start + dt.timedelta(days=days), len(fleet.devices), readings, quarantined,
                  n_alerts, truth)


def seed_alerts(c: psycopg.Connection, tenant: str, truth: list) -> int:
    """Alerts from ground truth, cycling through the lifecycle: open, acknowledged,
    resolved (true positive), dismissed (false positive); a webhook delivery each."""
    c.execute("""INSERT INTO alert_sinks (tenant, name, kind, config) VALUES (%s, 'council-webhook', 'webhook',
                 '{"url": "http://127.0.0.1:9/hook", "secret_env": "STREETSENSE_WEBHOOK_SECRET"}')
                 ON CONFLICT DO NOTHING""", (tenant,))
    wards = dict(c.execute("SELECT asset_id, ward FROM assets WHERE tenant = %s", (tenant,)).fetchall())
    dev_asset = dict(c.execute("SELECT device_id, asset_id FROM devices WHERE tenant = %s", (tenant,)).fetchall())
    n = 0
    for i, e in enumerate(ev for ev in truth if ev.kind in ALERT_KINDS):
        kind = ALERT_KINDS[e.kind]
        det = e.details or {}
        asset = det.get("asset_id") or dev_asset.get(det.get("device_id") or e.entity)
        created = dt.datetime.fromtimestamp(e.start_ms / 1000, dt.UTC)
        status = ("open", "acknowledged", "resolved", "dismissed")[i % 4]
        closed = created + dt.timedelta(hours=6) if status in ("resolved", "dismissed") else None
        acked = created + dt.timedelta(minutes=20 + i % 40) if status != "open" else None
        verdict = {"resolved": "true_positive", "dismissed": "false_positive"}.get(status)
        row = c.execute(
            """INSERT INTO alerts (tenant, kind, severity, entity, asset_id, lat, lon, window_start, window_end, status,
                                   summary, ward, created_at, updated_at, first_severity, findings, acknowledged_at,
                                   acknowledged_by, closed_at, closed_by, resolution, verdict, explanation)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 1, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT DO NOTHING RETURNING id""",
            (tenant, kind, ("low", "medium", "high")[i % 3], e.entity, asset, det.get("lat"), det.get("lon"), created,
             dt.datetime.fromtimestamp(e.end_ms / 1000, dt.UTC) if e.end_ms else None, status,
             f"simulated {e.kind} ({e.entity})", wards.get(asset), created, closed or acked or created,
             ("low", "medium", "high")[i % 3], acked, "operator" if acked else None, closed,
             "operator" if closed else None, "operator" if closed else None, verdict,
             json.dumps({"source": "simulated truth", "truth_kind": e.kind}))).fetchone()
        if row is None:
            continue
        n += 1
        dstatus = ("delivered", "pending", "delivered", "cancelled")[i % 4]
        c.execute("""INSERT INTO alert_deliveries (alert_id, tenant, sink, event, idempotency_key, status, attempts,
                                                   created_at, last_attempt_at, delivered_at, last_error,
                                                   cancelled_at, cancelled_reason)
                     VALUES (%s, %s, 'council-webhook', 'opened', %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                  (row[0], tenant, f"sim-{row[0]}-opened", dstatus, 1 + i % 3, created, created,
                   created if dstatus == "delivered" else None, "connection refused" if dstatus == "pending" else None,
                   created if dstatus == "cancelled" else None, "alert dismissed" if dstatus == "cancelled" else None))
    return n
