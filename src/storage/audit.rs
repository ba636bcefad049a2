//! The audit trail: who changed what, when, written in the transaction of the change.
//!
//! Who: a per-request [`Who`] the HTTP layer puts on the handling thread ([`scope`]); a write
//! submitted from that thread carries it along ([`Database::tx`], [`Database::tx_grouped`]
//! capture it when the write is submitted, so a write committed by another thread's group is
//! still told apart). What: the storage writes report each change they make with
//! [`Tx::record`]; the [`Auditing`] layer around every write collects them and inserts one audit
//! row per change just before the transaction ends, so a write that rolls back leaves none.

use std::cell::RefCell;
use std::sync::Arc;

use serde_json::{Value, json};

use super::{Database, StorageError, Tx, Val};

/// Who is making the writes of the current request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Who {
    /// The caller's principal KRN (or, without one, its token subject); `anonymous` when
    /// security is off.
    pub principal: Option<String>,
    /// The token subject, when a token was verified.
    pub subject: Option<String>,
    /// The caller's own tenant.
    pub actor_tenant: Option<String>,
    pub request_id: Option<String>,
    /// The source address as the server saw it.
    pub source: Option<String>,
}

/// The principal of writes made outside any request (configuration, events).
pub const SERVICE: &str = "service";

thread_local! {
    static CURRENT: RefCell<Option<Arc<Who>>> = const { RefCell::new(None) };
}

/// The current request's [`Who`] (none outside a request).
pub fn current() -> Option<Arc<Who>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Fill in who the caller is, for the rest of the current request.
pub fn identify(principal: Option<String>, subject: Option<String>, actor_tenant: &str) {
    CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        let mut who = c.as_deref().cloned().unwrap_or_default();
        who.principal = principal.or_else(|| subject.clone());
        who.subject = subject;
        who.actor_tenant = Some(actor_tenant.to_string());
        *c = Some(Arc::new(who));
    });
}

/// The request's [`Who`] on this thread until the guard drops.
pub struct Scope {
    previous: Option<Arc<Who>>,
}

/// Start a request on this thread: its id and source address, the caller to come.
pub fn scope(request_id: &str, source: Option<String>) -> Scope {
    let who = Who {
        request_id: Some(request_id.to_string()).filter(|r| !r.is_empty()),
        source,
        ..Who::default()
    };
    let previous = CURRENT.with(|c| c.replace(Some(Arc::new(who))));
    Scope { previous }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

/// Which service's trail a change belongs to: each has its own table (same shape), its own
/// `GET /audit`, retention and feed subject, even when both services share one database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Trail {
    #[default]
    Iam,
    TenantManager,
}

impl Trail {
    pub fn table(self) -> &'static str {
        match self {
            Trail::Iam => "audit",
            Trail::TenantManager => "tm_audit",
        }
    }

    /// The service's name: in feed payloads and default subjects, and the outbox rows' origin.
    pub fn service(self) -> &'static str {
        match self {
            Trail::Iam => "iam",
            Trail::TenantManager => "tenant-manager",
        }
    }
}

/// How this process's audit rows are written beyond their table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditSettings {
    /// The NATS subject prefix IAM's records are published under through the outbox
    /// (`<prefix>.<tenant>`); none: not published.
    pub iam_feed: Option<String>,
    /// The same for the Tenant Manager's records.
    pub tm_feed: Option<String>,
    /// The tenant whose trail holds the Tenant Manager's platform-wide records (Keycloak
    /// servers, the shared catalogue): the system tenant.
    pub home_tenant: String,
}

impl AuditSettings {
    pub fn feed(&self, trail: Trail) -> Option<&str> {
        match trail {
            Trail::Iam => self.iam_feed.as_deref(),
            Trail::TenantManager => self.tm_feed.as_deref(),
        }
    }
}

/// A tenant id as one NATS subject token: letters, digits, `-` and `_` kept, anything else
/// (`.`, wildcards, spaces) as `_`; the payload carries the tenant as it is.
pub fn subject_token(tenant: &str) -> String {
    let t: String = tenant
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if t.is_empty() { "_".into() } else { t }
}

