-- Indexes found by `streetsense bench api`: on TimescaleDB the rollups are
-- continuous aggregates; indexes on them go to their materialisation tables.
CREATE INDEX readings_hourly_metric_bucket ON readings_hourly (metric, bucket);
CREATE INDEX readings_daily_metric_bucket ON readings_daily (metric, bucket);
CREATE INDEX batches_received ON batches (received_at);
