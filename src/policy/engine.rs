//! The engine of all tenants: one [`PolicyIndex`] per tenant plus the base policies from config,
//! which take part in every decision of every tenant. Base policies without `${tenant}` live in one
//! shared index; those with it are instantiated per tenant, kept with the tenant's index once the
//! tenant has one, and cached (bounded) for tenants that have none.

use std::sync::{Arc, RwLock};

use rustc_hash::FxHashMap;

use super::action::Action;
use super::base::BasePolicy;
use super::condition::{Env, NoEnv};
use super::err::IndexError;
use super::index::{
    self, Decision, Hits, Layer, Outcome, PolicyIndex, Query, ResourceRef, StoredPolicy, Traced,
    Verdict, decide_into, simulated,
};
use super::krn::Krn;

/// Most tenants without stored policies whose instantiated base policies are cached.
const BASE_CACHE_MAX: usize = 1024;

/// All tenants plus the base policies.
#[derive(Debug)]
pub struct Engine {
    base: Vec<BasePolicy>,
    /// Base policies that do not use `${tenant}`.
    fixed: PolicyIndex,
    tenants: FxHashMap<String, Tenant>,
    /// Instantiated base policies of tenants not in `tenants`.
    cache: RwLock<FxHashMap<String, Arc<PolicyIndex>>>,
    /// The stored version of each base policy, by name, when it is known.
    base_versions: FxHashMap<String, i64>,
}

#[derive(Debug, Clone)]
struct Tenant {
    index: PolicyIndex,
    /// Base policies that use `${tenant}`, instantiated for this tenant.
    base: Arc<PolicyIndex>,
}

impl Default for Engine {
    fn default() -> Engine {
        Engine::new(Vec::new())
    }
}

impl Engine {
    /// An engine with these base policies. Names identify base policies: a later one replaces
    /// an earlier one of the same name.
    pub fn new(base: Vec<BasePolicy>) -> Engine {
        let mut distinct: Vec<BasePolicy> = Vec::with_capacity(base.len());
        for b in base {
            distinct.retain(|d| d.name() != b.name());
            distinct.push(b);
        }
        let mut fixed = PolicyIndex::new();
        for b in distinct.iter().filter(|b| !b.uses_tenant()) {
            fixed.upsert_unchecked(&stored(b, ""));
        }
        Engine {
            base: distinct,
            fixed,
            tenants: FxHashMap::default(),
            cache: RwLock::new(FxHashMap::default()),
            base_versions: FxHashMap::default(),
        }
    }

    /// The base policies, one per name.
    pub fn base_policies(&self) -> &[BasePolicy] {
        &self.base
    }

    /// Adds or replaces a policy of `tenant`.
    pub fn upsert(&mut self, tenant: &str, p: StoredPolicy) -> Result<(), IndexError> {
        p.validate()?;
        self.tenant_mut(tenant).index.upsert(p)
    }

    /// [`Engine::upsert`] of the policy as stored at `version` (what a decision log names).
    pub fn upsert_version(
        &mut self,
        tenant: &str,
        p: StoredPolicy,
        version: i64,
    ) -> Result<(), IndexError> {
        p.validate()?;
        self.tenant_mut(tenant).index.upsert_version(p, version)
    }

    /// The stored versions of the base policies, by name (the statements they were stored with
    /// are the ones this engine holds).
    pub fn set_base_versions(&mut self, versions: impl IntoIterator<Item = (String, i64)>) {
        self.base_versions = versions.into_iter().collect();
    }

    /// The version of the policy a [`Reason`](super::Reason) of `tenant` names: a policy of the
    /// tenant as indexed, else a base policy by name. `None` when it is not known.
    pub fn policy_version(&self, tenant: &str, id: &str) -> Option<i64> {
        if let Some(v) = self
            .tenants
            .get(tenant)
            .and_then(|t| t.index.version_of(id))
        {
            return Some(v);
        }
        if self.base.iter().any(|b| b.name() == id) {
            return self.base_versions.get(id).copied();
        }
        None
    }

    /// True when `id` names a base policy (a reason's policy id is its name).
    pub fn is_base(&self, id: &str) -> bool {
        self.base.iter().any(|b| b.name() == id)
    }

    /// Registers `tenant` without policies, so that its base policies are instantiated once now
    /// rather than on its first decision.
    pub fn ensure_tenant(&mut self, tenant: &str) {
        self.tenant_mut(tenant);
    }

