//! IAM's REST API over HTTP, the same story on SQLite and (when `IAM_TEST_POSTGRES_URL` is set)
//! on PostgreSQL: users, nested groups, policies, resources, pools, the evaluate family, paging,
//! conflicts, versions and bad input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use kaa::policy::Krn;
use serde_json::{Value, json};
use support::proc::{CALL_TIMEOUT, Resp, call_json, call_json_with, request};

const CONFIG: &str = r#"
iam:
  resource-policy-templates:
    endpoint:
      statements:
        - effect: allow
          actions: ["epr:endpoint:*"]
          resources: ["${resource}"]
          principals: ["krn:iam:${tenant}::group/operators"]
"#;

/// Path id of a KRN: base64, percent-encoded.
fn id(krn: &str) -> String {
    Krn::parse(krn)
        .unwrap()
        .to_id()
        .replace('/', "%2F")
        .replace('+', "%2B")
        .replace('=', "%3D")
}

fn raw_id(krn: &str) -> String {
    Krn::parse(krn).unwrap().to_id()
}

fn expect(r: &Resp, status: u16) -> Value {
    assert_eq!(
        r.status,
        status,
        "body: {}",
        String::from_utf8_lossy(&r.body)
    );
    if r.body.is_empty() {
        Value::Null
    } else {
        r.json()
    }
}

fn message(r: &Resp) -> String {
    r.json()["message"].as_str().unwrap_or("").to_string()
}

