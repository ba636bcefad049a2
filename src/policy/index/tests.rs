//! Unit tests of the index: the spec §9 decision vectors, every kind of resource key and
//! principal key, incremental changes, simulation and the batch forms.

use serde_json::{Value, json};

use super::*;
use crate::policy::err::PolicyError;

fn k(s: &str) -> Krn {
    Krn::parse(s).unwrap()
}

fn a(s: &str) -> Action {
    Action::parse(s).unwrap()
}

fn doc(kind: &str, statements: Value) -> PolicyDocument {
    PolicyDocument::from_json(&json!({"name": "p", "type": kind, "statements": statements}))
        .unwrap()
}

fn identity(id: &str, statements: Value, attached: &[&str]) -> StoredPolicy {
    StoredPolicy {
        id: id.into(),
        document: doc("identity", statements),
        attached_principals: attached.iter().map(|s| k(s)).collect(),
        attached_pools: vec![],
        resource: None,
    }
}

struct Q {
    principals: Vec<Krn>,
    action: Action,
    resource: Krn,
    pools: Vec<Krn>,
}

impl Q {
    fn new(principals: &[&str], action: &str, resource: &str) -> Q {
        Q {
            principals: principals.iter().map(|s| k(s)).collect(),
            action: a(action),
            resource: k(resource),
            pools: vec![],
        }
    }

    fn pools(mut self, pools: &[&str]) -> Q {
        self.pools = pools.iter().map(|s| k(s)).collect();
        self
    }

    fn q(&self) -> Query<'_> {
        Query {
            env: &crate::policy::NoEnv,
            principals: &self.principals,
            action: &self.action,
            resource: &self.resource,
            resource_pools: &self.pools,
        }
    }
}

fn reasons(d: &Decision) -> Vec<(String, usize)> {
    d.reasons
        .iter()
        .map(|r| (r.policy_id.clone(), r.statement))
        .collect()
}

const BOB: &str = "krn:iam:kaa::user/org1/bob";

fn spec_index() -> PolicyIndex {
    let mut ix = PolicyIndex::new();
    ix.upsert(identity(
        "readers",
        json!([
            {"effect": "allow", "actions": ["iam:user:read"], "resources": ["krn:iam:kaa::user/*"]},
            {"effect": "deny", "actions": ["iam:user:*"], "resources": ["krn:iam:kaa::user/org1/*"]}
        ]),
        &[BOB],
    ))
    .unwrap();
    ix
}

#[test]
fn spec_decision_vectors() {
    let ix = spec_index();
    let d = ix.decide(&Q::new(&[BOB], "iam:user:read", "krn:iam:kaa::user/org1/bob").q());
    assert_eq!(d.outcome, Outcome::ExplicitDeny);
    assert_eq!(reasons(&d), vec![("readers".into(), 1)]);
    let d = ix.decide(&Q::new(&[BOB], "iam:user:read", "krn:iam:kaa::user/alice").q());
    assert_eq!(d.outcome, Outcome::Allow);
    assert_eq!(reasons(&d), vec![("readers".into(), 0)]);
    let d = ix.decide(&Q::new(&[BOB], "iam:user:update", "krn:iam:kaa::user/alice").q());
    assert_eq!(d, Decision::implicit_deny());
    assert!(!d.is_allowed());
}

#[test]
fn wildcard_queries_are_implicit_denies() {
    let mut ix = PolicyIndex::new();
    ix.upsert(identity(
        "all",
        json!([{"effect": "allow", "actions": ["*"], "resources": ["*"], "principals": ["*"]}]),
        &[],
    ))
    .unwrap();
    assert!(
        ix.decide(&Q::new(&[BOB], "iam:user:read", "krn:iam:kaa::user/x").q())
            .is_allowed()
    );
    assert_eq!(
        ix.decide(&Q::new(&[BOB], "iam:user:*", "krn:iam:kaa::user/x").q())
            .outcome,
        Outcome::ImplicitDeny
    );
    assert_eq!(
        ix.decide(&Q::new(&[BOB], "iam:user:read", "krn:iam:kaa::user/*").q())
            .outcome,
        Outcome::ImplicitDeny
    );
    assert_eq!(
        ix.decide(&Q::new(&[BOB], "*", "*").q()).outcome,
        Outcome::ImplicitDeny
    );
}

