"""Prometheus metrics of the ingest service (one set per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter("streetsense_ingest_messages", "MQTT messages received", ["channel"])
READINGS = Counter("streetsense_ingest_readings", "Readings stored (new rows)")
DUPLICATES = Counter("streetsense_ingest_duplicate_readings", "Readings already stored (redelivery, replay)")
QUARANTINED = Counter("streetsense_ingest_quarantined", "Messages quarantined, by reason", ["reason"])
BATCH_SECONDS = Histogram("streetsense_ingest_batch_seconds", "Time to write and commit one batch",
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
BATCH_READINGS = Histogram("streetsense_ingest_batch_readings", "Readings per committed batch",
                           buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 25000))
PENDING = Gauge("streetsense_ingest_pending_messages", "Messages received but not yet acknowledged")
LAG = Gauge("streetsense_ingest_lag_seconds", "Age of the oldest received, not yet committed message")
FORGED_REPLAYS = Counter("streetsense_ingest_forged_replay_marks",
                         "Messages whose ss-replay marker did not verify (treated as live, rate limited)")
RATE_LIMITED = Counter("streetsense_ingest_rate_limited_readings",
                       "Readings over their device's rate limit (quarantined as rate_limited, replayable)")
WRITE_ERRORS = Counter("streetsense_ingest_write_errors", "Database errors while writing (batch retried)")
