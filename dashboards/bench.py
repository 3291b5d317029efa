"""``streetsense bench api``: p50/p99 latency of every dashboard panel query and
of the OGC SensorThings endpoints over a synthetic fleet (default 10,000
devices x 30 days) on the embedded PostgreSQL (or ``DATABASE_URL``, in a
scratch database ``streetsense_bench_api`` that is dropped and recreated).

Load: devices, assets (with wards), readings by binary COPY (``ingest.pgcopy``)
in device-ordered chunks, batches, quarantine, alerts and deliveries; the
rollups are computed with one ``INSERT … SELECT`` per table (and an
``ingest_log`` row covering the range, so ``ss_refresh_rollups`` agrees), the
panel rollups of migrations 0011 and 0014 by ``ss_rebuild_panel_rollups``; then
``VACUUM ANALYZE``.

``--reuse`` (with ``--data-dir``) re-times the load a previous run left there
(``bench-api-load.json``, written when a load completes, for the same devices
and days) instead of loading again: the database is migrated first, and history
a new migration leaves to the backfill is rebuilt at once, as a load does.

Per-kind cadences (chosen so 10,000 x 30 days loads in a few minutes on 2 cores):

* bin_fill (92 %): fill + distance hourly; temp, bat_v, rssi every 6 h;
* air (3 %): pm25, pm10, rh every 15 min; temp, bat_v, rssi hourly;
* noise (3 %): laeq, lamax every 15 min; l10, l90, bat_v, rssi hourly;
* road (2 %): ~40 bump events a day (five records sharing a time, half of them
  on a few shared defect locations) and bat_v/rssi hourly.

Timing: every panel of :data:`dashboards.panels.ALL`, macros expanded by
:func:`dashboards.macros.expand` for a 7-day window (ending at a different
hour each repeat) and rotating template-variable values (tenant, ward, kind),
run through psycopg: wall time of execute + fetchall (round trip included).
SensorThings: real HTTP (httpx) against uvicorn serving ``api.app.create_app``.
One untimed warm-up pass first; percentiles are nearest-rank over the repeats.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import psycopg
import typer

from contract import v1
from dashboards import macros, panels as P
from ingest.migrate import migrate
from ingest.pgcopy import COLUMNS, encode_readings

TARGET_P99_MS = 100.0
SCRATCH_DB = "streetsense_bench_api"
TENANTS = ("bench-a", "bench-b")          # ~90 % / ~10 % of the devices
WARDS = ("headingley", "hyde-park", "chapel-allerton", "roundhay", "armley", "beeston", "burmantofts", "kirkstall")
LAT0, LON0 = 53.80, -1.55
HOUR_MS = 3_600_000
MID = {name: row[0] for name, row in v1.BY_NAME.items()}
# kind -> ((metric, period in minutes), ...)
CADENCE = {
    "bin_fill": (("fill", 60), ("distance", 60), ("temp", 360), ("bat_v", 360), ("rssi", 360)),
    "air": (("pm25", 15), ("pm10", 15), ("rh", 15), ("temp", 60), ("bat_v", 60), ("rssi", 60)),
    "noise": (("laeq", 15), ("lamax", 15), ("l10", 60), ("l90", 60), ("bat_v", 60), ("rssi", 60)),
    "road": (("bat_v", 60), ("rssi", 60)),
}
ROAD_EVENTS_PER_DAY = 40
BATCH_EVERY_H = {"bin_fill": 6, "air": 1, "noise": 1, "road": 1}


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, int(np.ceil(p / 100 * len(xs))) - 1))   # nearest rank
    return xs[k]


def _stats(ms: list[float]) -> dict:
    return {"n": len(ms), "p50_ms": round(_pct(ms, 50), 2), "p99_ms": round(_pct(ms, 99), 2),
            "max_ms": round(max(ms), 2) if ms else None}


# --------------------------------------------------------------------------- data


def _kinds(devices: int) -> dict[str, int]:
    air = max(1, round(devices * 0.03))
    noise = max(1, round(devices * 0.03))
    road = max(1, round(devices * 0.02))
    return {"bin_fill": max(1, devices - air - noise - road), "air": air, "noise": noise, "road": road}


def _register(c: psycopg.Connection, devices: int, end: dt.datetime, rng: np.random.Generator) -> list[tuple]:
    """Tenants, assets and devices; returns (pk, tenant, device_id, kind) per device."""
    for t in TENANTS:
        c.execute("INSERT INTO tenants (id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING", (t, t.title()))
    assets, devs = [], []
    i = 0
    for kind, n in _kinds(devices).items():
        for j in range(n):
            tenant = TENANTS[1] if i % 10 == 9 else TENANTS[0]
            lat = LAT0 + rng.uniform(-0.06, 0.06)
            lon = LON0 + rng.uniform(-0.10, 0.10)
            ward = WARDS[(0 if lat >= LAT0 else 4) + int((lon - LON0 + 0.10) / 0.05) % 4]
            dev = f"{kind.replace('_', '')}-{j:05d}"
            if kind == "bin_fill":
                akind, bkind = "bin", ("street" if j % 5 == 0 else "household")
            elif kind == "road":
                akind, bkind, ward = "vehicle", None, None
            else:
                akind, bkind = "lamp_post", None
            asset = f"a-{dev}"
            if kind == "bin_fill" and j % 97 == 0:
                ward = None                                  # a few bins without a ward (kept by the All value)
            assets.append((tenant, asset, akind, bkind, 240.0 if bkind else None, 1.0 if bkind else None,
                           f"hh-{j}" if bkind == "household" else None, ward,
                           None if kind == "road" else lat, None if kind == "road" else lon))
            r = rng.random()
            sleeping = kind == "bin_fill"
            last_seen = end - dt.timedelta(minutes=float(rng.uniform(1, 50) if r > 0.03 else rng.uniform(180, 3000)))
            next_wake = (last_seen + dt.timedelta(hours=1)) if sleeping else None
            devs.append((tenant, dev, kind, ("esp32", "esp32s3", "picow", "pico2w")[j % 4],
                         ("1.4.2", "1.4.3", "1.5.0")[0 if r < 0.1 else 1 if r < 0.4 else 2],
                         None if kind == "road" else lat, None if kind == "road" else lon, asset,
                         "active" if r < 0.995 else "retired", "sleeping" if sleeping else "online",
                         next_wake, last_seen))
            i += 1
    with c.cursor() as cur:
        with cur.copy("COPY assets (tenant, asset_id, kind, bin_kind, capacity_l, depth_m, household, ward, lat, lon)"
                      " FROM STDIN") as cp:
            for a in assets:
                cp.write_row(a)
        with cur.copy("COPY devices (tenant, device_id, kind, board, firmware, lat, lon, asset_id, status, state,"
                      " next_wake, last_seen) FROM STDIN") as cp:
            for d in devs:
                cp.write_row(d)
    return c.execute("SELECT id, tenant, device_id, kind FROM devices ORDER BY id").fetchall()


def _series(kind: str, metric: str, t_h: np.ndarray, dev_rand: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Plausible values, shape (devices, times); t_h = hours since the start."""
    day = np.sin(2 * np.pi * ((t_h % 24) - 9) / 24)
    noise = rng.standard_normal(t_h.shape)
    if metric in ("fill", "distance"):
        rate = 0.004 + 0.02 * dev_rand                             # fraction per hour
        fill = np.clip((t_h * rate + dev_rand * 3) % 1.15, 0, 1.05) + 0.01 * noise
        return np.round(fill if metric == "fill" else np.clip(1.0 * (1 - fill), 0, 10), 3)
    if metric == "temp":
        return np.round(9 + 5 * day + 2 * dev_rand + 0.5 * noise, 2)
    if metric == "bat_v":
        return np.round(4.05 - 0.002 * t_h * (0.2 + dev_rand) + 0.01 * noise, 3).clip(2.8, 4.2)
    if metric == "rssi":
        return np.round(-95 + 30 * dev_rand + 4 * noise)
    if metric in ("pm25", "pm10"):
        pm = np.exp(np.log(6 + 10 * dev_rand) + 0.5 * np.sin(2 * np.pi * t_h / 96 + 7 * dev_rand) + 0.25 * noise)
        return np.round(pm * (1.7 if metric == "pm10" else 1.0), 1)
    if metric == "rh":
        return np.round(np.clip(75 - 12 * day + 3 * noise, 5, 100), 1)
    base = 52 + 8 * dev_rand + 7 * day + 1.5 * noise
    return np.round(base + {"laeq": 0, "lamax": 14, "l10": 3, "l90": -7}[metric], 1)


