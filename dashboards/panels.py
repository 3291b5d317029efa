"""Every panel of every StreetSense dashboard: title, visualisation, SQL and
the columns it returns.  :mod:`dashboards.build` turns these into Grafana
dashboards with the foundation SDK; the tests run every statement for real.

SQL conventions (Grafana PostgreSQL datasource):

* time filters use ``$__timeFilter(col)``; "latest" panels are anchored at
  ``$__timeTo()`` (never ``now()``), so a dashboard looking at last week shows
  last week's state;
* readings come from the rollups ``readings_hourly`` (tables on plain
  PostgreSQL, continuous aggregates on TimescaleDB) and, where a panel would
  otherwise scan every device's hours, from the panel rollups of migration
  0011 (tables in both variants, recomputed by ``ss_refresh_panel_rollups()``
  for the hours new batches touched): ``readings_hourly_by_ward`` (per tenant,
  kind, ward, metric and hour), ``ingest_lag_hourly`` (batches per tenant,
  kind, ward and hour of receipt) and ``road_bump_events`` (one row per bump
  event); no panel reads raw ``readings``;
* Grafana's time macros yield numerics, costly per row: where the rows are
  already one per hour (or are first grouped by UTC day, which is what
  ``$__timeGroupAlias(col, '1d')`` groups by) the statement groups on the
  timestamp and applies ``$__timeGroupAlias`` to the grouped rows only;
* "latest in the range" panels read the last few hours of the range through
  the (metric, bucket) index and look further back, device by device, only
  for devices silent in those hours (:func:`latest_join`);
* migration 0014: "Time to full" reads each filling bin's 12-hour trend as of
  the end of the range from ``bin_fill_trend_hourly``, and the air panels show
  one line per ward, from ``readings_hourly_by_ward`` and
  ``pm25_corrected_hourly_by_ward``;
* template variables: ``$tenant`` (single, quoted in the SQL), ``$ward``
  (multi, custom All value ``'__all'`` which also keeps devices without a
  ward), ``$kind`` (multi), and per dashboard ``$tz``, ``$noise_day``,
  ``$noise_night``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from contract import v1

M = {row[1]: row[0] for row in v1.METRICS}


@dataclass(frozen=True)
class PanelSpec:
    title: str
    viz: str                   # stat | timeseries | table | geomap | piechart | barchart | bargauge
    sql: str
    columns: tuple[str, ...]   # what the statement returns, in order
    format: str = "table"      # time_series | table
    unit: str | None = None
    description: str = ""
    w: int = 12
    h: int = 8
    needs: tuple[str, ...] = ()   # tables the panel reads that another engineer may still be adding


@dataclass(frozen=True)
class DashboardSpec:
    uid: str
    title: str
    description: str
    variables: tuple[str, ...]
    panels: tuple[PanelSpec, ...]
    tags: tuple[str, ...] = field(default=("streetsense",))


DEV_JOIN = "devices d LEFT JOIN assets a ON a.tenant = d.tenant AND a.asset_id = d.asset_id"
WARD = "('__all' IN ($ward) OR a.ward IN ($ward))"
DEV_FILTER = f"d.tenant = '$tenant' AND d.kind IN ($kind) AND {WARD}"
TO = "$__timeTo()::timestamptz"
FROM_ = "$__timeFrom()::timestamptz"
BY_WARD = "readings_hourly_by_ward"


def ward_of(alias: str) -> str:
    """The ward filter on a rollup row's own ward column."""
    return f"('__all' IN ($ward) OR {alias}.ward IN ($ward))"


