//! Storage: capability traits over domain types, one SQL layer written once for both backends.
//!
//! Backends (`sqlite`, `postgres`) only run statements and convert driver values and errors into
//! [`Val`] and [`StorageError`] kinds; the capability implementations (`policies`) are written
//! once against the [`Tx`] trait with `$N` placeholders. Callers branch on error kinds, never on
//! the backend. The backend is chosen once, at the composition root, by [`Database::open`].

pub mod audit;
mod bulk;
mod directory;
mod err;
mod migrate;
mod policies;
mod postgres;
mod query;
mod sealed;
mod sqlite;
mod tenants;
mod value;

use std::time::Duration;

pub use audit::{
    AuditFilter, AuditRecord, AuditSettings, AuditStore, Change, PolicyVersion, Trail,
};
pub use bulk::{BulkCount, BulkStore, ROWS_PER_TX, TenantCounts};
pub use directory::{
    AttachmentStore, GroupFilter, GroupRecord, GroupStore, PoolRecord, PoolStore, ResourceFilter,
    ResourcePatch, ResourceRecord, ResourceStore, SnapshotPart, SnapshotStore, TenantSnapshot,
    UserFilter, UserPatch, UserRecord, UserStore,
};
pub use err::StorageError;
pub use policies::{NewPolicy, PolicyFilter, PolicyRecord, PolicySort};
pub use sealed::SecretKeys;
pub use tenants::{
    CatalogRecord, CatalogStore, DuePhase, EntryEffect, EntryWrite, EventFor, KeycloakServerRecord,
    KeycloakServerStore, NewTask, OutboxEvent, OutboxRecord, OutboxStore, Pass, SubscriptionStore,
    TaskOutcome, TaskRecord, TaskStore, TenantChange, TenantFilter, TenantRecord, TenantStore,
    TmStats,
};
pub use value::{Row, Val};

use crate::config::StorageSettings;

/// One page of a list: 1-based page number and page size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub page: u32,
    pub size: u32,
}

impl Page {
    pub fn offset(&self) -> i64 {
        i64::from(self.page.saturating_sub(1)) * i64::from(self.size)
    }
}

/// Sort direction of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortOrder {
    #[default]
    Asc,
    Desc,
}

/// The SQL dialect a transaction speaks, for the few statements that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A running transaction: statements with `$1..$N` placeholders.
pub trait Tx {
    fn execute(&mut self, sql: &str, params: &[Val]) -> Result<u64, StorageError>;
    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Row>, StorageError>;
    fn dialect(&self) -> Dialect;
    /// Note that the transaction changes `tenant`, so that its revision moves once, as the last
    /// statement before the commit. False when this transaction cannot defer (then the caller
    /// bumps at once).
    fn defer_bump(&mut self, _tenant: &str) -> bool {
        false
    }
    /// Report a change this write makes, for the audit trail ([`audit`]): inserted before
    /// the transaction ends. A transaction without an audit layer drops it.
    fn record(&mut self, _change: audit::Change) {}
    /// Who the audit trail names for this write.
    fn principal(&self) -> String {
        audit::SERVICE.to_string()
    }
}

/// Told of every tenant revision a transaction of this process takes, while that transaction
/// still holds the revision (the tenant's revision row on PostgreSQL, the write lock on SQLite),
/// so that the revision is known here before any other transaction can see it or take the next
/// one.
pub trait RevisionObserver: Send + Sync {
    /// `revision` of `tenant` is about to commit in the transaction `token`.
    fn announce(&self, tenant: &str, revision: i64, token: u64);
    /// The transaction `token` did not commit, or its answer was lost: `revision` may be taken
    /// again by another transaction, or may exist without anyone here knowing its changes.
    fn withdraw(&self, tenant: &str, revision: i64, token: u64);
}

/// A transaction that collects its tenant revision bumps for the end.
struct Deferring<'a> {
    tx: &'a mut dyn Tx,
    bumps: Vec<String>,
}

impl Tx for Deferring<'_> {
    fn execute(&mut self, sql: &str, params: &[Val]) -> Result<u64, StorageError> {
        self.tx.execute(sql, params)
    }

    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Row>, StorageError> {
        self.tx.query(sql, params)
    }

    fn dialect(&self) -> Dialect {
        self.tx.dialect()
    }

    fn defer_bump(&mut self, tenant: &str) -> bool {
        if !self.bumps.iter().any(|t| t == tenant) {
            self.bumps.push(tenant.to_string());
        }
        true
    }

    fn record(&mut self, change: audit::Change) {
        self.tx.record(change);
    }

    fn principal(&self) -> String {
        self.tx.principal()
    }
}