def _chunk_rows(group: list[tuple], kind: str, start_ms: int, days: int, rng: np.random.Generator):
    """All readings of a group of devices of one kind, ordered (device, metric, time)."""
    pks = np.array([g[0] for g in group], dtype=np.int64)
    dev_rand = (pks * 2654435761 % 1000 / 1000.0)[:, None]
    jitter_s = (pks * 40503 % 600)[:, None]                       # each device its own second in the period
    T, D, M, V = [], [], [], []
    for metric, period in CADENCE[kind]:
        nt = days * 1440 // period
        t_ms = start_ms + (np.arange(nt, dtype=np.int64) * period * 60 + jitter_s % (period * 60)) * 1000
        t_h = (t_ms - start_ms) / HOUR_MS
        vals = _series(kind, metric, t_h, dev_rand, rng)
        T.append(t_ms.ravel())
        D.append(np.repeat(pks, nt))
        M.append(np.full(len(pks) * nt, MID[metric], dtype=np.int16))
        V.append(vals.ravel())
    if kind == "road":
        defects = np.column_stack([LAT0 + rng.uniform(-0.05, 0.05, 40), LON0 + rng.uniform(-0.08, 0.08, 40)])
        n_ev = days * ROAD_EVENTS_PER_DAY
        for pk in pks:
            t = np.unique(rng.integers(0, days * 86400, n_ev)) * 1000 + start_ms
            n = len(t)
            on_defect = rng.random(n) < 0.5
            which = rng.integers(0, len(defects), n)
            lat = np.where(on_defect, defects[which, 0] + rng.normal(0, 0.00003, n), LAT0 + rng.uniform(-0.06, 0.06, n))
            lon = np.where(on_defect, defects[which, 1] + rng.normal(0, 0.00005, n), LON0 + rng.uniform(-0.1, 0.1, n))
            vals = {"bump_g": np.round(np.where(on_defect, 12, 4) * rng.lognormal(0, 0.3, n), 2),
                    "bump_dur": np.round(np.where(on_defect, 1.0, 0.5) * rng.lognormal(0, 0.25, n), 3),
                    "speed": np.round(rng.uniform(3, 14, n), 2), "lat": np.round(lat, 6), "lon": np.round(lon, 6)}
            for m, v in vals.items():
                T.append(t)
                D.append(np.full(n, pk))
                M.append(np.full(n, MID[m], dtype=np.int16))
                V.append(v)
    T, D, M, V = (np.concatenate(x) for x in (T, D, M, V))
    o = np.lexsort((T, M, D))
    return T[o], D[o], M[o], V[o]