fn story(addr: SocketAddr) {
    let a = addr;
    // ---------------- policies
    let readers = json!({
        "name": "readers", "tenantID": "t1", "description": "read users",
        "statements": [
            {"effect": "allow", "actions": ["iam:user:read"], "resources": ["krn:iam:t1::user/*"]},
            {"effect": "deny", "actions": ["iam:user:*"], "resources": ["krn:iam:t1::user/org1/*"]}
        ]
    });
    let r = call_json(a, "POST", "/api/v1/policies", Some(&readers));
    let p = expect(&r, 201)["data"].clone();
    assert_eq!(p["krn"], "krn:iam:t1::policy/readers");
    assert_eq!(p["id"], raw_id("krn:iam:t1::policy/readers"));
    assert_eq!(p["type"], "identity");
    assert_eq!(p["version"], 1);
    assert_eq!(r.header("etag"), Some("\"1\""));
    assert!(
        r.header("location")
            .unwrap()
            .starts_with("/api/v1/policies/")
    );
    let readers_id = id("krn:iam:t1::policy/readers");
    expect(
        &call_json(a, "POST", "/api/v1/policies", Some(&readers)),
        409,
    );

    let bad = json!({"name": "bad", "tenantID": "t1", "statements": [
        {"effect": "allow", "actions": ["iam:user:read"], "resources": ["krn:iam:t1::user/*"]},
        {"effect": "allow", "actions": ["iam:Us*"], "resources": ["*"]}]});
    let r = call_json(a, "POST", "/api/v1/policies", Some(&bad));
    expect(&r, 400);
    assert!(message(&r).contains("statement 1"), "{}", message(&r));
    assert!(message(&r).contains("iam:Us*"), "{}", message(&r));
    let r = call_json(
        a,
        "POST",
        "/api/v1/policies",
        Some(&json!({"name": "b", "type": "base", "statements": []})),
    );
    expect(&r, 400);
    assert!(message(&r).contains("configuration"));
    let r = call_json(
        a,
        "POST",
        "/api/v1/policies",
        Some(&json!({"name": "x", "statements": [], "surprise": 1})),
    );
    expect(&r, 400);
    assert!(message(&r).contains("surprise"), "{}", message(&r));

    for i in 0..4 {
        let body = json!({"name": format!("p{i}"), "tenantID": "t1", "statements": [
            {"effect": "allow", "actions": ["epr:endpoint:read"], "resources": [format!("krn:epr:t1::endpoint/e{i}")]}]});
        expect(&call_json(a, "POST", "/api/v1/policies", Some(&body)), 201);
    }
    let list = expect(
        &call_json(
            a,
            "GET",
            "/api/v1/policies?tenantID=t1&pageSize=2&page=2",
            None,
        ),
        200,
    );
    assert_eq!(list["count"], 5);
    assert_eq!(list["page"], 2);
    assert_eq!(list["pageSize"], 2);
    let names: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["p2", "p3"]);
    let list = expect(
        &call_json(
            a,
            "GET",
            "/api/v1/policies?tenantID=t1&pageSize=100000",
            None,
        ),
        200,
    );
    assert_eq!(list["pageSize"], 50, "clamped to server.maxPageSize");
    expect(&call_json(a, "GET", "/api/v1/policies?page=0", None), 400);
    expect(
        &call_json(a, "GET", "/api/v1/policies?sortOrder=sideways", None),
        400,
    );
    let base = expect(
        &call_json(a, "GET", "/api/v1/policies?type=base", None),
        200,
    );
    let names: Vec<&str> = base["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["platform-admin", "tenant-admin"]);
    assert_eq!(base["data"][1]["origin"], "config");
    let base_id = id("krn:iam:kaa::policy/tenant-admin");
    expect(
        &call_json(a, "DELETE", &format!("/api/v1/policies/{base_id}"), None),
        409,
    );

    // Replace with versions: a stale writer gets 412 and changes nothing.
    let p0 = id("krn:iam:t1::policy/p0");
    let new = json!({"statements": [{"effect": "allow", "actions": ["epr:endpoint:*"], "resources": ["krn:epr:t1::endpoint/e0"]}]});
    let r = call_json_with(
        a,
        "PUT",
        &format!("/api/v1/policies/{p0}"),
        None,
        &[("If-Match", "\"1\"")],
        Some(&new),
        CALL_TIMEOUT,
    )
    .unwrap();
    assert_eq!(expect(&r, 200)["data"]["version"], 2);
    let r = call_json_with(
        a,
        "PUT",
        &format!("/api/v1/policies/{p0}"),
        None,
        &[("If-Match", "\"1\"")],
        Some(&new),
        CALL_TIMEOUT,
    )
    .unwrap();
    expect(&r, 412);
    let got = expect(
        &call_json(a, "GET", &format!("/api/v1/policies/{p0}"), None),
        200,
    );
    assert_eq!(got["data"]["version"], 2);
    expect(
        &call_json(a, "DELETE", &format!("/api/v1/policies/{p0}"), None),
        204,
    );
    expect(
        &call_json(a, "GET", &format!("/api/v1/policies/{p0}"), None),
        404,
    );
    expect(
        &call_json(a, "GET", "/api/v1/policies/not-base64!", None),
        404,
    );

    // ---------------- users and nested groups
    let alice = json!({"username": "alice", "email": "alice@example.com", "password": "secret-pw-1",
        "confirmPassword": "secret-pw-1", "tenantID": "t1", "firstName": "Alice"});
    let u = expect(&call_json(a, "POST", "/api/v1/users", Some(&alice)), 201)["data"].clone();
    assert_eq!(u["krn"], "krn:iam:t1::user/alice");
    assert_eq!(
        u["enabled"], true,
        "a user is created enabled unless told otherwise"
    );
    assert!(u.get("password").is_none() && !u.to_string().contains("secret-pw-1"));
    let r = call_json(a, "POST", "/api/v1/users", Some(&alice));
    expect(&r, 409);
    let r = call_json(
        a,
        "POST",
        "/api/v1/users",
        Some(&json!({"username": "x", "password": "aaaaaaaa", "confirmPassword": "bbbbbbbb"})),
    );
    expect(&r, 400);
    assert!(r.json()["errors"].to_string().contains("confirmPassword"));
    let r = call_json(
        a,
        "POST",
        "/api/v1/users",
        Some(
            &json!({"username": "bad name", "password": "aaaaaaaa", "confirmPassword": "aaaaaaaa"}),
        ),
    );
    expect(&r, 400);
    let bob = json!({"username": "bob", "path": "/org1", "password": "secret-pw-2", "confirmPassword": "secret-pw-2",
        "tenantID": "t1", "enabled": true, "policyIDs": [raw_id("krn:iam:t1::policy/readers")]});
    let b = expect(&call_json(a, "POST", "/api/v1/users", Some(&bob)), 201)["data"].clone();
    assert_eq!(b["krn"], "krn:iam:t1::user/org1/bob");
    let bob_id = id("krn:iam:t1::user/org1/bob");
    let pol = expect(
        &call_json(a, "GET", &format!("/api/v1/users/{bob_id}/policies"), None),
        200,
    );
    assert_eq!(pol["count"], 1);
    let alice_id = id("krn:iam:t1::user/alice");
    let r = call_json_with(
        a,
        "PATCH",
        &format!("/api/v1/users/{alice_id}"),
        None,
        &[("If-Match", "1")],
        Some(&json!({"enabled": true, "lastName": "Liddell"})),
        CALL_TIMEOUT,
    )
    .unwrap();
    let v = expect(&r, 200)["data"].clone();
    assert_eq!(v["enabled"], true);
    assert_eq!(v["lastName"], "Liddell");
    assert_eq!(v["firstName"], "Alice");
    expect(
        &call_json_with(
            a,
            "PATCH",
            &format!("/api/v1/users/{alice_id}"),
            None,
            &[("If-Match", "1")],
            Some(&json!({"enabled": false})),
            CALL_TIMEOUT,
        )
        .unwrap(),
        412,
    );
    let users = expect(
        &call_json(a, "GET", "/api/v1/users?tenantID=t1&path=/org1", None),
        200,
    );
    assert_eq!(users["count"], 1);
    assert_eq!(users["data"][0]["username"], "bob");

    let g = expect(
        &call_json(
            a,
            "POST",
            "/api/v1/groups",
            Some(&json!({"name": "dev", "tenantID": "t1"})),
        ),
        201,
    )["data"]
        .clone();
    assert_eq!(g["krn"], "krn:iam:t1::group/dev");
    let child =
        json!({"name": "java", "tenantID": "t1", "parentID": raw_id("krn:iam:t1::group/dev")});
    let c = expect(&call_json(a, "POST", "/api/v1/groups", Some(&child)), 201)["data"].clone();
    assert_eq!(c["krn"], "krn:iam:t1::group/dev/java");
    assert_eq!(c["path"], "/dev");
    let java = id("krn:iam:t1::group/dev/java");
    let dev = id("krn:iam:t1::group/dev");
    let r = call_json(
        a,
        "POST",
        &format!("/api/v1/groups/{java}/members/add"),
        Some(&json!({"userIDs": [raw_id("krn:iam:t1::user/alice")]})),
    );
    expect(&r, 204);
    let m = expect(
        &call_json(a, "GET", &format!("/api/v1/groups/{java}/members"), None),
        200,
    );
    assert_eq!(m["data"][0]["username"], "alice");
    expect(
        &call_json(a, "DELETE", &format!("/api/v1/groups/{dev}"), None),
        409,
    );
    let r = call_json(
        a,
        "POST",
        &format!("/api/v1/groups/{java}/members/add"),
        Some(&json!({"userIDs": [raw_id("krn:iam:t1::user/nobody")]})),
    );
    expect(&r, 404);

    // ---------------- decisions: groups inherit their ancestors' policies
    let writers = json!({"name": "dev-writers", "tenantID": "t1", "statements": [
        {"effect": "allow", "actions": ["iam:user:update"], "resources": ["krn:iam:t1::user/*"]}]});
    expect(
        &call_json(a, "POST", "/api/v1/policies", Some(&writers)),
        201,
    );
    let r = call_json(
        a,
        "PUT",
        &format!("/api/v1/groups/{dev}/policies/attach"),
        Some(&json!({"policyIDs": [raw_id("krn:iam:t1::policy/dev-writers")]})),
    );
    expect(&r, 204);
    let ask = |principal: &str, action: &str, resources: Value| {
        call_json(
            a,
            "POST",
            "/api/v1/evaluate",
            Some(&json!({"principal": principal, "action": action, "resources": resources})),
        )
    };
    // alice is in dev/java; dev's policy applies to her.
    let r = ask(
        "krn:iam:t1::user/alice",
        "iam:user:update",
        json!(["krn:iam:t1::user/carol"]),
    );
    assert_eq!(expect(&r, 200), json!(["krn:iam:t1::user/carol"]));
    // bob: allowed read on user/*, denied on user/org1/* (deny wins), implicit deny on update.
    let r = ask(
        "krn:iam:t1::user/org1/bob",
        "iam:user:read",
        json!(["krn:iam:t1::user/alice", "krn:iam:t1::user/org1/x"]),
    );
    let body = expect(&r, 403);
    assert_eq!(body["denied"], json!(["krn:iam:t1::user/org1/x"]));
    let r = call_json(
        a,
        "POST",
        "/api/v1/evaluate?filterResources=true",
        Some(&json!({"principal": "krn:iam:t1::user/org1/bob",
        "action": "iam:user:read", "resources": ["krn:iam:t1::user/alice", "krn:iam:t1::user/org1/x"]})),
    );
    assert_eq!(expect(&r, 200), json!(["krn:iam:t1::user/alice"]));
    let r = call_json(
        a,
        "POST",
        "/api/v1/evaluate?explain=true",
        Some(&json!({"principal": "krn:iam:t1::user/org1/bob",
        "action": "iam:user:read", "resources": ["krn:iam:t1::user/alice", "krn:iam:t1::user/org1/x", "krn:iam:t1::group/g"]})),
    );
    let e = expect(&r, 403);
    assert_eq!(e["decisions"][0]["outcome"], "allow");
    assert_eq!(
        e["decisions"][0]["reasons"],
        json!([{"policyID": "krn:iam:t1::policy/readers", "statement": 0}])
    );
    assert_eq!(e["decisions"][1]["outcome"], "explicitDeny");
    assert_eq!(
        e["decisions"][1]["reasons"],
        json!([{"policyID": "krn:iam:t1::policy/readers", "statement": 1}])
    );
    assert_eq!(e["decisions"][2]["outcome"], "implicitDeny");
    let r = call_json(
        a,
        "POST",
        "/api/v1/evaluate/actions",
        Some(&json!({"principal": "krn:iam:t1::user/org1/bob",
        "actions": ["iam:user:read", "iam:user:delete"], "resources": ["krn:iam:t1::user/alice"]})),
    );
    let e = expect(&r, 200);
    assert_eq!(
        e["iam:user:read"]["allowed"],
        json!(["krn:iam:t1::user/alice"])
    );
    assert_eq!(
        e["iam:user:delete"]["denied"],
        json!(["krn:iam:t1::user/alice"])
    );
    // Bad evaluation input.
    expect(
        &ask(
            "krn:iam:t1::user/alice",
            "iam:user:*",
            json!(["krn:iam:t1::user/x"]),
        ),
        400,
    );
    expect(
        &ask(
            "krn:iam:t1::user/alice",
            "iam:user:read",
            json!(["krn:iam:t1::user/*"]),
        ),
        400,
    );
    expect(
        &ask("krn:iam:t1::user/alice", "iam:user:read", json!([])),
        400,
    );
    let r = call_json(
        a,
        "POST",
        "/api/v1/evaluate",
        Some(&json!({"action": "iam:user:read", "resources": ["krn:iam:t1::user/x"]})),
    );
    expect(&r, 400);
    assert!(message(&r).contains("principal"));

    // ---------------- resources (template policy), pools, simulate
    let r = call_json(
        a,
        "POST",
        "/api/v1/resources",
        Some(
            &json!({"service": "epr", "resourceType": "endpoint", "name": "e1",
        "tenantID": "t1", "displayName": "Thermostat"}),
        ),
    );
    let res = expect(&r, 201)["data"].clone();
    assert_eq!(res["krn"], "krn:epr:t1::endpoint/e1");
    assert!(
        res["policyID"].is_string(),
        "template made a resource policy: {res}"
    );
    let e1 = id("krn:epr:t1::endpoint/e1");
    let rp = expect(
        &call_json(a, "GET", &format!("/api/v1/resources/{e1}/policy"), None),
        200,
    );
    assert_eq!(rp["data"]["type"], "resource");
    assert_eq!(
        rp["data"]["statements"][0]["resources"],
        json!(["krn:epr:t1::endpoint/e1"])
    );
    expect(
        &call_json(
            a,
            "POST",
            "/api/v1/resources",
            Some(
                &json!({"service": "epr", "resourceType": "endpoint", "name": "e1", "tenantID": "t1"}),
            ),
        ),
        409,
    );
    expect(
        &call_json(
            a,
            "POST",
            "/api/v1/groups",
            Some(&json!({"name": "operators", "tenantID": "t1"})),
        ),
        201,
    );
    let ops_id = id("krn:iam:t1::group/operators");
    expect(
        &call_json(
            a,
            "POST",
            &format!("/api/v1/groups/{ops_id}/members/add"),
            Some(&json!({"userIDs": [raw_id("krn:iam:t1::user/org1/bob")]})),
        ),
        204,
    );
    let r = ask(
        "krn:iam:t1::user/org1/bob",
        "epr:endpoint:read",
        json!(["krn:epr:t1::endpoint/e1"]),
    );
    expect(&r, 200);
    let r = ask(
        "krn:iam:t1::user/alice",
        "epr:endpoint:read",
        json!(["krn:epr:t1::endpoint/e1"]),
    );
    expect(&r, 403);
    // A resource policy may only speak of its resource.
    let r = call_json(
        a,
        "PUT",
        &format!("/api/v1/resources/{e1}/policy"),
        Some(&json!({"statements": [
        {"effect": "allow", "actions": ["epr:endpoint:read"], "resources": ["krn:epr:t1::endpoint/e2"], "principals": ["krn:iam:t1::user/alice"]}]})),
    );
    expect(&r, 400);

    let r = call_json(
        a,
        "POST",
        "/api/v1/resources",
        Some(
            &json!({"service": "epr", "resourceType": "endpoint", "name": "e2", "tenantID": "t1"}),
        ),
    );
    expect(&r, 201);
    let pool = json!({"name": "fleet", "tenantID": "t1", "resourceIDs": [raw_id("krn:epr:t1::endpoint/e2")]});
    let pv = expect(&call_json(a, "POST", "/api/v1/pools", Some(&pool)), 201)["data"].clone();
    assert_eq!(
        pv["resourceIDs"],
        json!([raw_id("krn:epr:t1::endpoint/e2")])
    );
    let pool_policy = json!({"name": "fleet-readers", "tenantID": "t1", "statements": [
        {"effect": "allow", "actions": ["epr:endpoint:read"], "resources": ["krn:epr:t1::endpoint/nothing-by-pattern"],
         "principals": ["krn:iam:t1::user/alice"]}]});
    expect(
        &call_json(a, "POST", "/api/v1/policies", Some(&pool_policy)),
        201,
    );
    let fleet = id("krn:iam:t1::pool/fleet");
    expect(
        &call_json(
            a,
            "PUT",
            &format!("/api/v1/pools/{fleet}/policies/attach"),
            Some(&json!({"policyIDs": [raw_id("krn:iam:t1::policy/fleet-readers")]})),
        ),
        204,
    );
    expect(
        &ask(
            "krn:iam:t1::user/alice",
            "epr:endpoint:read",
            json!(["krn:epr:t1::endpoint/e2"]),
        ),
        200,
    );
    expect(
        &ask(
            "krn:iam:t1::user/alice",
            "epr:endpoint:read",
            json!(["krn:epr:t1::endpoint/e1"]),
        ),
        403,
    );
    let r = call_json(
        a,
        "POST",
        "/api/v1/evaluate/resources",
        Some(&json!({"principal": "krn:iam:t1::user/alice",
        "action": "epr:endpoint:read", "resourceType": "endpoint", "tenantID": "t1"})),
    );
    let e = expect(&r, 200);
    assert_eq!(e["data"], json!(["krn:epr:t1::endpoint/e2"]));

    let sim = json!({"principal": "krn:iam:t1::user/alice", "actions": ["epr:endpoint:read"],
        "resources": ["krn:epr:t1::endpoint/e2"],
        "add": [{"name": "lockdown", "statements": [{"effect": "deny", "actions": ["epr:*"], "resources": ["krn:epr:t1:*"]}],
                 "attachedTo": ["krn:iam:t1::user/alice"]}]});
    let s = expect(
        &call_json(a, "POST", "/api/v1/evaluate/simulate", Some(&sim)),
        200,
    )["data"]
        .clone();
    assert_eq!(s["results"][0]["outcome"], "explicitDeny");
    assert_eq!(s["results"][0]["current"]["outcome"], "allow");
    assert_eq!(s["results"][0]["changed"], true);
    expect(
        &ask(
            "krn:iam:t1::user/alice",
            "epr:endpoint:read",
            json!(["krn:epr:t1::endpoint/e2"]),
        ),
        200,
    );

    // Deleting a resource takes its resource policy and pool membership with it.
    expect(
        &call_json(a, "DELETE", &format!("/api/v1/resources/{e1}"), None),
        204,
    );
    expect(
        &call_json(a, "GET", &format!("/api/v1/resources/{e1}/policy"), None),
        404,
    );
    expect(
        &ask(
            "krn:iam:t1::user/org1/bob",
            "epr:endpoint:read",
            json!(["krn:epr:t1::endpoint/e1"]),
        ),
        403,
    );

    // Detach, bulk delete.
    expect(
        &call_json(
            a,
            "POST",
            &format!("/api/v1/groups/{dev}/policies/detach"),
            Some(&json!({"policyIDs": [raw_id("krn:iam:t1::policy/dev-writers")]})),
        ),
        204,
    );
    expect(
        &ask(
            "krn:iam:t1::user/alice",
            "iam:user:update",
            json!(["krn:iam:t1::user/carol"]),
        ),
        403,
    );
    let r = call_json(
        a,
        "POST",
        "/api/v1/users/delete?tenantID=t1",
        Some(
            &json!({"userIDs": [raw_id("krn:iam:t1::user/alice"), raw_id("krn:iam:t1::user/ghost")]}),
        ),
    );
    expect(&r, 404);
    expect(
        &call_json(a, "GET", &format!("/api/v1/users/{alice_id}"), None),
        200,
    );
    let r = call_json(
        a,
        "POST",
        "/api/v1/users/delete?tenantID=t1",
        Some(&json!({"userIDS": [raw_id("krn:iam:t1::user/alice")]})),
    );
    expect(&r, 204);
    expect(
        &call_json(a, "GET", &format!("/api/v1/users/{alice_id}"), None),
        404,
    );
    expect(
        &call_json(a, "GET", &format!("/api/v1/groups/{readers_id}"), None),
        404,
    );
}

