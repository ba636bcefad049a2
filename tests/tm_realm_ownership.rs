#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! A tenant never takes over a realm it did not make: every realm the Tenant Manager makes carries
//! its installation's mark for the tenant; a realm of the same name made another way (by hand,
//! Keycloak's `master`, another installation) fails the tenant with the reason and stays as it
//! is, also when the tenant is deleted; reserved realm names are refused with 400. Against the
//! Keycloak stand-in, over HTTP (`tests/tm_keycloak_real.rs` has the same against Keycloak).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kaa::clients::keycloak::{AdminCredentials, KeycloakAdmin};
use kaa::tenants::keycloak_provisioner::{MARK_INSTALLATION, MARK_TENANT};
use serde_json::{Value, json};
use support::keycloak::{ADMIN_PASSWORD, ADMIN_USER, Keycloak};
use support::proc::{Resp, call_json};
use support::service::{RunningTm, start_tm};

fn expect(r: &Resp, status: u16) -> Value {
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
    if r.body.is_empty() {
        Value::Null
    } else {
        r.json()
    }
}

/// Poll until the tenant has `status` (`GONE`: 404), at most 20 s.
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
            started.elapsed() < Duration::from_secs(20),
            "tenant `{id}` never {status}: {}",
            String::from_utf8_lossy(&r.body)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start(kc: &Keycloak, dir: &support::TempDir, installation: Option<&str>) -> RunningTm {
    let inst = installation
        .map(|i| format!("  installation-id: {i}\n"))
        .unwrap_or_default();
    start_tm(
        &support::sqlite_settings(dir),
        &format!(
            "tenant-manager:\n{inst}  keycloak:\n    url: {}\n    username: {ADMIN_USER}\n    password: {ADMIN_PASSWORD}\n  tasks:\n    workers: 2\n    backoff-ms: 20\n    max-backoff-ms: 100\n    max-attempts: 50\n",
            kc.url()
        ),
    )
}

/// The stand-in's admin API as its administrator (what an operator does by hand).
fn admin(kc: &Keycloak) -> KeycloakAdmin {
    KeycloakAdmin::new(
        &kc.url(),
        "master",
        AdminCredentials::Password {
            username: ADMIN_USER.into(),
            password: ADMIN_PASSWORD.into(),
        },
        Duration::from_secs(10),
    )
}