    fn tenant_mut(&mut self, tenant: &str) -> &mut Tenant {
        if !self.tenants.contains_key(tenant) {
            // Take over the cached base policies of the tenant, or instantiate them.
            let cached = self.cache.write().ok().and_then(|mut c| c.remove(tenant));
            let base = cached.unwrap_or_else(|| self.tenant_base(tenant));
            self.tenants.insert(
                tenant.to_owned(),
                Tenant {
                    index: PolicyIndex::new(),
                    base,
                },
            );
        }
        self.tenants
            .entry(tenant.to_owned())
            .or_insert_with(|| Tenant {
                index: PolicyIndex::new(),
                base: Arc::new(PolicyIndex::new()),
            })
    }

    pub fn remove(&mut self, tenant: &str, id: &str) -> bool {
        self.tenants
            .get_mut(tenant)
            .is_some_and(|t| t.index.remove(id))
    }

    /// Replaces the stored policies of `tenant` by `index`, built elsewhere (so that a reload
    /// builds outside the caller's lock and swaps).
    /// Returns the index it replaced, for the caller to drop outside its locks (freeing a large
    /// index takes a while).
    pub fn replace_tenant(&mut self, tenant: &str, index: PolicyIndex) -> PolicyIndex {
        std::mem::replace(&mut self.tenant_mut(tenant).index, index)
    }

    /// Forgets every policy of `tenant`.
    pub fn remove_tenant(&mut self, tenant: &str) {
        self.tenants.remove(tenant);
        if let Ok(mut cache) = self.cache.write() {
            cache.remove(tenant);
        }
    }

    /// The revision of the tenant's index; 0 for a tenant never written.
    pub fn revision(&self, tenant: &str) -> u64 {
        self.tenants.get(tenant).map_or(0, |t| t.index.revision())
    }

    /// The tenant's stored policies (base policies are not in it).
    pub fn tenant(&self, tenant: &str) -> Option<&PolicyIndex> {
        self.tenants.get(tenant).map(|t| &t.index)
    }

    /// Names of the tenants that have an index.
    pub fn tenant_names(&self) -> impl Iterator<Item = &str> {
        self.tenants.keys().map(String::as_str)
    }

    /// The tenant's policies and the base policies instantiated for `tenant`.
    pub fn decide(&self, tenant: &str, q: &Query) -> Decision {
        let base = self.base_of(tenant);
        let layers = self.layers(tenant, &base, None);
        let mut hits = Hits::default();
        decide_into(&layers, &[], q, &mut hits);
        hits.into_decision()
    }

    /// [`Engine::decide`] with [`Decision::checks`]: what the conditions of the statements found
    /// compared.
    pub fn explain(&self, tenant: &str, q: &Query) -> Decision {
        let base = self.base_of(tenant);
        let layers = self.layers(tenant, &base, None);
        let mut hits = Traced::default();
        decide_into(&layers, &[], q, &mut hits);
        hits.into_decision()
    }

    /// The outcome of [`Engine::decide`] without its reasons.
    pub fn decide_outcome(&self, tenant: &str, q: &Query) -> Outcome {
        let base = self.base_of(tenant);
        let layers = self.layers(tenant, &base, None);
        let mut v = Verdict::default();
        decide_into(&layers, &[], q, &mut v);
        v.0
    }

    /// [`PolicyIndex::decide_matrix`] over the tenant's and the base policies.
    pub fn decide_matrix(
        &self,
        tenant: &str,
        principals: &[Krn],
        actions: &[Action],
        resources: &[(Krn, Vec<Krn>)],
    ) -> Vec<Vec<Decision>> {
        self.decide_matrix_with(tenant, &NoEnv, principals, actions, resources)
    }

    /// [`Engine::decide_matrix`] with the request context and metadata conditions read.
    pub fn decide_matrix_with<R: ResourceRef>(
        &self,
        tenant: &str,
        env: &dyn Env,
        principals: &[Krn],
        actions: &[Action],
        resources: &[R],
    ) -> Vec<Vec<Decision>> {
        let base = self.base_of(tenant);
        index::decide_matrix(
            &self.layers(tenant, &base, None),
            env,
            principals,
            actions,
            resources,
        )
    }

    /// [`PolicyIndex::decide_matrix_outcomes`] over the tenant's and the base policies: the
    /// outcomes of [`Engine::decide_matrix`] without reasons.
    pub fn decide_matrix_outcomes<R: ResourceRef>(
        &self,
        tenant: &str,
        principals: &[Krn],
        actions: &[Action],
        resources: &[R],
    ) -> Vec<Vec<Outcome>> {
        self.decide_matrix_outcomes_with(tenant, &NoEnv, principals, actions, resources)
    }