fn bad_input(addr: SocketAddr) {
    let r = request(
        addr,
        "POST",
        "/api/v1/policies",
        &[("Content-Type", "application/json")],
        b"{\"name\": ",
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(r.status, 400);
    assert!(message(&r).starts_with("malformed JSON"), "{}", message(&r));
    let r = request(
        addr,
        "POST",
        "/api/v1/policies",
        &[],
        b"{\"name\": 5, \"statements\": []}",
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(r.status, 400);
    let r = request(
        addr,
        "POST",
        "/api/v1/groups",
        &[],
        br#"["arraygroup", null, null, "t1"]"#,
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(r.status, 400, "an array is not a body");
    let r = request(
        addr,
        "POST",
        "/api/v1/groups",
        &[],
        br#"{"name": "a", "name": "b"}"#,
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(r.status, 400, "duplicate keys");
    let r = call_json(addr, "GET", "/api/v1/resources/evaluate", None);
    assert_eq!(r.status, 405, "a literal path with another method");
    let big = vec![b'x'; 10 * 1024 * 1024];
    let r = request(
        addr,
        "POST",
        "/api/v1/policies",
        &[],
        &big,
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(r.status, 413);
    assert!(r.json()["message"].is_string());
    let r = call_json(addr, "DELETE", "/api/v1/users", None);
    assert_eq!(r.status, 405);
    assert!(r.header("allow").unwrap().contains("POST"));
    let r = call_json(addr, "GET", "/api/v1/nothing", None);
    assert_eq!(r.status, 404);
    assert!(r.json()["message"].is_string());
    let r = call_json(addr, "GET", "/api/v1/users/me", None);
    assert_eq!(r.status, 404);
}

#[test]
fn sqlite_api_story() {
    let dir = support::TempDir::new();
    let svc = support::service::start_iam(&support::sqlite_settings(&dir), CONFIG);
    story(svc.addr);
    bad_input(svc.addr);
}

#[test]
fn postgres_api_story() {
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip("postgres_api_story");
    };
    let svc = support::service::start_iam(&pg.storage(), CONFIG);
    story(svc.addr);
    bad_input(svc.addr);
}

/// A write on one replica reaches the other's decisions (by polling here, without NATS); how
/// fast is measured by `tests/iam_replica_notices.rs` and bounded by `scripts/reliability.sh`.
#[test]
fn a_second_replica_sees_changes() {
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip("a_second_replica_sees_changes");
    };
    let one = support::service::start_iam(&pg.storage(), "");
    let two = support::service::start_iam(&pg.storage(), "");
    let policy = json!({"name": "r", "tenantID": "t9", "statements": [
        {"effect": "allow", "actions": ["iam:user:read"], "resources": ["krn:iam:t9::user/*"], "principals": ["krn:iam:t9::user/u"]}]});
    let body = json!({"principal": "krn:iam:t9::user/u", "action": "iam:user:read", "resources": ["krn:iam:t9::user/v"]});
    assert_eq!(
        call_json(two.addr, "POST", "/api/v1/evaluate", Some(&body)).status,
        403
    );
    expect(
        &call_json(one.addr, "POST", "/api/v1/policies", Some(&policy)),
        201,
    );
    support::wait_until("replica two decides by the policy written on one", || {
        let r = call_json(two.addr, "POST", "/api/v1/evaluate", Some(&body));
        assert!(r.status == 200 || r.status == 403, "{}", r.status);
        r.status == 200
    });
    // And a delete the other way round.
    expect(
        &call_json(
            two.addr,
            "DELETE",
            &format!("/api/v1/policies/{}", id("krn:iam:t9::policy/r")),
            None,
        ),
        204,
    );
    support::wait_until("replica one forgets the policy deleted on two", || {
        call_json(one.addr, "POST", "/api/v1/evaluate", Some(&body)).status == 403
    });
}

/// Two clients write policies into one replica while a third writes into a second replica, all
/// into one tenant, so their revisions interleave: every write is decided on by its own replica
/// right after it answers, none is lost, and both replicas end with the decisions of a replica
/// that loads the tenant afresh.
#[test]
fn interleaved_writes_from_two_clients_and_a_second_replica_all_land() {
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip("interleaved_writes_from_two_clients_and_a_second_replica_all_land");
    };
    let one = support::service::start_iam(&pg.storage(), "");
    let two = support::service::start_iam(&pg.storage(), "");
    const PER_CLIENT: usize = 40;
    let ask = |addr: SocketAddr, k: &str| -> bool {
        let body = json!({"principal": format!("krn:iam:tw::user/u{k}"), "action": "iam:user:read",
            "resources": [format!("krn:iam:tw::user/target{k}")]});
        let r = call_json(addr, "POST", "/api/v1/evaluate", Some(&body));
        assert!(
            r.status == 200 || r.status == 403,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        r.status == 200
    };
    let policy = |k: &str| {
        json!({"name": format!("p{k}"), "tenantID": "tw", "statements": [
            {"effect": "allow", "actions": ["iam:user:read"], "resources": [format!("krn:iam:tw::user/target{k}")],
             "principals": [format!("krn:iam:tw::user/u{k}")]}]})
    };
    let client = |addr: SocketAddr, name: &'static str| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            for i in 0..PER_CLIENT {
                let k = format!("{name}{i}");
                expect(
                    &call_json(addr, "POST", "/api/v1/policies", Some(&policy(&k))),
                    201,
                );
                assert!(ask(addr, &k), "write {k} not decided on by its own replica");
                if i % 5 == 4 {
                    // Every fifth one is deleted again, and must be gone at once.
                    let path = format!(
                        "/api/v1/policies/{}",
                        id(&format!("krn:iam:tw::policy/p{k}"))
                    );
                    expect(&call_json(addr, "DELETE", &path, None), 204);
                    assert!(
                        !ask(addr, &k),
                        "delete of {k} not decided on by its own replica"
                    );
                } else {
                    kept.push(k);
                }
            }
            kept
        })
    };
    let a = client(one.addr, "a");
    let b = client(one.addr, "b");
    let c = client(two.addr, "c");
    let mut kept: Vec<String> = Vec::new();
    for h in [a, b, c] {
        kept.extend(h.join().unwrap());
    }
    let all: Vec<String> = ["a", "b", "c"]
        .iter()
        .flat_map(|n| (0..PER_CLIENT).map(move |i| format!("{n}{i}")))
        .collect();
    // A replica started now loads the tenant afresh: the reference.
    let fresh = support::service::start_iam(&pg.storage(), "");
    let expected: Vec<bool> = all.iter().map(|k| ask(fresh.addr, k)).collect();
    let want: Vec<bool> = all.iter().map(|k| kept.contains(k)).collect();
    assert_eq!(expected, want, "the database lost or kept the wrong writes");
    for replica in [one.addr, two.addr] {
        support::wait_until("a replica converges to the fresh load", || {
            all.iter().map(|k| ask(replica, k)).collect::<Vec<bool>>() == expected
        });
    }
}

