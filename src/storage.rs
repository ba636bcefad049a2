//! Storage: capability traits over domain types, one SQL layer written once for both backends.
//!
//! Backends (`sqlite`, `postgres`) only run statements and convert driver values and errors into
//! [`Val`] and [`StorageError`] kinds; the capability implementations (`policies`) are written
//! once against the [`Tx`] trait with `$N` placeholders. Callers branch on error kinds, never on
//! the backend. The backend is chosen once, at the composition root, by [`Database::open`].

mod bulk;
mod directory;
mod err;
mod migrate;
mod policies;
mod postgres;
mod sqlite;
mod tenants;
mod value;

use std::time::Duration;

pub use bulk::{BulkCount, BulkStore, ROWS_PER_TX, TenantCounts};
pub use directory::{
    AttachmentStore, GroupFilter, GroupRecord, GroupStore, PoolRecord, PoolStore, ResourceFilter,
    ResourcePatch, ResourceRecord, ResourceStore, SnapshotPart, SnapshotStore, TenantSnapshot,
    UserFilter, UserPatch, UserRecord, UserStore,
};
pub use err::StorageError;
pub use policies::{NewPolicy, PolicyFilter, PolicyRecord, PolicySort};
pub use tenants::{
    CatalogRecord, CatalogStore, KeycloakServerRecord, KeycloakServerStore, NewTask, OutboxEvent,
    OutboxRecord, OutboxStore, TaskOutcome, TaskRecord, TaskStore, TenantFilter, TenantRecord,
    TenantStore,
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
    fn replace_policy(
        &self,
        tenant: &str,
        krn: &str,
        expected_version: Option<i64>,
        description: Option<&str>,
        statements: &str,
        now_ms: i64,
    ) -> Result<PolicyRecord, StorageError>;
    fn delete_policy(&self, tenant: &str, krn: &str) -> Result<(), StorageError>;
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
}

/// A write that may share its transaction with others ([`Database::tx_grouped`]).
type GroupJob =
    Box<dyn FnMut(&mut dyn Tx) -> Result<Box<dyn std::any::Any + Send>, StorageError> + Send>;

/// A job's answer: its value, or error, and the revision it bumped.
type GroupDone = (
    Result<Box<dyn std::any::Any + Send>, StorageError>,
    Option<(String, i64)>,
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
    leading: bool,
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
        let db = Database {
            backend,
            group: Group::default(),
        };
        db.migrate()?;
        Ok(db)
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

    /// Run `f` in one transaction: committed when it returns `Ok`, rolled back otherwise.
    pub fn tx<T>(
        &self,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        BUMPED.with(|b| b.borrow_mut().take());
        let out = match &self.backend {
            Backend::Sqlite(p) => p.tx(f),
            Backend::Postgres(p) => p.tx(f),
        };
        let bumped = BUMPED.with(|b| b.borrow_mut().take());
        if out.is_ok()
            && let Some(b) = bumped
        {
            COMMITTED.with(|c| *c.borrow_mut() = Some(b));
        }
        out
    }

    /// Run a small write in a transaction it may share with the writes other threads submit
    /// meanwhile: while one group commits, the next one gathers, so concurrent writers pay one
    /// commit (one WAL flush, and one turn on the tenant revision row, which every write locks
    /// until it commits) per group instead of one each. Each job still bumps its own revision.
    /// When a job fails, the group is rolled back and each job runs again in a transaction of
    /// its own, so one write's error never touches another. `job` may therefore run more than
    /// once, and on another thread.
    pub fn tx_grouped<T: Send + 'static>(
        &self,
        mut job: impl FnMut(&mut dyn Tx) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let boxed: GroupJob = Box::new(move |tx: &mut dyn Tx| {
            job(tx).map(|v| Box::new(v) as Box<dyn std::any::Any + Send>)
        });
        let lock = || self.group.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut g = lock();
        let id = g.next;
        g.next += 1;
        g.queue.push((id, boxed));
        let (out, bumped) = loop {
            if let Some(answer) = g.answers.remove(&id) {
                break answer;
            }
            if !g.leading && !g.queue.is_empty() {
                g.leading = true;
                let n = g.queue.len().min(GROUP_MAX);
                let batch: Vec<(u64, GroupJob)> = g.queue.drain(..n).collect();
                drop(g);
                let answers = self.run_group(batch);
                g = lock();
                g.leading = false;
                g.answers.extend(answers);
                self.group.done.notify_all();
                continue;
            }
            g = self.group.done.wait(g).unwrap_or_else(|p| p.into_inner());
        };
        drop(g);
        if out.is_ok()
            && let Some(b) = bumped
        {
            COMMITTED.with(|c| *c.borrow_mut() = Some(b));
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
            let together = self.tx(|tx| {
                let mut out = Vec::with_capacity(batch.len());
                for (id, job) in batch.iter_mut() {
                    let v = job(tx)?;
                    let bumped = BUMPED.with(|b| b.borrow_mut().take());
                    out.push((*id, (Ok(v), bumped)));
                }
                Ok(out)
            });
            COMMITTED.with(|c| c.borrow_mut().take());
            if let Ok(out) = together {
                return out;
            }
        }
        batch
            .into_iter()
            .map(|(id, mut job)| {
                let r = self.tx(|tx| job(tx));
                let bumped = COMMITTED.with(|c| c.borrow_mut().take());
                (id, (r, bumped))
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
            match c.as_ref() {
                Some((t, _)) if t == tenant => c.take().map(|(_, r)| r),
                _ => None,
            }
        })
    }

    fn migrate(&self) -> Result<(), StorageError> {
        let set = match self.dialect() {
            Dialect::Sqlite => migrate::SQLITE,
            Dialect::Postgres => migrate::POSTGRES,
        };
        self.tx(|tx| migrate::apply(tx, set))
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
    /// (tenant, revision) bumped by the transaction running on this thread.
    static BUMPED: std::cell::RefCell<Option<(String, i64)>> = const { std::cell::RefCell::new(None) };
    /// (tenant, revision) of this thread's last committed transaction that bumped one.
    static COMMITTED: std::cell::RefCell<Option<(String, i64)>> = const { std::cell::RefCell::new(None) };
}

/// Bump a tenant's revision inside a write transaction; returns the new revision.
pub(crate) fn bump_revision(tx: &mut dyn Tx, tenant: &str) -> Result<i64, StorageError> {
    let rows = tx.query(
        "INSERT INTO tenant_revisions (tenant, revision) VALUES ($1, 1) \
         ON CONFLICT (tenant) DO UPDATE SET revision = tenant_revisions.revision + 1 \
         RETURNING revision",
        &[Val::from(tenant)],
    )?;
    let revision = rows
        .first()
        .map(|r| r.i64(0))
        .transpose()?
        .ok_or_else(|| StorageError::Internal("revision upsert returned no row".into()))?;
    BUMPED.with(|b| *b.borrow_mut() = Some((tenant.to_string(), revision)));
    Ok(revision)
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