#[test]
fn principal_keys() {
    let mut ix = PolicyIndex::new();
    ix.upsert(identity(
        "named",
        json!([{"effect": "allow", "actions": ["iam:user:read"], "resources": ["*"], "principals": ["krn:iam:kaa::group/dev/*"]}]),
        &[],
    ))
    .unwrap();
    ix.upsert(identity(
        "attached",
        json!([{"effect": "allow", "actions": ["iam:group:read"], "resources": ["*"]}]),
        &["krn:iam:kaa::group/ops"],
    ))
    .unwrap();
    // A statement without principals and without attachments applies to nobody.
    ix.upsert(identity(
        "orphan",
        json!([{"effect": "allow", "actions": ["iam:policy:read"], "resources": ["*"]}]),
        &[],
    ))
    .unwrap();
    let member = ["krn:iam:kaa::user/bob", "krn:iam:kaa::group/dev/java"];
    assert!(
        ix.decide(&Q::new(&member, "iam:user:read", "krn:iam:kaa::user/x").q())
            .is_allowed()
    );
    assert!(
        !ix.decide(
            &Q::new(
                &["krn:iam:kaa::user/bob"],
                "iam:user:read",
                "krn:iam:kaa::user/x"
            )
            .q()
        )
        .is_allowed()
    );
    assert!(
        !ix.decide(
            &Q::new(
                &["krn:iam:kaa::group/dev"],
                "iam:user:read",
                "krn:iam:kaa::user/x"
            )
            .q()
        )
        .is_allowed()
    );
    let ops = ["krn:iam:kaa::user/bob", "krn:iam:kaa::group/ops"];
    assert!(
        ix.decide(&Q::new(&ops, "iam:group:read", "krn:iam:kaa::group/x").q())
            .is_allowed()
    );
    assert!(
        !ix.decide(&Q::new(&ops[..1], "iam:group:read", "krn:iam:kaa::group/x").q())
            .is_allowed()
    );
    assert!(
        !ix.decide(&Q::new(&["*"], "iam:policy:read", "krn:iam:kaa::policy/x").q())
            .is_allowed()
    );
    // A wildcard principal in the query matches itself and wider patterns only.
    assert!(
        ix.decide(
            &Q::new(
                &["krn:iam:kaa::group/dev/*"],
                "iam:user:read",
                "krn:iam:kaa::user/x"
            )
            .q()
        )
        .is_allowed()
    );
    assert!(
        !ix.decide(
            &Q::new(
                &["krn:iam:kaa::group/*"],
                "iam:user:read",
                "krn:iam:kaa::user/x"
            )
            .q()
        )
        .is_allowed()
    );
}

#[test]
fn resource_keys_pools_and_bound_resources() {
    let mut ix = PolicyIndex::new();
    let mut pooled = identity(
        "pooled",
        json!([{"effect": "allow", "actions": ["endpoint:read"], "resources": ["krn:epr:t::endpoint/fixed"]}]),
        &["krn:iam:t::user/u"],
    );
    pooled.attached_pools = vec![k("krn:iam:t::pool/p1")];
    ix.upsert(pooled).unwrap();
    ix.upsert(StoredPolicy {
        id: "bound".into(),
        document: doc("resource", json!([{"effect": "allow", "actions": ["endpoint:update"], "principals": ["krn:iam:t::user/*"]}])),
        attached_principals: vec![],
        attached_pools: vec![],
        resource: Some(k("krn:epr:t::endpoint/e9")),
    })
    .unwrap();
    let u = ["krn:iam:t::user/u"];
    // Pool membership, not the pool's KRN as a resource.
    assert!(
        ix.decide(
            &Q::new(&u, "endpoint:read", "krn:epr:t::endpoint/e1")
                .pools(&["krn:iam:t::pool/p1"])
                .q()
        )
        .is_allowed()
    );
    assert!(
        !ix.decide(
            &Q::new(&u, "endpoint:read", "krn:epr:t::endpoint/e1")
                .pools(&["krn:iam:t::pool/p2"])
                .q()
        )
        .is_allowed()
    );
    assert!(
        !ix.decide(&Q::new(&u, "endpoint:read", "krn:iam:t::pool/p1").q())
            .is_allowed()
    );
    assert!(
        ix.decide(&Q::new(&u, "endpoint:read", "krn:epr:t::endpoint/fixed").q())
            .is_allowed()
    );
    // The bound resource is the key of a resource policy without resources.
    assert!(
        ix.decide(&Q::new(&u, "endpoint:update", "krn:epr:t::endpoint/e9").q())
            .is_allowed()
    );
    assert!(
        !ix.decide(&Q::new(&u, "endpoint:update", "krn:epr:t::endpoint/e8").q())
            .is_allowed()
    );
    // The pool segment of a KRN is matched by prefix like any other.
    ix.upsert(identity(
        "pool-seg",
        json!([{"effect": "deny", "actions": ["endpoint:*"], "resources": ["krn:epr:t:/a/*"]}]),
        &["krn:iam:t::user/u"],
    ))
    .unwrap();
    let d = ix.decide(
        &Q::new(&u, "endpoint:read", "krn:epr:t:/a/b:endpoint/e1")
            .pools(&["krn:iam:t::pool/p1"])
            .q(),
    );
    assert_eq!(d.outcome, Outcome::ExplicitDeny);
    assert_eq!(reasons(&d), vec![("pool-seg".into(), 0)]);
    assert!(
        ix.decide(
            &Q::new(&u, "endpoint:read", "krn:epr:t:/b:endpoint/e1")
                .pools(&["krn:iam:t::pool/p1"])
                .q()
        )
        .is_allowed()
    );
}

