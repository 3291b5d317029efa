-- Device identity and access control: per-device MQTT credentials, MQTT
-- service accounts, and the audit log.  Secrets are never stored: only their
-- hash, in Mosquitto's own password-file format ($7$: PBKDF2-SHA512), so the
-- broker's password file is generated from these rows as they are.
-- See streetsense/identity/.

-- One row per credential ever issued to a device.  Rotation revokes the old row
-- and adds a new one in the same transaction; at most one row per device is
-- active (revoked_at IS NULL).  The MQTT username is "<tenant>.<device_id>"
-- ('.' is not allowed in ids, so it is unambiguous and never collides with a
-- service account, whose names start with "svc_").
CREATE TABLE device_credentials (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_pk     bigint NOT NULL REFERENCES devices (id),
    mqtt_username text NOT NULL CHECK (mqtt_username ~ '^[a-z0-9][a-z0-9-]{0,63}\.[a-z0-9][a-z0-9-]{0,63}$'),
    secret_hash   text NOT NULL CHECK (secret_hash ~ '^\$7\$[0-9]+\$[A-Za-z0-9+/]+=*\$[A-Za-z0-9+/]+=*$'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text NOT NULL,
    rotated_at    timestamptz,       -- superseded by a newer credential (then also revoked)
    revoked_at    timestamptz,       -- no longer accepted: rotation, revocation, retirement
    CHECK (rotated_at IS NULL OR revoked_at IS NOT NULL)
);
CREATE UNIQUE INDEX device_credentials_one_active ON device_credentials (device_pk) WHERE revoked_at IS NULL;
CREATE UNIQUE INDEX device_credentials_username_active ON device_credentials (mqtt_username) WHERE revoked_at IS NULL;
CREATE INDEX device_credentials_device ON device_credentials (device_pk, created_at);

-- MQTT users of the backend.  role decides the generated ACL:
--   ingest    read ss/v1/+/+/up and status (plain or $share subscriptions)
--   gateway   one tenant: publish up/status/ack and read cfg/cmd for its devices
--   api       write cfg/cmd, read status/ack (all tenants, or one)
--   observer  read everything under ss/v1/ (monitoring, debugging)
CREATE TABLE service_accounts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username    text NOT NULL UNIQUE CHECK (username ~ '^svc_[a-z0-9][a-z0-9_-]{0,59}$'),
    role        text NOT NULL CHECK (role IN ('ingest', 'gateway', 'api', 'observer')),
    tenant      text REFERENCES tenants (id),
    secret_hash text NOT NULL CHECK (secret_hash ~ '^\$7\$[0-9]+\$[A-Za-z0-9+/]+=*\$[A-Za-z0-9+/]+=*$'),
    description text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text NOT NULL,
    rotated_at  timestamptz,
    revoked_at  timestamptz,
    CHECK (role <> 'gateway' OR tenant IS NOT NULL),
    CHECK (role <> 'ingest' OR tenant IS NULL)
);

-- Who changed which device or credential, when.  Append-only.
CREATE TABLE audit_log (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor    text NOT NULL CHECK (actor <> ''),
    action   text NOT NULL CHECK (action ~ '^[a-z_]+\.[a-z_]+$'),
    tenant   text,
    subject  text NOT NULL,
    details  jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_subject ON audit_log (tenant, subject, at);
CREATE INDEX audit_log_at ON audit_log (at);

CREATE FUNCTION ss_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END $$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION ss_audit_append_only();

-- The acting person for triggers: SET LOCAL streetsense.actor = '...' in the
-- transaction (the identity tools do), else the database user.
CREATE FUNCTION ss_actor() RETURNS text LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('streetsense.actor', true), ''), 'db:' || session_user)
$$;

-- A device leaving service (retired, revoked) loses its credential at once,
-- whichever path changed its status (API, CLI, SQL); every status change is
-- audited.  The broker stops accepting it at its next sync + reload.
CREATE FUNCTION ss_device_status_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    n integer := 0;
BEGIN
    IF NEW.status IN ('retired', 'revoked') THEN
        UPDATE device_credentials SET revoked_at = now()
            WHERE device_pk = NEW.id AND revoked_at IS NULL;
        GET DIAGNOSTICS n = ROW_COUNT;
    END IF;
    INSERT INTO audit_log (actor, action, tenant, subject, details)
        VALUES (ss_actor(), 'device.status', NEW.tenant, NEW.device_id,
                jsonb_build_object('from', OLD.status, 'to', NEW.status, 'credentials_revoked', n));
    RETURN NEW;
END $$;
CREATE TRIGGER devices_status_changed AFTER UPDATE OF status ON devices
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION ss_device_status_changed();
