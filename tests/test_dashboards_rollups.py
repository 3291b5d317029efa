"""The panel rollups of migration 0011 (readings_hourly_by_ward, ingest_lag_hourly,
road_bump_events) and the rewritten "latest in the range" statements, on a real
PostgreSQL loaded through the real ingest path:

* every changed panel returns what its previous statement (reading
  readings_hourly and raw readings directly, kept below as the reference)
  returns, for several ranges and template-variable settings, including after
  a late batch for an old hour has been written and the rollups refreshed;
* each rollup equals its source recomputed from scratch (readings_hourly,
  batches, raw readings), incrementally maintained, after a full rebuild, and
  after the day-by-day backfill the migration leaves to the refreshes;
* the unfiltered SensorThings Observations collection pages through every
  row exactly once in its default order.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import psycopg
import pytest

from dashboards import macros, panels as P
from dashboards.build import models
from ingest.store import Batch, ReadingStore
from tests.test_dashboards import variable_sets

# The changed panels' statements as they were before the panel rollups (commit f16e3ea), reading
# readings_hourly and raw readings directly: the reference the faster statements must agree with.
# (Ingest lag is checked against batches instead: it now filters whole hours of receipt.)
# Time to full: since 0014 a slope under 1e-6 per hour counts as not filling (a flat series' slope is
# 0 give or take rounding, of either sign, which differed between the two statements' summation).
REFERENCE = {
    ("ss-operations", "Readings per second"): """SELECT $__timeGroupAlias(h.bucket, '1h'), d.kind AS metric, sum(h.n) / 3600.0 AS value
FROM readings_hourly h JOIN devices d LEFT JOIN assets a ON a.tenant = d.tenant AND a.asset_id = d.asset_id ON d.id = h.device_id
WHERE $__timeFilter(h.bucket) AND d.tenant = '$tenant' AND d.kind IN ($kind) AND ('__all' IN ($ward) OR a.ward IN ($ward))
GROUP BY 1, 2 ORDER BY 1, 2""",
    ("ss-bins", "Fill level"): """SELECT d.device_id, a.asset_id, a.bin_kind, a.ward,
  d.lat AS latitude, d.lon AS longitude, round(f.fill::numeric * 100, 1) AS fill_pct, f.bucket AS at
FROM devices d LEFT JOIN assets a ON a.tenant = d.tenant AND a.asset_id = d.asset_id
CROSS JOIN LATERAL (SELECT h.avg AS fill, h.bucket FROM readings_hourly h
                    WHERE h.device_id = d.id AND h.metric = 2 AND $__timeFilter(h.bucket)
                    ORDER BY h.bucket DESC LIMIT 1) f
WHERE d.tenant = '$tenant' AND d.kind = 'bin_fill' AND ('__all' IN ($ward) OR a.ward IN ($ward)) AND d.lat IS NOT NULL""",
    ("ss-bins", "Time to full (fastest first)"): """SELECT d.device_id, a.asset_id, a.ward, round(s.fill::numeric * 100, 1) AS fill_pct,
  round((s.rate * 100)::numeric, 2) AS pct_per_hour,
  round(((1 - s.fill) / s.rate)::numeric, 1) AS hours_to_full
FROM devices d LEFT JOIN assets a ON a.tenant = d.tenant AND a.asset_id = d.asset_id
CROSS JOIN LATERAL (
  SELECT regr_slope(h.avg, extract(epoch FROM h.bucket) / 3600) AS rate,
         (array_agg(h.avg ORDER BY h.bucket DESC))[1] AS fill
  FROM readings_hourly h
  WHERE h.device_id = d.id AND h.metric = 2
    AND h.bucket >= $__timeTo()::timestamptz - interval '12 hours' AND h.bucket < $__timeTo()::timestamptz) s
WHERE d.tenant = '$tenant' AND d.kind = 'bin_fill' AND ('__all' IN ($ward) OR a.ward IN ($ward)) AND s.rate > 1e-6 AND s.fill < 1
ORDER BY hours_to_full LIMIT 50""",
    ("ss-bins", "Mean fill by ward"): """SELECT coalesce(a.ward, '(none)') AS ward, round(avg(h.avg)::numeric * 100, 1) AS fill_pct
