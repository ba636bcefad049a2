//! The audit trail and the policy history over HTTP, on SQLite and (with
//! `IAM_TEST_POSTGRES_URL`) PostgreSQL: every write endpoint leaves exactly one audit record per
//! entity it changes, with the versions before and after and the changed fields; a write that
//! fails leaves none; each tenant's trail holds its own changes; the cursor pages through it;
//! policies keep their versions and a restore writes a new version equal to an old one; the
//! retention prunes; with security on, the record names the caller, the request and the source.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;

use serde_json::{Value, json};
use support::proc::{Resp, call_json, call_json_with};
use support::{path_id, raw_id};

const T: &str = "taudit";
const OTHER: &str = "taudit2";

fn krn(kind: &str, name: &str) -> String {
    format!("krn:iam:{T}::{kind}/{name}")
}

fn expect(r: &Resp, status: u16, what: &str) -> Value {
    assert_eq!(
        r.status,
        status,
        "{what}: {}",
        String::from_utf8_lossy(&r.body)
    );
    if r.body.is_empty() {
        Value::Null
    } else {
        r.json()
    }
}

/// The whole trail of `tenant`, newest first, read page by page (`size` a page).
fn trail(a: SocketAddr, tenant: &str, filter: &str, size: u32) -> Vec<Value> {
    let mut out = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/audit?tenantID={tenant}&pageSize={size}{filter}");
        if let Some(n) = &next {
            path.push_str(&format!("&next={n}"));
        }
        let page = expect(&call_json(a, "GET", &path, None), 200, &path);
        let rows = page["data"].as_array().unwrap().clone();
        assert!(rows.len() <= size as usize);
        out.extend(rows);
        match page["next"].as_str() {
            Some(n) => next = Some(n.to_string()),
            None => return out,
        }
    }
}

/// Make one write and return the records it added to the trail of `T` (oldest first).
fn write(a: SocketAddr, method: &str, path: &str, body: Value, status: u16) -> (Value, Vec<Value>) {
    let before = trail(a, T, "", 100).len();
    let out = expect(
        &call_json(a, method, path, (!body.is_null()).then_some(&body)),
        status,
        &format!("{method} {path}"),
    );
    let after = trail(a, T, "", 100);
    let mut added: Vec<Value> = after[..after.len() - before].to_vec();
    added.reverse();
    (out, added)
}

/// One write that must leave exactly one record: checks its action, entity and versions.
fn one(
    a: SocketAddr,
    (method, path, body, status): (&str, &str, Value, u16),
    action: &str,
    entity: &str,
    versions: (Option<i64>, Option<i64>),
) -> Value {
    let (_, added) = write(a, method, path, body, status);
    assert_eq!(added.len(), 1, "{method} {path}: {added:?}");
    let r = added[0].clone();
    assert_eq!(r["action"], json!(action), "{method} {path}: {r}");
    assert_eq!(r["entity"], json!(entity), "{method} {path}: {r}");
    assert_eq!(r["entityID"], json!(raw_id(entity)));
    assert_eq!(r["tenantID"], json!(T));
    assert_eq!(
        r["versionBefore"],
        json!(versions.0),
        "{method} {path}: {r}"
    );
    assert_eq!(r["versionAfter"], json!(versions.1), "{method} {path}: {r}");
    assert_eq!(r["principal"], json!("anonymous"), "security is off: {r}");
    assert!(r["time"].as_str().unwrap().ends_with('Z'));
    r
}

/// A write that fails: nothing in the trail.
fn refused(a: SocketAddr, method: &str, path: &str, body: Value, status: u16) {
    let (_, added) = write(a, method, path, body, status);
    assert!(
        added.is_empty(),
        "{method} {path} failed yet left {added:?}"
    );
}