def latest_join(metric: str, value: str, alias: str, recent: str, lo: str = FROM_, hi: str = f"<= {TO}") -> str:
    """Joins giving each device ``d`` its latest hourly row of ``metric`` with
    ``bucket >= lo`` and ``bucket {hi}`` (by default the dashboard's range).

    ``{alias}.v`` is ``value`` (an expression of ``h``) and ``{alias}.bucket``
    its hour; both NULL when the device has no such row.  Rows of the last
    ``recent`` before the end of the range come from one scan of the (metric,
    bucket) index; only devices without a row there are looked up one by one,
    further back (a one-time filter skips the lookup for all the others).

    >>> sql = latest_join("fill", "h.sum / h.n", "f", "3 hours")
    >>> "interval '3 hours'" in sql and sql.count("h.bucket >= $__timeFrom()::timestamptz") == 1
    True
    """
    m = M[metric]
    return f"""LEFT JOIN (SELECT DISTINCT ON (h.device_id) h.device_id, {value} AS v, h.bucket FROM readings_hourly h
           WHERE h.metric = {m} AND h.bucket >= greatest({lo}, {TO} - interval '{recent}') AND h.bucket {hi}
           ORDER BY h.device_id, h.bucket DESC) {alias}_r ON {alias}_r.device_id = d.id
LEFT JOIN LATERAL (SELECT {value} AS v, h.bucket FROM readings_hourly h
                   WHERE {alias}_r.device_id IS NULL AND h.device_id = d.id AND h.metric = {m}
                     AND h.bucket >= {lo} AND h.bucket {hi}
                   ORDER BY h.bucket DESC LIMIT 1) {alias}_o ON true
CROSS JOIN LATERAL (SELECT coalesce({alias}_r.v, {alias}_o.v) AS v, coalesce({alias}_r.bucket, {alias}_o.bucket) AS bucket) {alias}"""


def hourly_series(metric: str, agg: str) -> str:
    """One series per device kind of ``agg`` over ``readings_hourly_by_ward`` rows ``w`` of ``metric``."""
    return f"""SELECT $__timeGroupAlias(s.bucket, '1h'), s.metric, s.value FROM (
  SELECT w.bucket, w.kind AS metric, {agg} AS value
  FROM {BY_WARD} w
  WHERE w.metric = {M[metric]} AND $__timeFilter(w.bucket)
    AND w.tenant = '$tenant' AND w.kind IN ($kind) AND {ward_of("w")}
  GROUP BY 1, 2) s
ORDER BY 1, 2"""


# --------------------------------------------------------------------------- operations

OPERATIONS = DashboardSpec("ss-operations", "StreetSense: operations overview",
    "Is the fleet reporting and is the pipeline keeping up?", ("tenant", "ward", "kind"), (
    PanelSpec("Devices online", "stat", f"""SELECT
  count(*) FILTER (WHERE d.last_seen >= {TO} - interval '2 hours'
                      OR (d.state = 'sleeping' AND d.next_wake >= {TO} - interval '15 minutes')) AS online,
  count(*) AS active
FROM {DEV_JOIN}
WHERE d.status = 'active' AND {DEV_FILTER}""", ("online", "active"), w=6, h=5,
        description="Seen in the 2 h before the end of the range, or asleep with a wake time still to come."),
    PanelSpec("Readings per second", "timeseries", f"""SELECT $__timeGroupAlias(s.bucket, '1h'), s.metric, s.value FROM (
  SELECT w.bucket, w.kind AS metric, sum(w.n) / 3600.0 AS value
  FROM {BY_WARD} w
  WHERE $__timeFilter(w.bucket) AND w.tenant = '$tenant' AND w.kind IN ($kind) AND {ward_of("w")}
  GROUP BY 1, 2) s
ORDER BY 1, 2""", ("time", "metric", "value"), "time_series", "reqps", w=18, h=5,
        description="Readings by the hour of their timestamp, from the rollup readings_hourly_by_ward "
                    "(recomputed at each rollup refresh, about once a minute)."),
    PanelSpec("Open alerts by kind", "bargauge", """SELECT kind, count(*) AS open
FROM alerts a
WHERE a.tenant = '$tenant' AND a.status IN ('open', 'acknowledged') AND """ + WARD + """
GROUP BY kind ORDER BY open DESC, kind""", ("kind", "open"), w=8),
    PanelSpec("Ingest lag (MQTT receipt to commit)", "timeseries", f"""SELECT $__timeGroupAlias(s.bucket, '1h'), s."mean lag", s."max lag" FROM (
  SELECT l.bucket, sum(l.lag_sum) / sum(l.batches) AS "mean lag", max(l.lag_max) AS "max lag"
  FROM ingest_lag_hourly l
  WHERE $__timeFilter(l.bucket) AND l.tenant = '$tenant' AND l.kind IN ($kind) AND {ward_of("l")}
  GROUP BY 1) s
ORDER BY 1""", ("time", "mean lag", "max lag"), "time_series", "s", w=8,
        description="Per batch, by the hour of its MQTT receipt, from the rollup ingest_lag_hourly "
                    "(recomputed at each rollup refresh, about once a minute)."),
    PanelSpec("Quarantined messages", "timeseries", """SELECT $__timeGroupAlias(q.received_at, '1h'), q.reason_code AS metric, count(*) AS value
FROM quarantine q
WHERE $__timeFilter(q.received_at) AND (q.tenant = '$tenant' OR q.tenant IS NULL)
GROUP BY 1, 2 ORDER BY 1, 2""", ("time", "metric", "value"), "time_series", w=8),
    PanelSpec("Quarantine awaiting replay", "table", """SELECT q.reason_code, count(*) AS messages, sum(q.times_seen) AS times_seen,
  max(q.received_at) AS last_received
FROM quarantine q
WHERE q.replayed_at IS NULL AND (q.tenant = '$tenant' OR q.tenant IS NULL)
GROUP BY 1 ORDER BY messages DESC""", ("reason_code", "messages", "times_seen", "last_received"), w=24, h=6),
))