FROM readings_hourly h JOIN devices d LEFT JOIN assets a ON a.tenant = d.tenant AND a.asset_id = d.asset_id ON d.id = h.device_id
WHERE h.metric = 2 AND h.bucket >= $__timeTo()::timestamptz - interval '1 day' AND h.bucket < $__timeTo()::timestamptz AND d.tenant = '$tenant' AND d.kind = 'bin_fill' AND ('__all' IN ($ward) OR a.ward IN ($ward))
GROUP BY 1 ORDER BY 1""",
    # per site before 0014; now per ward: the mean over the ward's sites of what the site lines showed
    ("ss-air", "PM2.5 and PM10 by ward (hourly means)"): """SELECT $__timeGroupAlias(h.bucket, '1h'),
  coalesce(a.ward, '(no ward)') || ' ' || m.name AS metric, avg(h.sum / h.n) AS value
FROM readings_hourly h JOIN devices d LEFT JOIN assets a ON a.tenant = d.tenant AND a.asset_id = d.asset_id ON d.id = h.device_id JOIN metrics m ON m.id = h.metric
WHERE h.metric IN (11, 12) AND $__timeFilter(h.bucket) AND d.tenant = '$tenant' AND d.kind = 'air' AND ('__all' IN ($ward) OR a.ward IN ($ward))
GROUP BY 1, 2 ORDER BY 1, 2""",
    ("ss-air", "PM2.5 corrected for humidity, by ward"): """SELECT $__timeGroupAlias(p.bucket, '1h'), coalesce(a.ward, '(no ward)') AS metric,
  avg(p.avg / (1 + (0.4 / 1.65) / (100.0 / least(greatest(r.avg, 1.0), 95.0) - 1))) AS value
FROM readings_hourly p
JOIN readings_hourly r ON r.device_id = p.device_id AND r.bucket = p.bucket AND r.metric = 13
JOIN devices d LEFT JOIN assets a ON a.tenant = d.tenant AND a.asset_id = d.asset_id ON d.id = p.device_id
WHERE p.metric = 11 AND $__timeFilter(p.bucket) AND d.tenant = '$tenant' AND d.kind = 'air' AND ('__all' IN ($ward) OR a.ward IN ($ward))
GROUP BY 1, 2 ORDER BY 1, 2""",
    ("ss-noise", "LAeq by hour of week"): """SELECT (extract(isodow FROM h.bucket AT TIME ZONE '$tz')::int - 1) * 24
         + extract(hour FROM h.bucket AT TIME ZONE '$tz')::int AS hour_of_week,
  to_char(h.bucket AT TIME ZONE '$tz', 'Dy HH24') AS slot,
  round((10 * log(avg(power(10, h.avg / 10))))::numeric, 1) AS laeq_db
FROM readings_hourly h JOIN devices d LEFT JOIN assets a ON a.tenant = d.tenant AND a.asset_id = d.asset_id ON d.id = h.device_id
WHERE h.metric = 20 AND $__timeFilter(h.bucket) AND d.tenant = '$tenant' AND d.kind = 'noise' AND ('__all' IN ($ward) OR a.ward IN ($ward))
GROUP BY 1, 2 ORDER BY 1""",
    ("ss-noise", "Hours over the limit by site"): """SELECT d.device_id AS site, a.ward,
  count(*) FILTER (WHERE h.avg > CASE WHEN (extract(hour FROM h.bucket AT TIME ZONE '$tz') >= 23 OR extract(hour FROM h.bucket AT TIME ZONE '$tz') < 7) THEN $noise_night ELSE $noise_day END) AS exceedance_hours,
  count(*) FILTER (WHERE h.avg > CASE WHEN (extract(hour FROM h.bucket AT TIME ZONE '$tz') >= 23 OR extract(hour FROM h.bucket AT TIME ZONE '$tz') < 7) THEN $noise_night ELSE $noise_day END AND (extract(hour FROM h.bucket AT TIME ZONE '$tz') >= 23 OR extract(hour FROM h.bucket AT TIME ZONE '$tz') < 7)) AS night_exceedance_hours,
  count(*) AS hours, round(max(h.avg)::numeric, 1) AS loudest_hour_db
