//! Tenant isolation as a property: on random tenants, users, groups and policies written by each
//! tenant's own administrator, no principal of tenant A is ever allowed on a resource of tenant B
//! (only a base policy could say so, and the configured ones do not).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kaa::iam::model::{EvaluateBody, GroupCreate, PolicyCreate, UserCreate};
use kaa::iam::{Caller, Iam};
use kaa::policy::Krn;
use kaa::storage::Database;
use proptest::prelude::*;
use serde_json::json;

static CASE: AtomicUsize = AtomicUsize::new(0);

fn admin_of(tenant: &str) -> Caller {
    Caller {
        tenant: tenant.to_string(),
        principal: Some(Krn::parse(&format!("krn:iam:{tenant}::user/admin")).unwrap()),
        roles: vec![Krn::parse(&format!("krn:iam:{tenant}::role/tenant-admin")).unwrap()],
        unrestricted: false,
    }
}

/// KRN patterns a statement may name: own tenant, other tenant, cross-tenant wildcards.
fn pattern(own: &str, other: &str, pick: u8) -> String {
    match pick % 12 {
        0 => format!("krn:iam:{own}::user/*"),
        1 => format!("krn:epr:{own}::endpoint/*"),
        2 => format!("krn:epr:{own}:*"),
        3 => format!("krn:iam:{own}::group/g1"),
        4 => format!("krn:epr:{other}::endpoint/e1"),
        5 => format!("krn:iam:{other}::user/*"),
        6 => "krn:epr:*".to_string(),
        7 => "*".to_string(),
        8 => format!("krn:iam:{own}::user/u1"),
        9 => format!("krn:iam:{own}::role/tenant-admin"),
        10 => format!("krn:epr:{other}:*"),
        _ => format!("krn:iam:{own}::user/u2"),
    }
}

#[derive(Debug, Clone)]
struct PolicySpec {
    owner_a: bool,
    deny: bool,
    resources: Vec<u8>,
    principals: Vec<u8>,
    attach_to: Option<u8>,
}

fn policy_spec() -> impl Strategy<Value = PolicySpec> {
    (
        any::<bool>(),
        prop::bool::weighted(0.2),
        prop::collection::vec(any::<u8>(), 1..3),
        prop::collection::vec(any::<u8>(), 0..3),
        prop::option::of(0u8..3),
    )
        .prop_map(
            |(owner_a, deny, resources, principals, attach_to)| PolicySpec {
                owner_a,
                deny,
                resources,
                principals,
                attach_to,
            },
        )
}

fn world(iam: &Iam, a: &str, b: &str, specs: &[PolicySpec]) -> (usize, usize) {
    let (mut accepted, mut refused) = (0, 0);
    for t in [a, b] {
        let admin = admin_of(t);
        for u in ["u1", "u2"] {
            iam.create_user(&admin, serde_json::from_value::<UserCreate>(json!({"username": u, "password": "password-1", "confirmPassword": "password-1"})).unwrap())
                .unwrap();
        }
        iam.create_group(
            &admin,
            serde_json::from_value::<GroupCreate>(json!({"name": "g1"})).unwrap(),
        )
        .unwrap();
        iam.set_members(
            &admin,
            &Krn::parse(&format!("krn:iam:{t}::group/g1"))
                .unwrap()
                .to_id(),
            &[Krn::parse(&format!("krn:iam:{t}::user/u1"))
                .unwrap()
                .to_id()],
            true,
        )
        .unwrap();
    }
    for (i, s) in specs.iter().enumerate() {
        let (own, other) = if s.owner_a { (a, b) } else { (b, a) };
        let statement = json!({
            "effect": if s.deny { "deny" } else { "allow" },
            "actions": ["epr:endpoint:read", "iam:user:read"],
            "resources": s.resources.iter().map(|p| pattern(own, other, *p)).collect::<Vec<_>>(),
            "principals": s.principals.iter().map(|p| pattern(own, other, *p)).collect::<Vec<_>>(),
        });
        let body: PolicyCreate =
            serde_json::from_value(json!({"name": format!("p{i}"), "statements": [statement]}))
                .unwrap();
        match iam.create_policy(&admin_of(own), body) {
            Ok(_) => {
                accepted += 1;
                if let Some(t) = s.attach_to {
                    let target = match t {
                        0 => format!("krn:iam:{own}::user/u1"),
                        1 => format!("krn:iam:{own}::user/u2"),
                        _ => format!("krn:iam:{own}::group/g1"),
                    };
                    let pid = Krn::parse(&format!("krn:iam:{own}::policy/p{i}"))
                        .unwrap()
                        .to_id();
                    iam.set_attachment(&admin_of(own), &Krn::parse(&target).unwrap(), &[pid], true)
                        .unwrap();
                }
            }
            Err(_) => refused += 1,
        }
    }
    (accepted, refused)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn no_principal_of_a_reaches_a_resource_of_b(specs in prop::collection::vec(policy_spec(), 1..10)) {
        let dir = support::TempDir::new();
        let db = Arc::new(Database::open(&support::sqlite_settings(&dir)).unwrap());
        let iam = Iam::new(db, &kaa::config::IamSection::defaults().unwrap(), 100).unwrap();
        let n = CASE.fetch_add(1, Ordering::SeqCst);
        let (a, b) = (format!("ta{n}"), format!("tb{n}"));
        world(&iam, &a, &b, &specs);
        let system = Caller::system_admin();
        for (from, to) in [(&a, &b), (&b, &a)] {
            for principal in ["user/u1", "user/u2", "user/admin", "group/g1"] {
                let body: EvaluateBody = serde_json::from_value(json!({
                    "principal": format!("krn:iam:{from}::{principal}"),
                    "roles": [format!("krn:iam:{from}::role/tenant-admin")],
                    "actions": ["epr:endpoint:read", "iam:user:read"],
                    "resources": [format!("krn:epr:{to}::endpoint/e1"), format!("krn:iam:{to}::user/u1"),
                                  format!("krn:iam:{to}::group/g1")],
                })).unwrap();
                let d = iam.evaluate(&system, &body, true).unwrap();
                for row in &d.decisions {
                    for x in row {
                        prop_assert!(!x.is_allowed(), "{principal} of {from} allowed in {to}: {:?}", x.reasons);
                    }
                }
            }
        }
        // The same-tenant control: a tenant's administrator reaches its own users.
        let body: EvaluateBody = serde_json::from_value(json!({
            "principal": format!("krn:iam:{a}::user/admin"),
            "roles": [format!("krn:iam:{a}::role/tenant-admin")],
            "action": "iam:user:read",
            "resources": [format!("krn:iam:{a}::user/u1")],
        })).unwrap();
        let d = iam.evaluate(&system, &body, false).unwrap();
        prop_assert!(d.decisions[0][0].is_allowed() || specs.iter().any(|s| s.deny));
    }
}