# --------------------------------------------------------------------------- bins

BIN_FILTER = f"d.tenant = '$tenant' AND d.kind = 'bin_fill' AND {WARD}"
BINS = DashboardSpec("ss-bins", "StreetSense: bins",
    "Fill levels, forecasts and missed collections.", ("tenant", "ward"), (
    PanelSpec("Fill level", "geomap", f"""SELECT d.device_id, a.asset_id, a.bin_kind, a.ward,
  d.lat AS latitude, d.lon AS longitude, round(f.v * 1000) / 10 AS fill_pct, f.bucket AS at
FROM {DEV_JOIN}
{latest_join("fill", "h.sum / h.n", "f", "1 hour")}
WHERE {BIN_FILTER} AND d.lat IS NOT NULL AND f.bucket IS NOT NULL""",
        ("device_id", "asset_id", "bin_kind", "ward", "latitude", "longitude", "fill_pct", "at"), w=14, h=14,
        unit="percent", description="Latest hourly mean fill per bin in the range (bins report hourly: the last "
        "hour's rows of the (metric, bucket) index give almost every bin's; a float, not a numeric, for 8,000 bins)."),
    PanelSpec("Time to full (fastest first)", "table", f"""SELECT d.device_id, a.asset_id, a.ward, round(t.fill::numeric * 100, 1) AS fill_pct,
  round((t.rate * 100)::numeric, 2) AS pct_per_hour,
  round(t.hours_to_full::numeric, 1) AS hours_to_full
FROM bin_fill_trend_hourly t JOIN {DEV_JOIN} ON d.id = t.device_id
WHERE t.bucket = date_trunc('hour', {TO} - interval '1 microsecond', 'UTC') AND t.rate > 1e-6 AND t.fill < 1
  AND {BIN_FILTER}
ORDER BY t.hours_to_full LIMIT 50""",
        ("device_id", "asset_id", "ward", "fill_pct", "pct_per_hour", "hours_to_full"), w=10, h=14,
        description="Linear trend of the last 12 hourly means before the end of the range (rollup "
                    "bin_fill_trend_hourly, migration 0014: the trend of each bin as of each hour); bins "
                    "filling by less than 0.0001 % an hour are not filling."),
    PanelSpec("Missed collections per day", "timeseries", f"""SELECT $__timeGroupAlias(a.window_start, '1d'), count(*) AS "missed collections"
FROM alerts a
WHERE a.tenant = '$tenant' AND a.kind = 'missed_collection' AND $__timeFilter(a.window_start) AND {WARD}
GROUP BY 1 ORDER BY 1""", ("time", "missed collections"), "time_series", w=12),
    PanelSpec("Missed collections", "table", f"""SELECT a.asset_id, a.ward, a.window_start, a.status, a.severity, a.summary
FROM alerts a
WHERE a.tenant = '$tenant' AND a.kind = 'missed_collection' AND $__timeFilter(a.window_start) AND {WARD}
ORDER BY a.window_start DESC LIMIT 200""", ("asset_id", "ward", "window_start", "status", "severity", "summary"), w=12),
    PanelSpec("Mean fill by ward", "barchart", f"""SELECT coalesce(w.ward, '(none)') AS ward,
  round((sum(w.sum_avg) / sum(w.devices))::numeric * 100, 1) AS fill_pct
FROM {BY_WARD} w
WHERE w.metric = {M['fill']} AND w.bucket >= {TO} - interval '1 day' AND w.bucket < {TO}
  AND w.tenant = '$tenant' AND w.kind = 'bin_fill' AND {ward_of("w")}
GROUP BY 1 ORDER BY 1""", ("ward", "fill_pct"), unit="percent", w=24,
        description="Mean of the bins' hourly means over the day before the end of the range "
                    "(rollup readings_hourly_by_ward)."),
))