FROM readings_hourly h JOIN devices d LEFT JOIN assets a ON a.tenant = d.tenant AND a.asset_id = d.asset_id ON d.id = h.device_id
WHERE h.metric = 20 AND $__timeFilter(h.bucket) AND d.tenant = '$tenant' AND d.kind = 'noise' AND ('__all' IN ($ward) OR a.ward IN ($ward))
GROUP BY 1, 2 ORDER BY exceedance_hours DESC, site""",
    ("ss-noise", "Exceedances per day"): """SELECT $__timeGroupAlias(h.bucket, '1d'), d.device_id AS metric,
  count(*) FILTER (WHERE h.avg > CASE WHEN (extract(hour FROM h.bucket AT TIME ZONE '$tz') >= 23 OR extract(hour FROM h.bucket AT TIME ZONE '$tz') < 7) THEN $noise_night ELSE $noise_day END) AS value
FROM readings_hourly h JOIN devices d LEFT JOIN assets a ON a.tenant = d.tenant AND a.asset_id = d.asset_id ON d.id = h.device_id
WHERE h.metric = 20 AND $__timeFilter(h.bucket) AND d.tenant = '$tenant' AND d.kind = 'noise' AND ('__all' IN ($ward) OR a.ward IN ($ward))
GROUP BY 1, 2 ORDER BY 1, 2""",
    ("ss-roads", "Confirmed defects"): """WITH ev AS (
  SELECT r.device_id, r.time,
    max(r.value) FILTER (WHERE r.metric = 30) AS peak,
    max(r.value) FILTER (WHERE r.metric = 31) AS span,
    max(r.value) FILTER (WHERE r.metric = 32) AS speed,
    max(r.value) FILTER (WHERE r.metric = 33) AS lat,
    max(r.value) FILTER (WHERE r.metric = 34) AS lon
  FROM readings r JOIN devices d ON d.id = r.device_id
  WHERE d.tenant = '$tenant' AND d.kind = 'road' AND r.metric BETWEEN 30 AND 34
    AND $__timeFilter(r.time)
  GROUP BY 1, 2),
cells AS (
  SELECT floor(lat / 0.00025) AS cy, floor(lon / 0.0004) AS cx, count(*) AS hits,
    count(DISTINCT device_id) AS vehicles, count(DISTINCT date_trunc('day', time, 'UTC')) AS days,
    avg(lat) AS latitude, avg(lon) AS longitude, exp(avg(ln(greatest(peak, 0.01)))) AS peak,
    coalesce(stddev_samp(ln(greatest(peak, 0.01))), 0) AS peak_sd, exp(avg(ln(greatest(span, 0.001)))) AS span,
    avg(speed) AS speed, max(time) AS last_hit
  FROM ev WHERE span >= 0.7 AND lat IS NOT NULL AND lon IS NOT NULL
  GROUP BY 1, 2),
defects AS (
  SELECT *, CASE WHEN speed < 5.5 AND span > 1.25 THEN 'speed_hump'
                 WHEN span < 1.1 AND peak_sd < 0.45 THEN 'casting' ELSE 'pothole' END AS class
  FROM (SELECT *, avg(hits) OVER () AS background FROM cells) c
  WHERE hits >= greatest(3, 4 * background) AND (vehicles >= 2 OR days >= 2))
SELECT class, latitude, longitude, hits AS passes, vehicles, days, round(peak::numeric, 2) AS peak_ms2,
  round(span::numeric, 2) AS span_s, last_hit
