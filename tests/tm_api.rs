//! The Tenant Manager over HTTP, as the `tenant-manager` binary on the embedded default and on
//! PostgreSQL: tenants through their states, the catalogue, Keycloak servers, the v1 list and
//! error shapes, tasks that survive a crash, the outbox through a NATS outage, and two processes
//! that never run the same task.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use kaa::clients::nats::NatsClient;
use kaa::clients::tle::LifecycleEvent;
use kaa::storage::{Database, NewTask, TaskStore, TenantRecord, TenantStore};
use serde_json::{Value, json};
use support::proc::{self, CALL_TIMEOUT, Resp, call_json, request};

const TM: &str = env!("CARGO_BIN_EXE_tenant-manager");

fn expect(r: &Resp, status: u16) -> Value {
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
    if r.body.is_empty() {
        Value::Null
    } else {
        r.json()
    }
}

fn wait_status(a: SocketAddr, id: &str, status: &str) -> Value {
    let started = Instant::now();
    loop {
        let r = call_json(a, "GET", &format!("/api/v1/tenants/{id}"), None);
        if r.status == 200 && r.json()["status"] == status {
            return r.json();
        }
        if status == "GONE" && r.status == 404 {
            return Value::Null;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "tenant `{id}` never {status}: {}",
            String::from_utf8_lossy(&r.body)
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn story(a: SocketAddr) {
    // The system tenant is there from the start and cannot be deleted.
    let kaa = expect(&call_json(a, "GET", "/api/v1/tenants/kaa", None), 200);
    assert_eq!(kaa["status"], "AVAILABLE");
    let r = call_json(a, "DELETE", "/api/v1/tenants/kaa", None);
    expect(&r, 409);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("system tenant")
    );

    // Create: 202 CREATING, then AVAILABLE.
    let r = call_json(
        a,
        "POST",
        "/api/v1/tenants",
        Some(&json!({"id": "acme", "display_name": "Acme"})),
    );
    let t = expect(&r, 202);
    assert_eq!(t["status"], "CREATING");
    assert_eq!(t["realm_name"], "acme");
    assert_eq!(t["realm_template_version"], 1);
    assert!(t.get("client_backend_secret").is_none(), "{t}");
    assert_ne!(t["client_frontend_id"], t["client_backend_id"]);
    assert_eq!(r.header("location"), Some("/api/v1/tenants/acme"));
    let t = wait_status(a, "acme", "AVAILABLE");
    assert!(t["failure_reason"].is_null());
    let r = call_json(a, "POST", "/api/v1/tenants", Some(&json!({"id": "acme"})));
    expect(&r, 409);
    let r = call_json(
        a,
        "POST",
        "/api/v1/tenants",
        Some(&json!({"id": "other", "realm_name": "acme"})),
    );
    expect(&r, 409);
    let generated = expect(
        &call_json(a, "POST", "/api/v1/tenants", Some(&json!({}))),
        202,
    );
    assert_eq!(
        generated["id"].as_str().unwrap().len(),
        36,
        "a UUID when no id is given"
    );
    wait_status(a, generated["id"].as_str().unwrap(), "AVAILABLE");

    // Bad input: 400 with {"error", "details"} and nothing created.
    for (body, field) in [
        (json!({"id": "Bad!"}), "id"),
        (json!({"id": "-x"}), "id"),
        (json!({"id": "ok", "realm_name": "a b"}), "realm_name"),
        (json!({"id": "ok", "roles_version": 9}), "roles_version"),
        (json!({"id": "ok", "roles_version": "1"}), "roles_version"),
        (
            json!({"id": "ok", "opendistro_enabled": "yes"}),
            "opendistro_enabled",
        ),
        (
            json!({"id": "ok", "keycloak_server_id": 77}),
            "keycloak_server_id",
        ),
        (json!({"id": "ok", "surprise": 1}), "surprise"),
    ] {
        let r = call_json(a, "POST", "/api/v1/tenants", Some(&body));
        let e = expect(&r, 400);
        assert_eq!(e["details"]["field"], field, "{body}: {e}");
        assert!(e["error"].is_string());
    }
    let r = request(
        a,
        "POST",
        "/api/v1/tenants",
        &[("Content-Type", "application/json")],
        b"{nope",
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(
        expect(&r, 400)["error"]
            .as_str()
            .unwrap()
            .contains("malformed JSON")
    );
    expect(&call_json(a, "GET", "/api/v1/tenants/ok", None), 404);
    let r = call_json(a, "GET", "/api/v1/nothing-here", None);
    assert!(expect(&r, 404)["error"].is_string());

    // Lists: {count, results}, offset/limit (default 50, 0 = all), filters.
    for i in 0..4 {
        expect(
            &call_json(
                a,
                "POST",
                "/api/v1/tenants",
                Some(&json!({"id": format!("t{i}"), "opendistro_enabled": i % 2 == 0})),
            ),
            202,
        );
    }
    for i in 0..4 {
        wait_status(a, &format!("t{i}"), "AVAILABLE");
    }
    let all = expect(&call_json(a, "GET", "/api/v1/tenants?limit=0", None), 200);
    assert_eq!(all["count"], 7);
    assert_eq!(all["results"].as_array().unwrap().len(), 7);
    let page = expect(
        &call_json(a, "GET", "/api/v1/tenants?offset=2&limit=2", None),
        200,
    );
    assert_eq!(page["count"], 7);
    assert_eq!(page["results"].as_array().unwrap().len(), 2);
    let od = expect(
        &call_json(
            a,
            "GET",
            "/api/v1/tenants?opendistro_enabled=true&limit=0",
            None,
        ),
        200,
    );
    assert_eq!(od["count"], 2);
    let by_realm = expect(
        &call_json(a, "GET", "/api/v1/tenants?realm_name=acme", None),
        200,
    );
    assert_eq!(by_realm["results"][0]["id"], "acme");
    expect(&call_json(a, "GET", "/api/v1/tenants?limit=-1", None), 400);
    expect(
        &call_json(a, "GET", "/api/v1/tenants?status=CREATING", None),
        200,
    );

    // Update: flags at once; a new version goes through UPDATING.
    let r = call_json(
        a,
        "PUT",
        "/api/v1/tenants/acme",
        Some(&json!({"opendistro_enabled": true, "subscription_type": "TRIAL"})),
    );
    let v = expect(&r, 200);
    assert_eq!(v["opendistro_enabled"], true);
    assert_eq!(v["subscription_type"], "TRIAL");
    expect(
        &call_json(
            a,
            "POST",
            "/api/v1/realm-templates",
            Some(&json!({"version": 2, "template": {"displayName": "v2"}})),
        ),
        201,
    );
    let r = call_json(
        a,
        "PUT",
        "/api/v1/tenants/acme",
        Some(&json!({"realm_template_version": 2})),
    );
    assert_eq!(expect(&r, 202)["status"], "UPDATING");
    let t = wait_status(a, "acme", "AVAILABLE");
    assert_eq!(t["realm_template_version"], 2);
    // A version in use cannot be deleted; an unused one can.
    let r = call_json(a, "DELETE", "/api/v1/realm-templates/2", None);
    assert!(expect(&r, 409)["error"].as_str().unwrap().contains("acme"));
    expect(
        &call_json(
            a,
            "POST",
            "/api/v1/realm-templates",
            Some(&json!({"version": 3, "template": {}})),
        ),
        201,
    );
    expect(
        &call_json(a, "DELETE", "/api/v1/realm-templates/3", None),
        204,
    );

    // Security context (secrets) and public config (none).
    let sc = expect(
        &call_json(a, "GET", "/api/v1/tenants/acme/security-context", None),
        200,
    );
    assert_eq!(sc["client_id"], t["client_backend_id"]);
    let secret = sc["client_secret"].as_str().unwrap();
    assert_eq!(secret.len(), 48);
    let pc = expect(
        &call_json(a, "GET", "/api/v1/tenants/acme/public-config", None),
        200,
    );
    assert_eq!(pc["client_id"], t["client_frontend_id"]);
    // Only the security context carries the secret: not the public config, the tenant or the
    // list of tenants.
    for path in [
        "/api/v1/tenants/acme/public-config",
        "/api/v1/tenants/acme",
        "/api/v1/tenants?limit=0",
    ] {
        let r = expect(&call_json(a, "GET", path, None), 200);
        assert!(!r.to_string().contains(secret), "{path}: {r}");
    }

    // Catalogue: bootstrap content, references, conflicts.
    let roles = expect(&call_json(a, "GET", "/api/v1/roles?limit=0", None), 200);
    assert!(
        roles["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "tenant-admin")
    );
    let scopes = expect(&call_json(a, "GET", "/api/v1/scopes?limit=0", None), 200);
    assert!(scopes["count"].as_u64().unwrap() >= 30);
    let r = call_json(
        a,
        "POST",
        "/api/v1/role-scope-mappings",
        Some(&json!({"role_id": "nobody", "scope_id": "endpoint:read"})),
    );
    assert_eq!(expect(&r, 400)["details"]["field"], "role_id");
    expect(
        &call_json(
            a,
            "POST",
            "/api/v1/roles",
            Some(&json!({"name": "auditor", "description": "reads"})),
        ),
        201,
    );
    expect(
        &call_json(
            a,
            "POST",
            "/api/v1/roles",
            Some(&json!({"name": "auditor"})),
        ),
        409,
    );
    let m = expect(
        &call_json(
            a,
            "POST",
            "/api/v1/role-scope-mappings",
            Some(&json!({"role_id": "auditor", "scope_id": "endpoint:read"})),
        ),
        201,
    );
    assert_eq!(m["id"], "auditor:endpoint:read");
    expect(&call_json(a, "DELETE", "/api/v1/roles/auditor", None), 409);
    expect(
        &call_json(
            a,
            "DELETE",
            "/api/v1/role-scope-mappings/auditor:endpoint:read",
            None,
        ),
        204,
    );
    expect(&call_json(a, "DELETE", "/api/v1/roles/auditor", None), 204);
    expect(
        &call_json(
            a,
            "POST",
            "/api/v1/package-types",
            Some(&json!({"name": "small", "limits": {"max_endpoints": 100}})),
        ),
        201,
    );
    expect(
        &call_json(
            a,
            "POST",
            "/api/v1/tenant-subscriptions",
            Some(&json!({"tenant_id": "acme", "package_type_id": "small"})),
        ),
        201,
    );
    let limits = expect(
        &call_json(a, "GET", "/api/v1/tenants/acme/limits", None),
        200,
    );
    assert_eq!(limits["limits"]["max_endpoints"], 100);
    expect(
        &call_json(
            a,
            "POST",
            "/api/v1/idps",
            Some(
                &json!({"tenant_id": "acme", "alias": "corp", "provider_id": "oidc", "config": {"issuer": "https://sso"}}),
            ),
        ),
        201,
    );
    expect(
        &call_json(
            a,
            "POST",
            "/api/v1/idps",
            Some(&json!({"tenant_id": "ghost", "alias": "corp", "provider_id": "oidc"})),
        ),
        404,
    );

    // Keycloak servers.
    let s = expect(
        &call_json(
            a,
            "POST",
            "/api/v1/keycloak-servers",
            Some(
                &json!({"id": 5, "url": "https://kc5.example/auth/", "username": "admin", "password": "pw"}),
            ),
        ),
        201,
    );
    assert_eq!(s["url"], "https://kc5.example/auth");
    assert!(
        s.get("password").is_none(),
        "admin credentials are never shown"
    );
    expect(
        &call_json(
            a,
            "POST",
            "/api/v1/keycloak-servers",
            Some(&json!({"id": 5, "url": "https://x"})),
        ),
        409,
    );
    expect(
        &call_json(
            a,
            "POST",
            "/api/v1/keycloak-servers",
            Some(&json!({"id": 6, "url": "ftp://x"})),
        ),
        400,
    );
    expect(
        &call_json(a, "DELETE", "/api/v1/keycloak-servers/5", None),
        204,
    );

    // Delete: DELETING, then gone with its catalogue rows.
    let r = call_json(a, "DELETE", "/api/v1/tenants/acme", None);
    assert_eq!(expect(&r, 202)["status"], "DELETING");
    wait_status(a, "acme", "GONE");
    let idps = expect(&call_json(a, "GET", "/api/v1/idps?limit=0", None), 200);
    assert_eq!(idps["count"], 0);
    expect(
        &call_json(a, "POST", "/api/v1/tenants/acme/retry", None),
        404,
    );
}

#[test]
fn tenant_manager_story_on_sqlite() {
    let dir = support::TempDir::new();
    let svc = proc::start(TM, &dir.0, &[("SERVER_PORT", "0")]).unwrap();
    story(svc.addr);
    assert!(svc.terminate(Duration::from_secs(10)).success());
}

fn pg_env(pg: &support::PgTestDb) -> Vec<(&'static str, String)> {
    vec![
        ("SERVER_PORT", "0".to_string()),
        ("KAA_POSTGRESQL_HOST", pg.settings.host.clone()),
        ("KAA_POSTGRESQL_PORT", pg.settings.port.to_string()),
        ("KAA_POSTGRESQL_USERNAME", pg.settings.username.clone()),
        (
            "KAA_POSTGRESQL_PASSWORD",
            pg.settings.password.expose().to_string(),
        ),
        ("KAA_POSTGRESQL_DATABASE", pg.name.clone()),
    ]
}

fn refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, s)| (*k, s.as_str())).collect()
}

#[test]
fn tenant_manager_story_on_postgres() {
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip("tenant_manager_story_on_postgres");
    };
    let dir = support::TempDir::new();
    let env = pg_env(&pg);
    let svc = proc::start(TM, &dir.0, &refs(&env)).unwrap();
    story(svc.addr);
    assert!(svc.terminate(Duration::from_secs(10)).success());
}

