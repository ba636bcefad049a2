//! Replicas that start together on one fresh PostgreSQL database all start, and agree on what
//! their start wrote: 8 `iam` processes at once, 5 times, each ready with the same base policies
//! (written once); 8 `tenant-manager` processes at once, 5 times, each ready with the same
//! system tenant, Keycloak server and catalogue. And a rolling upgrade's new base policies are
//! applied once while the previous replicas keep running.
//!
//! Needs `IAM_TEST_POSTGRES_URL` (prints `skipped:` otherwise).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::proc::{self, Service};

const IAM: &str = env!("CARGO_BIN_EXE_iam");
const TM: &str = env!("CARGO_BIN_EXE_tenant-manager");

const REPLICAS: usize = 8;
const TRIALS: usize = 5;

/// The environment of a replica on `pg`'s database, with the configuration file `cfg`.
fn env_for(pg: &support::PgTestDb, cfg: &std::path::Path) -> Vec<(String, String)> {
    let s = &pg.settings;
    vec![
        ("APP_CONFIG_PATH".into(), cfg.to_str().unwrap().into()),
        ("SERVER_PORT".into(), "0".into()),
        ("KAA_POSTGRESQL_HOST".into(), s.host.clone()),
        ("KAA_POSTGRESQL_PORT".into(), s.port.to_string()),
        ("KAA_POSTGRESQL_USERNAME".into(), s.username.clone()),
        (
            "KAA_POSTGRESQL_PASSWORD".into(),
            s.password.expose().to_string(),
        ),
        ("KAA_POSTGRESQL_DATABASE".into(), pg.name.clone()),
    ]
}

/// Start `n` processes of `bin` at the same moment; every one must reach "listening on".
fn start_together(
    bin: &str,
    n: usize,
    cwd: &std::path::Path,
    env: &[(String, String)],
) -> Vec<Service> {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (bin, cwd, env) = (bin.to_string(), cwd.to_path_buf(), env.to_vec());
            let barrier = std::sync::Arc::clone(&barrier);
            std::thread::spawn(move || {
                let env: Vec<(&str, &str)> =
                    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                barrier.wait();
                proc::start(&bin, &cwd, &env)
            })
        })
        .collect();
    let mut started = Vec::new();
    let mut failed = Vec::new();
    for h in handles {
        match h.join().unwrap() {
            Ok(s) => started.push(s),
            Err((status, log)) => failed.push(format!("{status}: {}", log.join("\n"))),
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {n} replicas of {bin} did not start:\n{}",
        failed.len(),
        failed.join("\n---\n")
    );
    started
}