fn policy_count(a: SocketAddr, collection: &str, krn: &str) -> u64 {
    let r = call_json(
        a,
        "GET",
        &format!("/api/v1/{collection}/{}/policies", id(krn)),
        None,
    );
    expect(&r, 200)["count"].as_u64().unwrap()
}

/// A 404 whose message names the entity by KRN and by id.
fn expect_missing(r: &Resp, krn: &str) {
    expect(r, 404);
    let m = message(r);
    assert!(m.contains(krn), "{m}");
    assert!(m.contains(&raw_id(krn)), "{m}");
    assert!(!m.contains("named"), "{m}");
}

/// Attaching to, detaching from and changing the members of something that does not exist, or
/// naming a member or policy that does not exist, answers 404 naming it and stores nothing: an
/// entity created later under that name is born without the attachment.
fn missing_entities(a: SocketAddr) {
    let t = "t17";
    let policy = json!({"name": "p", "tenantID": t, "statements": [
        {"effect": "allow", "actions": ["svc:thing:read"], "resources": ["*"]}]});
    expect(
        &call_json(a, "POST", "/api/v1/policies", Some(&policy)),
        201,
    );
    let p = format!("krn:iam:{t}::policy/p");
    let ghost_policy = format!("krn:iam:{t}::policy/ghost");
    let attach = json!({"policyIDs": [raw_id(&p)]});
    for (collection, kind, create) in [
        (
            "users",
            "user",
            json!({"username": "later", "tenantID": t, "password": "pass-word-1", "confirmPassword": "pass-word-1"}),
        ),
        ("groups", "group", json!({"name": "later", "tenantID": t})),
        ("pools", "pool", json!({"name": "later", "tenantID": t})),
    ] {
        let krn = format!("krn:iam:{t}::{kind}/later");
        for (method, verb) in [("PUT", "attach"), ("POST", "detach")] {
            let r = call_json(
                a,
                method,
                &format!("/api/v1/{collection}/{}/policies/{verb}", id(&krn)),
                Some(&attach),
            );
            expect_missing(&r, &krn);
        }
        expect(
            &call_json(a, "POST", &format!("/api/v1/{collection}"), Some(&create)),
            201,
        );
        assert_eq!(
            policy_count(a, collection, &krn),
            0,
            "{kind} born with a policy"
        );
        // A policy that does not exist, beside one that does: 404 naming it, nothing attached.
        let r = call_json(
            a,
            "PUT",
            &format!("/api/v1/{collection}/{}/policies/attach", id(&krn)),
            Some(&json!({"policyIDs": [raw_id(&p), raw_id(&ghost_policy)]})),
        );
        expect_missing(&r, &ghost_policy);
        assert!(!message(&r).contains(&format!("`{p}`")), "{}", message(&r));
        assert_eq!(policy_count(a, collection, &krn), 0);
        let r = call_json(
            a,
            "POST",
            &format!("/api/v1/{collection}/{}/policies/detach", id(&krn)),
            Some(&json!({"policyIDs": [raw_id(&ghost_policy)]})),
        );
        expect_missing(&r, &ghost_policy);
        // The real one attaches.
        let r = call_json(
            a,
            "PUT",
            &format!("/api/v1/{collection}/{}/policies/attach", id(&krn)),
            Some(&attach),
        );
        expect(&r, 204);
        assert_eq!(policy_count(a, collection, &krn), 1);
    }

    // Group members, a user's groups.
    let user = format!("krn:iam:{t}::user/later");
    let group = format!("krn:iam:{t}::group/later");
    let ghost_user = format!("krn:iam:{t}::user/ghost");
    let ghost_group = format!("krn:iam:{t}::group/ghost");
    for verb in ["add", "remove"] {
        let r = call_json(
            a,
            "POST",
            &format!("/api/v1/groups/{}/members/{verb}", id(&ghost_group)),
            Some(&json!({"userIDs": [raw_id(&user)]})),
        );
        expect_missing(&r, &ghost_group);
        let r = call_json(
            a,
            "POST",
            &format!("/api/v1/groups/{}/members/{verb}", id(&group)),
            Some(&json!({"userIDs": [raw_id(&user), raw_id(&ghost_user)]})),
        );
        expect_missing(&r, &ghost_user);
    }
    let members = |a| {
        expect(
            &call_json(
                a,
                "GET",
                &format!("/api/v1/groups/{}/members", id(&group)),
                None,
            ),
            200,
        )["count"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(members(a), 0, "a refused member change stored a member");
    let r = call_json(
        a,
        "POST",
        &format!("/api/v1/users/{}/groups/add", id(&ghost_user)),
        Some(&json!({"groupIDs": [raw_id(&group)]})),
    );
    expect_missing(&r, &ghost_user);
    let r = call_json(
        a,
        "POST",
        &format!("/api/v1/users/{}/groups/add", id(&user)),
        Some(&json!({"groupIDs": [raw_id(&group), raw_id(&ghost_group)]})),
    );
    expect_missing(&r, &ghost_group);
    assert_eq!(members(a), 0);

    // Pool members; a resource registered into a pool that does not exist is not registered.
    let pool = format!("krn:iam:{t}::pool/later");
    let ghost_pool = format!("krn:iam:{t}::pool/ghost");
    let res = json!({"service": "svc", "resourceType": "thing", "name": "r1", "tenantID": t});
    expect(&call_json(a, "POST", "/api/v1/resources", Some(&res)), 201);
    let r1 = format!("krn:svc:{t}::thing/r1");
    let ghost_res = format!("krn:svc:{t}::thing/ghost");
    for verb in ["add", "remove"] {
        let r = call_json(
            a,
            "POST",
            &format!("/api/v1/pools/{}/resources/{verb}", id(&ghost_pool)),
            Some(&json!({"resourceIDs": [raw_id(&r1)]})),
        );
        expect_missing(&r, &ghost_pool);
        let r = call_json(
            a,
            "POST",
            &format!("/api/v1/pools/{}/resources/{verb}", id(&pool)),
            Some(&json!({"resourceIDs": [raw_id(&r1), raw_id(&ghost_res)]})),
        );
        expect_missing(&r, &ghost_res);
    }
    let got = expect(
        &call_json(a, "GET", &format!("/api/v1/pools/{}", id(&pool)), None),
        200,
    );
    assert_eq!(got["data"]["resourceIDs"], json!([]));
    let in_ghost = json!({"service": "svc", "resourceType": "thing", "name": "r2", "tenantID": t,
        "poolIDs": [raw_id(&ghost_pool)]});
    let r = call_json(a, "POST", "/api/v1/resources", Some(&in_ghost));
    expect(&r, 400);
    assert!(r.json().to_string().contains(&ghost_pool), "{}", text(&r));
    expect(
        &call_json(
            a,
            "GET",
            &format!(
                "/api/v1/resources/{}",
                id(&format!("krn:svc:{t}::thing/r2"))
            ),
            None,
        ),
        404,
    );

    // Bulk deletes name what is missing and delete nothing.
    for (collection, field, present, ghost) in [
        ("users", "userIDs", &user, &ghost_user),
        ("groups", "groupIDs", &group, &ghost_group),
        ("resources", "resourceIDs", &r1, &ghost_res),
    ] {
        let r = call_json(
            a,
            "POST",
            &format!("/api/v1/{collection}/delete?tenantID={t}"),
            Some(&json!({ field: [raw_id(present), raw_id(ghost)] })),
        );
        expect_missing(&r, ghost);
        expect(
            &call_json(
                a,
                "GET",
                &format!("/api/v1/{collection}/{}", id(present)),
                None,
            ),
            200,
        );
        let r = call_json(
            a,
            "DELETE",
            &format!("/api/v1/{collection}/{}", id(ghost)),
            None,
        );
        expect_missing(&r, ghost);
    }
}

fn text(r: &Resp) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// A policy without statements is refused on create and on every update, and changes nothing.
fn empty_statements(a: SocketAddr) {
    let t = "t17e";
    let r = call_json(
        a,
        "POST",
        "/api/v1/policies",
        Some(&json!({"name": "empty", "tenantID": t, "statements": []})),
    );
    expect(&r, 400);
    assert!(message(&r).contains("`statements`"), "{}", message(&r));
    let p = format!("krn:iam:{t}::policy/empty");
    expect(
        &call_json(a, "GET", &format!("/api/v1/policies/{}", id(&p)), None),
        404,
    );
    let one = json!([{"effect": "allow", "actions": ["svc:thing:read"], "resources": ["*"]}]);
    expect(
        &call_json(
            a,
            "POST",
            "/api/v1/policies",
            Some(&json!({"name": "empty", "tenantID": t, "statements": one})),
        ),
        201,
    );
    let r = call_json(
        a,
        "PUT",
        &format!("/api/v1/policies/{}", id(&p)),
        Some(&json!({"statements": []})),
    );
    expect(&r, 400);
    assert!(message(&r).contains("`statements`"), "{}", message(&r));
    let got = expect(
        &call_json(a, "GET", &format!("/api/v1/policies/{}", id(&p)), None),
        200,
    );
    assert_eq!(got["data"]["version"], 1);
    assert_eq!(got["data"]["statements"].as_array().unwrap().len(), 1);
    // A resource-based policy likewise.
    let res = json!({"service": "svc", "resourceType": "thing", "name": "e1", "tenantID": t});
    expect(&call_json(a, "POST", "/api/v1/resources", Some(&res)), 201);
    let rk = format!("krn:svc:{t}::thing/e1");
    let r = call_json(
        a,
        "PUT",
        &format!("/api/v1/resources/{}/policy", id(&rk)),
        Some(&json!({"statements": []})),
    );
    expect(&r, 400);
    expect(
        &call_json(
            a,
            "GET",
            &format!("/api/v1/resources/{}/policy", id(&rk)),
            None,
        ),
        404,
    );
}

#[test]
fn sqlite_missing_entities_and_empty_policies() {
    let dir = support::TempDir::new();
    let svc = support::service::start_iam(&support::sqlite_settings(&dir), "");
    missing_entities(svc.addr);
    empty_statements(svc.addr);
}

#[test]
fn postgres_missing_entities_and_empty_policies() {
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip("postgres_missing_entities_and_empty_policies");
    };
    let svc = support::service::start_iam(&pg.storage(), "");
    missing_entities(svc.addr);
    empty_statements(svc.addr);
}

/// GET an entity, change one field and send the whole representation back: 200, the field
/// changed; a read-only field changed instead answers 400 naming it and changes nothing.
fn round_trip(
    a: SocketAddr,
    path: &str,
    method: &str,
    change: (&str, Value),
    read_only: &[(&str, Value)],
) {
    let before = expect(&call_json(a, "GET", path, None), 200)["data"].clone();
    for (field, value) in read_only {
        let mut body = before.clone();
        body[*field] = value.clone();
        let r = call_json(a, method, path, Some(&body));
        expect(&r, 400);
        assert!(
            message(&r).contains(&format!("`{field}`")),
            "{path} {field}: {}",
            message(&r)
        );
        let now = expect(&call_json(a, "GET", path, None), 200)["data"].clone();
        assert_eq!(
            now, before,
            "{path}: a refused `{field}` changed the entity"
        );
    }
    let mut body = before.clone();
    body[change.0] = change.1.clone();
    // `updated` is the write's to set: an old one is no reason to refuse.
    body["updated"] = json!("2000-01-01T00:00:00.000Z");
    let r = call_json(a, method, path, Some(&body));
    let after = expect(&r, 200)["data"].clone();
    assert_eq!(after[change.0], change.1, "{path}");
    assert_eq!(after["version"], before["version"].as_i64().unwrap() + 1);
    for k in ["id", "krn", "tenantID", "created"] {
        assert_eq!(after[k], before[k], "{path}: {k}");
    }
    // The answer goes back as it came, too.
    let mut again = after.clone();
    again[change.0] = before[change.0].clone();
    expect(&call_json(a, method, path, Some(&again)), 200);
}

fn round_trips(a: SocketAddr) {
    let t = "t17r";
    let other = |k: &str| format!("krn:iam:{t}::{k}/other");
    let post = |collection: &str, body: Value| {
        expect(
            &call_json(a, "POST", &format!("/api/v1/{collection}"), Some(&body)),
            201,
        )["data"]
            .clone()
    };
    let p = post(
        "policies",
        json!({"name": "rt", "tenantID": t, "description": "first", "statements": [
            {"effect": "allow", "actions": ["svc:thing:read"], "resources": ["*"]}]}),
    );
    round_trip(
        a,
        &format!("/api/v1/policies/{}", id(p["krn"].as_str().unwrap())),
        "PUT",
        ("description", json!("second")),
        &[
            ("id", json!(raw_id(&other("policy")))),
            ("krn", json!(other("policy"))),
            ("tenantID", json!("elsewhere")),
            ("name", json!("renamed")),
            ("type", json!("resource")),
            ("created", json!("2000-01-01T00:00:00.000Z")),
        ],
    );
    let u = post(
        "users",
        json!({"username": "rt", "tenantID": t, "password": "pass-word-1", "confirmPassword": "pass-word-1",
            "firstName": "First"}),
    );
    round_trip(
        a,
        &format!("/api/v1/users/{}", id(u["krn"].as_str().unwrap())),
        "PATCH",
        ("firstName", json!("Second")),
        &[
            ("id", json!(raw_id(&other("user")))),
            ("krn", json!(other("user"))),
            ("tenantID", json!("elsewhere")),
            ("username", json!("renamed")),
            ("path", json!("/elsewhere")),
        ],
    );
    let g = post("groups", json!({"name": "rt", "tenantID": t}));
    round_trip(
        a,
        &format!("/api/v1/groups/{}", id(g["krn"].as_str().unwrap())),
        "PATCH",
        ("displayName", json!("Round trip")),
        &[
            ("krn", json!(other("group"))),
            ("name", json!("renamed")),
            ("parentID", json!(raw_id(&other("group")))),
        ],
    );
    let r = post(
        "resources",
        json!({"service": "svc", "resourceType": "thing", "name": "rt", "tenantID": t}),
    );
    round_trip(
        a,
        &format!("/api/v1/resources/{}", id(r["krn"].as_str().unwrap())),
        "PATCH",
        ("description", json!("changed")),
        &[
            ("krn", json!(format!("krn:svc:{t}::thing/other"))),
            ("service", json!("other")),
            ("resourceType", json!("other")),
            ("name", json!("renamed")),
            ("tenantID", json!("elsewhere")),
        ],
    );
    let pool = post("pools", json!({"name": "rt", "tenantID": t}));
    round_trip(
        a,
        &format!("/api/v1/pools/{}", id(pool["krn"].as_str().unwrap())),
        "PATCH",
        ("displayName", json!("Pool")),
        &[
            ("id", json!(raw_id(&other("pool")))),
            ("name", json!("renamed")),
            ("resourceIDs", json!([r["id"]])),
        ],
    );
    // A resource-based policy, read and written back under its resource.
    let rpath = format!(
        "/api/v1/resources/{}/policy",
        id(r["krn"].as_str().unwrap())
    );
    expect(
        &call_json(
            a,
            "PUT",
            &rpath,
            Some(
                &json!({"statements": [{"effect": "allow", "actions": ["svc:thing:read"],
                "principals": [format!("krn:iam:{t}::user/rt")]}]}),
            ),
        ),
        200,
    );
    round_trip(
        a,
        &rpath,
        "PUT",
        ("description", json!("theirs")),
        &[("krn", json!(other("policy"))), ("name", json!("renamed"))],
    );
}

#[test]
fn sqlite_round_trips() {
    let dir = support::TempDir::new();
    let svc = support::service::start_iam(&support::sqlite_settings(&dir), "");
    round_trips(svc.addr);
}

#[test]
fn postgres_round_trips() {
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip("postgres_round_trips");
    };
    let svc = support::service::start_iam(&pg.storage(), "");
    round_trips(svc.addr);
}

