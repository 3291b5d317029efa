-- Access control: API principals (bearer tokens / API keys, hashed at rest),
-- the tenant scope of the database roles that are subject to row-level
-- security, and the functions the policies use.  See api/auth.py and
-- ingest/migrate.py (secure_tables, which puts the policies on every table
-- after all migrations, so tables added later are covered too).
--
-- Roles (cluster-wide, created here if missing):
--   streetsense_api         NOLOGIN; the API does SET ROLE to it on every
--                           pooled connection and binds each request's tenant
--                           with set_config('streetsense.tenant', ...).
--   streetsense_datasource  NOLOGIN group of the per-tenant login roles made by
--                           `streetsense db datasource-role` (Grafana).  Their
--                           tenant is bound to the role itself (ss_role_tenants),
--                           never to a setting the session could change.
-- The owner (migrations, ingest, alerts runner) is not subject to RLS.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'streetsense_api') THEN
        BEGIN
            CREATE ROLE streetsense_api NOLOGIN NOBYPASSRLS;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;   -- another database's migrate won the race
        END;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'streetsense_datasource') THEN
        BEGIN
            CREATE ROLE streetsense_datasource NOLOGIN NOBYPASSRLS;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END;
    END IF;
    IF NOT pg_has_role(current_user, 'streetsense_api', 'MEMBER') THEN
        EXECUTE format('GRANT streetsense_api TO %I', current_user);
    END IF;
END $$;

-- One row per API credential.  The token is "ss_<key_id>_<secret>"; only the
-- SHA-256 of the whole token is kept (the token is random, 256 bits, so a
-- fast hash is right: there is nothing to brute-force), and key_id finds the
-- row.  tenant NULL = platform-wide, for admins only.
CREATE TABLE api_tokens (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key_id       text NOT NULL UNIQUE CHECK (key_id ~ '^[0-9a-f]{12}$'),
    token_hash   bytea NOT NULL CHECK (length(token_hash) = 32),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    role         text NOT NULL CHECK (role IN ('admin', 'operations', 'field_engineer', 'crew', 'resident',
                                                'integration')),
    tenant       text REFERENCES tenants (id),
    household    text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text NOT NULL,
    expires_at   timestamptz,
    revoked_at   timestamptz,
    revoked_by   text,
    last_used_at timestamptz,
    CHECK (tenant IS NOT NULL OR role = 'admin'),
    CHECK ((role = 'resident') = (household IS NOT NULL))
);

-- The tenant of each tenant-bound login role (Grafana datasource roles).
CREATE TABLE ss_role_tenants (
    role        name PRIMARY KEY,
    tenant      text NOT NULL REFERENCES tenants (id),
    created_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE ss_role_tenants ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_row ON ss_role_tenants USING (role = current_user);
GRANT SELECT ON ss_role_tenants TO streetsense_datasource, streetsense_api;

-- Whether the current role may see rows of tenant t.  The API role sees the
-- tenant bound to the request ('*' = every tenant, for platform admins and
-- public open data); a tenant-bound login role sees its own tenant; any other
-- role subject to RLS sees nothing.  Not SECURITY DEFINER: it must see the
-- caller's current_user.  Table names are schema-qualified (and the bodies
-- made with format()), so a session cannot shadow them with temporary tables.
DO $do$
BEGIN
    EXECUTE format($f$
        CREATE FUNCTION ss_tenant_visible(t text) RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE AS $$
            SELECT CASE WHEN current_user = 'streetsense_api'
                        THEN coalesce(current_setting('streetsense.tenant', true) = '*'
                                      OR t = nullif(current_setting('streetsense.tenant', true), ''), false)
                        ELSE coalesce(t = (SELECT r.tenant FROM %1$I.ss_role_tenants r WHERE r.role = current_user),
                                      false)
                   END
        $$$f$, current_schema());
    -- A row keyed by the device surrogate is visible when its device is.
    EXECUTE format($f$
        CREATE FUNCTION ss_device_visible(pk bigint) RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE AS $$
            SELECT EXISTS (SELECT 1 FROM %1$I.devices d WHERE d.id = pk AND %1$I.ss_tenant_visible(d.tenant))
        $$$f$, current_schema());
END $do$;

-- Token lookup for the API role, which cannot read api_tokens itself.
-- last_used_at is written at most once a minute per token.
CREATE FUNCTION ss_api_principal(p_key_id text, p_hash bytea)
RETURNS TABLE (id bigint, name text, role text, tenant text, household text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    RETURN QUERY
        UPDATE api_tokens t SET last_used_at = now()
        WHERE t.key_id = p_key_id AND t.token_hash = p_hash AND t.revoked_at IS NULL
          AND (t.expires_at IS NULL OR t.expires_at > now())
          AND (t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute')
        RETURNING t.id, t.name, t.role, t.tenant, t.household;
    IF NOT FOUND THEN
        RETURN QUERY
            SELECT t.id, t.name, t.role, t.tenant, t.household FROM api_tokens t
            WHERE t.key_id = p_key_id AND t.token_hash = p_hash AND t.revoked_at IS NULL
              AND (t.expires_at IS NULL OR t.expires_at > now());
    END IF;
END $$;
REVOKE EXECUTE ON FUNCTION ss_api_principal(text, bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ss_api_principal(text, bytea) TO streetsense_api;

-- Relations that cannot carry RLS (continuous aggregates, materialized views,
-- compressed hypertables) are reached by the restricted roles only through
-- security_barrier views of the same name in this schema, which filter by
-- tenant explicitly (ingest/migrate.py makes them).  Both restricted roles put
-- it first on their search_path, so the API's statements serve both variants.
CREATE SCHEMA IF NOT EXISTS ss_restricted;
GRANT USAGE ON SCHEMA ss_restricted TO streetsense_api, streetsense_datasource;

-- A device leaving service revokes its MQTT credential (0003's trigger).  The
-- API role cannot touch device_credentials, so the trigger runs as the owner;
-- it acts only on the row whose status the caller was allowed to change, and
-- ss_actor() still names the caller (the API sets streetsense.actor).
ALTER FUNCTION ss_device_status_changed() SECURITY DEFINER SET search_path FROM CURRENT;