/// One change of one entity.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub trail: Trail,
    pub tenant: String,
    /// `iam:<kind>:<verb>`, as the action that authorizes it.
    pub action: String,
    pub entity: String,
    pub before: Option<i64>,
    pub after: Option<i64>,
    /// Names of the fields that changed.
    pub fields: Vec<String>,
    /// More about the change (the ids a relation gained or lost); never secrets.
    pub detail: Value,
}

impl Change {
    pub fn new(tenant: &str, action: &str, entity: &str) -> Change {
        Change {
            trail: Trail::Iam,
            tenant: tenant.to_string(),
            action: action.to_string(),
            entity: entity.to_string(),
            before: None,
            after: None,
            fields: Vec::new(),
            detail: json!({}),
        }
    }

    /// A change of the Tenant Manager's trail.
    pub fn tm(tenant: &str, action: &str, entity: &str) -> Change {
        Change {
            trail: Trail::TenantManager,
            ..Change::new(tenant, action, entity)
        }
    }

    pub fn versions(mut self, before: Option<i64>, after: Option<i64>) -> Change {
        self.before = before;
        self.after = after;
        self
    }

    pub fn fields(mut self, fields: Vec<String>) -> Change {
        self.fields = fields;
        self
    }

    pub fn detail(mut self, detail: Value) -> Change {
        self.detail = detail;
        self
    }
}

/// The audited fields of a record, by name (no secrets: a password is named, not shown).
pub type Fields = Vec<(&'static str, String)>;

/// The names of the fields whose value differs (a field only one side has counts).
pub fn changed(before: &Fields, after: &Fields) -> Vec<String> {
    let mut out = Vec::new();
    for (name, v) in after {
        if before.iter().find(|(n, _)| n == name).map(|(_, b)| b) != Some(v) {
            out.push((*name).to_string());
        }
    }
    for (name, _) in before {
        if !after.iter().any(|(n, _)| n == name) {
            out.push((*name).to_string());
        }
    }
    out
}

/// The names of the fields a new entity has set.
pub fn set(after: &Fields) -> Vec<String> {
    after
        .iter()
        .filter(|(_, v)| !v.is_empty() && v != "null" && v != "[]" && v != "{}")
        .map(|(n, _)| (*n).to_string())
        .collect()
}

/// Collects the changes of one write and inserts them before the write's transaction ends.
pub(crate) struct Auditing<'a> {
    tx: &'a mut dyn Tx,
    who: Option<&'a Who>,
    changes: Vec<Change>,
}

impl Tx for Auditing<'_> {
    fn execute(&mut self, sql: &str, params: &[Val]) -> Result<u64, StorageError> {
        self.tx.execute(sql, params)
    }

    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<super::Row>, StorageError> {
        self.tx.query(sql, params)
    }

    fn dialect(&self) -> super::Dialect {
        self.tx.dialect()
    }

    fn defer_bump(&mut self, tenant: &str) -> bool {
        self.tx.defer_bump(tenant)
    }

    fn record(&mut self, change: Change) {
        self.changes.push(change);
    }

    fn principal(&self) -> String {
        principal_of(self.who)
    }
}

/// Run one write `f` in `tx` and insert the changes it reports, as made by `who` (and, when
/// `settings` publish the change's trail, its feed message into the outbox).
pub(crate) fn audited<'a, T>(
    tx: &'a mut dyn Tx,
    who: Option<&'a Who>,
    settings: &AuditSettings,
    f: impl FnOnce(&mut dyn Tx) -> Result<T, StorageError>,
) -> Result<T, StorageError> {
    let mut a = Auditing {
        tx,
        who,
        changes: Vec::new(),
    };
    let v = f(&mut a)?;
    let Auditing { tx, changes, .. } = a;
    if !changes.is_empty() {
        let now = crate::clock::now_ms();
        for c in &changes {
            insert(tx, who, now, c, settings.feed(c.trail))?;
        }
    }
    Ok(v)
}

/// The principal an audit row names.
pub fn principal_of(who: Option<&Who>) -> String {
    match who {
        None => SERVICE.to_string(),
        Some(w) => w
            .principal
            .clone()
            .unwrap_or_else(|| "anonymous".to_string()),
    }
}

