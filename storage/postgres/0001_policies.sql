-- Policies and per-tenant revisions: the first capability every IAM decision needs.
CREATE TABLE tenant_revisions (
    tenant   TEXT   PRIMARY KEY,
    revision BIGINT NOT NULL
);

CREATE TABLE policies (
    tenant      TEXT    NOT NULL,
    krn         TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    description TEXT,
    statements  TEXT    NOT NULL,
    origin      TEXT    NOT NULL,
    version     BIGINT  NOT NULL,
    created_ms  BIGINT  NOT NULL,
    updated_ms  BIGINT  NOT NULL,
    PRIMARY KEY (tenant, krn)
);

CREATE INDEX policies_tenant_name ON policies (tenant, name);
