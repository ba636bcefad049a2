-- Tenant Manager: a tenant's first administrator, kept (sealed, as JSON) only until its realm
-- is provisioned and the user made, and a move of the tenant's realm to another Keycloak server:
-- `move_to` while the realm is being made there, `move_from` once the tenant switched and the
-- old realm is being removed.
ALTER TABLE tenants ADD COLUMN first_admin TEXT;
ALTER TABLE tenants ADD COLUMN move_from BIGINT;
ALTER TABLE tenants ADD COLUMN move_to BIGINT;
