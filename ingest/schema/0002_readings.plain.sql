-- Readings on plain PostgreSQL: native range partitions by month, a BRIN index
-- on time, and hourly/daily rollup tables refreshed incrementally from
-- ingest_log by ss_refresh_rollups().  Same names and columns as the
-- TimescaleDB variant, so every query serves both.

CREATE TABLE readings (
    time      timestamptz NOT NULL,
    device_id bigint NOT NULL,
    metric    smallint NOT NULL,
    value     double precision NOT NULL,
    PRIMARY KEY (device_id, metric, time)
) PARTITION BY RANGE (time);
CREATE INDEX readings_time_brin ON readings USING brin (time) WITH (pages_per_range = 32);
CREATE TABLE readings_default PARTITION OF readings DEFAULT;

CREATE FUNCTION ss_ensure_partitions(from_ts timestamptz, to_ts timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    m timestamptz := date_trunc('month', from_ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    made integer := 0;
    name text;
BEGIN
    WHILE m < to_ts LOOP
        name := 'readings_' || to_char(m AT TIME ZONE 'UTC', 'YYYYMM');
        IF to_regclass(name) IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF readings FOR VALUES FROM (%L) TO (%L)',
                           name, m, (m AT TIME ZONE 'UTC' + interval '1 month') AT TIME ZONE 'UTC');
            made := made + 1;
        END IF;
        m := (m AT TIME ZONE 'UTC' + interval '1 month') AT TIME ZONE 'UTC';
    END LOOP;
    RETURN made;
END $$;

CREATE FUNCTION ss_drop_partitions_before(cutoff timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    dropped integer := 0;
BEGIN
    FOR r IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'readings'::regclass AND c.relname ~ '^readings_[0-9]{6}$'
    LOOP
        IF ((to_date(substr(r.relname, 10), 'YYYYMM') + interval '1 month')::timestamp AT TIME ZONE 'UTC') <= cutoff THEN
            EXECUTE format('DROP TABLE %I', r.relname);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    RETURN dropped;
END $$;

CREATE TABLE readings_hourly (
    bucket    timestamptz NOT NULL,
    device_id bigint NOT NULL,
    metric    smallint NOT NULL,
    n         bigint NOT NULL,
    sum       double precision NOT NULL,
    min       double precision NOT NULL,
    max       double precision NOT NULL,
    avg       double precision NOT NULL,
    PRIMARY KEY (device_id, metric, bucket)
);
CREATE INDEX readings_hourly_bucket ON readings_hourly (bucket);
CREATE TABLE readings_daily (LIKE readings_hourly INCLUDING ALL);

CREATE TABLE rollup_state (
    id            boolean PRIMARY KEY DEFAULT true CHECK (id),
    last_log_id   bigint NOT NULL DEFAULT 0,
    refreshed_at  timestamptz
);
INSERT INTO rollup_state DEFAULT VALUES;

-- Recompute the hours and days touched by batches committed since the last
-- refresh.  Batches commit out of id order under several workers, so it also
-- re-reads the ingest_log rows of the last two minutes (recomputing is idempotent).
CREATE FUNCTION ss_refresh_rollups() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    last_id bigint;
    top_id bigint;
    hours integer;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('ss_refresh_rollups'));
    SELECT last_log_id INTO last_id FROM rollup_state;
    SELECT coalesce(max(id), 0) INTO top_id FROM ingest_log;
    CREATE TEMP TABLE IF NOT EXISTS _ss_dirty (bucket timestamptz PRIMARY KEY) ON COMMIT DROP;
    INSERT INTO _ss_dirty
        SELECT DISTINCT h FROM ingest_log l,
            generate_series(date_trunc('hour', l.min_time), date_trunc('hour', l.max_time), interval '1 hour') h
        WHERE (l.id > last_id OR l.committed_at > now() - interval '2 minutes') AND l.inserted > 0
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS hours = ROW_COUNT;
    DELETE FROM readings_hourly h USING _ss_dirty d WHERE h.bucket = d.bucket;
    INSERT INTO readings_hourly
        SELECT date_trunc('hour', r.time), r.device_id, r.metric, count(*), sum(r.value), min(r.value), max(r.value), avg(r.value)
        FROM readings r JOIN _ss_dirty d ON r.time >= d.bucket AND r.time < d.bucket + interval '1 hour'
        GROUP BY 1, 2, 3;
    DELETE FROM readings_daily dd USING (SELECT DISTINCT date_trunc('day', bucket, 'UTC') AS day FROM _ss_dirty) x WHERE dd.bucket = x.day;
    INSERT INTO readings_daily
        SELECT date_trunc('day', h.bucket, 'UTC'), h.device_id, h.metric, sum(h.n), sum(h.sum), min(h.min), max(h.max), sum(h.sum) / sum(h.n)
        FROM readings_hourly h
        WHERE date_trunc('day', h.bucket, 'UTC') IN (SELECT DISTINCT date_trunc('day', bucket, 'UTC') FROM _ss_dirty)
        GROUP BY 1, 2, 3;
    UPDATE rollup_state SET last_log_id = greatest(last_log_id, top_id), refreshed_at = now();
    RETURN hours;
END $$;