# --------------------------------------------------------------------------- air quality

AIR_FILTER = f"d.tenant = '$tenant' AND d.kind = 'air' AND {WARD}"
# UK DAQI (Defra): index 1..10 from the 24-hour running means, the higher of PM2.5 and PM10.
DAQI_PM25 = "ARRAY[12, 24, 36, 42, 48, 54, 59, 65, 71]::float8[]"
DAQI_PM10 = "ARRAY[17, 34, 51, 59, 67, 76, 84, 92, 101]::float8[]"
AIR = DashboardSpec("ss-air", "StreetSense: air quality",
    "Particulates by site, the UK Daily Air Quality Index, humidity-corrected PM2.5.", ("tenant", "ward"), (
    PanelSpec("DAQI by site (24 h to the end of the range)", "table", f"""SELECT site, ward, latitude, longitude, pm25_24h, pm10_24h, daqi,
  CASE WHEN daqi <= 3 THEN 'Low' WHEN daqi <= 6 THEN 'Moderate' WHEN daqi <= 9 THEN 'High' ELSE 'Very High' END AS band
FROM (
  SELECT d.device_id AS site, a.ward, d.lat AS latitude, d.lon AS longitude,
    round((sum(h.sum) FILTER (WHERE h.metric = {M['pm25']}) / nullif(sum(h.n) FILTER (WHERE h.metric = {M['pm25']}), 0))::numeric, 1) AS pm25_24h,
    round((sum(h.sum) FILTER (WHERE h.metric = {M['pm10']}) / nullif(sum(h.n) FILTER (WHERE h.metric = {M['pm10']}), 0))::numeric, 1) AS pm10_24h
  FROM readings_hourly h JOIN {DEV_JOIN} ON d.id = h.device_id
  WHERE h.metric IN ({M['pm25']}, {M['pm10']}) AND h.bucket >= {TO} - interval '24 hours' AND h.bucket < {TO}
    AND {AIR_FILTER}
  GROUP BY 1, 2, 3, 4) s,
LATERAL (SELECT 1 + greatest(coalesce(width_bucket(round(pm25_24h)::float8, {DAQI_PM25}), 0),
                             coalesce(width_bucket(round(pm10_24h)::float8, {DAQI_PM10}), 0)) AS daqi) x
ORDER BY daqi DESC, site""",
        ("site", "ward", "latitude", "longitude", "pm25_24h", "pm10_24h", "daqi", "band"), w=24),
    PanelSpec("PM2.5 and PM10 by ward (hourly means)", "timeseries", f"""SELECT $__timeGroupAlias(w.bucket, '1h'),
  coalesce(w.ward, '(no ward)') || CASE w.metric WHEN {M['pm25']} THEN ' pm25' ELSE ' pm10' END AS metric,
  w.sum_avg / w.devices AS value
FROM {BY_WARD} w
WHERE w.tenant = '$tenant' AND w.metric IN ({M['pm25']}, {M['pm10']}) AND $__timeFilter(w.bucket)
  AND w.kind = 'air' AND {ward_of("w")}
ORDER BY w.bucket, 2""", ("time", "metric", "value"), "time_series", "µg/m³", w=12,
        description="Mean of the sites' hourly means, one line per ward and pollutant (rollup "
                    "readings_hourly_by_ward); each site's own figures are in the DAQI table."),
    PanelSpec("PM2.5 corrected for humidity, by ward", "timeseries", f"""SELECT $__timeGroupAlias(c.bucket, '1h'),
  coalesce(c.ward, '(no ward)') AS metric, c.sum / c.sites AS value
FROM pm25_corrected_hourly_by_ward c
WHERE c.tenant = '$tenant' AND $__timeFilter(c.bucket) AND {ward_of("c")}
ORDER BY c.bucket, 2""", ("time", "metric", "value"), "time_series", "µg/m³", w=12,
        description="κ-Köhler growth correction (Crilley et al. 2018), κ = 0.4, RH capped at 95 %, applied to each "
                    "site's hourly means, then averaged over the ward's sites (rollup pm25_corrected_hourly_by_ward, "
                    "migration 0014)."),
))

