-- Tenant Manager: tenants, their durable provisioning tasks, the event outbox, Keycloak
-- servers, and the catalogue of templates, scopes, roles, default resources, versions, mappings,
-- package types, subscriptions and IDPs (one table, rows by kind, bodies as JSON text).
CREATE TABLE keycloak_servers (
    id            BIGINT  PRIMARY KEY,
    url           TEXT    NOT NULL,
    admin_realm   TEXT    NOT NULL,
    username      TEXT,
    password      TEXT,
    client_id     TEXT,
    client_secret TEXT,
    is_default    BOOLEAN NOT NULL,
    created_ms    BIGINT  NOT NULL,
    updated_ms    BIGINT  NOT NULL
);

CREATE TABLE tenants (
    id                      TEXT    PRIMARY KEY,
    realm_name              TEXT    NOT NULL UNIQUE,
    client_frontend_id      TEXT    NOT NULL,
    client_backend_id       TEXT    NOT NULL,
    client_backend_secret   TEXT    NOT NULL,
    realm_template_version  BIGINT  NOT NULL,
    realm_scopes_version    BIGINT  NOT NULL,
    client_backend_version  BIGINT  NOT NULL,
    client_frontend_version BIGINT  NOT NULL,
    roles_version           BIGINT  NOT NULL,
    resources_version       BIGINT  NOT NULL,
    keycloak_server_id      BIGINT  REFERENCES keycloak_servers (id),
    opendistro_enabled      BOOLEAN NOT NULL,
    subscription_type       TEXT    NOT NULL,
    status                  TEXT    NOT NULL,
    failure_reason          TEXT,
    display_name            TEXT,
    version                 BIGINT  NOT NULL,
    created_ms              BIGINT  NOT NULL,
    updated_ms              BIGINT  NOT NULL
);
CREATE INDEX tenants_status ON tenants (status);

CREATE TABLE tasks (
    id              BIGSERIAL PRIMARY KEY,
    tenant_id       TEXT   NOT NULL,
    kind            TEXT   NOT NULL,
    attempts        BIGINT NOT NULL,
    max_attempts    BIGINT NOT NULL,
    next_run_ms     BIGINT NOT NULL,
    locked_by       TEXT,
    locked_until_ms BIGINT,
    last_error      TEXT,
    created_ms      BIGINT NOT NULL
);
CREATE INDEX tasks_due ON tasks (next_run_ms);

CREATE TABLE outbox (
    id           BIGSERIAL PRIMARY KEY,
    subject      TEXT   NOT NULL,
    payload      TEXT   NOT NULL,
    created_ms   BIGINT NOT NULL,
    published_ms BIGINT
);
CREATE INDEX outbox_pending ON outbox (published_ms, id);

CREATE TABLE catalog (
    kind       TEXT   NOT NULL,
    id         TEXT   NOT NULL,
    body       TEXT   NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (kind, id)
);