FROM defects ORDER BY hits DESC LIMIT 2000""",
    ("ss-roads", "Castings vs potholes"): """WITH ev AS (
  SELECT r.device_id, r.time,
    max(r.value) FILTER (WHERE r.metric = 30) AS peak,
    max(r.value) FILTER (WHERE r.metric = 31) AS span,
    max(r.value) FILTER (WHERE r.metric = 32) AS speed,
    max(r.value) FILTER (WHERE r.metric = 33) AS lat,
    max(r.value) FILTER (WHERE r.metric = 34) AS lon
  FROM readings r JOIN devices d ON d.id = r.device_id
  WHERE d.tenant = '$tenant' AND d.kind = 'road' AND r.metric BETWEEN 30 AND 34
    AND $__timeFilter(r.time)
  GROUP BY 1, 2),
cells AS (
  SELECT floor(lat / 0.00025) AS cy, floor(lon / 0.0004) AS cx, count(*) AS hits,
    count(DISTINCT device_id) AS vehicles, count(DISTINCT date_trunc('day', time, 'UTC')) AS days,
    avg(lat) AS latitude, avg(lon) AS longitude, exp(avg(ln(greatest(peak, 0.01)))) AS peak,
    coalesce(stddev_samp(ln(greatest(peak, 0.01))), 0) AS peak_sd, exp(avg(ln(greatest(span, 0.001)))) AS span,
    avg(speed) AS speed, max(time) AS last_hit
  FROM ev WHERE span >= 0.7 AND lat IS NOT NULL AND lon IS NOT NULL
  GROUP BY 1, 2),
defects AS (
  SELECT *, CASE WHEN speed < 5.5 AND span > 1.25 THEN 'speed_hump'
                 WHEN span < 1.1 AND peak_sd < 0.45 THEN 'casting' ELSE 'pothole' END AS class
  FROM (SELECT *, avg(hits) OVER () AS background FROM cells) c
  WHERE hits >= greatest(3, 4 * background) AND (vehicles >= 2 OR days >= 2))
SELECT class, count(*) AS defects FROM defects GROUP BY 1 ORDER BY 1""",
    ("ss-roads", "Passes (vehicle hours with bump events)"): """SELECT $__timeGroupAlias(h.bucket, '1d'), d.device_id AS metric, count(*) AS value
FROM readings_hourly h JOIN devices d ON d.id = h.device_id
WHERE h.metric = 32 AND $__timeFilter(h.bucket) AND d.tenant = '$tenant' AND d.kind = 'road'
GROUP BY 1, 2 ORDER BY 1, 2""",
    ("ss-fleet", "Lowest battery per kind (hourly minimum)"): """SELECT $__timeGroupAlias(h.bucket, '1h'), d.kind AS metric, min(h.min) AS value
FROM readings_hourly h JOIN devices d LEFT JOIN assets a ON a.tenant = d.tenant AND a.asset_id = d.asset_id ON d.id = h.device_id
WHERE h.metric = 40 AND $__timeFilter(h.bucket)
  AND d.tenant = '$tenant' AND d.kind IN ($kind) AND ('__all' IN ($ward) OR a.ward IN ($ward))
GROUP BY 1, 2 ORDER BY 1, 2""",
    ("ss-fleet", "RSSI per kind (hourly mean)"): """SELECT $__timeGroupAlias(h.bucket, '1h'), d.kind AS metric, sum(h.sum) / sum(h.n) AS value
FROM readings_hourly h JOIN devices d LEFT JOIN assets a ON a.tenant = d.tenant AND a.asset_id = d.asset_id ON d.id = h.device_id
WHERE h.metric = 41 AND $__timeFilter(h.bucket)
  AND d.tenant = '$tenant' AND d.kind IN ($kind) AND ('__all' IN ($ward) OR a.ward IN ($ward))
GROUP BY 1, 2 ORDER BY 1, 2""",
    ("ss-fleet", "Buffered readings (sum of hourly maxima)"): """SELECT $__timeGroupAlias(h.bucket, '1h'), d.kind AS metric, sum(h.max) AS value
FROM readings_hourly h JOIN devices d LEFT JOIN assets a ON a.tenant = d.tenant AND a.asset_id = d.asset_id ON d.id = h.device_id
WHERE h.metric = 43 AND $__timeFilter(h.bucket)
  AND d.tenant = '$tenant' AND d.kind IN ($kind) AND ('__all' IN ($ward) OR a.ward IN ($ward))