# --------------------------------------------------------------------------- noise

NOISE_FILTER = f"d.tenant = '$tenant' AND d.kind = 'noise' AND {WARD}"
# Each UTC hour of the range once, with its local-time attributes in $tz (computed per hour, then
# joined to the hourly rows, instead of converting every row's time zone).
LOCAL_HOURS = """WITH z AS MATERIALIZED (
  SELECT g AS bucket, (extract(isodow FROM g AT TIME ZONE '$tz')::int - 1) * 24
                      + extract(hour FROM g AT TIME ZONE '$tz')::int AS hour_of_week,
    to_char(g AT TIME ZONE '$tz', 'Dy HH24') AS slot,
    date_part('hour', g AT TIME ZONE '$tz') >= 23 OR date_part('hour', g AT TIME ZONE '$tz') < 7 AS night,
    date_trunc('day', g, 'UTC') AS day
  FROM generate_series(date_trunc('hour', $__timeFrom()::timestamptz, 'UTC'), $__timeTo()::timestamptz,
                       interval '1 hour') g)
"""
NIGHT = "z.night"
HMEAN = "(h.sum / h.n)"   # the hourly mean (avg), from the columns the (metric, bucket) index covers
LIMIT = "CASE WHEN z.night THEN $noise_night ELSE $noise_day END"
NOISE = DashboardSpec("ss-noise", "StreetSense: noise",
    "A-weighted equivalent levels by hour of week, and hours over the limits.",
    ("tenant", "ward", "tz", "noise_day", "noise_night"), (
    PanelSpec("LAeq by hour of week", "barchart", LOCAL_HOURS + f"""SELECT z.hour_of_week, z.slot,
  round((10 * log(avg(power(10, {HMEAN} / 10))))::numeric, 1) AS laeq_db
FROM readings_hourly h JOIN z ON z.bucket = h.bucket JOIN {DEV_JOIN} ON d.id = h.device_id
WHERE h.metric = {M['laeq']} AND $__timeFilter(h.bucket) AND {NOISE_FILTER}
GROUP BY 1, 2 ORDER BY 1""", ("hour_of_week", "slot", "laeq_db"), unit="dB", w=24,
        description="Energy mean over sites and weeks of the hourly means (an hourly mean is the arithmetic "
                    "mean of the interval LAeq values, which the rollups keep)."),
    PanelSpec("Hours over the limit by site", "table", LOCAL_HOURS + f"""SELECT d.device_id AS site, a.ward,
  s.exceedance_hours, s.night_exceedance_hours, s.hours, round(s.loudest::numeric, 1) AS loudest_hour_db
FROM (SELECT h.device_id,                 -- grouped on the device's key, named afterwards
        count(*) FILTER (WHERE {HMEAN} > {LIMIT}) AS exceedance_hours,
        count(*) FILTER (WHERE {HMEAN} > {LIMIT} AND {NIGHT}) AS night_exceedance_hours,
        count(*) AS hours, max({HMEAN}) AS loudest
      FROM readings_hourly h JOIN z ON z.bucket = h.bucket
      WHERE h.metric = {M['laeq']} AND $__timeFilter(h.bucket)
        AND h.device_id IN (SELECT d.id FROM {DEV_JOIN} WHERE {NOISE_FILTER})
      GROUP BY 1) s
JOIN {DEV_JOIN} ON d.id = s.device_id
ORDER BY exceedance_hours DESC, site""",
        ("site", "ward", "exceedance_hours", "night_exceedance_hours", "hours", "loudest_hour_db"), w=12),
    PanelSpec("Exceedances per day", "timeseries", LOCAL_HOURS + f"""SELECT $__timeGroupAlias(s.day, '1d'), d.device_id AS metric, s.value FROM (
  SELECT z.day, h.device_id, count(*) FILTER (WHERE {HMEAN} > {LIMIT}) AS value
  FROM readings_hourly h JOIN z ON z.bucket = h.bucket
  WHERE h.metric = {M['laeq']} AND $__timeFilter(h.bucket)
    AND h.device_id IN (SELECT d.id FROM {DEV_JOIN} WHERE {NOISE_FILTER})
  GROUP BY 1, 2) s
JOIN devices d ON d.id = s.device_id
ORDER BY 1, 2""", ("time", "metric", "value"), "time_series", w=12),
))

