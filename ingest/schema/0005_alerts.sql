-- Alerts and council workflows (alerts/): explained, deduplicated alerts with
-- an operator lifecycle; the welfare consent register; routing rules; a
-- transactional outbox of deliveries to council systems (Open311, signed
-- webhooks, email); and the model runner's checkpoint.  Decisions and every
-- access to welfare data go to audit_log (0003), which is append-only.

CREATE FUNCTION ss_severity_rank(s text) RETURNS integer LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE s WHEN 'info' THEN 0 WHEN 'low' THEN 1 WHEN 'medium' THEN 2 WHEN 'high' THEN 3
                  WHEN 'critical' THEN 4 END
$$;

-- Welfare checks are opt-in.  One row per grant; a withdrawal is recorded on
-- the row (never deleted: the register must show what was agreed, when, and
-- on what evidence).  At most one live consent per household.
CREATE TABLE consents (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant            text NOT NULL REFERENCES tenants (id),
    household         text NOT NULL CHECK (household <> ''),       -- pseudonym, as on assets.household
    recipient_name    text NOT NULL CHECK (recipient_name <> ''),
    recipient_role    text NOT NULL CHECK (recipient_role <> ''),  -- e.g. "daughter", "council carer"
    recipient_contact text NOT NULL CHECK (recipient_contact ~ '^[^@\s]+@[^@\s]+$'),   -- email address
    purpose           text NOT NULL CHECK (purpose <> ''),
    evidence          text NOT NULL CHECK (evidence <> ''),        -- how consent was given (form ref, call log)
    granted_at        timestamptz NOT NULL DEFAULT now(),
    granted_by        text NOT NULL,
    withdrawn_at      timestamptz,
    withdrawn_by      text,
    withdrawal_reason text,
    CHECK ((withdrawn_at IS NULL) = (withdrawn_by IS NULL))
);
CREATE UNIQUE INDEX consents_one_live ON consents (tenant, household) WHERE withdrawn_at IS NULL;

ALTER TABLE alerts
    ADD COLUMN summary          text NOT NULL DEFAULT '',      -- the plain-language explanation (latest)
    ADD COLUMN suggested_action text NOT NULL DEFAULT '',
    ADD COLUMN evidence         jsonb NOT NULL DEFAULT '[]',   -- one entry per finding folded in (capped)
    ADD COLUMN findings         integer NOT NULL DEFAULT 0,    -- findings folded in, all told
    ADD COLUMN first_severity   text,
    ADD COLUMN ward             text,
    ADD COLUMN welfare          boolean NOT NULL DEFAULT false,
    ADD COLUMN household        text,
    ADD COLUMN consent_id       bigint REFERENCES consents (id),
    ADD COLUMN muted            boolean NOT NULL DEFAULT false, -- over the storm limit: stored, not sent
    ADD COLUMN notified_severity text,
    ADD COLUMN notified_at      timestamptz,
    ADD COLUMN acknowledged_at  timestamptz,
    ADD COLUMN acknowledged_by  text,
    ADD COLUMN closed_at        timestamptz,
    ADD COLUMN closed_by        text,
    ADD COLUMN resolution       text CHECK (resolution IN ('operator', 'council', 'consent_withdrawn')),
    ADD COLUMN verdict          text CHECK (verdict IN ('true_positive', 'false_positive')),
    ADD COLUMN comment          text,
    ADD COLUMN suppressed       integer NOT NULL DEFAULT 0,    -- findings dropped by the cooldown after close
    ADD COLUMN redacted_at      timestamptz,                   -- welfare details erased (consent withdrawn)
    ADD CONSTRAINT alerts_welfare_has_consent CHECK (NOT welfare OR consent_id IS NOT NULL),
    ADD CONSTRAINT alerts_closed CHECK ((status IN ('resolved', 'dismissed')) = (closed_at IS NOT NULL));
CREATE INDEX alerts_tenant_created ON alerts (tenant, created_at);
CREATE INDEX alerts_problem_closed ON alerts (tenant, kind, entity, closed_at) WHERE closed_at IS NOT NULL;
CREATE INDEX alerts_consent ON alerts (consent_id) WHERE consent_id IS NOT NULL;

-- Operator verdicts waiting for (then applied by) the model runner, with what changed.
CREATE TABLE alert_feedback (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id    bigint NOT NULL REFERENCES alerts (id),
    tenant      text NOT NULL,
    kind        text NOT NULL,
    entity      text NOT NULL,
    verdict     text NOT NULL CHECK (verdict IN ('true_positive', 'false_positive')),
    actor       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    applied_at  timestamptz,
    applied_by  text,                     -- runner name
    result      jsonb                     -- what the engine reported, and whether its state changed
);
CREATE INDEX alert_feedback_pending ON alert_feedback (id) WHERE applied_at IS NULL;

