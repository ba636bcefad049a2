#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#[path = "../support/mod.rs"]
mod support;

// Black-box acceptance test of IAM's REST API, driven over HTTP only, like an outside client.
//
// 1. A seeded pseudo-random world is built through the API in tenant t1: users under paths,
//    groups nested three deep with members, identity policies mixing allow and deny, exact and
//    wildcard actions and resources, with and without `principals`, attached to users and
//    groups; devices with the configured resource-policy template, explicit resource policies,
//    pools with members and policies; and a noisy policy in tenant t2 that t1 must never see.
// 2. An independent model (spec §3.2 and docs/ENGINE_API.md "Semantics") answers the same
//    questions; more than a thousand decisions asked through `/evaluate` (explained, plain,
//    `filterResources`), `/evaluate/actions`, `/evaluate/resources` and `/evaluate/simulate`
//    must agree with it: outcome and the deciding (policyID, statement) pairs.
// 3. Every list pages consistently in every sort and order; duplicates answer 409, stale
//    versions 412 under `If-Match` and 409 in the body, and nothing changes.
// 4. Malformed and hostile requests answer their 4xx with a JSON `message` and change nothing.
// 5. After documented cascades (deletes, detach, re-creation under the same KRN) decisions
//    still agree with the model.
// The story runs on SQLite and, with IAM_TEST_POSTGRES_URL, on PostgreSQL. Seeds are fixed;
// IAM_BLACKBOX_SEED=<n> explores other worlds. Smaller tests at the end hold documented rules
// that need their own configuration or users.
//
// Nothing of the crate is used but `kaa::policy::Krn`, and only to compute base64 ids.
//
// The steps are modules: `world` (1, with `model` and `rng`), `asking` (2), `lists` and
// `versions` (3), `hostile` (4), `changes` (5); `http` is the client. This file tells the story.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kaa::policy::Krn;
use serde_json::{Value, json};
use support::proc::{Resp, call_json_with, request};

mod asking;
mod changes;
mod hostile;
mod http;
mod lists;
mod model;
mod rng;
mod versions;
mod world;

use asking::*;
use changes::*;
use hostile::*;
use http::*;
use lists::*;
use model::*;
use rng::*;
use versions::*;
use world::*;

const T: &str = "t1";
/// Seeds of the world and of the questions: change them to explore, keep them to reproduce.
const SEED_WORLD: u64 = 0x5EED_1A4A_2026_1125;
const SEED_ASK: u64 = 0x0A5C_0FF1_CE00_0042;
const SEED_RECHECK: u64 = 0x00C0_FFEE_0BAD_F00D;
const SEED_MUTATE: u64 = 0x0DE1_E7ED_0000_0007;

/// The resource-policy template of type `device` (service `svc`): group g0 may read and send
/// commands to a device, users under `/org1/team` may never flash it.
const CONFIG: &str = r#"
iam:
  resource-policy-templates:
    device:
      statements:
        - effect: allow
          actions: ["svc:device:read", "svc:device:cmd:*"]
          resources: ["${resource}"]
          principals: ["krn:iam:${tenant}::group/g0"]
        - effect: deny
          actions: ["svc:device:cmd:flash"]
          principals: ["krn:iam:${tenant}::user/org1/team/*"]
"#;

const BASE_POLICY: &str = "tenant-admin";
const ADMIN_ROLE: &str = "krn:iam:t1::role/tenant-admin";

// ---------------------------------------------------------------- the story

