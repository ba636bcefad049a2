-- The IAM directory: users, nested groups, memberships, policy attachments, resources, pools.
ALTER TABLE policies ADD COLUMN resource_krn TEXT;

CREATE TABLE users (
    tenant           TEXT    NOT NULL,
    krn              TEXT    NOT NULL,
    username         TEXT    NOT NULL,
    path             TEXT    NOT NULL,
    email            TEXT,
    first_name       TEXT,
    last_name        TEXT,
    enabled          BOOLEAN NOT NULL,
    auth_id          TEXT,
    password_hash    TEXT,
    metadata         TEXT    NOT NULL,
    required_actions TEXT    NOT NULL,
    version          BIGINT  NOT NULL,
    created_ms       BIGINT  NOT NULL,
    updated_ms       BIGINT  NOT NULL,
    PRIMARY KEY (tenant, krn)
);
CREATE UNIQUE INDEX users_username ON users (tenant, username);
CREATE UNIQUE INDEX users_email ON users (tenant, email);
CREATE INDEX users_auth_id ON users (tenant, auth_id);

CREATE TABLE user_groups (
    tenant       TEXT   NOT NULL,
    krn          TEXT   NOT NULL,
    name         TEXT   NOT NULL,
    display_name TEXT,
    parent_krn   TEXT,
    path         TEXT   NOT NULL,
    metadata     TEXT   NOT NULL,
    version      BIGINT NOT NULL,
    created_ms   BIGINT NOT NULL,
    updated_ms   BIGINT NOT NULL,
    PRIMARY KEY (tenant, krn),
    FOREIGN KEY (tenant, parent_krn) REFERENCES user_groups (tenant, krn)
);
CREATE INDEX user_groups_parent ON user_groups (tenant, parent_krn);

CREATE TABLE group_members (
    tenant    TEXT NOT NULL,
    group_krn TEXT NOT NULL,
    user_krn  TEXT NOT NULL,
    PRIMARY KEY (tenant, group_krn, user_krn),
    FOREIGN KEY (tenant, group_krn) REFERENCES user_groups (tenant, krn) ON DELETE CASCADE,
    FOREIGN KEY (tenant, user_krn) REFERENCES users (tenant, krn) ON DELETE CASCADE
);
CREATE INDEX group_members_user ON group_members (tenant, user_krn);

CREATE TABLE policy_attachments (
    tenant     TEXT NOT NULL,
    policy_krn TEXT NOT NULL,
    target_krn TEXT NOT NULL,
    PRIMARY KEY (tenant, policy_krn, target_krn),
    FOREIGN KEY (tenant, policy_krn) REFERENCES policies (tenant, krn) ON DELETE CASCADE
);
CREATE INDEX policy_attachments_target ON policy_attachments (tenant, target_krn);

CREATE TABLE resources (
    tenant        TEXT    NOT NULL,
    krn           TEXT    NOT NULL,
    service       TEXT    NOT NULL,
    resource_type TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    path          TEXT    NOT NULL,
    display_name  TEXT,
    description   TEXT,
    enabled       BOOLEAN NOT NULL,
    metadata      TEXT    NOT NULL,
    version       BIGINT  NOT NULL,
    created_ms    BIGINT  NOT NULL,
    updated_ms    BIGINT  NOT NULL,
    PRIMARY KEY (tenant, krn)
);
CREATE INDEX resources_type ON resources (tenant, service, resource_type);

CREATE TABLE pools (
    tenant       TEXT   NOT NULL,
    krn          TEXT   NOT NULL,
    name         TEXT   NOT NULL,
    display_name TEXT,
    description  TEXT,
    version      BIGINT NOT NULL,
    created_ms   BIGINT NOT NULL,
    updated_ms   BIGINT NOT NULL,
    PRIMARY KEY (tenant, krn)
);

CREATE TABLE pool_members (
    tenant       TEXT NOT NULL,
    pool_krn     TEXT NOT NULL,
    resource_krn TEXT NOT NULL,
    PRIMARY KEY (tenant, pool_krn, resource_krn),
    FOREIGN KEY (tenant, pool_krn) REFERENCES pools (tenant, krn) ON DELETE CASCADE,
    FOREIGN KEY (tenant, resource_krn) REFERENCES resources (tenant, krn) ON DELETE CASCADE
);
CREATE INDEX pool_members_resource ON pool_members (tenant, resource_krn);
