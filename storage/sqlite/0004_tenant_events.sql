-- Tenant Manager: an outbox event may be held back until `not_before_ms`. The event of a change
-- made outside the database (a tenant user in Keycloak) is written before the change and released
-- when it is done. If the process dies in between, it goes out when the hold ends.
ALTER TABLE outbox ADD COLUMN not_before_ms BIGINT;