fn story(addr: SocketAddr, backend: &str) {
    let t0 = Instant::now();
    let mut w = build_world(addr);
    // Two inert policies for the filter and id checks: one statement about nothing asked.
    let mut rng = Rng::new(1);
    let inert = vec![MStmt {
        deny: false,
        actions: vec!["other:inert:never".into()],
        resources: vec![format!("krn:other:{T}::inert/none")],
        principals: Vec::new(),
    }];
    for name in ["p_under", "pad"] {
        let krn = post_policy(addr, &mut rng, name, &inert);
        w.model.policies.insert(
            krn.clone(),
            MPolicy {
                statements: inert.clone(),
                ..MPolicy::default()
            },
        );
        w.policies.push(krn);
    }
    let built = t0.elapsed();

    let a = ask(addr, &w, seed(SEED_ASK), 260);
    report_mismatches(&format!("{backend}: decisions"), &a);
    assert!(
        a.decisions >= 400,
        "only {} decisions were asked",
        a.decisions
    );
    // The fixed world must exercise every rule; an explored one (IAM_BLACKBOX_SEED) only says so.
    let explored = seed(0) != 0;
    let mut dull = Vec::new();
    for outcome in ["allow", "explicitDeny", "implicitDeny"] {
        let n = a.outcomes.get(outcome).copied().unwrap_or(0);
        if n < 40 {
            dull.push(format!("{n} {outcome} decisions"));
        }
    }
    for kind in [
        "outcome set by groups or roles",
        "outcome set by ancestor groups",
        "base policy decides",
        "resource-based policy decides",
        "pool-attached policy decides",
        "several deciding statements",
        "4-token action allowed",
    ] {
        let n = a.coverage.get(kind).copied().unwrap_or(0);
        if n < 5 {
            dull.push(format!("{kind}: {n}"));
        }
    }
    if explored && !dull.is_empty() {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "{backend}: a dull world: {dull:?}");
    } else {
        assert!(
            dull.is_empty(),
            "the world is too dull: {dull:?} ({:?}, {:?})",
            a.outcomes,
            a.coverage
        );
    }
    let asked = t0.elapsed();
    let summary = format!(
        "{} decisions in {} requests {:?} (outcomes {:?}, coverage {:?})",
        a.decisions, a.requests, a.by_endpoint, a.outcomes, a.coverage
    );
    drop(a);
    let (other_requests, other_decisions) = other_evaluations(addr, &w, seed(SEED_ASK ^ 1));

    lists_and_paging(addr, &w);
    conflicts_and_versions(addr, &w);
    let listed = t0.elapsed();
    let cases = hostile(addr, &w);
    let hostile_done = t0.elapsed();

    // After all that, decisions are still what the model says...
    let again = ask(addr, &w, seed(SEED_RECHECK), 60);
    report_mismatches(&format!("{backend}: decisions after the rest"), &again);
    let again = again.decisions;
    // ...and after changes with cascades.
    let changes = mutate(addr, &mut w);
    let changed = ask(addr, &w, seed(SEED_RECHECK ^ SEED_MUTATE), 120);
    report_mismatches(
        &format!("{backend}: decisions after {changes} changes"),
        &changed,
    );
    other_evaluations(addr, &w, seed(SEED_RECHECK ^ 1));

    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "{backend}: {summary}; {other_decisions} in {other_requests} requests to \
         /evaluate/resources and /evaluate/simulate; {again} more after, {} after {changes} changes; {cases} hostile \
         requests refused; built {built:?}, asked {:?}, lists {:?}, hostile {:?}, total {:?}",
        changed.decisions,
        asked - built,
        listed - asked,
        hostile_done - listed,
        t0.elapsed()
    );
}

#[test]
fn sqlite_blackbox() {
    let dir = support::TempDir::new();
    let svc = support::service::start_iam(&support::sqlite_settings(&dir), CONFIG);
    story(svc.addr, "sqlite");
}

#[test]
fn postgres_blackbox() {
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip("postgres_blackbox");
    };
    let svc = support::service::start_iam(&pg.storage(), CONFIG);
    story(svc.addr, "postgres");
}