#[test]
fn reasons_are_every_applying_statement_sorted() {
    let mut ix = PolicyIndex::new();
    let st = json!([
        {"effect": "allow", "actions": ["iam:user:read", "iam:*"], "resources": ["*", "krn:iam:kaa:*"]},
        {"effect": "allow", "actions": ["iam:user:*"], "resources": ["krn:iam:kaa::user/*"]},
        {"effect": "allow", "actions": ["iam:group:*"], "resources": ["*"]}
    ]);
    for id in ["zeta", "alpha", "mid"] {
        ix.upsert(identity(id, st.clone(), &[BOB])).unwrap();
    }
    let d = ix.decide(&Q::new(&[BOB], "iam:user:read", "krn:iam:kaa::user/x").q());
    assert_eq!(d.outcome, Outcome::Allow);
    assert_eq!(
        reasons(&d),
        vec![
            ("alpha".into(), 0),
            ("alpha".into(), 1),
            ("mid".into(), 0),
            ("mid".into(), 1),
            ("zeta".into(), 0),
            ("zeta".into(), 1)
        ]
    );
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["outcome"], "allow");
    assert_eq!(
        json["reasons"][0],
        json!({"policyID": "alpha", "statement": 0})
    );
    assert_eq!(
        serde_json::to_value(Outcome::ExplicitDeny).unwrap(),
        "explicitDeny"
    );
    assert_eq!(
        serde_json::to_value(Outcome::ImplicitDeny).unwrap(),
        "implicitDeny"
    );
    let back: Decision = serde_json::from_value(json).unwrap();
    assert_eq!(back, d);
}

#[test]
fn upsert_replace_remove_and_revision() {
    let mut ix = PolicyIndex::new();
    assert_eq!(
        (ix.revision(), ix.policy_count(), ix.statement_count()),
        (0, 0, 0)
    );
    ix.upsert(identity(
        "p",
        json!([{"effect": "allow", "actions": ["iam:user:read"], "resources": ["*"]}]),
        &[BOB],
    ))
    .unwrap();
    assert_eq!(
        (ix.revision(), ix.policy_count(), ix.statement_count()),
        (1, 1, 1)
    );
    assert!(ix.contains("p"));
    let read = Q::new(&[BOB], "iam:user:read", "krn:iam:kaa::user/x");
    assert!(ix.decide(&read.q()).is_allowed());
    // Replace: the old statements are gone.
    ix.upsert(identity(
        "p",
        json!([
            {"effect": "allow", "actions": ["iam:user:update"], "resources": ["*"]},
            {"effect": "allow", "actions": ["iam:user:delete"], "resources": ["*"]}
        ]),
        &[BOB],
    ))
    .unwrap();
    assert_eq!(
        (ix.revision(), ix.policy_count(), ix.statement_count()),
        (2, 1, 2)
    );
    assert!(!ix.decide(&read.q()).is_allowed());
    assert!(
        ix.decide(&Q::new(&[BOB], "iam:user:delete", "krn:iam:kaa::user/x").q())
            .is_allowed()
    );
    // A failed upsert changes nothing.
    let bad = StoredPolicy {
        id: String::new(),
        ..identity("x", json!([]), &[])
    };
    assert_eq!(ix.upsert(bad), Err(IndexError::EmptyId));
    assert_eq!(ix.revision(), 2);
    assert!(ix.remove("p"));
    assert!(!ix.remove("p"));
    assert_eq!(
        (ix.revision(), ix.policy_count(), ix.statement_count()),
        (3, 0, 0)
    );
    assert_eq!(ix.pattern_count(), 0, "interned patterns are freed");
    assert!(
        !ix.decide(&Q::new(&[BOB], "iam:user:delete", "krn:iam:kaa::user/x").q())
            .is_allowed()
    );
    // Slots are reused.
    ix.upsert(identity(
        "q",
        json!([{"effect": "allow", "actions": ["iam:user:read"], "resources": ["*"]}]),
        &[BOB],
    ))
    .unwrap();
    assert!(ix.decide(&read.q()).is_allowed());
    let empty = identity("empty", json!([]), &[BOB]);
    ix.upsert(empty).unwrap();
    assert_eq!((ix.policy_count(), ix.statement_count()), (2, 1));
}

