-- Panel rollups, second part, found by `streetsense bench api` (30 days x
-- 10,000 devices; both storage variants, plain tables read from readings_hourly
-- like those of 0011):
--
-- * pm25_corrected_hourly_by_ward: humidity-corrected PM2.5 (kappa-Koehler,
--   Crilley et al. 2018, kappa = 0.4, RH capped at 95 %) corrected per site and
--   hour, then summed per (tenant, ward, hour).  The correction is not linear,
--   so it cannot be applied to ward means afterwards; the air panels show one
--   line per ward instead of one per site (270 sites x 168 hours was 91k points
--   per panel: unreadable, and 0.5 s a query).
-- * bin_fill_trend_hourly: per filling bin and hour H, the linear trend
--   (regr_slope, fill fraction per hour) of its hourly mean fill over the 12
--   hours H-11h..H, the latest of those means, and hours to full.  "Time to
--   full" then reads one hour's rows in hours_to_full order instead of
--   regressing 12 hours of every bin per query.  Only filling bins are kept
--   (trend over a millionth of the capacity an hour: the sensor resolves a
--   thousandth, and a flat series' slope is 0 give or take rounding, of either
--   sign; and not yet full): at 10,000 devices x 30 days, 75 % of the bin-hours,
--   ~110 bytes each with the index (526 MB), a seventh of what readings_hourly
--   holds for the same bins.  A bin
--   has rows for the 11 hours after its last reading too (its trend as of
--   those hours), as the panel had.
--
-- Both are recomputed with the 0011 rollups: ss_panel_rollups_recompute (called
-- by ss_refresh_panel_rollups and ss_rebuild_panel_rollups) now also recomputes
-- them for the given reading hours (the trend for those hours and the 11 after).
-- History already in the database is backfilled by the refreshes, a day each,
-- newest first (0011's backfill, restarted over the whole history).

CREATE TABLE pm25_corrected_hourly_by_ward (
    tenant  text NOT NULL,
    ward    text,                           -- NULL: the site's asset has no ward (or no asset)
    bucket  timestamptz NOT NULL,
    sites   bigint NOT NULL,                -- air sites with both PM2.5 and RH that hour
    sum     double precision NOT NULL       -- sum of the sites' corrected hourly mean PM2.5
);
CREATE UNIQUE INDEX pm25_corrected_hourly_by_ward_key ON pm25_corrected_hourly_by_ward (tenant, bucket, ward)
    INCLUDE (sites, sum) NULLS NOT DISTINCT;
CREATE INDEX pm25_corrected_hourly_by_ward_bucket ON pm25_corrected_hourly_by_ward (bucket);

CREATE TABLE bin_fill_trend_hourly (
    device_id     bigint NOT NULL,
    bucket        timestamptz NOT NULL,     -- H: the trend over the hourly means of H-11h..H
    fill          double precision NOT NULL,-- the latest hourly mean fill in H-11h..H
    rate          double precision NOT NULL,-- regr_slope of the hourly means, fill fraction per hour
    hours_to_full double precision NOT NULL -- (1 - fill) / rate
);
-- "Time to full": the filling bins of one hour, fastest first (rows of one hour go in together)
CREATE INDEX bin_fill_trend_hourly_to_full ON bin_fill_trend_hourly (bucket, hours_to_full);

-- Recompute them for the reading hours [lo, hi) (whole hours): the corrected PM of
-- those hours, the trend of those and the 11 after.
CREATE FUNCTION ss_panel_rollups_recompute_range_0014(lo timestamptz, hi timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    trend_hi timestamptz := hi + interval '11 hours';
BEGIN
    DELETE FROM pm25_corrected_hourly_by_ward WHERE bucket >= lo AND bucket < hi;
    INSERT INTO pm25_corrected_hourly_by_ward
        SELECT d.tenant, a.ward, s.bucket, count(*),
               sum(s.pm / (1 + (0.4 / 1.65) / (100.0 / least(greatest(s.rh, 1.0), 95.0) - 1)))
        FROM (SELECT h.device_id, h.bucket,   -- PM2.5 (11) and RH (13) paired per site and hour
                sum(h.sum) FILTER (WHERE h.metric = 11) / sum(h.n) FILTER (WHERE h.metric = 11) AS pm,
                sum(h.sum) FILTER (WHERE h.metric = 13) / sum(h.n) FILTER (WHERE h.metric = 13) AS rh
              FROM readings_hourly h
              WHERE h.metric IN (11, 13) AND h.bucket >= lo AND h.bucket < hi
              GROUP BY 1, 2) s
        JOIN devices d ON d.id = s.device_id AND d.kind = 'air'
        LEFT JOIN assets a ON a.tenant = d.tenant AND a.asset_id = d.asset_id
        WHERE s.pm IS NOT NULL AND s.rh IS NOT NULL
        GROUP BY 3, 1, 2 ORDER BY 3, 1, 2;

    -- the trend at H needs the hourly means of H-11h..H: one row per bin and hour of
    -- [lo - 11h, hi) (a dense grid, so that ROWS 11 PRECEDING is 11 hours), fill (2) joined in
    DELETE FROM bin_fill_trend_hourly WHERE bucket >= lo AND bucket < trend_hi;
    INSERT INTO bin_fill_trend_hourly
        SELECT device_id, bucket, vals[cardinality(vals)], rate, (1 - vals[cardinality(vals)]) / rate
        FROM (SELECT g.device_id, g.bucket,
                     regr_slope(h.sum / h.n, date_part('epoch', h.bucket) / 3600) OVER w AS rate,
                     array_agg(h.sum / h.n) FILTER (WHERE h.n IS NOT NULL) OVER w AS vals
              FROM (SELECT b.device_id, t AS bucket
                    FROM (SELECT DISTINCT h.device_id FROM readings_hourly h
                          WHERE h.metric = 2 AND h.bucket >= lo - interval '11 hours' AND h.bucket < trend_hi) b,
                         generate_series(lo - interval '11 hours', trend_hi - interval '1 hour', interval '1 hour') t) g
              LEFT JOIN readings_hourly h ON h.device_id = g.device_id AND h.metric = 2 AND h.bucket = g.bucket
                                         AND h.bucket >= lo - interval '11 hours' AND h.bucket < trend_hi
              WINDOW w AS (PARTITION BY g.device_id ORDER BY g.bucket ROWS BETWEEN 11 PRECEDING AND CURRENT ROW)) x
        WHERE bucket >= lo AND rate > 1e-6 AND vals[cardinality(vals)] < 1
        ORDER BY bucket, device_id;
END $$;

-- The 0011 function keeps its work; this one adds the tables above, for the
-- contiguous runs of the reading hours given.  ss_refresh_panel_rollups and ss_rebuild_panel_rollups call it by name.
ALTER FUNCTION ss_panel_rollups_recompute(timestamptz[], timestamptz[]) RENAME TO ss_panel_rollups_recompute_0011;
CREATE FUNCTION ss_panel_rollups_recompute(hours timestamptz[], lag_hours timestamptz[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    PERFORM ss_panel_rollups_recompute_0011(hours, lag_hours);
    FOR r IN
        SELECT min(x) AS lo, max(x) + interval '1 hour' AS hi
        FROM (SELECT x, x - (row_number() OVER (ORDER BY x)) * interval '1 hour' AS island
              FROM (SELECT DISTINCT x FROM unnest(hours) x) u) y
        GROUP BY island
    LOOP
        PERFORM ss_panel_rollups_recompute_range_0014(r.lo, r.hi);
    END LOOP;
    RETURN cardinality(hours);
END $$;

-- History already here: backfilled by the refreshes, newest day first (0011's backfill over
-- the whole history again; recomputing the 0011 tables too is idempotent).
UPDATE panel_rollup_state SET
    backfill_floor = date_trunc('hour', least(backfill_floor, (SELECT min(bucket) FROM readings_hourly)), 'UTC'),
    backfill_to = date_trunc('hour', greatest(backfill_to - interval '1 hour', (SELECT max(bucket) FROM readings_hourly)), 'UTC')
                  + interval '1 hour';
