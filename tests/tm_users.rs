//! Tenant users over HTTP (`/api/v1/tenants/{id}/users`): on a Keycloak server they are users of
//! the tenant's realm (checked in the Keycloak stand-in's state), made tenant administrators by the
//! realm role `tenant-admin`; in the embedded run they are kept locally, on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use support::keycloak::{ADMIN_PASSWORD, ADMIN_USER, Keycloak};
use support::proc::{Resp, call_json_with};
use support::service::start_tm;

/// `call_json` with this file's 30 s timeout (longer than `CALL_TIMEOUT`).
fn call(a: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Resp {
    call_json_with(a, method, path, None, &[], body, Duration::from_secs(30)).unwrap()
}

fn expect(r: &Resp, status: u16) -> Value {
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
    if r.body.is_empty() {
        Value::Null
    } else {
        r.json()
    }
}

fn wait_available(a: SocketAddr, id: &str) -> Value {
    let mut t = Value::Null;
    support::wait_until(&format!("tenant {id} AVAILABLE"), || {
        t = call(a, "GET", &format!("/api/v1/tenants/{id}"), None).json();
        t["status"] == "AVAILABLE"
    });
    t
}

/// What every backend must do, through the API only.
fn crud(a: SocketAddr) {
    expect(
        &call(a, "POST", "/api/v1/tenants", Some(&json!({"id": "acme"}))),
        202,
    );
    wait_available(a, "acme");
    let users = "/api/v1/tenants/acme/users";

    let r = call(
        a,
        "POST",
        users,
        Some(
            &json!({"username": "Boss", "email": "Boss@Example.com", "first_name": "Bo",
                    "password": "first-password", "roles": ["tenant-admin"]}),
        ),
    );
    let boss = expect(&r, 201);
    let id = boss["id"].as_str().unwrap().to_string();
    assert_eq!(
        r.header("location"),
        Some(format!("/api/v1/tenants/acme/users/{id}").as_str())
    );
    assert_eq!(boss["username"], "boss");
    assert_eq!(boss["email"], "boss@example.com");
    assert_eq!(boss["first_name"], "Bo");
    assert_eq!(boss["enabled"], true);
    assert_eq!(boss["roles"], json!(["tenant-admin"]));
    assert_eq!(boss["tenant_id"], "acme");
    assert!(boss.get("password").is_none() && !r.body.windows(14).any(|w| w == b"first-password"));

    // Duplicates and bad input change nothing.
    let r = call(
        a,
        "POST",
        users,
        Some(&json!({"username": "BOSS", "password": "other-password"})),
    );
    expect(&r, 409);
    for (body, field) in [
        (json!({"password": "long-enough"}), "username"),
        (
            json!({"username": "x y", "password": "long-enough"}),
            "username",
        ),
        (json!({"username": "carl"}), "password"),
        (json!({"username": "carl", "password": "short"}), "password"),
        (
            json!({"username": "carl", "password": "long-enough", "roles": ["root"]}),
            "roles",
        ),
        (
            json!({"username": "carl", "password": "long-enough", "email": "no"}),
            "email",
        ),
        (
            json!({"username": "carl", "password": "long-enough", "admin": true}),
            "admin",
        ),
    ] {
        let r = call(a, "POST", users, Some(&body));
        let e = expect(&r, 400);
        assert_eq!(e["details"]["field"], field, "{body}: {e}");
    }
    expect(&call(a, "POST", users, Some(&json!([1]))), 400);

    // A second user, then lists with paging and the username filter.
    let r = call(
        a,
        "POST",
        users,
        Some(&json!({"username": "carl", "password": "long-enough", "enabled": false})),
    );
    let carl = expect(&r, 201);
    assert_eq!(carl["roles"], json!([]));
    assert_eq!(carl["enabled"], false);
    let all = expect(&call(a, "GET", users, None), 200);
    assert_eq!(all["count"], 2, "{all}");
    let names: Vec<&str> = all["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["boss", "carl"]);
    let page = expect(
        &call(a, "GET", &format!("{users}?offset=1&limit=1"), None),
        200,
    );
    assert_eq!(page["count"], 2);
    assert_eq!(page["results"].as_array().unwrap().len(), 1);
    assert_eq!(page["results"][0]["username"], "carl");
    let only = expect(&call(a, "GET", &format!("{users}?username=bos"), None), 200);
    assert_eq!(only["count"], 1);
    assert_eq!(only["results"][0]["id"], id.as_str());
    expect(&call(a, "GET", &format!("{users}?limit=-1"), None), 400);

    // Update: roles taken, disabled, names; the username cannot change.
    let one = format!("{users}/{id}");
    let u = expect(
        &call(
            a,
            "PUT",
            &one,
            Some(&json!({"roles": [], "enabled": false, "last_name": "Smith",
                        "password": "second-password"})),
        ),
        200,
    );
    assert_eq!(u["roles"], json!([]));
    assert_eq!(u["enabled"], false);
    assert_eq!(u["last_name"], "Smith");
    assert_eq!(u["first_name"], "Bo");
    expect(
        &call(a, "PUT", &one, Some(&json!({"username": "other"}))),
        400,
    );
    let u = expect(
        &call(a, "PUT", &one, Some(&json!({"roles": ["tenant-admin"]}))),
        200,
    );
    assert_eq!(u["roles"], json!(["tenant-admin"]));
    assert_eq!(expect(&call(a, "GET", &one, None), 200), u);

    // Unknown ids and tenants.
    expect(&call(a, "GET", &format!("{users}/nope"), None), 404);
    expect(
        &call(a, "PUT", &format!("{users}/nope"), Some(&json!({}))),
        404,
    );
    expect(&call(a, "DELETE", &format!("{users}/nope"), None), 404);
    expect(&call(a, "GET", "/api/v1/tenants/ghost/users", None), 404);

    // Delete.
    expect(&call(a, "DELETE", &one, None), 204);
    expect(&call(a, "GET", &one, None), 404);
    assert_eq!(expect(&call(a, "GET", users, None), 200)["count"], 1);
}

#[test]
fn tenant_users_are_realm_users_on_keycloak() {
    let kc = Keycloak::start();
    let dir = support::TempDir::new();
    let tm = start_tm(
        &support::sqlite_settings(&dir),
        &format!(
            "tenant-manager:\n  keycloak:\n    url: {}\n    username: {ADMIN_USER}\n    password: {ADMIN_PASSWORD}\n  tasks:\n    workers: 1\n    backoff-ms: 20\n    max-backoff-ms: 100\n",
            kc.url()
        ),
    );
    let a = tm.addr;
    crud(a);
    let users = "/api/v1/tenants/acme/users";

    // What Keycloak holds: carl only (boss was deleted), with its password and no roles.
    let snap = kc.realm_snapshot("acme").unwrap();
    let carl = snap.user("carl").expect("carl in Keycloak");
    assert!(!carl.enabled);
    assert_eq!(carl.password.as_deref(), Some("long-enough"));
    assert!(snap.user("boss").is_none());

    // A tenant administrator is the realm role in Keycloak, and logs in with the password.
    let dana = expect(
        &call(
            a,
            "POST",
            users,
            Some(
                &json!({"username": "dana", "password": "dana-password", "roles": ["tenant-admin"]}),
            ),
        ),
        201,
    );
    let snap = kc.realm_snapshot("acme").unwrap();
    let kc_dana = snap.user("dana").unwrap();
    assert_eq!(kc_dana.id, dana["id"].as_str().unwrap());
    assert!(kc_dana.roles.iter().any(|r| r == "tenant-admin"));
    let login = ureq::post(&format!(
        "{}/protocol/openid-connect/token",
        kc.issuer("acme")
    ))
    .config()
    .http_status_as_error(false)
    .build()
    .send_form([
        ("grant_type", "password"),
        ("client_id", "admin-cli"),
        ("username", "dana"),
        ("password", "dana-password"),
    ])
    .unwrap();
    assert_eq!(login.status(), 200);

    // The backend client's service account is not a tenant user.
    let t = call(a, "GET", "/api/v1/tenants/acme", None).json();
    let sa = snap
        .user(&format!(
            "service-account-{}",
            t["client_backend_id"].as_str().unwrap().to_lowercase()
        ))
        .unwrap()
        .id
        .clone();
    expect(&call(a, "GET", &format!("{users}/{sa}"), None), 404);
    expect(&call(a, "DELETE", &format!("{users}/{sa}"), None), 404);
    assert_eq!(expect(&call(a, "GET", users, None), 200)["count"], 2);

    // Keycloak down: 503, nothing made; a tenant still being created: 409.
    kc.set_down(true);
    let r = call(
        a,
        "POST",
        users,
        Some(&json!({"username": "erin", "password": "long-enough"})),
    );
    expect(&r, 503);
    kc.set_down(false);
    assert!(kc.realm_snapshot("acme").unwrap().user("erin").is_none());
    kc.fail_all(Some(500));
    expect(
        &call(a, "POST", "/api/v1/tenants", Some(&json!({"id": "beta"}))),
        202,
    );
    let r = call(a, "GET", "/api/v1/tenants/beta/users", None);
    let e = expect(&r, 409);
    assert!(e["error"].as_str().unwrap().contains("CREATING"), "{e}");
    kc.fail_all(None);

    // A create whose answer is lost is not made twice: the retry finds it taken.
    kc.lose_next(1, 502);
    let r = call(
        a,
        "POST",
        users,
        Some(&json!({"username": "fay", "password": "long-enough"})),
    );
    let fay = expect(&r, 201);
    assert_eq!(
        kc.realm_snapshot("acme").unwrap().user("fay").unwrap().id,
        fay["id"].as_str().unwrap()
    );
    assert!(kc.realm_snapshot("acme").unwrap().duplicates().is_empty());
}

#[test]
fn tenant_users_are_kept_locally_without_keycloak_on_sqlite() {
    let dir = support::TempDir::new();
    let tm = start_tm(&support::sqlite_settings(&dir), "");
    crud(tm.addr);
    // Deleting the tenant removes its users: a tenant of the same name starts empty.
    let a = tm.addr;
    expect(&call(a, "DELETE", "/api/v1/tenants/acme", None), 202);
    support::wait_until("tenant acme gone", || {
        call(a, "GET", "/api/v1/tenants/acme", None).status == 404
    });
    expect(
        &call(a, "POST", "/api/v1/tenants", Some(&json!({"id": "acme"}))),
        202,
    );
    wait_available(a, "acme");
    let all = expect(&call(a, "GET", "/api/v1/tenants/acme/users", None), 200);
    assert_eq!(all["count"], 0, "{all}");
}

#[test]
fn tenant_users_are_kept_locally_without_keycloak_on_postgres() {
    let Some(db) = support::PgTestDb::create() else {
        return support::skip("tenant_users_are_kept_locally_without_keycloak_on_postgres");
    };
    let tm = start_tm(&db.storage(), "");
    crud(tm.addr);
}

/// In the embedded run a tenant's first administrator is a local tenant user with
/// `tenant-admin`; the API never shows its password.
#[test]
fn the_first_administrator_is_a_local_tenant_user_without_keycloak() {
    let dir = support::TempDir::new();
    let tm = start_tm(&support::sqlite_settings(&dir), "");
    let a = tm.addr;
    let t = expect(
        &call(
            a,
            "POST",
            "/api/v1/tenants",
            Some(
                &json!({"id": "solo", "admin": {"username": "Root", "email": "root@example.com",
                          "password": "root-password"}}),
            ),
        ),
        202,
    );
    assert!(!t.to_string().contains("root-password"));
    wait_available(a, "solo");
    let all = expect(&call(a, "GET", "/api/v1/tenants/solo/users", None), 200);
    assert_eq!(all["count"], 1, "{all}");
    let root = &all["results"][0];
    assert_eq!(root["username"], "root");
    assert_eq!(root["email"], "root@example.com");
    assert_eq!(root["roles"], json!(["tenant-admin"]));
    assert!(!all.to_string().contains("root-password"));
    // A tenant whose realm is kept locally has no Keycloak server to move from.
    let e = expect(
        &call(
            a,
            "POST",
            "/api/v1/keycloak-servers",
            Some(
                &json!({"id": 5, "url": "http://127.0.0.1:9", "username": "admin",
                          "password": "admin"}),
            ),
        ),
        201,
    );
    assert_eq!(e["id"], 5);
    expect(
        &call(
            a,
            "PATCH",
            "/api/v1/tenants/solo",
            Some(&json!({"keycloak_server_id": 5})),
        ),
        409,
    );
}