#[test]
fn duplicates_and_shared_patterns_are_counted_right() {
    let mut ix = PolicyIndex::new();
    let dup = json!([{"effect": "allow", "actions": ["iam:user:read", "iam:user:read"], "resources": ["*", "*"], "principals": [BOB, BOB]}]);
    let mut p = identity("a", dup.clone(), &[BOB, BOB]);
    p.attached_pools = vec![k("krn:iam:kaa::pool/x"), k("krn:iam:kaa::pool/x")];
    ix.upsert(p.clone()).unwrap();
    ix.upsert(StoredPolicy {
        id: "b".into(),
        ..p.clone()
    })
    .unwrap();
    let d = ix.decide(&Q::new(&[BOB], "iam:user:read", "krn:iam:kaa::user/x").q());
    assert_eq!(reasons(&d), vec![("a".into(), 0), ("b".into(), 0)]);
    ix.remove("a");
    assert!(
        ix.decide(
            &Q::new(&[BOB], "iam:user:read", "krn:iam:kaa::user/x")
                .pools(&["krn:iam:kaa::pool/x"])
                .q()
        )
        .is_allowed()
    );
    ix.remove("b");
    assert_eq!(ix.pattern_count(), 0);
    assert_empty(&ix);
}

/// No posting is left: every map is empty or freed.
fn assert_empty(ix: &PolicyIndex) {
    assert!(ix.via.is_empty());
    assert!(ix.by_principal.iter().all(|&m| m == NONE));
    assert!(ix.maps.iter().all(KeyMap::is_empty));
    assert_eq!(ix.free_maps.len(), ix.maps.len());
}

#[test]
fn wide_statements_test_the_action_on_lookup() {
    // Actions are never multiplied into postings: a statement with many actions and resources
    // costs one posting per (principal key, resource key) and tests the action on lookup.
    let actions: Vec<String> = (0..40)
        .map(|i| format!("svc:thing:op{}", char::from(b'a' + (i % 14) as u8)))
        .collect();
    let resources: Vec<String> = (0..40).map(|i| format!("krn:svc:t::thing/r{i}")).collect();
    let mut ix = PolicyIndex::new();
    ix.upsert(identity(
        "wide",
        json!([{"effect": "allow", "actions": actions, "resources": resources}]),
        &[BOB],
    ))
    .unwrap();
    assert!(!ix.stmts[0].indirect);
    assert_eq!(ix.maps.iter().map(KeyMap::len).sum::<usize>(), 40);
    assert!(
        ix.decide(&Q::new(&[BOB], "svc:thing:opc", "krn:svc:t::thing/r7").q())
            .is_allowed()
    );
    assert!(
        !ix.decide(&Q::new(&[BOB], "svc:thing:opz", "krn:svc:t::thing/r7").q())
            .is_allowed()
    );
    assert!(
        !ix.decide(&Q::new(&[BOB], "svc:thing:opc", "krn:svc:t::thing/r40").q())
            .is_allowed()
    );
    ix.remove("wide");
    assert_empty(&ix);
    assert_eq!(ix.pattern_count(), 0);
}

#[test]
fn statements_with_many_principal_keys_are_posted_once() {
    // Attached to 12 users and naming 2 groups: posted once in the policy's map, reached through
    // `via` by each of those principal keys, with the principal tested on lookup.
    let users: Vec<String> = (0..12).map(|i| format!("krn:iam:t::user/u{i}")).collect();
    let attached: Vec<&str> = users.iter().map(String::as_str).collect();
    let mut ix = PolicyIndex::new();
    ix.upsert(identity(
        "fan",
        json!([
            {"effect": "allow", "actions": ["endpoint:read"], "resources": ["krn:epr:t::endpoint/*"]},
            {"effect": "deny", "actions": ["endpoint:read"], "resources": ["krn:epr:t::endpoint/secret"],
             "principals": ["krn:iam:t::group/ops"]}
        ]),
        &attached,
    ))
    .unwrap();
    // A small policy under one of the same principals stays direct.
    ix.upsert(identity(
        "small",
        json!([{"effect": "allow", "actions": ["endpoint:update"], "resources": ["krn:epr:t::endpoint/*"]}]),
        &["krn:iam:t::user/u3"],
    ))
    .unwrap();
    assert!(ix.stmts.iter().take(2).all(|e| e.indirect));
    assert!(!ix.stmts[2].indirect);
    assert_eq!(ix.via.len(), 13);
    let read =
        |ix: &PolicyIndex, who: &[&str], r: &str| ix.decide(&Q::new(who, "endpoint:read", r).q());
    let d = read(&ix, &["krn:iam:t::user/u3"], "krn:epr:t::endpoint/e1");
    assert_eq!(reasons(&d), vec![("fan".into(), 0)]);
    // Principal keys are the statement's own plus the attachments: the deny holds for u3 too.
    let d = read(&ix, &["krn:iam:t::user/u3"], "krn:epr:t::endpoint/secret");
    assert_eq!(reasons(&d), vec![("fan".into(), 1)]);
    let d = read(
        &ix,
        &["krn:iam:t::user/u3", "krn:iam:t::group/ops"],
        "krn:epr:t::endpoint/secret",
    );
    assert_eq!(d.outcome, Outcome::ExplicitDeny);
    assert_eq!(reasons(&d), vec![("fan".into(), 1)]);
    // Only the group: it reaches statement 1, not the attached statement 0.
    let d = read(&ix, &["krn:iam:t::group/ops"], "krn:epr:t::endpoint/e1");
    assert_eq!(d.outcome, Outcome::ImplicitDeny);
    assert_eq!(
        read(&ix, &["krn:iam:t::user/zz"], "krn:epr:t::endpoint/e1").outcome,
        Outcome::ImplicitDeny
    );
    assert!(
        ix.decide(
            &Q::new(
                &["krn:iam:t::user/u3"],
                "endpoint:update",
                "krn:epr:t::endpoint/e1"
            )
            .q()
        )
        .is_allowed()
    );
    // Detaching down to a few principals makes the statements direct again.
    ix.upsert(identity(
        "fan",
        json!([{"effect": "allow", "actions": ["endpoint:read"], "resources": ["krn:epr:t::endpoint/*"]}]),
        &["krn:iam:t::user/u1"],
    ))
    .unwrap();
    assert!(ix.via.is_empty());
    assert_eq!(
        read(&ix, &["krn:iam:t::user/u3"], "krn:epr:t::endpoint/e1").outcome,
        Outcome::ImplicitDeny
    );
    assert!(read(&ix, &["krn:iam:t::user/u1"], "krn:epr:t::endpoint/e1").is_allowed());
    ix.remove("fan");
    ix.remove("small");
    assert_empty(&ix);
    assert_eq!(ix.pattern_count(), 0);
}