#[test]
fn cross_tenant_statements_are_refused_for_tenant_callers() {
    let dir = support::TempDir::new();
    let db = Arc::new(Database::open(&support::sqlite_settings(&dir)).unwrap());
    let iam = Iam::new(db, &kaa::config::IamSection::defaults().unwrap(), 100).unwrap();
    for res in [
        "krn:epr:tb::endpoint/e1",
        "krn:epr:*",
        "*",
        "krn:iam:tb::user/*",
    ] {
        let body: PolicyCreate = serde_json::from_value(json!({"name": "x", "statements": [
            {"effect": "allow", "actions": ["epr:endpoint:read"], "resources": [res]}]}))
        .unwrap();
        let err = iam.create_policy(&admin_of("ta"), body).unwrap_err();
        assert!(
            matches!(err, kaa::iam::IamError::Invalid(..)),
            "{res}: {err:?}"
        );
    }
    let body: PolicyCreate = serde_json::from_value(json!({"name": "x", "tenantID": "tb", "statements": [
        {"effect": "allow", "actions": ["epr:endpoint:read"], "resources": ["krn:epr:tb::endpoint/e1"]}]})).unwrap();
    assert!(matches!(
        iam.create_policy(&admin_of("ta"), body),
        Err(kaa::iam::IamError::Forbidden(_))
    ));
}

#[test]
fn policy_writes_update_the_index_incrementally() {
    let dir = support::TempDir::new();
    let db = Arc::new(Database::open(&support::sqlite_settings(&dir)).unwrap());
    let iam = Iam::new(db, &kaa::config::IamSection::defaults().unwrap(), 100).unwrap();
    let admin = admin_of("inc");
    let body = |i: usize| -> PolicyCreate {
        serde_json::from_value(json!({"name": format!("p{i}"), "statements": [
            {"effect": "allow", "actions": ["iam:user:read"], "resources": [format!("krn:iam:inc::user/u{i}")],
             "principals": ["krn:iam:inc::user/reader"]}]}))
        .unwrap()
    };
    iam.create_policy(&admin, body(0)).unwrap();
    let (reloads, deltas) = iam.state.update_counts();
    for i in 1..50 {
        iam.create_policy(&admin, body(i)).unwrap();
    }
    let (reloads2, deltas2) = iam.state.update_counts();
    assert_eq!(
        reloads2, reloads,
        "no whole-tenant reload for single policy writes"
    );
    assert_eq!(deltas2 - deltas, 49);
    let ask = |i: usize| {
        let b: EvaluateBody =
            serde_json::from_value(json!({"principal": "krn:iam:inc::user/reader",
            "action": "iam:user:read", "resources": [format!("krn:iam:inc::user/u{i}")]}))
            .unwrap();
        iam.evaluate(&Caller::system_admin(), &b, false)
            .unwrap()
            .decisions[0][0]
            .is_allowed()
    };
    assert!((0..50).all(ask));
    let id = Krn::parse("krn:iam:inc::policy/p7").unwrap().to_id();
    iam.delete_policy(&admin, &id).unwrap();
    assert!(!ask(7));
    assert!(ask(8));
}
