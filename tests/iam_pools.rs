//! Pools as Kaa's clients use them (`poolIDs` on users, groups, policies and resources), over
//! HTTP on SQLite and (when `IAM_TEST_POSTGRES_URL` is set) PostgreSQL: what each GET shows, what
//! a write with an unknown pool refuses, and what the decisions make of it: a policy attached to
//! a pool applies to the users and groups in the pool as it does to its resources.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;

use serde_json::{Value, json};
use support::proc::call_json;
use support::{expect, path_id, raw_id};

const T: &str = "tpools";

fn krn(kind: &str, name: &str) -> String {
    format!("krn:iam:{T}::{kind}/{name}")
}

fn post(a: SocketAddr, collection: &str, body: Value) -> Value {
    expect(
        &call_json(a, "POST", &format!("/api/v1/{collection}"), Some(&body)),
        201,
    )["data"]
        .clone()
}

fn get(a: SocketAddr, collection: &str, krn: &str) -> Value {
    expect(
        &call_json(
            a,
            "GET",
            &format!("/api/v1/{collection}/{}", path_id(krn)),
            None,
        ),
        200,
    )["data"]
        .clone()
}

/// Is `action` on `resource` allowed for `principal`?
fn allowed(a: SocketAddr, principal: &str, action: &str, resource: &str) -> bool {
    let r = call_json(
        a,
        "POST",
        "/api/v1/evaluate",
        Some(&json!({"principal": principal, "action": action, "resources": [resource]})),
    );
    match r.status {
        200 => true,
        403 => false,
        s => panic!(
            "evaluate answered {s}: {}",
            String::from_utf8_lossy(&r.body)
        ),
    }
}

fn ids(krns: &[&str]) -> Value {
    json!(krns.iter().map(|k| raw_id(k)).collect::<Vec<_>>())
}

