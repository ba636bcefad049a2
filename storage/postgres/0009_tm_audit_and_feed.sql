-- Tenant Manager: its audit trail, in a table of the same shape as IAM's `audit` (0008) but of
-- its own, so that each service reads, filters and prunes only its own records even when both
-- share one database. One row per committed change (tenants, the catalogue, Keycloak servers,
-- tenant users), written in the transaction of the change, `service` for the Tenant Manager's
-- own writes (bootstrap, the provisioning worker). Never a secret: field names only.
CREATE TABLE tm_audit (
    id             BIGSERIAL PRIMARY KEY,
    tenant         TEXT NOT NULL,
    at_ms          BIGINT NOT NULL,
    principal      TEXT NOT NULL,
    subject        TEXT,
    actor_tenant   TEXT,
    request_id     TEXT,
    source         TEXT,
    action         TEXT NOT NULL,
    entity         TEXT NOT NULL,
    version_before BIGINT,
    version_after  BIGINT,
    fields         TEXT NOT NULL,
    detail         TEXT NOT NULL
);
CREATE INDEX tm_audit_tenant ON tm_audit (tenant, id);
CREATE INDEX tm_audit_entity ON tm_audit (tenant, entity, id);
CREATE INDEX tm_audit_principal ON tm_audit (tenant, principal, id);
CREATE INDEX tm_audit_action ON tm_audit (tenant, action, id);
CREATE INDEX tm_audit_time ON tm_audit (tenant, at_ms);
-- The outbox carries the audit feed too: which service wrote a row, so that each service's
-- publisher sends its own (NULL: the Tenant Manager, as every row before this migration).
ALTER TABLE outbox ADD COLUMN origin TEXT;