#[test]
fn outcomes_without_reasons_match_decisions() {
    let ix = spec_index();
    for (action, resource) in [
        ("iam:user:read", "krn:iam:kaa::user/org1/bob"),
        ("iam:user:read", "krn:iam:kaa::user/alice"),
        ("iam:user:update", "krn:iam:kaa::user/alice"),
        ("iam:user:*", "krn:iam:kaa::user/alice"),
    ] {
        let q = Q::new(&[BOB], action, resource);
        assert_eq!(ix.decide_outcome(&q.q()), ix.decide(&q.q()).outcome);
    }
    let principals = [k(BOB)];
    let actions = [a("iam:user:read"), a("iam:user:update")];
    let r1 = k("krn:iam:kaa::user/org1/bob");
    let r2 = k("krn:iam:kaa::user/alice");
    let owned = [(r1.clone(), vec![]), (r2.clone(), vec![])];
    let borrowed: [(&Krn, &[Krn]); 2] = [(&r1, &[]), (&r2, &[])];
    let full = ix.decide_matrix(&principals, &actions, &owned);
    let want: Vec<Vec<Outcome>> = full
        .iter()
        .map(|row| row.iter().map(|d| d.outcome).collect())
        .collect();
    assert_eq!(
        ix.decide_matrix_outcomes(&principals, &actions, &owned),
        want
    );
    assert_eq!(
        ix.decide_matrix_outcomes(&principals, &actions, &borrowed),
        want
    );
}

#[test]
fn validation_errors() {
    let mut ix = PolicyIndex::new();
    let st = json!([{"effect": "allow", "actions": ["endpoint:read"], "principals": ["*"], "resources": ["krn:epr:t::endpoint/e1"]}]);
    let res = |resource: Option<&str>| StoredPolicy {
        id: "r".into(),
        document: doc("resource", st.clone()),
        attached_principals: vec![],
        attached_pools: vec![],
        resource: resource.map(k),
    };
    assert_eq!(
        ix.upsert(res(None)).unwrap_err().to_string(),
        "policy `r`: a resource policy needs its bound resource"
    );
    assert_eq!(
        ix.upsert(res(Some("krn:epr:t::endpoint/*")))
            .unwrap_err()
            .to_string(),
        "policy `r`: bound resource `krn:epr:t::endpoint/*` is a wildcard"
    );
    assert_eq!(
        ix.upsert(res(Some("krn:epr:t::endpoint/e2")))
            .unwrap_err()
            .to_string(),
        "policy `r`: statement 0: resource `krn:epr:t::endpoint/e1` is not the bound resource `krn:epr:t::endpoint/e2`"
    );
    assert!(ix.upsert(res(Some("krn:epr:t::endpoint/e1"))).is_ok());
    let long = StoredPolicy {
        id: "x".repeat(MAX_POLICY_ID_LEN + 1),
        ..res(Some("krn:epr:t::endpoint/e1"))
    };
    assert!(
        ix.upsert(long)
            .unwrap_err()
            .to_string()
            .ends_with("is longer than 1024 bytes")
    );
    let mut broken = identity(
        "i",
        json!([{"effect": "allow", "actions": ["*"], "resources": ["*"]}]),
        &[],
    );
    broken.document.statements[0].actions.clear();
    assert_eq!(
        ix.upsert(broken.clone()).unwrap_err(),
        IndexError::Invalid {
            id: "i".into(),
            error: PolicyError::Statement {
                index: 0,
                error: crate::policy::StatementError::Empty("actions")
            }
        }
    );
    assert_eq!(
        ix.upsert(broken).unwrap_err().to_string(),
        "policy `i`: statement 0: `actions` is empty"
    );
    // A bound resource on an identity policy is ignored.
    let mut ident = identity(
        "j",
        json!([{"effect": "allow", "actions": ["*"], "resources": ["krn:a:b::c/d"]}]),
        &[BOB],
    );
    ident.resource = Some(k("krn:a:b::c/e"));
    ix.upsert(ident).unwrap();
    assert!(
        !ix.decide(&Q::new(&[BOB], "a:b", "krn:a:b::c/e").q())
            .is_allowed()
    );
    assert_eq!(ix.revision(), 2);
}

