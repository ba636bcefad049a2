//! The in-memory decision state: the policy engine of every tenant plus the memberships a
//! decision needs (user -> groups and their ancestors, resource -> pools), built from the
//! database and kept in step with it by per-tenant revision numbers.
//!
//! The store announces every revision a transaction of this process takes before that
//! transaction commits ([`RevisionObserver`](crate::storage::RevisionObserver)), so a revision of this process is known here before
//! anyone can see it. The write then knows the revision it committed
//! ([`Database::take_committed_revision`](crate::storage::Database::take_committed_revision)) and hands the decision state its changes, prepared
//! for the index before any lock is taken. The changes wait in a per-tenant record of revisions
//! until every earlier revision is accounted for, then apply in revision order; only a revision
//! that was never announced here (another replica's write), or whose writer did not report within
//! [`ANNOUNCED_WAIT`], makes a write reload the tenant. Other replicas' writes are picked up by
//! `refresh` (polled, and on NATS notice), which leaves alone the revisions this process
//! announced. A reload reads and builds the tenant outside every lock and swaps it in.
//!
//! One file a part: `load` (a tenant read and built, reloads, the refresh of other replicas'
//! writes), `revisions` (this process's revisions and the changes of its writes, applied in
//! order), `directory` (the per-tenant memberships, disabled entities and metadata a decision
//! reads), `documents` (stored policies as the engine's), `decide` (the decisions themselves).

mod decide;
mod directory;
mod documents;
mod load;
mod revisions;

pub use decide::{Picked, server_context};
pub use directory::{Disabled, group_and_ancestors, is_pool};
pub use documents::document_of;
pub use revisions::{ANNOUNCED_WAIT, Delta};

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use crate::policy::{BasePolicy, Engine};

use directory::TenantDir;
use revisions::Revisions;

pub struct DecisionState {
    inner: RwLock<Inner>,
    /// Pending changes per tenant (shared with the store, which announces revisions).
    revisions: std::sync::Arc<Revisions>,
    /// One reload at a time (each holds a tenant's rows and a second index while it builds).
    reloading: Mutex<()>,
    /// Whole-tenant reloads and incremental updates so far (metrics, tests).
    reloads: std::sync::atomic::AtomicU64,
    deltas: std::sync::atomic::AtomicU64,
    /// Revision notices received from other replicas.
    notices: std::sync::atomic::AtomicU64,
    /// Completed passes of [`DecisionState::refresh`] (each compared every tenant's revision).
    refresh_passes: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct Inner {
    engine: Engine,
    tenants: HashMap<String, TenantDir>,
}

impl DecisionState {
    pub fn new(base: Vec<BasePolicy>) -> DecisionState {
        DecisionState {
            inner: RwLock::new(Inner {
                engine: Engine::new(base),
                tenants: HashMap::new(),
            }),
            revisions: std::sync::Arc::new(Revisions::default()),
            reloading: Mutex::new(()),
            reloads: std::sync::atomic::AtomicU64::new(0),
            deltas: std::sync::atomic::AtomicU64::new(0),
            notices: std::sync::atomic::AtomicU64::new(0),
            refresh_passes: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Completed refresh passes since start (metrics; tests wait on it instead of sleeping).
    pub fn refresh_passes(&self) -> u64 {
        self.refresh_passes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Count a revision notice received from another replica.
    pub fn noticed(&self) {
        self.notices
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Revision notices received from other replicas since start.
    pub fn notice_count(&self) -> u64 {
        self.notices.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// (whole-tenant reloads, incremental updates) since start.
    pub fn update_counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.reloads.load(Relaxed), self.deltas.load(Relaxed))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The in-memory revision of a loaded tenant.
    fn loaded_revision(&self, tenant: &str) -> Option<i64> {
        self.read().tenants.get(tenant).map(|d| d.revision)
    }

    /// The in-memory revision of a tenant (0 when never loaded).
    pub fn revision(&self, tenant: &str) -> i64 {
        self.read().tenants.get(tenant).map_or(0, |d| d.revision)
    }

    /// The stored versions of the base policies, as the configuration holds them.
    pub fn set_base_versions(&self, versions: Vec<(String, i64)>) {
        self.write().engine.set_base_versions(versions);
    }

    /// The version of a policy a decision of `tenant` names now (`None`: not indexed, or its
    /// version is not known).
    pub fn policy_version(&self, tenant: &str, id: &str) -> Option<i64> {
        self.read().engine.policy_version(tenant, id)
    }

    /// True when a reason's policy id names a base policy (by its name).
    pub fn is_base_policy(&self, id: &str) -> bool {
        self.read().engine.is_base(id)
    }

    /// True when the tenant has anything stored in IAM (loaded here).
    pub fn knows_tenant(&self, tenant: &str) -> bool {
        self.read().tenants.contains_key(tenant)
    }
}