fn pools_story(a: SocketAddr) {
    let (dev, ops) = (krn("pool", "dev"), krn("pool", "ops"));
    let ghost = krn("pool", "ghost");
    post(a, "pools", json!({"name": "dev", "tenantID": T}));
    post(a, "pools", json!({"name": "ops", "tenantID": T}));
    let thing = format!("krn:svc:{T}::thing/t1");

    // A policy attached to a pool at its creation; GET and the list show the pool.
    let readers = post(
        a,
        "policies",
        json!({"name": "dev-readers", "tenantID": T, "poolIDs": [raw_id(&dev)], "statements": [
            {"effect": "allow", "actions": ["svc:thing:read"], "resources": [format!("krn:svc:{T}::thing/*")]}]}),
    );
    assert_eq!(readers["poolIDs"], ids(&[&dev]));
    let policy = krn("policy", "dev-readers");
    assert_eq!(get(a, "policies", &policy)["poolIDs"], ids(&[&dev]));
    let listed = expect(
        &call_json(a, "GET", &format!("/api/v1/policies?tenantID={T}"), None),
        200,
    );
    let row = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["krn"] == json!(policy))
        .cloned()
        .unwrap();
    assert_eq!(row["poolIDs"], ids(&[&dev]));
    // The pool's own policy list names it too.
    let of_pool = expect(
        &call_json(
            a,
            "GET",
            &format!("/api/v1/pools/{}/policies", path_id(&dev)),
            None,
        ),
        200,
    );
    assert_eq!(of_pool["data"][0]["krn"], json!(policy));

    // A user in the pool gets the pool's policy; a user outside it does not.
    let alice = post(
        a,
        "users",
        json!({"username": "alice", "password": "pw-alice-1", "confirmPassword": "pw-alice-1",
               "tenantID": T, "poolIDs": [raw_id(&dev)]}),
    );
    assert_eq!(alice["poolIDs"], ids(&[&dev]));
    post(
        a,
        "users",
        json!({"username": "bob", "password": "pw-bob-12", "confirmPassword": "pw-bob-12", "tenantID": T}),
    );
    let (alice_krn, bob_krn) = (krn("user", "alice"), krn("user", "bob"));
    assert_eq!(get(a, "users", &alice_krn)["poolIDs"], ids(&[&dev]));
    assert_eq!(get(a, "users", &bob_krn)["poolIDs"], json!([]));
    assert!(allowed(a, &alice_krn, "svc:thing:read", &thing));
    assert!(!allowed(a, &alice_krn, "svc:thing:write", &thing));
    assert!(!allowed(a, &bob_krn, "svc:thing:read", &thing));

    // A group in a pool passes the pool's policies to its members.
    let writers = post(
        a,
        "policies",
        json!({"name": "ops-writers", "tenantID": T, "statements": [
            {"effect": "allow", "actions": ["svc:thing:write"], "resources": [format!("krn:svc:{T}::thing/*")]}]}),
    );
    assert_eq!(writers["poolIDs"], json!([]));
    // The policy as GET shows it, sent back with one more pool: the pool is attached.
    let writers_krn = krn("policy", "ops-writers");
    let mut body = get(a, "policies", &writers_krn);
    body["poolIDs"] = ids(&[&ops]);
    let put = expect(
        &call_json(
            a,
            "PUT",
            &format!("/api/v1/policies/{}", path_id(&writers_krn)),
            Some(&body),
        ),
        200,
    );
    assert_eq!(put["data"]["poolIDs"], ids(&[&ops]));
    let group = post(
        a,
        "groups",
        json!({"name": "crew", "tenantID": T, "poolIDs": [raw_id(&ops)]}),
    );
    assert_eq!(group["poolIDs"], ids(&[&ops]));
    let crew = krn("group", "crew");
    assert!(!allowed(a, &bob_krn, "svc:thing:write", &thing));
    expect(
        &call_json(
            a,
            "POST",
            &format!("/api/v1/groups/{}/members/add", path_id(&crew)),
            Some(&json!({"userIDs": [raw_id(&bob_krn)]})),
        ),
        204,
    );
    assert!(allowed(a, &bob_krn, "svc:thing:write", &thing));
    assert!(!allowed(a, &bob_krn, "svc:thing:read", &thing));
    // The group leaves the pool (PATCH with the pools it keeps): bob loses the write.
    let patched = expect(
        &call_json(
            a,
            "PATCH",
            &format!("/api/v1/groups/{}", path_id(&crew)),
            Some(&json!({"poolIDs": []})),
        ),
        200,
    );
    assert_eq!(patched["data"]["poolIDs"], json!([]));
    assert!(!allowed(a, &bob_krn, "svc:thing:write", &thing));

    // A user moves between pools by PATCH; the decisions follow at once.
    let moved = expect(
        &call_json(
            a,
            "PATCH",
            &format!("/api/v1/users/{}", path_id(&alice_krn)),
            Some(&json!({"poolIDs": [raw_id(&ops)]})),
        ),
        200,
    );
    assert_eq!(moved["data"]["poolIDs"], ids(&[&ops]));
    assert!(!allowed(a, &alice_krn, "svc:thing:read", &thing));
    assert!(allowed(a, &alice_krn, "svc:thing:write", &thing));
    // The policy detached from its pool by PUT: alice loses the write.
    let mut body = get(a, "policies", &writers_krn);
    body["poolIDs"] = json!([]);
    let put = expect(
        &call_json(
            a,
            "PUT",
            &format!("/api/v1/policies/{}", path_id(&writers_krn)),
            Some(&body),
        ),
        200,
    );
    assert_eq!(put["data"]["poolIDs"], json!([]));
    assert!(!allowed(a, &alice_krn, "svc:thing:write", &thing));

    // Resources: the pools show on GET and in the list, and a PATCH moves them.
    let res = post(
        a,
        "resources",
        json!({"service": "svc", "resourceType": "thing", "name": "t2", "tenantID": T,
               "poolIDs": [raw_id(&dev)]}),
    );
    assert_eq!(res["poolIDs"], ids(&[&dev]));
    let t2 = format!("krn:svc:{T}::thing/t2");
    assert_eq!(get(a, "resources", &t2)["poolIDs"], ids(&[&dev]));
    let patched = expect(
        &call_json(
            a,
            "PATCH",
            &format!("/api/v1/resources/{}", path_id(&t2)),
            Some(&json!({"poolIDs": [raw_id(&ops)]})),
        ),
        200,
    );
    assert_eq!(patched["data"]["poolIDs"], ids(&[&ops]));
    let listed = expect(
        &call_json(a, "GET", &format!("/api/v1/resources?tenantID={T}"), None),
        200,
    );
    let row = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["krn"] == json!(t2))
        .cloned()
        .unwrap();
    assert_eq!(row["poolIDs"], ids(&[&ops]));
    let pool = get(a, "pools", &ops);
    assert_eq!(pool["resourceIDs"], ids(&[&t2]));

    // Unknown pools: 400 naming the pool, and nothing written.
    let before = get(a, "users", &alice_krn);
    for (method, path, body) in [
        (
            "POST",
            "/api/v1/users".to_string(),
            json!({"username": "carol", "password": "pw-carol-1", "confirmPassword": "pw-carol-1",
                   "tenantID": T, "poolIDs": [raw_id(&ghost)]}),
        ),
        (
            "POST",
            "/api/v1/groups".to_string(),
            json!({"name": "ghosts", "tenantID": T, "poolIDs": [raw_id(&ghost)]}),
        ),
        (
            "POST",
            "/api/v1/policies".to_string(),
            json!({"name": "ghostly", "tenantID": T, "poolIDs": [raw_id(&ghost)], "statements": [
                {"effect": "allow", "actions": ["svc:thing:read"], "resources": ["*"]}]}),
        ),
        (
            "PATCH",
            format!("/api/v1/users/{}", path_id(&alice_krn)),
            json!({"poolIDs": [raw_id(&dev), raw_id(&ghost)], "firstName": "Changed"}),
        ),
        (
            "PATCH",
            format!("/api/v1/groups/{}", path_id(&crew)),
            json!({"poolIDs": [raw_id(&ghost)]}),
        ),
        (
            "PATCH",
            format!("/api/v1/resources/{}", path_id(&t2)),
            json!({"poolIDs": [raw_id(&ghost)]}),
        ),
    ] {
        let r = call_json(a, method, &path, Some(&body));
        expect(&r, 400);
        let text = String::from_utf8_lossy(&r.body).to_string();
        assert!(text.contains(&ghost), "{method} {path}: {text}");
    }
    for (collection, k) in [
        ("users", krn("user", "carol")),
        ("groups", krn("group", "ghosts")),
        ("policies", krn("policy", "ghostly")),
    ] {
        let r = call_json(
            a,
            "GET",
            &format!("/api/v1/{collection}/{}", path_id(&k)),
            None,
        );
        expect(&r, 404);
    }
    assert_eq!(get(a, "users", &alice_krn), before);
    assert_eq!(get(a, "groups", &crew)["poolIDs"], json!([]));
    assert_eq!(get(a, "resources", &t2)["poolIDs"], ids(&[&ops]));
    // An id that is not a pool's, or another tenant's pool: 400 as well.
    for bad in [
        raw_id(&krn("group", "crew")),
        raw_id("krn:iam:other::pool/dev"),
    ] {
        let r = call_json(
            a,
            "PATCH",
            &format!("/api/v1/users/{}", path_id(&alice_krn)),
            Some(&json!({"poolIDs": [bad]})),
        );
        expect(&r, 400);
    }
    // A resource-based policy cannot be attached to pools, and a refused one is not stored.
    let rp = json!({"poolIDs": [raw_id(&dev)], "statements": [
        {"effect": "allow", "actions": ["svc:thing:read"], "principals": [bob_krn.clone()]}]});
    let policy_path = format!("/api/v1/resources/{}/policy", path_id(&t2));
    let r = call_json(a, "PUT", &policy_path, Some(&rp));
    expect(&r, 400);
    expect(&call_json(a, "GET", &policy_path, None), 404);

    // Deleting a pool takes it out of every member's `poolIDs` and out of the decisions.
    expect(
        &call_json(
            a,
            "PATCH",
            &format!("/api/v1/users/{}", path_id(&bob_krn)),
            Some(&json!({"poolIDs": [raw_id(&dev)]})),
        ),
        200,
    );
    assert!(allowed(a, &bob_krn, "svc:thing:read", &thing));
    expect(
        &call_json(
            a,
            "DELETE",
            &format!("/api/v1/pools/{}", path_id(&dev)),
            None,
        ),
        204,
    );
    assert_eq!(get(a, "users", &bob_krn)["poolIDs"], json!([]));
    assert_eq!(get(a, "policies", &policy)["poolIDs"], json!([]));
    assert!(!allowed(a, &bob_krn, "svc:thing:read", &thing));
}