#[test]
fn simulate_leaves_the_index_unchanged() {
    let ix = spec_index();
    let before = (ix.revision(), ix.policy_count(), ix.statement_count());
    let bob_read = Q::new(&[BOB], "iam:user:read", "krn:iam:kaa::user/org1/bob");
    // Removing the policy: nothing applies.
    assert_eq!(
        ix.simulate(&bob_read.q(), &[], &["readers"]).outcome,
        Outcome::ImplicitDeny
    );
    // Replacing it by id: only the new version counts.
    let replacement = identity(
        "readers",
        json!([{"effect": "allow", "actions": ["iam:user:read"], "resources": ["*"]}]),
        &[BOB],
    );
    let d = ix.simulate(&bob_read.q(), std::slice::from_ref(&replacement), &[]);
    assert_eq!(d.outcome, Outcome::Allow);
    assert_eq!(reasons(&d), vec![("readers".into(), 0)]);
    // Adding a deny; unknown removal ids are ignored.
    let deny = identity(
        "deny",
        json!([{"effect": "deny", "actions": ["iam:*"], "resources": ["*"]}]),
        &[BOB],
    );
    let alice = Q::new(&[BOB], "iam:user:read", "krn:iam:kaa::user/alice");
    let d = ix.simulate(&alice.q(), std::slice::from_ref(&deny), &["nope"]);
    assert_eq!(d.outcome, Outcome::ExplicitDeny);
    assert_eq!(reasons(&d), vec![("deny".into(), 0)]);
    // The last added policy of an id wins; removal then re-adding keeps the addition.
    let d = ix.simulate(
        &alice.q(),
        &[
            deny.clone(),
            StoredPolicy {
                id: "deny".into(),
                ..replacement.clone()
            },
        ],
        &["deny"],
    );
    assert_eq!(d.outcome, Outcome::Allow);
    assert_eq!(reasons(&d), vec![("deny".into(), 0), ("readers".into(), 0)]);
    assert_eq!(
        ix.simulate(
            &Q::new(&[BOB], "iam:*", "krn:iam:kaa::user/alice").q(),
            &[deny],
            &[]
        )
        .outcome,
        Outcome::ImplicitDeny
    );
    assert_eq!(
        (ix.revision(), ix.policy_count(), ix.statement_count()),
        before
    );
    assert!(ix.decide(&alice.q()).is_allowed());
}

#[test]
fn batches_agree_with_decide() {
    let ix = spec_index();
    let principals = [k(BOB)];
    let actions = [a("iam:user:read"), a("iam:user:update"), a("iam:*")];
    let resources = [
        (k("krn:iam:kaa::user/org1/bob"), vec![]),
        (k("krn:iam:kaa::user/alice"), vec![k("krn:iam:kaa::pool/p")]),
        (k("krn:iam:kaa::user/*"), vec![]),
    ];
    let m = ix.decide_matrix(&principals, &actions, &resources);
    assert_eq!(m.len(), 3);
    for (ai, action) in actions.iter().enumerate() {
        assert_eq!(m[ai].len(), 3);
        for (ri, (r, pools)) in resources.iter().enumerate() {
            let single = ix.decide(&Query {
                env: &crate::policy::NoEnv,
                principals: &principals,
                action,
                resource: r,
                resource_pools: pools,
            });
            assert_eq!(m[ai][ri], single, "{action} on {r}");
        }
    }
    assert_eq!(m[0][0].outcome, Outcome::ExplicitDeny);
    assert_eq!(m[0][1].outcome, Outcome::Allow);
    assert_eq!(
        ix.allowed_resources(&principals, &actions[0], &resources),
        vec![1]
    );
    assert_eq!(
        ix.allowed_actions(&principals, &actions, &resources[1].0, &resources[1].1),
        vec![0]
    );
    assert!(ix.decide_matrix(&principals, &[], &resources).is_empty());
    assert_eq!(
        ix.decide_matrix(&principals, &actions, &[]),
        vec![Vec::<Decision>::new(); 3]
    );
}

