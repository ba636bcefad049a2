//! The independent model of the decision rules (spec §3.2, docs/ENGINE_API.md "Semantics").

use super::*;

/// Spec §1.3 / §3.2 matching: a pattern ending in `*` matches by prefix, else by equality.
pub(super) fn matches(value: &str, pattern: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => value == pattern,
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct MStmt {
    pub(super) deny: bool,
    pub(super) actions: Vec<String>,
    pub(super) resources: Vec<String>,
    pub(super) principals: Vec<String>,
}

impl MStmt {
    /// The statement as sent; `Allow`/`Deny` capitalised now and then (documented input form).
    pub(super) fn to_json(&self, capital: bool) -> Value {
        let effect = match (self.deny, capital) {
            (false, false) => "allow",
            (false, true) => "Allow",
            (true, false) => "deny",
            (true, true) => "Deny",
        };
        let mut m = json!({ "effect": effect, "actions": self.actions });
        if !self.resources.is_empty() {
            m["resources"] = json!(self.resources);
        }
        if !self.principals.is_empty() {
            m["principals"] = json!(self.principals);
        }
        m
    }
}

#[derive(Clone, Debug, Default)]
pub(super) struct MPolicy {
    pub(super) statements: Vec<MStmt>,
    /// Users and groups the policy is attached to.
    pub(super) attached: BTreeSet<String>,
    /// Pools the policy is attached to.
    pub(super) pools: BTreeSet<String>,
    /// The resource of a resource-based policy.
    pub(super) bound: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MDecision {
    pub(super) outcome: &'static str,
    pub(super) reasons: Vec<(String, usize)>,
}

#[derive(Default, Clone)]
pub(super) struct Model {
    /// By policy id: the policy KRN, or the name of a base policy.
    pub(super) policies: BTreeMap<String, MPolicy>,
    /// Group -> parent group.
    pub(super) parent: BTreeMap<String, String>,
    /// User -> groups it is a direct member of.
    pub(super) groups_of: BTreeMap<String, BTreeSet<String>>,
    /// Resource -> pools it is a member of.
    pub(super) pools_of: BTreeMap<String, BTreeSet<String>>,
    /// Users created with `enabled: false`: every decision for them is a deny.
    pub(super) disabled: BTreeSet<String>,
}

impl Model {
    /// The principal, its groups and all their ancestors, and the extra roles.
    pub(super) fn principal_set(&self, principal: &str, roles: &[String]) -> BTreeSet<String> {
        let mut set = BTreeSet::from([principal.to_string()]);
        for g in self.groups_of.get(principal).into_iter().flatten() {
            let mut cur = Some(g.clone());
            while let Some(c) = cur {
                cur = self.parent.get(&c).cloned();
                set.insert(c);
            }
        }
        set.extend(roles.iter().cloned());
        set
    }

    /// The principal and its direct groups only (no ancestors): to see ancestors at work.
    pub(super) fn direct_set(&self, principal: &str) -> BTreeSet<String> {
        let mut set = BTreeSet::from([principal.to_string()]);
        set.extend(self.groups_of.get(principal).into_iter().flatten().cloned());
        set
    }

    pub(super) fn decide(&self, set: &BTreeSet<String>, action: &str, resource: &str) -> MDecision {
        if set.iter().any(|p| self.disabled.contains(p)) {
            return MDecision {
                outcome: "explicitDeny",
                reasons: Vec::new(),
            };
        }
        let none = BTreeSet::new();
        let pools = self.pools_of.get(resource).unwrap_or(&none);
        let (mut allow, mut deny) = (Vec::new(), Vec::new());
        for (id, p) in &self.policies {
            for (i, st) in p.statements.iter().enumerate() {
                let action_ok = st.actions.iter().any(|a| matches(action, a));
                let resource_ok = st.resources.iter().any(|r| matches(resource, r))
                    || p.bound.as_deref() == Some(resource)
                    || p.pools.iter().any(|x| pools.contains(x));
                let principal_ok = st
                    .principals
                    .iter()
                    .chain(p.attached.iter())
                    .any(|k| set.iter().any(|s| matches(s, k)));
                if action_ok && resource_ok && principal_ok {
                    if st.deny {
                        deny.push((id.clone(), i));
                    } else {
                        allow.push((id.clone(), i));
                    }
                }
            }
        }
        // Sorted by (policy id, statement): the map iterates ids in order.
        if !deny.is_empty() {
            MDecision {
                outcome: "explicitDeny",
                reasons: deny,
            }
        } else if !allow.is_empty() {
            MDecision {
                outcome: "allow",
                reasons: allow,
            }
        } else {
            MDecision {
                outcome: "implicitDeny",
                reasons: Vec::new(),
            }
        }
    }
}
