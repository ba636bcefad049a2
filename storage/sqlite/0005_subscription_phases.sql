-- Tenant Manager: subscriptions in time. A tenant has one subscription, and its
-- `subscription_type` is the subscription's (kept in step in the transaction of either write).
-- `subscription_phases` holds, per subscribed tenant, the phase of its subscription as last
-- applied (NOT_STARTED, ACTIVE, EXPIRED) and when it changes next: a background sweep on every
-- replica takes the due rows and moves each on once, with its `updated` event.
CREATE TABLE subscription_phases (
    tenant_id  TEXT   PRIMARY KEY,
    phase      TEXT   NOT NULL,
    next_ms    BIGINT,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX subscription_phases_due ON subscription_phases (next_ms);

-- Subscriptions written before: one without a type takes its tenant's, then every subscribed
-- tenant takes its subscription's type (the latest written, where an older database has several).
UPDATE catalog SET body = json_set(body, '$.subscription_type',
        (SELECT t.subscription_type FROM tenants t
          WHERE t.id = substr(catalog.id, 1, instr(catalog.id, '/') - 1)))
 WHERE kind = 'tenant-subscription'
   AND json_extract(body, '$.subscription_type') IS NULL
   AND EXISTS (SELECT 1 FROM tenants t
                WHERE t.id = substr(catalog.id, 1, instr(catalog.id, '/') - 1));
UPDATE tenants SET subscription_type =
        (SELECT json_extract(c.body, '$.subscription_type') FROM catalog c
          WHERE c.kind = 'tenant-subscription'
            AND substr(c.id, 1, instr(c.id, '/') - 1) = tenants.id
          ORDER BY c.updated_ms DESC, c.id DESC LIMIT 1)
 WHERE EXISTS (SELECT 1 FROM catalog c
                WHERE c.kind = 'tenant-subscription'
                  AND substr(c.id, 1, instr(c.id, '/') - 1) = tenants.id
                  AND json_extract(c.body, '$.subscription_type') IS NOT NULL);
-- Every subscribed tenant is due at once: the sweep finds its phase (and an end that passed).
INSERT OR IGNORE INTO subscription_phases (tenant_id, phase, next_ms, updated_ms)
    SELECT substr(id, 1, instr(id, '/') - 1), 'ACTIVE', 0, 0
      FROM catalog WHERE kind = 'tenant-subscription';
