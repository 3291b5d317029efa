-- The model runner's engine state per device, beside the rest of it (alert_runner_state.engine).
-- A step rewrites only the devices whose state changed: a town's engine is tens of MB, and rewriting
-- all of it on every step was megabytes of WAL a second even at real-time rates.
CREATE TABLE IF NOT EXISTS alert_runner_devices (
    runner      text NOT NULL REFERENCES alert_runner_state (runner) ON DELETE CASCADE,
    dev_tenant  text NOT NULL,             -- the engine's key of the device: its tenant ...
    dev_id      text NOT NULL,             -- ... and device id
    state       bytea NOT NULL,            -- pickled, as Engine.dump_parts gives it
    PRIMARY KEY (runner, dev_tenant, dev_id)
);