fn insert(
    tx: &mut dyn Tx,
    who: Option<&Who>,
    now: i64,
    c: &Change,
    feed: Option<&str>,
) -> Result<(), StorageError> {
    let w = who.cloned().unwrap_or_default();
    let principal = principal_of(who);
    let sql = format!(
        "INSERT INTO {} (tenant, at_ms, principal, subject, actor_tenant, request_id, source, \
         action, entity, version_before, version_after, fields, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        c.trail.table()
    );
    let params = [
        Val::from(&c.tenant),
        Val::I64(now),
        Val::from(&principal),
        Val::from(w.subject.clone()),
        Val::from(w.actor_tenant.clone()),
        Val::from(w.request_id.clone()),
        Val::from(w.source.clone()),
        Val::from(&c.action),
        Val::from(&c.entity),
        Val::from(c.before),
        Val::from(c.after),
        Val::from(Value::from(c.fields.clone()).to_string()),
        Val::from(c.detail.to_string()),
    ];
    let Some(prefix) = feed else {
        tx.execute(&sql, &params)?;
        return Ok(());
    };
    // Published: the message goes into the outbox in this transaction, so that a record that
    // commits reaches NATS at least once, whenever NATS is reachable again.
    let id = tx
        .query(&format!("{sql} RETURNING id"), &params)?
        .first()
        .map(|r| r.i64(0))
        .transpose()?
        .ok_or_else(|| StorageError::Internal("audit insert returned no id".into()))?;
    let record = AuditRecord {
        id,
        tenant: c.tenant.clone(),
        at_ms: now,
        principal,
        subject: w.subject,
        actor_tenant: w.actor_tenant,
        request_id: w.request_id,
        source: w.source,
        action: c.action.clone(),
        entity: c.entity.clone(),
        before: c.before,
        after: c.after,
        fields: c.fields.clone(),
        detail: c.detail.clone(),
    };
    tx.execute(
        "INSERT INTO outbox (subject, payload, created_ms, origin) VALUES ($1, $2, $3, $4)",
        &[
            Val::from(format!("{prefix}.{}", subject_token(&c.tenant))),
            Val::from(super::tenants::hex(
                feed_message(c.trail, &record).to_string().as_bytes(),
            )),
            Val::I64(now),
            Val::from(c.trail.service()),
        ],
    )?;
    Ok(())
}

/// The feed's message for one record: one shape for both services.
pub fn feed_message(trail: Trail, r: &AuditRecord) -> Value {
    json!({
        "service": trail.service(),
        "id": r.id,
        "time": crate::clock::rfc3339_ms(r.at_ms),
        "tenant_id": r.tenant,
        "principal": r.principal,
        "subject": r.subject,
        "caller_tenant_id": r.actor_tenant,
        "request_id": r.request_id,
        "source": r.source,
        "action": r.action,
        "entity": r.entity,
        "version_before": r.before,
        "version_after": r.after,
        "fields": r.fields,
        "detail": r.detail,
    })
}

/// One audit row as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub id: i64,
    pub tenant: String,
    pub at_ms: i64,
    pub principal: String,
    pub subject: Option<String>,
    pub actor_tenant: Option<String>,
    pub request_id: Option<String>,
    pub source: Option<String>,
    pub action: String,
    pub entity: String,
    pub before: Option<i64>,
    pub after: Option<i64>,
    pub fields: Vec<String>,
    pub detail: Value,
}

/// What `GET /audit` asks for: one tenant's rows (or every tenant's), newest first, below
/// `before_id`.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub trail: Trail,
    /// None: every tenant's (the Tenant Manager's platform administrator).
    pub tenant: Option<String>,
    pub entity: Option<String>,
    /// The principal KRN or the token subject.
    pub principal: Option<String>,
    pub action: Option<String>,
    /// `at_ms >= from_ms`.
    pub from_ms: Option<i64>,
    /// `at_ms < to_ms`.
    pub to_ms: Option<i64>,
    /// Rows with a smaller id only (the cursor).
    pub before_id: Option<i64>,
    pub limit: u32,
}

const COLUMNS: &str = "id, tenant, at_ms, principal, subject, actor_tenant, request_id, source, \
                       action, entity, version_before, version_after, fields, detail";

