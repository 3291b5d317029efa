-- Core registry, quarantine and bookkeeping tables (both storage variants).

CREATE TABLE tenants (
    id          text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9-]{0,63}$'),
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Things a device is attached to.  Household bins carry a pseudonym only:
-- names and addresses of residents are never stored here.
CREATE TABLE assets (
    tenant      text NOT NULL REFERENCES tenants (id),
    asset_id    text NOT NULL,
    kind        text NOT NULL DEFAULT 'bin' CHECK (kind IN ('bin', 'lamp_post', 'vehicle', 'site')),
    bin_kind    text CHECK (bin_kind IN ('household', 'street')),
    capacity_l  real CHECK (capacity_l > 0),
    depth_m     real CHECK (depth_m > 0),
    household   text,
    street      text,
    ward        text,
    lat         double precision CHECK (lat BETWEEN -90 AND 90),
    lon         double precision CHECK (lon BETWEEN -180 AND 180),
    schedule    jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, asset_id)
);

CREATE TABLE devices (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant          text NOT NULL REFERENCES tenants (id),
    device_id       text NOT NULL CHECK (device_id ~ '^[a-z0-9][a-z0-9-]{0,63}$'),
    kind            text NOT NULL CHECK (kind IN ('bin_fill', 'air', 'noise', 'road')),
    board           text NOT NULL DEFAULT 'esp32' CHECK (board IN ('esp32', 'esp32s3', 'picow', 'pico2w')),
    firmware        text,
    lat             double precision CHECK (lat BETWEEN -90 AND 90),
    lon             double precision CHECK (lon BETWEEN -180 AND 180),
    asset_id        text,
    credentials_ref text,
    status          text NOT NULL DEFAULT 'active'
                    CHECK (status IN ('provisioned', 'active', 'retired', 'revoked')),
    state           text,            -- last announced: online / sleeping / offline
    next_wake       timestamptz,     -- the device's own plan, so sleep is not silence
    last_seen       timestamptz,
    last_seq        bigint,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant, device_id),
    FOREIGN KEY (tenant, asset_id) REFERENCES assets (tenant, asset_id)
);

-- Mirror of the contract's metric registry (contract/v1.py), synced by migrate.
CREATE TABLE metrics (
    id        smallint PRIMARY KEY,
    name      text NOT NULL UNIQUE,
    unit      text NOT NULL,
    decimals  smallint NOT NULL,
    min_value double precision NOT NULL,
    max_value double precision NOT NULL,
    kinds     text NOT NULL
);

-- One row per device batch (the pack's bseq): lost batches are gaps in seq.
CREATE TABLE batches (
    device_id   bigint NOT NULL REFERENCES devices (id),
    seq         bigint NOT NULL,
    received_at timestamptz NOT NULL,                      -- MQTT receipt at the worker
    stored_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    readings    integer NOT NULL,
    PRIMARY KEY (device_id, seq)
);

-- Anything that could not be stored, with the raw bytes and the reason.
CREATE TABLE quarantine (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at    timestamptz NOT NULL DEFAULT now(),
    topic          text NOT NULL,
    tenant         text,
    device_id      text,
    reason_code    text NOT NULL,
    reason         text NOT NULL,
    details        jsonb NOT NULL DEFAULT '[]',
    payload        bytea NOT NULL,
    payload_sha256 bytea NOT NULL,
    UNIQUE (topic, payload_sha256)
);
CREATE INDEX quarantine_received ON quarantine (received_at);

-- One row per committed ingest batch: drives incremental rollups and metrics.
CREATE TABLE ingest_log (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    committed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    worker       text NOT NULL,
    messages     integer NOT NULL,
    readings     integer NOT NULL,
    inserted     integer NOT NULL,
    quarantined  integer NOT NULL,
    min_time     timestamptz,
    max_time     timestamptz
);
CREATE INDEX ingest_log_committed ON ingest_log (committed_at);

CREATE TABLE alerts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant      text NOT NULL REFERENCES tenants (id),
    kind        text NOT NULL,
    severity    text NOT NULL CHECK (severity IN ('info', 'low', 'medium', 'high', 'critical')),
    entity      text NOT NULL,
    device_id   bigint REFERENCES devices (id),
    asset_id    text,
    lat         double precision,
    lon         double precision,
    window_start timestamptz NOT NULL,
    window_end  timestamptz,
    status      text NOT NULL DEFAULT 'open'
                CHECK (status IN ('open', 'acknowledged', 'resolved', 'dismissed')),
    explanation jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX alerts_one_open ON alerts (tenant, kind, entity) WHERE status IN ('open', 'acknowledged');

-- Labelled ground truth from the simulators, for scoring the models.
CREATE TABLE truth_events (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scenario  text NOT NULL,
    kind      text NOT NULL,
    entity    text NOT NULL,
    tenant    text NOT NULL,
    start_ts  timestamptz NOT NULL,
    end_ts    timestamptz,
    details   jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX truth_events_kind ON truth_events (scenario, kind, start_ts);
