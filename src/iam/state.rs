//! The in-memory decision state: the policy engine of every tenant plus the memberships a
//! decision needs (user -> groups, resource -> pools), built from the database and kept in step
//! with it by per-tenant revision numbers. Writes in this process reload their tenant right after
//! commit; other replicas' writes are picked up by `refresh` (polled, and on NATS notice).

use std::collections::HashMap;
use std::sync::RwLock;

use crate::policy::{
    Action, BasePolicy, Decision, Engine, Krn, Outcome, PolicyDocument, PolicyKind, Query,
    StoredPolicy,
};
use crate::storage::{Database, PolicyRecord, RevisionStore, SnapshotStore, StorageError};

/// Memberships of one tenant.
#[derive(Debug, Default)]
struct TenantDir {
    revision: i64,
    groups_of_user: HashMap<String, Vec<Krn>>,
    pools_of_resource: HashMap<String, Vec<Krn>>,
}

#[derive(Debug)]
struct Inner {
    engine: Engine,
    tenants: HashMap<String, TenantDir>,
}

pub struct DecisionState {
    inner: RwLock<Inner>,
    /// Serializes "catch up with the database" per process: a delta is applied only when it
    /// moves the tenant exactly one revision on; anything else reloads the tenant.
    catch_up: std::sync::Mutex<()>,
    /// Whole-tenant reloads and incremental updates so far (metrics, tests).
    reloads: std::sync::atomic::AtomicU64,
    deltas: std::sync::atomic::AtomicU64,
}

/// What one committed write changed, for an incremental update of the index.
#[derive(Debug, Default, Clone)]
pub struct Delta {
    /// Policies to read again (absent ones are removed).
    pub policies: Vec<String>,
    /// Users whose group memberships to read again.
    pub users: Vec<String>,
    /// Resources whose pool memberships to read again.
    pub resources: Vec<String>,
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

/// The statements document of a stored record as the engine's policy document.
pub fn document_of(rec: &PolicyRecord) -> Result<PolicyDocument, String> {
    let statements: serde_json::Value = serde_json::from_str(&rec.statements)
        .map_err(|e| format!("policy `{}`: stored statements unreadable: {e}", rec.krn))?;
    let doc = serde_json::json!({
        "name": rec.name,
        "type": rec.kind,
        "description": rec.description,
        "statements": statements,
    });
    PolicyDocument::from_json(&doc).map_err(|e| format!("policy `{}`: {e}", rec.krn))
}

/// Is this KRN a pool (a resource group) rather than a principal?
pub fn is_pool(k: &Krn) -> bool {
    k.service() == "iam" && k.resource_type() == "pool"
}

/// A group and every ancestor, from the group KRN's path (`group/a/b` -> `group/a/b`, `group/a`).
pub fn group_and_ancestors(group: &Krn) -> Vec<Krn> {
    let mut out = vec![group.clone()];
    let path = group.path();
    for depth in (1..=path.len()).rev() {
        let text = format!(
            "krn:{}:{}:{}:{}/{}",
            group.service(),
            group.tenant(),
            group.pool(),
            group.resource_type(),
            path[..depth].join("/")
        );
        if let Ok(k) = Krn::parse(&text) {
            out.push(k);
        }
    }
    out
}

impl DecisionState {
    pub fn new(base: Vec<BasePolicy>) -> DecisionState {
        DecisionState {
            inner: RwLock::new(Inner {
                engine: Engine::new(base),
                tenants: HashMap::new(),
            }),
            catch_up: std::sync::Mutex::new(()),
            reloads: std::sync::atomic::AtomicU64::new(0),
            deltas: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// (whole-tenant reloads, incremental updates) since start.
    pub fn update_counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.reloads.load(Relaxed), self.deltas.load(Relaxed))
    }