fn record(r: &super::Row) -> Result<AuditRecord, StorageError> {
    let json = |i: usize| -> Result<Value, StorageError> {
        serde_json::from_str(&r.string(i)?)
            .map_err(|e| StorageError::Internal(format!("audit row: {e}")))
    };
    Ok(AuditRecord {
        id: r.i64(0)?,
        tenant: r.string(1)?,
        at_ms: r.i64(2)?,
        principal: r.string(3)?,
        subject: r.opt_string(4)?,
        actor_tenant: r.opt_string(5)?,
        request_id: r.opt_string(6)?,
        source: r.opt_string(7)?,
        action: r.string(8)?,
        entity: r.string(9)?,
        before: r.opt_i64(10)?,
        after: r.opt_i64(11)?,
        fields: serde_json::from_value(json(12)?).unwrap_or_default(),
        detail: json(13)?,
    })
}

/// A policy as one of its versions was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyVersion {
    pub tenant: String,
    pub krn: String,
    pub version: i64,
    pub name: String,
    pub kind: String,
    pub description: Option<String>,
    pub statements: String,
    pub resource_krn: Option<String>,
    pub at_ms: i64,
    pub principal: String,
}

const VERSION_COLUMNS: &str =
    "tenant, krn, version, name, kind, description, statements, resource_krn, at_ms, principal";

fn version_record(r: &super::Row) -> Result<PolicyVersion, StorageError> {
    Ok(PolicyVersion {
        tenant: r.string(0)?,
        krn: r.string(1)?,
        version: r.i64(2)?,
        name: r.string(3)?,
        kind: r.string(4)?,
        description: r.opt_string(5)?,
        statements: r.string(6)?,
        resource_krn: r.opt_string(7)?,
        at_ms: r.i64(8)?,
        principal: r.string(9)?,
    })
}

/// Keep `p` as its version `p.version`, in the write's transaction.
pub(crate) fn keep_policy_version(
    tx: &mut dyn Tx,
    p: &super::PolicyRecord,
) -> Result<(), StorageError> {
    let principal = tx.principal();
    tx.execute(
        &format!(
            "INSERT INTO policy_versions ({VERSION_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING"
        ),
        &[
            Val::from(&p.tenant),
            Val::from(&p.krn),
            Val::I64(p.version),
            Val::from(&p.name),
            Val::from(&p.kind),
            Val::from(p.description.clone()),
            Val::from(&p.statements),
            Val::from(p.resource_krn.clone()),
            Val::I64(p.updated_ms),
            Val::from(principal),
        ],
    )?;
    Ok(())
}

/// The trail and the policy history.
pub trait AuditStore {
    /// One page of a tenant's trail, newest first.
    fn audit(&self, f: &AuditFilter) -> Result<Vec<AuditRecord>, StorageError>;
    /// Delete rows of `trail` older than `older_than_ms` (when given), then all but the newest
    /// `keep_rows` of each tenant (when given); the number of rows deleted. The trail's feed
    /// messages the outbox published are deleted too.
    fn prune_audit(
        &self,
        trail: Trail,
        older_than_ms: Option<i64>,
        keep_rows: Option<u64>,
    ) -> Result<u64, StorageError>;
    /// The kept versions of a policy, newest first.
    fn policy_versions(&self, tenant: &str, krn: &str) -> Result<Vec<PolicyVersion>, StorageError>;
    fn policy_version(
        &self,
        tenant: &str,
        krn: &str,
        version: i64,
    ) -> Result<PolicyVersion, StorageError>;
}

impl AuditStore for Database {
    fn audit(&self, f: &AuditFilter) -> Result<Vec<AuditRecord>, StorageError> {
        let mut cond = String::from("1 = 1");
        let mut params = Vec::new();
        let mut add = |cond: &mut String, sql: &str, v: Val| {
            params.push(v);
            cond.push_str(&sql.replace("$?", &format!("${}", params.len())));
        };
        if let Some(t) = &f.tenant {
            add(&mut cond, " AND tenant = $?", Val::from(t));
        }
        if let Some(e) = &f.entity {
            add(&mut cond, " AND entity = $?", Val::from(e));
        }
        if let Some(p) = &f.principal {
            add(
                &mut cond,
                " AND (principal = $? OR subject = $?)",
                Val::from(p),
            );
        }
        if let Some(a) = &f.action {
            add(&mut cond, " AND action = $?", Val::from(a));
        }
        if let Some(t) = f.from_ms {
            add(&mut cond, " AND at_ms >= $?", Val::I64(t));
        }
        if let Some(t) = f.to_ms {
            add(&mut cond, " AND at_ms < $?", Val::I64(t));
        }
        if let Some(id) = f.before_id {
            add(&mut cond, " AND id < $?", Val::I64(id));
        }
        add(&mut cond, "", Val::I64(i64::from(f.limit)));
        let n = params.len();
        self.tx(|tx| {
            tx.query(
                &format!(
                    "SELECT {COLUMNS} FROM {} WHERE {cond} ORDER BY id DESC LIMIT ${n}",
                    f.trail.table()
                ),
                &params,
            )?
            .iter()
            .map(record)
            .collect()
        })
    }