/// Two clients change different fields of one tenant at once without naming a version: every
/// change is answered 200 and none undoes the other's (each lands on the tenant as it is).
fn concurrent_patches_keep_each_field(a: SocketAddr) {
    expect(
        &call_json(a, "POST", "/api/v1/tenants", Some(&json!({"id": "cp"}))),
        202,
    );
    wait_status(a, "cp", "AVAILABLE");
    const ROUNDS: usize = 30;
    let writers: Vec<_> = [("display_name", "d"), ("subscription_type", "s")]
        .into_iter()
        .map(|(field, prefix)| {
            std::thread::spawn(move || {
                for i in 0..ROUNDS {
                    let body = json!({ field: format!("{prefix}{i}") });
                    let r = call_json(a, "PATCH", "/api/v1/tenants/cp", Some(&body));
                    expect(&r, 200);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let t = expect(&call_json(a, "GET", "/api/v1/tenants/cp", None), 200);
    let last = ROUNDS - 1;
    assert_eq!(t["display_name"], format!("d{last}"), "{t}");
    assert_eq!(t["subscription_type"], format!("s{last}"), "{t}");
}

#[test]
fn concurrent_patches_keep_each_field_on_sqlite_and_postgres() {
    let dir = support::TempDir::new();
    let svc = proc::start(TM, &dir.0, &[("SERVER_PORT", "0")]).unwrap();
    concurrent_patches_keep_each_field(svc.addr);
    assert!(svc.terminate(Duration::from_secs(10)).success());
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip("concurrent_patches_keep_each_field (postgres)");
    };
    let dir = support::TempDir::new();
    let env = pg_env(&pg);
    let svc = proc::start(TM, &dir.0, &refs(&env)).unwrap();
    concurrent_patches_keep_each_field(svc.addr);
    assert!(svc.terminate(Duration::from_secs(10)).success());
}

/// `DELETE`s (no version asked) sent at once, while the worker is still making the tenant's
/// realm, are each answered 202 (or 404 once it is gone) and the tenant goes: another request or the worker changing the
/// tenant between a request's read and its write is no conflict of the caller's.
fn deletes_race_the_worker(a: SocketAddr) {
    const TENANTS: usize = 10;
    const AT_ONCE: usize = 4;
    for i in 0..TENANTS {
        let id = format!("race{i}");
        expect(
            &call_json(a, "POST", "/api/v1/tenants", Some(&json!({ "id": id }))),
            202,
        );
        let deletes: Vec<_> = (0..AT_ONCE)
            .map(|_| {
                let path = format!("/api/v1/tenants/{id}");
                std::thread::spawn(move || call_json(a, "DELETE", &path, None))
            })
            .collect();
        let mut accepted = 0;
        for d in deletes {
            // 404 once the worker has removed it already; never 409.
            let r = d.join().unwrap();
            if r.status != 404 {
                assert_eq!(expect(&r, 202)["status"], "DELETING", "{id}");
                accepted += 1;
            }
        }
        assert!(accepted >= 1, "{id}: no DELETE was accepted");
    }
    for i in 0..TENANTS {
        wait_status(a, &format!("race{i}"), "GONE");
    }
}

#[test]
fn deletes_racing_the_worker_are_accepted_on_sqlite_and_postgres() {
    let dir = support::TempDir::new();
    let svc = proc::start(TM, &dir.0, &[("SERVER_PORT", "0")]).unwrap();
    deletes_race_the_worker(svc.addr);
    assert!(svc.terminate(Duration::from_secs(10)).success());
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip("deletes_racing_the_worker (postgres)");
    };
    let dir = support::TempDir::new();
    let env = pg_env(&pg);
    let svc = proc::start(TM, &dir.0, &refs(&env)).unwrap();
    deletes_race_the_worker(svc.addr);
    assert!(svc.terminate(Duration::from_secs(10)).success());
}

#[test]
fn a_task_left_by_a_crashed_worker_resumes_on_the_next_start() {
    let dir = support::TempDir::new();
    let db_path = dir.0.join("data/tenant-manager.db");
    std::fs::create_dir_all(db_path.parent().unwrap()).unwrap();
    let settings =
        kaa::config::StorageSettings::Sqlite(kaa::config::SqliteSettings { path: db_path });
    {
        // A process accepted the tenant, took its task and died before finishing it.
        let db = Database::open(&settings).unwrap();
        let now = kaa::clock::now_ms();
        let t = creating_tenant("phoenix", now);
        db.insert_tenant(
            &t,
            Some(&NewTask {
                kind: "create_realm".into(),
                max_attempts: 5,
            }),
            None,
        )
        .unwrap();
        let claimed = db
            .claim_task("dead-worker", kaa::clock::now_ms(), 1500)
            .unwrap()
            .unwrap();
        assert_eq!(claimed.tenant_id, "phoenix");
        assert!(
            db.claim_task("other", kaa::clock::now_ms(), 1500)
                .unwrap()
                .is_none(),
            "leased"
        );
    }
    let svc = proc::start(TM, &dir.0, &[("SERVER_PORT", "0")]).unwrap();
    assert_eq!(
        call_json(svc.addr, "GET", "/api/v1/tenants/phoenix", None).json()["status"],
        "CREATING"
    );
    let t = wait_status(svc.addr, "phoenix", "AVAILABLE");
    assert_eq!(t["id"], "phoenix");
    assert!(svc.terminate(Duration::from_secs(10)).success());
}

/// A tenant row in `CREATING`, as the API writes one, for tests that drive the task store.
fn creating_tenant(id: &str, now: i64) -> TenantRecord {
    TenantRecord {
        id: id.into(),
        realm_name: id.into(),
        client_frontend_id: "f".into(),
        client_backend_id: "b".into(),
        client_backend_secret: "s".into(),
        realm_template_version: 1,
        realm_scopes_version: 1,
        client_backend_version: 1,
        client_frontend_version: 1,
        roles_version: 1,
        resources_version: 1,
        keycloak_server_id: None,
        opendistro_enabled: false,
        subscription_type: "PERMANENT".into(),
        status: "CREATING".into(),
        failure_reason: None,
        display_name: None,
        version: 1,
        created_ms: now,
        updated_ms: now,
        first_admin: None,
        move_from: None,
        move_to: None,
    }
}

/// A task finished twice (its lease ran out while it ran, and another worker took it over and
/// finished it too) changes its tenant and emits its event once.
#[test]
fn a_task_finished_twice_emits_its_event_once() {
    use kaa::storage::{OutboxEvent, OutboxStore, TaskOutcome};
    let dir = support::TempDir::new();
    let db = Database::open(&support::sqlite_settings(&dir)).unwrap();
    let now = kaa::clock::now_ms();
    let t = creating_tenant("twice", now);
    let task = NewTask {
        kind: "create_realm".into(),
        max_attempts: 5,
    };
    db.insert_tenant(&t, Some(&task), None).unwrap();
    let first = db.claim_task("first", now, 10).unwrap().unwrap();
    // The first worker's lease runs out; a second takes the task over.
    let second = db.claim_task("second", now + 20, 60_000).unwrap().unwrap();
    assert_eq!(first.id, second.id);
    let event = OutboxEvent {
        subject: "kaa.v1.events.test.tenant.lifecycle.updated".into(),
        payload: vec![1, 2, 3],
    };
    let done = TaskOutcome::Status("AVAILABLE".into());
    let before = db.pending_events(100).unwrap().len();
    db.complete_task(&second, &done, Some(&event), now + 30)
        .unwrap();
    db.complete_task(&first, &done, Some(&event), now + 40)
        .unwrap();
    assert_eq!(db.pending_events(100).unwrap().len(), before + 1);
    let tenant = db.get_tenant("twice").unwrap();
    assert_eq!(tenant.status, "AVAILABLE");
    assert_eq!(tenant.version, 2, "the tenant changed once");
}

#[test]
fn two_processes_never_run_the_same_task() {
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip("two_processes_never_run_the_same_task");
    };
    let a = Database::open(&pg.storage()).unwrap();
    let b = Database::open(&pg.storage()).unwrap();
    let now = kaa::clock::now_ms();
    for i in 0..40 {
        let t = creating_tenant(&format!("x{i}"), now);
        a.insert_tenant(
            &t,
            Some(&NewTask {
                kind: "create_realm".into(),
                max_attempts: 5,
            }),
            None,
        )
        .unwrap();
    }
    let claim_all = |db: Database, who: &'static str| {
        std::thread::spawn(move || {
            let mut got = Vec::new();
            while let Some(t) = db.claim_task(who, kaa::clock::now_ms(), 60_000).unwrap() {
                got.push(t.id);
            }
            got
        })
    };
    let (ha, hb) = (claim_all(a, "a"), claim_all(b, "b"));
    let (mut ga, gb) = (ha.join().unwrap(), hb.join().unwrap());
    assert_eq!(
        ga.len() + gb.len(),
        40,
        "every task claimed once: {} + {}",
        ga.len(),
        gb.len()
    );
    ga.extend(gb);
    ga.sort_unstable();
    ga.dedup();
    assert_eq!(ga.len(), 40, "no task claimed twice");
}

/// Three replicas on one PostgreSQL database, each with its outbox publisher: every lifecycle
/// event of the tenants they make reaches NATS once, not once per replica.
#[test]
fn replicas_publish_each_event_once() {
    let Ok(url) = std::env::var("IAM_TEST_NATS_URL") else {
        return support::skip_because(
            "replicas_publish_each_event_once",
            "set IAM_TEST_NATS_URL to run it",
        );
    };
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip("replicas_publish_each_event_once");
    };
    let instance = support::unique("tmrep").replace('_', "-");
    let mut env = pg_env(&pg);
    env.push(("KAA_NATS_URLS", url.clone()));
    env.push(("SERVICE_INSTANCE_NAME", instance.clone()));
    let dir = support::TempDir::new();
    let replicas: Vec<_> = (0..3)
        .map(|_| proc::start(TM, &dir.0, &refs(&env)).unwrap())
        .collect();
    let listener = NatsClient::connect(&[url], "", "", Duration::from_secs(3)).unwrap();
    let mut sub = listener
        .subscribe(&format!("kaa.v1.events.{instance}.tenant.lifecycle.>"))
        .unwrap();
    const TENANTS: usize = 6;
    for i in 0..TENANTS {
        let a = replicas[i % replicas.len()].addr;
        expect(
            &call_json(
                a,
                "POST",
                "/api/v1/tenants",
                Some(&json!({ "id": format!("once{i}") })),
            ),
            202,
        );
    }
    for i in 0..TENANTS {
        wait_status(replicas[0].addr, &format!("once{i}"), "AVAILABLE");
    }
    // Every event is out once the tenants are available and the publishers had time to send
    // any second copy (each pass is at most 250 ms apart).
    let mut per_tenant = std::collections::BTreeMap::<String, usize>::new();
    let until = Instant::now() + Duration::from_secs(3);
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        let Some(m) = sub.next_timeout(left) else {
            break;
        };
        let e = LifecycleEvent::decode(&m.payload).unwrap();
        *per_tenant
            .entry(format!(
                "{} {}",
                e.tenant_id,
                m.subject.rsplit('.').next().unwrap()
            ))
            .or_default() += 1;
    }
    for i in 0..TENANTS {
        let key = format!("once{i} updated");
        assert_eq!(per_tenant.get(&key), Some(&1), "{key}: {per_tenant:?}");
    }
    assert!(per_tenant.values().all(|n| *n == 1), "{per_tenant:?}");
    for r in replicas {
        assert!(r.terminate(Duration::from_secs(10)).success());
    }
}