    /// Bring a tenant up to the database after this process committed a write described by
    /// `delta`: incrementally when nothing else was written meanwhile, else by a reload.
    pub fn committed(
        &self,
        db: &Database,
        tenant: &str,
        delta: &Delta,
    ) -> Result<(), StorageError> {
        let _one = self.catch_up.lock().unwrap_or_else(|p| p.into_inner());
        let before = self.read().tenants.get(tenant).map(|d| d.revision);
        let now = db.revision(tenant)?;
        match before {
            Some(b) if !delta.reload && now == b + 1 => self.apply(db, tenant, delta, now),
            Some(b) if now == b => Ok(()),
            _ => self.reload_unlocked(db, tenant),
        }
    }

    fn apply(
        &self,
        db: &Database,
        tenant: &str,
        delta: &Delta,
        revision: i64,
    ) -> Result<(), StorageError> {
        self.deltas
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        use crate::storage::{AttachmentStore, GroupStore, Page, PolicyStore, PoolStore};
        const ALL: Page = Page {
            page: 1,
            size: 100_000,
        };
        // Read everything first, then swap under the write lock.
        let mut policies = Vec::new();
        for krn in &delta.policies {
            match db.get_policy(tenant, krn) {
                Ok(rec) if rec.kind == PolicyKind::Base.as_str() => {}
                Ok(rec) => {
                    let targets: Vec<Krn> = db
                        .targets_of(tenant, krn)?
                        .iter()
                        .filter_map(|t| Krn::parse(t).ok())
                        .collect();
                    match document_of(&rec) {
                        Ok(document) => {
                            let (attached_pools, attached_principals) =
                                targets.into_iter().partition(is_pool);
                            policies.push((
                                krn.clone(),
                                Some(StoredPolicy {
                                    id: rec.krn.clone(),
                                    document,
                                    attached_principals,
                                    attached_pools,
                                    resource: rec
                                        .resource_krn
                                        .as_deref()
                                        .and_then(|r| Krn::parse(r).ok()),
                                }),
                            ));
                        }
                        Err(e) => {
                            log::error!("index: {e}; removed (decisions fail toward deny)");
                            policies.push((krn.clone(), None));
                        }
                    }
                }
                Err(StorageError::NotFound) => policies.push((krn.clone(), None)),
                Err(e) => return Err(e),
            }
        }
        let mut users = Vec::new();
        for u in &delta.users {
            let groups = match db.groups_of_user(tenant, u, ALL) {
                Ok((gs, _)) => gs.iter().filter_map(|g| Krn::parse(&g.krn).ok()).collect(),
                Err(StorageError::NotFound) => Vec::new(),
                Err(e) => return Err(e),
            };
            users.push((u.clone(), groups));
        }
        let mut resources = Vec::new();
        for r in &delta.resources {
            let (pools, _) = db.list_pools(tenant, None, Some(r), ALL)?;
            let pools: Vec<Krn> = pools
                .iter()
                .filter_map(|p| Krn::parse(&p.krn).ok())
                .collect();
            resources.push((r.clone(), pools));
        }
        let mut inner = self.write();
        for (krn, p) in policies {
            match p {
                Some(p) => {
                    if let Err(e) = inner.engine.upsert(tenant, p) {
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
        for (u, groups) in users {
            if groups.is_empty() {
                dir.groups_of_user.remove(&u);
            } else {
                dir.groups_of_user.insert(u, groups);
            }
        }
        for (r, pools) in resources {
            if pools.is_empty() {
                dir.pools_of_resource.remove(&r);
            } else {
                dir.pools_of_resource.insert(r, pools);
            }
        }
        dir.revision = revision;
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
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
        let _one = self.catch_up.lock().unwrap_or_else(|p| p.into_inner());
        self.reload_unlocked(db, tenant)
    }

    fn reload_unlocked(&self, db: &Database, tenant: &str) -> Result<(), StorageError> {
        self.reloads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let snap = db.tenant_snapshot(tenant)?;
        let mut attached: HashMap<&str, Vec<Krn>> = HashMap::new();
        for (policy, target) in &snap.attachments {
            if let Ok(k) = Krn::parse(target) {
                attached.entry(policy.as_str()).or_default().push(k);
            }
        }
        let mut policies = Vec::with_capacity(snap.policies.len());
        for rec in &snap.policies {
            // Base policies come from configuration, applied to every tenant by the engine.
            if rec.kind == PolicyKind::Base.as_str() {
                continue;
            }
            let document = match document_of(rec) {
                Ok(d) => d,
                Err(e) => {
                    log::error!("index: {e}; skipped (decisions fail toward deny)");
                    continue;
                }
            };
            let targets = attached.remove(rec.krn.as_str()).unwrap_or_default();
            let (attached_pools, attached_principals) = targets.into_iter().partition(is_pool);
            policies.push(StoredPolicy {
                id: rec.krn.clone(),
                document,
                attached_principals,
                attached_pools,
                resource: rec.resource_krn.as_deref().and_then(|r| Krn::parse(r).ok()),
            });
        }
        let mut dir = TenantDir {
            revision: snap.revision,
            ..TenantDir::default()
        };
        for (user, group) in &snap.memberships {
            if let Ok(g) = Krn::parse(group) {
                dir.groups_of_user.entry(user.clone()).or_default().push(g);
            }
        }
        for (resource, pool) in &snap.pool_members {
            if let Ok(p) = Krn::parse(pool) {
                dir.pools_of_resource
                    .entry(resource.clone())
                    .or_default()
                    .push(p);
            }
        }
        let mut inner = self.write();
        inner.engine.remove_tenant(tenant);
        inner.engine.ensure_tenant(tenant);
        for p in policies {
            let id = p.id.clone();
            if let Err(e) = inner.engine.upsert(tenant, p) {
                log::error!("index: policy `{id}` not indexed: {e}");
            }
        }
        inner.tenants.insert(tenant.to_string(), dir);
        Ok(())
    }

    /// Drop a tenant (unregistered).
    pub fn drop_tenant(&self, tenant: &str) {
        let mut inner = self.write();
        inner.engine.remove_tenant(tenant);
        inner.tenants.remove(tenant);
    }

    /// Reload every tenant whose database revision differs from ours; returns how many.
    pub fn refresh(&self, db: &Database) -> Result<usize, StorageError> {
        let revs = db.revisions()?;
        let stale: Vec<String> = {
            let inner = self.read();
            revs.iter()
                .filter(|(t, r)| inner.tenants.get(t).is_none_or(|d| d.revision != *r))
                .map(|(t, _)| t.clone())
                .collect()
        };
        for t in &stale {
            self.reload_tenant(db, t)?;
        }
        Ok(stale.len())
    }

    /// The in-memory revision of a tenant (0 when never loaded).
    pub fn revision(&self, tenant: &str) -> i64 {
        self.read().tenants.get(tenant).map_or(0, |d| d.revision)
    }

    /// A principal's full set: itself, its groups and their ancestors, and `extra` (roles).
    pub fn principal_set(&self, tenant: &str, principal: &Krn, extra: &[Krn]) -> Vec<Krn> {
        let inner = self.read();
        let mut out = vec![principal.clone()];
        if let Some(groups) = inner
            .tenants
            .get(tenant)
            .and_then(|d| d.groups_of_user.get(principal.as_str()))
        {
            for g in groups {
                for k in group_and_ancestors(g) {
                    if !out.contains(&k) {
                        out.push(k);
                    }
                }
            }
        }
        out.extend(extra.iter().cloned());
        out
    }

    /// Pools a resource is a member of.
    pub fn pools_of(&self, tenant: &str, resource: &Krn) -> Vec<Krn> {
        self.read()
            .tenants
            .get(tenant)
            .and_then(|d| d.pools_of_resource.get(resource.as_str()))
            .cloned()
            .unwrap_or_default()
    }

    /// Decide every (action, resource) pair for one principal set: `[action][resource]`.
    pub fn decide_matrix(
        &self,
        tenant: &str,
        principals: &[Krn],
        actions: &[Action],
        resources: &[Krn],
    ) -> Vec<Vec<Decision>> {
        let inner = self.read();
        let dir = inner.tenants.get(tenant);
        let with_pools: Vec<(Krn, Vec<Krn>)> = resources
            .iter()
            .map(|r| {
                let pools = dir
                    .and_then(|d| d.pools_of_resource.get(r.as_str()))
                    .cloned()
                    .unwrap_or_default();
                (r.clone(), pools)
            })
            .collect();
        inner
            .engine
            .decide_matrix(tenant, principals, actions, &with_pools)
    }

    /// The outcomes of [`DecisionState::decide_matrix`] without reasons: `[action][resource]`.
    /// Nothing is cloned and no reason is built.
    pub fn decide_outcomes(
        &self,
        tenant: &str,
        principals: &[Krn],
        actions: &[Action],
        resources: &[Krn],
    ) -> Vec<Vec<Outcome>> {
        let inner = self.read();
        let dir = inner.tenants.get(tenant);
        let with_pools: Vec<(&Krn, &[Krn])> = resources
            .iter()
            .map(|r| {
                let pools = dir
                    .and_then(|d| d.pools_of_resource.get(r.as_str()))
                    .map_or(&[][..], Vec::as_slice);
                (r, pools)
            })
            .collect();
        inner
            .engine
            .decide_matrix_outcomes(tenant, principals, actions, &with_pools)
    }

    /// True when the one decision is `Allow` (no reasons built).
    pub fn allows(
        &self,
        tenant: &str,
        principals: &[Krn],
        action: &Action,
        resource: &Krn,
    ) -> bool {
        let inner = self.read();
        let pools = inner
            .tenants
            .get(tenant)
            .and_then(|d| d.pools_of_resource.get(resource.as_str()));
        let q = Query {
            principals,
            action,
            resource,
            resource_pools: pools.map_or(&[], Vec::as_slice),
        };
        inner.engine.decide_outcome(tenant, &q) == Outcome::Allow
    }

    /// One decision.
    pub fn decide(
        &self,
        tenant: &str,
        principals: &[Krn],
        action: &Action,
        resource: &Krn,
    ) -> Decision {
        let inner = self.read();
        let pools = inner
            .tenants
            .get(tenant)
            .and_then(|d| d.pools_of_resource.get(resource.as_str()));
        let q = Query {
            principals,
            action,
            resource,
            resource_pools: pools.map_or(&[], Vec::as_slice),
        };
        inner.engine.decide(tenant, &q)
    }

    /// A decision against the stored policies plus `add` minus `remove`, index unchanged.
    pub fn simulate(
        &self,
        tenant: &str,
        principals: &[Krn],
        action: &Action,
        resource: &Krn,
        add: &[StoredPolicy],
        remove: &[&str],
    ) -> Decision {
        let inner = self.read();
        let pools = inner
            .tenants
            .get(tenant)
            .and_then(|d| d.pools_of_resource.get(resource.as_str()));
        let q = Query {
            principals,
            action,
            resource,
            resource_pools: pools.map_or(&[], Vec::as_slice),
        };
        inner.engine.simulate(tenant, &q, add, remove)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_follow_the_group_path() {
        let g = Krn::parse("krn:iam:t1::group/a/b/c").unwrap();
        let got: Vec<String> = group_and_ancestors(&g)
            .iter()
            .map(|k| k.as_str().to_string())
            .collect();
        assert_eq!(
            got,
            [
                "krn:iam:t1::group/a/b/c",
                "krn:iam:t1::group/a/b",
                "krn:iam:t1::group/a"
            ]
        );
        let top = Krn::parse("krn:iam:t1::group/a").unwrap();
        assert_eq!(group_and_ancestors(&top).len(), 1);
    }
}