/// The decisions a restarted replica builds from the database agree with the ones kept in step
/// with the writes.
fn pools_survive_a_restart(settings: &kaa::config::StorageSettings) {
    let svc = support::service::start_iam(settings, "");
    let a = svc.addr;
    let t = "tpools2";
    let k = |kind: &str, name: &str| format!("krn:iam:{t}::{kind}/{name}");
    post(a, "pools", json!({"name": "p", "tenantID": t}));
    post(
        a,
        "policies",
        json!({"name": "pp", "tenantID": t, "poolIDs": [raw_id(&k("pool", "p"))], "statements": [
            {"effect": "allow", "actions": ["svc:x:read"], "resources": ["*"]}]}),
    );
    post(
        a,
        "groups",
        json!({"name": "g", "tenantID": t, "poolIDs": [raw_id(&k("pool", "p"))]}),
    );
    post(
        a,
        "users",
        json!({"username": "u", "password": "pw-u-12345", "confirmPassword": "pw-u-12345",
               "tenantID": t, "groups": [raw_id(&k("group", "g"))]}),
    );
    post(
        a,
        "users",
        json!({"username": "v", "password": "pw-v-12345", "confirmPassword": "pw-v-12345",
               "tenantID": t, "poolIDs": [raw_id(&k("pool", "p"))]}),
    );
    post(
        a,
        "users",
        json!({"username": "w", "password": "pw-w-12345", "confirmPassword": "pw-w-12345", "tenantID": t}),
    );
    let asked = |a: SocketAddr| {
        ["u", "v", "w"].map(|u| allowed(a, &k("user", u), "svc:x:read", "krn:svc:x::x/1"))
    };
    assert_eq!(asked(a), [true, true, false]);
    drop(svc);
    let again = support::service::start_iam(settings, "");
    assert_eq!(asked(again.addr), [true, true, false]);
}

