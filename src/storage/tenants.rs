//! The Tenant Manager's storage, written once for both backends: tenants and their durable
//! task queue (a task is written in the same transaction as the change that needs it, claimed
//! with a lease, `FOR UPDATE SKIP LOCKED` on PostgreSQL), the event outbox (written in the same
//! transaction as the change it reports), Keycloak servers, and the catalogue.

use std::sync::Arc;

use serde_json::{Value, json};

use super::audit::{Change, Fields, changed, set};
use super::{Database, Dialect, Row, SecretKeys, StorageError, Tx, Val};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRecord {
    pub id: String,
    pub realm_name: String,
    pub client_frontend_id: String,
    pub client_backend_id: String,
    pub client_backend_secret: String,
    pub realm_template_version: i64,
    pub realm_scopes_version: i64,
    pub client_backend_version: i64,
    pub client_frontend_version: i64,
    pub roles_version: i64,
    pub resources_version: i64,
    pub keycloak_server_id: Option<i64>,
    pub opendistro_enabled: bool,
    pub subscription_type: String,
    pub status: String,
    pub failure_reason: Option<String>,
    pub display_name: Option<String>,
    pub version: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// The first administrator to make once the realm is provisioned (JSON with its password),
    /// stored sealed and dropped when the tenant becomes `AVAILABLE`.
    pub first_admin: Option<String>,
    /// A move to another Keycloak server: the server the realm is being made on (`move_to`),
    /// then, once the tenant switched, the server whose realm is being removed (`move_from`).
    pub move_from: Option<i64>,
    pub move_to: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct TenantFilter {
    pub realm_name: Option<String>,
    pub status: Option<String>,
    pub opendistro_enabled: Option<bool>,
    pub subscription_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    pub id: i64,
    pub tenant_id: String,
    pub kind: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub last_error: Option<String>,
}

/// A task to enqueue with a write.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub kind: String,
    pub max_attempts: i64,
}

/// An event to publish after the write commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    pub subject: String,
    pub payload: Vec<u8>,
}

/// A tenant's new record, with the task and the event its change enqueues.
pub type TenantChange = (TenantRecord, Option<NewTask>, Option<OutboxEvent>);

/// Makes a tenant's `updated` event (`None`: events are off), for changes whose tenants are
/// found inside the transaction.
pub type EventFor<'a> = &'a dyn Fn(&str) -> Result<Option<OutboxEvent>, StorageError>;

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

