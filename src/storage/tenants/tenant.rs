//! Tenants: their rows (secrets sealed, [`super::secrets`]), each write with the task and the
//! event it enqueues and its record in the trail.

use serde_json::{Value, json};

use super::locking;
use super::outbox::{OutboxEvent, emit};
use super::secrets::{open_tenant, seal_tenant};
use super::subscriptions::subscription_type_tx;
use super::tasks::{NewTask, enqueue};
use crate::storage::audit::{Change, Fields, changed, set};
use crate::storage::query::{count, insert_row, one};
use crate::storage::{Database, Dialect, Row, SecretKeys, StorageError, Tx, Val};

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

/// A tenant's new record, with the task and the event its change enqueues.
pub type TenantChange = (TenantRecord, Option<NewTask>, Option<OutboxEvent>);

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
pub(super) fn record_tenant_tx(
    tx: &mut dyn Tx,
    k: &SecretKeys,
    action: &str,
    before: Option<&TenantRecord>,
    id: &str,
) -> Result<(), StorageError> {
    let after = find_tenant_tx(tx, id)?;
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
        keycloak_server_id: r.opt_i64(11)?,
        opendistro_enabled: r.bool(12)?,
        subscription_type: r.string(13)?,
        status: r.string(14)?,
        failure_reason: r.opt_string(15)?,
        display_name: r.opt_string(16)?,
        version: r.i64(17)?,
        created_ms: r.i64(18)?,
        updated_ms: r.i64(19)?,
        first_admin: r.opt_string(20)?,
        move_from: r.opt_i64(21)?,
        move_to: r.opt_i64(22)?,
    })
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

/// The tenant `id` as stored (`NotFound` when absent); `lock` ends the SELECT ([`locking`]).
fn select_tenant_tx(tx: &mut dyn Tx, id: &str, lock: &str) -> Result<TenantRecord, StorageError> {
    one(
        tx.query(
            &format!("SELECT {TENANT_COLS} FROM tenants WHERE id = $1{lock}"),
            &[Val::from(id)],
        )?,
        tenant,
    )
}

/// The tenant `id` as stored (`NotFound` when absent).
pub(super) fn get_tenant_tx(tx: &mut dyn Tx, id: &str) -> Result<TenantRecord, StorageError> {
    select_tenant_tx(tx, id, "")
}

/// The tenant `id` as stored, `None` when absent.
pub(super) fn find_tenant_tx(
    tx: &mut dyn Tx,
    id: &str,
) -> Result<Option<TenantRecord>, StorageError> {
    match get_tenant_tx(tx, id) {
        Ok(t) => Ok(Some(t)),
        Err(StorageError::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
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
    follow_up(tx, &t.id, task, event, t.updated_ms)?;
    get_tenant_tx(tx, &t.id)
}

/// What a tenant's write enqueues with it: its task and its event.
fn follow_up(
    tx: &mut dyn Tx,
    id: &str,
    task: Option<&NewTask>,
    event: Option<&OutboxEvent>,
    now_ms: i64,
) -> Result<(), StorageError> {
    if let Some(task) = task {
        enqueue(tx, id, task, now_ms)?;
    }
    if let Some(e) = event {
        emit(tx, e, now_ms)?;
    }
    Ok(())
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
            insert_row(tx, "tenants", TENANT_COLS, &tenant_params(t))?;
            follow_up(tx, &t.id, task, event, t.created_ms)?;
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
            let total = count(
                tx,
                &format!("SELECT COUNT(*) FROM tenants WHERE {cond}"),
                &params,
            )?;
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
                total,
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
            let lock = locking(tx, " FOR UPDATE");
            let cur = select_tenant_tx(tx, id, lock)?;
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

/// Lock a tenant's row for the rest of the transaction (PostgreSQL; SQLite's write
/// transactions are serial).
pub(super) fn lock_tenant_tx(tx: &mut dyn Tx, tenant: &str) -> Result<(), StorageError> {
    if tx.dialect() == Dialect::Postgres {
        tx.query(
            "SELECT id FROM tenants WHERE id = $1 FOR UPDATE",
            &[Val::from(tenant)],
        )?;
    }
    Ok(())
}
