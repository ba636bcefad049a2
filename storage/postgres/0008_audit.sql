-- IAM: the audit trail. One row per committed change of an entity, written in the transaction
-- of the change (a write that rolls back leaves none). Who: the principal (KRN, else the token
-- subject, `anonymous` with security off, `service` for the service's own writes), the
-- caller's tenant, the request id and the source address. What: the action, the entity, its
-- version before and after (NULL: did not exist / does not any more / unchanged relation), the
-- names of the fields that changed (JSON array) and details without secrets (JSON object).
CREATE TABLE audit (
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
CREATE INDEX audit_tenant ON audit (tenant, id);
CREATE INDEX audit_entity ON audit (tenant, entity, id);
CREATE INDEX audit_principal ON audit (tenant, principal, id);
CREATE INDEX audit_action ON audit (tenant, action, id);
CREATE INDEX audit_time ON audit (tenant, at_ms);
-- Every version a policy (identity or resource-based) had, written with the version itself:
-- the policy history and what a restore copies from. Kept after the policy is deleted.
CREATE TABLE policy_versions (
    tenant       TEXT NOT NULL,
    krn          TEXT NOT NULL,
    version      BIGINT NOT NULL,
    name         TEXT NOT NULL,
    kind         TEXT NOT NULL,
    description  TEXT,
    statements   TEXT NOT NULL,
    resource_krn TEXT,
    at_ms        BIGINT NOT NULL,
    principal    TEXT NOT NULL,
    PRIMARY KEY (tenant, krn, version)
);