#[test]
fn lifecycle_events_reach_nats_and_survive_an_outage() {
    let Ok(url) = std::env::var("IAM_TEST_NATS_URL") else {
        return support::skip_because(
            "lifecycle_events_reach_nats_and_survive_an_outage",
            "set IAM_TEST_NATS_URL to run it",
        );
    };
    let upstream = url
        .trim_start_matches("nats://")
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap();
    let proxy = support::proxy::Proxy::start(upstream);
    let dir = support::TempDir::new();
    let instance = support::unique("tm").replace('_', "-");
    let via_proxy = format!("nats://{}", proxy.addr);
    let svc = proc::start(
        TM,
        &dir.0,
        &[
            ("SERVER_PORT", "0"),
            ("KAA_NATS_URLS", &via_proxy),
            ("SERVICE_INSTANCE_NAME", &instance),
        ],
    )
    .unwrap();
    let listener = NatsClient::connect(&[url], "", "", Duration::from_secs(3)).unwrap();
    let mut sub = listener
        .subscribe(&format!("kaa.v1.events.{instance}.tenant.lifecycle.>"))
        .unwrap();

    let updated_schema =
        apache_avro::Schema::parse_str(include_str!("../src/clients/tle/tenant-updated.avsc"))
            .unwrap();
    let unregistered_schema =
        apache_avro::Schema::parse_str(include_str!("../src/clients/tle/tenant-unregistered.avsc"))
            .unwrap();
    let decode = |schema: &apache_avro::Schema, bytes: &[u8]| -> Value {
        let v = apache_avro::from_avro_datum(schema, &mut &bytes[..], None).unwrap();
        let apache_avro::types::Value::Record(fields) = v else {
            panic!("not a record")
        };
        let mut m = serde_json::Map::new();
        for (k, v) in fields {
            let j = match v {
                apache_avro::types::Value::String(s) => Value::from(s),
                apache_avro::types::Value::Long(n) => Value::from(n),
                other => panic!("unexpected {other:?}"),
            };
            m.insert(k, j);
        }
        Value::Object(m)
    };

    expect(
        &call_json(
            svc.addr,
            "POST",
            "/api/v1/tenants",
            Some(&json!({"id": "evt-a"})),
        ),
        202,
    );
    let m = sub
        .next_timeout(Duration::from_secs(10))
        .expect("updated event");
    assert_eq!(
        m.subject,
        format!("kaa.v1.events.{instance}.tenant.lifecycle.updated")
    );
    let v = decode(&updated_schema, &m.payload);
    assert_eq!(v["tenantId"], "evt-a");
    assert_eq!(v["timeout"], 0);
    assert!(v["timestamp"].as_i64().unwrap() > 1_700_000_000_000);
    assert_eq!(
        LifecycleEvent::decode(&m.payload).unwrap().tenant_id,
        "evt-a"
    );

    // NATS unreachable: changes are acknowledged, events wait in the outbox, none is lost.
    proxy.set_down();
    expect(
        &call_json(
            svc.addr,
            "PUT",
            "/api/v1/tenants/evt-a",
            Some(&json!({"opendistro_enabled": true})),
        ),
        200,
    );
    for id in ["evt-b", "evt-c"] {
        expect(
            &call_json(
                svc.addr,
                "POST",
                "/api/v1/tenants",
                Some(&json!({"id": id})),
            ),
            202,
        );
        wait_status(svc.addr, id, "AVAILABLE");
    }
    expect(
        &call_json(svc.addr, "DELETE", "/api/v1/tenants/evt-b", None),
        202,
    );
    wait_status(svc.addr, "evt-b", "GONE");
    assert!(
        sub.next_timeout(Duration::from_millis(300)).is_none(),
        "nothing gets through while down"
    );
    proxy.set_up();
    let want = [
        ("updated", "evt-a"),
        ("updated", "evt-b"),
        ("updated", "evt-c"),
        ("unregistered", "evt-b"),
    ];
    // Delivery is at least once: a batch whose confirmation was cut is sent again.
    let mut got: Vec<(String, String)> = Vec::new();
    while !want
        .iter()
        .all(|(k, t)| got.iter().any(|(gk, gt)| gk == k && gt == t))
    {
        let m = sub
            .next_timeout(Duration::from_secs(15))
            .unwrap_or_else(|| panic!("only {got:?} arrived"));
        let kind = m.subject.rsplit('.').next().unwrap().to_string();
        let schema = if kind == "unregistered" {
            &unregistered_schema
        } else {
            &updated_schema
        };
        got.push((
            kind,
            decode(schema, &m.payload)["tenantId"]
                .as_str()
                .unwrap()
                .to_string(),
        ));
    }
    assert!(got.len() <= 8, "too many duplicates: {got:?}");
    assert!(svc.terminate(Duration::from_secs(10)).success());
}