/// A disabled user as principal, or a registered resource marked disabled, is denied in the
/// whole evaluate family with an explanation naming it; enabling it again allows at once, and a
/// replica that loads the tenant afresh agrees. A user created without `enabled` is enabled.
fn disabled_entities(a: SocketAddr, fresh: &dyn Fn() -> support::service::Running) {
    let t = "t17d";
    let k = |s: &str| format!("krn:iam:{t}::{s}");
    let policy = json!({"name": "read", "tenantID": t, "statements": [
        {"effect": "allow", "actions": ["svc:thing:read", "svc:thing:write"], "resources": ["*"]}]});
    expect(
        &call_json(a, "POST", "/api/v1/policies", Some(&policy)),
        201,
    );
    let pid = raw_id(&k("policy/read"));
    let user = |name: &str, enabled: Option<bool>| {
        let mut b = json!({"username": name, "tenantID": t, "password": "pass-word-1",
            "confirmPassword": "pass-word-1", "policyIDs": [pid]});
        if let Some(e) = enabled {
            b["enabled"] = json!(e);
        }
        expect(&call_json(a, "POST", "/api/v1/users", Some(&b)), 201)["data"].clone()
    };
    assert_eq!(user("on", None)["enabled"], true);
    assert_eq!(user("off", Some(false))["enabled"], false);
    let resource = |name: &str, enabled: Option<bool>| {
        let mut b = json!({"service": "svc", "resourceType": "thing", "name": name, "tenantID": t});
        if let Some(e) = enabled {
            b["enabled"] = json!(e);
        }
        expect(&call_json(a, "POST", "/api/v1/resources", Some(&b)), 201);
        format!("krn:svc:{t}::thing/{name}")
    };
    let (r_on, r_off) = (resource("r-on", None), resource("r-off", Some(false)));
    let (on, off) = (k("user/on"), k("user/off"));
    let ask = |path: &str, principal: &str, resources: &[&str]| {
        call_json(
            a,
            "POST",
            path,
            Some(
                &json!({"principal": principal, "action": "svc:thing:read", "resources": resources}),
            ),
        )
    };
    let principal_off = format!("the principal `{off}` is disabled");
    let resource_off = format!("the resource `{r_off}` is disabled");

    for path in ["/api/v1/evaluate", "/api/v1/resources/evaluate"] {
        expect(&ask(path, &on, &[&r_on]), 200);
        let r = ask(path, &off, &[&r_on]);
        expect(&r, 403);
        assert!(message(&r).contains(&principal_off), "{}", message(&r));
        let r = ask(path, &on, &[&r_on, &r_off]);
        expect(&r, 403);
        assert!(message(&r).contains(&resource_off), "{}", message(&r));
        assert_eq!(r.json()["denied"], json!([r_off]));
        // Explained.
        let r = ask(&format!("{path}?explain=true"), &off, &[&r_on]);
        let d = expect(&r, 403)["decisions"][0].clone();
        assert_eq!(d["outcome"], "explicitDeny");
        assert_eq!(d["disabled"], "principal");
        assert_eq!(d["message"], principal_off);
        let r = ask(&format!("{path}?explain=true"), &on, &[&r_on, &r_off]);
        let v = expect(&r, 403);
        assert_eq!(v["decisions"][0]["outcome"], "allow");
        assert!(v["decisions"][0].get("disabled").is_none(), "{v}");
        assert_eq!(v["decisions"][1]["disabled"], "resource");
        assert_eq!(v["decisions"][1]["message"], resource_off);
        // Filtered.
        let r = ask(
            &format!("{path}?filterResources=true"),
            &on,
            &[&r_on, &r_off],
        );
        assert_eq!(expect(&r, 200), json!([r_on]));
        let r = ask(&format!("{path}?filterResources=true"), &off, &[&r_on]);
        assert_eq!(expect(&r, 200), json!([]));
        let r = ask(
            &format!("{path}?filterResources=true&explain=true"),
            &off,
            &[&r_on],
        );
        assert_eq!(expect(&r, 200)["decisions"][0]["message"], principal_off);
    }
    for path in ["/api/v1/evaluate/actions", "/api/v1/evaluate/irns/actions"] {
        let body = json!({"principal": off, "actions": ["svc:thing:read", "svc:thing:write"],
            "resources": [r_on]});
        let v = expect(&call_json(a, "POST", path, Some(&body)), 200);
        for action in ["svc:thing:read", "svc:thing:write"] {
            assert_eq!(v[action]["allowed"], json!([]), "{v}");
            assert_eq!(v[action]["denied"], json!([r_on]), "{v}");
        }
        let body =
            json!({"principal": on, "actions": ["svc:thing:read"], "resources": [r_on, r_off]});
        let v = expect(
            &call_json(a, "POST", &format!("{path}?explain=true"), Some(&body)),
            200,
        );
        assert_eq!(v["svc:thing:read"]["allowed"], json!([r_on]), "{v}");
        assert_eq!(v["svc:thing:read"]["decisions"][1]["message"], resource_off);
    }
    let registered = |principal: &str| {
        let body = json!({"principal": principal, "action": "svc:thing:read",
            "resourceType": "thing", "tenantID": t});
        expect(
            &call_json(a, "POST", "/api/v1/evaluate/resources", Some(&body)),
            200,
        )
    };
    assert_eq!(registered(&on)["data"], json!([r_on]));
    let v = registered(&off);
    assert_eq!(v["count"], 0);
    assert_eq!(v["message"], principal_off);
    let sim = |principal: &str, resource: &str| {
        let body = json!({"principal": principal, "actions": ["svc:thing:read"],
            "resources": [resource], "add": [{"name": "more", "attachedTo": [principal],
            "statements": [{"effect": "allow", "actions": ["svc:*"], "resources": ["*"]}]}]});
        expect(
            &call_json(a, "POST", "/api/v1/evaluate/simulate", Some(&body)),
            200,
        )["data"]["results"][0]
            .clone()
    };
    let s = sim(&off, &r_on);
    assert_eq!(s["outcome"], "explicitDeny");
    assert_eq!(s["current"]["outcome"], "explicitDeny");
    assert_eq!(s["message"], principal_off);
    let s = sim(&on, &r_off);
    assert_eq!(s["outcome"], "explicitDeny");
    assert_eq!(s["message"], resource_off);
    assert_eq!(sim(&on, &r_on)["outcome"], "allow");

    // A replica that loads the tenant from the database agrees.
    {
        let other = fresh();
        let r = call_json(
            other.addr,
            "POST",
            "/api/v1/evaluate",
            Some(&json!({"principal": off, "action": "svc:thing:read", "resources": [r_on]})),
        );
        expect(&r, 403);
        assert!(message(&r).contains(&principal_off), "{}", message(&r));
        let r = call_json(
            other.addr,
            "POST",
            "/api/v1/evaluate",
            Some(&json!({"principal": on, "action": "svc:thing:read", "resources": [r_off]})),
        );
        expect(&r, 403);
        assert!(message(&r).contains(&resource_off), "{}", message(&r));
    }

    // Enabling and disabling take effect at once.
    let patch = |path: String, enabled: bool| {
        expect(
            &call_json(a, "PATCH", &path, Some(&json!({"enabled": enabled}))),
            200,
        );
    };
    patch(format!("/api/v1/users/{}", id(&off)), true);
    patch(format!("/api/v1/resources/{}", id(&r_off)), true);
    expect(&ask("/api/v1/evaluate", &off, &[&r_on, &r_off]), 200);
    patch(format!("/api/v1/users/{}", id(&on)), false);
    let r = ask("/api/v1/evaluate", &on, &[&r_on]);
    expect(&r, 403);
    assert!(message(&r).contains(&format!("the principal `{on}` is disabled")));
    patch(format!("/api/v1/resources/{}", id(&r_on)), false);
    let r = ask("/api/v1/evaluate", &off, &[&r_on]);
    expect(&r, 403);
    assert!(message(&r).contains(&format!("the resource `{r_on}` is disabled")));
    // A user deleted and created again is born enabled, whatever the old one was.
    expect(
        &call_json(a, "DELETE", &format!("/api/v1/users/{}", id(&on)), None),
        204,
    );
    user("on", None);
    expect(&ask("/api/v1/evaluate", &on, &[&r_off]), 200);
}