/// docs/DECISIONS.md: in a template, `${owner}` is the registering principal and "statements
/// naming it are dropped when there is none" (security off: no principal). Start IAM with the
/// `device` template `statements`, register a device, and return its policy's statements and the
/// outcome of `svc:device:read` for group `readers`.
fn owner_template(statements: &str) -> (Vec<Value>, String) {
    let config =
        format!("iam:\n  resource-policy-templates:\n    device:\n      statements:\n{statements}");
    let dir = support::TempDir::new();
    let settings = support::sqlite_settings(&dir);
    let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        support::service::start_iam(&settings, &config)
    }));
    let Ok(svc) = started else {
        panic!(
            "IAM refused to start with a template whose statements name `${{owner}}`; \
             DECISIONS.md says such statements are dropped when there is no owner:\n{config}"
        );
    };
    let addr = svc.addr;
    let body = json!({"service": "svc", "resourceType": "device", "name": "e1", "tenantID": T});
    let d = expect(
        &call(addr, "POST", "/api/v1/resources", Some(&body)),
        201,
        "register a device without an owner",
    );
    assert!(d["data"]["policyID"].is_string(), "{d}");
    let e1 = format!("krn:svc:{T}::device/e1");
    let rp = expect(
        &call(
            addr,
            "GET",
            &format!("/api/v1/resources/{}/policy", id(&e1)),
            None,
        ),
        200,
        "its policy",
    );
    let readers = format!("krn:iam:{T}::group/readers");
    let r = call(
        addr,
        "POST",
        "/api/v1/evaluate?explain=true",
        Some(&json!({"principal": readers, "action": "svc:device:read", "resources": [e1]})),
    );
    let outcome = r.json()["decisions"][0]["outcome"]
        .as_str()
        .unwrap_or("")
        .to_string();
    (
        rp["data"]["statements"].as_array().unwrap().clone(),
        outcome,
    )
}

const READERS_MAY_READ: &str = r#"        - effect: allow
          actions: ["svc:device:read"]
          principals: ["krn:iam:${tenant}::group/readers"]
"#;

#[test]
fn a_template_statement_naming_only_the_owner_is_dropped_without_one() {
    let (statements, outcome) = owner_template(&format!(
        "{READERS_MAY_READ}        - effect: allow\n          actions: [\"svc:device:*\"]\n          principals: [\"${{owner}}\"]\n"
    ));
    assert_eq!(statements.len(), 1, "{statements:?}");
    assert_eq!(outcome, "allow");
}

#[test]
fn a_template_statement_naming_the_owner_and_others_is_dropped_without_one() {
    let (statements, outcome) = owner_template(&format!(
        "{READERS_MAY_READ}        - effect: deny\n          actions: [\"svc:device:read\"]\n          principals: [\"${{owner}}\", \"krn:iam:${{tenant}}::group/readers\"]\n"
    ));
    assert_eq!(
        statements.len(),
        1,
        "the deny statement names `${{owner}}`: it must be dropped, not kept without the owner: \
         {statements:?}"
    );
    assert_eq!(outcome, "allow", "readers are denied by the kept statement");
}

/// DECISIONS.md: "Passwords: 8 to 256 characters" and e-mail "at most 254 bytes".
#[test]
fn passwords_are_counted_in_characters_and_emails_in_bytes() {
    let dir = support::TempDir::new();
    let svc = support::service::start_iam(&support::sqlite_settings(&dir), "");
    let addr = svc.addr;
    let user = |name: &str, password: &str, email: Option<&str>| {
        let mut body = json!({"username": name, "password": password,
            "confirmPassword": password, "tenantID": T});
        if let Some(e) = email {
            body["email"] = json!(e);
        }
        call(addr, "POST", "/api/v1/users", Some(&body))
    };
    let mut problems = Vec::new();
    let email = format!("{}@example.com", "a".repeat(242));
    assert_eq!(email.len(), 254);
    let long = "é".repeat(256);
    for (name, password, email, status, what) in [
        (
            "long-pw",
            long.as_str(),
            None,
            201,
            "256 characters (512 bytes)",
        ),
        (
            "short-pw",
            &"é".repeat(8),
            None,
            201,
            "8 characters (16 bytes)",
        ),
        (
            "too-short",
            &"é".repeat(7),
            None,
            400,
            "7 characters (14 bytes)",
        ),
        ("too-long", &"é".repeat(257), None, 400, "257 characters"),
        (
            "mail-254",
            "pass-word-1",
            Some(email.as_str()),
            201,
            "an e-mail of 254 bytes",
        ),
    ] {
        let r = user(name, password, email);
        if r.status != status {
            problems.push(format!("{what}: {} want {status}: {}", r.status, text(&r)));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
