//! The revisions of this process: announced by the store before each commit, reported by the
//! writes with their changes ([`Delta`], read and parsed before any lock), applied in revision
//! order; a gap no write of this process fills reloads the tenant.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::directory::{expand_groups, set_metadata, with_pools};
use super::documents::stored_policy;
use super::{DecisionState, Inner};
use crate::policy::{Krn, PolicyKind, StoredPolicy};
use crate::storage::{Database, PolicyRecord, RevisionObserver, RevisionStore, StorageError};

/// Longest wait, from its announcement, for an earlier revision of this process whose writer
/// has not reported yet (committing, or reading its changes). A writer that fails withdraws its
/// revision at once; this bounds one that never reports.
pub const ANNOUNCED_WAIT: Duration = Duration::from_secs(3);

/// What one committed write changed, for an incremental update of the index.
#[derive(Debug, Default, Clone)]
pub struct Delta {
    /// Policies to read again (absent ones are removed).
    pub policies: Vec<String>,
    /// Policies as the write left them, with their attachment targets when the write knows them
    /// (`None`: read them): nothing to read back.
    pub records: Vec<(PolicyRecord, Option<Vec<String>>)>,
    /// Policies the write deleted.
    pub deleted: Vec<String>,
    /// Users whose group memberships to read again.
    pub users: Vec<String>,
    /// Resources whose pool memberships to read again.
    pub resources: Vec<String>,
    /// Users whose enabled state the write set: (KRN, enabled).
    pub user_states: Vec<(String, bool)>,
    /// Registered resources whose enabled state the write set: (KRN, enabled).
    pub resource_states: Vec<(String, bool)>,
    /// Users whose metadata the write set: (KRN, metadata JSON).
    pub user_metadata: Vec<(String, String)>,
    /// Registered resources whose metadata the write set: (KRN, metadata JSON).
    pub resource_metadata: Vec<(String, String)>,
    /// The change is wider than these: reload the tenant.
    pub reload: bool,
}

impl Delta {
    pub fn reload() -> Delta {
        Delta {
            reload: true,
            ..Delta::default()
        }
    }

    pub fn policies(krns: Vec<String>) -> Delta {
        Delta {
            policies: krns,
            ..Delta::default()
        }
    }
}

/// One committed write, read and parsed for the index.
#[derive(Debug, Default)]
pub(super) struct Prepared {
    /// Policy KRN and the policy as stored now with its version (`None`: gone, or unreadable).
    policies: Vec<(String, Option<(StoredPolicy, i64)>)>,
    /// User KRN and its groups with their ancestors and the pools of each.
    users: Vec<(String, Vec<Krn>)>,
    /// Resource KRN and its pools.
    resources: Vec<(String, Vec<Krn>)>,
    /// Users and resources whose enabled state the write set.
    user_states: Vec<(String, bool)>,
    resource_states: Vec<(String, bool)>,
    /// Users and resources whose metadata the write set (KRN, metadata JSON).
    user_metadata: Vec<(String, String)>,
    resource_metadata: Vec<(String, String)>,
}

/// A revision of this process not applied yet.
#[derive(Debug)]
pub(super) enum Slot {
    /// Taken by the transaction `token` (committing, or its writer is reading its changes).
    Announced { token: u64, at: Instant },
    /// Its changes, ready to apply.
    Ready(Prepared),
}

impl Slot {
    /// Still expected to report.
    pub(super) fn live(&self) -> bool {
        match self {
            Slot::Announced { at, .. } => at.elapsed() < ANNOUNCED_WAIT,
            Slot::Ready(_) => true,
        }
    }
}

/// What this process committed in one tenant and has not applied yet.
#[derive(Debug, Default)]
pub(super) struct Local {
    /// Revision -> where its changes are.
    pub(super) pending: BTreeMap<i64, Slot>,
}

/// The revisions of this process per tenant, as the store announces them and the writes report.
#[derive(Default)]
pub(super) struct Revisions {
    /// Held while changes are applied or a reload is swapped in, so a tenant's in-memory
    /// revision only moves under it (lock order: `local`, then `inner`).
    pub(super) local: Mutex<HashMap<String, Local>>,
    /// Signalled when a tenant's in-memory revision moved or a revision was withdrawn.
    pub(super) moved: Condvar,
}

impl Revisions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Local>> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RevisionObserver for Revisions {
    fn announce(&self, tenant: &str, revision: i64, token: u64) {
        let now = Instant::now();
        let mut local = self.lock();
        let l = local.entry(tenant.to_string()).or_default();
        l.pending
            .insert(revision, Slot::Announced { token, at: now });
    }