#[test]
fn sqlite_disabled_principals_and_resources() {
    let dir = support::TempDir::new();
    let storage = support::sqlite_settings(&dir);
    let svc = support::service::start_iam(&storage, "");
    disabled_entities(svc.addr, &|| support::service::start_iam(&storage, ""));
}

#[test]
fn postgres_disabled_principals_and_resources() {
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip("postgres_disabled_principals_and_resources");
    };
    let svc = support::service::start_iam(&pg.storage(), "");
    disabled_entities(svc.addr, &|| support::service::start_iam(&pg.storage(), ""));
}

/// The calls Kaa's own clients make (the web UI, the iamcore SDKs, downstream services), in
/// the shapes they read.
fn kaa_client_calls(a: SocketAddr) {
    let t = "t18";
    let post = |path: &str, body: Value| call_json(a, "POST", path, Some(&body));
    let get = |path: &str| call_json(a, "GET", path, None);

    // `/users/me/irn` is `/users/me/krn` under iamcore's name: security off, no IAM user.
    let r = get("/api/v1/users/me/irn");
    expect(&r, 404);
    assert!(message(&r).contains("not an IAM user"), "{}", message(&r));

    // Entities to filter, delete and decide on.
    for name in ["p1", "p2", "p3"] {
        expect(
            &post(
                "/api/v1/policies",
                json!({"name": name, "tenantID": t, "statements": [
                    {"effect": "allow", "actions": ["epr:endpoint:read"], "resources": [format!("krn:epr:{t}::endpoint/e1")]}]}),
            ),
            201,
        );
    }
    for name in ["ann", "ben"] {
        expect(
            &post(
                "/api/v1/users",
                json!({"username": name, "tenantID": t, "password": "pass-word-1",
                       "confirmPassword": "pass-word-1", "policyIDs": [raw_id(&format!("krn:iam:{t}::policy/p1"))]}),
            ),
            201,
        );
    }
    for name in ["g1", "g2"] {
        expect(
            &post("/api/v1/groups", json!({"name": name, "tenantID": t})),
            201,
        );
    }
    for name in ["e1", "e2"] {
        expect(
            &post(
                "/api/v1/resources",
                json!({"service": "epr", "resourceType": "endpoint", "name": name, "tenantID": t}),
            ),
            201,
        );
    }
    for name in ["pool1", "pool2"] {
        expect(
            &post("/api/v1/pools", json!({"name": name, "tenantID": t})),
            201,
        );
    }

    // List filters by exact KRN (`krn`, or iamcore's `irn`; the KRN or its id).
    for (collection, kind, name, other) in [
        ("users", "user", "ann", "ben"),
        ("groups", "group", "g1", "g2"),
        ("policies", "policy", "p2", "p1"),
        ("pools", "pool", "pool1", "pool2"),
    ] {
        let k = format!("krn:iam:{t}::{kind}/{name}");
        for (param, value) in [("krn", k.clone()), ("irn", k.clone()), ("irn", id(&k))] {
            let list = expect(
                &get(&format!(
                    "/api/v1/{collection}?tenantID={t}&{param}={value}"
                )),
                200,
            );
            assert_eq!(list["count"], 1, "{collection} {param}={value}: {list}");
            assert_eq!(list["data"][0]["krn"], k.as_str());
        }
        // Another entity of the same list is not it; one of another kind matches nothing.
        let list = expect(
            &get(&format!(
                "/api/v1/{collection}?tenantID={t}&krn=krn:iam:{t}::{kind}/{other}x"
            )),
            200,
        );
        assert_eq!(list["count"], 0, "{collection}: {list}");
        let list = expect(
            &get(&format!(
                "/api/v1/{collection}?tenantID={t}&krn=krn:epr:{t}::endpoint/e1"
            )),
            200,
        );
        assert_eq!(list["count"], 0, "{collection}: {list}");
        // Malformed or a pattern: 400 naming the value.
        for bad in ["krn:iam", "not-a-krn!", &format!("krn:iam:{t}::{kind}/*")] {
            let r = get(&format!("/api/v1/{collection}?tenantID={t}&krn={bad}"));
            expect(&r, 400);
            assert!(message(&r).contains(&format!("`{bad}`")), "{}", message(&r));
        }
    }
    let e1 = format!("krn:epr:{t}::endpoint/e1");
    let list = expect(
        &get(&format!("/api/v1/resources?tenantID={t}&irn={e1}")),
        200,
    );
    assert_eq!(
        (list["count"].as_u64(), list["data"][0]["krn"].as_str()),
        (Some(1), Some(e1.as_str()))
    );
    let r = get(&format!("/api/v1/resources?tenantID={t}&krn=krn:epr"));
    expect(&r, 400);

    // Bulk policy delete: all or nothing, 404 naming every missing id.
    let p = |n: &str| format!("krn:iam:{t}::policy/{n}");
    let count = |k: &str| {
        expect(&get(&format!("/api/v1/policies?tenantID={t}&krn={k}")), 200)["count"]
            .as_u64()
            .unwrap()
    };
    let r = post(
        &format!("/api/v1/policies/delete?tenantID={t}"),
        json!({"policyIDs": [raw_id(&p("p2")), raw_id(&p("ghost1")), raw_id(&p("ghost2"))]}),
    );
    expect_missing(&r, &p("ghost1"));
    expect_missing(&r, &p("ghost2"));
    assert_eq!(
        count(&p("p2")),
        1,
        "nothing is deleted when one id is missing"
    );
    let r = post("/api/v1/policies/delete", json!({}));
    expect(&r, 400);
    assert!(message(&r).contains("`policyIDs`"), "{}", message(&r));
    let r = post(
        "/api/v1/policies/delete",
        json!({"policyIDs": [raw_id(&format!("krn:iam:{t}::user/ann"))]}),
    );
    expect(&r, 400);
    // A resource's own policy goes with its resource: 409, and nothing else goes either.
    let res_policy =
        expect(&get(&format!("/api/v1/resources/{}/policy", id(&e1))), 200)["data"]["krn"]
            .as_str()
            .unwrap()
            .to_string();
    let r = post(
        &format!("/api/v1/policies/delete?tenantID={t}"),
        json!({"policyIDs": [raw_id(&p("p2")), raw_id(&res_policy)]}),
    );
    expect(&r, 409);
    assert_eq!(count(&p("p2")), 1);
    assert_eq!(count(&res_policy), 1);
    expect(
        &post(
            &format!("/api/v1/policies/delete?tenantID={t}"),
            json!({"policyIDs": [raw_id(&p("p2")), raw_id(&p("p3"))]}),
        ),
        204,
    );
    assert_eq!(
        (count(&p("p2")), count(&p("p3")), count(&p("p1"))),
        (0, 0, 1)
    );

    // `/resources/evaluate` decides on registered resources only; `/evaluate` on any KRN.
    let ann = format!("krn:iam:{t}::user/ann");
    let ghost = format!("krn:epr:{t}::endpoint/ghost");
    let body = json!({"principal": ann, "action": "epr:endpoint:read", "resources": [e1, ghost]});
    let r = post("/api/v1/resources/evaluate", body.clone());
    expect(&r, 404);
    assert!(message(&r).contains(&ghost), "{}", message(&r));
    assert!(!message(&r).contains(&format!("`{e1}`")), "{}", message(&r));
    let r = post(
        "/api/v1/resources/evaluate?filterResources=true",
        body.clone(),
    );
    expect(&r, 404);
    let r = post("/api/v1/evaluate?filterResources=true", body.clone());
    assert_eq!(expect(&r, 200), json!([e1]));
    let r = post(
        "/api/v1/resources/evaluate?filterResources=true",
        json!({"principal": ann, "action": "epr:endpoint:read",
               "resources": [e1, format!("krn:epr:{t}::endpoint/e2"), ann]}),
    );
    assert_eq!(expect(&r, 200), json!([e1]));
    let r = post(
        "/api/v1/resources/evaluate",
        json!({"principal": ann, "action": "epr:endpoint:read", "resources": [e1]}),
    );
    assert_eq!(expect(&r, 200), json!([e1]));
    // IAM's own entities count as registered when they exist.
    let r = post(
        "/api/v1/resources/evaluate?filterResources=true",
        json!({"principal": ann, "action": "iam:user:read",
               "resources": [format!("krn:iam:{t}::user/nobody")]}),
    );
    expect_missing(&r, &format!("krn:iam:{t}::user/nobody"));
    // A malformed KRN stays a 400.
    let r = post(
        "/api/v1/resources/evaluate",
        json!({"principal": ann, "action": "epr:endpoint:read", "resources": ["krn:epr"]}),
    );
    expect(&r, 400);

    // `keycloakIDAsUsername` without a Keycloak realm: the username is a fresh UUID, as a
    // Keycloak id would be; `email` is required and `username` may not be sent.
    let users = || {
        expect(&get(&format!("/api/v1/users?tenantID={t}")), 200)["count"]
            .as_u64()
            .unwrap()
    };
    let before = users();
    let by_id = |email: Option<&str>, username: Option<&str>| {
        let mut b = json!({"tenantID": t, "password": "pass-word-1", "confirmPassword": "pass-word-1",
                           "keycloakIDAsUsername": true, "path": "/org1"});
        if let Some(e) = email {
            b["email"] = json!(e);
        }
        if let Some(u) = username {
            b["username"] = json!(u);
        }
        post("/api/v1/users", b)
    };
    let mut names = Vec::new();
    for email in ["kc1@example.com", "kc2@example.com"] {
        let u = expect(&by_id(Some(email), None), 201)["data"].clone();
        let name = u["username"].as_str().unwrap().to_string();
        let hex: String = name.chars().filter(|c| *c != '-').collect();
        assert_eq!(
            (name.len(), hex.len(), &name[8..9], &name[14..15]),
            (36, 32, "-", "4"),
            "a UUID: {name}"
        );
        assert!(hex.chars().all(|c| c.is_ascii_hexdigit()), "{name}");
        assert_eq!(u["krn"], format!("krn:iam:{t}::user/org1/{name}"));
        assert_eq!(u["email"], email);
        assert!(u.get("authID").is_none(), "{u}");
        names.push(name);
    }
    assert_ne!(names[0], names[1]);
    let r = by_id(None, None);
    expect(&r, 400);
    assert!(
        r.json()["errors"]
            .to_string()
            .contains("`email` is required"),
        "{}",
        r.json()
    );
    let r = by_id(Some("kc3@example.com"), Some("chosen"));
    expect(&r, 400);
    assert!(
        r.json()["errors"]
            .to_string()
            .contains("`username` `chosen`"),
        "{}",
        r.json()
    );
    let r = post(
        "/api/v1/users",
        json!({"tenantID": t, "password": "pass-word-1", "confirmPassword": "pass-word-1",
               "email": "kc4@example.com", "keycloakIDAsUsername": false}),
    );
    expect(&r, 400);
    assert!(
        r.json()["errors"]
            .to_string()
            .contains("`username` is required"),
        "{}",
        r.json()
    );
    assert_eq!(
        users(),
        before + 2,
        "only the two good requests stored a user"
    );

    // `/evaluate/actions`: the default shape, and the Kaa UI's with `?shape=kaa`.
    let body = json!({"principal": ann, "actions": ["epr:endpoint:read", "epr:endpoint:delete"],
                      "resources": [e1, ghost]});
    let d = expect(&post("/api/v1/evaluate/actions", body.clone()), 200);
    assert_eq!(
        d["epr:endpoint:read"],
        json!({"allowed": [e1], "denied": [ghost]})
    );
    for path in ["/api/v1/evaluate/actions", "/api/v1/evaluate/irns/actions"] {
        let d = expect(&post(&format!("{path}?shape=kaa"), body.clone()), 200);
        assert_eq!(
            d,
            json!({"epr:endpoint:read": [e1], "epr:endpoint:delete": []}),
            "{path}"
        );
        assert_eq!(
            expect(&post(&format!("{path}?shape=design"), body.clone()), 200),
            expect(&post(path, body.clone()), 200)
        );
        let r = post(&format!("{path}?shape=ui"), body.clone());
        expect(&r, 400);
        assert!(message(&r).contains("`ui`"), "{}", message(&r));
        expect(
            &post(&format!("{path}?shape=kaa&explain=true"), body.clone()),
            400,
        );
    }
}

