//! The in-memory decision state: the policy engine of every tenant plus the memberships a
//! decision needs (user -> groups and their ancestors, resource -> pools), built from the
//! database and kept in step with it by per-tenant revision numbers.
//!
//! The store announces every revision a transaction of this process takes before that
//! transaction commits ([`RevisionObserver`]), so a revision of this process is known here before
//! anyone can see it. The write then knows the revision it committed
//! ([`Database::take_committed_revision`]) and hands the decision state its changes, prepared
//! for the index before any lock is taken. The changes wait in a per-tenant record of revisions
//! until every earlier revision is accounted for, then apply in revision order; only a revision
//! that was never announced here (another replica's write), or whose writer did not report within
//! [`ANNOUNCED_WAIT`], makes a write reload the tenant. Other replicas' writes are picked up by
//! `refresh` (polled, and on NATS notice), which leaves alone the revisions this process
//! announced. A reload reads and builds the tenant outside every lock and swaps it in.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::policy::{
    Action, BasePolicy, Decision, Effect, Engine, Env, Krn, Outcome, PolicyDocument, PolicyIndex,
    PolicyKind, Query, Statement, StoredPolicy,
};
use crate::storage::{
    Database, PolicyRecord, RevisionObserver, RevisionStore, SnapshotPart, SnapshotStore,
    StorageError,
};

/// Longest wait, from its announcement, for an earlier revision of this process whose writer
/// has not reported yet (committing, or reading its changes). A writer that fails withdraws its
/// revision at once; this bounds one that never reports.
pub const ANNOUNCED_WAIT: Duration = Duration::from_secs(3);

/// Policies read per page when a tenant loads.
const LOAD_PAGE: usize = 4096;

/// Memberships of one tenant.
#[derive(Debug, Default)]
struct TenantDir {
    revision: i64,
    /// Per user: its groups and their ancestors, then the pools of the user and of those groups,
    /// each once (engine-ready principals). A group in a pool has an entry of its pools, for
    /// questions asked of the group itself.
    principals_of_user: HashMap<String, Vec<Krn>>,
    pools_of_resource: HashMap<String, Vec<Krn>>,
    /// Users marked `enabled: false`: denied as principals.
    disabled_users: HashSet<String>,
    /// Registered resources marked `enabled: false`: denied as resources.
    disabled_resources: HashSet<String>,
    /// Metadata of the users and registered resources that have some (conditions read it).
    user_metadata: HashMap<String, Map<String, Value>>,
    resource_metadata: HashMap<String, Map<String, Value>>,
}

/// A metadata text as stored: its object, `None` when empty or unreadable.
fn metadata_object(text: &str) -> Option<Map<String, Value>> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) if !m.is_empty() => Some(m),
        _ => None,
    }
}

/// The context of the service's own checks of its callers: its clock as `kaa:CurrentTime`.
pub fn server_context() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "kaa:CurrentTime".into(),
        Value::String(crate::clock::rfc3339_ms(crate::clock::now_ms())),
    );
    m
}

/// Sets or clears the metadata of `krn` in `map`.
fn set_metadata(map: &mut HashMap<String, Map<String, Value>>, krn: String, text: &str) {
    match metadata_object(text) {
        Some(m) => {
            map.insert(krn, m);
        }
        None => {
            map.remove(&krn);
        }
    }
}

/// What conditions read in one evaluation: the request context, and the metadata of the
/// principal and of the resources as the decision state holds them.
#[derive(Debug)]
struct Attributes<'a> {
    context: &'a Map<String, Value>,
    principal: Option<&'a Map<String, Value>>,
    dir: Option<&'a TenantDir>,
}

impl<'a> Attributes<'a> {
    fn new(
        context: &'a Map<String, Value>,
        dir: Option<&'a TenantDir>,
        principals: &[Krn],
    ) -> Attributes<'a> {
        let principal = dir.and_then(|d| {
            principals
                .first()
                .and_then(|p| d.user_metadata.get(p.as_str()))
        });
        Attributes {
            context,
            principal,
            dir,
        }
    }
}

impl Env for Attributes<'_> {
    fn context(&self, key: &str) -> Option<&Value> {
        self.context.get(key)
    }
    fn principal_metadata(&self, key: &str) -> Option<&Value> {
        self.principal?.get(key)
    }
    fn resource_metadata(&self, resource: &Krn, key: &str) -> Option<&Value> {
        self.dir?.resource_metadata.get(resource.as_str())?.get(key)
    }
}

