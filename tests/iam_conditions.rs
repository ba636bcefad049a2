//! Statement conditions and policy variables through the HTTP API, on SQLite and (when
//! `IAM_TEST_POSTGRES_URL` is set) PostgreSQL: policies with a `conditions` block and resources
//! with `${...}` variables are written, refused with a 400 naming the key and value when invalid,
//! read back as written, and decide `/evaluate` and its family with the request `context`, the
//! user's metadata and the registered resources' metadata, explained on request. A restarted
//! replica decides the same from the database.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;

use kaa::policy::Krn;
use serde_json::{Value, json};
use support::proc::{Resp, call_json};

const T: &str = "tcond";

fn raw_id(krn: &str) -> String {
    Krn::parse(krn).unwrap().to_id()
}

fn path_id(krn: &str) -> String {
    raw_id(krn)
        .replace('/', "%2F")
        .replace('+', "%2B")
        .replace('=', "%3D")
}

fn body(r: &Resp) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

fn expect(r: &Resp, status: u16) -> Value {
    assert_eq!(r.status, status, "body: {}", body(r));
    if r.body.is_empty() {
        Value::Null
    } else {
        r.json()
    }
}

fn post(a: SocketAddr, collection: &str, b: Value) -> Value {
    expect(
        &call_json(a, "POST", &format!("/api/v1/{collection}"), Some(&b)),
        201,
    )["data"]
        .clone()
}

const OP: &str = "krn:iam:tcond::user/op1";
const D1: &str = "krn:epr:tcond::device/d1";
const D2: &str = "krn:epr:tcond::device/d2";
const PLANT: &str = "10.20.1.5";
const MORNING: &str = "2026-12-07T09:00:00Z";

fn context(ip: &str, time: &str) -> Value {
    json!({"kaa:SourceIp": ip, "kaa:CurrentTime": time})
}

/// `/evaluate` of one action on one resource: true on 200, false on 403.
fn allowed(a: SocketAddr, principal: &str, action: &str, resource: &str, ctx: Value) -> bool {
    let r = call_json(
        a,
        "POST",
        "/api/v1/evaluate",
        Some(
            &json!({"principal": principal, "action": action, "resources": [resource],
                     "context": ctx}),
        ),
    );
    match r.status {
        200 => true,
        403 => false,
        s => panic!("evaluate answered {s}: {}", body(&r)),
    }
}

fn site_policy() -> Value {
    json!({"name": "site-operators", "tenantID": T, "statements": [{
        "effect": "allow",
        "actions": ["epr:device:read"],
        "resources": ["krn:epr:tcond::device/*"],
        "conditions": {
            "StringEquals": {"resource:metadata/site": "${iam:metadata/site}"},
            "NumericGreaterThanEquals": {"kaa:CurrentHour": 8},
            "NumericLessThan": {"kaa:CurrentHour": 18},
            "IpAddress": {"kaa:SourceIp": "10.20.0.0/16"}
        }
    }, {
        "effect": "deny",
        "actions": ["epr:device:*"],
        "resources": ["krn:epr:tcond::device/*"],
        "conditions": {"StringEquals": {"resource:metadata/state": "quarantined"}}
    }]})
}

fn setup(a: SocketAddr) {
    post(a, "policies", site_policy());
    post(
        a,
        "policies",
        json!({"name": "home", "tenantID": T, "statements": [{
            "effect": "allow", "actions": ["fs:file:*"],
            "resources": ["krn:fs:tcond::folder/${iam:username}/*"]}]}),
    );
    let policies = json!([
        raw_id("krn:iam:tcond::policy/site-operators"),
        raw_id("krn:iam:tcond::policy/home")
    ]);
    post(
        a,
        "users",
        json!({"username": "op1", "password": "op1-password", "confirmPassword": "op1-password",
               "tenantID": T, "metadata": {"site": "plant-a"}, "policyIDs": policies}),
    );
    for (name, site) in [("d1", "plant-a"), ("d2", "plant-b")] {
        post(
            a,
            "resources",
            json!({"service": "epr", "resourceType": "device", "name": name, "tenantID": T,
                   "metadata": {"site": site}}),
        );
    }
}