/// Policies of a tenant, with optimistic versions, and the tenant revision bumped on every write.
pub trait PolicyStore {
    fn insert_policy(&self, p: &NewPolicy) -> Result<PolicyRecord, StorageError>;
    fn get_policy(&self, tenant: &str, krn: &str) -> Result<PolicyRecord, StorageError>;
    fn list_policies(
        &self,
        filter: &PolicyFilter,
        page: Page,
    ) -> Result<(Vec<PolicyRecord>, u64), StorageError>;
    /// Replace description and statements; `expected_version` guards against lost updates.
    #[allow(clippy::too_many_arguments)] // the inputs of one write, each used once
    fn replace_policy(
        &self,
        tenant: &str,
        krn: &str,
        expected_version: Option<i64>,
        description: Option<&str>,
        statements: &str,
        // The pools the policy is attached to afterwards (`None`: unchanged).
        pools: Option<&[String]>,
        now_ms: i64,
    ) -> Result<PolicyRecord, StorageError>;
    fn delete_policy(&self, tenant: &str, krn: &str) -> Result<(), StorageError>;
    /// Delete all of `krns` or none (`NotFound` when one is missing).
    fn delete_policies(&self, tenant: &str, krns: &[String]) -> Result<(), StorageError>;
    /// Every policy of every tenant (index load at start).
    fn all_policies(&self) -> Result<Vec<PolicyRecord>, StorageError>;
}

/// Per-tenant revision numbers: replicas compare them to know when to reload.
pub trait RevisionStore {
    fn revision(&self, tenant: &str) -> Result<i64, StorageError>;
    fn revisions(&self) -> Result<Vec<(String, i64)>, StorageError>;
}

/// Reachability of the store (readiness).
pub trait HealthStore {
    fn ping(&self) -> Result<(), StorageError>;
}

enum Backend {
    Sqlite(sqlite::SqlitePool),
    Postgres(postgres::PgPool),
}

/// The opened database: a pool of one backend, migrated.
pub struct Database {
    backend: Backend,
    group: Group,
    /// Transactions committing grouped writes at once (PostgreSQL: while one group waits for
    /// its commit to flush, the next one runs its statements; SQLite has one writer anyway).
    group_leaders: usize,
    observers: std::sync::RwLock<Vec<std::sync::Weak<dyn RevisionObserver>>>,
    /// The keys the Tenant Manager's stored secrets are sealed with (none: stored as they are).
    secret_keys: std::sync::RwLock<std::sync::Arc<SecretKeys>>,
    /// Where audit rows go beyond their table (feeds), and the Tenant Manager's home tenant.
    audit_settings: std::sync::RwLock<std::sync::Arc<AuditSettings>>,
}

/// A write that may share its transaction with others ([`Database::tx_grouped`]).
type GroupJob =
    Box<dyn FnMut(&mut dyn Tx) -> Result<Box<dyn std::any::Any + Send>, StorageError> + Send>;

/// A job's answer: its value, or error, and the revisions it took.
type GroupDone = (
    Result<Box<dyn std::any::Any + Send>, StorageError>,
    Vec<(String, i64)>,
);

/// Writes waiting to be committed together.
#[derive(Default)]
struct Group {
    state: std::sync::Mutex<GroupState>,
    done: std::sync::Condvar,
}

#[derive(Default)]
struct GroupState {
    next: u64,
    queue: Vec<(u64, GroupJob)>,
    answers: std::collections::HashMap<u64, GroupDone>,
    leaders: usize,
}

/// The advisory lock key of start-up writes (migrations take [`migrate::MIGRATION_LOCK`]).
const STARTUP_LOCK: i64 = 7_420_114;

/// Held while a replica makes its start-up writes ([`Database::startup_lock`]).
pub struct StartupLock {
    _held: Option<postgres::SessionLock>,
}

/// Most writes committed in one grouped transaction.
const GROUP_MAX: usize = 64;

impl Database {
    /// Open (creating the SQLite file and its directory when needed), check the connection with
    /// a clear error, and apply pending migrations.
    pub fn open(settings: &StorageSettings) -> Result<Database, StorageError> {
        let backend = match settings {
            StorageSettings::Sqlite(s) => Backend::Sqlite(sqlite::open(&s.path)?),
            StorageSettings::Postgres(p) => Backend::Postgres(postgres::open(p)?),
        };
        let group_leaders = match backend {
            Backend::Sqlite(_) => 1,
            Backend::Postgres(_) => 2,
        };
        let db = Database {
            backend,
            group: Group::default(),
            group_leaders,
            observers: std::sync::RwLock::new(Vec::new()),
            secret_keys: std::sync::RwLock::new(std::sync::Arc::new(SecretKeys::none())),
            audit_settings: std::sync::RwLock::new(std::sync::Arc::new(AuditSettings {
                home_tenant: "kaa".into(),
                ..AuditSettings::default()
            })),
        };
        db.migrate()?;
        Ok(db)
    }