/// Why a decision is a deny before any policy is asked: its principal or its resource is
/// disabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disabled {
    /// A user of the principal set (the principal itself) is disabled.
    Principal(String),
    /// The resource is registered and disabled.
    Resource(String),
}

impl Disabled {
    /// `principal` or `resource`.
    pub fn kind(&self) -> &'static str {
        match self {
            Disabled::Principal(_) => "principal",
            Disabled::Resource(_) => "resource",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Disabled::Principal(k) => format!("the principal `{k}` is disabled"),
            Disabled::Resource(k) => format!("the resource `{k}` is disabled"),
        }
    }

    /// The decision it makes: a deny no policy can turn, without statements.
    pub fn decision() -> Decision {
        Decision::of(Outcome::ExplicitDeny)
    }
}

impl TenantDir {
    /// The disabled user among `principals`, if any.
    fn disabled_principal(&self, principals: &[Krn]) -> Option<Disabled> {
        if self.disabled_users.is_empty() {
            return None;
        }
        principals
            .iter()
            .find(|p| self.disabled_users.contains(p.as_str()))
            .map(|p| Disabled::Principal(p.as_str().to_string()))
    }

    fn disabled_resource(&self, resource: &Krn) -> Option<Disabled> {
        if self.disabled_resources.is_empty()
            || !self.disabled_resources.contains(resource.as_str())
        {
            return None;
        }
        Some(Disabled::Resource(resource.as_str().to_string()))
    }
}

/// Per resource: why it is denied whatever the policies say (`None`: the policies decide).
fn blocked(
    dir: Option<&TenantDir>,
    principals: &[Krn],
    resources: &[Krn],
) -> Vec<Option<Disabled>> {
    let Some(dir) = dir else {
        return vec![None; resources.len()];
    };
    let principal = dir.disabled_principal(principals);
    resources
        .iter()
        .map(|r| principal.clone().or_else(|| dir.disabled_resource(r)))
        .collect()
}

#[derive(Debug)]
struct Inner {
    engine: Engine,
    tenants: HashMap<String, TenantDir>,
}

