-- Panel rollups found by `streetsense bench api` (30 days x 10,000 devices):
-- small tables the dashboards read instead of scanning readings_hourly,
-- batches or raw readings.  Same names and columns as the plain variant; here
-- too they are tables (a continuous aggregate cannot join devices and
-- assets), recomputed for the hours touched by batches committed since the
-- last refresh (ingest_log) by ss_refresh_panel_rollups(): every minute by a
-- TimescaleDB job, and by ss_refresh_rollups().  They read readings_hourly,
-- a real-time continuous aggregate, so hours not yet materialised count too.
-- ss_rebuild_panel_rollups(from, to) recomputes a range.  Ward, kind and
-- tenant are the device's (and its asset's) when the hour was last recomputed.

-- readings_hourly summed over the devices of one (tenant, kind, ward).
CREATE TABLE readings_hourly_by_ward (
    tenant   text NOT NULL,
    kind     text NOT NULL,
    ward     text,                          -- NULL: the asset has no ward (or no asset)
    metric   smallint NOT NULL,
    bucket   timestamptz NOT NULL,
    devices  bigint NOT NULL,               -- device-hours (rows of readings_hourly)
    n        bigint NOT NULL,               -- readings
    sum      double precision NOT NULL,
    min      double precision NOT NULL,
    max      double precision NOT NULL,
    sum_avg  double precision NOT NULL,     -- sum of the devices' hourly means
    sum_max  double precision NOT NULL      -- sum of the devices' hourly maxima
);
CREATE UNIQUE INDEX readings_hourly_by_ward_key ON readings_hourly_by_ward (tenant, metric, bucket, kind, ward) NULLS NOT DISTINCT;
CREATE INDEX readings_hourly_by_ward_tenant_bucket ON readings_hourly_by_ward (tenant, bucket);
CREATE INDEX readings_hourly_by_ward_bucket ON readings_hourly_by_ward (bucket);

-- Ingest lag (MQTT receipt to commit) of batches, by hour of receipt.
CREATE TABLE ingest_lag_hourly (
    tenant   text NOT NULL,
    kind     text NOT NULL,
    ward     text,
    bucket   timestamptz NOT NULL,          -- hour of batches.received_at (UTC)
    batches  bigint NOT NULL,
    lag_sum  double precision NOT NULL,     -- seconds
    lag_max  double precision NOT NULL      -- seconds
);
CREATE UNIQUE INDEX ingest_lag_hourly_key ON ingest_lag_hourly (tenant, bucket, kind, ward) NULLS NOT DISTINCT;
CREATE INDEX ingest_lag_hourly_bucket ON ingest_lag_hourly (bucket);

-- Road bump events: the five records sharing a time (bump_g, bump_dur, speed,
-- lat, lon; metric ids 30..34 of the wire contract) as one row.
CREATE TABLE road_bump_events (
    tenant    text NOT NULL,
    device_id bigint NOT NULL,
    time      timestamptz NOT NULL,
    peak      double precision,             -- bump_g, m/s2
    span      double precision,             -- bump_dur, s
    speed     double precision,             -- m/s
    lat       double precision,
    lon       double precision,
    PRIMARY KEY (device_id, time)
);
CREATE INDEX road_bump_events_tenant_time ON road_bump_events (tenant, time);
CREATE INDEX road_bump_events_time ON road_bump_events (time);
-- the roads panels read feature-like events (span >= 0.7 s, located) of one tenant and range
CREATE INDEX road_bump_events_features ON road_bump_events (tenant, time) INCLUDE (device_id, peak, span, speed, lat, lon)
    WHERE span >= 0.7 AND lat IS NOT NULL AND lon IS NOT NULL;

CREATE TABLE panel_rollup_state (
    id             boolean PRIMARY KEY DEFAULT true CHECK (id),
    last_log_id    bigint NOT NULL DEFAULT 0,
    refreshed_at   timestamptz,
    backfill_floor timestamptz,         -- the oldest hour the backfill goes back to
    backfill_to    timestamptz          -- the hours before this are still to backfill; NULL: none
);
INSERT INTO panel_rollup_state DEFAULT VALUES;

