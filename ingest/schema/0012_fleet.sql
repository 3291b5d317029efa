-- Collection planning, second part (routing/).
--
-- 1. Per-tenant fleet configurations (routing/fleet.py validates them): vehicle
--    types with counts, capacities in litres and kg, shift start/end in local
--    time, break rules, depot and tipping site, and the council's time zone.
--    A plan names one (``name``); 'default' is used when a plan names none, and
--    the shipped demo-town fleet when the tenant has no 'default' row.
-- 2. The alert runner reads crew reports (crew_reports) as model input: its
--    watermark (received_at, id), checkpointed with the rest of its state.
--
-- Idempotent (IF NOT EXISTS), the same on plain PostgreSQL and TimescaleDB.

CREATE TABLE IF NOT EXISTS fleet_configs (
    tenant      text NOT NULL REFERENCES tenants (id),
    name        text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    config      jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, name)
);

ALTER TABLE alert_runner_state ADD COLUMN IF NOT EXISTS crew_at timestamptz NOT NULL DEFAULT 'epoch';
ALTER TABLE alert_runner_state ADD COLUMN IF NOT EXISTS crew_id bigint NOT NULL DEFAULT 0;

CREATE INDEX IF NOT EXISTS crew_reports_received ON crew_reports (received_at, id);
