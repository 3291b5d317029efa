-- Collection planning (routing/): each day's plan stored with the inputs it was
-- made from (bin states, open alerts, parameters, fleet, closed streets), so a
-- plan can be explained and re-made; re-plans are new rows pointing at their
-- parent.  Crew reports from the crew app (collected / not out / blocked /
-- contaminated / damaged), idempotent per client-generated id so the app's
-- offline queue can resend safely.

CREATE TABLE route_plans (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant      text NOT NULL REFERENCES tenants (id),
    plan_date   date NOT NULL,
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'superseded')),
    parent_id   bigint REFERENCES route_plans (id),
    reason      text NOT NULL DEFAULT 'planned',     -- planned / blocked_street / breakdown / manual
    inputs      jsonb NOT NULL,
    plan        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX route_plans_tenant_date ON route_plans (tenant, plan_date, id);

CREATE TABLE crew_reports (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    plan_id     bigint NOT NULL REFERENCES route_plans (id),
    tenant      text NOT NULL REFERENCES tenants (id),
    route_id    text NOT NULL,
    asset_id    text NOT NULL,
    status      text NOT NULL CHECK (status IN ('collected', 'not_out', 'blocked', 'contaminated', 'damaged')),
    client_id   text NOT NULL CHECK (length(client_id) BETWEEN 1 AND 64),
    reported_at timestamptz NOT NULL,                -- on the crew's phone (may be long before receipt)
    received_at timestamptz NOT NULL DEFAULT now(),
    note        text NOT NULL DEFAULT '',
    edge_id     integer,                             -- street segment (blocked reports)
    replan_id   bigint REFERENCES route_plans (id),  -- the re-plan a blocked report triggered
    UNIQUE (plan_id, client_id)
);
CREATE INDEX crew_reports_asset ON crew_reports (tenant, asset_id, reported_at);