GROUP BY 1, 2 ORDER BY 1, 2""",
    ("ss-fleet", "Lowest batteries now"): """SELECT d.device_id, d.kind, a.ward, round(b.v::numeric, 3) AS bat_v, b.bucket AS at
FROM devices d LEFT JOIN assets a ON a.tenant = d.tenant AND a.asset_id = d.asset_id
CROSS JOIN LATERAL (SELECT h.min AS v, h.bucket FROM readings_hourly h
                    WHERE h.device_id = d.id AND h.metric = 40 AND $__timeFilter(h.bucket)
                    ORDER BY h.bucket DESC LIMIT 1) b
WHERE d.status = 'active' AND d.tenant = '$tenant' AND d.kind IN ($kind) AND ('__all' IN ($ward) OR a.ward IN ($ward))
ORDER BY bat_v LIMIT 25""",
}

# Rollup == its source recomputed from scratch; each statement returns the rows that differ.
AGREE = {
    "readings_hourly_by_ward": """
WITH want AS (
  SELECT d.tenant, d.kind, a.ward, h.metric, h.bucket, count(*) AS devices, sum(h.n) AS n, sum(h.sum) AS sum,
         min(h.min) AS min, max(h.max) AS max, sum(h.avg) AS sum_avg, sum(h.max) AS sum_max
  FROM readings_hourly h JOIN devices d ON d.id = h.device_id
  LEFT JOIN assets a ON a.tenant = d.tenant AND a.asset_id = d.asset_id
  GROUP BY 1, 2, 3, 4, 5)
SELECT * FROM want w FULL JOIN readings_hourly_by_ward g
  ON g.tenant = w.tenant AND g.kind = w.kind AND g.ward IS NOT DISTINCT FROM w.ward AND g.metric = w.metric
     AND g.bucket = w.bucket
WHERE g.tenant IS NULL OR w.tenant IS NULL OR g.devices <> w.devices OR g.n <> w.n OR g.min <> w.min
   OR g.max <> w.max OR abs(g.sum - w.sum) > 1e-9 * (1 + abs(w.sum))
   OR abs(g.sum_avg - w.sum_avg) > 1e-9 * (1 + abs(w.sum_avg)) OR abs(g.sum_max - w.sum_max) > 1e-9 * (1 + abs(w.sum_max))""",
    "ingest_lag_hourly": """
WITH want AS (
  SELECT d.tenant, d.kind, a.ward, date_trunc('hour', b.received_at, 'UTC') AS bucket, count(*) AS batches,
         sum(extract(epoch FROM b.stored_at - b.received_at))::float8 AS lag_sum,
         max(extract(epoch FROM b.stored_at - b.received_at))::float8 AS lag_max
  FROM batches b JOIN devices d ON d.id = b.device_id
  LEFT JOIN assets a ON a.tenant = d.tenant AND a.asset_id = d.asset_id
  GROUP BY 1, 2, 3, 4)
SELECT * FROM want w FULL JOIN ingest_lag_hourly g
  ON g.tenant = w.tenant AND g.kind = w.kind AND g.ward IS NOT DISTINCT FROM w.ward AND g.bucket = w.bucket
WHERE g.tenant IS NULL OR w.tenant IS NULL OR g.batches <> w.batches
   OR abs(g.lag_sum - w.lag_sum) > 1e-6 OR abs(g.lag_max - w.lag_max) > 1e-6""",
    "road_bump_events": """
WITH want AS (
  SELECT d.tenant, r.device_id, r.time,
    max(r.value) FILTER (WHERE r.metric = 30) AS peak, max(r.value) FILTER (WHERE r.metric = 31) AS span,
    max(r.value) FILTER (WHERE r.metric = 32) AS speed, max(r.value) FILTER (WHERE r.metric = 33) AS lat,
    max(r.value) FILTER (WHERE r.metric = 34) AS lon
  FROM readings r JOIN devices d ON d.id = r.device_id
  WHERE d.kind = 'road' AND r.metric BETWEEN 30 AND 34
  GROUP BY 1, 2, 3)