#[test]
fn sqlite_pools() {
    let dir = support::TempDir::new();
    let settings = support::sqlite_settings(&dir);
    let svc = support::service::start_iam(&settings, "");
    pools_story(svc.addr);
    drop(svc);
    pools_survive_a_restart(&settings);
}

#[test]
fn postgres_pools() {
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip("postgres_pools");
    };
    let svc = support::service::start_iam(&pg.storage(), "");
    pools_story(svc.addr);
    drop(svc);
    pools_survive_a_restart(&pg.storage());
}

/// With security on, joining a pool needs `iam:pool:update` on it, and attaching a policy to a
/// pool needs `iam:policy:pool:attach`: a caller who may edit users or create policies cannot
/// reach what a pool's policies grant on that alone.
#[test]
fn joining_a_pool_or_attaching_a_policy_to_it_is_authorized() {
    use support::keycloak::{Keycloak, Mint};
    use support::proc::call_json_as;
    let kc = Keycloak::start();
    let dir = support::TempDir::new();
    let config = format!(
        "security:\n  enabled: true\n  client-id: kaa-iam\n  audiences: [kaa-iam, kaa-frontend]\n  issuer:\n    public-url: {}\n",
        kc.issuer("kaa")
    );
    let svc = support::service::start_iam(&support::sqlite_settings(&dir), &config);
    let a = svc.addr;
    let admin = kc.mint("kaa", &Mint::user("admin").roles(&["tenant-admin"]));
    let bob = kc.mint("kaa", &Mint::user("bob"));
    let k = |kind: &str, name: &str| format!("krn:iam:kaa::{kind}/{name}");
    let as_admin = |method: &str, path: &str, body: Value, status: u16| {
        let r = call_json_as(a, method, path, Some(&admin), Some(&body));
        assert_eq!(
            r.status,
            status,
            "{method} {path}: {}",
            String::from_utf8_lossy(&r.body)
        );
    };
    as_admin("POST", "/api/v1/pools", json!({"name": "vip"}), 201);
    as_admin(
        "POST",
        "/api/v1/policies",
        json!({"name": "vip-all", "poolIDs": [raw_id(&k("pool", "vip"))], "statements": [
            {"effect": "allow", "actions": ["*"], "resources": ["*"]}]}),
        201,
    );
    as_admin(
        "POST",
        "/api/v1/users",
        json!({"username": "bob", "password": "bob-password", "confirmPassword": "bob-password"}),
        201,
    );
    as_admin(
        "POST",
        "/api/v1/policies",
        json!({"name": "user-editor", "statements": [
            {"effect": "allow", "actions": ["iam:user:*", "iam:policy:create", "iam:policy:read"],
             "resources": ["krn:iam:kaa::user/*", "krn:iam:kaa::policy/*"]}]}),
        201,
    );
    as_admin(
        "PUT",
        &format!(
            "/api/v1/users/{}/policies/attach",
            path_id(&k("user", "bob"))
        ),
        json!({"policyIDs": [raw_id(&k("policy", "user-editor"))]}),
        204,
    );
    let bob_path = format!("/api/v1/users/{}", path_id(&k("user", "bob")));
    let join = json!({"poolIDs": [raw_id(&k("pool", "vip"))]});
    let r = call_json_as(a, "PATCH", &bob_path, Some(&bob), Some(&join));
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    let r = call_json_as(a, "GET", &bob_path, Some(&bob), None);
    assert_eq!(r.json()["data"]["poolIDs"], json!([]));
    let r = call_json_as(
        a,
        "POST",
        "/api/v1/policies",
        Some(&bob),
        Some(
            &json!({"name": "sneaky", "poolIDs": [raw_id(&k("pool", "vip"))], "statements": [
            {"effect": "allow", "actions": ["iam:user:read"], "resources": ["*"]}]}),
        ),
    );
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    let r = call_json_as(
        a,
        "GET",
        &format!("/api/v1/policies/{}", path_id(&k("policy", "sneaky"))),
        Some(&admin),
        None,
    );
    assert_eq!(r.status, 404);
    // Given `iam:pool:update` on the pool, the same PATCH is accepted.
    as_admin(
        "POST",
        "/api/v1/policies",
        json!({"name": "vip-keeper", "statements": [
            {"effect": "allow", "actions": ["iam:pool:update"], "resources": [k("pool", "vip")]}]}),
        201,
    );
    as_admin(
        "PUT",
        &format!(
            "/api/v1/users/{}/policies/attach",
            path_id(&k("user", "bob"))
        ),
        json!({"policyIDs": [raw_id(&k("policy", "vip-keeper"))]}),
        204,
    );
    let r = call_json_as(a, "PATCH", &bob_path, Some(&bob), Some(&join));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["data"]["poolIDs"], ids(&[&k("pool", "vip")]));
}
