//! Loading: a tenant read page by page and built outside every lock, then swapped in; every
//! tenant at start; the refresh that picks up other replicas' writes.

use std::collections::HashMap;
use std::time::Instant;

use super::DecisionState;
use super::directory::{TenantDir, expand_groups, set_metadata, with_pools};
use super::documents::stored_policy;
use super::revisions::Slot;
use crate::policy::{Krn, PolicyIndex, PolicyKind, StoredPolicy};
use crate::storage::{Database, RevisionStore, SnapshotPart, SnapshotStore, StorageError};

/// Policies read per page when a tenant loads.
const LOAD_PAGE: usize = 4096;

/// A tenant read and built outside the locks.
struct Built {
    revision: i64,
    index: PolicyIndex,
    dir: TenantDir,
}

impl DecisionState {
    /// Another replica committed `revision` in `tenant`: read the tenant again unless this
    /// process is already there.
    pub fn refresh_tenant(
        &self,
        db: &Database,
        tenant: &str,
        revision: i64,
    ) -> Result<(), StorageError> {
        self.reload_at_least(db, tenant, revision)
    }

    /// Load every tenant that has a revision in the database.
    pub fn load_all(&self, db: &Database) -> Result<usize, StorageError> {
        let revs = db.revisions()?;
        for (tenant, _) in &revs {
            self.reload_tenant(db, tenant)?;
        }
        Ok(revs.len())
    }

    /// Rebuild one tenant from the database.
    pub fn reload_tenant(&self, db: &Database, tenant: &str) -> Result<(), StorageError> {
        let _one = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let built = self.build(db, tenant)?;
        self.install(tenant, built, true);
        Ok(())
    }

    /// Reload the tenant unless its in-memory revision reaches `revision` by the time this
    /// reload's turn comes (another reload or the pending writes may have covered it).
    pub(super) fn reload_at_least(
        &self,
        db: &Database,
        tenant: &str,
        revision: i64,
    ) -> Result<(), StorageError> {
        let _one = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        if self.loaded_revision(tenant).is_some_and(|r| r >= revision) {
            return Ok(());
        }
        let built = self.build(db, tenant)?;
        self.install(tenant, built, false);
        Ok(())
    }

    /// Swap a built tenant in when it is newer than the one in memory (or always, `force`), then
    /// apply the pending changes that follow it.
    fn install(&self, tenant: &str, built: Built, force: bool) {
        let mut local = self.lock_local();
        let replaced = {
            let mut inner = self.write();
            let cur = inner.tenants.get(tenant).map(|d| d.revision);
            if force || cur.is_none_or(|c| built.revision > c) {
                let old = inner.engine.replace_tenant(tenant, built.index);
                let old_dir = inner.tenants.insert(tenant.to_string(), built.dir);
                (old, old_dir)
            } else {
                (built.index, Some(built.dir))
            }
        };
        self.drain(&mut local, tenant);
        self.revisions.moved.notify_all();
        drop(local);
        // Freed here, outside every lock.
        drop(replaced);
    }

