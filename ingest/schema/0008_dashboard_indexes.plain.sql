-- Indexes found by `streetsense bench api` (30 days x 10,000 devices): fleet
-- panels read one metric across all devices for a window, and the ingest-lag
-- panel reads batches by receive time.
CREATE INDEX readings_hourly_metric_bucket ON readings_hourly (metric, bucket) INCLUDE (device_id, n, sum, min, max);
CREATE INDEX readings_daily_metric_bucket ON readings_daily (metric, bucket) INCLUDE (device_id, n, sum, min, max);
CREATE INDEX batches_received ON batches (received_at);