/// One committed write, read and parsed for the index.
#[derive(Debug, Default)]
struct Prepared {
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
enum Slot {
    /// Taken by the transaction `token` (committing, or its writer is reading its changes).
    Announced { token: u64, at: Instant },
    /// Its changes, ready to apply.
    Ready(Prepared),
}

impl Slot {
    /// Still expected to report.
    fn live(&self) -> bool {
        match self {
            Slot::Announced { at, .. } => at.elapsed() < ANNOUNCED_WAIT,
            Slot::Ready(_) => true,
        }
    }
}

/// What this process committed in one tenant and has not applied yet.
#[derive(Debug, Default)]
struct Local {
    /// Revision -> where its changes are.
    pending: BTreeMap<i64, Slot>,
}

/// A tenant read and built outside the locks.
struct Built {
    revision: i64,
    index: PolicyIndex,
    dir: TenantDir,
}

/// The revisions of this process per tenant, as the store announces them and the writes report.
#[derive(Default)]
struct Revisions {
    /// Held while changes are applied or a reload is swapped in, so a tenant's in-memory
    /// revision only moves under it (lock order: `local`, then `inner`).
    local: Mutex<HashMap<String, Local>>,
    /// Signalled when a tenant's in-memory revision moved or a revision was withdrawn.
    moved: Condvar,
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

/// The statements document of a stored record as the engine's policy document.
pub fn document_of(rec: &PolicyRecord) -> Result<PolicyDocument, String> {
    if let Some(doc) = typed_document(rec) {
        return Ok(doc);
    }
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

/// A stored statement as the API writes it (`PolicyDocument::to_json`).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredStatement {
    effect: Effect,
    actions: Vec<String>,
    #[serde(default)]
    resources: Option<Vec<String>>,
    #[serde(default)]
    principals: Option<Vec<String>>,
    #[serde(default)]
    description: Option<String>,
}

/// The fast path of [`document_of`]: statements read straight into typed values and each KRN and
/// action parsed once. The document's rules are checked where it is indexed (`upsert`). `None`
/// when anything is unusual; the general path then reads it (and names the error).
fn typed_document(rec: &PolicyRecord) -> Option<PolicyDocument> {
    let kind = match rec.kind.as_str() {
        "identity" => PolicyKind::Identity,
        "resource" => PolicyKind::Resource,
        _ => return None,
    };
    let raw: Vec<StoredStatement> = serde_json::from_str(&rec.statements).ok()?;
    let mut statements = Vec::with_capacity(raw.len());
    for st in raw {
        statements.push(Statement {
            effect: st.effect,
            actions: st
                .actions
                .iter()
                .map(|a| Action::parse(a).ok())
                .collect::<Option<_>>()?,
            resources: st
                .resources
                .unwrap_or_default()
                .iter()
                .map(|r| Krn::parse(r).ok())
                .collect::<Option<_>>()?,
            principals: st
                .principals
                .unwrap_or_default()
                .iter()
                .map(|p| Krn::parse(p).ok())
                .collect::<Option<_>>()?,
            description: st.description,
            templates: Vec::new(),
            conditions: Default::default(),
        });
    }
    let doc = PolicyDocument {
        name: rec.name.clone(),
        kind,
        description: rec.description.clone(),
        statements,
    };
    Some(doc)
}

/// The index entry of a stored record with its attachment targets.
fn stored_policy(rec: &PolicyRecord, targets: Vec<Krn>) -> Result<StoredPolicy, String> {
    let document = document_of(rec)?;
    // A pool is an attachment target on both sides: its member resources take the statements
    // (`attached_pools`), and so do its member users and groups, whose principal sets hold the
    // pool (`attached_principals`).
    let attached_pools: Vec<Krn> = targets.iter().filter(|t| is_pool(t)).cloned().collect();
    let attached_principals = targets;
    Ok(StoredPolicy {
        id: rec.krn.clone(),
        document,
        attached_principals,
        attached_pools,
        resource: rec.resource_krn.as_deref().and_then(|r| Krn::parse(r).ok()),
    })
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

/// `principals` (a user's groups and their ancestors) followed by the pools of the user and of
/// each of those, each once.
fn with_pools(
    user: &str,
    mut principals: Vec<Krn>,
    pools_of: &HashMap<String, Vec<Krn>>,
) -> Vec<Krn> {
    let mut pools: Vec<Krn> = Vec::new();
    let owners = std::iter::once(user).chain(principals.iter().map(Krn::as_str));
    for p in owners.filter_map(|o| pools_of.get(o)).flatten() {
        if !pools.contains(p) {
            pools.push(p.clone());
        }
    }
    principals.extend(pools);
    principals
}

/// A user's principals beside itself: its groups and their ancestors, each once, in the order
/// of `groups`. `ancestry` caches each group's expansion.
fn expand_groups<'a>(
    groups: impl IntoIterator<Item = &'a str>,
    ancestry: &mut HashMap<String, Vec<Krn>>,
) -> Vec<Krn> {
    let mut out: Vec<Krn> = Vec::new();
    for g in groups {
        if !ancestry.contains_key(g) {
            let expanded = Krn::parse(g)
                .map(|k| group_and_ancestors(&k))
                .unwrap_or_default();
            ancestry.insert(g.to_string(), expanded);
        }
        for k in ancestry.get(g).into_iter().flatten() {
            if !out.contains(k) {
                out.push(k.clone());
            }
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

    /// (whole-tenant reloads, incremental updates) since start.
    pub fn update_counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.reloads.load(Relaxed), self.deltas.load(Relaxed))
    }

    fn lock_local(&self) -> std::sync::MutexGuard<'_, HashMap<String, Local>> {
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
    fn drain(&self, local: &mut HashMap<String, Local>, tenant: &str) -> bool {
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
    fn reload_at_least(
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

    /// The in-memory revision of a tenant (0 when never loaded).
    pub fn revision(&self, tenant: &str) -> i64 {
        self.read().tenants.get(tenant).map_or(0, |d| d.revision)
    }

    /// A principal's full set: itself, its groups and their ancestors, and `extra` (roles).
    pub fn principal_set(&self, tenant: &str, principal: &Krn, extra: &[Krn]) -> Vec<Krn> {
        let inner = self.read();
        let groups = inner
            .tenants
            .get(tenant)
            .and_then(|d| d.principals_of_user.get(principal.as_str()))
            .map_or(&[][..], Vec::as_slice);
        let mut out = Vec::with_capacity(1 + groups.len() + extra.len());
        out.push(principal.clone());
        out.extend(groups.iter().filter(|g| *g != principal).cloned());
        out.extend(extra.iter().cloned());
        out
    }

    /// The disabled user among `principals`, if any.
    pub fn disabled_principal(&self, tenant: &str, principals: &[Krn]) -> Option<Disabled> {
        self.read()
            .tenants
            .get(tenant)
            .and_then(|d| d.disabled_principal(principals))
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

    /// Decide every (action, resource) pair for one principal set: `[action][resource]`, and
    /// per resource why it is denied whatever the policies say (a disabled principal or
    /// resource: those decisions are `ExplicitDeny` without statements).
    pub fn decide_matrix(
        &self,
        tenant: &str,
        context: &Map<String, Value>,
        principals: &[Krn],
        actions: &[Action],
        resources: &[Krn],
    ) -> (Vec<Vec<Decision>>, Vec<Option<Disabled>>) {
        let (d, disabled, _) =
            self.decide_matrix_picking(tenant, context, principals, actions, resources, None);
        (d, disabled)
    }

    /// [`DecisionState::decide_matrix`], and for each decision `pick` takes (asked in order,
    /// action by action) the versions of the policies of its statements, read under the same
    /// lock as the decision.
    pub fn decide_matrix_picking(
        &self,
        tenant: &str,
        context: &Map<String, Value>,
        principals: &[Krn],
        actions: &[Action],
        resources: &[Krn],
        pick: Option<&mut dyn FnMut(Outcome) -> bool>,
    ) -> (Vec<Vec<Decision>>, Vec<Option<Disabled>>, Vec<Picked>) {
        let inner = self.read();
        let dir = inner.tenants.get(tenant);
        let disabled = blocked(dir, principals, resources);
        let decisions = if disabled.iter().all(Option::is_some) {
            let row = vec![Disabled::decision(); resources.len()];
            vec![row; actions.len()]
        } else {
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
            let env = Attributes::new(context, dir, principals);
            let mut decisions = inner.engine.decide_matrix_explained(
                tenant,
                &env,
                principals,
                actions,
                &with_pools,
            );
            for row in &mut decisions {
                for (d, why) in row.iter_mut().zip(&disabled) {
                    if why.is_some() {
                        *d = Disabled::decision();
                    }
                }
            }
            decisions
        };
        let mut picked = Vec::new();
        if let Some(pick) = pick {
            for (ai, row) in decisions.iter().enumerate() {
                for (ri, d) in row.iter().enumerate() {
                    if pick(d.outcome) {
                        picked.push(Picked {
                            action: ai,
                            resource: ri,
                            versions: versions_of(&inner.engine, tenant, d),
                            decision: d.clone(),
                        });
                    }
                }
            }
        }
        (decisions, disabled, picked)
    }

    /// The outcomes of [`DecisionState::decide_matrix`] without reasons: `[action][resource]`,
    /// and per resource why it is denied whatever the policies say. Nothing is cloned and no
    /// reason is built.
    pub fn decide_outcomes(
        &self,
        tenant: &str,
        context: &Map<String, Value>,
        principals: &[Krn],
        actions: &[Action],
        resources: &[Krn],
    ) -> (Vec<Vec<Outcome>>, Vec<Option<Disabled>>) {
        let (o, disabled, _) =
            self.decide_outcomes_picking(tenant, context, principals, actions, resources, None);
        (o, disabled)
    }

    /// [`DecisionState::decide_outcomes`], and for each decision `pick` takes (asked in order,
    /// action by action) the decision with its statements and their policies' versions, decided
    /// again under the same lock: only the picked decisions pay for reasons.
    pub fn decide_outcomes_picking(
        &self,
        tenant: &str,
        context: &Map<String, Value>,
        principals: &[Krn],
        actions: &[Action],
        resources: &[Krn],
        pick: Option<&mut dyn FnMut(Outcome) -> bool>,
    ) -> (Vec<Vec<Outcome>>, Vec<Option<Disabled>>, Vec<Picked>) {
        let inner = self.read();
        let dir = inner.tenants.get(tenant);
        let disabled = blocked(dir, principals, resources);
        let all_disabled = disabled.iter().all(Option::is_some);
        let with_pools: Vec<(&Krn, &[Krn])> = resources
            .iter()
            .map(|r| {
                let pools = dir
                    .and_then(|d| d.pools_of_resource.get(r.as_str()))
                    .map_or(&[][..], Vec::as_slice);
                (r, pools)
            })
            .collect();
        let env = Attributes::new(context, dir, principals);
        let mut outcomes = if all_disabled {
            let row = vec![Outcome::ExplicitDeny; resources.len()];
            vec![row; actions.len()]
        } else {
            inner
                .engine
                .decide_matrix_outcomes_with(tenant, &env, principals, actions, &with_pools)
        };
        if !all_disabled && disabled.iter().any(Option::is_some) {
            for row in &mut outcomes {
                for (o, why) in row.iter_mut().zip(&disabled) {
                    if why.is_some() {
                        *o = Outcome::ExplicitDeny;
                    }
                }
            }
        }
        let mut picked = Vec::new();
        if let Some(pick) = pick {
            for (ai, row) in outcomes.iter().enumerate() {
                for (ri, o) in row.iter().enumerate() {
                    if !pick(*o) {
                        continue;
                    }
                    let decision = if disabled[ri].is_some() {
                        Disabled::decision()
                    } else {
                        let (resource, pools) = with_pools[ri];
                        let q = Query {
                            env: &env,
                            principals,
                            action: &actions[ai],
                            resource,
                            resource_pools: pools,
                        };
                        inner.engine.decide(tenant, &q)
                    };
                    picked.push(Picked {
                        action: ai,
                        resource: ri,
                        versions: versions_of(&inner.engine, tenant, &decision),
                        decision,
                    });
                }
            }
        }
        (outcomes, disabled, picked)
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

    /// The one query about `resource` (with its pools), handed to `f` with the engine.
    fn with_query<R>(
        &self,
        tenant: &str,
        context: &Map<String, Value>,
        principals: &[Krn],
        action: &Action,
        resource: &Krn,
        f: impl FnOnce(&Engine, &Query, Option<&TenantDir>) -> R,
    ) -> R {
        let inner = self.read();
        let dir = inner.tenants.get(tenant);
        let pools = dir.and_then(|d| d.pools_of_resource.get(resource.as_str()));
        let env = Attributes::new(context, dir, principals);
        let q = Query {
            env: &env,
            principals,
            action,
            resource,
            resource_pools: pools.map_or(&[], Vec::as_slice),
        };
        f(&inner.engine, &q, dir)
    }

    /// True when the one decision is `Allow` (no reasons built). The service's own checks of
    /// its callers: a disabled user is refused, while a disabled resource stays manageable
    /// (enabling it again is an update of it).
    pub fn allows(
        &self,
        tenant: &str,
        principals: &[Krn],
        action: &Action,
        resource: &Krn,
    ) -> bool {
        let context = server_context();
        self.with_query(
            tenant,
            &context,
            principals,
            action,
            resource,
            |e, q, dir| {
                dir.and_then(|d| d.disabled_principal(principals)).is_none()
                    && e.decide_outcome(tenant, q) == Outcome::Allow
            },
        )
    }

    /// One decision.
    pub fn decide(
        &self,
        tenant: &str,
        principals: &[Krn],
        action: &Action,
        resource: &Krn,
    ) -> Decision {
        self.with_query(
            tenant,
            &server_context(),
            principals,
            action,
            resource,
            |e, q, dir| match blocked(dir, principals, std::slice::from_ref(resource))
                .pop()
                .flatten()
            {
                Some(_) => Disabled::decision(),
                None => e.decide(tenant, q),
            },
        )
    }

    /// A decision against the stored policies plus `add` minus `remove`, index unchanged.
    #[allow(clippy::too_many_arguments)]
    pub fn simulate(
        &self,
        tenant: &str,
        context: &Map<String, Value>,
        principals: &[Krn],
        action: &Action,
        resource: &Krn,
        add: &[StoredPolicy],
        remove: &[&str],
    ) -> (Decision, Option<Disabled>) {
        self.with_query(
            tenant,
            context,
            principals,
            action,
            resource,
            |e, q, dir| match blocked(dir, principals, std::slice::from_ref(resource))
                .pop()
                .flatten()
            {
                Some(why) => (Disabled::decision(), Some(why)),
                None => (e.simulate(tenant, q, add, remove), None),
            },
        )
    }
}

/// A decision picked for the decision log: its cell (`[action][resource]`), the decision with
/// its statements, and the version of each statement's policy (`None`: not known).
#[derive(Debug, Clone)]
pub struct Picked {
    pub action: usize,
    pub resource: usize,
    pub decision: Decision,
    pub versions: Vec<Option<i64>>,
}

fn versions_of(engine: &Engine, tenant: &str, d: &Decision) -> Vec<Option<i64>> {
    d.reasons
        .iter()
        .map(|r| engine.policy_version(tenant, &r.policy_id))
        .collect()
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
