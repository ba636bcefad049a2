-- IAM: users and groups as members of pools (resource groups), beside the pools' resources.
-- A policy attached to a pool applies to the principals in it (and, through a group, to the
-- group's members) as it applies to the resources in it. Rows go with their pool (cascade) and
-- with their user or group (deleted in the same transaction as the principal).
CREATE TABLE pool_principals (
    tenant        TEXT NOT NULL,
    pool_krn      TEXT NOT NULL,
    principal_krn TEXT NOT NULL,
    PRIMARY KEY (tenant, pool_krn, principal_krn),
    FOREIGN KEY (tenant, pool_krn) REFERENCES pools (tenant, krn) ON DELETE CASCADE
);
CREATE INDEX pool_principals_principal ON pool_principals (tenant, principal_krn);