def _load_readings(c: psycopg.Connection, devs: list[tuple], start_ms: int, days: int,
                   rng: np.random.Generator, chunk_rows: int = 1_000_000) -> int:
    total = 0
    for kind in CADENCE:
        group = [d for d in devs if d[3] == kind]
        per_dev = sum(days * 1440 // p for _, p in CADENCE[kind]) + (days * ROAD_EVENTS_PER_DAY * 5 if kind == "road" else 0)
        step = max(1, chunk_rows // per_dev)
        for k in range(0, len(group), step):
            T, D, M, V = _chunk_rows(group[k:k + step], kind, start_ms, days, rng)
            with c.cursor() as cur, cur.copy(f"COPY readings {COLUMNS} FROM STDIN (FORMAT BINARY)") as cp:
                cp.write(encode_readings(T, D, M, V))
            c.commit()
            total += len(T)
    return total


def _load_side_tables(c: psycopg.Connection, devs: list[tuple], start: dt.datetime, days: int,
                      rng: np.random.Generator) -> dict[str, int]:
    """batches, quarantine, alert sink, alerts and deliveries."""
    end = start + dt.timedelta(days=days)
    nb = 0
    with c.cursor() as cur, cur.copy("COPY batches (device_id, seq, received_at, stored_at, readings) FROM STDIN") as cp:
        for pk, _t, _d, kind in devs:
            every = BATCH_EVERY_H[kind]
            for s in range(days * 24 // every):
                rec = start + dt.timedelta(hours=s * every, seconds=int(pk % 3000))
                cp.write_row((pk, s, rec, rec + dt.timedelta(milliseconds=float(rng.gamma(2, 40))), 4 * every))
                nb += 1
    nq = max(50, len(devs) // 5)
    with c.cursor() as cur, cur.copy("COPY quarantine (received_at, topic, tenant, device_id, reason_code, reason,"
                                     " payload, payload_sha256, replayed_at, times_seen) FROM STDIN") as cp:
        for i in range(nq):
            pk, tenant, dev, _k = devs[i * 7 % len(devs)]
            at = start + dt.timedelta(seconds=float(rng.uniform(0, days * 86400)))
            payload = f"bad-{i}".encode()
            cp.write_row((at, f"ss/v1/{tenant}/{dev}/up", tenant if i % 13 else None, dev,
                          ("decode_error", "unknown_device", "out_of_range", "stale")[i % 4], "synthetic",
                          payload, hashlib.sha256(payload).digest(), at if i % 3 == 0 else None, 1 + i % 3))
    for t in TENANTS:
        c.execute("""INSERT INTO alert_sinks (tenant, name, kind, config) VALUES (%s, 'council-webhook', 'webhook',
                     '{"url": "http://127.0.0.1:9/hook", "secret_env": "STREETSENSE_WEBHOOK_SECRET"}')
                     ON CONFLICT DO NOTHING""", (t,))
    ward_of = dict(c.execute("SELECT asset_id, ward FROM assets").fetchall())
    kinds = {"bin_fill": ("missed_collection", "overflow_forecast", "not_put_out", "battery_low"),
             "air": ("pm_episode", "battery_low"), "noise": ("noise_exceedance",), "road": ("pothole", "road_defect_other")}
    na = max(40, len(devs) // 3)                   # ~3,300 alerts for 10,000 devices over the run
    alerts = []
    for i in range(na):
        pk, tenant, dev, kind = devs[int(rng.integers(0, len(devs)))]
        akind = kinds[kind][i % len(kinds[kind])]
        created = start + dt.timedelta(seconds=float(rng.uniform(0, days * 86400)))
        status = ("resolved", "dismissed", "resolved", "acknowledged", "open")[i % 5]
        if status in ("open", "acknowledged") and created < end - dt.timedelta(days=2):
            status = "resolved"                    # old ones are mostly closed
        closed = created + dt.timedelta(hours=float(rng.uniform(1, 30))) if status in ("resolved", "dismissed") else None
        acked = created + dt.timedelta(minutes=float(rng.uniform(5, 120))) if status != "open" else None
        verdict = {"resolved": "true_positive", "dismissed": "false_positive"}.get(status) if i % 7 else None
        entity = dev if status not in ("open", "acknowledged") else f"{dev}-{i}"
        asset = f"a-{dev}"
        lat = LAT0 + float(rng.uniform(-0.05, 0.05)) if kind == "road" else None
        lon = LON0 + float(rng.uniform(-0.08, 0.08)) if kind == "road" else None
        sev = ("low", "medium", "high")[i % 3]
        alerts.append((tenant, akind, sev, entity, pk, asset, lat, lon, created, created + dt.timedelta(hours=2),
                       status, f"synthetic {akind} ({dev})", ward_of.get(asset), created, closed or acked or created,
                       sev, acked, "operator" if acked else None, closed, "operator" if closed else None,
                       "operator" if closed else None, verdict))
    with c.cursor() as cur:
        with cur.copy("""COPY alerts (tenant, kind, severity, entity, device_id, asset_id, lat, lon, window_start,
                          window_end, status, summary, ward, created_at, updated_at, first_severity, acknowledged_at,
                          acknowledged_by, closed_at, closed_by, resolution, verdict) FROM STDIN""") as cp:
            for a in alerts:
                cp.write_row(a)
    nd = c.execute("""INSERT INTO alert_deliveries (alert_id, tenant, sink, event, idempotency_key, status, attempts,
                                                     created_at, last_attempt_at, delivered_at, last_error)
                      SELECT id, tenant, 'council-webhook', 'opened', 'bench-' || id,
                             (ARRAY['delivered', 'pending', 'delivered', 'cancelled'])[1 + id % 4], 1 + id % 3,
                             created_at, created_at, CASE WHEN id % 4 IN (0, 2) THEN created_at END,
                             CASE WHEN id % 4 = 1 THEN 'connection refused' END
                      FROM alerts""").rowcount
    c.commit()
    return {"batches": nb, "quarantine": nq, "alerts": na, "alert_deliveries": nd}


def _rollups(c: psycopg.Connection, start: dt.datetime, end: dt.datetime, readings: int) -> None:
    """One INSERT … SELECT per rollup table, plus the ingest_log row the incremental refresh keys on."""
    c.execute("SET LOCAL work_mem = '256MB'")
    c.execute("""INSERT INTO readings_hourly
                 SELECT date_trunc('hour', time), device_id, metric, count(*), sum(value), min(value), max(value), avg(value)
                 FROM readings GROUP BY 2, 3, 1 ORDER BY 2, 3, 1""")
    c.execute("""INSERT INTO readings_daily
                 SELECT date_trunc('day', bucket, 'UTC'), device_id, metric, sum(n), sum(sum), min(min), max(max),
                        sum(sum) / sum(n)
                 FROM readings_hourly GROUP BY 2, 3, 1 ORDER BY 2, 3, 1""")
    log_id = c.execute("""INSERT INTO ingest_log (committed_at, worker, messages, readings, inserted, quarantined,
                                                  min_time, max_time)
                          VALUES (now() - interval '1 hour', 'bench-api', 0, %s, %s, 0, %s, %s) RETURNING id""",
                       (readings, readings, start, end)).fetchone()[0]
    c.execute("UPDATE rollup_state SET last_log_id = %s, refreshed_at = now()", (log_id,))
    c.commit()


def _panel_rollups(c: psycopg.Connection, start: dt.datetime, end: dt.datetime) -> None:
    """The panel rollups of migration 0011, recomputed for the whole range by the
    migration's own function (what a backfill does), after readings_hourly and batches."""
    c.execute("SET LOCAL work_mem = '256MB'")
    c.execute("SELECT ss_rebuild_panel_rollups(%s, %s)", (start, end + dt.timedelta(hours=1)))
    c.execute("UPDATE panel_rollup_state SET last_log_id = (SELECT last_log_id FROM rollup_state), refreshed_at = now()")
    c.commit()


def _scratch_db(url: str) -> str:
    """A fresh database ``streetsense_bench_api`` on the same server (dropped and recreated)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    with psycopg.connect(url, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {SCRATCH_DB} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {SCRATCH_DB}")
    params = conninfo_to_dict(url)
    params["dbname"] = SCRATCH_DB
    return make_conninfo(**params)


def load(url: str, devices: int, days: int, seed: int = 11) -> dict:
    rng = np.random.default_rng(seed)
    end = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = end - dt.timedelta(days=days)
    out: dict = {"start": start.isoformat(), "end": end.isoformat()}
    t0 = time.perf_counter()
    with psycopg.connect(url) as c:
        migrate(c, timescale="off")
        c.autocommit = False
        c.execute("SELECT ss_ensure_partitions(%s, %s)", (start, end + dt.timedelta(days=1)))
        devs = _register(c, devices, end, rng)
        c.commit()
        t1 = time.perf_counter()
        n = _load_readings(c, devs, int(start.timestamp() * 1000), days, rng)
        t2 = time.perf_counter()
        side = _load_side_tables(c, devs, start, days, rng)
        t3 = time.perf_counter()
        _rollups(c, start, end, n)
        t4a = time.perf_counter()
        _panel_rollups(c, start, end)
        t4 = time.perf_counter()
        c.autocommit = True
        c.execute("VACUUM ANALYZE")
        t5 = time.perf_counter()
        hourly = c.execute("SELECT count(*) FROM readings_hourly").fetchone()[0]
        daily = c.execute("SELECT count(*) FROM readings_daily").fetchone()[0]
        panel_rows = {t: c.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                      for t in ("readings_hourly_by_ward", "ingest_lag_hourly", "road_bump_events",
                                "pm25_corrected_hourly_by_ward", "bin_fill_trend_hourly")}
        size = c.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    out["rows"] = {"devices": len(devs), "readings": n, "readings_hourly": hourly, "readings_daily": daily, **panel_rows, **side}
    out["load_s"] = {"registry": round(t1 - t0, 1), "readings_copy": round(t2 - t1, 1),
                     "readings_copy_rows_per_s": round(n / max(t2 - t1, 1e-9)),
                     "side_tables": round(t3 - t2, 1), "rollups": round(t4a - t3, 1), "panel_rollups": round(t4 - t4a, 1),
                     "vacuum_analyze": round(t5 - t4, 1), "total": round(t5 - t0, 1)}
    out["database_mb"] = round(size / 2**20)
    return out


# --------------------------------------------------------------------------- timing


def _variables(spec: P.DashboardSpec) -> dict[str, macros.Var]:
    from dashboards.build import models

    return macros.dashboard_variables(models()[spec.uid])


def _value_sets(c: psycopg.Connection) -> list[dict]:
    wards = [w for (w,) in c.execute("SELECT DISTINCT ward FROM assets WHERE ward IS NOT NULL ORDER BY 1")]
    out = []
    for tenant in TENANTS:
        base = {"tenant": tenant, "tz": "Europe/London", "noise_day": "55", "noise_night": "45"}
        out += [{**base, "ward": macros.ALL, "kind": macros.ALL},
                {**base, "ward": wards[:2], "kind": ["bin_fill", "air"]},
                {**base, "ward": [wards[-1]], "kind": ["noise", "road"], "noise_day": "50", "noise_night": "40"}]
    # weight towards the big tenant (what most dashboards look at)
    return [out[0], out[1], out[2], out[0], out[3], out[1], out[4], out[2], out[5]]


def _windows(start: dt.datetime, end: dt.datetime, repeats: int) -> list[tuple[dt.datetime, dt.datetime]]:
    """7-day windows (shorter if the data is shorter) ending at different hours across the loaded range."""
    span = min(dt.timedelta(days=7), end - start)
    first_end, n_hours = start + span, int((end - start - span).total_seconds() // 3600)
    return [(first_end + dt.timedelta(hours=h) - span, first_end + dt.timedelta(hours=h))
            for h in ([n_hours - (k * 37) % (n_hours + 1) for k in range(repeats)])]


def _explain(c: psycopg.Connection, sql: str) -> dict:
    plan = c.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql).fetchone()[0][0]
    text = [r[0] for r in c.execute("EXPLAIN (ANALYZE, COSTS OFF) " + sql).fetchall()]
    scans = []

    def walk(n: dict) -> None:
        if n.get("Relation Name") and n["Node Type"] in ("Seq Scan", "Bitmap Heap Scan", "Index Scan",
                                                          "Index Only Scan", "Parallel Seq Scan"):
            scans.append(f"{n['Node Type']} on {n['Relation Name']}"
                         + (f" using {n['Index Name']}" if n.get("Index Name") else "")
                         + f" (rows={n.get('Actual Rows')} x loops={n.get('Actual Loops')}"
                         + (f", removed by filter={n['Rows Removed by Filter']}" if n.get("Rows Removed by Filter") else "")
                         + ")")
        for ch in n.get("Plans", []):
            walk(ch)

    walk(plan["Plan"])
    return {"execution_ms": round(plan["Execution Time"], 1), "top": plan["Plan"]["Node Type"],
            "shared_hit_blocks": plan["Plan"].get("Shared Hit Blocks"),
            "shared_read_blocks": plan["Plan"].get("Shared Read Blocks"), "scans": scans,
            "plan": [ln for ln in text if ln.strip()][:40]}


# Known causes -> the fix (an index for a migration, or a statement change).  Matched on the EXPLAIN scans.
FIXES = (
    (re.compile(r"Seq Scan on readings_hourly"),
     "CREATE INDEX readings_hourly_metric_bucket ON readings_hourly (metric, bucket) INCLUDE (device_id, n, sum, min, max);"
     " -- for panels filtering one metric; per-kind/ward series belong on readings_hourly_by_ward (migration 0011)"),
    (re.compile(r"Seq Scan on batches"),
     "CREATE INDEX batches_received ON batches (received_at); -- the panel filters batches by received_at only"),
    (re.compile(r"Seq Scan on alerts"),
     "CREATE INDEX alerts_tenant_kind_window ON alerts (tenant, kind, window_start);"),
    (re.compile(r"Seq Scan on alert_deliveries"),
     "CREATE INDEX alert_deliveries_created ON alert_deliveries (created_at);"),
    (re.compile(r"Seq Scan on quarantine"), "CREATE INDEX quarantine_tenant_received ON quarantine (tenant, received_at);"),
)


def _fix_for(explain: dict) -> str | None:
    for pat, fix in FIXES:
        if any(pat.search(s) for s in explain["scans"]):
            return fix
    return None


def time_panels(url: str, repeats: int, start: dt.datetime, end: dt.datetime) -> tuple[list[dict], list[float], dict]:
    rows_out, every, sqls = [], [], {}
    with psycopg.connect(url, autocommit=True) as c:
        sets = _value_sets(c)
        wins = _windows(start, end, repeats)
        plan = [(spec, p, _variables(spec)) for spec in P.ALL for p in spec.panels]
        for spec, p, vs in plan:                                      # warm-up, untimed; checks the columns too
            cur = c.execute(macros.expand(p.sql, *wins[0], vs, sets[0]))
            cur.fetchall()
            assert tuple(col.name for col in cur.description) == p.columns, (spec.uid, p.title)
        for spec, p, vs in plan:
            ms, nrows, worst = [], [], (0.0, "")
            for k in range(repeats):
                sql = macros.expand(p.sql, *wins[k], vs, sets[k % len(sets)])
                t0 = time.perf_counter()
                n = len(c.execute(sql).fetchall())
                el = (time.perf_counter() - t0) * 1000
                ms.append(el)
                nrows.append(n)
                if el >= worst[0]:
                    worst = (el, sql)
            every += ms
            sqls[(spec.uid, p.title)] = worst[1]
            rows_out.append({"dashboard": spec.uid, "panel": p.title, **_stats(ms),
                             "rows_median": int(statistics.median(nrows)),
                             "ok": _pct(ms, 99) <= TARGET_P99_MS})
    return rows_out, every, sqls


def _sta_requests(c: psycopg.Connection) -> list[tuple[str, str, dict]]:
    """(name, path, params) for the SensorThings endpoints, with real ids."""
    ids = c.execute("""SELECT d.tenant || '.' || d.device_id, d.kind FROM devices d
                       LEFT JOIN assets a ON a.tenant = d.tenant AND a.asset_id = d.asset_id
                       WHERE d.status = 'active' AND d.lat IS NOT NULL
                         AND (d.kind IN ('air', 'noise') OR a.bin_kind = 'street') ORDER BY d.id""").fetchall()
    by_kind: dict[str, list[str]] = {}
    for i, k in ids:
        by_kind.setdefault(k, []).append(i)
    air, noise, street = by_kind["air"], by_kind["noise"], by_kind.get("bin_fill", by_kind["air"])
    end = c.execute("SELECT max(bucket) FROM readings_hourly").fetchone()[0]
    since = (end - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    reqs = []
    for k in range(4):
        a, n, s = air[k * 7 % len(air)], noise[k * 5 % len(noise)], street[k * 11 % len(street)]
        reqs += [
            ("landing", "/sta/v1.1", {}),
            ("Things", "/sta/v1.1/Things", {}),
            ("Things $count $skip", "/sta/v1.1/Things", {"$count": "true", "$skip": str(200 * k), "$top": "100"}),
            ("Things $filter kind", "/sta/v1.1/Things", {"$filter": "properties/kind eq 'air'", "$top": "50"}),
            ("Things('id')", f"/sta/v1.1/Things('{a}')", {}),
            ("Things('id')/Locations", f"/sta/v1.1/Things('{n}')/Locations", {}),
            ("Things('id')/Datastreams", f"/sta/v1.1/Things('{a}')/Datastreams", {}),
            ("Locations", "/sta/v1.1/Locations", {"$top": "100"}),
            ("Datastreams", "/sta/v1.1/Datastreams", {}),
            ("Datastreams $filter thing", "/sta/v1.1/Datastreams", {"$filter": f"Thing/@iot.id eq '{n}'"}),
            ("Datastreams('id')", f"/sta/v1.1/Datastreams('{a}.pm25')", {}),
            ("Datastreams('id')/Observations", f"/sta/v1.1/Datastreams('{a}.pm25')/Observations", {}),
            ("Datastreams('id')/Observations last day desc", f"/sta/v1.1/Datastreams('{s}.fill')/Observations",
             {"$filter": f"phenomenonTime ge {since}", "$orderby": "phenomenonTime desc", "$count": "true"}),
            ("Observations", "/sta/v1.1/Observations", {"$top": "100"}),
            ("Observations $filter datastream", "/sta/v1.1/Observations",
             {"$filter": f"Datastream/@iot.id eq '{n}.laeq' and phenomenonTime ge {since}"}),
        ]
    return reqs


def time_sta(url: str, repeats: int) -> tuple[list[dict], list[float]]:
    import httpx

    from api.app import create_app

    try:
        from tests.support.http import serve
    except ImportError:                                              # installed without the tests tree
        serve = _serve
    with psycopg.connect(url, autocommit=True) as c:
        reqs = _sta_requests(c)
    per: dict[str, list[float]] = {}
    status: dict[str, set] = {}
    with serve(create_app(url)) as base, httpx.Client(base_url=base, timeout=120) as http:
        for name, path, params in reqs:                               # warm-up
            http.get(path, params=params)
        rounds = max(1, repeats // 4)
        for _ in range(rounds):
            for name, path, params in reqs:
                t0 = time.perf_counter()
                r = http.get(path, params=params)
                body = r.content
                per.setdefault(name, []).append((time.perf_counter() - t0) * 1000)
                status.setdefault(name, set()).add(r.status_code)
                assert body
    out = [{"endpoint": name, **_stats(ms), "status": sorted(status[name])} for name, ms in per.items()]
    return out, [x for ms in per.values() for x in ms]


def _serve(app):
    """tests.support.http.serve, for installs without the tests tree."""
    import threading
    from contextlib import contextmanager

    import uvicorn

    from streetsense.embedded import free_port

    @contextmanager
    def run():
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        t = threading.Thread(target=server.run, daemon=True)
        t.start()
        while not server.started:
            if not t.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            t.join(10)
    return run()


# --------------------------------------------------------------------------- entry points


def _reusable(marker: Path | None, url: str, devices: int, days: int) -> dict | None:
    """The recorded load of ``marker`` if it is a complete load of this size, after migrating the
    database (new migrations apply to the reused data, as on a council's server); else None."""
    if marker is None or not marker.exists():
        return None
    rec = json.loads(marker.read_text())
    if rec.get("devices") != devices or rec.get("days") != days:
        return None
    with psycopg.connect(url, autocommit=True) as c:
        n = c.execute("SELECT count(*) FROM devices").fetchone()[0]
        if n != rec["rows"]["devices"]:
            return None
        applied = migrate(c, timescale="off")
        t0 = time.perf_counter()
        with c.transaction():
            floor, to = c.execute("SELECT backfill_floor, backfill_to FROM panel_rollup_state").fetchone()
            if to is not None:      # a migration left history to backfill: all of it at once, as load() does
                c.execute("SET LOCAL work_mem = '256MB'")
                c.execute("SELECT ss_rebuild_panel_rollups(%s, %s)", (floor, to))
                c.execute("UPDATE panel_rollup_state SET backfill_to = NULL")
        t1 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("VACUUM ANALYZE")
        size = c.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    rec.pop("devices"), rec.pop("days")
    rec["reused"] = {"migrations_applied": applied, "backfill_s": round(t1 - t0, 1),
                     "vacuum_analyze_s": round(time.perf_counter() - t1, 1)}
    rec["database_mb"] = round(size / 2**20)
    return rec


def bench_api(devices: int = 10_000, days: int = 30, json_out: bool = True, repeats: int = 20,
              database_url: str | None = None, data_dir: Path | None = None, reuse: bool = False) -> dict:
    """Load ``devices`` x ``days`` and time every panel and SensorThings endpoint; returns the figures.

    ``json_out`` only decides whether progress lines go to stderr (False) or not.
    """
    def say(msg: str) -> None:
        if not json_out:
            import sys
            print(msg, file=sys.stderr, flush=True)

    database_url = database_url or os.environ.get("DATABASE_URL")
    with ExitStack() as stack:
        if database_url:
            url = _scratch_db(database_url)
            server = "DATABASE_URL (scratch database streetsense_bench_api)"
        else:
            from streetsense.embedded import EmbeddedPostgres

            root = Path(data_dir) if data_dir else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ss-bench-api-")))
            pg = EmbeddedPostgres((root / "pgdata").resolve())
            stack.callback(pg.stop)
            url = pg.url
            server = "embedded PostgreSQL"
        with psycopg.connect(url, autocommit=True) as c:
            version = c.execute("SHOW server_version").fetchone()[0]
        marker = (Path(data_dir) / "bench-api-load.json") if (data_dir and not database_url) else None
        loaded = _reusable(marker, url, devices, days) if reuse else None
        if loaded is None:
            if reuse and marker is not None and marker.exists():
                raise SystemExit(f"{marker} describes another load; use another --data-dir (or drop --reuse)")
            say(f"loading {devices} devices x {days} days …")
            loaded = load(url, devices, days)
            if marker is not None:                                   # written last: marks a complete load
                marker.write_text(json.dumps({"devices": devices, "days": days, **loaded}, default=str))
            say(f"loaded {loaded['rows']['readings']} readings in {loaded['load_s']['total']} s; timing panels …")
        else:
            say(f"reusing the load in {data_dir} ({loaded['rows']['readings']} readings); timing panels …")
        load_before = [round(x, 2) for x in os.getloadavg()]
        start, end = dt.datetime.fromisoformat(loaded["start"]), dt.datetime.fromisoformat(loaded["end"])
        panels, all_ms, sqls = time_panels(url, repeats, start, end)
        say("timing SensorThings …")
        sta_rows, sta_ms = time_sta(url, repeats)
        load_after = [round(x, 2) for x in os.getloadavg()]
        over = []
        with psycopg.connect(url, autocommit=True) as c:
            for p in panels:
                if not p["ok"]:
                    ex = _explain(c, sqls[(p["dashboard"], p["panel"])])
                    over.append({"dashboard": p["dashboard"], "panel": p["panel"], "p99_ms": p["p99_ms"],
                                 "explain": ex, "fix": _fix_for(ex)})
    return {"bench": "api", "server": server, "postgres": version, "storage": "plain",
            "devices": devices, "days": days, **loaded, "repeats": repeats, "window": "7 days",
            "target_p99_ms": TARGET_P99_MS, "cpus": os.cpu_count(),
            "load_average_1_5_15_min": {"before_timing": load_before, "after_timing": load_after},
            "panels_overall": _stats(all_ms), "panels": panels,
            "panels_over_target": over,
            "sta_overall": _stats(sta_ms), "sta": sta_rows}


def bench_api_command(devices: int = 10000, days: int = 30, json_out: bool = typer.Option(False, "--json"),
                      repeats: int = 20) -> None:
    """Dashboard panel and SensorThings latency (p50/p99) over a synthetic fleet."""
    res = bench_api(devices=devices, days=days, json_out=json_out, repeats=repeats)
    print(json.dumps(res, indent=None if json_out else 2, default=str))
