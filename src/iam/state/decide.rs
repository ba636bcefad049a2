//! Decisions against the in-memory state: the matrix of a question (with or without reasons,
//! picking some for the decision log), one decision, the service's own checks of its callers,
//! and a simulation with policies added or removed.

use serde_json::{Map, Value};

use super::DecisionState;
use super::directory::{Disabled, TenantDir, blocked};
use crate::policy::{Action, Decision, Engine, Env, Krn, Outcome, Query, StoredPolicy};

/// The context of the service's own checks of its callers: its clock as `kaa:CurrentTime`.
pub fn server_context() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "kaa:CurrentTime".into(),
        Value::String(crate::clock::rfc3339_ms(crate::clock::now_ms())),
    );
    m
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

impl DecisionState {
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