fn conditions_story(a: SocketAddr) {
    setup(a);
    let read = "epr:device:read";
    // Own site, working hours, plant network.
    assert!(allowed(a, OP, read, D1, context(PLANT, MORNING)));
    // Another site's device.
    assert!(!allowed(a, OP, read, D2, context(PLANT, MORNING)));
    // Outside working hours (the hour of the time's own offset).
    assert!(!allowed(
        a,
        OP,
        read,
        D1,
        context(PLANT, "2026-12-07T19:30:00Z")
    ));
    assert!(allowed(
        a,
        OP,
        read,
        D1,
        context(PLANT, "2026-12-07T12:00:00+09:00")
    ));
    // Another network, or no address at all: the condition fails.
    assert!(!allowed(a, OP, read, D1, context("192.168.1.5", MORNING)));
    assert!(!allowed(
        a,
        OP,
        read,
        D1,
        json!({"kaa:CurrentTime": MORNING})
    ));

    // Per-user folders through `${iam:username}`.
    assert!(allowed(
        a,
        OP,
        "fs:file:write",
        "krn:fs:tcond::folder/op1/notes.txt",
        json!({})
    ));
    assert!(!allowed(
        a,
        OP,
        "fs:file:write",
        "krn:fs:tcond::folder/op2/notes.txt",
        json!({})
    ));

    // The policy reads back as written.
    let got = expect(
        &call_json(
            a,
            "GET",
            &format!(
                "/api/v1/policies/{}",
                path_id("krn:iam:tcond::policy/site-operators")
            ),
            None,
        ),
        200,
    );
    let got = if got.get("data").is_some() {
        got["data"].clone()
    } else {
        got
    };
    assert_eq!(
        got["statements"][0]["conditions"],
        site_policy()["statements"][0]["conditions"]
    );

    // Explained: each condition with the values compared.
    let r = call_json(
        a,
        "POST",
        "/api/v1/evaluate?explain=true",
        Some(
            &json!({"principal": OP, "action": read, "resources": [D1, D2],
                     "context": context(PLANT, MORNING)}),
        ),
    );
    let v = expect(&r, 403);
    let d1 = &v["decisions"][0];
    assert_eq!(d1["outcome"], "allow");
    let checked = d1["checked"].as_array().unwrap();
    let allow = checked.iter().find(|c| c["statement"] == 0).unwrap();
    assert_eq!(allow["applied"], true);
    let site = allow["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["key"] == "resource:metadata/site")
        .unwrap();
    assert_eq!(
        site,
        &json!({"operator": "StringEquals", "key": "resource:metadata/site",
                "values": ["plant-a"], "actual": ["plant-a"], "held": true})
    );
    let deny = checked.iter().find(|c| c["statement"] == 1).unwrap();
    // A condition on a key the resource does not have fails: the deny is skipped.
    assert_eq!(deny["applied"], false);
    assert_eq!(deny["conditions"][0]["actual"], Value::Null);
    let d2 = &v["decisions"][1];
    assert_eq!(d2["outcome"], "implicitDeny");
    let failed = d2["checked"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["statement"] == 0)
        .unwrap();
    assert_eq!(failed["applied"], false);
    assert!(
        failed["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["key"] == "resource:metadata/site"
                && c["held"] == false
                && c["actual"] == json!(["plant-b"]))
    );

    // The family: actions, registered resources of a type, simulate.
    let v = expect(
        &call_json(
            a,
            "POST",
            "/api/v1/evaluate/actions",
            Some(
                &json!({"principal": OP, "actions": [read, "epr:device:delete"],
                         "resources": [D1, D2], "context": context(PLANT, MORNING)}),
            ),
        ),
        200,
    );
    assert_eq!(v[read]["allowed"], json!([D1]));
    assert_eq!(v["epr:device:delete"]["allowed"], json!([]));
    let v = expect(
        &call_json(
            a,
            "POST",
            "/api/v1/evaluate/resources",
            Some(
                &json!({"principal": OP, "action": read, "resourceType": "device",
                         "tenantID": T, "context": context(PLANT, MORNING)}),
            ),
        ),
        200,
    );
    assert_eq!(v["data"], json!([D1]), "{v}");
    let v = expect(
        &call_json(
            a,
            "POST",
            "/api/v1/evaluate/simulate",
            Some(
                &json!({"principal": OP, "actions": ["epr:device:update"], "resources": [D2],
                         "context": context(PLANT, MORNING),
                         "add": [{"name": "weekday-updates", "attachedTo": [OP], "statements": [{
                             "effect": "allow", "actions": ["epr:device:update"],
                             "resources": ["krn:epr:tcond::device/*"],
                             "conditions": {"NumericLessThanEquals": {"kaa:CurrentDayOfWeek": 5}}}]}]}),
            ),
        ),
        200,
    );
    let result = &v["data"]["results"][0];
    assert_eq!(result["outcome"], "allow", "{v}");
    assert_eq!(result["current"]["outcome"], "implicitDeny");
    assert_eq!(result["changed"], true);
    let sim = result["checked"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["policyID"] == "krn:iam:tcond::policy/weekday-updates")
        .unwrap();
    assert_eq!(
        sim["conditions"][0],
        json!({"operator": "NumericLessThanEquals", "key": "kaa:CurrentDayOfWeek",
               "values": ["5"], "actual": ["1"], "held": true})
    );

    // Metadata changes take effect at once: the user moves to plant-b, d1 is quarantined.
    expect(
        &call_json(
            a,
            "PATCH",
            &format!("/api/v1/users/{}", path_id(OP)),
            Some(&json!({"metadata": {"site": "plant-b"}})),
        ),
        200,
    );
    assert!(!allowed(a, OP, read, D1, context(PLANT, MORNING)));
    assert!(allowed(a, OP, read, D2, context(PLANT, MORNING)));
    expect(
        &call_json(
            a,
            "PATCH",
            &format!("/api/v1/resources/{}", path_id(D2)),
            Some(&json!({"metadata": {"site": "plant-b", "state": "quarantined"}})),
        ),
        200,
    );
    let r = call_json(
        a,
        "POST",
        "/api/v1/evaluate?explain=true",
        Some(&json!({"principal": OP, "action": read, "resources": [D2],
                     "context": context(PLANT, MORNING)})),
    );
    let v = expect(&r, 403);
    assert_eq!(v["decisions"][0]["outcome"], "explicitDeny");
    assert_eq!(
        v["decisions"][0]["reasons"],
        json!([{"policyID": "krn:iam:tcond::policy/site-operators", "statement": 1}])
    );
}

fn refusals(a: SocketAddr) {
    let cases = [
        (
            json!({"NumericLessThan": {"kaa:CurrentHour": "eight"}}),
            "statement 0: conditions: `NumericLessThan` on `kaa:CurrentHour`: value `eight` is not a number",
        ),
        (
            json!({"IpAddress": {"kaa:SourceIp": "10.0.0.0/40"}}),
            "statement 0: conditions: `IpAddress` on `kaa:SourceIp`: value `10.0.0.0/40` is not an IPv4 or IPv6 address or CIDR range",
        ),
        (
            json!({"StringEquals": {"kaa:SourceIP": "10.0.0.1"}}),
            "statement 0: conditions: `StringEquals` on `kaa:SourceIP`: unknown key `kaa:SourceIP`",
        ),
        (
            json!({"StringEqualz": {"site": "a"}}),
            "statement 0: conditions: unknown condition operator `StringEqualz`",
        ),
        (
            json!({"DateGreaterThan": {"kaa:CurrentTime": "yesterday"}}),
            "statement 0: conditions: `DateGreaterThan` on `kaa:CurrentTime`: value `yesterday` is not an RFC 3339 date-time or epoch seconds",
        ),
    ];
    for (conditions, message) in cases {
        let r = call_json(
            a,
            "POST",
            "/api/v1/policies",
            Some(&json!({"name": "bad", "tenantID": T, "statements": [{
                "effect": "allow", "actions": ["epr:device:read"], "resources": ["*"],
                "conditions": conditions}]})),
        );
        let v = expect(&r, 400);
        let text = v.to_string();
        assert!(text.contains(message), "{text} lacks {message}");
    }
    let r = call_json(
        a,
        "POST",
        "/api/v1/policies",
        Some(&json!({"name": "bad", "tenantID": T, "statements": [{
            "effect": "allow", "actions": ["fs:file:read"],
            "resources": ["krn:fs:tcond::folder/${iam:user}/*"]}]})),
    );
    let v = expect(&r, 400);
    assert!(
        v.to_string()
            .contains("resource `krn:fs:tcond::folder/${iam:user}/*`: variable `${iam:user}`: unknown key `iam:user`"),
        "{v}"
    );
    // Nothing was stored.
    let r = call_json(
        a,
        "GET",
        &format!("/api/v1/policies/{}", path_id("krn:iam:tcond::policy/bad")),
        None,
    );
    assert_eq!(r.status, 404, "{}", body(&r));

    // A bad context is a 400 naming the key.
    for (ctx, message) in [
        (
            json!({"kaa:SourceIp": "not-an-address"}),
            "`kaa:SourceIp` must be an IPv4 or IPv6 address, got `not-an-address`",
        ),
        (
            json!({"kaa:CurrentTime": "noon"}),
            "`kaa:CurrentTime` must be an RFC 3339 date-time or epoch seconds, got `noon`",
        ),
        (
            json!({"iam:username": "root"}),
            "context key `iam:username` is reserved",
        ),
        (
            json!({"site": {"nested": true}}),
            "context key `site`: a value is a string, a number, a boolean or a list",
        ),
    ] {
        let r = call_json(
            a,
            "POST",
            "/api/v1/evaluate",
            Some(
                &json!({"principal": OP, "action": "epr:device:read", "resources": [D1],
                         "context": ctx}),
            ),
        );
        let v = expect(&r, 400);
        assert!(v.to_string().contains(message), "{v} lacks {message}");
    }
}

fn survives_a_restart(settings: &kaa::config::StorageSettings) {
    let svc = support::service::start_iam(settings, "");
    let a = svc.addr;
    let read = "epr:device:read";
    assert!(!allowed(a, OP, read, D1, context(PLANT, MORNING)));
    assert!(!allowed(a, OP, read, D2, context(PLANT, MORNING)));
    expect(
        &call_json(
            a,
            "PATCH",
            &format!("/api/v1/resources/{}", path_id(D2)),
            Some(&json!({"metadata": {"site": "plant-b"}})),
        ),
        200,
    );
    drop(svc);
    let svc = support::service::start_iam(settings, "");
    assert!(allowed(svc.addr, OP, read, D2, context(PLANT, MORNING)));
    assert!(!allowed(svc.addr, OP, read, D1, context(PLANT, MORNING)));
}

#[test]
fn sqlite_conditions() {
    let dir = support::TempDir::new();
    let settings = support::sqlite_settings(&dir);
    let svc = support::service::start_iam(&settings, "");
    conditions_story(svc.addr);
    refusals(svc.addr);
    drop(svc);
    survives_a_restart(&settings);
}

#[test]
fn postgres_conditions() {
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip("postgres_conditions");
    };
    let svc = support::service::start_iam(&pg.storage(), "");
    conditions_story(svc.addr);
    refusals(svc.addr);
    drop(svc);
    survives_a_restart(&pg.storage());
}