    fn prune_audit(
        &self,
        trail: Trail,
        older_than_ms: Option<i64>,
        keep_rows: Option<u64>,
    ) -> Result<u64, StorageError> {
        let table = trail.table();
        self.tx(|tx| {
            let mut n = 0;
            if let Some(t) = older_than_ms {
                n += tx.execute(
                    &format!("DELETE FROM {table} WHERE at_ms < $1"),
                    &[Val::I64(t)],
                )?;
            }
            if let Some(keep) = keep_rows {
                let keep = i64::try_from(keep).unwrap_or(i64::MAX);
                let tenants = tx.query(&format!("SELECT DISTINCT tenant FROM {table}"), &[])?;
                for t in &tenants {
                    let tenant = t.string(0)?;
                    // The id of the oldest row kept; rows below it go.
                    let edge = tx.query(
                        &format!(
                            "SELECT id FROM {table} WHERE tenant = $1 ORDER BY id DESC \
                             LIMIT 1 OFFSET $2"
                        ),
                        &[Val::from(&tenant), Val::I64(keep.saturating_sub(1))],
                    )?;
                    if let Some(row) = edge.first() {
                        n += tx.execute(
                            &format!("DELETE FROM {table} WHERE tenant = $1 AND id < $2"),
                            &[Val::from(&tenant), Val::I64(row.i64(0)?)],
                        )?;
                    }
                }
            }
            // Feed messages already published have done their work.
            tx.execute(
                "DELETE FROM outbox WHERE origin = $1 AND published_ms IS NOT NULL",
                &[Val::from(trail.service())],
            )?;
            Ok(n)
        })
    }

    fn policy_versions(&self, tenant: &str, krn: &str) -> Result<Vec<PolicyVersion>, StorageError> {
        self.tx(|tx| {
            tx.query(
                &format!(
                    "SELECT {VERSION_COLUMNS} FROM policy_versions WHERE tenant = $1 AND krn = $2 \
                     ORDER BY version DESC"
                ),
                &[Val::from(tenant), Val::from(krn)],
            )?
            .iter()
            .map(version_record)
            .collect()
        })
    }