-- Where alerts can go.  config by kind:
--   open311: base_url, api_key, jurisdiction_id?, service_code, service_codes {alert kind: code}
--   webhook: url, secret (or secret_env)
--   email:   host, port, sender, to [..], starttls?, username?, password_env?
-- Secrets may be named by environment variable (secret_env / password_env) instead of stored.
CREATE TABLE alert_sinks (
    tenant     text NOT NULL REFERENCES tenants (id),
    name       text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    kind       text NOT NULL CHECK (kind IN ('open311', 'webhook', 'email')),
    config     jsonb NOT NULL,
    enabled    boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, name)
);

-- Routing rules: alert kind(s) and area (a ward, or a bounding box) -> a sink.
-- Welfare alerts only ever match routes marked welfare, and go to the
-- consent's named recipient, never to a general list.
CREATE TABLE alert_routes (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant       text NOT NULL,
    sink         text NOT NULL,
    kinds        text[],                                  -- NULL: every kind
    min_severity text NOT NULL DEFAULT 'info' CHECK (ss_severity_rank(min_severity) IS NOT NULL),
    ward         text,
    min_lat      double precision,
    min_lon      double precision,
    max_lat      double precision,
    max_lon      double precision,
    welfare      boolean NOT NULL DEFAULT false,
    FOREIGN KEY (tenant, sink) REFERENCES alert_sinks (tenant, name),
    CHECK ((min_lat IS NULL) = (max_lat IS NULL) AND (min_lat IS NULL) = (min_lon IS NULL)
           AND (min_lat IS NULL) = (max_lon IS NULL)),
    CHECK (min_lat IS NULL OR (min_lat <= max_lat AND min_lon <= max_lon))
);
CREATE INDEX alert_routes_tenant ON alert_routes (tenant);

-- The transactional outbox: a row is written in the same transaction as the
-- alert change that calls for it, and is retried with backoff until the sink
-- acknowledges it.  The idempotency key is derived from (alert, sink, event),
-- so the same notification can never be queued twice, and the sinks use it to
-- make a retried send take effect once.
CREATE TABLE alert_deliveries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id        bigint NOT NULL REFERENCES alerts (id),
    tenant          text NOT NULL,
    sink            text NOT NULL,
    event           text NOT NULL,                       -- 'opened', 'escalated:high'
    idempotency_key text NOT NULL UNIQUE,
    recipient       text,                                -- welfare: the consent's recipient contact
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sending', 'delivered', 'cancelled')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    leased_until    timestamptz,
    last_attempt_at timestamptz,
    last_error      text,
    payload         jsonb,                               -- what was sent (set on delivery)
    external_id     text,                                -- Open311 service_request_id
    external_token  text,                                -- Open311 token, while the id is pending
    remote_status   text,                                -- Open311 status as last polled
    polled_at       timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    cancelled_at    timestamptz,
    cancelled_reason text,
    UNIQUE (alert_id, sink, event),
    FOREIGN KEY (tenant, sink) REFERENCES alert_sinks (tenant, name)
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_attempt_at) WHERE status IN ('pending', 'sending');
CREATE INDEX alert_deliveries_open311 ON alert_deliveries (polled_at)
    WHERE status = 'delivered' AND external_id IS NOT NULL AND remote_status IS DISTINCT FROM 'closed';

-- The model runner's checkpoint: engine state and input watermarks, written in
-- the same transaction as the alerts they produced.
CREATE TABLE alert_runner_state (
    runner       text PRIMARY KEY,
    version      bigint NOT NULL DEFAULT 0,
    engine       bytea,
    log_at       timestamptz NOT NULL DEFAULT 'epoch',       -- ingest_log watermark (committed_at, id)
    log_id       bigint NOT NULL DEFAULT 0,
    status_at    timestamptz NOT NULL DEFAULT 'epoch',       -- devices.updated_at watermark
    status_id    bigint NOT NULL DEFAULT 0,
    registry     jsonb NOT NULL DEFAULT '{}',                -- device pk -> fingerprint of the row the engine has
    stats        jsonb NOT NULL DEFAULT '{}',
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Per (device, metric): the newest reading time fed to the engine.  Readings
-- at or before it are not fed again (idempotent re-scans of overlapping batches).
CREATE TABLE alert_runner_watermarks (
    runner    text NOT NULL REFERENCES alert_runner_state (runner),
    device_id bigint NOT NULL,
    metric    smallint NOT NULL,
    time      timestamptz NOT NULL,
    PRIMARY KEY (runner, device_id, metric)
);