    /// Change where this process's audit rows go beyond their table (see [`AuditSettings`]).
    pub fn set_audit_settings(&self, settings: AuditSettings) {
        *self
            .audit_settings
            .write()
            .unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(settings);
    }

    pub fn audit_settings(&self) -> std::sync::Arc<AuditSettings> {
        std::sync::Arc::clone(
            &self
                .audit_settings
                .read()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }

    /// A short description for logs (never credentials).
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Sqlite(p) => format!("SQLite at {}", p.path.display()),
            Backend::Postgres(p) => p.describe(),
        }
    }

    pub fn dialect(&self) -> Dialect {
        match &self.backend {
            Backend::Sqlite(_) => Dialect::Sqlite,
            Backend::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Run `f` in one transaction: committed when it returns `Ok`, rolled back otherwise. The
    /// tenant revisions it bumps move once each, last, and are announced to the observers
    /// ([`Database::observe_revisions`]) before the commit.
    pub fn tx<T>(
        &self,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let token = next_token();
        let mut taken: Vec<(String, i64)> = Vec::new();
        let who = audit::current();
        let settings = self.audit_settings();
        let out = self.backend_tx(|tx| {
            let mut d = Deferring {
                tx,
                bumps: Vec::new(),
            };
            let v = audit::audited(&mut d, who.as_deref(), &settings, f)?;
            let bumps = d.bumps;
            self.take_revisions(tx, vec![bumps], token, &mut taken)?;
            Ok(v)
        });
        match &out {
            Ok(_) => COMMITTED.with(|c| *c.borrow_mut() = taken),
            Err(_) => self.withdraw(&taken, token),
        }
        out
    }

    /// At the end of a transaction: move the revision of each tenant its jobs changed, once per
    /// tenant (in tenant order, so transactions lock revision rows in one order) by the number
    /// of jobs that changed it, give the jobs those revisions in their order, and announce each
    /// before the commit. Returns each job's revisions; all of them are added to `taken`.
    fn take_revisions(
        &self,
        tx: &mut dyn Tx,
        jobs: Vec<Vec<String>>,
        token: u64,
        taken: &mut Vec<(String, i64)>,
    ) -> Result<Vec<Vec<(String, i64)>>, StorageError> {
        let mut moves: std::collections::BTreeMap<&str, i64> = Default::default();
        for t in jobs.iter().flatten() {
            *moves.entry(t.as_str()).or_default() += 1;
        }
        let mut next = std::collections::HashMap::new();
        for (tenant, n) in moves {
            let top = bump_by(tx, tenant, n)?;
            next.insert(tenant.to_string(), top - n + 1);
        }
        let mut out = Vec::with_capacity(jobs.len());
        for bumps in jobs {
            let mut revs = Vec::with_capacity(bumps.len());
            for tenant in bumps {
                let slot = next.get_mut(&tenant).ok_or_else(|| {
                    StorageError::Internal("revision not taken for a changed tenant".into())
                })?;
                let revision = *slot;
                *slot += 1;
                self.announce(&tenant, revision, token);
                taken.push((tenant.clone(), revision));
                revs.push((tenant, revision));
            }
            out.push(revs);
        }
        Ok(out)
    }

    fn backend_tx<T>(
        &self,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        match &self.backend {
            Backend::Sqlite(p) => p.tx(f),
            Backend::Postgres(p) => p.tx(f),
        }
    }

    /// Have `observer` told of every revision this database's transactions take (held weakly:
    /// a dropped observer is forgotten).
    pub fn observe_revisions(&self, observer: std::sync::Weak<dyn RevisionObserver>) {
        let mut all = self.observers.write().unwrap_or_else(|p| p.into_inner());
        all.retain(|o| o.strong_count() > 0);
        all.push(observer);
    }

    fn announce(&self, tenant: &str, revision: i64, token: u64) {
        let all = self.observers.read().unwrap_or_else(|p| p.into_inner());
        for o in all.iter().filter_map(std::sync::Weak::upgrade) {
            o.announce(tenant, revision, token);
        }
    }

    fn withdraw(&self, taken: &[(String, i64)], token: u64) {
        if taken.is_empty() {
            return;
        }
        let all = self.observers.read().unwrap_or_else(|p| p.into_inner());
        for o in all.iter().filter_map(std::sync::Weak::upgrade) {
            for (tenant, revision) in taken {
                o.withdraw(tenant, *revision, token);
            }
        }
    }

    /// Run a small write in a transaction it may share with the writes other threads submit
    /// meanwhile: while one group commits, the next one gathers, so concurrent writers pay one
    /// commit (one WAL flush, and one turn on the tenant revision row) per group instead of one
    /// each. Each job still gets its own revision: a group moves a tenant's revision by the
    /// number of its jobs that changed the tenant, in one statement at its end, so the revision
    /// row is held only while the commit flushes and, on PostgreSQL, a second group runs its
    /// statements meanwhile. When a job fails, the group is rolled back and each job runs again
    /// in a transaction of its own, so one write's error never touches another. `job` may
    /// therefore run more than once, and on another thread.
    pub fn tx_grouped<T: Send + 'static>(
        &self,
        mut job: impl FnMut(&mut dyn Tx) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        // Who makes the write is known on this thread; the job may run on another.
        let who = audit::current();
        let settings = self.audit_settings();
        let boxed: GroupJob = Box::new(move |tx: &mut dyn Tx| {
            audit::audited(tx, who.as_deref(), &settings, &mut job)
                .map(|v| Box::new(v) as Box<dyn std::any::Any + Send>)
        });
        let lock = || self.group.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut g = lock();
        let id = g.next;
        g.next += 1;
        g.queue.push((id, boxed));
        let (out, taken) = loop {
            if let Some(answer) = g.answers.remove(&id) {
                break answer;
            }
            if g.leaders < self.group_leaders && !g.queue.is_empty() {
                g.leaders += 1;
                let n = g.queue.len().min(GROUP_MAX);
                let batch: Vec<(u64, GroupJob)> = g.queue.drain(..n).collect();
                drop(g);
                let answers = self.run_group(batch);
                g = lock();
                g.leaders -= 1;
                g.answers.extend(answers);
                self.group.done.notify_all();
                continue;
            }
            g = self.group.done.wait(g).unwrap_or_else(|p| p.into_inner());
        };
        drop(g);
        if out.is_ok() {
            COMMITTED.with(|c| *c.borrow_mut() = taken);
        }
        out.and_then(|v| {
            v.downcast::<T>()
                .map(|b| *b)
                .map_err(|_| StorageError::Internal("grouped write: answer of another type".into()))
        })
    }

    /// One transaction for the whole batch; on any error, each job alone.
    fn run_group(&self, mut batch: Vec<(u64, GroupJob)>) -> Vec<(u64, GroupDone)> {
        if batch.len() > 1 {
            let token = next_token();
            let mut taken: Vec<(String, i64)> = Vec::new();
            let together = self.backend_tx(|tx| {
                let mut done = Vec::with_capacity(batch.len());
                for (id, job) in batch.iter_mut() {
                    let mut d = Deferring {
                        tx: &mut *tx,
                        bumps: Vec::new(),
                    };
                    let v = job(&mut d)?;
                    done.push((*id, v, d.bumps));
                }
                let bumps = done.iter_mut().map(|(_, _, b)| std::mem::take(b)).collect();
                let revs = self.take_revisions(tx, bumps, token, &mut taken)?;
                Ok(done
                    .into_iter()
                    .zip(revs)
                    .map(|((id, v, _), revs)| (id, (Ok(v), revs)))
                    .collect())
            });
            match together {
                Ok(out) => return out,
                Err(_) => self.withdraw(&taken, token),
            }
        }
        batch
            .into_iter()
            .map(|(id, mut job)| {
                let r = self.tx(|tx| job(tx));
                let taken = COMMITTED.with(|c| std::mem::take(&mut *c.borrow_mut()));
                (id, (r, taken))
            })
            .collect()
    }

    /// The tenant revision that the last committed write transaction of this thread moved
    /// `tenant` to, taken (a second call answers `None`). A write in this process thereby knows
    /// its own revision without another round trip, and the decision state can tell it from
    /// revisions written elsewhere.
    pub fn take_committed_revision(&self, tenant: &str) -> Option<i64> {
        COMMITTED.with(|c| {
            let mut c = c.borrow_mut();
            let i = c.iter().position(|(t, _)| t == tenant)?;
            Some(c.swap_remove(i).1)
        })
    }

    fn migrate(&self) -> Result<(), StorageError> {
        let set = match self.dialect() {
            Dialect::Sqlite => migrate::SQLITE,
            Dialect::Postgres => migrate::POSTGRES,
        };
        self.tx(|tx| migrate::apply(tx, set))
    }

    /// Hold the start-up lock while a replica writes what every start writes (base policies,
    /// the Tenant Manager's bootstrap): replicas starting together then write one after the
    /// other, and each finds what the one before it wrote. On PostgreSQL a session advisory lock
    /// on a connection of its own, released when the guard drops (or the process dies); the wait
    /// is bounded by `postgresql.statement-timeout`. SQLite's writes are serial already: no lock,
    /// every seed there is insert-if-absent.
    pub fn startup_lock(&self) -> Result<StartupLock, StorageError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(StartupLock { _held: None }),
            Backend::Postgres(p) => p
                .session_lock(STARTUP_LOCK)
                .map(|l| StartupLock { _held: Some(l) }),
        }
    }

    /// How long a caller may wait for a connection before the store reports `Unavailable`.
    pub fn acquire_timeout(&self) -> Duration {
        match &self.backend {
            Backend::Sqlite(_) => sqlite::BUSY_TIMEOUT,
            Backend::Postgres(p) => p.acquire_timeout,
        }
    }

    /// Pool gauges: (connections open, connections idle).
    pub fn pool_state(&self) -> (u32, u32) {
        match &self.backend {
            Backend::Sqlite(p) => p.state(),
            Backend::Postgres(p) => p.state(),
        }
    }
}