/// Poll `/health/ready` every 10 ms until it answers 200 (at most 30 s).
fn wait_ready(s: &Service) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = proc::request(
            s.addr,
            "GET",
            "/health/ready",
            &[],
            b"",
            Duration::from_secs(5),
        );
        if matches!(&r, Ok(r) if r.status == 200) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replica at {} never became ready: {r:?}\n{}",
            s.addr,
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// GET `path` as JSON, expecting 200.
fn read(s: &Service, path: &str) -> Value {
    let r = proc::call_json(s.addr, "GET", path, None);
    assert_eq!(
        r.status,
        200,
        "GET {path} at {}: {}",
        s.addr,
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

/// The base policies a replica lists: (name, statements, version), by name.
fn base_policies(s: &Service) -> Vec<(String, Value, i64)> {
    let v = read(s, "/api/v1/policies?type=base&pageSize=50");
    let mut out: Vec<(String, Value, i64)> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["statements"].clone(),
                p["version"].as_i64().unwrap(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

const IAM_YAML: &str = "postgresql:\n  max-open-connections: 4\n";

/// A base-policy set that differs from the built-in one in `tenant-admin` only.
const IAM_YAML_CHANGED: &str = "postgresql:\n  max-open-connections: 4\niam:\n  base-policies:\n    - name: tenant-admin\n      statements:\n        - effect: allow\n          actions: [\"iam:user:read\"]\n          resources: [\"krn:iam:${tenant}:*\"]\n          principals: [\"krn:iam:${tenant}::role/tenant-admin\"]\n    - name: platform-admin\n      statements:\n        - effect: allow\n          actions: [\"iam:*\"]\n          resources: [\"krn:iam:*\"]\n          principals: [\"krn:iam:kaa::role/platform-admin\"]\n";

#[test]
fn iam_replicas_started_together_all_start_with_the_same_base_policies() {
    let what = "iam_replicas_started_together_all_start_with_the_same_base_policies";
    if support::pg_url().is_none() {
        return support::skip(what);
    }
    for trial in 0..TRIALS {
        let pg = support::PgTestDb::create().unwrap();
        let dir = support::TempDir::new();
        let cfg = dir.0.join("c.yml");
        std::fs::write(&cfg, IAM_YAML).unwrap();
        let replicas = start_together(IAM, REPLICAS, &dir.0, &env_for(&pg, &cfg));
        for r in &replicas {
            wait_ready(r);
        }
        let first = base_policies(&replicas[0]);
        let names: Vec<&str> = first.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, ["platform-admin", "tenant-admin"], "trial {trial}");
        for (name, _, version) in &first {
            assert_eq!(
                *version, 1,
                "trial {trial}: `{name}` was written more than once"
            );
        }
        for r in &replicas[1..] {
            assert_eq!(
                base_policies(r),
                first,
                "trial {trial}: replica at {}",
                r.addr
            );
        }
        drop(replicas);
    }
}

/// A rolling upgrade: replicas of the previous configuration keep running while replicas whose
/// `tenant-admin` base policy changed start together; the change is written once, and every
/// replica, old or new, lists it.
#[test]
fn a_changed_base_policy_is_applied_once_beside_running_replicas() {
    let what = "a_changed_base_policy_is_applied_once_beside_running_replicas";
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip(what);
    };
    let dir = support::TempDir::new();
    let old_cfg = dir.0.join("old.yml");
    let new_cfg = dir.0.join("new.yml");
    std::fs::write(&old_cfg, IAM_YAML).unwrap();
    std::fs::write(&new_cfg, IAM_YAML_CHANGED).unwrap();
    let old = start_together(IAM, 2, &dir.0, &env_for(&pg, &old_cfg));
    for r in &old {
        wait_ready(r);
    }
    let before = base_policies(&old[0]);
    let new = start_together(IAM, REPLICAS, &dir.0, &env_for(&pg, &new_cfg));
    for r in &new {
        wait_ready(r);
    }
    let after = base_policies(&new[0]);
    let tenant_admin = after.iter().find(|(n, _, _)| n == "tenant-admin").unwrap();
    assert_eq!(
        tenant_admin.1,
        json!([{"effect": "allow", "actions": ["iam:user:read"], "resources": ["krn:iam:${tenant}:*"],
                "principals": ["krn:iam:${tenant}::role/tenant-admin"]}]),
        "the new statements"
    );
    assert_eq!(tenant_admin.2, 2, "the change was written exactly once");
    let platform_admin = after
        .iter()
        .find(|(n, _, _)| n == "platform-admin")
        .unwrap();
    let unchanged = before
        .iter()
        .find(|(n, _, _)| n == "platform-admin")
        .unwrap();
    assert_eq!(
        platform_admin, unchanged,
        "an unchanged base policy is not written"
    );
    for r in new.iter().chain(&old) {
        assert_eq!(base_policies(r), after, "replica at {}", r.addr);
    }
}

/// The Tenant Manager's start-up writes as a replica reads them back.
fn tm_view(s: &Service) -> Value {
    json!({
        "system": read(s, "/api/v1/tenants/kaa"),
        "servers": read(s, "/api/v1/keycloak-servers"),
        "roles": read(s, "/api/v1/roles"),
        "realm-templates": read(s, "/api/v1/realm-templates"),
        "package-types": read(s, "/api/v1/package-types"),
    })
}

#[test]
fn tenant_manager_replicas_started_together_all_start_with_the_same_bootstrap() {
    let what = "tenant_manager_replicas_started_together_all_start_with_the_same_bootstrap";
    if support::pg_url().is_none() {
        return support::skip(what);
    }
    for trial in 0..TRIALS {
        let pg = support::PgTestDb::create().unwrap();
        let dir = support::TempDir::new();
        let cfg = dir.0.join("c.yml");
        // The default Keycloak server is only recorded at start, never called.
        std::fs::write(
            &cfg,
            "postgresql:\n  max-open-connections: 4\nsecurity:\n  enabled: false\nlicense:\n  required: false\ntenant-manager:\n  keycloak:\n    url: http://127.0.0.1:9\n    username: admin\n    password: admin\n",
        )
        .unwrap();
        let replicas = start_together(TM, REPLICAS, &dir.0, &env_for(&pg, &cfg));
        for r in &replicas {
            wait_ready(r);
        }
        let first = tm_view(&replicas[0]);
        assert_eq!(first["system"]["id"], "kaa", "trial {trial}");
        let servers = first["servers"]["results"]
            .as_array()
            .unwrap_or_else(|| panic!("servers: {}", first["servers"]));
        assert_eq!(servers.len(), 1, "trial {trial}: {servers:?}");
        for r in &replicas[1..] {
            assert_eq!(tm_view(r), first, "trial {trial}: replica at {}", r.addr);
        }
        drop(replicas);
    }
}

/// A replica of this release restarting during a rolling upgrade, after a newer release
/// migrated the database: it starts, serves reads and writes on the expanded schema.
#[test]
fn a_replica_starts_on_a_schema_a_newer_release_expanded() {
    let what = "a_replica_starts_on_a_schema_a_newer_release_expanded";
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip(what);
    };
    let dir = support::TempDir::new();
    let cfg = dir.0.join("c.yml");
    std::fs::write(&cfg, IAM_YAML).unwrap();
    let env = env_for(&pg, &cfg);
    // This release migrates the fresh database.
    let first = start_together(IAM, 1, &dir.0, &env);
    wait_ready(&first[0]);
    drop(first);
    // A newer release adds a table and a column and records its migration.
    let s = &pg.settings;
    let mut db = postgres::Config::new()
        .host(&s.host)
        .port(s.port)
        .user(&s.username)
        .password(s.password.expose())
        .dbname(&pg.name)
        .connect(postgres::NoTls)
        .unwrap();
    db.batch_execute(
        "CREATE TABLE future_things (id TEXT PRIMARY KEY); \
         ALTER TABLE policies ADD COLUMN future_note TEXT; \
         INSERT INTO schema_migrations (version, name, checksum) \
         VALUES (9999, '9999_future_things', '0000000000000000')",
    )
    .unwrap();
    drop(db);
    let again = start_together(IAM, 2, &dir.0, &env);
    for r in &again {
        wait_ready(r);
    }
    assert!(
        again[0]
            .log_text()
            .contains("migration 9999 `9999_future_things` of a newer release"),
        "{}",
        again[0].log_text()
    );
    assert_eq!(base_policies(&again[0]).len(), 2);
    let body = json!({"name": "p1", "tenantID": "t1", "type": "identity", "statements": [
        {"effect": "allow", "actions": ["epr:endpoint:read"], "resources": ["krn:epr:t1::endpoint/e1"]}]});
    let r = proc::call_json(again[0].addr, "POST", "/api/v1/policies", Some(&body));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let location = r.header("Location").unwrap().to_string();
    let back = read(&again[1], &location);
    assert_eq!(back["data"]["name"], "p1");
}