# --------------------------------------------------------------------------- roads

# Bump events (five records sharing a time, one row each in the rollup
# road_bump_events) gathered on a ~28 m grid; feature-like
# events only (span >= 0.7 s, as stream_models.roads); a cell is confirmed when hit
# at least 3 times by 2 vehicles or on 2 days, and 4x the mean hits of the
# non-empty cells (the background of rough surfaces; cf. the model's hot-spot test).  The class is a SQL heuristic from
# the calibration medians (simulators/models/road.py SHAPES): humps are slow and
# long, castings short and consistent, potholes the rest.  The model's own
# confirmed defects are the pothole alerts (table below).
ROAD_EVENTS = """WITH ev AS MATERIALIZED (
  SELECT e.device_id, e.time, e.peak, e.span, e.speed, e.lat, e.lon,
    floor(e.lat / 0.00025) AS cy, floor(e.lon / 0.0004) AS cx
  FROM road_bump_events e
  WHERE e.tenant = '$tenant' AND $__timeFilter(e.time) AND e.span >= 0.7 AND e.lat IS NOT NULL AND e.lon IS NOT NULL),
cells AS (
  SELECT cy, cx, count(*) AS hits,
    avg(lat) AS latitude, avg(lon) AS longitude, exp(avg(ln(greatest(peak, 0.01)))) AS peak,
    coalesce(stddev_samp(ln(greatest(peak, 0.01))), 0) AS peak_sd, exp(avg(ln(greatest(span, 0.001)))) AS span,
    avg(speed) AS speed, max(time) AS last_hit
  FROM ev GROUP BY 1, 2),
hot AS (
  SELECT * FROM (SELECT *, avg(hits) OVER () AS background FROM cells) c WHERE hits >= greatest(3, 4 * background)),
seen AS (   -- distinct vehicles and days, counted for the hot cells only
  SELECT ev.cy, ev.cx, count(DISTINCT ev.device_id) AS vehicles, count(DISTINCT floor(date_part('epoch', ev.time) / 86400)) AS days
  FROM ev JOIN hot ON hot.cy = ev.cy AND hot.cx = ev.cx GROUP BY 1, 2),
defects AS (
  SELECT hot.*, seen.vehicles, seen.days,
    CASE WHEN speed < 5.5 AND span > 1.25 THEN 'speed_hump'
         WHEN span < 1.1 AND peak_sd < 0.45 THEN 'casting' ELSE 'pothole' END AS class
  FROM hot JOIN seen ON seen.cy = hot.cy AND seen.cx = hot.cx
  WHERE seen.vehicles >= 2 OR seen.days >= 2)"""
