-- Readings on TimescaleDB: a hypertable (1-day chunks) compressed by device,
-- and continuous aggregates with the same names and columns as the plain
-- variant's rollup tables.  Policies (compression, retention, refresh) are set
-- by migrate.py from the settings.

CREATE TABLE readings (
    time      timestamptz NOT NULL,
    device_id bigint NOT NULL,
    metric    smallint NOT NULL,
    value     double precision NOT NULL,
    PRIMARY KEY (device_id, metric, time)
);
SELECT create_hypertable('readings', 'time', chunk_time_interval => interval '1 day');
ALTER TABLE readings SET (timescaledb.compress,
                          timescaledb.compress_segmentby = 'device_id',
                          timescaledb.compress_orderby = 'metric, time');

CREATE MATERIALIZED VIEW readings_hourly WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
    SELECT time_bucket(interval '1 hour', time) AS bucket, device_id, metric,
           count(*) AS n, sum(value) AS sum, min(value) AS min, max(value) AS max, avg(value) AS avg
    FROM readings GROUP BY 1, 2, 3
    WITH NO DATA;

CREATE MATERIALIZED VIEW readings_daily WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
    SELECT time_bucket(interval '1 day', time) AS bucket, device_id, metric,
           count(*) AS n, sum(value) AS sum, min(value) AS min, max(value) AS max, avg(value) AS avg
    FROM readings GROUP BY 1, 2, 3
    WITH NO DATA;

-- No-op on TimescaleDB: continuous aggregates refresh by policy.
CREATE FUNCTION ss_refresh_rollups() RETURNS integer LANGUAGE sql AS $$ SELECT 0 $$;