-- Recompute the given UTC hours: readings_hourly_by_ward and road_bump_events
-- for reading-time hours, ingest_lag_hourly for receipt-time hours.  Idempotent.
-- Rows go in ordered by hour, as the panels read them.  When the hours are all
-- the hours of a range (a rebuild) the statements scan the range and skip the
-- per-row list test (dynamic SQL only to leave that test out; values are bound).
CREATE FUNCTION ss_panel_rollups_recompute(hours timestamptz[], lag_hours timestamptz[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    lo timestamptz;
    hi timestamptz;
    every boolean;
BEGIN
    IF cardinality(hours) > 0 THEN
        SELECT min(x), max(x) + interval '1 hour', count(DISTINCT x) * interval '1 hour' = max(x) + interval '1 hour' - min(x)
          INTO lo, hi, every FROM unnest(hours) x;
        EXECUTE 'DELETE FROM readings_hourly_by_ward WHERE bucket >= $1 AND bucket < $2'
                || CASE WHEN every THEN '' ELSE ' AND bucket = ANY ($3)' END USING lo, hi, hours;
        EXECUTE 'INSERT INTO readings_hourly_by_ward
            SELECT d.tenant, d.kind, a.ward, h.metric, h.bucket, count(*), sum(h.n), sum(h.sum), min(h.min),
                   max(h.max), sum(h.avg), sum(h.max)
            FROM readings_hourly h JOIN devices d ON d.id = h.device_id
            LEFT JOIN assets a ON a.tenant = d.tenant AND a.asset_id = d.asset_id
            WHERE h.bucket >= $1 AND h.bucket < $2'
                || CASE WHEN every THEN '' ELSE ' AND h.bucket = ANY ($3)' END
                || ' GROUP BY 1, 2, 3, 4, 5 ORDER BY 5, 1, 4' USING lo, hi, hours;
        EXECUTE 'DELETE FROM road_bump_events WHERE time >= $1 AND time < $2'
                || CASE WHEN every THEN '' ELSE ' AND date_trunc(''hour'', time, ''UTC'') = ANY ($3)' END
                USING lo, hi, hours;
        EXECUTE 'INSERT INTO road_bump_events
            SELECT d.tenant, r.device_id, r.time,
                   max(r.value) FILTER (WHERE r.metric = 30), max(r.value) FILTER (WHERE r.metric = 31),
                   max(r.value) FILTER (WHERE r.metric = 32), max(r.value) FILTER (WHERE r.metric = 33),
                   max(r.value) FILTER (WHERE r.metric = 34)
            FROM devices d JOIN readings r ON r.device_id = d.id
            WHERE d.kind = ''road'' AND r.metric BETWEEN 30 AND 34 AND r.time >= $1 AND r.time < $2'
                || CASE WHEN every THEN '' ELSE ' AND date_trunc(''hour'', r.time, ''UTC'') = ANY ($3)' END
                || ' GROUP BY 1, 2, 3 ORDER BY 3, 1' USING lo, hi, hours;
    END IF;
    IF cardinality(lag_hours) > 0 THEN
        SELECT min(x), max(x) + interval '1 hour', count(DISTINCT x) * interval '1 hour' = max(x) + interval '1 hour' - min(x)
          INTO lo, hi, every FROM unnest(lag_hours) x;
        EXECUTE 'DELETE FROM ingest_lag_hourly WHERE bucket >= $1 AND bucket < $2'
                || CASE WHEN every THEN '' ELSE ' AND bucket = ANY ($3)' END USING lo, hi, lag_hours;
        EXECUTE 'INSERT INTO ingest_lag_hourly
            SELECT d.tenant, d.kind, a.ward, date_trunc(''hour'', b.received_at, ''UTC''), count(*),
                   sum(extract(epoch FROM b.stored_at - b.received_at)),
                   max(extract(epoch FROM b.stored_at - b.received_at))
            FROM batches b JOIN devices d ON d.id = b.device_id
            LEFT JOIN assets a ON a.tenant = d.tenant AND a.asset_id = d.asset_id
            WHERE b.received_at >= $1 AND b.received_at < $2'
                || CASE WHEN every THEN '' ELSE ' AND date_trunc(''hour'', b.received_at, ''UTC'') = ANY ($3)' END
                || ' GROUP BY 1, 2, 3, 4 ORDER BY 4, 1' USING lo, hi, lag_hours;
    END IF;
    RETURN cardinality(hours);
END $$;

-- The hours touched since the last refresh: reading hours from ingest_log's
-- min/max reading time (as the readings rollups), receipt hours from the six
-- hours before each commit and the batch's reading hours (a batch received
-- outside both is counted by the next ss_rebuild_panel_rollups).  Batches
-- commit out of id order, so the last two minutes of ingest_log are read again.
-- Then one step of a pending backfill (newest first, ``backfill_step`` per call).
CREATE FUNCTION ss_refresh_panel_rollups(backfill_step interval DEFAULT interval '1 day') RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    last_id bigint;
    top_id bigint;
    hours timestamptz[];
    lag_hours timestamptz[];
    floor_ts timestamptz;
    to_ts timestamptz;
    from_ts timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('ss_refresh_panel_rollups'));
    SELECT last_log_id INTO last_id FROM panel_rollup_state;
    SELECT coalesce(max(id), 0) INTO top_id FROM ingest_log;
    SELECT coalesce(array_agg(DISTINCT h), '{}') INTO hours
    FROM ingest_log l, generate_series(date_trunc('hour', l.min_time, 'UTC'), date_trunc('hour', l.max_time, 'UTC'),
                                       interval '1 hour') h
    WHERE (l.id > last_id OR l.committed_at > now() - interval '2 minutes') AND l.inserted > 0;
    SELECT coalesce(array_agg(DISTINCT h), '{}') INTO lag_hours
    FROM ingest_log l, LATERAL (
        SELECT generate_series(date_trunc('hour', l.committed_at - interval '6 hours', 'UTC'),
                               date_trunc('hour', l.committed_at, 'UTC'), interval '1 hour')
        UNION
        SELECT generate_series(date_trunc('hour', l.min_time, 'UTC'), date_trunc('hour', l.max_time, 'UTC'),
                               interval '1 hour')) x(h)
    WHERE (l.id > last_id OR l.committed_at > now() - interval '2 minutes') AND l.messages > 0 AND h IS NOT NULL;
    PERFORM ss_panel_rollups_recompute(hours, lag_hours);
    UPDATE panel_rollup_state SET last_log_id = greatest(last_log_id, top_id), refreshed_at = now();
    SELECT backfill_floor, backfill_to INTO floor_ts, to_ts FROM panel_rollup_state;
    IF to_ts IS NOT NULL THEN
        from_ts := greatest(floor_ts, to_ts - backfill_step);
        PERFORM ss_rebuild_panel_rollups(from_ts, to_ts);
        UPDATE panel_rollup_state SET backfill_to = CASE WHEN from_ts > floor_ts THEN from_ts END;
    END IF;
    RETURN cardinality(hours);
