//! The catalogue: shared entries (realm templates, packages, ...) and per-tenant ones
//! (`<tenant>/<name>`: IDPs, subscriptions), each write with what it does to tenants (a resync
//! task, `updated` events, a subscription's phase) in its transaction, recorded in the trail.

use serde_json::{Value, json};

use super::EventFor;
use super::outbox::emit;
use super::subscriptions::{subscribe_tx, subscriptions_tx, unsubscribe_tx};
use super::tasks::{NewTask, enqueue};
use super::tenant::{find_tenant_tx, get_tenant_tx, lock_tenant_tx};
use crate::storage::Change;
use crate::storage::query::{insert_row, one};
use crate::storage::{Database, Row, StorageError, Tx, Val};

/// A catalogue write.
#[derive(Debug, Clone, Copy)]
pub enum EntryWrite<'a> {
    Insert(&'a CatalogRecord),
    Update(&'a CatalogRecord),
    Delete { kind: &'a str, id: &'a str },
}

/// What a catalogue write does to tenants, in its own transaction.
#[derive(Debug, Clone, Copy)]
pub enum EntryEffect<'a> {
    /// Nothing (templates and other entries that apply to tenants made afterwards).
    None,
    /// The tenant's realm follows the entry (an IDP): an `AVAILABLE` tenant goes `UPDATING`
    /// with the task; a tenant being created or updated gets the task queued after its current
    /// one; a failed or deleted tenant reads the catalogue on its retry, or never.
    Resync { tenant: &'a str, task: &'a NewTask },
    /// The tenant's `updated` event (its subscription).
    Notify(&'a str),
    /// The `updated` event of every tenant subscribed to the package type.
    NotifySubscribers(&'a str),
    /// A tenant's subscription `id` was written: a second one of the tenant is refused
    /// (`Conflict` naming the first), the subscription's `subscription_type` and the tenant's are
    /// made one (a subscription without a type takes the tenant's, else the tenant takes the
    /// subscription's), the subscription's phase as of the write and when it changes next are
    /// kept for the expiry sweep, and the tenant's `updated` event is written.
    Subscribe {
        tenant: &'a str,
        id: &'a str,
        phase: &'a str,
        next_ms: Option<i64>,
    },
    /// A tenant's subscription was removed: its phase goes, the tenant's `updated` event is
    /// written.
    Unsubscribe(&'a str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogRecord {
    pub kind: String,
    pub id: String,
    /// JSON object.
    pub body: String,
    pub created_ms: i64,
    pub updated_ms: i64,
}

pub trait CatalogStore {
    fn insert_entry(&self, e: &CatalogRecord) -> Result<CatalogRecord, StorageError>;
    fn get_entry(&self, kind: &str, id: &str) -> Result<CatalogRecord, StorageError>;
    /// Every entry of a kind, ordered by id (catalogues are small).
    fn list_entries(&self, kind: &str) -> Result<Vec<CatalogRecord>, StorageError>;
    fn update_entry(&self, e: &CatalogRecord) -> Result<CatalogRecord, StorageError>;
    fn delete_entry(&self, kind: &str, id: &str) -> Result<(), StorageError>;
    /// Insert when absent (bootstrap); returns whether it was inserted.
    fn ensure_entry(&self, e: &CatalogRecord) -> Result<bool, StorageError>;
    /// [`CatalogStore::ensure_entry`] for each of `entries`, in one transaction; returns how
    /// many were inserted (each recorded in the trail: bootstrap's writes).
    fn ensure_entries(&self, entries: &[CatalogRecord]) -> Result<u64, StorageError>;
    /// A catalogue write and what it does to tenants (tasks, events), in one transaction; the
    /// entry as written (`None` for a delete).
    fn write_entry(
        &self,
        w: EntryWrite,
        effect: EntryEffect,
        events: EventFor,
    ) -> Result<Option<CatalogRecord>, StorageError>;
}

/// The tenant a catalogue entry belongs to: the one its id names (`<tenant>/<name>`: IDPs,
/// subscriptions), else `home` (the shared catalogue).
fn entry_tenant<'a>(home: &'a str, id: &'a str) -> &'a str {
    id.split_once('/').map_or(home, |(t, _)| t)
}

/// The top-level fields of a catalogue entry's body: names only (an IDP's `config` may hold a
/// client secret, a template anything).
fn entry_fields(before: Option<&CatalogRecord>, after: Option<&CatalogRecord>) -> Vec<String> {
    let map = |e: Option<&CatalogRecord>| -> serde_json::Map<String, Value> {
        e.and_then(|e| serde_json::from_str::<Value>(&e.body).ok())
            .and_then(|v| match v {
                Value::Object(m) => Some(m),
                _ => None,
            })
            .unwrap_or_default()
    };
    let (b, a) = (map(before), map(after));
    let mut out: Vec<String> = Vec::new();
    for (k, v) in &a {
        let was = b.get(k);
        let now_set = !v.is_null();
        if (before.is_none() && now_set) || (before.is_some() && was.unwrap_or(&Value::Null) != v) {
            out.push(k.clone());
        }
    }
    if before.is_some() && after.is_some() {
        for (k, v) in &b {
            if !a.contains_key(k) && !v.is_null() {
                out.push(k.clone());
            }
        }
    }
    out
}

fn entry_change(
    home: &str,
    verb: &str,
    kind: &str,
    id: &str,
    before: Option<&CatalogRecord>,
    after: Option<&CatalogRecord>,
) -> Change {
    Change::tm(
        entry_tenant(home, id),
        &format!("kaa:tenant:{kind}:{verb}"),
        &format!("{kind}/{id}"),
    )
    .fields(entry_fields(before, after))
}

/// The columns [`entry`] reads, in its order.
pub(super) const ENTRY_COLS: &str = "kind, id, body, created_ms, updated_ms";

pub(super) fn entry(r: &Row) -> Result<CatalogRecord, StorageError> {
    Ok(CatalogRecord {
        kind: r.string(0)?,
        id: r.string(1)?,
        body: r.string(2)?,
        created_ms: r.i64(3)?,
        updated_ms: r.i64(4)?,
    })
}

fn entry_params(e: &CatalogRecord) -> Vec<Val> {
    vec![
        Val::from(&e.kind),
        Val::from(&e.id),
        Val::from(&e.body),
        Val::I64(e.created_ms),
        Val::I64(e.updated_ms),
    ]
}

pub(super) fn get_entry_tx(
    tx: &mut dyn Tx,
    kind: &str,
    id: &str,
) -> Result<CatalogRecord, StorageError> {
    one(
        tx.query(
            &format!("SELECT {ENTRY_COLS} FROM catalog WHERE kind = $1 AND id = $2"),
            &[Val::from(kind), Val::from(id)],
        )?,
        entry,
    )
}

fn insert_entry_tx(tx: &mut dyn Tx, e: &CatalogRecord) -> Result<CatalogRecord, StorageError> {
    if get_entry_tx(tx, &e.kind, &e.id).is_ok() {
        return Err(StorageError::Conflict(format!(
            "{} `{}` exists",
            e.kind, e.id
        )));
    }
    insert_row(tx, "catalog", ENTRY_COLS, &entry_params(e))?;
    get_entry_tx(tx, &e.kind, &e.id)
}

pub(super) fn update_entry_tx(
    tx: &mut dyn Tx,
    e: &CatalogRecord,
) -> Result<CatalogRecord, StorageError> {
    get_entry_tx(tx, &e.kind, &e.id)?;
    tx.execute(
        "UPDATE catalog SET body = $1, updated_ms = $2 WHERE kind = $3 AND id = $4",
        &[
            Val::from(&e.body),
            Val::I64(e.updated_ms),
            Val::from(&e.kind),
            Val::from(&e.id),
        ],
    )?;
    get_entry_tx(tx, &e.kind, &e.id)
}

fn delete_entry_tx(tx: &mut dyn Tx, kind: &str, id: &str) -> Result<(), StorageError> {
    let n = tx.execute(
        "DELETE FROM catalog WHERE kind = $1 AND id = $2",
        &[Val::from(kind), Val::from(id)],
    )?;
    if n == 0 {
        Err(StorageError::NotFound)
    } else {
        Ok(())
    }
}

/// The `updated` event of a tenant, when it (still) exists.
fn notify_tx(
    tx: &mut dyn Tx,
    tenant: &str,
    events: EventFor,
    now_ms: i64,
) -> Result<(), StorageError> {
    if find_tenant_tx(tx, tenant)?.is_some()
        && let Some(e) = events(tenant)?
    {
        emit(tx, &e, now_ms)?;
    }
    Ok(())
}

fn effect_tx(
    tx: &mut dyn Tx,
    effect: EntryEffect,
    events: EventFor,
    now_ms: i64,
) -> Result<(), StorageError> {
    match effect {
        EntryEffect::None => Ok(()),
        EntryEffect::Subscribe {
            tenant,
            id,
            phase,
            next_ms,
        } => {
            subscribe_tx(tx, tenant, id, phase, next_ms, now_ms)?;
            notify_tx(tx, tenant, events, now_ms)
        }
        EntryEffect::Unsubscribe(tenant) => {
            unsubscribe_tx(tx, tenant)?;
            notify_tx(tx, tenant, events, now_ms)
        }
        EntryEffect::Notify(tenant) => notify_tx(tx, tenant, events, now_ms),
        EntryEffect::NotifySubscribers(package) => {
            let subs = tx.query(
                "SELECT id FROM catalog WHERE kind = 'tenant-subscription' ORDER BY id",
                &[],
            )?;
            let mut tenants: Vec<String> = Vec::new();
            for r in subs {
                let id = r.string(0)?;
                if let Some((tenant, p)) = id.split_once('/')
                    && p == package
                    && !tenants.iter().any(|t| t == tenant)
                {
                    tenants.push(tenant.to_string());
                }
            }
            for t in tenants {
                notify_tx(tx, &t, events, now_ms)?;
            }
            Ok(())
        }
        EntryEffect::Resync { tenant, task } => {
            let Some(cur) = find_tenant_tx(tx, tenant)? else {
                return Ok(());
            };
            match cur.status.as_str() {
                "AVAILABLE" => {
                    tx.execute(
                        "UPDATE tenants SET status = 'UPDATING', updated_ms = $1, \
                         version = version + 1 WHERE id = $2",
                        &[Val::I64(now_ms), Val::from(tenant)],
                    )?;
                    enqueue(tx, tenant, task, now_ms)
                }
                // A move reads the plan when it runs; a change made meanwhile follows it.
                "CREATING" | "UPDATING" | "MOVING" => enqueue(tx, tenant, task, now_ms),
                _ => Ok(()),
            }
        }
    }
}

impl CatalogStore for Database {
    fn insert_entry(&self, e: &CatalogRecord) -> Result<CatalogRecord, StorageError> {
        self.tx(|tx| insert_entry_tx(tx, e))
    }

    fn get_entry(&self, kind: &str, id: &str) -> Result<CatalogRecord, StorageError> {
        self.tx(|tx| get_entry_tx(tx, kind, id))
    }

    fn list_entries(&self, kind: &str) -> Result<Vec<CatalogRecord>, StorageError> {
        self.tx(|tx| {
            tx.query(
                &format!("SELECT {ENTRY_COLS} FROM catalog WHERE kind = $1 ORDER BY id"),
                &[Val::from(kind)],
            )?
            .iter()
            .map(entry)
            .collect()
        })
    }

    fn update_entry(&self, e: &CatalogRecord) -> Result<CatalogRecord, StorageError> {
        self.tx(|tx| update_entry_tx(tx, e))
    }

    fn delete_entry(&self, kind: &str, id: &str) -> Result<(), StorageError> {
        self.tx(|tx| delete_entry_tx(tx, kind, id))
    }

    fn write_entry(
        &self,
        w: EntryWrite,
        effect: EntryEffect,
        events: EventFor,
    ) -> Result<Option<CatalogRecord>, StorageError> {
        let home = self.audit_settings().home_tenant.clone();
        self.tx(|tx| {
            // A subscription's tenant is locked first: a concurrent change of the tenant's
            // `subscription_type` (which rewrites its subscriptions) waits or is waited for.
            if let EntryEffect::Subscribe { tenant, .. } | EntryEffect::Unsubscribe(tenant) = effect
            {
                lock_tenant_tx(tx, tenant)?;
            }
            if let (EntryWrite::Insert(e), EntryEffect::Subscribe { tenant, .. }) = (w, effect)
                && let Some(other) = subscriptions_tx(tx, tenant)?
                    .into_iter()
                    .find(|o| o.id != e.id)
            {
                return Err(StorageError::Conflict(format!(
                    "tenant `{tenant}` already has subscription `{}`: change it or delete it first",
                    other.id
                )));
            }
            let (kind, id) = match w {
                EntryWrite::Insert(e) | EntryWrite::Update(e) => (e.kind.as_str(), e.id.as_str()),
                EntryWrite::Delete { kind, id } => (kind, id),
            };
            let before = match w {
                EntryWrite::Insert(_) => None,
                _ => Some(get_entry_tx(tx, kind, id)?),
            };
            // The tenant a per-tenant entry belongs to, as it is before the effect.
            let owner = id.split_once('/').map(|(t, _)| t);
            let owner_before = match owner {
                Some(t) => get_tenant_tx(tx, t).ok(),
                None => None,
            };
            let (out, now, verb) = match w {
                EntryWrite::Insert(e) => (Some(insert_entry_tx(tx, e)?), e.updated_ms, "create"),
                EntryWrite::Update(e) => (Some(update_entry_tx(tx, e)?), e.updated_ms, "update"),
                EntryWrite::Delete { kind, id } => {
                    delete_entry_tx(tx, kind, id)?;
                    (None, crate::clock::now_ms(), "delete")
                }
            };
            effect_tx(tx, effect, events, now)?;
            // The entry as the transaction leaves it (a subscription may have taken its type).
            let out = match out {
                Some(e) => Some(get_entry_tx(tx, &e.kind, &e.id)?),
                None => None,
            };
            let mut change = entry_change(&home, verb, kind, id, before.as_ref(), out.as_ref());
            // What the write did to its tenant (an IDP brings it through UPDATING, a
            // subscription may give it its type): one record, the tenant's versions in detail.
            if let (Some(t), Some(b)) = (owner, owner_before)
                && let Ok(a) = get_tenant_tx(tx, t)
                && a.version != b.version
            {
                change = change.detail(json!({"tenant": {
                    "version_before": b.version, "version_after": a.version,
                    "status_before": b.status, "status_after": a.status,
                }}));
            }
            tx.record(change);
            Ok(out)
        })
    }

    fn ensure_entry(&self, e: &CatalogRecord) -> Result<bool, StorageError> {
        self.tx(|tx| ensure_entry_tx(tx, e)).map(|n| n > 0)
    }

    fn ensure_entries(&self, entries: &[CatalogRecord]) -> Result<u64, StorageError> {
        let home = self.audit_settings().home_tenant.clone();
        self.tx(|tx| {
            let mut n = 0;
            for e in entries {
                let made = ensure_entry_tx(tx, e)?;
                if made > 0 {
                    tx.record(entry_change(&home, "create", &e.kind, &e.id, None, Some(e)));
                }
                n += made;
            }
            Ok(n)
        })
    }
}

fn ensure_entry_tx(tx: &mut dyn Tx, e: &CatalogRecord) -> Result<u64, StorageError> {
    tx.execute(
        &format!(
            "INSERT INTO catalog ({ENTRY_COLS}) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (kind, id) DO NOTHING"
        ),
        &entry_params(e),
    )
}
