#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `iam generate` output loads with the normal start: a small generated tenant, written into a
//! fresh SQLite file and (when `IAM_TEST_POSTGRES_URL` is set) a fresh PostgreSQL database, is
//! listed with the right counts over HTTP, and the service decides the generator's sample
//! requests as the generator says it should. Timings stay out: the benchmark prints them.

mod support;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use kaa::config::StorageSettings;
use kaa::iam::generate::{GENERATED_PASSWORD_HASH, Options, Report, Sample, generate, outcome_mix};
use kaa::policy::Outcome;
use kaa::storage::{BulkStore, Database, UserStore};
use serde_json::Value;
use support::proc::call_json;

const TENANT: &str = "gen";

fn count(addr: SocketAddr, collection: &str) -> u64 {
    let r = call_json(
        addr,
        "GET",
        &format!("/api/v1/{collection}?tenantID={TENANT}&pageSize=1"),
        None,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["count"].as_u64().unwrap()
}

fn outcome(v: &Value) -> Outcome {
    serde_json::from_value(v.clone()).unwrap()
}

/// The service's decision for every resource of a sample, explained.
fn decide(addr: SocketAddr, s: &Sample) -> Vec<Outcome> {
    let r = call_json(
        addr,
        "POST",
        "/api/v1/evaluate?explain=true",
        Some(&s.body()),
    );
    assert!(
        r.status == 200 || r.status == 403,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| outcome(&d["outcome"]))
        .collect()
}

fn story(storage: &StorageSettings) {
    let dir = support::TempDir::new();
    let opts = Options {
        tenant: TENANT.into(),
        users: 200,
        groups: 50,
        policies: 300,
        statements: 1500,
        seed: 42,
        per_tx: 64,
        samples: 60,
        batch: 25,
        requests: Some(dir.0.join("req")),
        export: Some(dir.0.join("tenant.json")),
    };
    let report = {
        let db = Database::open(storage).unwrap();
        let report = generate(&db, &opts).unwrap();
        let counts = db.tenant_counts(TENANT).unwrap();
        assert_eq!(
            (
                counts.users,
                counts.groups,
                counts.policies,
                counts.attachments
            ),
            (200, 50, 300, 300)
        );
        assert_eq!(counts.memberships, report.table("memberships"));
        let u = db
            .get_user(TENANT, &report.single[0].principal)
            .unwrap_or_else(|e| panic!("sample principal is a stored user: {e}"));
        assert_eq!(u.password_hash.as_deref(), Some(GENERATED_PASSWORD_HASH));
        // A second run into the same tenant refuses rather than mixing two data sets.
        assert!(generate(&db, &opts).is_err());
        report
    };
    assert_eq!(report.statements, 1500);
    assert!(report.groups_per_level.iter().all(|&n| n > 0));
    for (file, lines) in [("req.single.jsonl", 60), ("req.batch.jsonl", 6)] {
        let text = std::fs::read_to_string(dir.0.join(file)).unwrap();
        assert_eq!(text.lines().count(), lines, "{file}");
    }
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.0.join("req.expected.json")).unwrap())
            .unwrap();
    assert_eq!(expected["single"].as_array().unwrap().len(), 60);

    let export: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.0.join("tenant.json")).unwrap()).unwrap();
    let svc = support::service::start_iam(storage, "");
    assert_eq!(count(svc.addr, "users"), 200);
    assert_eq!(count(svc.addr, "groups"), 50);
    assert_eq!(count(svc.addr, "policies"), 300);

    // The generator's expected outcomes, as the service decides them after a normal start.
    let (allow, explicit, implicit) = outcome_mix(&report.single);
    assert!(
        allow > 0 && explicit > 0 && implicit > 0,
        "sample mix {allow}/{explicit}/{implicit}"
    );
    for s in &report.single {
        assert_eq!(decide(svc.addr, s), s.expected, "{}", s.body());
    }
    for s in &report.batch {
        assert_eq!(decide(svc.addr, s), s.expected, "{}", s.body());
        // The load generator's form: the allowed subset, always 200.
        let r = call_json(
            svc.addr,
            "POST",
            "/api/v1/evaluate?filterResources=true",
            Some(&s.body()),
        );
        assert_eq!(r.status, 200);
        let allowed = s.expected.iter().filter(|o| **o == Outcome::Allow).count();
        assert_eq!(r.json().as_array().unwrap().len(), allowed);
    }
    exported_tenant_decides_as_the_service(svc.addr, &export, &report);
}