    fn withdraw(&self, tenant: &str, revision: i64, token: u64) {
        let mut local = self.lock();
        if let Some(l) = local.get_mut(tenant)
            && matches!(l.pending.get(&revision), Some(Slot::Announced { token: t, .. }) if *t == token)
        {
            l.pending.remove(&revision);
            self.moved.notify_all();
        }
    }
}

impl DecisionState {
    pub(super) fn lock_local(&self) -> std::sync::MutexGuard<'_, HashMap<String, Local>> {
        self.revisions.lock()
    }

    /// Have `db` announce the revisions its transactions take (see the module documentation).
    pub fn observe(&self, db: &Database) {
        let observer: std::sync::Arc<dyn RevisionObserver> = self.revisions.clone();
        db.observe_revisions(std::sync::Arc::downgrade(&observer));
    }

    /// Bring a tenant up to the database after this process committed a write described by
    /// `delta` at `revision` (from [`Database::take_committed_revision`]; `None` when the write
    /// does not know it). Returns once the in-memory revision is at least the write's, so the
    /// next decision sees it.
    pub fn committed(
        &self,
        db: &Database,
        tenant: &str,
        revision: Option<i64>,
        delta: &Delta,
    ) -> Result<(), StorageError> {
        let loaded = self.loaded_revision(tenant);
        let Some(r) = revision else {
            let now = db.revision(tenant)?;
            if loaded.is_some_and(|b| b >= now) {
                return Ok(());
            }
            return self.reload_at_least(db, tenant, now);
        };
        if loaded.is_some_and(|b| b >= r) {
            return Ok(());
        }
        {
            // The store announced `r` before its commit; a store without observers did not.
            let mut local = self.lock_local();
            let l = local.entry(tenant.to_string()).or_default();
            l.pending.entry(r).or_insert(Slot::Announced {
                token: 0,
                at: Instant::now(),
            });
        }
        if delta.reload || loaded.is_none() {
            return self.reload_at_least(db, tenant, r);
        }
        let prepared = match self.prepare(db, tenant, delta) {
            Ok(p) => p,
            Err(e) => {
                // Nobody will report `r`: the revisions after it reload.
                if let Some(l) = self.lock_local().get_mut(tenant) {
                    l.pending.remove(&r);
                }
                self.revisions.moved.notify_all();
                return Err(e);
            }
        };
        let mut local = self.lock_local();
        local
            .entry(tenant.to_string())
            .or_default()
            .pending
            .insert(r, Slot::Ready(prepared));
        loop {
            if self.drain(&mut local, tenant) {
                self.revisions.moved.notify_all();
            }
            let now = match self.loaded_revision(tenant) {
                Some(now) if now >= r => return Ok(()),
                None => break,
                Some(now) => now,
            };
            // The next revision is one of ours, announced and still expected: it will report
            // (or be withdrawn) and wake us.
            let wait = match local.get(tenant).and_then(|l| l.pending.get(&(now + 1))) {
                Some(Slot::Announced { at, .. }) => ANNOUNCED_WAIT.saturating_sub(at.elapsed()),
                _ => Duration::ZERO,
            };
            if wait.is_zero() {
                break;
            }
            local = self
                .revisions
                .moved
                .wait_timeout(local, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        drop(local);
        // A revision before ours was never announced here (another replica's write), or its
        // writer failed or did not report in time. Read it all again.
        log::info!(
            "index: tenant `{tenant}`: a revision before {r} is not one this process can apply; reloading"
        );
        self.reload_at_least(db, tenant, r)
    }

    /// Apply the pending changes of `tenant` that follow its in-memory revision without a gap,
    /// and forget those a reload already covered. True when the revision moved.
    pub(super) fn drain(&self, local: &mut HashMap<String, Local>, tenant: &str) -> bool {
        let Some(l) = local.get_mut(tenant) else {
            return false;
        };
        let Some(cur) = self.loaded_revision(tenant) else {
            return false;
        };
        l.pending = l.pending.split_off(&(cur + 1));
        if !matches!(l.pending.get(&(cur + 1)), Some(Slot::Ready(_))) {
            return false;
        }
        let mut inner = self.write();
        let mut rev = cur;
        while let Some(Slot::Ready(_)) = l.pending.get(&(rev + 1)) {
            let Some(Slot::Ready(p)) = l.pending.remove(&(rev + 1)) else {
                break;
            };
            apply_prepared(&mut inner, tenant, p);
            self.deltas
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            rev += 1;
        }
        if let Some(dir) = inner.tenants.get_mut(tenant) {
            dir.revision = rev;
        }
        true
    }

    /// Read what `delta` names, as it is now, and parse it for the index (no lock held).
    fn prepare(
        &self,
        db: &Database,
        tenant: &str,
        delta: &Delta,
    ) -> Result<Prepared, StorageError> {
        use crate::storage::{AttachmentStore, GroupStore, Page, PolicyStore, PoolStore};
        const ALL: Page = Page {
            page: 1,
            size: 100_000,
        };
        let mut out = Prepared {
            user_states: delta.user_states.clone(),
            resource_states: delta.resource_states.clone(),
            user_metadata: delta.user_metadata.clone(),
            resource_metadata: delta.resource_metadata.clone(),
            ..Prepared::default()
        };
        let index_entry = |rec: &PolicyRecord, targets: Vec<String>| {
            if rec.kind == PolicyKind::Base.as_str() {
                return None;
            }
            let targets: Vec<Krn> = targets.iter().filter_map(|t| Krn::parse(t).ok()).collect();
            match stored_policy(rec, targets) {
                Ok(p) => Some((rec.krn.clone(), Some((p, rec.version)))),
                Err(e) => {
                    log::error!("index: {e}; removed (decisions fail toward deny)");
                    Some((rec.krn.clone(), None))
                }
            }
        };
        for (rec, targets) in &delta.records {
            let targets = match targets {
                Some(t) => t.clone(),
                None => db.targets_of(tenant, &rec.krn)?,
            };
            out.policies.extend(index_entry(rec, targets));
        }
        for krn in &delta.policies {
            match db.get_policy(tenant, krn) {
                Ok(rec) => {
                    let targets = db.targets_of(tenant, krn)?;
                    out.policies.extend(index_entry(&rec, targets));
                }
                Err(StorageError::NotFound) => out.policies.push((krn.clone(), None)),
                Err(e) => return Err(e),
            }
        }
        out.policies
            .extend(delta.deleted.iter().map(|k| (k.clone(), None)));
        let mut ancestry = HashMap::new();
        for u in &delta.users {
            let groups: Vec<String> = match db.groups_of_user(tenant, u, ALL) {
                Ok((gs, _)) => gs.into_iter().map(|g| g.krn).collect(),
                Err(StorageError::NotFound) => Vec::new(),
                Err(e) => return Err(e),
            };
            let expanded = expand_groups(groups.iter().map(String::as_str), &mut ancestry);
            let mut pools_of: HashMap<String, Vec<Krn>> = HashMap::new();
            for owner in std::iter::once(u.as_str()).chain(expanded.iter().map(Krn::as_str)) {
                let pools = db.pools_of_principal(tenant, owner)?;
                if !pools.is_empty() {
                    let pools = pools.iter().filter_map(|p| Krn::parse(p).ok()).collect();
                    pools_of.insert(owner.to_string(), pools);
                }
            }
            out.users
                .push((u.clone(), with_pools(u, expanded, &pools_of)));
        }
        for r in &delta.resources {
            let (pools, _) = db.list_pools(tenant, None, Some(r), None, ALL)?;
            let pools: Vec<Krn> = pools
                .iter()
                .filter_map(|p| Krn::parse(&p.krn).ok())
                .collect();
            out.resources.push((r.clone(), pools));
        }
        Ok(out)
    }
}

/// Apply one write's prepared changes (the caller holds the write lock).
fn apply_prepared(inner: &mut Inner, tenant: &str, p: Prepared) {
    for (krn, policy) in p.policies {
        match policy {
            Some((policy, version)) => {
                if let Err(e) = inner.engine.upsert_version(tenant, policy, version) {
                    log::error!("index: policy `{krn}` not indexed: {e}");
                    inner.engine.remove(tenant, &krn);
                }
            }
            None => {
                inner.engine.remove(tenant, &krn);
            }
        }
    }
    let dir = inner.tenants.entry(tenant.to_string()).or_default();
    for (u, principals) in p.users {
        if principals.is_empty() {
            dir.principals_of_user.remove(&u);
        } else {
            dir.principals_of_user.insert(u, principals);
        }
    }
    for (r, pools) in p.resources {
        if pools.is_empty() {
            dir.pools_of_resource.remove(&r);
        } else {
            dir.pools_of_resource.insert(r, pools);
        }
    }
    for (u, enabled) in p.user_states {
        if enabled {
            dir.disabled_users.remove(&u);
        } else {
            dir.disabled_users.insert(u);
        }
    }
    for (r, enabled) in p.resource_states {
        if enabled {
            dir.disabled_resources.remove(&r);
        } else {
            dir.disabled_resources.insert(r);
        }
    }
    for (u, text) in p.user_metadata {
        set_metadata(&mut dir.user_metadata, u, &text);
    }
    for (r, text) in p.resource_metadata {
        set_metadata(&mut dir.resource_metadata, r, &text);
    }
}