ROADS = DashboardSpec("ss-roads", "StreetSense: roads",
    "Road defects located from council vehicles' bump events.", ("tenant",), (
    PanelSpec("Confirmed defects", "geomap", ROAD_EVENTS + """
SELECT class, latitude, longitude, hits AS passes, vehicles, days, round(peak::numeric, 2) AS peak_ms2,
  round(span::numeric, 2) AS span_s, last_hit
FROM defects ORDER BY hits DESC LIMIT 2000""",
        ("class", "latitude", "longitude", "passes", "vehicles", "days", "peak_ms2", "span_s", "last_hit"),
        w=14, h=14),
    PanelSpec("Castings vs potholes", "piechart", ROAD_EVENTS + """
SELECT class, count(*) AS defects FROM defects GROUP BY 1 ORDER BY 1""", ("class", "defects"), w=10, h=7),
    PanelSpec("Passes (vehicle hours with bump events)", "timeseries", f"""SELECT $__timeGroupAlias(s.day, '1d'), d.device_id AS metric, s.value FROM (
  SELECT date_trunc('day', h.bucket, 'UTC') AS day, h.device_id, count(*) AS value
  FROM readings_hourly h
  WHERE h.metric = {M['speed']} AND $__timeFilter(h.bucket)
    AND h.device_id IN (SELECT id FROM devices WHERE tenant = '$tenant' AND kind = 'road')
  GROUP BY 1, 2) s
JOIN devices d ON d.id = s.device_id
ORDER BY 1, 2""", ("time", "metric", "value"), "time_series", w=10, h=7),
    PanelSpec("Road defect alerts", "table", """SELECT a.entity, a.kind, a.severity, a.status, a.lat AS latitude, a.lon AS longitude,
  a.window_start, a.verdict
FROM alerts a
WHERE a.tenant = '$tenant' AND a.kind IN ('pothole', 'road_defect_other') AND $__timeFilter(a.window_start)
ORDER BY a.window_start DESC LIMIT 500""",
        ("entity", "kind", "severity", "status", "latitude", "longitude", "window_start", "verdict"), w=24),
))

# --------------------------------------------------------------------------- fleet health

FLEET = DashboardSpec("ss-fleet", "StreetSense: fleet health",
    "Batteries, radio, wake schedule, firmware and buffering.", ("tenant", "ward", "kind"), (
    PanelSpec("Lowest battery per kind (hourly minimum)", "timeseries",
              hourly_series("bat_v", "min(w.min)"), ("time", "metric", "value"), "time_series", "volt"),
    PanelSpec("RSSI per kind (hourly mean)", "timeseries",
              hourly_series("rssi", "sum(w.sum) / sum(w.n)"), ("time", "metric", "value"), "time_series", "dBm"),
    PanelSpec("Late: last seen before the expected wake", "table", f"""SELECT d.device_id, d.kind, a.ward, d.state, d.firmware, d.last_seen, d.next_wake,
  round((extract(epoch FROM {TO} - d.next_wake) / 60)::numeric) AS minutes_late
FROM {DEV_JOIN}
WHERE d.status = 'active' AND {DEV_FILTER} AND d.next_wake IS NOT NULL
  AND d.next_wake < {TO} - interval '15 minutes' AND (d.last_seen IS NULL OR d.last_seen < d.next_wake)
ORDER BY minutes_late DESC LIMIT 200""",
        ("device_id", "kind", "ward", "state", "firmware", "last_seen", "next_wake", "minutes_late"), w=24,
        description="A sleeping device is not silent until its own announced wake time has passed."),
    PanelSpec("Firmware versions", "piechart", f"""SELECT coalesce(d.firmware, 'unknown') AS firmware, count(*) AS devices
FROM {DEV_JOIN}
WHERE d.status = 'active' AND {DEV_FILTER}
GROUP BY 1 ORDER BY devices DESC""", ("firmware", "devices"), w=8),
    PanelSpec("Buffered readings (sum of hourly maxima)", "timeseries",
              hourly_series("buffered", "sum(w.sum_max)"), ("time", "metric", "value"), "time_series", w=16),
    PanelSpec("Lowest batteries now", "table", f"""SELECT d.device_id, d.kind, a.ward, round(b.v::numeric, 3) AS bat_v, b.bucket AS at
FROM {DEV_JOIN}
{latest_join("bat_v", "h.min", "b", "7 hours")}
WHERE d.status = 'active' AND {DEV_FILTER} AND b.bucket IS NOT NULL
ORDER BY bat_v LIMIT 25""", ("device_id", "kind", "ward", "bat_v", "at"), w=24),
))

