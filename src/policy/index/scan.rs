//! Evaluation of a policy by scanning its statements, for the few policies that are not in an
//! index: the candidates of a simulation and the base policies of a tenant the engine has no
//! cache for. Same semantics as the index (docs/ENGINE_API.md, "Semantics").

use super::{Hits, Query, StoredPolicy};

/// Adds to `hits` every statement of `p` that applies to `q` (a concrete query).
pub(crate) fn scan_policy<'a>(p: &'a StoredPolicy, q: &Query, hits: &mut Hits<'a>) {
    let bound = p.bound();
    let in_pool = p
        .attached_pools
        .iter()
        .any(|pool| q.resource_pools.contains(pool));
    let attached = p
        .attached_principals
        .iter()
        .any(|k| q.principals.iter().any(|qp| qp.matches(k)));
    for (i, st) in p.document.statements.iter().enumerate() {
        let action = st.actions.iter().any(|a| q.action.matches(a));
        let resource = in_pool
            || st
                .resources
                .iter()
                .chain(bound)
                .any(|r| q.resource.matches(r));
        let principal = attached
            || st
                .principals
                .iter()
                .any(|k| q.principals.iter().any(|qp| qp.matches(k)));
        if action && resource && principal {
            hits.push(st.effect, &p.id, i);
        }
    }
}