fn tenant_ids(a: SocketAddr) -> Vec<String> {
    let list = expect(&call_json(a, "GET", "/api/v1/tenants?limit=0", None), 200);
    list["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_realm_made_outside_the_tenant_manager_is_never_taken_over() {
    let kc = Keycloak::start();
    let dir = support::TempDir::new();
    let tm = start(&kc, &dir, None);
    let a = tm.addr;
    let kca = admin(&kc);

    // A realm made by hand, with a role of its own.
    kca.create_realm(&json!({"realm": "handmade", "enabled": true, "displayName": "Ops"}))
        .unwrap();
    kca.create_role("handmade", &json!({"name": "keep-me"}))
        .unwrap();
    let before = kc.realm_snapshot("handmade").unwrap();

    let t = expect(
        &call_json(
            a,
            "POST",
            "/api/v1/tenants",
            Some(&json!({"id": "handmade"})),
        ),
        202,
    );
    assert_eq!(t["status"], "CREATING");
    let t = wait_status(a, "handmade", "FAILED");
    let reason = t["failure_reason"].as_str().unwrap();
    assert!(
        reason.contains("realm `handmade` already exists")
            && reason.contains("not made by this Tenant Manager"),
        "{reason}"
    );
    let after = kc.realm_snapshot("handmade").unwrap();
    assert_eq!(after.roles, before.roles, "no role added or removed");
    assert_eq!(after.representation, before.representation);
    assert!(
        after
            .client(t["client_backend_id"].as_str().unwrap())
            .is_none()
    );
    assert_eq!(
        kc.count_calls("PUT", "/admin/realms/handmade", 204),
        0,
        "the realm was not updated"
    );

    // A retry fails the same way; deleting the tenant leaves the realm.
    expect(
        &call_json(a, "POST", "/api/v1/tenants/handmade/retry", None),
        202,
    );
    let t = wait_status(a, "handmade", "FAILED");
    assert!(
        t["failure_reason"]
            .as_str()
            .unwrap()
            .contains("not made by")
    );
    expect(
        &call_json(a, "DELETE", "/api/v1/tenants/handmade", None),
        202,
    );
    wait_status(a, "handmade", "GONE");
    let after = kc
        .realm_snapshot("handmade")
        .expect("the realm is still there");
    assert_eq!(after.roles, before.roles);
    assert_eq!(kc.count_calls("DELETE", "/admin/realms/handmade", 204), 0);

    // The tenant's own realm carries the mark, and deleting that tenant removes it.
    expect(
        &call_json(a, "POST", "/api/v1/tenants", Some(&json!({"id": "acme"}))),
        202,
    );
    wait_status(a, "acme", "AVAILABLE");
    let attrs = kc.realm_snapshot("acme").unwrap().representation["attributes"].clone();
    assert_eq!(attrs[MARK_TENANT], "acme");
    assert!(
        attrs[MARK_INSTALLATION]
            .as_str()
            .is_some_and(|i| !i.is_empty())
    );
    expect(&call_json(a, "DELETE", "/api/v1/tenants/acme", None), 202);
    wait_status(a, "acme", "GONE");
    assert!(!kc.has_realm("acme"));
}

#[test]
fn reserved_realm_names_are_refused_and_store_nothing() {
    let kc = Keycloak::start();
    let dir = support::TempDir::new();
    let tm = start(&kc, &dir, None);
    let a = tm.addr;
    let before = tenant_ids(a);
    let clients = |realm: &str| -> Vec<String> {
        let snap = kc.realm_snapshot(realm).unwrap();
        snap.clients.iter().map(|c| c.client_id.clone()).collect()
    };
    let (master, system) = (clients("master"), clients("kaa"));
    for (body, field) in [
        (json!({"id": "master"}), "id"),
        (json!({"id": "ops", "realm_name": "master"}), "realm_name"),
        (json!({"id": "ops", "realm_name": "MASTER"}), "realm_name"),
        (json!({"id": "kaa"}), "id"),
        (json!({"id": "ops", "realm_name": "Kaa"}), "realm_name"),
    ] {
        let r = call_json(a, "POST", "/api/v1/tenants", Some(&body));
        assert_eq!(
            r.status,
            400,
            "{body}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let text = String::from_utf8_lossy(&r.body).to_string();
        assert!(text.contains("reserved") && text.contains(field), "{text}");
    }
    assert_eq!(tenant_ids(a), before, "nothing was stored");
    assert_eq!(clients("master"), master);
    assert_eq!(clients("kaa"), system);
    assert_eq!(kc.count_calls("POST", "/admin/realms", 201), 0);
}

#[test]
fn realms_of_another_installation_or_tenant_are_left_alone() {
    let kc = Keycloak::start();
    let (dir_a, dir_b) = (support::TempDir::new(), support::TempDir::new());
    let one = start(&kc, &dir_a, Some("installation-one"));
    let two = start(&kc, &dir_b, Some("installation-two"));

    expect(
        &call_json(
            one.addr,
            "POST",
            "/api/v1/tenants",
            Some(&json!({"id": "shared"})),
        ),
        202,
    );
    let mine = wait_status(one.addr, "shared", "AVAILABLE");
    let attrs = kc.realm_snapshot("shared").unwrap().representation["attributes"].clone();
    assert_eq!(attrs[MARK_INSTALLATION], "installation-one");
    assert_eq!(attrs[MARK_TENANT], "shared");

    // The other installation's tenant of the same name fails and changes nothing.
    expect(
        &call_json(
            two.addr,
            "POST",
            "/api/v1/tenants",
            Some(&json!({"id": "shared"})),
        ),
        202,
    );
    let t = wait_status(two.addr, "shared", "FAILED");
    let reason = t["failure_reason"].as_str().unwrap();
    assert!(
        reason.contains("another Tenant Manager installation (`installation-one`)"),
        "{reason}"
    );
    let snap = kc.realm_snapshot("shared").unwrap();
    assert!(
        snap.client(mine["client_backend_id"].as_str().unwrap())
            .is_some()
    );
    assert!(
        snap.client(t["client_backend_id"].as_str().unwrap())
            .is_none()
    );
    expect(
        &call_json(two.addr, "DELETE", "/api/v1/tenants/shared", None),
        202,
    );
    wait_status(two.addr, "shared", "GONE");
    assert!(
        kc.has_realm("shared"),
        "the first installation's realm stays"
    );

    // Within one installation, a tenant naming another tenant's realm is refused at once (the
    // realm is taken); a realm marked for another tenant is not adopted either.
    let r = call_json(
        one.addr,
        "POST",
        "/api/v1/tenants",
        Some(&json!({"id": "other", "realm_name": "shared"})),
    );
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
    admin(&kc)
        .create_realm(&json!({"realm": "orphan", "enabled": true, "attributes": {
            MARK_INSTALLATION: "installation-one", MARK_TENANT: "gone-tenant"}}))
        .unwrap();
    expect(
        &call_json(
            one.addr,
            "POST",
            "/api/v1/tenants",
            Some(&json!({"id": "newcomer", "realm_name": "orphan"})),
        ),
        202,
    );
    let t = wait_status(one.addr, "newcomer", "FAILED");
    assert!(
        t["failure_reason"]
            .as_str()
            .unwrap()
            .contains("another tenant (`gone-tenant`)"),
        "{t}"
    );

    // The first installation still owns its tenant: deleting it removes the realm.
    expect(
        &call_json(one.addr, "DELETE", "/api/v1/tenants/shared", None),
        202,
    );
    wait_status(one.addr, "shared", "GONE");
    assert!(!kc.has_realm("shared"));
}

/// The installation id made at the first start is kept in the database: after a restart the
/// Tenant Manager still recognises its realms (a create whose answer was lost is adopted, and
/// delete removes the realm).
#[test]
fn the_installation_id_outlives_a_restart_and_a_lost_answer_is_adopted() {
    let kc = Keycloak::start();
    let dir = support::TempDir::new();
    let tm = start(&kc, &dir, None);
    // Keycloak makes the realm but the answer is lost: the retry meets 409 and adopts the
    // realm, which carries this installation's mark.
    kc.lose_on("POST", "/admin/realms", 502);
    expect(
        &call_json(
            tm.addr,
            "POST",
            "/api/v1/tenants",
            Some(&json!({"id": "acme"})),
        ),
        202,
    );
    wait_status(tm.addr, "acme", "AVAILABLE");
    assert_eq!(kc.count_calls("POST", "/admin/realms", 502), 1);
    assert_eq!(kc.count_calls("POST", "/admin/realms", 409), 1);
    let first =
        kc.realm_snapshot("acme").unwrap().representation["attributes"][MARK_INSTALLATION].clone();
    drop(tm);

    let tm = start(&kc, &dir, None);
    expect(
        &call_json(tm.addr, "DELETE", "/api/v1/tenants/acme", None),
        202,
    );
    wait_status(tm.addr, "acme", "GONE");
    assert!(
        !kc.has_realm("acme"),
        "the restarted service knew its realm"
    );
    expect(
        &call_json(
            tm.addr,
            "POST",
            "/api/v1/tenants",
            Some(&json!({"id": "beta"})),
        ),
        202,
    );
    wait_status(tm.addr, "beta", "AVAILABLE");
    assert_eq!(
        kc.realm_snapshot("beta").unwrap().representation["attributes"][MARK_INSTALLATION],
        first
    );
}