#[test]
fn intersects_small_and_large() {
    assert!(!intersects(&[], &[1]));
    assert!(intersects(&[3], &[1, 2, 3]));
    let large: Vec<u32> = (0..100).map(|x| x * 2).collect();
    assert!(intersects(&[5, 64], &large));
    assert!(!intersects(&[5, 65], &large));
    assert!(intersects(&large, &[198]));
}

#[test]
fn heap_bytes_grow_and_shrink() {
    let mut ix = PolicyIndex::new();
    let empty = ix.heap_bytes();
    for i in 0..100 {
        ix.upsert(identity(
            &format!("p{i}"),
            json!([{"effect": "allow", "actions": ["endpoint:read"], "resources": [format!("krn:epr:t::endpoint/e{i}")]}]),
            &[&format!("krn:iam:t::user/u{i}")],
        ))
        .unwrap();
    }
    let full = ix.heap_bytes();
    assert!(full > empty);
    assert!(full / 100 < 1000, "{} bytes per statement", full / 100);
}

#[test]
fn pools_match_by_equality_even_when_written_as_wildcards() {
    let mut ix = PolicyIndex::new();
    let mut p = identity(
        "p",
        json!([{"effect": "allow", "actions": ["endpoint:read"], "resources": ["krn:epr:t::endpoint/none"]}]),
        &["krn:iam:t::user/u"],
    );
    p.attached_pools = vec![k("krn:iam:t::pool/*")];
    ix.upsert(p).unwrap();
    let u = ["krn:iam:t::user/u"];
    let q = Q::new(&u, "endpoint:read", "krn:epr:t::endpoint/e1");
    assert!(!ix.decide(&q.q()).is_allowed());
    let q = Q::new(&u, "endpoint:read", "krn:epr:t::endpoint/e1").pools(&["krn:iam:t::pool/x"]);
    assert!(!ix.decide(&q.q()).is_allowed());
    let q = Q::new(&u, "endpoint:read", "krn:epr:t::endpoint/e1").pools(&["krn:iam:t::pool/*"]);
    assert!(ix.decide(&q.q()).is_allowed());
}

#[test]
fn conditions_apply_only_when_they_hold_and_deny_still_wins() {
    use crate::policy::MapEnv;
    let mut ix = PolicyIndex::new();
    ix.upsert(identity(
        "net",
        json!([
            {"effect": "allow", "actions": ["endpoint:read"], "resources": ["krn:epr:kaa::endpoint/*"],
             "conditions": {"IpAddress": {"kaa:SourceIp": "10.0.0.0/8"}}},
            {"effect": "deny", "actions": ["endpoint:read"], "resources": ["krn:epr:kaa::endpoint/secret"],
             "conditions": {"Bool": {"locked": true}}},
            {"effect": "allow", "actions": ["endpoint:read"], "resources": ["krn:epr:kaa::endpoint/open"]}
        ]),
        &[BOB],
    ))
    .unwrap();
    assert_eq!(ix.conditional_count(), 2);
    let env = |c: Value| MapEnv {
        context: c.as_object().cloned().unwrap_or_default(),
        ..MapEnv::default()
    };
    let decide = |resource: &str, c: Value| {
        let q = Q::new(&[BOB], "endpoint:read", resource);
        let e = env(c);
        let query = Query { env: &e, ..q.q() };
        let d = ix.explain(&query);
        assert_eq!(ix.decide_outcome(&query), d.outcome);
        let plain = ix.decide(&query);
        assert_eq!((plain.outcome, &plain.reasons), (d.outcome, &d.reasons));
        assert!(plain.checks.is_empty());
        let resources = [(k(resource), vec![])];
        let m = ix.decide_matrix_explained(&e, &q.principals, &[a("endpoint:read")], &resources);
        assert_eq!(m[0][0], d);
        let m = ix.decide_matrix_with(&e, &q.principals, &[a("endpoint:read")], &resources);
        assert_eq!(m[0][0], plain);
        d
    };
    let inside = json!({"kaa:SourceIp": "10.1.2.3"});
    let d = decide("krn:epr:kaa::endpoint/e1", inside.clone());
    assert_eq!(d.outcome, Outcome::Allow);
    assert_eq!(d.checks.len(), 1);
    assert!(d.checks[0].applied);
    assert_eq!(
        d.checks[0].conditions[0].actual,
        Some(vec!["10.1.2.3".into()])
    );
    let d = decide(
        "krn:epr:kaa::endpoint/e1",
        json!({"kaa:SourceIp": "192.168.1.1"}),
    );
    assert_eq!(d.outcome, Outcome::ImplicitDeny);
    assert!(!d.checks[0].applied);
    assert_eq!(
        d.checks[0].conditions[0].values,
        vec!["10.0.0.0/8".to_string()]
    );
    // Missing key: the condition fails.
    let d = decide("krn:epr:kaa::endpoint/e1", json!({}));
    assert_eq!(d.outcome, Outcome::ImplicitDeny);
    assert_eq!(d.checks[0].conditions[0].actual, None);
    // A deny whose condition holds wins over the allow; when it fails, the allow decides.
    let mut locked = inside.clone();
    locked["locked"] = json!(true);
    let d = decide("krn:epr:kaa::endpoint/secret", locked);
    assert_eq!(d.outcome, Outcome::ExplicitDeny);
    assert_eq!(reasons(&d), vec![("net".into(), 1)]);
    let d = decide("krn:epr:kaa::endpoint/secret", inside);
    assert_eq!(d.outcome, Outcome::Allow);
    assert_eq!(reasons(&d), vec![("net".into(), 0)]);
    assert_eq!(d.checks.len(), 2);
    // A statement without conditions is not traced; a skipped one is.
    let d = decide("krn:epr:kaa::endpoint/open", json!({}));
    assert_eq!(reasons(&d), vec![("net".into(), 2)]);
    assert_eq!(d.checks.len(), 1);
    assert_eq!((d.checks[0].statement, d.checks[0].applied), (0, false));
}