    /// Read a tenant page by page and build its index and memberships, outside every lock: the
    /// database thread reads and parses, a second thread indexes.
    fn build(&self, db: &Database, tenant: &str) -> Result<Built, StorageError> {
        self.reloads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let started = Instant::now();
        let mut revision = 0;
        let mut attached: HashMap<String, Vec<Krn>> = HashMap::new();
        let mut dir = TenantDir::default();
        let mut groups_of: HashMap<String, Vec<String>> = HashMap::new();
        let mut pools_of: HashMap<String, Vec<Krn>> = HashMap::new();
        let (pages_tx, pages_rx) = std::sync::mpsc::sync_channel::<Vec<(StoredPolicy, i64)>>(2);
        let (index, read) = std::thread::scope(|scope| {
            let indexer = scope.spawn(move || {
                let mut index = PolicyIndex::new();
                for page in pages_rx {
                    for (p, version) in page {
                        let id = p.id.clone();
                        if let Err(e) = index.upsert_version(p, version) {
                            log::error!("index: policy `{id}` not indexed: {e}");
                        }
                    }
                }
                index
            });
            let mut pages_tx = Some(pages_tx);
            let read = db.tenant_snapshot_paged(tenant, LOAD_PAGE, &mut |part| {
                match part {
                    SnapshotPart::Revision(r) => revision = r,
                    SnapshotPart::Attachments(pairs) => {
                        for (policy, target) in pairs {
                            if let Ok(k) = Krn::parse(&target) {
                                attached.entry(policy).or_default().push(k);
                            }
                        }
                    }
                    SnapshotPart::Memberships(pairs) => {
                        for (user, group) in pairs {
                            groups_of.entry(user).or_default().push(group);
                        }
                    }
                    SnapshotPart::PoolPrincipals(pairs) => {
                        for (principal, pool) in pairs {
                            if let Ok(p) = Krn::parse(&pool) {
                                pools_of.entry(principal).or_default().push(p);
                            }
                        }
                    }
                    SnapshotPart::Metadata { users, resources } => {
                        for (krn, text) in users {
                            set_metadata(&mut dir.user_metadata, krn, &text);
                        }
                        for (krn, text) in resources {
                            set_metadata(&mut dir.resource_metadata, krn, &text);
                        }
                    }
                    SnapshotPart::Disabled { users, resources } => {
                        dir.disabled_users = users.into_iter().collect();
                        dir.disabled_resources = resources.into_iter().collect();
                    }
                    SnapshotPart::PoolMembers(pairs) => {
                        for (resource, pool) in pairs {
                            if let Ok(p) = Krn::parse(&pool) {
                                dir.pools_of_resource.entry(resource).or_default().push(p);
                            }
                        }
                    }
                    SnapshotPart::Policies(records) => {
                        let mut page = Vec::with_capacity(records.len());
                        for rec in records {
                            // Base policies come from configuration, applied to every tenant.
                            if rec.kind == PolicyKind::Base.as_str() {
                                continue;
                            }
                            let targets = attached.remove(rec.krn.as_str()).unwrap_or_default();
                            match stored_policy(&rec, targets) {
                                Ok(p) => page.push((p, rec.version)),
                                Err(e) => {
                                    log::error!("index: {e}; skipped (decisions fail toward deny)")
                                }
                            }
                        }
                        if let Some(tx) = &pages_tx
                            && tx.send(page).is_err()
                        {
                            pages_tx = None;
                        }
                    }
                }
                Ok(())
            });
            drop(pages_tx);
            let index = indexer.join().unwrap_or_else(|_| {
                log::error!("index: the indexing thread of tenant `{tenant}` failed");
                PolicyIndex::new()
            });
            (index, read)
        });
        read?;
        let mut ancestry = HashMap::new();
        dir.principals_of_user = groups_of
            .iter()
            .map(|(user, gs)| {
                let expanded = expand_groups(gs.iter().map(String::as_str), &mut ancestry);
                (user.clone(), with_pools(user, expanded, &pools_of))
            })
            .collect();
        // Users and groups in a pool without an entry yet (no group of their own).
        for principal in pools_of.keys() {
            if !dir.principals_of_user.contains_key(principal) {
                let own = with_pools(principal, Vec::new(), &pools_of);
                dir.principals_of_user.insert(principal.clone(), own);
            }
        }
        log::info!(
            "index: tenant `{tenant}` read at revision {revision}: {} policies, {} statements in {} ms",
            index.policy_count(),
            index.statement_count(),
            started.elapsed().as_millis()
        );
        dir.revision = revision;
        Ok(Built {
            revision,
            index,
            dir,
        })
    }

    /// Drop a tenant (unregistered).
    pub fn drop_tenant(&self, tenant: &str) {
        let mut local = self.lock_local();
        local.remove(tenant);
        let mut inner = self.write();
        inner.engine.remove_tenant(tenant);
        inner.tenants.remove(tenant);
    }

    /// Reload every tenant whose database revision differs from ours; returns how many. The
    /// revisions this process announced are not stale: its writes are about to apply them.
    pub fn refresh(&self, db: &Database) -> Result<usize, StorageError> {
        // Read before the database: writes of this process may move a revision past what the
        // database answered by the time it is compared.
        let before: HashMap<String, i64> = self
            .read()
            .tenants
            .iter()
            .map(|(t, d)| (t.clone(), d.revision))
            .collect();
        let revs = db.revisions()?;
        let mut stale: Vec<(String, bool)> = Vec::new();
        {
            let mut local = self.lock_local();
            for (t, r) in &revs {
                let (t, r) = (t.as_str(), *r);
                let Some(cur) = self.loaded_revision(t) else {
                    stale.push((t.to_string(), true));
                    continue;
                };
                if cur == r {
                    continue;
                }
                if cur > r {
                    if before.get(t).is_some_and(|b| *b > r) {
                        // The database went back (restored): take it as it is.
                        log::warn!(
                            "index: tenant `{t}` is at revision {r} in the database, behind this replica; reloading"
                        );
                        stale.push((t.to_string(), true));
                    }
                    continue;
                }
                let Some(l) = local.get_mut(t) else {
                    stale.push((t.to_string(), false));
                    continue;
                };
                // Every revision in between was announced here before it committed: the writes
                // of this process apply them.
                let ours = r - cur <= 100_000
                    && (cur + 1..=r).all(|x| l.pending.get(&x).is_some_and(Slot::live));
                if !ours {
                    stale.push((t.to_string(), false));
                }
            }
        }
        for (t, force) in &stale {
            log::info!("index: tenant `{t}` changed elsewhere; reloading");
            let _one = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
            let built = self.build(db, t)?;
            self.install(t, built, *force);
        }
        self.refresh_passes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(stale.len())
    }
}