/// The export holds the whole tenant: its counts are the service's, its statements are the
/// stored ones, and a plain evaluation over the export alone (statements of the policies attached
/// to the user, its groups and their ancestors; deny over allow; a trailing `*` matching by
/// prefix) decides every sample as the service does.
fn exported_tenant_decides_as_the_service(addr: SocketAddr, export: &Value, report: &Report) {
    let list = |k: &str| export[k].as_array().unwrap().clone();
    assert_eq!(export["tenant"], TENANT);
    assert_eq!(list("users").len() as u64, count(addr, "users"));
    assert_eq!(list("groups").len() as u64, count(addr, "groups"));
    assert_eq!(list("policies").len() as u64, count(addr, "policies"));
    let statements: usize = list("policies")
        .iter()
        .map(|p| p["statements"].as_array().unwrap().len())
        .sum();
    assert_eq!(statements as u64, report.statements);

    // A few policies as the API lists them: the same statements.
    for p in list("policies").iter().step_by(37) {
        let name = p["name"].as_str().unwrap();
        let r = call_json(
            addr,
            "GET",
            &format!("/api/v1/policies?tenantID={TENANT}&name={name}"),
            None,
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let listed = r.json();
        let found = listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == name)
            .unwrap_or_else(|| panic!("policy {name} not listed: {listed}"))
            .clone();
        assert_eq!(found["statements"], p["statements"], "{name}");
    }

    let parent: HashMap<&str, Option<&str>> = export["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["krn"].as_str().unwrap(), g["parent"].as_str()))
        .collect();
    let groups_of: HashMap<&str, Vec<&str>> = export["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            let gs = u["groups"].as_array().unwrap();
            (
                u["krn"].as_str().unwrap(),
                gs.iter().map(|g| g.as_str().unwrap()).collect(),
            )
        })
        .collect();
    let mut attached: HashMap<&str, Vec<&Value>> = HashMap::new();
    for p in export["policies"].as_array().unwrap() {
        attached
            .entry(p["attachedTo"].as_str().unwrap())
            .or_default()
            .extend(p["statements"].as_array().unwrap());
    }
    let actions: HashSet<&str> = export["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let resources: HashSet<&str> = export["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let matches = |s: &str, pattern: &str| match pattern.strip_suffix('*') {
        Some(prefix) => s.starts_with(prefix),
        None => s == pattern,
    };
    let any = |v: &Value, s: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .any(|p| matches(s, p.as_str().unwrap()))
    };
    for s in report.single.iter().chain(&report.batch) {
        assert!(actions.contains(s.action.as_str()), "{}", s.action);
        let mut principals = vec![s.principal.as_str()];
        for &g in &groups_of[s.principal.as_str()] {
            let mut at = Some(g);
            while let Some(x) = at {
                principals.push(x);
                at = parent[x];
            }
        }
        let reach: Vec<&Value> = principals
            .iter()
            .flat_map(|p| attached.get(p).into_iter().flatten().copied())
            .collect();
        let decided: Vec<Outcome> = s
            .resources
            .iter()
            .map(|r| {
                assert!(resources.contains(r.as_str()), "{r}");
                let hits: Vec<&str> = reach
                    .iter()
                    .filter(|st| any(&st["actions"], &s.action) && any(&st["resources"], r))
                    .map(|st| st["effect"].as_str().unwrap())
                    .collect();
                if hits.contains(&"deny") {
                    Outcome::ExplicitDeny
                } else if hits.contains(&"allow") {
                    Outcome::Allow
                } else {
                    Outcome::ImplicitDeny
                }
            })
            .collect();
        assert_eq!(decided, decide(addr, s), "{}", s.body());
    }
}

#[test]
fn a_generated_tenant_loads_and_decides_as_generated_on_sqlite() {
    let dir = support::TempDir::new();
    story(&support::sqlite_settings(&dir));
}

#[test]
fn a_generated_tenant_loads_and_decides_as_generated_on_postgres() {
    let Some(db) = support::PgTestDb::create() else {
        support::skip("a_generated_tenant_loads_and_decides_as_generated_on_postgres");
        return;
    };
    story(&db.storage());
}
