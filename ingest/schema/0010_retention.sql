-- Retention per data class (streetsense/retention.py, `streetsense retention show|apply`).
--
-- Each data class has a platform default (tenant IS NULL) that a council may
-- override with its own row.  `streetsense retention apply` deletes (or, for
-- withdrawn consents, redacts) what is older than the policy, in batches, and
-- writes what it did to audit_log.  audit_log stays append-only: a DELETE is
-- let through only inside the retention job (transaction flag
-- streetsense.retention = 'on') and only for rows past the audit_log policy of
-- their tenant.  Same file for both storage variants.

CREATE TABLE IF NOT EXISTS retention_classes (
    data_class  text PRIMARY KEY CHECK (data_class ~ '^[a-z_]+$'),
    action      text NOT NULL CHECK (action IN ('delete', 'redact')),
    description text NOT NULL
);

INSERT INTO retention_classes (data_class, action, description) VALUES
    ('household_readings', 'delete', 'readings (and hourly/daily rollups) of sensors on household bins'),
    ('public_readings',    'delete', 'readings of street bins, air, noise and road sensors'),
    ('quarantine_raw',     'delete', 'quarantined messages with their raw bytes'),
    ('crew_reports',       'delete', 'crew reports from the collection app'),
    ('route_plans',        'delete', 'stored route plans with their inputs (once no kept report refers to them)'),
    ('audit_log',          'delete', 'the audit log'),
    ('withdrawn_consents', 'redact', 'recipient name, role, contact and evidence of withdrawn welfare consents, '
                                     'counted from the withdrawal')
ON CONFLICT (data_class) DO NOTHING;

CREATE TABLE IF NOT EXISTS retention_policies (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant      text REFERENCES tenants (id),          -- NULL: the platform default
    data_class  text NOT NULL REFERENCES retention_classes (data_class),
    keep        interval NOT NULL CHECK (keep > interval '0'),
    basis       text NOT NULL DEFAULT '',              -- why this long (statute, council policy)
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text NOT NULL DEFAULT ss_actor(),
    -- the audit trail of who did what is kept at least a year, whatever is edited
    CHECK (data_class <> 'audit_log' OR keep >= interval '1 year')
);
CREATE UNIQUE INDEX IF NOT EXISTS retention_policies_one ON retention_policies (coalesce(tenant, ''), data_class);

INSERT INTO retention_policies (tenant, data_class, keep, basis, updated_by) VALUES
    (NULL, 'household_readings', interval '13 months', 'a year of collection history and one month to review it', 'migration'),
    (NULL, 'public_readings',    interval '10 years',  'environmental record (air, noise, roads)', 'migration'),
    (NULL, 'quarantine_raw',     interval '90 days',   'time to register a device and replay', 'migration'),
    (NULL, 'crew_reports',       interval '2 years',   'service performance record', 'migration'),
    (NULL, 'route_plans',        interval '2 years',   'service performance record', 'migration'),
    (NULL, 'audit_log',          interval '6 years',   'limitation period (Limitation Act 1980)', 'migration'),
    (NULL, 'withdrawn_consents', interval '1 year',    'evidence of what was agreed, then redacted', 'migration')
ON CONFLICT DO NOTHING;

-- The keep interval of a class for a tenant: its own policy, else the default.
CREATE OR REPLACE FUNCTION ss_retention_keep(p_tenant text, p_class text) RETURNS interval
LANGUAGE sql STABLE AS $$
    SELECT keep FROM retention_policies
    WHERE data_class = p_class AND (tenant = p_tenant OR tenant IS NULL)
    ORDER BY tenant IS NULL LIMIT 1
$$;

-- Every policy change is audited, whichever path made it.
CREATE OR REPLACE FUNCTION ss_retention_policy_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r retention_policies%ROWTYPE;
BEGIN
    r := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    INSERT INTO audit_log (actor, action, tenant, subject, details)
        VALUES (ss_actor(), 'retention.policy', r.tenant, r.data_class,
                jsonb_build_object('op', lower(TG_OP), 'keep', r.keep::text,
                                   'was', CASE WHEN TG_OP = 'UPDATE' THEN OLD.keep::text END, 'basis', r.basis));
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS retention_policies_audit ON retention_policies;
CREATE TRIGGER retention_policies_audit AFTER UPDATE OR DELETE ON retention_policies
    FOR EACH ROW EXECUTE FUNCTION ss_retention_policy_changed();
DROP TRIGGER IF EXISTS retention_policies_audit_insert ON retention_policies;
CREATE TRIGGER retention_policies_audit_insert AFTER INSERT ON retention_policies
    FOR EACH ROW WHEN (NEW.updated_by <> 'migration') EXECUTE FUNCTION ss_retention_policy_changed();

-- audit_log: append-only, except the retention job removing rows past their policy.
CREATE OR REPLACE FUNCTION ss_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('streetsense.retention', true) = 'on'
       AND OLD.at < now() - ss_retention_keep(OLD.tenant, 'audit_log') THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only';
END $$;

-- Withdrawn consents are redacted a year after withdrawal (the row stays: the
-- register still shows that a consent existed, for which household, and when).
ALTER TABLE consents ADD COLUMN IF NOT EXISTS redacted_at timestamptz;
CREATE INDEX IF NOT EXISTS consents_withdrawn ON consents (withdrawn_at) WHERE withdrawn_at IS NOT NULL AND redacted_at IS NULL;
CREATE INDEX IF NOT EXISTS crew_reports_received ON crew_reports (received_at);
CREATE INDEX IF NOT EXISTS route_plans_created ON route_plans (created_at);