    /// [`Engine::decide_matrix_with`] with [`Decision::checks`] (explanations).
    pub fn decide_matrix_explained<R: ResourceRef>(
        &self,
        tenant: &str,
        env: &dyn Env,
        principals: &[Krn],
        actions: &[Action],
        resources: &[R],
    ) -> Vec<Vec<Decision>> {
        let base = self.base_of(tenant);
        index::decide_matrix_explained(
            &self.layers(tenant, &base, None),
            env,
            principals,
            actions,
            resources,
        )
    }

    /// [`Engine::decide_matrix_outcomes`] with the request context and metadata conditions read.
    pub fn decide_matrix_outcomes_with<R: ResourceRef>(
        &self,
        tenant: &str,
        env: &dyn Env,
        principals: &[Krn],
        actions: &[Action],
        resources: &[R],
    ) -> Vec<Vec<Outcome>> {
        let base = self.base_of(tenant);
        index::decide_matrix_outcomes(
            &self.layers(tenant, &base, None),
            env,
            principals,
            actions,
            resources,
        )
    }

    /// [`PolicyIndex::allowed_resources`] over the tenant's and the base policies.
    pub fn allowed_resources(
        &self,
        tenant: &str,
        principals: &[Krn],
        action: &Action,
        resources: &[(Krn, Vec<Krn>)],
    ) -> Vec<usize> {
        let base = self.base_of(tenant);
        index::allowed_resources(
            &self.layers(tenant, &base, None),
            principals,
            action,
            resources,
        )
    }

    /// [`PolicyIndex::allowed_actions`] over the tenant's and the base policies.
    pub fn allowed_actions(
        &self,
        tenant: &str,
        principals: &[Krn],
        actions: &[Action],
        resource: &Krn,
        pools: &[Krn],
    ) -> Vec<usize> {
        let base = self.base_of(tenant);
        index::allowed_actions(
            &self.layers(tenant, &base, None),
            principals,
            actions,
            resource,
            pools,
        )
    }

    /// [`PolicyIndex::simulate`] on the tenant's policies, with the base policies as they are.
    pub fn simulate(
        &self,
        tenant: &str,
        q: &Query,
        add: &[StoredPolicy],
        remove: &[&str],
    ) -> Decision {
        let empty = PolicyIndex::new();
        let stored = self.tenant(tenant).unwrap_or(&empty);
        let (layer, extra) = simulated(stored, add, remove);
        let base = self.base_of(tenant);
        let layers = self.layers(tenant, &base, Some(layer));
        let mut hits = Traced::default();
        decide_into(&layers, &extra, q, &mut hits);
        hits.into_decision()
    }

    /// The tenant's layer (or `own` in its place), the fixed base policies and `base`.
    fn layers<'a>(
        &'a self,
        tenant: &str,
        base: &'a Option<Arc<PolicyIndex>>,
        own: Option<Layer<'a>>,
    ) -> Vec<Layer<'a>> {
        let mut layers = Vec::with_capacity(3);
        match own {
            Some(l) => layers.push(l),
            None => {
                if let Some(t) = self.tenants.get(tenant) {
                    layers.push(Layer::new(&t.index));
                }
            }
        }
        if self.fixed.statement_count() > 0 {
            layers.push(Layer::new(&self.fixed));
        }
        if let Some(b) = base {
            layers.push(Layer::new(b));
        }
        layers
    }

    /// The instantiated `${tenant}` base policies of `tenant`, if any.
    fn base_of(&self, tenant: &str) -> Option<Arc<PolicyIndex>> {
        if !self.base.iter().any(BasePolicy::uses_tenant) {
            return None;
        }
        if let Some(t) = self.tenants.get(tenant) {
            return Some(t.base.clone());
        }
        if let Some(hit) = self.cache.read().ok().and_then(|c| c.get(tenant).cloned()) {
            return Some(hit);
        }
        let built = self.tenant_base(tenant);
        if let Ok(mut cache) = self.cache.write() {
            if cache.len() >= BASE_CACHE_MAX {
                cache.clear();
            }
            cache.insert(tenant.to_owned(), built.clone());
        }
        Some(built)
    }

    fn tenant_base(&self, tenant: &str) -> Arc<PolicyIndex> {
        let mut ix = PolicyIndex::new();
        for b in self.base.iter().filter(|b| b.uses_tenant()) {
            ix.upsert_unchecked(&stored(b, tenant));
        }
        Arc::new(ix)
    }
}