#[test]
fn sqlite_kaa_client_calls() {
    let dir = support::TempDir::new();
    let svc = support::service::start_iam(&support::sqlite_settings(&dir), CONFIG);
    kaa_client_calls(svc.addr);
}

#[test]
fn postgres_kaa_client_calls() {
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip("postgres_kaa_client_calls");
    };
    let svc = support::service::start_iam(&pg.storage(), CONFIG);
    kaa_client_calls(svc.addr);
}

/// The keys of an error body, sorted.
fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

/// What the connection layer and the router refuse comes in IAM's shape (`{"message"}`), as
/// the handlers' errors do.
#[test]
fn connection_layer_errors_come_in_iams_shape() {
    let dir = support::TempDir::new();
    let svc = support::service::start_iam(&support::sqlite_settings(&dir), CONFIG);
    let a = svc.addr;
    // A body over the 1 MiB limit: the server's 413.
    let big = vec![b' '; (1 << 20) + 1];
    let r = request(
        a,
        "POST",
        "/api/v1/users",
        &[("Content-Type", "application/json")],
        &big,
        CALL_TIMEOUT,
    )
    .unwrap();
    let e = expect(&r, 413);
    assert_eq!(keys(&e), ["message"], "{e}");
    assert_eq!(e["message"], "request body too large");
    // An unknown path: the router's 404; a known one with another method: 405 with Allow.
    let e = expect(&call_json(a, "GET", "/api/v1/nowhere", None), 404);
    assert_eq!(keys(&e), ["message"], "{e}");
    assert!(message_of(&e).contains("/api/v1/nowhere"), "{e}");
    let r = call_json(a, "DELETE", "/api/v1/evaluate", None);
    let e = expect(&r, 405);
    assert_eq!(keys(&e), ["message"], "{e}");
    assert!(r.header("allow").is_some_and(|v| v.contains("POST")));
    // A handler's 400 with its problems listed.
    let e = expect(
        &call_json(
            a,
            "POST",
            "/api/v1/groups",
            Some(&json!({"tenantID": "t1"})),
        ),
        400,
    );
    assert!(e["message"].is_string() && e.get("error").is_none(), "{e}");
}

