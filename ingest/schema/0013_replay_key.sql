-- The key that signs `streetsense quarantine replay` messages (MQTT 5 user
-- property ss-replay = HMAC-SHA256(key, topic NUL payload)).  A replay skips the
-- per-device rate limit, so the marker must not be something a device could
-- set on its own publishes: only holders of database access (the replay tool
-- and the ingest workers) can read this key.  32 random bytes from
-- gen_random_uuid() (pg_strong_random), made once per database.

CREATE TABLE ingest_replay_key (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    secret     bytea NOT NULL CHECK (length(secret) = 32),
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO ingest_replay_key (secret)
VALUES (decode(replace(gen_random_uuid()::text, '-', '') || replace(gen_random_uuid()::text, '-', ''), 'hex'));
REVOKE ALL ON ingest_replay_key FROM PUBLIC;
