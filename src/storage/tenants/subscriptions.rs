//! Tenants' subscriptions: the catalogue entry of each (one a tenant) kept of one
//! `subscription_type` with its tenant, and its phase (not started, active, expired), moved on
//! by a sweep that any number of replicas may run at once.

use super::catalog::{CatalogRecord, ENTRY_COLS, entry, get_entry_tx, update_entry_tx};
use super::locking;
use super::outbox::{OutboxEvent, emit};
use super::tenant::{find_tenant_tx, get_tenant_tx};
use crate::storage::{Database, StorageError, Tx, Val};

/// A subscribed tenant whose subscription's phase is due to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuePhase {
    pub tenant_id: String,
    /// The phase as last applied.
    pub phase: String,
    pub next_ms: i64,
}

/// The phases of tenants' subscriptions (not started, active, expired), moved on by a sweep
/// that any number of replicas may run at once.
pub trait SubscriptionStore {
    /// Subscribed tenants whose phase changes at or before `now_ms`, the longest due first.
    fn due_phases(&self, now_ms: i64, limit: i64) -> Result<Vec<DuePhase>, StorageError>;
    /// Move a tenant's phase on, once: only when it is still due at `due.next_ms` as listed
    /// (another replica, or a write to the subscription, may have moved it meanwhile). The
    /// event is written when the phase differs from the one applied before. Whether it moved.
    fn advance_phase(
        &self,
        due: &DuePhase,
        phase: &str,
        next_ms: Option<i64>,
        event: Option<&OutboxEvent>,
        now_ms: i64,
    ) -> Result<bool, StorageError>;
}

impl SubscriptionStore for Database {
    fn due_phases(&self, now_ms: i64, limit: i64) -> Result<Vec<DuePhase>, StorageError> {
        self.tx(|tx| {
            tx.query(
                "SELECT tenant_id, phase, next_ms FROM subscription_phases \
                 WHERE next_ms IS NOT NULL AND next_ms <= $1 ORDER BY next_ms, tenant_id LIMIT $2",
                &[Val::I64(now_ms), Val::I64(limit)],
            )?
            .iter()
            .map(|r| {
                Ok(DuePhase {
                    tenant_id: r.string(0)?,
                    phase: r.string(1)?,
                    next_ms: r.i64(2)?,
                })
            })
            .collect()
        })
    }

    fn advance_phase(
        &self,
        due: &DuePhase,
        phase: &str,
        next_ms: Option<i64>,
        event: Option<&OutboxEvent>,
        now_ms: i64,
    ) -> Result<bool, StorageError> {
        self.tx(|tx| {
            let lock = locking(tx, " FOR UPDATE");
            let rows = tx.query(
                &format!(
                    "SELECT phase, next_ms FROM subscription_phases WHERE tenant_id = $1{lock}"
                ),
                &[Val::from(&due.tenant_id)],
            )?;
            let Some(r) = rows.first() else {
                return Ok(false);
            };
            let (applied, next) = (r.string(0)?, r.opt_i64(1)?);
            if next != Some(due.next_ms) {
                return Ok(false);
            }
            tx.execute(
                "UPDATE subscription_phases SET phase = $1, next_ms = $2, updated_ms = $3 \
                 WHERE tenant_id = $4",
                &[
                    Val::from(phase),
                    next_ms.map_or(Val::Null, Val::I64),
                    Val::I64(now_ms),
                    Val::from(&due.tenant_id),
                ],
            )?;
            if applied != phase
                && let Some(e) = event
                && get_tenant_tx(tx, &due.tenant_id).is_ok()
            {
                emit(tx, e, now_ms)?;
            }
            Ok(true)
        })
    }
}

/// The subscriptions of a tenant (one; an older database may hold several).
pub(super) fn subscriptions_tx(
    tx: &mut dyn Tx,
    tenant: &str,
) -> Result<Vec<CatalogRecord>, StorageError> {
    tx.query(
        &format!(
            "SELECT {ENTRY_COLS} FROM catalog \
             WHERE kind = 'tenant-subscription' AND id LIKE $1 ORDER BY id"
        ),
        &[Val::from(format!("{}/%", tenant.replace(['%', '_'], "")))],
    )?
    .iter()
    .map(entry)
    .collect()
}

fn body_of(e: &CatalogRecord) -> Result<serde_json::Map<String, serde_json::Value>, StorageError> {
    match serde_json::from_str(&e.body) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        _ => Err(StorageError::Internal(format!(
            "{} `{}`: the stored body is not a JSON object",
            e.kind, e.id
        ))),
    }
}

/// The tenant's new `subscription_type` on its subscriptions too (same transaction).
pub(super) fn subscription_type_tx(
    tx: &mut dyn Tx,
    tenant: &str,
    subscription_type: &str,
    now_ms: i64,
) -> Result<(), StorageError> {
    for e in subscriptions_tx(tx, tenant)? {
        let mut m = body_of(&e)?;
        m.insert(
            "subscription_type".into(),
            serde_json::Value::from(subscription_type),
        );
        update_entry_tx(
            tx,
            &CatalogRecord {
                body: serde_json::Value::Object(m).to_string(),
                updated_ms: now_ms,
                ..e
            },
        )?;
    }
    Ok(())
}

/// A tenant's subscription `id` was written ([`super::EntryEffect::Subscribe`]): its type and
/// the tenant's made one, its phase kept for the sweep.
pub(super) fn subscribe_tx(
    tx: &mut dyn Tx,
    tenant: &str,
    id: &str,
    phase: &str,
    next_ms: Option<i64>,
    now_ms: i64,
) -> Result<(), StorageError> {
    let Some(t) = find_tenant_tx(tx, tenant)? else {
        return Ok(());
    };
    let e = get_entry_tx(tx, "tenant-subscription", id)?;
    let mut m = body_of(&e)?;
    match m
        .get("subscription_type")
        .and_then(serde_json::Value::as_str)
    {
        None => {
            m.insert(
                "subscription_type".into(),
                serde_json::Value::from(t.subscription_type.clone()),
            );
            update_entry_tx(
                tx,
                &CatalogRecord {
                    body: serde_json::Value::Object(m).to_string(),
                    ..e
                },
            )?;
        }
        Some(s) if s != t.subscription_type => {
            tx.execute(
                "UPDATE tenants SET subscription_type = $1, updated_ms = $2, \
                 version = version + 1 WHERE id = $3",
                &[Val::from(s), Val::I64(now_ms), Val::from(tenant)],
            )?;
        }
        Some(_) => {}
    }
    tx.execute(
        "INSERT INTO subscription_phases (tenant_id, phase, next_ms, updated_ms) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id) DO UPDATE SET \
         phase = excluded.phase, next_ms = excluded.next_ms, updated_ms = excluded.updated_ms",
        &[
            Val::from(tenant),
            Val::from(phase),
            next_ms.map_or(Val::Null, Val::I64),
            Val::I64(now_ms),
        ],
    )?;
    Ok(())
}

/// A tenant's subscription was removed: its phase goes.
pub(super) fn unsubscribe_tx(tx: &mut dyn Tx, tenant: &str) -> Result<(), StorageError> {
    tx.execute(
        "DELETE FROM subscription_phases WHERE tenant_id = $1",
        &[Val::from(tenant)],
    )?;
    Ok(())
}
