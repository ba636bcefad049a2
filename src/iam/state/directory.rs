//! The per-tenant directory as decisions read it: each user's principals (groups and their
//! ancestors, then pools), each resource's pools, the disabled users and resources, and the
//! metadata conditions read.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::DecisionState;
use crate::policy::{Decision, Krn, Outcome};

/// Memberships of one tenant.
#[derive(Debug, Default)]
pub(super) struct TenantDir {
    pub(super) revision: i64,
    /// Per user: its groups and their ancestors, then the pools of the user and of those groups,
    /// each once (engine-ready principals). A group in a pool has an entry of its pools, for
    /// questions asked of the group itself.
    pub(super) principals_of_user: HashMap<String, Vec<Krn>>,
    pub(super) pools_of_resource: HashMap<String, Vec<Krn>>,
    /// Users marked `enabled: false`: denied as principals.
    pub(super) disabled_users: HashSet<String>,
    /// Registered resources marked `enabled: false`: denied as resources.
    pub(super) disabled_resources: HashSet<String>,
    /// Metadata of the users and registered resources that have some (conditions read it).
    pub(super) user_metadata: HashMap<String, Map<String, Value>>,
    pub(super) resource_metadata: HashMap<String, Map<String, Value>>,
}

/// A metadata text as stored: its object, `None` when empty or unreadable.
fn metadata_object(text: &str) -> Option<Map<String, Value>> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) if !m.is_empty() => Some(m),
        _ => None,
    }
}

/// Sets or clears the metadata of `krn` in `map`.
pub(super) fn set_metadata(map: &mut HashMap<String, Map<String, Value>>, krn: String, text: &str) {
    match metadata_object(text) {
        Some(m) => {
            map.insert(krn, m);
        }
        None => {
            map.remove(&krn);
        }
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
    pub(super) fn disabled_principal(&self, principals: &[Krn]) -> Option<Disabled> {
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
pub(super) fn blocked(
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
pub(super) fn with_pools(
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
pub(super) fn expand_groups<'a>(
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