/// Client secrets and Keycloak admin credentials are sealed at rest with the configured key;
/// rows from before are sealed at the next start; a new key with the old one kept as a
/// previous key seals every row again; a key that opens nothing stops the start, changing
/// nothing.
#[test]
fn secrets_are_sealed_at_rest_and_rotated() {
    use base64::Engine;
    let dir = support::TempDir::new();
    let db_path = dir.0.join("tm.db");
    let db = db_path.to_str().unwrap().to_string();
    let key = |b: u8| base64::engine::general_purpose::STANDARD.encode([b; 32]);
    let (a, b) = (key(1), key(2));
    let start = |env: &[(&str, &str)]| {
        let mut all = vec![("SERVER_PORT", "0"), ("KAA_SQLITE_PATH", db.as_str())];
        all.extend_from_slice(env);
        proc::start(TM, &dir.0, &all)
    };
    let raw = || -> (String, String) {
        let c = rusqlite::Connection::open(&db_path).unwrap();
        let t: String = c
            .query_row(
                "SELECT client_backend_secret FROM tenants WHERE id = 'sealed'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let p: String = c
            .query_row(
                "SELECT password FROM keycloak_servers WHERE id = 7",
                [],
                |r| r.get(0),
            )
            .unwrap();
        (t, p)
    };
    let context_secret = |svc: &proc::Service| -> String {
        let sc = expect(
            &call_json(
                svc.addr,
                "GET",
                "/api/v1/tenants/sealed/security-context",
                None,
            ),
            200,
        );
        sc["client_secret"].as_str().unwrap().to_string()
    };

    // Without a key (the embedded default) values are stored as they are.
    let svc = start(&[]).unwrap();
    expect(
        &call_json(
            svc.addr,
            "POST",
            "/api/v1/tenants",
            Some(&json!({"id": "sealed"})),
        ),
        202,
    );
    wait_status(svc.addr, "sealed", "AVAILABLE");
    expect(
        &call_json(
            svc.addr,
            "POST",
            "/api/v1/keycloak-servers",
            Some(
                &json!({"id": 7, "url": "http://127.0.0.1:9", "username": "admin",
                         "password": "kc-admin-password"}),
            ),
        ),
        201,
    );
    let secret = context_secret(&svc);
    assert!(svc.terminate(Duration::from_secs(10)).success());
    assert_eq!(raw(), (secret.clone(), "kc-admin-password".to_string()));

    // With key A: the rows are sealed at start, and read back the same.
    let svc = start(&[("KAA_TENANT_MANAGER_SECRET_KEY", &a)]).unwrap();
    assert_eq!(context_secret(&svc), secret);
    let s = expect(
        &call_json(svc.addr, "GET", "/api/v1/keycloak-servers/7", None),
        200,
    );
    assert_eq!(s["password_set"], true);
    assert!(svc.terminate(Duration::from_secs(10)).success());
    let (t_a, p_a) = raw();
    assert!(
        t_a.starts_with("enc:v1:") && !t_a.contains(&secret),
        "{t_a}"
    );
    assert!(
        p_a.starts_with("enc:v1:") && !p_a.contains("kc-admin"),
        "{p_a}"
    );

    // A key that opens nothing, or none at all, stops the start and changes nothing.
    for env in [vec![("KAA_TENANT_MANAGER_SECRET_KEY", b.as_str())], vec![]] {
        let (status, lines) = start(&env).err().expect("the start is refused");
        assert!(!status.success());
        let text = lines.join("\n");
        assert!(text.contains("not configured"), "{text}");
        assert!(!text.contains(&secret) && !text.contains(&a), "{text}");
    }
    assert_eq!(raw(), (t_a.clone(), p_a.clone()));
    let (status, lines) = start(&[("KAA_TENANT_MANAGER_SECRET_KEY", "too-short")])
        .err()
        .expect("a bad key is refused");
    assert_eq!(status.code(), Some(2), "{lines:?}");
    assert!(
        lines.join("\n").contains("KAA_TENANT_MANAGER_SECRET_KEY"),
        "{lines:?}"
    );

    // Rotation: B current, A kept to open old rows: every row is sealed with B.
    let svc = start(&[
        ("KAA_TENANT_MANAGER_SECRET_KEY", &b),
        ("KAA_TENANT_MANAGER_PREVIOUS_SECRET_KEYS", &a),
    ])
    .unwrap();
    assert_eq!(context_secret(&svc), secret);
    assert!(svc.terminate(Duration::from_secs(10)).success());
    let (t_b, p_b) = raw();
    let key_id = |v: &str| v.split(':').nth(2).unwrap().to_string();
    assert_ne!(key_id(&t_b), key_id(&t_a));
    assert_eq!(key_id(&p_b), key_id(&t_b));

    // A is no longer needed.
    let svc = start(&[("KAA_TENANT_MANAGER_SECRET_KEY", &b)]).unwrap();
    assert_eq!(context_secret(&svc), secret);
    assert!(svc.terminate(Duration::from_secs(10)).success());
}

/// `/metrics` shows the task queue (depth, attempts, failing tasks, the oldest due task's age),
/// the outbox (pending events, the oldest one's age) and tenants by status.
#[test]
fn metrics_show_the_queue_the_outbox_and_tenants_by_status() {
    let dir = support::TempDir::new();
    // NATS that never answers: events stay in the outbox.
    let svc = proc::start(
        TM,
        &dir.0,
        &[
            ("SERVER_PORT", "0"),
            ("KAA_NATS_URLS", "nats://127.0.0.1:1"),
        ],
    )
    .unwrap();
    let a = svc.addr;
    let gauge = |name: &str| -> i64 {
        let r = proc::get(a, "/metrics");
        assert_eq!(r.status, 200);
        let text = String::from_utf8_lossy(&r.body).into_owned();
        let line = text
            .lines()
            .find(|l| l.starts_with("service_gauge{") && l.contains(&format!("name=\"{name}\"")))
            .unwrap_or_else(|| panic!("no gauge {name} in:\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(gauge("tm_stats_up"), 1);
    assert_eq!(gauge("tm_tenants_available"), 1, "the system tenant");
    assert_eq!(gauge("tm_tasks_queued"), 0);
    assert_eq!(gauge("tm_outbox_pending"), 0);

    expect(
        &call_json(a, "POST", "/api/v1/tenants", Some(&json!({"id": "m1"}))),
        202,
    );
    wait_status(a, "m1", "AVAILABLE");
    // A Keycloak server that refuses connections: its tenant's task keeps failing and waits.
    expect(
        &call_json(
            a,
            "POST",
            "/api/v1/keycloak-servers",
            Some(
                &json!({"id": 9, "url": "http://127.0.0.1:1", "username": "admin",
                         "password": "admin-password"}),
            ),
        ),
        201,
    );
    expect(
        &call_json(
            a,
            "POST",
            "/api/v1/tenants",
            Some(&json!({"id": "m2", "keycloak_server_id": 9})),
        ),
        202,
    );
    support::wait_until("m2's task failing", || gauge("tm_tasks_failing") >= 1);
    // m1's event waits for NATS: a second old at least.
    support::wait_until("m1's event pending for a second", || {
        gauge("tm_outbox_oldest_pending_age_seconds") >= 1
    });
    assert_eq!(gauge("tm_tasks_queued"), 1);
    assert!(gauge("tm_tasks_attempts") >= 1);
    assert_eq!(gauge("tm_tenants_available"), 2);
    assert_eq!(gauge("tm_tenants_creating"), 1);
    assert_eq!(gauge("tm_tenants_failed"), 0);
    assert_eq!(gauge("tm_outbox_pending"), 1, "m1's updated event");
    assert!(gauge("tm_outbox_oldest_pending_age_seconds") >= 1);
    assert!(gauge("tm_tasks_oldest_due_age_seconds") >= 0);
    assert!(svc.terminate(Duration::from_secs(10)).success());
}

/// `updated` events of `tenant` that arrive within `within`.
fn events_of(
    sub: &mut kaa::clients::nats::NatsSubscription,
    tenant: &str,
    within: Duration,
) -> usize {
    let until = Instant::now() + within;
    let mut n = 0;
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        let Some(m) = sub.next_timeout(left) else {
            break;
        };
        if m.subject.ends_with(".updated")
            && LifecycleEvent::decode(&m.payload).unwrap().tenant_id == tenant
        {
            n += 1;
        }
    }
    n
}

/// A tenant's subscription type is its subscription's; a subscription has dates, and a read
/// after its end shows the fallback limits at once (here the sweep of the first process never
/// runs after its start); the next start applies the end with exactly one `updated` event, also
/// with two replicas sweeping the same database; `limits/check` answers from the limits in force.
fn subscriptions_story(env: &[(&str, &str)], replicas: usize) {
    let nats = std::env::var("IAM_TEST_NATS_URL").ok();
    let dir = support::TempDir::new();
    let instance = support::unique("tmsub").replace('_', "-");
    let lazy = dir.0.join("lazy.yml");
    std::fs::write(
        &lazy,
        "tenant-manager:\n  subscriptions:\n    sweep-ms: 3600000\n",
    )
    .unwrap();
    let lazy = lazy.to_str().unwrap().to_string();
    let mut base: Vec<(&str, &str)> = env.to_vec();
    base.push(("SERVICE_INSTANCE_NAME", &instance));
    if let Some(url) = &nats {
        base.push(("KAA_NATS_URLS", url));
    }
    let listener = nats.as_ref().map(|url| {
        NatsClient::connect(std::slice::from_ref(url), "", "", Duration::from_secs(3)).unwrap()
    });
    let mut sub = listener.as_ref().map(|l| {
        l.subscribe(&format!("kaa.v1.events.{instance}.tenant.lifecycle.>"))
            .unwrap()
    });
    let mut first_env = base.clone();
    first_env.push(("APP_CONFIG_PATH", &lazy));
    let svc = proc::start(TM, &dir.0, &first_env).unwrap();
    let a = svc.addr;
    for id in ["lim", "other"] {
        expect(
            &call_json(a, "POST", "/api/v1/tenants", Some(&json!({"id": id}))),
            202,
        );
        wait_status(a, id, "AVAILABLE");
    }
    for (name, limits) in [
        (
            "gold",
            json!({"max_endpoints": 10, "max_applications": 2, "retention": "30d"}),
        ),
        ("free", json!({"max_endpoints": 1})),
    ] {
        expect(
            &call_json(
                a,
                "POST",
                "/api/v1/package-types",
                Some(&json!({"name": name, "limits": limits})),
            ),
            201,
        );
    }

    // Bad dates and types: 400 naming the field, nothing stored.
    for (body, field) in [
        (json!({"end_date": "soon"}), "end_date"),
        (json!({"start_date": "2026-02-30"}), "start_date"),
        (
            json!({"start_date": "2030-01-02", "end_date": "2030-01-01"}),
            "end_date",
        ),
        (json!({"subscription_type": ""}), "subscription_type"),
    ] {
        let mut b = json!({"tenant_id": "lim", "package_type_id": "gold"});
        b.as_object_mut()
            .unwrap()
            .extend(body.as_object().unwrap().clone());
        let e = expect(
            &call_json(a, "POST", "/api/v1/tenant-subscriptions", Some(&b)),
            400,
        );
        assert_eq!(e["details"]["field"], field, "{b}: {e}");
    }
    expect(
        &call_json(a, "GET", "/api/v1/tenant-subscriptions/lim%2Fgold", None),
        404,
    );
    let limits = expect(
        &call_json(a, "GET", "/api/v1/tenants/lim/limits", None),
        200,
    );
    assert_eq!(limits["state"], "NONE", "{limits}");

    // One subscription type: the subscription's becomes the tenant's, and the tenant's the
    // subscription's; a second subscription is refused.
    let end_ms = kaa::clock::now_ms() + 4000;
    let end = kaa::clock::rfc3339_ms(end_ms);
    let s = expect(
        &call_json(
            a,
            "POST",
            "/api/v1/tenant-subscriptions",
            Some(&json!({"tenant_id": "lim", "package_type_id": "gold",
                "subscription_type": "TRIAL", "start_date": "2026-01-01", "end_date": end})),
        ),
        201,
    );
    assert_eq!(s["subscription_type"], "TRIAL");
    let t = expect(&call_json(a, "GET", "/api/v1/tenants/lim", None), 200);
    assert_eq!(t["subscription_type"], "TRIAL", "{t}");
    let listed = expect(
        &call_json(a, "GET", "/api/v1/tenants?subscription_type=TRIAL", None),
        200,
    );
    assert_eq!(listed["count"], 1, "{listed}");
    let t = expect(
        &call_json(
            a,
            "PATCH",
            "/api/v1/tenants/lim",
            Some(&json!({"subscription_type": "PAID"})),
        ),
        200,
    );
    assert_eq!(t["subscription_type"], "PAID");
    let s = expect(
        &call_json(a, "GET", "/api/v1/tenant-subscriptions/lim%2Fgold", None),
        200,
    );
    assert_eq!(s["subscription_type"], "PAID", "{s}");
    let e = expect(
        &call_json(
            a,
            "POST",
            "/api/v1/tenant-subscriptions",
            Some(&json!({"tenant_id": "lim", "package_type_id": "free"})),
        ),
        409,
    );
    assert!(e["error"].as_str().unwrap().contains("lim/gold"), "{e}");
    // A subscription without a type takes its tenant's.
    expect(
        &call_json(
            a,
            "POST",
            "/api/v1/tenant-subscriptions",
            Some(&json!({"tenant_id": "other", "package_type_id": "free"})),
        ),
        201,
    );
    let s = expect(
        &call_json(a, "GET", "/api/v1/tenant-subscriptions/other%2Ffree", None),
        200,
    );
    assert_eq!(s["subscription_type"], "PERMANENT", "{s}");

    // The limit check, from the limits in force.
    let check = |body: Value| call_json(a, "POST", "/api/v1/tenants/lim/limits/check", Some(&body));
    let r = expect(
        &check(json!({"limit": "max_endpoints", "current": 8, "requested": 2})),
        200,
    );
    assert_eq!(
        (
            r["allowed"].clone(),
            r["maximum"].clone(),
            r["remaining"].clone(),
            r["state"].clone()
        ),
        (json!(true), json!(10), json!(2), json!("ACTIVE")),
        "{r}"
    );
    let r = expect(
        &check(json!({"limit": "max_endpoints", "current": 8, "requested": 3})),
        200,
    );
    assert_eq!(r["allowed"], false, "{r}");
    assert_eq!(r["remaining"], 2, "{r}");
    let r = expect(
        &check(json!({"limit": "max_applications", "current": 5, "requested": 1})),
        200,
    );
    assert_eq!(
        (r["allowed"].clone(), r["remaining"].clone()),
        (json!(false), json!(0)),
        "{r}"
    );
    for (body, field) in [
        (
            json!({"limit": "max_devices", "current": 0, "requested": 1}),
            Some("limit"),
        ),
        (json!({"current": 0, "requested": 1}), Some("limit")),
        (
            json!({"limit": "max_endpoints", "current": -1, "requested": 1}),
            Some("current"),
        ),
        (
            json!({"limit": "max_endpoints", "current": 1.5, "requested": 1}),
            Some("current"),
        ),
        (
            json!({"limit": "max_endpoints", "current": 0, "requested": 0}),
            Some("requested"),
        ),
        (
            json!({"limit": "max_endpoints", "current": 0, "requested": "2"}),
            Some("requested"),
        ),
        (
            json!({"limit": "max_endpoints", "current": 0}),
            Some("requested"),
        ),
        (
            json!({"limit": "max_endpoints", "current": 0, "requested": 1, "x": 1}),
            Some("x"),
        ),
        (
            json!({"limit": "retention", "current": 0, "requested": 1}),
            None,
        ),
    ] {
        let e = expect(&check(body.clone()), 400);
        assert!(e["error"].as_str().unwrap().contains('`'), "{body}: {e}");
        if let Some(f) = field {
            assert_eq!(e["details"]["field"], f, "{body}: {e}");
        }
    }
    let r = call_json(
        a,
        "POST",
        "/api/v1/tenants/nobody/limits/check",
        Some(&json!({"limit": "max_endpoints", "current": 0, "requested": 1})),
    );
    expect(&r, 404);

    // The end passes: the very next read shows the tenant suspended (no fallback configured),
    // though this process's sweep does not run again.
    let wait = end_ms - kaa::clock::now_ms();
    if wait > 0 {
        std::thread::sleep(Duration::from_millis(u64::try_from(wait).unwrap() + 50));
    }
    let limits = expect(
        &call_json(a, "GET", "/api/v1/tenants/lim/limits", None),
        200,
    );
    assert_eq!(limits["state"], "SUSPENDED", "{limits}");
    assert_eq!(limits["subscription"]["phase"], "EXPIRED", "{limits}");
    assert_eq!(limits["limits"]["max_endpoints"], 0, "{limits}");
    let r = expect(
        &check(json!({"limit": "max_endpoints", "current": 0, "requested": 1})),
        200,
    );
    assert_eq!(
        (r["allowed"].clone(), r["state"].clone()),
        (json!(false), json!("SUSPENDED")),
        "{r}"
    );
    if let Some(sub) = sub.as_mut() {
        // The writes' events are through; the end has sent none yet.
        events_of(sub, "lim", Duration::from_secs(2));
    }
    assert!(svc.terminate(Duration::from_secs(10)).success());

    // Started again (with `replicas` processes on one database) with a fallback package type:
    // the end is applied once, with one `updated` event, and the fallback's limits apply.
    let mut next_env = base.clone();
    next_env.push(("KAA_TENANT_MANAGER_FALLBACK_PACKAGE_TYPE", "free"));
    let svcs: Vec<_> = (0..replicas)
        .map(|_| proc::start(TM, &dir.0, &next_env).unwrap())
        .collect();
    let a = svcs[0].addr;
    if let Some(sub) = sub.as_mut() {
        assert_eq!(
            events_of(sub, "lim", Duration::from_secs(4)),
            1,
            "one event for the end"
        );
        assert_eq!(events_of(sub, "other", Duration::from_millis(10)), 0);
    }
    for s in &svcs {
        let limits = expect(
            &call_json(s.addr, "GET", "/api/v1/tenants/lim/limits", None),
            200,
        );
        assert_eq!(limits["state"], "FALLBACK", "{limits}");
        assert_eq!(limits["package_type_id"], "free", "{limits}");
        assert_eq!(
            limits["limits"],
            json!({"max_endpoints": 1, "max_applications": 0, "retention": 0}),
            "{limits}"
        );
    }
    let r = expect(
        &call_json(
            a,
            "POST",
            "/api/v1/tenants/lim/limits/check",
            Some(&json!({"limit": "max_endpoints", "current": 0, "requested": 1})),
        ),
        200,
    );
    assert_eq!(
        (r["allowed"].clone(), r["maximum"].clone()),
        (json!(true), json!(1)),
        "{r}"
    );
    // Renewed: in force again at once.
    let renewed = expect(
        &call_json(
            a,
            "PUT",
            "/api/v1/tenant-subscriptions/lim%2Fgold",
            Some(&json!({"tenant_id": "lim", "package_type_id": "gold", "end_date": "2999-01-01"})),
        ),
        200,
    );
    assert_eq!(renewed["subscription_type"], "PAID", "{renewed}");
    let limits = expect(
        &call_json(a, "GET", "/api/v1/tenants/lim/limits", None),
        200,
    );
    assert_eq!(
        (
            limits["state"].clone(),
            limits["limits"]["max_endpoints"].clone()
        ),
        (json!("ACTIVE"), json!(10))
    );
    if let Some(sub) = sub.as_mut() {
        assert_eq!(
            events_of(sub, "lim", Duration::from_secs(2)),
            1,
            "one event for the renewal"
        );
    }
    for s in svcs {
        assert!(s.terminate(Duration::from_secs(10)).success());
    }
}

#[test]
fn subscriptions_expire_and_limits_are_checked_on_sqlite() {
    subscriptions_story(&[("SERVER_PORT", "0")], 1);
}

#[test]
fn subscriptions_expire_and_limits_are_checked_on_postgres() {
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip("subscriptions_expire_and_limits_are_checked_on_postgres");
    };
    let env = pg_env(&pg);
    subscriptions_story(&refs(&env), 2);
}

/// The keys of an error body, sorted.
fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

/// What the connection layer and the router refuse comes in the Tenant Manager's shape
/// (`{"error"}`, never IAM's `{"message"}`), as the handlers' errors do; and a stale version is
/// answered as IAM answers it: 412 when `If-Match` names it, 409 when the body's `version`
/// does, and nothing changes.
#[test]
fn connection_layer_errors_and_stale_versions_come_in_the_tenant_managers_shape() {
    let dir = support::TempDir::new();
    let svc = proc::start(TM, &dir.0, &[("SERVER_PORT", "0")]).unwrap();
    let a = svc.addr;
    // A body over the default 1 MiB limit: the server's 413.
    let big = vec![b' '; (1 << 20) + 1];
    let r = request(
        a,
        "POST",
        "/api/v1/tenants",
        &[("Content-Type", "application/json")],
        &big,
        Duration::from_secs(10),
    )
    .unwrap();
    let e = expect(&r, 413);
    assert_eq!(keys(&e), ["error"], "{e}");
    assert_eq!(e["error"], "request body too large");
    let e = expect(&call_json(a, "GET", "/api/v1/nowhere", None), 404);
    assert_eq!(keys(&e), ["error"], "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("/api/v1/nowhere"),
        "{e}"
    );
    let r = call_json(a, "DELETE", "/api/v1/tenants", None);
    let e = expect(&r, 405);
    assert_eq!(keys(&e), ["error"], "{e}");
    assert!(r.header("allow").is_some_and(|v| v.contains("POST")));

    // Stale versions.
    let r = call_json(a, "POST", "/api/v1/tenants", Some(&json!({"id": "acme"})));
    expect(&r, 202);
    let t = wait_status(a, "acme", "AVAILABLE");
    let v = t["version"].as_i64().unwrap();
    let path = "/api/v1/tenants/acme";
    let patch = |headers: &[(&str, &str)], body: Value| {
        proc::call_json_with(a, "PATCH", path, None, headers, Some(&body), CALL_TIMEOUT).unwrap()
    };
    let etag = format!("\"{v}\"");
    let t = expect(
        &patch(&[("If-Match", &etag)], json!({"display_name": "Acme"})),
        200,
    );
    assert_eq!(t["version"], v + 1);
    let e = expect(
        &patch(&[("If-Match", &etag)], json!({"display_name": "x"})),
        412,
    );
    assert_eq!(keys(&e), ["error"], "{e}");
    let e = expect(&patch(&[], json!({"display_name": "x", "version": v})), 409);
    assert_eq!(keys(&e), ["error"], "{e}");
    expect(
        &patch(&[("If-Match", "x")], json!({"display_name": "x"})),
        400,
    );
    let e = expect(
        &patch(
            &[("If-Match", &etag)],
            json!({"display_name": "x", "version": v + 1}),
        ),
        400,
    );
    assert_eq!(e["details"]["field"], "version", "{e}");
    let t = expect(&call_json(a, "GET", path, None), 200);
    assert_eq!(t["version"], v + 1);
    assert_eq!(t["display_name"], "Acme");
    assert!(svc.terminate(Duration::from_secs(10)).success());
}