/// A subscribed tenant whose subscription's phase is due to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuePhase {
    pub tenant_id: String,
    /// The phase as last applied.
    pub phase: String,
    pub next_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRecord {
    pub id: i64,
    pub subject: String,
    pub payload: Vec<u8>,
    pub created_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeycloakServerRecord {
    pub id: i64,
    pub url: String,
    pub admin_realm: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub is_default: bool,
    pub created_ms: i64,
    pub updated_ms: i64,
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

/// How a finished task leaves its tenant.
#[derive(Debug, Clone)]
pub enum TaskOutcome {
    /// Set the tenant's status (clearing any failure reason).
    Status(String),
    /// Remove the tenant row, its catalogue rows and its tasks.
    Removed,
}

pub trait TenantStore {
    /// Insert a tenant, its first task and (optionally) an event, in one transaction.
    fn insert_tenant(
        &self,
        t: &TenantRecord,
        task: Option<&NewTask>,
        event: Option<&OutboxEvent>,
    ) -> Result<TenantRecord, StorageError>;
    fn get_tenant(&self, id: &str) -> Result<TenantRecord, StorageError>;
    fn list_tenants(
        &self,
        f: &TenantFilter,
        offset: i64,
        limit: Option<i64>,
    ) -> Result<(Vec<TenantRecord>, u64), StorageError>;
    /// Replace a tenant row (version-checked against `t.version - 1` when `expected` is given),
    /// enqueueing a task and an event in the same transaction.
    /// The trail records the write as `action` (`kaa:tenant:delete`, `kaa:tenant:retry`).
    fn save_tenant(
        &self,
        t: &TenantRecord,
        expected: Option<i64>,
        task: Option<&NewTask>,
        event: Option<&OutboxEvent>,
        action: &str,
    ) -> Result<TenantRecord, StorageError>;
    /// Read-modify-write of a tenant in one transaction (its row locked on PostgreSQL; SQLite's
    /// write transactions are serial): `change` gets the current record and gives the new one
    /// with the task and event to enqueue, or `None` when nothing changes. The trail records
    /// `kaa:tenant:move` when a move starts, else `kaa:tenant:update`.
    fn modify_tenant(
        &self,
        id: &str,
        change: &mut dyn FnMut(&TenantRecord) -> Result<Option<TenantChange>, StorageError>,
    ) -> Result<TenantRecord, StorageError>;
    /// Realm counts per Keycloak server (for the least-loaded choice).
    fn realms_per_server(&self) -> Result<Vec<(i64, i64)>, StorageError>;
}

pub trait TaskStore {
    /// Take the next due task no one holds, leasing it to `worker` until `now + lease_ms`.
    fn claim_task(
        &self,
        worker: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<TaskRecord>, StorageError>;
    /// Finish a task: apply the outcome to its tenant and enqueue the event, in one transaction;
    /// nothing when the task is gone (another worker finished it).
    fn complete_task(
        &self,
        task: &TaskRecord,
        outcome: &TaskOutcome,
        event: Option<&OutboxEvent>,
        now_ms: i64,
    ) -> Result<(), StorageError>;
    /// Record a failed attempt: run again at `retry_at_ms`, or (no retry) delete the tenant's
    /// tasks, set it `FAILED` with the reason and enqueue the event, in one transaction.
    fn fail_task(
        &self,
        task: &TaskRecord,
        error: &str,
        retry_at_ms: Option<i64>,
        event: Option<&OutboxEvent>,
        now_ms: i64,
    ) -> Result<(), StorageError>;
    fn pending_tasks(&self, tenant_id: &str) -> Result<Vec<TaskRecord>, StorageError>;
    /// End a move that cannot finish: the task goes, the tenant stays on the server it is on
    /// (`AVAILABLE`, or `UPDATING` with changes queued) with `reason` as its failure reason and
    /// no move left, and the event is enqueued, in one transaction; nothing when the task is
    /// gone (another worker finished it).
    fn end_move(
        &self,
        task: &TaskRecord,
        reason: &str,
        event: Option<&OutboxEvent>,
        now_ms: i64,
    ) -> Result<(), StorageError>;
    /// Release every task leased to `worker` (a worker that is running none: a claim whose
    /// answer was lost); returns how many.
    fn release_tasks(&self, worker: &str) -> Result<u64, StorageError>;
    /// Extend to `until_ms` the leases the `workers` hold (tasks still running); returns how
    /// many.
    fn renew_leases(&self, workers: &[String], until_ms: i64) -> Result<u64, StorageError>;
}

pub trait OutboxStore {
    /// Oldest unpublished events of the Tenant Manager first (held events once their hold
    /// ended): [`OutboxStore::pending_events_of`] its own trail.
    fn pending_events(&self, limit: i64) -> Result<Vec<OutboxRecord>, StorageError> {
        self.pending_events_of(super::Trail::TenantManager, limit)
    }
    /// Oldest unpublished events written by the service of `origin` first (IAM's audit feed,
    /// or the Tenant Manager's lifecycle events and audit feed).
    fn pending_events_of(
        &self,
        origin: super::Trail,
        limit: i64,
    ) -> Result<Vec<OutboxRecord>, StorageError>;
    /// Write an event that is not published before `until_ms` (the event of a change made
    /// outside the database, written before it); returns its id.
    fn hold_event(&self, e: &OutboxEvent, until_ms: i64, now_ms: i64) -> Result<i64, StorageError>;
    /// The change a held event reports is done: publish it now.
    fn release_event(&self, id: i64, now_ms: i64) -> Result<(), StorageError>;
    /// The change a held event reports was not made: remove it (unless already published).
    fn drop_event(&self, id: i64) -> Result<(), StorageError>;
    fn mark_published(&self, ids: &[i64], now_ms: i64) -> Result<(), StorageError>;
    /// Events not yet published (a gauge).
    fn outbox_backlog(&self) -> Result<i64, StorageError>;
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

pub trait KeycloakServerStore {
    fn insert_server(&self, s: &KeycloakServerRecord)
    -> Result<KeycloakServerRecord, StorageError>;
    fn get_server(&self, id: i64) -> Result<KeycloakServerRecord, StorageError>;
    fn list_servers(&self) -> Result<Vec<KeycloakServerRecord>, StorageError>;
    /// Replace a server's record and enqueue the `updated` event of every tenant on it, in one
    /// transaction.
    fn update_server(
        &self,
        s: &KeycloakServerRecord,
        events: EventFor,
    ) -> Result<KeycloakServerRecord, StorageError>;
    /// `Conflict` while tenants use it.
    fn delete_server(&self, id: i64) -> Result<(), StorageError>;
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
            let lock = match tx.dialect() {
                Dialect::Postgres => " FOR UPDATE",
                Dialect::Sqlite => "",
            };
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

// ---------------------------------------------------------------- secrets at rest

fn tenant_aad(id: &str) -> String {
    format!("tenants.client_backend_secret/{id}")
}

fn first_admin_aad(id: &str) -> String {
    format!("tenants.first_admin/{id}")
}

fn server_aad(column: &str, id: i64) -> String {
    format!("keycloak_servers.{column}/{id}")
}

fn seal_tenant(k: &SecretKeys, t: &TenantRecord) -> Result<TenantRecord, StorageError> {
    Ok(TenantRecord {
        client_backend_secret: k.seal(&tenant_aad(&t.id), &t.client_backend_secret)?,
        first_admin: t
            .first_admin
            .as_deref()
            .map(|a| k.seal(&first_admin_aad(&t.id), a))
            .transpose()?,
        ..t.clone()
    })
}

fn open_tenant(k: &SecretKeys, t: TenantRecord) -> Result<TenantRecord, StorageError> {
    Ok(TenantRecord {
        client_backend_secret: k.open(&tenant_aad(&t.id), &t.client_backend_secret)?,
        first_admin: t
            .first_admin
            .as_deref()
            .map(|a| k.open(&first_admin_aad(&t.id), a))
            .transpose()?,
        ..t
    })
}

fn map_server_secrets(
    s: &KeycloakServerRecord,
    f: &dyn Fn(&str, &str) -> Result<String, StorageError>,
) -> Result<KeycloakServerRecord, StorageError> {
    let one = |column: &str, v: &Option<String>| -> Result<Option<String>, StorageError> {
        v.as_deref()
            .map(|v| f(&server_aad(column, s.id), v))
            .transpose()
    };
    Ok(KeycloakServerRecord {
        password: one("password", &s.password)?,
        client_secret: one("client_secret", &s.client_secret)?,
        ..s.clone()
    })
}

fn seal_server(
    k: &SecretKeys,
    s: &KeycloakServerRecord,
) -> Result<KeycloakServerRecord, StorageError> {
    map_server_secrets(s, &|aad, v| k.seal(aad, v))
}

fn open_server(
    k: &SecretKeys,
    s: &KeycloakServerRecord,
) -> Result<KeycloakServerRecord, StorageError> {
    map_server_secrets(s, &|aad, v| k.open(aad, v))
}

impl Database {
    /// Seal the Tenant Manager's stored secrets with these keys from now on.
    pub fn set_secret_keys(&self, keys: SecretKeys) {
        *self.secret_keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
    }

    pub fn secret_keys(&self) -> Arc<SecretKeys> {
        Arc::clone(&self.secret_keys.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Seal again, with the current key, every stored secret that is not sealed with it (plain
    /// rows from before encryption, rows of a previous key), in one transaction; returns how
    /// many values changed. A value no configured key opens fails it, changing nothing.
    pub fn reseal_secrets(&self) -> Result<u64, StorageError> {
        let k = self.secret_keys();
        self.tx(|tx| {
            let mut n = 0u64;
            for r in tx.query(
                "SELECT id, client_backend_secret FROM tenants ORDER BY id",
                &[],
            )? {
                let (id, stored) = (r.string(0)?, r.string(1)?);
                if k.is_current(&stored) {
                    continue;
                }
                let aad = tenant_aad(&id);
                let fresh = k.seal(&aad, &k.open(&aad, &stored)?)?;
                tx.execute(
                    "UPDATE tenants SET client_backend_secret = $1 WHERE id = $2",
                    &[Val::from(fresh), Val::from(&id)],
                )?;
                n += 1;
            }
            for r in tx.query(
                "SELECT id, first_admin FROM tenants WHERE first_admin IS NOT NULL ORDER BY id",
                &[],
            )? {
                let (id, stored) = (r.string(0)?, r.string(1)?);
                if k.is_current(&stored) {
                    continue;
                }
                let aad = first_admin_aad(&id);
                let fresh = k.seal(&aad, &k.open(&aad, &stored)?)?;
                tx.execute(
                    "UPDATE tenants SET first_admin = $1 WHERE id = $2",
                    &[Val::from(fresh), Val::from(&id)],
                )?;
                n += 1;
            }
            for r in tx.query(
                "SELECT id, password, client_secret FROM keycloak_servers ORDER BY id",
                &[],
            )? {
                let id = r.i64(0)?;
                for (i, column) in [(1, "password"), (2, "client_secret")] {
                    let Some(stored) = r.opt_string(i)? else {
                        continue;
                    };
                    if k.is_current(&stored) {
                        continue;
                    }
                    let aad = server_aad(column, id);
                    let fresh = k.seal(&aad, &k.open(&aad, &stored)?)?;
                    tx.execute(
                        &format!("UPDATE keycloak_servers SET {column} = $1 WHERE id = $2"),
                        &[Val::from(fresh), Val::I64(id)],
                    )?;
                    n += 1;
                }
            }
            Ok(n)
        })
    }
}

// ---------------------------------------------------------------- the audit trail
// Each write below reports its change (`Tx::record`) to the Tenant Manager's trail; the audit
// layer inserts it in the write's transaction. Values never reach the trail: field names only,
// and before/after values of a tenant's plain fields in `detail`; secrets only by name.

/// A tenant's fields that are secrets: named when they change, never shown.
const TENANT_SECRETS: &[&str] = &["client_backend_secret", "admin"];

/// A tenant's audited fields, each as JSON text (`admin` is the first administrator to make).
fn tenant_fields(t: &TenantRecord) -> Fields {
    let j = |v: Value| v.to_string();
    vec![
        ("realm_name", j(json!(t.realm_name))),
        ("display_name", j(json!(t.display_name))),
        ("client_frontend_id", j(json!(t.client_frontend_id))),
        ("client_backend_id", j(json!(t.client_backend_id))),
        ("client_backend_secret", t.client_backend_secret.clone()),
        ("realm_template_version", j(json!(t.realm_template_version))),
        ("realm_scopes_version", j(json!(t.realm_scopes_version))),
        ("client_backend_version", j(json!(t.client_backend_version))),
        (
            "client_frontend_version",
            j(json!(t.client_frontend_version)),
        ),
        ("roles_version", j(json!(t.roles_version))),
        ("resources_version", j(json!(t.resources_version))),
        ("keycloak_server_id", j(json!(t.keycloak_server_id))),
        ("opendistro_enabled", j(json!(t.opendistro_enabled))),
        ("subscription_type", j(json!(t.subscription_type))),
        ("status", j(json!(t.status))),
        ("failure_reason", j(json!(t.failure_reason))),
        ("admin", t.first_admin.clone().unwrap_or_default()),
        ("move_from", j(json!(t.move_from))),
        ("move_to", j(json!(t.move_to))),
    ]
}

/// The trail's record of a tenant's change from `before` to `after` (either absent: created or
/// removed), both as stored (sealed or plain alike: secrets are compared, never shown).
fn tenant_change(
    action: &str,
    before: Option<&TenantRecord>,
    after: Option<&TenantRecord>,
) -> Option<Change> {
    let id = after.or(before)?.id.clone();
    let (b, a) = (before.map(tenant_fields), after.map(tenant_fields));
    let fields = match (&b, &a) {
        (Some(b), Some(a)) => changed(b, a),
        (None, Some(a)) => set(a),
        _ => Vec::new(),
    };
    let value = |fs: &Option<Fields>, name: &str| -> Value {
        fs.as_ref()
            .and_then(|fs| fs.iter().find(|(n, _)| *n == name))
            .and_then(|(_, v)| serde_json::from_str(v).ok())
            .unwrap_or(Value::Null)
    };
    let mut detail = serde_json::Map::new();
    if before.is_some() && after.is_some() {
        for f in fields
            .iter()
            .filter(|f| !TENANT_SECRETS.contains(&f.as_str()))
        {
            detail.insert(
                f.clone(),
                json!({"before": value(&b, f), "after": value(&a, f)}),
            );
        }
    } else if let Some(t) = after.or(before) {
        detail.insert("status".into(), json!(t.status));
    }
    Some(
        Change::tm(&id, action, &format!("tenant/{id}"))
            .versions(before.map(|t| t.version), after.map(|t| t.version))
            .fields(fields)
            .detail(Value::Object(detail)),
    )
}

/// Record the change of the tenant `id` made since `before` (as stored) was read, as it is now.
/// Secrets are compared opened: sealing the same value again gives another text.
fn record_tenant_tx(
    tx: &mut dyn Tx,
    k: &SecretKeys,
    action: &str,
    before: Option<&TenantRecord>,
    id: &str,
) -> Result<(), StorageError> {
    let after = match get_tenant_tx(tx, id) {
        Ok(t) => Some(t),
        Err(StorageError::NotFound) => None,
        Err(e) => return Err(e),
    };
    if before == after.as_ref() {
        return Ok(());
    }
    let open = |t: Option<&TenantRecord>| t.map(|t| open_tenant(k, t.clone()).unwrap_or(t.clone()));
    let (before, after) = (open(before), open(after.as_ref()));
    if let Some(c) = tenant_change(action, before.as_ref(), after.as_ref()) {
        tx.record(c);
    }
    Ok(())
}

/// A Keycloak server's audited fields: the admin password and client secret by name only.
fn server_fields(s: &KeycloakServerRecord) -> Fields {
    vec![
        ("url", s.url.clone()),
        ("admin_realm", s.admin_realm.clone()),
        ("username", json!(s.username).to_string()),
        ("password", s.password.clone().unwrap_or_default()),
        ("client_id", json!(s.client_id).to_string()),
        ("client_secret", s.client_secret.clone().unwrap_or_default()),
        ("is_default", s.is_default.to_string()),
    ]
}

fn server_change(
    home: &str,
    action: &str,
    before: Option<&KeycloakServerRecord>,
    after: Option<&KeycloakServerRecord>,
) -> Option<Change> {
    let id = after.or(before)?.id;
    let fields = match (before, after) {
        (Some(b), Some(a)) => changed(&server_fields(b), &server_fields(a)),
        (None, Some(a)) => set(&server_fields(a)),
        _ => Vec::new(),
    };
    Some(
        Change::tm(
            home,
            &format!("kaa:tenant:keycloak-server:{action}"),
            &format!("keycloak-server/{id}"),
        )
        .fields(fields),
    )
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

impl Database {
    /// The trail's records of changes made outside the database (a tenant user in Keycloak),
    /// written once the change is done, with the release of its held event, in one
    /// transaction.
    pub fn record_outside(
        &self,
        changes: Vec<Change>,
        held_event: Option<i64>,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        self.tx(|tx| {
            if let Some(id) = held_event {
                tx.execute(
                    "UPDATE outbox SET not_before_ms = $1 WHERE id = $2 AND published_ms IS NULL",
                    &[Val::I64(now_ms), Val::I64(id)],
                )?;
            }
            for c in changes {
                tx.record(c);
            }
            Ok(())
        })
    }
}

// ---------------------------------------------------------------- tenants

const TENANT_COLS: &str = "id, realm_name, client_frontend_id, client_backend_id, client_backend_secret, \
     realm_template_version, realm_scopes_version, client_backend_version, client_frontend_version, \
     roles_version, resources_version, keycloak_server_id, opendistro_enabled, subscription_type, \
     status, failure_reason, display_name, version, created_ms, updated_ms, first_admin, move_from, \
     move_to";

fn tenant(r: &Row) -> Result<TenantRecord, StorageError> {
    Ok(TenantRecord {
        id: r.string(0)?,
        realm_name: r.string(1)?,
        client_frontend_id: r.string(2)?,
        client_backend_id: r.string(3)?,
        client_backend_secret: r.string(4)?,
        realm_template_version: r.i64(5)?,
        realm_scopes_version: r.i64(6)?,
        client_backend_version: r.i64(7)?,
        client_frontend_version: r.i64(8)?,
        roles_version: r.i64(9)?,
        resources_version: r.i64(10)?,
        keycloak_server_id: match r.0.get(11) {
            Some(Val::Null) | None => None,
            Some(_) => Some(r.i64(11)?),
        },
        opendistro_enabled: r.bool(12)?,
        subscription_type: r.string(13)?,
        status: r.string(14)?,
        failure_reason: r.opt_string(15)?,
        display_name: r.opt_string(16)?,
        version: r.i64(17)?,
        created_ms: r.i64(18)?,
        updated_ms: r.i64(19)?,
        first_admin: r.opt_string(20)?,
        move_from: opt_i64(r, 21)?,
        move_to: opt_i64(r, 22)?,
    })
}

fn opt_i64(r: &Row, i: usize) -> Result<Option<i64>, StorageError> {
    match r.0.get(i) {
        Some(Val::Null) | None => Ok(None),
        Some(_) => Ok(Some(r.i64(i)?)),
    }
}

fn tenant_params(t: &TenantRecord) -> Vec<Val> {
    vec![
        Val::from(&t.id),
        Val::from(&t.realm_name),
        Val::from(&t.client_frontend_id),
        Val::from(&t.client_backend_id),
        Val::from(&t.client_backend_secret),
        Val::I64(t.realm_template_version),
        Val::I64(t.realm_scopes_version),
        Val::I64(t.client_backend_version),
        Val::I64(t.client_frontend_version),
        Val::I64(t.roles_version),
        Val::I64(t.resources_version),
        t.keycloak_server_id.map_or(Val::Null, Val::I64),
        Val::Bool(t.opendistro_enabled),
        Val::from(&t.subscription_type),
        Val::from(&t.status),
        Val::from(t.failure_reason.clone()),
        Val::from(t.display_name.clone()),
        Val::I64(t.version),
        Val::I64(t.created_ms),
        Val::I64(t.updated_ms),
        Val::from(t.first_admin.clone()),
        t.move_from.map_or(Val::Null, Val::I64),
        t.move_to.map_or(Val::Null, Val::I64),
    ]
}

fn get_tenant_tx(tx: &mut dyn Tx, id: &str) -> Result<TenantRecord, StorageError> {
    tx.query(
        &format!("SELECT {TENANT_COLS} FROM tenants WHERE id = $1"),
        &[Val::from(id)],
    )?
    .first()
    .map(tenant)
    .ok_or(StorageError::NotFound)?
}

fn enqueue(
    tx: &mut dyn Tx,
    tenant_id: &str,
    task: &NewTask,
    now_ms: i64,
) -> Result<(), StorageError> {
    tx.execute(
        "INSERT INTO tasks (tenant_id, kind, attempts, max_attempts, next_run_ms, created_ms) \
         VALUES ($1, $2, 0, $3, $4, $4)",
        &[
            Val::from(tenant_id),
            Val::from(&task.kind),
            Val::I64(task.max_attempts),
            Val::I64(now_ms),
        ],
    )?;
    Ok(())
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>, StorageError> {
    if s.len() % 2 != 0 {
        return Err(StorageError::Internal("outbox payload is not hex".into()));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&s[i..i + 2], 16)
                .map_err(|_| StorageError::Internal("outbox payload is not hex".into()))
        })
        .collect()
}

fn emit(tx: &mut dyn Tx, e: &OutboxEvent, now_ms: i64) -> Result<(), StorageError> {
    tx.execute(
        "INSERT INTO outbox (subject, payload, created_ms) VALUES ($1, $2, $3)",
        &[
            Val::from(&e.subject),
            Val::from(hex(&e.payload)),
            Val::I64(now_ms),
        ],
    )?;
    Ok(())
}

/// Write `t` over `cur` (the version moves on by one), with its task and event.
fn write_tenant_tx(
    tx: &mut dyn Tx,
    cur: &TenantRecord,
    t: &TenantRecord,
    task: Option<&NewTask>,
    event: Option<&OutboxEvent>,
) -> Result<TenantRecord, StorageError> {
    let mut p = tenant_params(t);
    p[17] = Val::I64(cur.version + 1);
    p.push(Val::I64(cur.version));
    let n = tx.execute(
        "UPDATE tenants SET realm_name = $2, client_frontend_id = $3, client_backend_id = $4, \
         client_backend_secret = $5, realm_template_version = $6, realm_scopes_version = $7, \
         client_backend_version = $8, client_frontend_version = $9, roles_version = $10, \
         resources_version = $11, keycloak_server_id = $12, opendistro_enabled = $13, \
         subscription_type = $14, status = $15, failure_reason = $16, display_name = $17, \
         version = $18, created_ms = $19, updated_ms = $20, first_admin = $21, move_from = $22, \
         move_to = $23 WHERE id = $1 AND version = $24",
        &p,
    )?;
    if n == 0 {
        return Err(StorageError::Stale);
    }
    if let Some(task) = task {
        enqueue(tx, &t.id, task, t.updated_ms)?;
    }
    if let Some(e) = event {
        emit(tx, e, t.updated_ms)?;
    }
    get_tenant_tx(tx, &t.id)
}

impl TenantStore for Database {
    fn insert_tenant(
        &self,
        t: &TenantRecord,
        task: Option<&NewTask>,
        event: Option<&OutboxEvent>,
    ) -> Result<TenantRecord, StorageError> {
        let k = self.secret_keys();
        let plain = t;
        let sealed = seal_tenant(&k, t)?;
        let t = &sealed;
        let out = self.tx(|tx| {
            let clash = tx.query(
                "SELECT id FROM tenants WHERE id = $1 OR realm_name = $2",
                &[Val::from(&t.id), Val::from(&t.realm_name)],
            )?;
            if !clash.is_empty() {
                return Err(StorageError::Conflict("tenant id or realm exists".into()));
            }
            let placeholders: Vec<String> = (1..=23).map(|i| format!("${i}")).collect();
            tx.execute(
                &format!(
                    "INSERT INTO tenants ({TENANT_COLS}) VALUES ({})",
                    placeholders.join(", ")
                ),
                &tenant_params(t),
            )?;
            if let Some(task) = task {
                enqueue(tx, &t.id, task, t.created_ms)?;
            }
            if let Some(e) = event {
                emit(tx, e, t.created_ms)?;
            }
            let out = get_tenant_tx(tx, &t.id)?;
            let made = TenantRecord {
                version: out.version,
                ..plain.clone()
            };
            if let Some(c) = tenant_change("kaa:tenant:create", None, Some(&made)) {
                tx.record(c);
            }
            Ok(out)
        })?;
        open_tenant(&k, out)
    }

    fn get_tenant(&self, id: &str) -> Result<TenantRecord, StorageError> {
        open_tenant(&self.secret_keys(), self.tx(|tx| get_tenant_tx(tx, id))?)
    }

    fn list_tenants(
        &self,
        f: &TenantFilter,
        offset: i64,
        limit: Option<i64>,
    ) -> Result<(Vec<TenantRecord>, u64), StorageError> {
        let mut cond = String::from("1 = 1");
        let mut params = Vec::new();
        for (col, v) in [
            ("realm_name", &f.realm_name),
            ("status", &f.status),
            ("subscription_type", &f.subscription_type),
        ] {
            if let Some(v) = v {
                params.push(Val::from(v));
                cond.push_str(&format!(" AND {col} = ${}", params.len()));
            }
        }
        if let Some(o) = f.opendistro_enabled {
            params.push(Val::Bool(o));
            cond.push_str(&format!(" AND opendistro_enabled = ${}", params.len()));
        }
        self.tx(|tx| {
            let total = tx
                .query(&format!("SELECT COUNT(*) FROM tenants WHERE {cond}"), &params)?
                .first()
                .map(|r| r.i64(0))
                .transpose()?
                .unwrap_or(0);
            let mut p = params.clone();
            p.push(Val::I64(limit.unwrap_or(i64::MAX)));
            p.push(Val::I64(offset));
            let rows = tx.query(
                &format!(
                    "SELECT {TENANT_COLS} FROM tenants WHERE {cond} ORDER BY created_ms, id LIMIT ${} OFFSET ${}",
                    p.len() - 1,
                    p.len()
                ),
                &p,
            )?;
            let k = self.secret_keys();
            Ok((
                rows.iter()
                    .map(|r| open_tenant(&k, tenant(r)?))
                    .collect::<Result<_, _>>()?,
                u64::try_from(total).unwrap_or(0),
            ))
        })
    }

    fn save_tenant(
        &self,
        t: &TenantRecord,
        expected: Option<i64>,
        task: Option<&NewTask>,
        event: Option<&OutboxEvent>,
        action: &str,
    ) -> Result<TenantRecord, StorageError> {
        let k = self.secret_keys();
        let t = seal_tenant(&k, t)?;
        let out = self.tx(|tx| {
            let cur = get_tenant_tx(tx, &t.id)?;
            if expected.is_some_and(|v| v != cur.version) {
                return Err(StorageError::Stale);
            }
            let out = write_tenant_tx(tx, &cur, &t, task, event)?;
            record_tenant_tx(tx, &k, action, Some(&cur), &t.id)?;
            Ok(out)
        })?;
        open_tenant(&k, out)
    }

    fn modify_tenant(
        &self,
        id: &str,
        change: &mut dyn FnMut(&TenantRecord) -> Result<Option<TenantChange>, StorageError>,
    ) -> Result<TenantRecord, StorageError> {
        let k = self.secret_keys();
        let out = self.tx(|tx| {
            let lock = match tx.dialect() {
                Dialect::Postgres => " FOR UPDATE",
                Dialect::Sqlite => "",
            };
            let cur = tx
                .query(
                    &format!("SELECT {TENANT_COLS} FROM tenants WHERE id = $1{lock}"),
                    &[Val::from(id)],
                )?
                .first()
                .map(tenant)
                .ok_or(StorageError::NotFound)??;
            match change(&open_tenant(&k, cur.clone())?)? {
                None => Ok(cur),
                Some((t, task, event)) => {
                    let action = if t.move_to.is_some() && t.move_to != cur.move_to {
                        "kaa:tenant:move"
                    } else {
                        "kaa:tenant:update"
                    };
                    let t = seal_tenant(&k, &t)?;
                    let out = write_tenant_tx(tx, &cur, &t, task.as_ref(), event.as_ref())?;
                    if out.subscription_type != cur.subscription_type {
                        subscription_type_tx(tx, id, &out.subscription_type, out.updated_ms)?;
                    }
                    record_tenant_tx(tx, &k, action, Some(&cur), id)?;
                    Ok(out)
                }
            }
        })?;
        open_tenant(&k, out)
    }

    fn realms_per_server(&self) -> Result<Vec<(i64, i64)>, StorageError> {
        self.tx(|tx| {
            tx.query(
                "SELECT s.id, (SELECT COUNT(*) FROM tenants t WHERE t.keycloak_server_id = s.id) \
                 FROM keycloak_servers s ORDER BY s.id",
                &[],
            )?
            .iter()
            .map(|r| Ok((r.i64(0)?, r.i64(1)?)))
            .collect()
        })
    }
}

// ---------------------------------------------------------------- tasks

const TASK_COLS: &str = "id, tenant_id, kind, attempts, max_attempts, last_error";

fn task(r: &Row) -> Result<TaskRecord, StorageError> {
    Ok(TaskRecord {
        id: r.i64(0)?,
        tenant_id: r.string(1)?,
        kind: r.string(2)?,
        attempts: r.i64(3)?,
        max_attempts: r.i64(4)?,
        last_error: r.opt_string(5)?,
    })
}

impl TaskStore for Database {
    fn claim_task(
        &self,
        worker: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<TaskRecord>, StorageError> {
        self.tx(|tx| {
            // One task per tenant at a time: a tenant whose task is leased waits.
            let lock = match tx.dialect() {
                Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
                Dialect::Sqlite => "",
            };
            let due = tx.query(
                &format!(
                    "SELECT id FROM tasks t WHERE next_run_ms <= $1 \
                     AND (locked_until_ms IS NULL OR locked_until_ms < $1) \
                     AND NOT EXISTS (SELECT 1 FROM tasks o WHERE o.tenant_id = t.tenant_id \
                         AND o.id <> t.id AND ((o.locked_until_ms IS NOT NULL AND o.locked_until_ms >= $1) \
                         OR o.id < t.id)) \
                     ORDER BY next_run_ms, id LIMIT 1{lock}"
                ),
                &[Val::I64(now_ms)],
            )?;
            let Some(id) = due.first().map(|r| r.i64(0)).transpose()? else {
                return Ok(None);
            };
            let rows = tx.query(
                &format!(
                    "UPDATE tasks SET locked_by = $1, locked_until_ms = $2, attempts = attempts + 1 \
                     WHERE id = $3 RETURNING {TASK_COLS}"
                ),
                &[Val::from(worker), Val::I64(now_ms + lease_ms), Val::I64(id)],
            )?;
            rows.first().map(task).transpose()
        })
    }

    fn release_tasks(&self, worker: &str) -> Result<u64, StorageError> {
        self.tx(|tx| {
            tx.execute(
                "UPDATE tasks SET locked_by = NULL, locked_until_ms = NULL WHERE locked_by = $1",
                &[Val::from(worker)],
            )
        })
    }

    fn renew_leases(&self, workers: &[String], until_ms: i64) -> Result<u64, StorageError> {
        if workers.is_empty() {
            return Ok(0);
        }
        let marks: Vec<String> = (2..workers.len() + 2).map(|i| format!("${i}")).collect();
        let mut params = vec![Val::I64(until_ms)];
        params.extend(workers.iter().map(Val::from));
        self.tx(|tx| {
            tx.execute(
                &format!(
                    "UPDATE tasks SET locked_until_ms = $1 WHERE locked_until_ms IS NOT NULL \
                     AND locked_by IN ({})",
                    marks.join(", ")
                ),
                &params,
            )
        })
    }

    fn complete_task(
        &self,
        t: &TaskRecord,
        outcome: &TaskOutcome,
        event: Option<&OutboxEvent>,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let k = self.secret_keys();
        self.tx(|tx| {
            let n = tx.execute("DELETE FROM tasks WHERE id = $1", &[Val::I64(t.id)])?;
            if n == 0 {
                // Already finished by another worker that took the task over after its lease
                // ran out: its outcome and event stand, this one's would be a second.
                return Ok(());
            }
            let before = get_tenant_tx(tx, &t.tenant_id).ok();
            match outcome {
                TaskOutcome::Status(s) => {
                    // A tenant with another change queued (an IDP changed while this run was
                    // under way) stays UPDATING until its last task.
                    let queued = tx
                        .query(
                            "SELECT COUNT(*) FROM tasks WHERE tenant_id = $1",
                            &[Val::from(&t.tenant_id)],
                        )?
                        .first()
                        .map(|r| r.i64(0))
                        .transpose()?
                        .unwrap_or(0);
                    let status = if queued > 0 && s == "AVAILABLE" {
                        "UPDATING"
                    } else {
                        s.as_str()
                    };
                    // The realm work is done: the first administrator (made) and the move (finished)
                    // are no longer needed; a skipped task (DELETING) keeps them for the delete.
                    let done = if s == "AVAILABLE" {
                        ", first_admin = NULL, move_from = NULL, move_to = NULL"
                    } else {
                        ""
                    };
                    tx.execute(
                        &format!(
                            "UPDATE tenants SET status = $1, failure_reason = NULL, updated_ms = $2, \
                             version = version + 1{done} WHERE id = $3"
                        ),
                        &[Val::from(status), Val::I64(now_ms), Val::from(&t.tenant_id)],
                    )?;
                }
                TaskOutcome::Removed => {
                    tx.execute(
                        "DELETE FROM tasks WHERE tenant_id = $1",
                        &[Val::from(&t.tenant_id)],
                    )?;
                    tx.execute(
                        "DELETE FROM subscription_phases WHERE tenant_id = $1",
                        &[Val::from(&t.tenant_id)],
                    )?;
                    tx.execute(
                        "DELETE FROM catalog WHERE id LIKE $1",
                        &[Val::from(format!("{}/%", t.tenant_id.replace('%', "")))],
                    )?;
                    tx.execute(
                        "DELETE FROM tenants WHERE id = $1",
                        &[Val::from(&t.tenant_id)],
                    )?;
                }
            }
            let action = match outcome {
                TaskOutcome::Status(_) => "kaa:tenant:update",
                TaskOutcome::Removed => "kaa:tenant:remove",
            };
            record_tenant_tx(tx, &k, action, before.as_ref(), &t.tenant_id)?;
            if let Some(e) = event {
                emit(tx, e, now_ms)?;
            }
            Ok(())
        })
    }

    fn fail_task(
        &self,
        t: &TaskRecord,
        error: &str,
        retry_at_ms: Option<i64>,
        event: Option<&OutboxEvent>,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let k = self.secret_keys();
        self.tx(|tx| {
            match retry_at_ms {
                Some(at) => {
                    tx.execute(
                        "UPDATE tasks SET last_error = $1, next_run_ms = $2, locked_by = NULL, \
                         locked_until_ms = NULL WHERE id = $3",
                        &[Val::from(error), Val::I64(at), Val::I64(t.id)],
                    )?;
                }
                None => {
                    let n = tx.execute("DELETE FROM tasks WHERE id = $1", &[Val::I64(t.id)])?;
                    if n == 0 {
                        // Finished by another worker meanwhile: its outcome stands.
                        return Ok(());
                    }
                    // A failed tenant runs nothing more until its retry (which reads the plan
                    // anew), so changes queued behind this task go with it.
                    tx.execute(
                        "DELETE FROM tasks WHERE tenant_id = $1",
                        &[Val::from(&t.tenant_id)],
                    )?;
                    let before = get_tenant_tx(tx, &t.tenant_id).ok();
                    tx.execute(
                        "UPDATE tenants SET status = 'FAILED', failure_reason = $1, updated_ms = $2, \
                         version = version + 1 WHERE id = $3",
                        &[Val::from(error), Val::I64(now_ms), Val::from(&t.tenant_id)],
                    )?;
                    if before.is_some() {
                        record_tenant_tx(
                            tx,
                            &k,
                            "kaa:tenant:update",
                            before.as_ref(),
                            &t.tenant_id,
                        )?;
                    }
                    if let Some(e) = event {
                        emit(tx, e, now_ms)?;
                    }
                }
            }
            Ok(())
        })
    }

    fn end_move(
        &self,
        t: &TaskRecord,
        reason: &str,
        event: Option<&OutboxEvent>,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let k = self.secret_keys();
        self.tx(|tx| {
            let n = tx.execute("DELETE FROM tasks WHERE id = $1", &[Val::I64(t.id)])?;
            if n == 0 {
                return Ok(());
            }
            let before = get_tenant_tx(tx, &t.tenant_id).ok();
            let queued = tx
                .query(
                    "SELECT COUNT(*) FROM tasks WHERE tenant_id = $1",
                    &[Val::from(&t.tenant_id)],
                )?
                .first()
                .map(|r| r.i64(0))
                .transpose()?
                .unwrap_or(0);
            let status = if queued > 0 { "UPDATING" } else { "AVAILABLE" };
            tx.execute(
                "UPDATE tenants SET status = $1, failure_reason = $2, updated_ms = $3, \
                 version = version + 1, move_from = NULL, move_to = NULL WHERE id = $4",
                &[
                    Val::from(status),
                    Val::from(reason),
                    Val::I64(now_ms),
                    Val::from(&t.tenant_id),
                ],
            )?;
            if before.is_some() {
                record_tenant_tx(tx, &k, "kaa:tenant:update", before.as_ref(), &t.tenant_id)?;
            }
            if let Some(e) = event {
                emit(tx, e, now_ms)?;
            }
            Ok(())
        })
    }

    fn pending_tasks(&self, tenant_id: &str) -> Result<Vec<TaskRecord>, StorageError> {
        self.tx(|tx| {
            tx.query(
                &format!("SELECT {TASK_COLS} FROM tasks WHERE tenant_id = $1 ORDER BY id"),
                &[Val::from(tenant_id)],
            )?
            .iter()
            .map(task)
            .collect()
        })
    }
}

// ---------------------------------------------------------------- outbox

impl OutboxStore for Database {
    fn pending_events_of(
        &self,
        origin: super::Trail,
        limit: i64,
    ) -> Result<Vec<OutboxRecord>, StorageError> {
        self.tx(|tx| {
            tx.query(
                "SELECT id, subject, payload, created_ms FROM outbox WHERE published_ms IS NULL \
                 AND (not_before_ms IS NULL OR not_before_ms <= $2) \
                 AND COALESCE(origin, 'tenant-manager') = $3 ORDER BY id LIMIT $1",
                &[
                    Val::I64(limit),
                    Val::I64(crate::clock::now_ms()),
                    Val::from(origin.service()),
                ],
            )?
            .iter()
            .map(|r| {
                Ok(OutboxRecord {
                    id: r.i64(0)?,
                    subject: r.string(1)?,
                    payload: unhex(&r.string(2)?)?,
                    created_ms: r.i64(3)?,
                })
            })
            .collect()
        })
    }

    fn hold_event(&self, e: &OutboxEvent, until_ms: i64, now_ms: i64) -> Result<i64, StorageError> {
        self.tx(|tx| {
            tx.query(
                "INSERT INTO outbox (subject, payload, created_ms, not_before_ms) \
                 VALUES ($1, $2, $3, $4) RETURNING id",
                &[
                    Val::from(&e.subject),
                    Val::from(hex(&e.payload)),
                    Val::I64(now_ms),
                    Val::I64(until_ms),
                ],
            )?
            .first()
            .map(|r| r.i64(0))
            .transpose()?
            .ok_or_else(|| StorageError::Internal("outbox insert returned no id".into()))
        })
    }

    fn release_event(&self, id: i64, now_ms: i64) -> Result<(), StorageError> {
        self.tx(|tx| {
            tx.execute(
                "UPDATE outbox SET not_before_ms = $1 WHERE id = $2 AND published_ms IS NULL",
                &[Val::I64(now_ms), Val::I64(id)],
            )?;
            Ok(())
        })
    }

    fn drop_event(&self, id: i64) -> Result<(), StorageError> {
        self.tx(|tx| {
            tx.execute(
                "DELETE FROM outbox WHERE id = $1 AND published_ms IS NULL",
                &[Val::I64(id)],
            )?;
            Ok(())
        })
    }

    fn mark_published(&self, ids: &[i64], now_ms: i64) -> Result<(), StorageError> {
        self.tx(|tx| {
            for id in ids {
                tx.execute(
                    "UPDATE outbox SET published_ms = $1 WHERE id = $2",
                    &[Val::I64(now_ms), Val::I64(*id)],
                )?;
            }
            Ok(())
        })
    }

    fn outbox_backlog(&self) -> Result<i64, StorageError> {
        self.tx(|tx| {
            Ok(tx
                .query(
                    "SELECT COUNT(*) FROM outbox WHERE published_ms IS NULL \
                     AND COALESCE(origin, 'tenant-manager') = 'tenant-manager'",
                    &[],
                )?
                .first()
                .map(|r| r.i64(0))
                .transpose()?
                .unwrap_or(0))
        })
    }
}

// ---------------------------------------------------------------- Keycloak servers

const SERVER_COLS: &str = "id, url, admin_realm, username, password, client_id, client_secret, \
                           is_default, created_ms, updated_ms";

fn server(r: &Row) -> Result<KeycloakServerRecord, StorageError> {
    Ok(KeycloakServerRecord {
        id: r.i64(0)?,
        url: r.string(1)?,
        admin_realm: r.string(2)?,
        username: r.opt_string(3)?,
        password: r.opt_string(4)?,
        client_id: r.opt_string(5)?,
        client_secret: r.opt_string(6)?,
        is_default: r.bool(7)?,
        created_ms: r.i64(8)?,
        updated_ms: r.i64(9)?,
    })
}

fn server_params(s: &KeycloakServerRecord) -> Vec<Val> {
    vec![
        Val::I64(s.id),
        Val::from(&s.url),
        Val::from(&s.admin_realm),
        Val::from(s.username.clone()),
        Val::from(s.password.clone()),
        Val::from(s.client_id.clone()),
        Val::from(s.client_secret.clone()),
        Val::Bool(s.is_default),
        Val::I64(s.created_ms),
        Val::I64(s.updated_ms),
    ]
}

fn get_server_tx(tx: &mut dyn Tx, id: i64) -> Result<KeycloakServerRecord, StorageError> {
    tx.query(
        &format!("SELECT {SERVER_COLS} FROM keycloak_servers WHERE id = $1"),
        &[Val::I64(id)],
    )?
    .first()
    .map(server)
    .ok_or(StorageError::NotFound)?
}

impl KeycloakServerStore for Database {
    fn insert_server(
        &self,
        s: &KeycloakServerRecord,
    ) -> Result<KeycloakServerRecord, StorageError> {
        let k = self.secret_keys();
        let home = self.audit_settings().home_tenant.clone();
        let plain = s;
        let s = &seal_server(&k, s)?;
        let out = self.tx(|tx| {
            if !tx
                .query("SELECT 1 FROM keycloak_servers WHERE id = $1", &[Val::I64(s.id)])?
                .is_empty()
            {
                return Err(StorageError::Conflict("server exists".into()));
            }
            if s.is_default {
                tx.execute("UPDATE keycloak_servers SET is_default = $1", &[Val::Bool(false)])?;
            }
            tx.execute(
                &format!(
                    "INSERT INTO keycloak_servers ({SERVER_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                ),
                &server_params(s),
            )?;
            if let Some(c) = server_change(&home, "create", None, Some(plain)) {
                tx.record(c);
            }
            get_server_tx(tx, s.id)
        })?;
        open_server(&k, &out)
    }

    fn get_server(&self, id: i64) -> Result<KeycloakServerRecord, StorageError> {
        open_server(&self.secret_keys(), &self.tx(|tx| get_server_tx(tx, id))?)
    }

    fn list_servers(&self) -> Result<Vec<KeycloakServerRecord>, StorageError> {
        self.tx(|tx| {
            tx.query(
                &format!("SELECT {SERVER_COLS} FROM keycloak_servers ORDER BY id"),
                &[],
            )?
            .iter()
            .map(|r| open_server(&self.secret_keys(), &server(r)?))
            .collect()
        })
    }

    fn update_server(
        &self,
        s: &KeycloakServerRecord,
        events: EventFor,
    ) -> Result<KeycloakServerRecord, StorageError> {
        let k = self.secret_keys();
        let home = self.audit_settings().home_tenant.clone();
        let plain = s;
        let s = &seal_server(&k, s)?;
        let out = self.tx(|tx| {
            let cur = open_server(&k, &get_server_tx(tx, s.id)?)?;
            let hosted = tx.query(
                "SELECT id FROM tenants WHERE keycloak_server_id = $1 ORDER BY id",
                &[Val::I64(s.id)],
            )?;
            for row in hosted {
                if let Some(e) = events(&row.string(0)?)? {
                    emit(tx, &e, s.updated_ms)?;
                }
            }
            if s.is_default {
                tx.execute("UPDATE keycloak_servers SET is_default = $1", &[Val::Bool(false)])?;
            }
            tx.execute(
                "UPDATE keycloak_servers SET url = $2, admin_realm = $3, username = $4, password = $5, \
                 client_id = $6, client_secret = $7, is_default = $8, created_ms = $9, updated_ms = $10 \
                 WHERE id = $1",
                &server_params(s),
            )?;
            if let Some(c) = server_change(&home, "update", Some(&cur), Some(plain)) {
                tx.record(c);
            }
            get_server_tx(tx, s.id)
        })?;
        open_server(&k, &out)
    }

    fn delete_server(&self, id: i64) -> Result<(), StorageError> {
        let home = self.audit_settings().home_tenant.clone();
        self.tx(|tx| {
            let cur = get_server_tx(tx, id)?;
            let used = tx.query(
                "SELECT COUNT(*) FROM tenants WHERE keycloak_server_id = $1 OR move_from = $1 \
                 OR move_to = $1",
                &[Val::I64(id)],
            )?;
            if used.first().map(|r| r.i64(0)).transpose()?.unwrap_or(0) > 0 {
                return Err(StorageError::Conflict("server hosts tenants".into()));
            }
            tx.execute(
                "DELETE FROM keycloak_servers WHERE id = $1",
                &[Val::I64(id)],
            )?;
            if let Some(c) = server_change(&home, "delete", Some(&cur), None) {
                tx.record(c);
            }
            Ok(())
        })
    }
}

// ---------------------------------------------------------------- catalogue

fn entry(r: &Row) -> Result<CatalogRecord, StorageError> {
    Ok(CatalogRecord {
        kind: r.string(0)?,
        id: r.string(1)?,
        body: r.string(2)?,
        created_ms: r.i64(3)?,
        updated_ms: r.i64(4)?,
    })
}

fn get_entry_tx(tx: &mut dyn Tx, kind: &str, id: &str) -> Result<CatalogRecord, StorageError> {
    tx.query(
        "SELECT kind, id, body, created_ms, updated_ms FROM catalog WHERE kind = $1 AND id = $2",
        &[Val::from(kind), Val::from(id)],
    )?
    .first()
    .map(entry)
    .ok_or(StorageError::NotFound)?
}

fn insert_entry_tx(tx: &mut dyn Tx, e: &CatalogRecord) -> Result<CatalogRecord, StorageError> {
    if get_entry_tx(tx, &e.kind, &e.id).is_ok() {
        return Err(StorageError::Conflict(format!(
            "{} `{}` exists",
            e.kind, e.id
        )));
    }
    tx.execute(
        "INSERT INTO catalog (kind, id, body, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5)",
        &[
            Val::from(&e.kind),
            Val::from(&e.id),
            Val::from(&e.body),
            Val::I64(e.created_ms),
            Val::I64(e.updated_ms),
        ],
    )?;
    get_entry_tx(tx, &e.kind, &e.id)
}

fn update_entry_tx(tx: &mut dyn Tx, e: &CatalogRecord) -> Result<CatalogRecord, StorageError> {
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
    match get_tenant_tx(tx, tenant) {
        Ok(_) => {
            if let Some(e) = events(tenant)? {
                emit(tx, &e, now_ms)?;
            }
            Ok(())
        }
        Err(StorageError::NotFound) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The subscriptions of a tenant (one; an older database may hold several).
fn subscriptions_tx(tx: &mut dyn Tx, tenant: &str) -> Result<Vec<CatalogRecord>, StorageError> {
    tx.query(
        "SELECT kind, id, body, created_ms, updated_ms FROM catalog \
         WHERE kind = 'tenant-subscription' AND id LIKE $1 ORDER BY id",
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
fn subscription_type_tx(
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

/// Lock a tenant's row for the rest of the transaction (PostgreSQL; SQLite's write
/// transactions are serial).
fn lock_tenant_tx(tx: &mut dyn Tx, tenant: &str) -> Result<(), StorageError> {
    if tx.dialect() == Dialect::Postgres {
        tx.query(
            "SELECT id FROM tenants WHERE id = $1 FOR UPDATE",
            &[Val::from(tenant)],
        )?;
    }
    Ok(())
}

fn subscribe_tx(
    tx: &mut dyn Tx,
    tenant: &str,
    id: &str,
    phase: &str,
    next_ms: Option<i64>,
    now_ms: i64,
) -> Result<(), StorageError> {
    let t = match get_tenant_tx(tx, tenant) {
        Ok(t) => t,
        Err(StorageError::NotFound) => return Ok(()),
        Err(e) => return Err(e),
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
            tx.execute(
                "DELETE FROM subscription_phases WHERE tenant_id = $1",
                &[Val::from(tenant)],
            )?;
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
            let cur = match get_tenant_tx(tx, tenant) {
                Ok(t) => t,
                Err(StorageError::NotFound) => return Ok(()),
                Err(e) => return Err(e),
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
                "SELECT kind, id, body, created_ms, updated_ms FROM catalog WHERE kind = $1 ORDER BY id",
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
        "INSERT INTO catalog (kind, id, body, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (kind, id) DO NOTHING",
        &[
            Val::from(&e.kind),
            Val::from(&e.id),
            Val::from(&e.body),
            Val::I64(e.created_ms),
            Val::I64(e.updated_ms),
        ],
    )
}

// ---------------------------------------------------------------- gauges

/// What `/metrics` shows of the Tenant Manager's queue, outbox and tenants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TmStats {
    /// Tasks in the queue (due, waiting for a retry, or running).
    pub tasks: i64,
    /// How long the task that has been due the longest has waited, ms (0: none due).
    pub oldest_due_task_ms: i64,
    /// Attempts made by the queued tasks together.
    pub task_attempts: i64,
    /// Queued tasks whose last attempt failed (waiting for a retry).
    pub failing_tasks: i64,
    /// Events not yet published, and how long the oldest due one has waited, ms.
    pub outbox_pending: i64,
    pub oldest_pending_event_ms: i64,
    /// Tenants by status.
    pub tenants: Vec<(String, i64)>,
}

impl Database {
    /// The gauges of `/metrics`, read in one transaction.
    pub fn tenant_manager_stats(&self, now_ms: i64) -> Result<TmStats, StorageError> {
        self.tx(|tx| {
            let one = |rows: Vec<Row>, i: usize| -> Result<i64, StorageError> {
                match rows.first().map(|r| r.0.get(i).cloned()) {
                    Some(Some(Val::Null)) | Some(None) | None => Ok(0),
                    Some(Some(_)) => rows[0].i64(i),
                }
            };
            let q = tx.query(
                "SELECT COUNT(*), SUM(attempts), \
                 SUM(CASE WHEN last_error IS NOT NULL THEN 1 ELSE 0 END), \
                 MIN(CASE WHEN next_run_ms <= $1 AND (locked_until_ms IS NULL OR locked_until_ms < $1) \
                     THEN next_run_ms END) FROM tasks",
                &[Val::I64(now_ms)],
            )?;
            let oldest_due = one(q.clone(), 3)?;
            let mut st = TmStats {
                tasks: one(q.clone(), 0)?,
                task_attempts: one(q.clone(), 1)?,
                failing_tasks: one(q, 2)?,
                oldest_due_task_ms: if oldest_due > 0 { (now_ms - oldest_due).max(0) } else { 0 },
                ..TmStats::default()
            };
            let o = tx.query(
                "SELECT COUNT(*), MIN(CASE WHEN not_before_ms IS NULL OR not_before_ms <= $1 \
                 THEN COALESCE(not_before_ms, created_ms) END) FROM outbox WHERE published_ms IS NULL \
                 AND COALESCE(origin, 'tenant-manager') = 'tenant-manager'",
                &[Val::I64(now_ms)],
            )?;
            st.outbox_pending = one(o.clone(), 0)?;
            let oldest = one(o, 1)?;
            st.oldest_pending_event_ms = if oldest > 0 { (now_ms - oldest).max(0) } else { 0 };
            for r in tx.query(
                "SELECT status, COUNT(*) FROM tenants GROUP BY status ORDER BY status",
                &[],
            )? {
                st.tenants.push((r.string(0)?, r.i64(1)?));
            }
            Ok(st)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let b = vec![0u8, 1, 0xab, 0xff];
        assert_eq!(unhex(&hex(&b)).unwrap(), b);
        assert!(unhex("abc").is_err());
        assert!(unhex("zz").is_err());
    }
}