impl HealthStore for Database {
    fn ping(&self) -> Result<(), StorageError> {
        self.tx(|tx| tx.query("SELECT 1", &[]).map(|_| ()))
    }
}

thread_local! {
    /// (tenant, revision) of each tenant this thread's last committed write transaction moved.
    static COMMITTED: std::cell::RefCell<Vec<(String, i64)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A number per transaction, telling its announcements from those of a later one that takes
/// the same revision after it rolled back.
fn next_token() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Lock the row of `table` (`tenant`, `krn`) a read-modify-write is about to read, on
/// PostgreSQL: a concurrent write to the same row then waits for this one instead of turning an
/// update that asked for no particular version into a spurious `Stale`. SQLite's write
/// transactions are serial already.
pub(crate) fn lock_row(
    tx: &mut dyn Tx,
    table: &str,
    tenant: &str,
    krn: &str,
) -> Result<(), StorageError> {
    if tx.dialect() == Dialect::Postgres {
        tx.query(
            &format!("SELECT 1 FROM {table} WHERE tenant = $1 AND krn = $2 FOR UPDATE"),
            &[Val::from(tenant), Val::from(krn)],
        )?;
    }
    Ok(())
}

/// Note that a write transaction changes `tenant`: its revision moves once, at the end of the
/// transaction ([`Database::tx`]), or at once in a transaction that cannot defer.
pub(crate) fn bump_revision(tx: &mut dyn Tx, tenant: &str) -> Result<(), StorageError> {
    if !tx.defer_bump(tenant) {
        bump_by(tx, tenant, 1)?;
    }
    Ok(())
}

/// Move a tenant's revision by `n`; returns the new revision.
fn bump_by(tx: &mut dyn Tx, tenant: &str, n: i64) -> Result<i64, StorageError> {
    let rows = tx.query(
        "INSERT INTO tenant_revisions (tenant, revision) VALUES ($1, $2) \
         ON CONFLICT (tenant) DO UPDATE SET revision = tenant_revisions.revision + $2 \
         RETURNING revision",
        &[Val::from(tenant), Val::I64(n)],
    )?;
    rows.first()
        .map(|r| r.i64(0))
        .transpose()?
        .ok_or_else(|| StorageError::Internal("revision upsert returned no row".into()))
}

impl RevisionStore for Database {
    fn revision(&self, tenant: &str) -> Result<i64, StorageError> {
        self.tx(|tx| {
            let rows = tx.query(
                "SELECT revision FROM tenant_revisions WHERE tenant = $1",
                &[Val::from(tenant)],
            )?;
            Ok(rows.first().map(|r| r.i64(0)).transpose()?.unwrap_or(0))
        })
    }

    fn revisions(&self) -> Result<Vec<(String, i64)>, StorageError> {
        self.tx(|tx| {
            tx.query(
                "SELECT tenant, revision FROM tenant_revisions ORDER BY tenant",
                &[],
            )?
            .iter()
            .map(|r| Ok((r.string(0)?, r.i64(1)?)))
            .collect()
        })
    }
}