END $$;

-- Recompute every hour in [from_ts, to_ts) (a backfill, or data loaded without ingest_log rows).
CREATE FUNCTION ss_rebuild_panel_rollups(from_ts timestamptz, to_ts timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    hours timestamptz[];
BEGIN
    SELECT coalesce(array_agg(h), '{}') INTO hours
    FROM generate_series(date_trunc('hour', from_ts, 'UTC'), to_ts - interval '1 microsecond', interval '1 hour') h;
    RETURN ss_panel_rollups_recompute(hours, hours);
END $$;

-- ss_refresh_rollups() was a no-op here (continuous aggregates refresh by policy); now it refreshes these.
CREATE OR REPLACE FUNCTION ss_refresh_rollups() RETURNS integer
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ss_refresh_panel_rollups();
    RETURN 0;
END $$;

CREATE PROCEDURE ss_panel_rollups_job(job_id integer, config jsonb)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ss_refresh_panel_rollups();
END $$;
SELECT add_job('ss_panel_rollups_job', interval '1 minute');

-- What an existing database already holds is backfilled by the refreshes, newest
-- day first (a day per refresh), so that this migration stays short however
-- long the history; new batches are the incremental refresh's from here on.
UPDATE panel_rollup_state SET last_log_id = (SELECT coalesce(max(id), 0) FROM ingest_log), refreshed_at = now(),
    backfill_floor = date_trunc('hour', least((SELECT min(time) FROM readings), (SELECT min(received_at) FROM batches)), 'UTC'),
    backfill_to = date_trunc('hour', greatest((SELECT max(time) FROM readings), (SELECT max(received_at) FROM batches)), 'UTC') + interval '1 hour';
