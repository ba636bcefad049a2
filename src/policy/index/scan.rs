//! Evaluation of a policy by scanning its statements, for the few policies that are not in an
//! index: the candidates of a simulation and the base policies of a tenant the engine has no
//! cache for. Same semantics as the index (docs/ENGINE_API.md, "Semantics").

use super::{Effect, Query, Sink, StoredPolicy, conditional};

/// Reports to `sink` every statement of `p` that applies to `q` (a concrete query).
pub(crate) fn scan_policy<'a, S: Sink<'a>>(p: &'a StoredPolicy, q: &Query, sink: &mut S) {
    let bound = p.bound();
    let in_pool = p
        .attached_pools
        .iter()
        .any(|pool| q.resource_pools.contains(pool));
    let attached = p
        .attached_principals
        .iter()
        .any(|k| q.principals.iter().any(|qp| qp.matches(k)));
    let facts = q.facts();
    for (i, st) in p.document.statements.iter().enumerate() {
        let action = st.actions.iter().any(|a| q.action.matches(a));
        let literal = in_pool
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
        if !action || !principal {
            continue;
        }
        let applies = if st.is_conditional() {
            let keyed = literal
                || st
                    .templates
                    .iter()
                    .any(|t| q.resource.matches(t.index_key()));
            keyed && conditional(st, literal, &facts, sink, &p.id, i)
        } else {
            literal
        };
        if applies {
            sink.push(st.effect == Effect::Deny, &p.id, i);
        }
    }
}