fn fields(r: &Value) -> Vec<String> {
    r["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect()
}

fn every_write_is_recorded(a: SocketAddr) {
    let (pool, readers, bob, carol, ops) = (
        krn("pool", "dev"),
        krn("policy", "readers"),
        krn("user", "bob"),
        krn("user", "carol"),
        krn("group", "ops"),
    );
    let statements = |action: &str| json!([{"effect": "allow", "actions": [action], "resources": [format!("krn:svc:{T}::thing/*")]}]);

    // Pools.
    one(
        a,
        (
            "POST",
            "/api/v1/pools",
            json!({"name": "dev", "tenantID": T}),
            201,
        ),
        "iam:pool:create",
        &pool,
        (None, Some(1)),
    );
    let r = one(
        a,
        (
            "PATCH",
            &format!("/api/v1/pools/{}", path_id(&pool)),
            json!({"description": "developers"}),
            200,
        ),
        "iam:pool:update",
        &pool,
        (Some(1), Some(2)),
    );
    assert_eq!(fields(&r), ["description"]);

    // Policies.
    let r = one(
        a,
        (
            "POST",
            "/api/v1/policies",
            json!({"name": "readers", "tenantID": T, "statements": statements("svc:thing:read")}),
            201,
        ),
        "iam:policy:create",
        &readers,
        (None, Some(1)),
    );
    assert!(fields(&r).contains(&"statements".to_string()));
    let r = one(
        a,
        (
            "PUT",
            &format!("/api/v1/policies/{}", path_id(&readers)),
            json!({"statements": statements("svc:thing:write")}),
            200,
        ),
        "iam:policy:update",
        &readers,
        (Some(1), Some(2)),
    );
    assert_eq!(fields(&r), ["statements"]);
    // A replace naming a stale version in its body fails with 409: nothing recorded.
    refused(
        a,
        "PUT",
        &format!("/api/v1/policies/{}", path_id(&readers)),
        json!({"statements": statements("svc:thing:read"), "version": 1}),
        409,
    );
    refused(
        a,
        "POST",
        "/api/v1/policies",
        json!({"name": "readers", "tenantID": T, "statements": statements("svc:thing:read")}),
        409,
    );

    // Users: the password is named as set, never shown.
    let r = one(
        a,
        (
            "POST",
            "/api/v1/users",
            json!({"username": "bob", "password": "pw-bob-secret-1", "confirmPassword": "pw-bob-secret-1", "tenantID": T}),
            201,
        ),
        "iam:user:create",
        &bob,
        (None, Some(1)),
    );
    assert!(fields(&r).contains(&"password".to_string()), "{r}");
    one(
        a,
        (
            "POST",
            "/api/v1/users",
            json!({"username": "carol", "password": "pw-carol-1x", "confirmPassword": "pw-carol-1x", "tenantID": T}),
            201,
        ),
        "iam:user:create",
        &carol,
        (None, Some(1)),
    );
    let r = one(
        a,
        (
            "PATCH",
            &format!("/api/v1/users/{}", path_id(&bob)),
            json!({"email": "bob@example.com"}),
            200,
        ),
        "iam:user:update",
        &bob,
        (Some(1), Some(2)),
    );
    assert_eq!(fields(&r), ["email"]);
    refused(
        a,
        "PATCH",
        &format!("/api/v1/users/{}", path_id(&bob)),
        json!({"email": "not-an-email"}),
        400,
    );
    refused(
        a,
        "PATCH",
        &format!("/api/v1/users/{}", path_id(&krn("user", "ghost"))),
        json!({"email": "g@example.com"}),
        404,
    );
    // Who gave Bob access: the attach names bob and the policy.
    let r = one(
        a,
        (
            "PUT",
            &format!("/api/v1/users/{}/policies/attach", path_id(&bob)),
            json!({"policyIDs": [raw_id(&readers)]}),
            204,
        ),
        "iam:policy:user:attach",
        &bob,
        (None, None),
    );
    assert_eq!(r["detail"]["policyIDs"], json!([readers]));
    refused(
        a,
        "PUT",
        &format!("/api/v1/users/{}/policies/attach", path_id(&bob)),
        json!({"policyIDs": [raw_id(&krn("policy", "ghost"))]}),
        404,
    );
    one(
        a,
        (
            "POST",
            &format!("/api/v1/users/{}/policies/detach", path_id(&bob)),
            json!({"policyIDs": [raw_id(&readers)]}),
            204,
        ),
        "iam:policy:user:detach",
        &bob,
        (None, None),
    );

    // Groups and members.
    one(
        a,
        (
            "POST",
            "/api/v1/groups",
            json!({"name": "ops", "tenantID": T}),
            201,
        ),
        "iam:group:create",
        &ops,
        (None, Some(1)),
    );
    let r = one(
        a,
        (
            "PATCH",
            &format!("/api/v1/groups/{}", path_id(&ops)),
            json!({"displayName": "Operations"}),
            200,
        ),
        "iam:group:update",
        &ops,
        (Some(1), Some(2)),
    );
    assert_eq!(fields(&r), ["displayName"]);
    let r = one(
        a,
        (
            "POST",
            &format!("/api/v1/groups/{}/members/add", path_id(&ops)),
            json!({"userIDs": [raw_id(&carol)]}),
            204,
        ),
        "iam:group:user:add",
        &ops,
        (None, None),
    );
    assert_eq!(r["detail"]["userIDs"], json!([carol]));
    one(
        a,
        (
            "POST",
            &format!("/api/v1/groups/{}/members/remove", path_id(&ops)),
            json!({"userIDs": [raw_id(&carol)]}),
            204,
        ),
        "iam:group:user:remove",
        &ops,
        (None, None),
    );
    let r = one(
        a,
        (
            "POST",
            &format!("/api/v1/users/{}/groups/add", path_id(&bob)),
            json!({"groupIDs": [raw_id(&ops)]}),
            204,
        ),
        "iam:group:user:add",
        &bob,
        (None, None),
    );
    assert_eq!(r["detail"]["groupIDs"], json!([ops]));
    one(
        a,
        (
            "PUT",
            &format!("/api/v1/groups/{}/policies/attach", path_id(&ops)),
            json!({"policyIDs": [raw_id(&readers)]}),
            204,
        ),
        "iam:policy:group:attach",
        &ops,
        (None, None),
    );

    // Resources, their resource-based policies, pool members.
    let (created, added) = write(
        a,
        "POST",
        "/api/v1/resources",
        json!({"service": "svc", "resourceType": "thing", "name": "t1", "tenantID": T}),
        201,
    );
    let thing = created["data"]["krn"].as_str().unwrap().to_string();
    assert_eq!(added.len(), 1);
    assert_eq!(added[0]["action"], "iam:resource:create");
    assert_eq!(added[0]["entity"], json!(thing));
    assert_eq!(added[0]["versionAfter"], 1);
    one(
        a,
        (
            "PATCH",
            &format!("/api/v1/resources/{}", path_id(&thing)),
            json!({"displayName": "Thing one"}),
            200,
        ),
        "iam:resource:update",
        &thing,
        (Some(1), Some(2)),
    );
    let (put, added) = write(
        a,
        "PUT",
        &format!("/api/v1/resources/{}/policy", path_id(&thing)),
        json!({"statements": [{"effect": "allow", "actions": ["svc:thing:read"], "resources": [thing], "principals": [bob]}]}),
        200,
    );
    let resource_policy = put["data"]["krn"].as_str().unwrap().to_string();
    assert_eq!(added.len(), 1, "{added:?}");
    assert_eq!(added[0]["action"], "iam:resource:policy:update");
    assert_eq!(added[0]["entity"], json!(resource_policy));
    assert_eq!(
        (
            added[0]["versionBefore"].clone(),
            added[0]["versionAfter"].clone()
        ),
        (Value::Null, json!(1))
    );
    one(
        a,
        (
            "PUT",
            &format!("/api/v1/resources/{}/policy", path_id(&thing)),
            json!({"statements": [{"effect": "allow", "actions": ["svc:thing:*"], "resources": [thing], "principals": [bob]}]}),
            200,
        ),
        "iam:resource:policy:update",
        &resource_policy,
        (Some(1), Some(2)),
    );
    one(
        a,
        (
            "POST",
            &format!("/api/v1/pools/{}/resources/add", path_id(&pool)),
            json!({"resourceIDs": [raw_id(&thing)]}),
            204,
        ),
        "iam:pool:resource:add",
        &pool,
        (None, None),
    );
    one(
        a,
        (
            "POST",
            &format!("/api/v1/pools/{}/resources/remove", path_id(&pool)),
            json!({"resourceIDs": [raw_id(&thing)]}),
            204,
        ),
        "iam:pool:resource:remove",
        &pool,
        (None, None),
    );
    one(
        a,
        (
            "PUT",
            &format!("/api/v1/pools/{}/policies/attach", path_id(&pool)),
            json!({"policyIDs": [raw_id(&readers)]}),
            204,
        ),
        "iam:policy:pool:attach",
        &pool,
        (None, None),
    );
    one(
        a,
        (
            "POST",
            &format!("/api/v1/pools/{}/policies/detach", path_id(&pool)),
            json!({"policyIDs": [raw_id(&readers)]}),
            204,
        ),
        "iam:policy:pool:detach",
        &pool,
        (None, None),
    );

    // Deletes: the version the entity had, none after.
    one(
        a,
        (
            "DELETE",
            &format!("/api/v1/resources/{}", path_id(&thing)),
            Value::Null,
            204,
        ),
        "iam:resource:delete",
        &thing,
        (Some(2), None),
    );
    refused(
        a,
        "DELETE",
        &format!("/api/v1/resources/{}", path_id(&thing)),
        Value::Null,
        404,
    );
    one(
        a,
        (
            "DELETE",
            &format!("/api/v1/groups/{}", path_id(&ops)),
            Value::Null,
            204,
        ),
        "iam:group:delete",
        &ops,
        (Some(2), None),
    );
    one(
        a,
        (
            "DELETE",
            &format!("/api/v1/pools/{}", path_id(&pool)),
            Value::Null,
            204,
        ),
        "iam:pool:delete",
        &pool,
        (Some(2), None),
    );
    // A bulk delete: one record per entity; one that names a missing user deletes nothing.
    refused(
        a,
        "POST",
        &format!("/api/v1/users/delete?tenantID={T}"),
        json!({"userIDs": [raw_id(&bob), raw_id(&krn("user", "ghost"))]}),
        404,
    );
    let (_, added) = write(
        a,
        "POST",
        &format!("/api/v1/users/delete?tenantID={T}"),
        json!({"userIDs": [raw_id(&bob), raw_id(&carol)]}),
        204,
    );
    let summary: Vec<(Value, Value, Value)> = added
        .iter()
        .map(|r| {
            (
                r["action"].clone(),
                r["entity"].clone(),
                r["versionBefore"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (json!("iam:user:delete"), json!(bob), json!(2)),
            (json!("iam:user:delete"), json!(carol), json!(1)),
        ]
    );
    one(
        a,
        (
            "DELETE",
            &format!("/api/v1/policies/{}", path_id(&readers)),
            Value::Null,
            204,
        ),
        "iam:policy:delete",
        &readers,
        (Some(2), None),
    );

    // No secret anywhere in the trail.
    let text = Value::from(trail(a, T, "", 100)).to_string();
    assert!(
        !text.contains("pw-bob-secret-1") && !text.contains("argon2"),
        "{text}"
    );
}

/// Filters, cursor paging and bad parameters.
fn filters_and_paging(a: SocketAddr) {
    let all = trail(a, T, "", 100);
    // Pages of 3 give the same rows in the same order as one page of 100.
    assert_eq!(trail(a, T, "", 3), all);
    let ids: Vec<&Value> = all.iter().map(|r| &r["time"]).collect();
    assert!(
        ids.windows(2).all(|w| w[0].as_str() >= w[1].as_str()),
        "newest first"
    );
    let bob = krn("user", "bob");
    let of_bob = trail(a, T, &format!("&entity={}", path_id(&bob)), 2);
    assert!(of_bob.len() >= 5, "{of_bob:?}");
    assert!(of_bob.iter().all(|r| r["entity"] == json!(bob)));
    let by_krn = trail(a, T, &format!("&entity={bob}"), 100);
    assert_eq!(by_krn, of_bob);
    let attaches = trail(a, T, "&action=iam:policy:user:attach", 100);
    assert_eq!(attaches.len(), 1);
    assert_eq!(trail(a, T, "&principal=anonymous", 100), all);
    assert!(trail(a, T, "&principal=krn:iam:x::user/nobody", 100).is_empty());
    assert_eq!(trail(a, T, "&from=2000-01-01&to=2999-01-01", 100), all);
    assert!(trail(a, T, "&to=2000-01-01", 100).is_empty());
    assert!(trail(a, T, "&from=2999-01-01T00:00:00Z", 100).is_empty());
    for (query, word) in [
        ("next=garbage", "`next`"),
        ("from=yesterday", "`from`"),
        ("from=2026-12-08&to=2026-12-07", "`from`"),
        ("pageSize=0", "`pageSize`"),
        ("entity=krn:iam:x::user/*", "`entity`"),
    ] {
        let path = format!("/api/v1/audit?tenantID={T}&{query}");
        let r = expect(&call_json(a, "GET", &path, None), 400, &path);
        assert!(
            r["message"].as_str().unwrap().contains(word),
            "{query}: {r}"
        );
    }
}

/// Each tenant's trail holds its own changes only.
fn tenants_see_their_own(a: SocketAddr) {
    let mine_before = trail(a, T, "", 100).len();
    expect(
        &call_json(
            a,
            "POST",
            "/api/v1/pools",
            Some(&json!({"name": "elsewhere", "tenantID": OTHER})),
        ),
        201,
        "pool in the other tenant",
    );
    let theirs = trail(a, OTHER, "", 100);
    assert_eq!(theirs.len(), 1, "{theirs:?}");
    assert_eq!(theirs[0]["tenantID"], json!(OTHER));
    assert_eq!(
        theirs[0]["entity"],
        json!(format!("krn:iam:{OTHER}::pool/elsewhere"))
    );
    assert_eq!(trail(a, T, "", 100).len(), mine_before);
    assert!(
        trail(
            a,
            T,
            &format!("&entity=krn:iam:{OTHER}::pool/elsewhere"),
            100
        )
        .is_empty()
    );
}

/// Versions of a policy, one of them read, an old one restored as a new version.
fn history_and_restore(a: SocketAddr) {
    let p = krn("policy", "history");
    let st = |action: &str| json!([{"effect": "allow", "actions": [action], "resources": [format!("krn:svc:{T}::thing/*")]}]);
    let first = expect(
        &call_json(
            a,
            "POST",
            "/api/v1/policies",
            Some(&json!({"name": "history", "tenantID": T, "description": "first", "statements": st("svc:thing:read")})),
        ),
        201,
        "create",
    )["data"]["statements"]
        .clone();
    for (desc, action) in [("second", "svc:thing:write"), ("third", "svc:thing:delete")] {
        expect(
            &call_json(
                a,
                "PUT",
                &format!("/api/v1/policies/{}", path_id(&p)),
                Some(&json!({"description": desc, "statements": st(action)})),
            ),
            200,
            "replace",
        );
    }
    let versions = expect(
        &call_json(
            a,
            "GET",
            &format!("/api/v1/policies/{}/versions", path_id(&p)),
            None,
        ),
        200,
        "versions",
    )["data"]
        .clone();
    let listed: Vec<(i64, String)> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_i64().unwrap(),
                v["description"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (3, "third".into()),
            (2, "second".into()),
            (1, "first".into())
        ]
    );
    let v1 = expect(
        &call_json(
            a,
            "GET",
            &format!("/api/v1/policies/{}/versions/1", path_id(&p)),
            None,
        ),
        200,
        "version 1",
    )["data"]
        .clone();
    assert_eq!(v1["statements"], first);
    assert_eq!(v1["principal"], "anonymous");
    for (n, status) in [("9", 404), ("0", 400), ("x", 400)] {
        let path = format!("/api/v1/policies/{}/versions/{n}", path_id(&p));
        expect(&call_json(a, "GET", &path, None), status, &path);
    }

    // Restore version 1 while the policy is at 3, expecting 2: refused, nothing written.
    let restore = format!("/api/v1/policies/{}/versions/1/restore", path_id(&p));
    refused(a, "POST", &restore, json!({"version": 2}), 409);
    let (out, added) = write(a, "POST", &restore, json!({"version": 3}), 200);
    assert_eq!(out["data"]["version"], 4);
    assert_eq!(out["data"]["description"], "first");
    assert_eq!(out["data"]["statements"], first);
    assert_eq!(added.len(), 1);
    assert_eq!(added[0]["action"], "iam:policy:update");
    assert_eq!(
        (
            added[0]["versionBefore"].clone(),
            added[0]["versionAfter"].clone()
        ),
        (json!(3), json!(4))
    );
    // The restored content is in force: GET shows it, the history has version 4.
    let now = expect(
        &call_json(a, "GET", &format!("/api/v1/policies/{}", path_id(&p)), None),
        200,
        "get",
    )["data"]
        .clone();
    assert_eq!(now["statements"], first);
    let v4 = expect(
        &call_json(
            a,
            "GET",
            &format!("/api/v1/policies/{}/versions/4", path_id(&p)),
            None,
        ),
        200,
        "version 4",
    )["data"]
        .clone();
    assert_eq!(v4["statements"], v1["statements"]);

    // A deleted policy keeps its history; restoring it is a 404 (create it again instead).
    expect(
        &call_json(
            a,
            "DELETE",
            &format!("/api/v1/policies/{}", path_id(&p)),
            None,
        ),
        204,
        "delete",
    );
    let kept = expect(
        &call_json(
            a,
            "GET",
            &format!("/api/v1/policies/{}/versions", path_id(&p)),
            None,
        ),
        200,
        "versions after delete",
    );
    assert_eq!(kept["data"].as_array().unwrap().len(), 4);
    refused(a, "POST", &restore, Value::Null, 404);
    // A policy made again under the same name starts a history of its own.
    expect(
        &call_json(
            a,
            "POST",
            "/api/v1/policies",
            Some(
                &json!({"name": "history", "tenantID": T, "description": "again", "statements": st("svc:thing:list")}),
            ),
        ),
        201,
        "create again",
    );
    let again = expect(
        &call_json(
            a,
            "GET",
            &format!("/api/v1/policies/{}/versions", path_id(&p)),
            None,
        ),
        200,
        "versions after the new create",
    );
    assert_eq!(again["data"].as_array().unwrap().len(), 1);
    assert_eq!(again["data"][0]["description"], "again");
    let never = krn("policy", "never");
    expect(
        &call_json(
            a,
            "GET",
            &format!("/api/v1/policies/{}/versions", path_id(&never)),
            None,
        ),
        404,
        "versions of a policy that never was",
    );
}

/// The resource policy's history restores through its resource.
fn resource_policy_restore(a: SocketAddr) {
    let created = expect(
        &call_json(
            a,
            "POST",
            "/api/v1/resources",
            Some(&json!({"service": "svc", "resourceType": "thing", "name": "t2", "tenantID": T})),
        ),
        201,
        "resource",
    );
    let thing = created["data"]["krn"].as_str().unwrap().to_string();
    let st = |action: &str| json!([{"effect": "allow", "actions": [action], "resources": [thing.clone()], "principals": [krn("user", "x")]}]);
    let mut policy = String::new();
    let mut written = Vec::new();
    for action in ["svc:thing:read", "svc:thing:write"] {
        let r = expect(
            &call_json(
                a,
                "PUT",
                &format!("/api/v1/resources/{}/policy", path_id(&thing)),
                Some(&json!({"statements": st(action)})),
            ),
            200,
            "resource policy",
        );
        policy = r["data"]["krn"].as_str().unwrap().to_string();
        written.push(r["data"]["statements"].clone());
    }
    let (out, added) = write(
        a,
        "POST",
        &format!("/api/v1/policies/{}/versions/1/restore", path_id(&policy)),
        Value::Null,
        200,
    );
    assert_eq!(out["data"]["version"], 3);
    assert_eq!(out["data"]["statements"], written[0]);
    assert_ne!(written[0], written[1]);
    assert_eq!(added.len(), 1);
    assert_eq!(added[0]["action"], "iam:resource:policy:update");
}

fn story(a: SocketAddr) {
    every_write_is_recorded(a);
    filters_and_paging(a);
    tenants_see_their_own(a);
    history_and_restore(a);
    resource_policy_restore(a);
}

#[test]
fn sqlite_audit_trail() {
    let dir = support::TempDir::new();
    let svc = support::service::start_iam(&support::sqlite_settings(&dir), "");
    story(svc.addr);
}

#[test]
fn postgres_audit_trail() {
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip("postgres_audit_trail");
    };
    let svc = support::service::start_iam(&pg.storage(), "");
    story(svc.addr);
}

/// The retention by rows: the pruning keeps each tenant's newest rows.
fn retention_prunes(settings: &kaa::config::StorageSettings) {
    let svc = support::service::start_iam(
        settings,
        "iam:\n  audit:\n    retention-rows: 3\n    prune-interval: 1\n",
    );
    let a = svc.addr;
    for i in 0..6 {
        expect(
            &call_json(
                a,
                "POST",
                "/api/v1/pools",
                Some(&json!({"name": format!("p{i}"), "tenantID": T})),
            ),
            201,
            "pool",
        );
    }
    support::wait_until("the trail is pruned to 3 rows", || {
        trail(a, T, "", 100).len() == 3
    });
    let kept: Vec<Value> = trail(a, T, "", 100)
        .iter()
        .map(|r| r["entity"].clone())
        .collect();
    assert_eq!(
        kept,
        [
            json!(krn("pool", "p5")),
            json!(krn("pool", "p4")),
            json!(krn("pool", "p3"))
        ]
    );
    assert!(support::metric(a, "iam_audit_rows_pruned_total").unwrap() >= 3);
}

#[test]
fn sqlite_retention() {
    let dir = support::TempDir::new();
    retention_prunes(&support::sqlite_settings(&dir));
}

#[test]
fn postgres_retention() {
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip("postgres_retention");
    };
    retention_prunes(&pg.storage());
}