(TABLE want EXCEPT TABLE road_bump_events) UNION ALL (TABLE road_bump_events EXCEPT TABLE want)""",
    # migration 0014
    "pm25_corrected_hourly_by_ward": """
WITH want AS (
  SELECT d.tenant, a.ward, p.bucket, count(*) AS sites,
         sum(p.avg / (1 + (0.4 / 1.65) / (100.0 / least(greatest(r.avg, 1.0), 95.0) - 1))) AS sum
  FROM readings_hourly p JOIN readings_hourly r ON r.device_id = p.device_id AND r.bucket = p.bucket AND r.metric = 13
  JOIN devices d ON d.id = p.device_id LEFT JOIN assets a ON a.tenant = d.tenant AND a.asset_id = d.asset_id
  WHERE p.metric = 11 AND d.kind = 'air'
  GROUP BY 1, 2, 3)
SELECT * FROM want w FULL JOIN pm25_corrected_hourly_by_ward g
  ON g.tenant = w.tenant AND g.ward IS NOT DISTINCT FROM w.ward AND g.bucket = w.bucket
WHERE g.tenant IS NULL OR w.tenant IS NULL OR g.sites <> w.sites OR abs(g.sum - w.sum) > 1e-9 * (1 + abs(w.sum))""",
    "bin_fill_trend_hourly": """
WITH hours AS (
  SELECT r.device_id, t AS bucket
  FROM (SELECT device_id, min(bucket) AS lo, max(bucket) AS hi FROM readings_hourly WHERE metric = 2 GROUP BY 1) r,
       generate_series(r.lo, r.hi + interval '11 hours', interval '1 hour') t),
want AS (
  SELECT x.device_id, x.bucket, s.fill, s.rate FROM hours x CROSS JOIN LATERAL (
    SELECT regr_slope(h.avg, extract(epoch FROM h.bucket) / 3600) AS rate, (array_agg(h.avg ORDER BY h.bucket DESC))[1] AS fill
    FROM readings_hourly h
    WHERE h.device_id = x.device_id AND h.metric = 2 AND h.bucket > x.bucket - interval '12 hours' AND h.bucket <= x.bucket) s
  WHERE s.rate > 1e-6 AND s.fill < 1)    -- filling bins only