fn message_of(e: &Value) -> &str {
    e["message"].as_str().unwrap_or("")
}

/// A stale version: 412 when `If-Match` names it (a failed precondition), 409 when the body's
/// `version` does (a conflict of state); either way nothing changes.
#[test]
fn stale_versions_are_412_under_if_match_and_409_in_the_body() {
    let dir = support::TempDir::new();
    let svc = support::service::start_iam(&support::sqlite_settings(&dir), CONFIG);
    let a = svc.addr;
    expect(
        &call_json(
            a,
            "POST",
            "/api/v1/groups",
            Some(&json!({"name": "ops", "tenantID": "t1"})),
        ),
        201,
    );
    let path = format!("/api/v1/groups/{}", id("krn:iam:t1::group/ops"));
    let patch = |headers: &[(&str, &str)], body: Value| {
        call_json_with(a, "PATCH", &path, None, headers, Some(&body), CALL_TIMEOUT).unwrap()
    };
    let r = patch(&[("If-Match", "\"1\"")], json!({"displayName": "Ops"}));
    assert_eq!(expect(&r, 200)["data"]["version"], 2);
    let e = expect(
        &patch(&[("If-Match", "\"1\"")], json!({"displayName": "x"})),
        412,
    );
    assert_eq!(keys(&e), ["message"], "{e}");
    let e = expect(&patch(&[], json!({"displayName": "x", "version": 1})), 409);
    assert_eq!(keys(&e), ["message"], "{e}");
    // Both sent and agreeing on a stale version: the header decides, 412.
    expect(
        &patch(
            &[("If-Match", "1")],
            json!({"displayName": "x", "version": 1}),
        ),
        412,
    );
    // Disagreeing: 400.
    expect(
        &patch(
            &[("If-Match", "2")],
            json!({"displayName": "x", "version": 1}),
        ),
        400,
    );
    let g = expect(&call_json(a, "GET", &path, None), 200);
    assert_eq!(g["data"]["version"], 2);
    assert_eq!(g["data"]["displayName"], "Ops");
}