fn stored(b: &BasePolicy, tenant: &str) -> StoredPolicy {
    StoredPolicy {
        id: b.name().to_owned(),
        document: b.instantiate(tenant),
        attached_principals: Vec::new(),
        attached_pools: Vec::new(),
        resource: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Outcome, PolicyDocument, Reason};
    use serde_json::json;

    fn k(s: &str) -> Krn {
        Krn::parse(s).unwrap()
    }

    fn a(s: &str) -> Action {
        Action::parse(s).unwrap()
    }

    fn base() -> Vec<BasePolicy> {
        vec![
            BasePolicy::from_json(&json!({
                "name": "tenant-admin",
                "statements": [{"effect": "allow", "actions": ["iam:*"], "resources": ["krn:iam:${tenant}:*"],
                                "principals": ["krn:iam:${tenant}::role/tenant-admin"]}]
            }))
            .unwrap(),
            BasePolicy::from_json(&json!({
                "name": "no-delete-kaa",
                "statements": [{"effect": "deny", "actions": ["iam:tenant:delete"], "resources": ["krn:iam:kaa::tenant/kaa"],
                                "principals": ["*"]}]
            }))
            .unwrap(),
        ]
    }

    fn policy(id: &str, v: serde_json::Value, attached: &[&str]) -> StoredPolicy {
        StoredPolicy {
            id: id.into(),
            document: PolicyDocument::from_json(&v).unwrap(),
            attached_principals: attached.iter().map(|s| k(s)).collect(),
            attached_pools: vec![],
            resource: None,
        }
    }

    fn decide(e: &Engine, tenant: &str, principal: &str, action: &str, resource: &str) -> Decision {
        let principals = [k(principal)];
        let action = a(action);
        let resource = k(resource);
        e.decide(tenant, &Query::new(&principals, &action, &resource, &[]))
    }

    #[test]
    fn base_policies_apply_to_unknown_and_known_tenants() {
        let mut e = Engine::new(base());
        for tenant in ["acme", "globex"] {
            let d = decide(
                &e,
                tenant,
                &format!("krn:iam:{tenant}::role/tenant-admin"),
                "iam:user:create",
                &format!("krn:iam:{tenant}::user/x"),
            );
            assert_eq!(d.outcome, Outcome::Allow, "{tenant}");
            assert_eq!(
                d.reasons,
                vec![Reason {
                    policy_id: "tenant-admin".into(),
                    statement: 0
                }]
            );
            // Another tenant's admin gets nothing here.
            let d = decide(
                &e,
                tenant,
                "krn:iam:other::role/tenant-admin",
                "iam:user:create",
                &format!("krn:iam:{tenant}::user/x"),
            );
            assert_eq!(d.outcome, Outcome::ImplicitDeny);
        }
        // Cached results stay right; a tenant that gets an index keeps base policies.
        e.upsert(
            "acme",
            policy("p1", json!({"name": "p1", "statements": [{"effect": "deny", "actions": ["iam:user:create"], "resources": ["krn:iam:acme::user/x"]}]}), &["krn:iam:acme::role/tenant-admin"]),
        )
        .unwrap();
        assert_eq!(e.revision("acme"), 1);
        assert_eq!(e.revision("globex"), 0);
        let d = decide(
            &e,
            "acme",
            "krn:iam:acme::role/tenant-admin",
            "iam:user:create",
            "krn:iam:acme::user/x",
        );
        assert_eq!(d.outcome, Outcome::ExplicitDeny);
        assert_eq!(
            d.reasons,
            vec![Reason {
                policy_id: "p1".into(),
                statement: 0
            }]
        );
        let d = decide(
            &e,
            "acme",
            "krn:iam:acme::role/tenant-admin",
            "iam:user:create",
            "krn:iam:acme::user/y",
        );
        assert_eq!(d.outcome, Outcome::Allow);
        // The fixed base policy applies everywhere.
        let d = decide(
            &e,
            "kaa",
            "krn:iam:kaa::role/tenant-admin",
            "iam:tenant:delete",
            "krn:iam:kaa::tenant/kaa",
        );
        assert_eq!(d.outcome, Outcome::ExplicitDeny);
        assert_eq!(d.reasons[0].policy_id, "no-delete-kaa");
        // Tenant isolation: acme's policy is not seen by globex.
        assert!(e.tenant("globex").is_none());
        assert_eq!(e.tenant("acme").map(PolicyIndex::policy_count), Some(1));
        assert!(e.remove("acme", "p1"));
        assert!(!e.remove("acme", "p1"));
        assert!(!e.remove("nobody", "p1"));
        assert_eq!(e.revision("acme"), 2);
        e.remove_tenant("acme");
        assert!(e.tenant("acme").is_none());
        assert_eq!(e.revision("acme"), 0);
        let d = decide(
            &e,
            "acme",
            "krn:iam:acme::role/tenant-admin",
            "iam:user:create",
            "krn:iam:acme::user/x",
        );
        assert_eq!(d.outcome, Outcome::Allow);
    }

    #[test]
    fn odd_tenant_names_fail_toward_deny() {
        let e = Engine::new(base());
        for tenant in ["a/b", "", "a:b"] {
            let d = decide(&e, tenant, "*", "iam:user:create", "krn:iam:kaa::user/x");
            assert_eq!(d.outcome, Outcome::ImplicitDeny, "{tenant:?}");
        }
    }

    #[test]
    fn simulate_and_batches_include_base_policies() {
        let mut e = Engine::new(base());
        e.ensure_tenant("acme");
        assert!(e.tenant("acme").is_some());
        let p = policy(
            "p1",
            json!({"name": "p1", "statements": [{"effect": "allow", "actions": ["endpoint:read"], "resources": ["krn:epr:acme::endpoint/*"]}]}),
            &["krn:iam:acme::user/bob"],
        );
        let principals = [
            k("krn:iam:acme::user/bob"),
            k("krn:iam:acme::role/tenant-admin"),
        ];
        let action = a("endpoint:read");
        let resource = k("krn:epr:acme::endpoint/e1");
        let q = Query::new(&principals, &action, &resource, &[]);
        assert_eq!(e.decide("acme", &q).outcome, Outcome::ImplicitDeny);
        let sim = e.simulate("acme", &q, std::slice::from_ref(&p), &[]);
        assert_eq!(sim.outcome, Outcome::Allow);
        assert_eq!(
            e.simulate("nobody", &q, std::slice::from_ref(&p), &[])
                .outcome,
            Outcome::Allow
        );
        e.upsert("acme", p).unwrap();
        assert_eq!(e.decide("acme", &q).outcome, Outcome::Allow);
        assert_eq!(
            e.simulate("acme", &q, &[], &["p1"]).outcome,
            Outcome::ImplicitDeny
        );

        let actions = [a("endpoint:read"), a("iam:user:read"), a("endpoint:delete")];
        let resources = [
            (k("krn:epr:acme::endpoint/e1"), vec![]),
            (k("krn:iam:acme::user/x"), vec![]),
        ];
        let m = e.decide_matrix("acme", &principals, &actions, &resources);
        assert_eq!(m[0][0].outcome, Outcome::Allow);
        assert_eq!(m[1][1].outcome, Outcome::Allow);
        assert_eq!(m[1][1].reasons[0].policy_id, "tenant-admin");
        assert_eq!(m[2][0].outcome, Outcome::ImplicitDeny);
        assert_eq!(
            e.allowed_resources("acme", &principals, &actions[1], &resources),
            vec![1]
        );
        assert_eq!(
            e.allowed_actions("acme", &principals, &actions, &resources[0].0, &[]),
            vec![0]
        );
    }

    #[test]
    fn duplicate_base_names_keep_the_last() {
        let mut b = base();
        b.push(
            BasePolicy::from_json(&json!({
                "name": "tenant-admin",
                "statements": [{"effect": "allow", "actions": ["iam:user:read"], "resources": ["*"], "principals": ["*"]}]
            }))
            .unwrap(),
        );
        let e = Engine::new(b);
        assert_eq!(e.base_policies().len(), 2);
        let d = decide(
            &e,
            "t",
            "krn:iam:t::user/x",
            "iam:user:read",
            "krn:iam:t::user/y",
        );
        assert_eq!(d.outcome, Outcome::Allow);
        let d = decide(
            &e,
            "t",
            "krn:iam:t::role/tenant-admin",
            "iam:user:create",
            "krn:iam:t::user/y",
        );
        assert_eq!(d.outcome, Outcome::ImplicitDeny);
    }

    #[test]
    fn engine_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Engine>();
        check::<PolicyIndex>();
        let e = Engine::default();
        assert_eq!(e.tenant_names().count(), 0);
    }
}