    fn policy_version(
        &self,
        tenant: &str,
        krn: &str,
        version: i64,
    ) -> Result<PolicyVersion, StorageError> {
        self.tx(|tx| {
            let rows = tx.query(
                &format!(
                    "SELECT {VERSION_COLUMNS} FROM policy_versions \
                     WHERE tenant = $1 AND krn = $2 AND version = $3"
                ),
                &[Val::from(tenant), Val::from(krn), Val::I64(version)],
            )?;
            rows.first()
                .map(version_record)
                .ok_or(StorageError::NotFound)?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_names_differing_and_one_sided_fields() {
        let a: Fields = vec![("email", "a".into()), ("enabled", "true".into())];
        let b: Fields = vec![("email", "b".into()), ("enabled", "true".into())];
        assert_eq!(changed(&a, &b), vec!["email".to_string()]);
        assert!(changed(&a, &a).is_empty());
        let c: Fields = vec![("email", "a".into())];
        assert_eq!(changed(&a, &c), vec!["enabled".to_string()]);
    }

    fn temp_db(name: &str) -> (Database, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "kaa-audit-{name}-{}-{}",
            std::process::id(),
            crate::clock::now_ms()
        ));
        let db = Database::open(&crate::config::StorageSettings::Sqlite(
            crate::config::SqliteSettings {
                path: dir.join("t.db"),
            },
        ))
        .unwrap_or_else(|e| panic!("open: {e}"));
        (db, dir)
    }

    fn rows(db: &Database, tenant: &str) -> Vec<AuditRecord> {
        db.audit(&AuditFilter {
            tenant: Some(tenant.into()),
            limit: 1000,
            ..AuditFilter::default()
        })
        .unwrap_or_else(|e| panic!("audit: {e}"))
    }

    /// A change reported by a write that then fails is rolled back with it.
    #[test]
    fn a_failed_write_leaves_no_record() {
        let (db, dir) = temp_db("rollback");
        let failed: Result<(), StorageError> = db.tx(|tx| {
            tx.record(Change::new("t", "iam:user:create", "krn:iam:t::user/a"));
            Err(StorageError::Conflict("refused after the change".into()))
        });
        assert!(failed.is_err());
        assert!(rows(&db, "t").is_empty());
        db.tx(|tx| {
            tx.record(Change::new("t", "iam:user:create", "krn:iam:t::user/b"));
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let kept = rows(&db, "t");
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].entity, "krn:iam:t::user/b");
        assert_eq!(
            kept[0].principal, SERVICE,
            "no request: the service's own write"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Grouped writes committed by whichever thread leads the group still name the request
    /// that submitted each.
    #[test]
    fn grouped_writes_name_their_own_request() {
        use crate::storage::{NewPolicy, PolicyStore};
        let (db, dir) = temp_db("grouped");
        let db = Arc::new(db);
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let db = Arc::clone(&db);
                std::thread::spawn(move || {
                    let _s = scope(&format!("req-{i}"), None);
                    identify(Some(format!("krn:iam:t::user/u{i}")), None, "t");
                    db.insert_policy(&NewPolicy {
                        tenant: "t".into(),
                        krn: format!("krn:iam:t::policy/p{i}"),
                        name: format!("p{i}"),
                        kind: "identity".into(),
                        description: None,
                        statements: "[]".into(),
                        origin: "api".into(),
                        now_ms: 1,
                        resource_krn: None,
                        pools: Vec::new(),
                    })
                    .unwrap_or_else(|e| panic!("insert: {e}"));
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap_or_else(|_| panic!("writer panicked"));
        }
        let kept = rows(&db, "t");
        assert_eq!(kept.len(), 8);
        for r in &kept {
            let i = r.entity.trim_start_matches("krn:iam:t::policy/p");
            assert_eq!(r.request_id.as_deref(), Some(format!("req-{i}").as_str()));
            assert_eq!(r.principal, format!("krn:iam:t::user/u{i}"));
            let v = db
                .policy_version("t", &r.entity, 1)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(v.principal, r.principal);
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The pruning by age, then by rows per tenant (the newest kept).
    #[test]
    fn pruning_by_age_and_by_rows_per_tenant() {
        let (db, dir) = temp_db("prune");
        let write = |tenant: &str, n: usize| {
            for i in 0..n {
                db.tx(|tx| {
                    tx.record(Change::new(tenant, "iam:pool:create", &format!("e{i}")));
                    Ok(())
                })
                .unwrap_or_else(|e| panic!("{e}"));
            }
        };
        write("a", 5);
        write("b", 2);
        assert_eq!(
            db.prune_audit(Trail::Iam, Some(0), None).unwrap_or(99),
            0,
            "none that old"
        );
        assert_eq!(db.prune_audit(Trail::Iam, None, Some(3)).unwrap_or(99), 2);
        let a: Vec<String> = rows(&db, "a").into_iter().map(|r| r.entity).collect();
        assert_eq!(a, ["e4", "e3", "e2"]);
        assert_eq!(
            rows(&db, "b").len(),
            2,
            "another tenant's rows are its own to count"
        );
        let later = crate::clock::now_ms() + 1000;
        assert_eq!(
            db.prune_audit(Trail::Iam, Some(later), None).unwrap_or(99),
            5
        );
        assert!(rows(&db, "a").is_empty() && rows(&db, "b").is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn scope_sets_and_restores_who() {
        assert!(current().is_none());
        {
            let _s = scope("r1", Some("127.0.0.1:5".into()));
            identify(Some("krn:iam:t::user/bob".into()), Some("sub".into()), "t");
            let w = current().unwrap();
            assert_eq!(w.request_id.as_deref(), Some("r1"));
            assert_eq!(w.principal.as_deref(), Some("krn:iam:t::user/bob"));
            assert_eq!(w.actor_tenant.as_deref(), Some("t"));
        }
        assert!(current().is_none());
    }
}