# --------------------------------------------------------------------------- alerts

ALERT_FILTER = f"a.tenant = '$tenant' AND {WARD}"
ALERTS = DashboardSpec("ss-alerts", "StreetSense: alerts",
    "Alert lifecycle, delivery to council systems, operator verdicts and precision.", ("tenant", "ward"), (
    PanelSpec("Alerts raised per day by status", "timeseries", f"""SELECT $__timeGroupAlias(a.created_at, '1d'), a.status AS metric, count(*) AS value
FROM alerts a WHERE {ALERT_FILTER} AND $__timeFilter(a.created_at)
GROUP BY 1, 2 ORDER BY 1, 2""", ("time", "metric", "value"), "time_series"),
    PanelSpec("Lifecycle by kind", "table", f"""SELECT a.kind, count(*) AS raised,
  count(*) FILTER (WHERE a.status = 'open') AS open,
  count(*) FILTER (WHERE a.status = 'acknowledged') AS acknowledged,
  count(*) FILTER (WHERE a.status = 'resolved') AS resolved,
  count(*) FILTER (WHERE a.status = 'dismissed') AS dismissed,
  round((avg(extract(epoch FROM a.acknowledged_at - a.created_at)) / 60)::numeric, 1) AS minutes_to_ack,
  round((avg(extract(epoch FROM a.closed_at - a.created_at)) / 3600)::numeric, 1) AS hours_to_close
FROM alerts a WHERE {ALERT_FILTER} AND $__timeFilter(a.created_at)
GROUP BY 1 ORDER BY raised DESC""",
        ("kind", "raised", "open", "acknowledged", "resolved", "dismissed", "minutes_to_ack", "hours_to_close")),
    PanelSpec("Delivery status by sink", "table", f"""SELECT dl.sink, dl.status, count(*) AS deliveries, sum(dl.attempts) AS attempts,
  max(dl.last_attempt_at) AS last_attempt, max(dl.last_error) AS last_error
FROM alert_deliveries dl JOIN alerts a ON a.id = dl.alert_id
WHERE {ALERT_FILTER} AND $__timeFilter(dl.created_at)
GROUP BY 1, 2 ORDER BY 1, 2""", ("sink", "status", "deliveries", "attempts", "last_attempt", "last_error")),
    PanelSpec("Operator verdicts", "barchart", f"""SELECT a.kind,
  count(*) FILTER (WHERE a.verdict = 'true_positive') AS true_positive,
  count(*) FILTER (WHERE a.verdict = 'false_positive') AS false_positive,
  count(*) FILTER (WHERE a.verdict IS NULL AND a.closed_at IS NOT NULL) AS closed_unjudged
FROM alerts a WHERE {ALERT_FILTER} AND $__timeFilter(a.created_at)
GROUP BY 1 ORDER BY 1""", ("kind", "true_positive", "false_positive", "closed_unjudged")),
    PanelSpec("Precision by kind (operator verdicts)", "bargauge", f"""SELECT a.kind,
  round(count(*) FILTER (WHERE a.verdict = 'true_positive')::numeric / count(*), 3) AS precision,
  count(*) AS judged
FROM alerts a WHERE {ALERT_FILTER} AND $__timeFilter(a.created_at) AND a.verdict IS NOT NULL
GROUP BY 1 ORDER BY 1""", ("kind", "precision", "judged"), unit="percentunit", w=24),
))

ALL = (OPERATIONS, BINS, AIR, NOISE, ROADS, FLEET, ALERTS)