/// With security on: the record names the caller's principal, its token subject and tenant,
/// the request id it sent and the source address; reading the trail needs `iam:audit:read`.
#[test]
fn secured_records_name_the_caller_and_reading_needs_its_right() {
    use support::keycloak::{Keycloak, Mint};
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
    let call = |token: &str, method: &str, path: &str, body: Option<&Value>, id: &str| {
        call_json_with(
            a,
            method,
            path,
            Some(token),
            &[("X-Request-Id", id)],
            body,
            std::time::Duration::from_secs(10),
        )
        .unwrap()
    };
    let r = call(
        &admin,
        "POST",
        "/api/v1/pools",
        Some(&json!({"name": "audited"})),
        "req-audit-1",
    );
    expect(&r, 201, "pool");
    let page = expect(
        &call(&admin, "GET", "/api/v1/audit", None, "req-2"),
        200,
        "audit",
    );
    let rows = page["data"].as_array().unwrap();
    let row = rows
        .iter()
        .find(|r| r["entity"] == "krn:iam:kaa::pool/audited")
        .unwrap_or_else(|| panic!("{page}"));
    assert_eq!(row["principal"], "krn:iam:kaa::user/admin");
    assert_eq!(row["subject"], json!(support::jwt_payload(&admin)["sub"]));
    assert_eq!(row["callerTenantID"], "kaa");
    assert_eq!(row["requestID"], "req-audit-1");
    assert!(
        row["source"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{row}"
    );

    // Bob may not read the trail until a policy lets him.
    let r = call(&bob, "GET", "/api/v1/audit", None, "req-3");
    expect(&r, 403, "bob reads the trail");
    let r = call(
        &admin,
        "POST",
        "/api/v1/policies",
        Some(
            &json!({"name": "auditors", "statements": [{"effect": "allow",
            "actions": ["iam:audit:read"], "resources": ["krn:iam:kaa::audit/*"],
            "principals": ["krn:iam:kaa::user/bob"]}]}),
        ),
        "req-4",
    );
    expect(&r, 201, "auditors");
    let page = expect(
        &call(
            &bob,
            "GET",
            "/api/v1/audit?action=iam:policy:create",
            None,
            "req-5",
        ),
        200,
        "bob reads",
    );
    assert_eq!(page["data"][0]["entity"], "krn:iam:kaa::policy/auditors");
    assert_eq!(page["data"][0]["requestID"], "req-4");
}
