-- Quarantined messages can be replayed once their cause is fixed (a device
-- registered late, a contract bug fixed).  A replay stamps replayed_at; if the
-- replayed message is refused again, ingest re-arms the row (replayed_at NULL)
-- with the new reason, so nothing is lost either way.
ALTER TABLE quarantine ADD COLUMN replayed_at timestamptz;
ALTER TABLE quarantine ADD COLUMN times_seen integer NOT NULL DEFAULT 1;
CREATE INDEX quarantine_pending ON quarantine (reason_code) WHERE replayed_at IS NULL;
