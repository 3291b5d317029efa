-- Over-the-air firmware updates (streetsense/ota): signed releases, staged
-- rollouts and each device's progress, as reported on its ack topic.

-- A bundle as signed by the council: the manifest bytes exactly as signed, so
-- the OTA notice can always be rebuilt and re-checked.
CREATE TABLE firmware_releases (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant          text NOT NULL REFERENCES tenants (id),
    board           text NOT NULL CHECK (board IN ('esp32', 'picow', 'pico2w')),   -- board profile
    version         text NOT NULL CHECK (version ~ '^[0-9A-Za-z][0-9A-Za-z.+-]{0,31}$'),
    manifest        bytea NOT NULL,
    manifest_sha256 bytea NOT NULL CHECK (length(manifest_sha256) = 32),
    signature       bytea NOT NULL CHECK (length(signature) = 64),
    key_id          text NOT NULL,
    url             text NOT NULL CHECK (url ~ '^http://.+/$'),   -- where the bundle directory is served
    files           integer NOT NULL CHECK (files > 0),
    bytes           bigint NOT NULL CHECK (bytes > 0),
    image           boolean NOT NULL DEFAULT false,               -- carries a MicroPython image (ESP32)
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant, board, version)
);

-- Named device groups for staged rollouts ("canary", a ward, a depot, ...).
CREATE TABLE ota_groups (
    tenant      text NOT NULL REFERENCES tenants (id),
    name        text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    device_id   bigint NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    PRIMARY KEY (tenant, name, device_id)
);
CREATE INDEX ota_groups_device ON ota_groups (device_id);

CREATE TABLE ota_rollouts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant      text NOT NULL REFERENCES tenants (id),
    release_id  bigint NOT NULL REFERENCES firmware_releases (id),
    board       text NOT NULL,                   -- = the release's, for the index below
    plan        jsonb NOT NULL,                  -- streetsense.ota.rollout.Plan
    status      text NOT NULL DEFAULT 'running'
                CHECK (status IN ('running', 'halted', 'aborted', 'completed')),
    wave        integer NOT NULL DEFAULT 0 CHECK (wave >= 0),   -- highest open wave
    reason      text NOT NULL DEFAULT '',
    created_by  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- one live rollout per tenant and board: two would fight over the cmd topic
CREATE UNIQUE INDEX ota_rollouts_one_live ON ota_rollouts (tenant, board) WHERE status IN ('running', 'halted');

-- Every device a rollout reaches, with its wave (fixed at the start) and progress.
CREATE TABLE ota_device_status (
    rollout_id   bigint NOT NULL REFERENCES ota_rollouts (id) ON DELETE CASCADE,
    device_id    bigint NOT NULL REFERENCES devices (id),
    wave         integer NOT NULL CHECK (wave >= 0),
    state        text NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'notified', 'downloading', 'staged', 'retrying',
                                  'running', 'failed', 'rolled_back')),
    excused      boolean NOT NULL DEFAULT false, -- a failure accepted when the rollout was resumed
    from_version text,                            -- the firmware it reported while updating
    error        text,
    tries        integer NOT NULL DEFAULT 0,
    notified_at  timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rollout_id, device_id)
);
CREATE INDEX ota_device_status_device ON ota_device_status (device_id);

-- Every OTA ack as it arrived (audit trail; the status table holds the latest).
CREATE TABLE ota_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rollout_id  bigint NOT NULL REFERENCES ota_rollouts (id) ON DELETE CASCADE,
    device_id   bigint NOT NULL REFERENCES devices (id),
    received_at timestamptz NOT NULL DEFAULT now(),
    ack         jsonb NOT NULL
);
CREATE INDEX ota_events_rollout ON ota_events (rollout_id, received_at);