SELECT * FROM want w FULL JOIN bin_fill_trend_hourly g USING (device_id, bucket)
WHERE w.rate IS NULL OR g.rate IS NULL OR abs(g.fill - w.fill) > 1e-9 OR abs(g.rate - w.rate) > 1e-9 * (1 + abs(w.rate))
   OR abs(g.hours_to_full - (1 - w.fill) / w.rate) > 1e-6 * (1 + abs(g.hours_to_full))""",
}
NONE_DIFFER = {t: 0 for t in AGREE}


def rollup_disagreements(conn: psycopg.Connection) -> dict[str, int]:
    """Rows in which each panel rollup differs from its source recomputed from scratch."""
    return {name: len(conn.execute(sql).fetchall()) for name, sql in AGREE.items()}


def _num(x) -> float | None:
    return float(x) if isinstance(x, (Decimal, float, int)) and not isinstance(x, bool) else None


def _sort_key(row: tuple) -> tuple:
    return tuple((0, round(float(x), 4), "") if _num(x) is not None else (1, 0.0, str(x)) for x in row)


def _close(a, b) -> bool:
    if _num(a) is None or _num(b) is None:
        return a == b
    # a rounded numeric may land one unit of its last place apart (avg vs sum / n differ in the last bit)
    tol = max(float(Decimal(1).scaleb(x.as_tuple().exponent)) for x in (a, b) if isinstance(x, Decimal)) \
        if isinstance(a, Decimal) or isinstance(b, Decimal) else 0.0
    return abs(float(a) - float(b)) <= tol * 1.001 + 1e-9 * (1 + abs(float(b)))


# panels ending in ORDER BY <col> LIMIT n: rows tied with the last one may differ
LIMITED = {"Time to full (fastest first)": "hours_to_full", "Lowest batteries now": "bat_v"}


def same_rows(title: str, columns: tuple[str, ...], got: list[tuple], want: list[tuple]) -> None:
    assert len(got) == len(want), (title, len(got), len(want))
    if title in LIMITED and got:
        k = columns.index(LIMITED[title])
        assert all(_close(g[k], w[k]) for g, w in zip(got, want)), title      # the same order of values
        last = want[-1][k]
        got = [r for r in got if not _close(r[k], last)]
        want = [r for r in want if not _close(r[k], last)]
        assert len(got) == len(want), title
    for g, w in zip(sorted(got, key=_sort_key), sorted(want, key=_sort_key)):
        assert len(g) == len(w) and all(_close(x, y) for x, y in zip(g, w)), (title, g, w)


def compare_with_reference(url: str, loaded, windows: list[tuple[dt.datetime, dt.datetime]]) -> int:
    """Run every changed panel and its reference; returns how many (panel, window, variables) were compared."""
    built, n = models(), 0
    with psycopg.connect(url) as c:
        sets = variable_sets(loaded, c)
        for spec in P.ALL:
            variables = macros.dashboard_variables(built[spec.uid])
            for p in spec.panels:
                if (spec.uid, p.title) not in REFERENCE:
                    continue
                for start, end in windows:
                    for values in sets:
                        got = c.execute(macros.expand(p.sql, start, end, variables, values)).fetchall()
                        want = c.execute(macros.expand(REFERENCE[(spec.uid, p.title)], start, end, variables,
                                                       values)).fetchall()
                        same_rows(p.title, p.columns, got, want)
                        n += 1
    return n


@pytest.fixture
def town(db_url):
    from dashboards.simdata import load

    return db_url, load(db_url, days=3)


def late_batch(url: str, loaded) -> tuple[int, dt.datetime]:
    """A late batch for an hour two days back (a gateway's backlog): two new readings of one
    bin, one of a noise site and a new bump event, written through ReadingStore."""
    at = loaded.start + dt.timedelta(days=1, hours=5, minutes=7, seconds=11)
    ms = int(at.timestamp() * 1000)
    with psycopg.connect(url) as c:
        devs = dict(c.execute("""SELECT DISTINCT ON (kind) kind, id FROM devices WHERE tenant = %s
                                 ORDER BY kind, id""", (loaded.tenant,)).fetchall())
        c.commit()
        b = Batch.from_rows([(ms, devs["bin_fill"], P.M["fill"], 0.99), (ms + 1000, devs["bin_fill"], P.M["fill"], 0.97),
                             (ms, devs["noise"], P.M["laeq"], 88.0)]
                            + [(ms, devs["road"], P.M[m], v) for m, v in
                               (("bump_g", 25.0), ("bump_dur", 1.0), ("speed", 4.0), ("lat", 53.8), ("lon", -1.55))],
                            messages=1, seqs=[(devs["bin_fill"], 10**9, 2, ms + 5000)])
        res = ReadingStore(c, "late-test").write(b)
        c.commit()
    return res.inserted, at


def test_changed_panels_agree_with_their_previous_statements(town):
    url, loaded = town
    third = loaded.start + dt.timedelta(days=1)
    windows = [(loaded.start, loaded.end),                                              # the whole run
               (third, third + dt.timedelta(days=1, hours=7, minutes=31, seconds=5)),  # ends mid-hour, mid-data
               (loaded.start, dt.datetime.now(dt.UTC))]                               # up to now, past the data
    assert compare_with_reference(url, loaded, windows) == len(REFERENCE) * len(windows) * 3
    with psycopg.connect(url) as c:
        assert rollup_disagreements(c) == NONE_DIFFER
        assert c.execute("SELECT count(*) FROM road_bump_events").fetchone()[0] > 50

    inserted, at = late_batch(url, loaded)
    assert inserted == 8
    with psycopg.connect(url, autocommit=True) as c:
        before = c.execute("SELECT n FROM readings_hourly_by_ward WHERE metric = %s AND bucket = %s AND kind = 'road'",
                           (P.M["lat"], at.replace(minute=0, second=0))).fetchall()
        assert rollup_disagreements(c)["road_bump_events"] == 1           # stale until the refresh
        c.execute("SELECT ss_refresh_rollups()")                            # what `streetsense db maintain` runs
        assert rollup_disagreements(c) == NONE_DIFFER
        after = c.execute("SELECT sum(n) FROM readings_hourly_by_ward WHERE metric = %s AND bucket = %s AND kind = 'road'",
                          (P.M["lat"], at.replace(minute=0, second=0))).fetchone()[0]
        assert after == sum(n for (n,) in before) + 1
        assert c.execute("SELECT count(*) FROM road_bump_events WHERE time = %s AND peak = 25", (at,)).fetchone()[0] == 1
        state = c.execute("SELECT last_log_id FROM panel_rollup_state").fetchone()[0]
        assert state == c.execute("SELECT max(id) FROM ingest_log").fetchone()[0]
    assert compare_with_reference(url, loaded, windows[:2]) == len(REFERENCE) * 2 * 3


def test_full_rebuild_equals_the_incremental_rollups(town):
    url, loaded = town
    with psycopg.connect(url, autocommit=True) as c:
        tables = tuple(AGREE)
        kept = {t: sorted(c.execute(f"SELECT * FROM {t}").fetchall(), key=_sort_key) for t in tables}
        assert all(kept.values())
        for t in tables:
            c.execute(f"TRUNCATE {t}")
        assert rollup_disagreements(c)["readings_hourly_by_ward"] > 0
        c.execute("SELECT ss_rebuild_panel_rollups(%s, %s)", (loaded.start - dt.timedelta(days=1),
                                                               loaded.end + dt.timedelta(days=1)))
        assert rollup_disagreements(c) == {t: 0 for t in tables}
        for t in tables:
            again = sorted(c.execute(f"SELECT * FROM {t}").fetchall(), key=_sort_key)
            assert len(again) == len(kept[t]) and all(
                all(_close(x, y) for x, y in zip(r1, r2)) for r1, r2 in zip(again, kept[t])), t
        # a refresh with nothing new recomputes nothing that changes
        c.execute("SELECT ss_refresh_rollups()")
        assert rollup_disagreements(c) == {t: 0 for t in tables}


def test_existing_history_is_backfilled_newest_day_first_by_the_refreshes(town):
    """What migration 0011 sets up on a database that already holds data: no rollup rows yet, a
    backfill from the newest hour down to the oldest, one day per refresh."""
    url, loaded = town
    tables = tuple(AGREE)
    with psycopg.connect(url, autocommit=True) as c:
        for t in tables:
            c.execute(f"TRUNCATE {t}")
        # batches committed long ago: the incremental refresh (which re-reads the last two minutes) has none to do
        c.execute("UPDATE ingest_log SET committed_at = committed_at - interval '1 hour'")
        c.execute("""UPDATE panel_rollup_state SET
                       backfill_floor = date_trunc('hour', (SELECT least(min(bucket), (SELECT min(received_at) FROM batches))
                                                            FROM readings_hourly), 'UTC'),
                       backfill_to = date_trunc('hour', (SELECT greatest(max(bucket), (SELECT max(received_at) FROM batches))
                                                         FROM readings_hourly), 'UTC') + interval '1 hour'""")
        floor, top = c.execute("SELECT backfill_floor, backfill_to FROM panel_rollup_state").fetchone()
        steps = []
        while True:
            c.execute("SELECT ss_refresh_rollups()")
            pending = c.execute("SELECT backfill_to FROM panel_rollup_state").fetchone()[0]
            steps.append(pending)
            if pending is None or len(steps) > 10:
                break
            assert pending == top - dt.timedelta(days=len(steps))
            older, done = c.execute("""SELECT count(*) FILTER (WHERE bucket < %(p)s), count(*) FILTER (WHERE bucket >= %(p)s)
                                       FROM readings_hourly_by_ward""", {"p": pending}).fetchone()
            assert older == 0 and done > 0                                       # newest days first
        assert len(steps) == -(-(top - floor) // dt.timedelta(days=1))           # ceil(days of history)
        assert rollup_disagreements(c) == {t: 0 for t in tables}