#[test]
fn variable_resources_are_indexed_under_their_prefix() {
    let mut ix = PolicyIndex::new();
    ix.upsert(identity(
        "home",
        json!([
            {"effect": "allow", "actions": ["fs:folder:*"],
             "resources": ["krn:fs:kaa::folder/${iam:username}/*", "krn:fs:kaa::folder/shared"]},
            {"effect": "allow", "actions": ["iam:user:update"], "resources": ["${krn:principal}"]}
        ]),
        &["krn:iam:kaa::group/staff"],
    ))
    .unwrap();
    let set = ["krn:iam:kaa::user/bob", "krn:iam:kaa::group/staff"];
    let decide = |principals: &[&str], action: &str, r: &str| {
        let q = Q::new(principals, action, r);
        ix.explain(&q.q())
    };
    assert!(decide(&set, "fs:folder:read", "krn:fs:kaa::folder/bob/notes").is_allowed());
    let other = decide(&set, "fs:folder:read", "krn:fs:kaa::folder/alice/notes");
    assert_eq!(other.outcome, Outcome::ImplicitDeny);
    assert_eq!(
        other.checks[0].resources[0].substituted.as_deref(),
        Some("krn:fs:kaa::folder/bob/*")
    );
    assert!(decide(&set, "fs:folder:read", "krn:fs:kaa::folder/shared").is_allowed());
    assert!(decide(&set, "iam:user:update", "krn:iam:kaa::user/bob").is_allowed());
    assert!(!decide(&set, "iam:user:update", "krn:iam:kaa::user/alice").is_allowed());
    // A group asked about alone has no username: the variable resource matches nothing.
    let d = decide(
        &["krn:iam:kaa::group/staff"],
        "fs:folder:read",
        "krn:fs:kaa::folder/staff/x",
    );
    assert_eq!(d.outcome, Outcome::ImplicitDeny);
    assert_eq!(
        d.checks[0].resources[0].note.as_deref(),
        Some("variable `${iam:username}` has no value")
    );
    // Removing the policy drops its extras.
    assert!(ix.remove("home"));
    assert_eq!(ix.conditional_count(), 0);
}

#[test]
fn simulated_candidates_evaluate_conditions() {
    let ix = PolicyIndex::new();
    let cand = identity(
        "cand",
        json!([{"effect": "allow", "actions": ["fs:folder:read"],
                "resources": ["krn:fs:kaa::folder/${iam:username}/*"],
                "conditions": {"StringEquals": {"iam:username": "bob"}}}]),
        &[BOB],
    );
    let q = Q::new(&[BOB], "fs:folder:read", "krn:fs:kaa::folder/bob/x");
    let d = ix.simulate(&q.q(), std::slice::from_ref(&cand), &[]);
    assert!(d.is_allowed());
    assert!(d.checks[0].applied);
    let q = Q::new(&[BOB], "fs:folder:read", "krn:fs:kaa::folder/eve/x");
    let d = ix.simulate(&q.q(), std::slice::from_ref(&cand), &[]);
    assert_eq!(d.outcome, Outcome::ImplicitDeny);
    assert!(!d.checks[0].applied);
}
