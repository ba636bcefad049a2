//! What IAM's bulk deletes, pool policy detach and the multi-resource evaluations change and
//! decide, read back afterwards through the API (not only their statuses): the entities gone are
//! 404, their memberships and attachments are gone with them, and `/evaluate` decides by what is
//! left. The same on SQLite and (with `IAM_TEST_POSTGRES_URL`) PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use serde_json::{Value, json};
use support::proc::{Resp, call_json};
use support::{expect, path_id as id, raw_id};

const T: &str = "fx";

/// Path id of a KRN: base64, percent-encoded.
fn user(name: &str) -> String {
    format!("krn:iam:{T}::user/{name}")
}

fn group(name: &str) -> String {
    format!("krn:iam:{T}::group/{name}")
}

fn policy(name: &str) -> String {
    format!("krn:iam:{T}::policy/{name}")
}

fn endpoint(name: &str) -> String {
    format!("krn:epr:{T}::endpoint/{name}")
}

fn pool(name: &str) -> String {
    format!("krn:iam:{T}::pool/{name}")
}

struct Api(SocketAddr);

impl Api {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        call_json(self.0, method, path, body.as_ref())
    }

    fn ok(&self, method: &str, path: &str, body: Option<Value>, status: u16) -> Value {
        expect(&self.call(method, path, body), status)
    }

    fn status(&self, path: &str) -> u16 {
        self.call("GET", path, None).status
    }

    /// The KRNs of a listing's `data`.
    fn krns(&self, path: &str) -> BTreeSet<String> {
        self.ok("GET", path, None, 200)["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["krn"].as_str().unwrap().to_string())
            .collect()
    }

    /// `/evaluate` for one resource: allowed (200) or denied (403).
    fn allowed(&self, principal: &str, action: &str, resource: &str) -> bool {
        let r = self.call(
            "POST",
            "/api/v1/evaluate",
            Some(json!({"principal": principal, "action": action, "resources": [resource]})),
        );
        assert!(
            r.status == 200 || r.status == 403,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        r.status == 200
    }

    fn make_user(&self, name: &str) {
        self.ok(
            "POST",
            "/api/v1/users",
            Some(json!({"username": name, "tenantID": T,
                "password": "pass-word-1", "confirmPassword": "pass-word-1"})),
            201,
        );
    }

    fn make_group(&self, name: &str) {
        self.ok(
            "POST",
            "/api/v1/groups",
            Some(json!({"name": name, "tenantID": T})),
            201,
        );
    }

    /// An identity policy allowing `action` on `resources` (no principals: attachments decide).
    fn make_policy(&self, name: &str, action: &str, resources: &[String]) {
        self.ok(
            "POST",
            "/api/v1/policies",
            Some(json!({"name": name, "tenantID": T, "statements": [
                {"effect": "allow", "actions": [action], "resources": resources}]})),
            201,
        );
    }

    fn make_endpoint(&self, name: &str) {
        self.ok(
            "POST",
            "/api/v1/resources",
            Some(
                json!({"service": "epr", "resourceType": "endpoint", "name": name,
                "tenantID": T}),
            ),
            201,
        );
    }

    fn attach(&self, collection: &str, krn: &str, policies: &[&str]) {
        let ids: Vec<String> = policies.iter().map(|p| raw_id(&policy(p))).collect();
        self.ok(
            "PUT",
            &format!("/api/v1/{collection}/{}/policies/attach", id(krn)),
            Some(json!({ "policyIDs": ids })),
            204,
        );
    }
}

/// Bulk group delete: the groups are 404, their members no longer inherit their policies, the
/// group left keeps its members and policy, the policies themselves stay; a request naming a
/// missing group deletes nothing.
fn bulk_group_delete(api: &Api) {
    for g in ["g1", "g2", "g3"] {
        api.make_group(g);
        api.make_policy(
            &format!("read-{g}"),
            "iam:user:read",
            &[user(&format!("target-{g}"))],
        );
        api.attach("groups", &group(g), &[&format!("read-{g}")]);
    }
    api.make_user("ann");
    for g in ["g1", "g2", "g3"] {
        api.ok(
            "POST",
            &format!("/api/v1/groups/{}/members/add", id(&group(g))),
            Some(json!({"userIDs": [raw_id(&user("ann"))]})),
            204,
        );
    }
    let inherits =
        |g: &str| api.allowed(&user("ann"), "iam:user:read", &user(&format!("target-{g}")));
    assert!(inherits("g1") && inherits("g2") && inherits("g3"));

    // One missing id: 404, nothing deleted, nothing decided differently.
    let r = api.call(
        "POST",
        &format!("/api/v1/groups/delete?tenantID={T}"),
        Some(json!({"groupIDs": [raw_id(&group("g1")), raw_id(&group("ghost"))]})),
    );
    expect(&r, 404);
    assert_eq!(
        api.status(&format!("/api/v1/groups/{}", id(&group("g1")))),
        200
    );
    assert!(inherits("g1"));

    api.ok(
        "POST",
        &format!("/api/v1/groups/delete?tenantID={T}"),
        Some(json!({"groupIDs": [raw_id(&group("g1")), raw_id(&group("g2"))]})),
        204,
    );
    for g in ["g1", "g2"] {
        assert_eq!(
            api.status(&format!("/api/v1/groups/{}", id(&group(g)))),
            404,
            "{g}"
        );
        assert!(
            !inherits(g),
            "ann still inherits the policy of deleted group {g}"
        );
        // The policy stays, attached to nothing.
        assert_eq!(
            api.status(&format!(
                "/api/v1/policies/{}",
                id(&policy(&format!("read-{g}")))
            )),
            200
        );
    }
    assert!(inherits("g3"), "the group left keeps its policy");
    assert_eq!(
        api.krns(&format!("/api/v1/users/{}/groups", id(&user("ann")))),
        BTreeSet::from([group("g3")])
    );
    assert_eq!(
        api.krns(&format!("/api/v1/groups/{}/members", id(&group("g3")))),
        BTreeSet::from([user("ann")])
    );
    assert_eq!(
        api.krns(&format!("/api/v1/groups?tenantID={T}")),
        BTreeSet::from([group("g3")])
    );
    // A group of the same name made again starts without members or policies.
    api.make_group("g1");
    assert!(!inherits("g1"));
    assert!(
        api.krns(&format!("/api/v1/groups/{}/members", id(&group("g1"))))
            .is_empty()
    );
}

/// Pool policy detach, `/resources/evaluate` and bulk resource delete: a pool's policy decides
/// for the pool's registered resources until it is detached; deleted resources are 404, leave
/// their pool, lose their own policy, and are no longer decided on as registered resources.
fn pools_and_resources(api: &Api) {
    for e in ["e1", "e2", "e3", "e4"] {
        api.make_endpoint(e);
    }
    api.make_user("bob");
    api.ok(
        "POST",
        "/api/v1/pools",
        Some(json!({"name": "fleet", "tenantID": T,
            "resourceIDs": [raw_id(&endpoint("e1")), raw_id(&endpoint("e2")), raw_id(&endpoint("e3"))]})),
        201,
    );
    // The policy names no endpoint: only the pool attachment makes it apply to e1..e3.
    api.make_policy("fleet-read", "epr:endpoint:read", &[endpoint("none")]);
    api.attach("users", &user("bob"), &["fleet-read"]);
    api.attach("pools", &pool("fleet"), &["fleet-read"]);
    let bob = user("bob");
    let registered = |resources: &[String]| -> Resp {
        api.call(
            "POST",
            "/api/v1/resources/evaluate?filterResources=true",
            Some(json!({"principal": bob, "action": "epr:endpoint:read", "resources": resources})),
        )
    };
    let all: Vec<String> = ["e1", "e2", "e3", "e4"]
        .iter()
        .map(|e| endpoint(e))
        .collect();
    assert_eq!(
        expect(&registered(&all), 200),
        json!([endpoint("e1"), endpoint("e2"), endpoint("e3")]),
        "the pool's members, not e4"
    );
    for e in &all[..3] {
        assert!(api.allowed(&bob, "epr:endpoint:read", e), "{e}");
    }
    assert!(!api.allowed(&bob, "epr:endpoint:read", &endpoint("e4")));

    // `/evaluate/irns/actions` answers per action what `/evaluate` answers per resource.
    let per_action = |actions: &[&str]| -> Value {
        api.ok(
            "POST",
            "/api/v1/evaluate/irns/actions",
            Some(json!({"principal": bob, "actions": actions, "irns": all})),
            200,
        )
    };
    let d = per_action(&["epr:endpoint:read", "epr:endpoint:delete"]);
    assert_eq!(
        d["epr:endpoint:read"],
        json!({"allowed": &all[..3], "denied": [endpoint("e4")]}),
        "{d}"
    );
    assert_eq!(
        d["epr:endpoint:delete"],
        json!({"allowed": [], "denied": all}),
        "{d}"
    );

    // Detached from the pool: the pool's members are decided without it.
    api.ok(
        "POST",
        &format!("/api/v1/pools/{}/policies/detach", id(&pool("fleet"))),
        Some(json!({"policyIDs": [raw_id(&policy("fleet-read"))]})),
        204,
    );
    assert!(
        api.krns(&format!("/api/v1/pools/{}/policies", id(&pool("fleet"))))
            .is_empty()
    );
    assert_eq!(
        api.status(&format!("/api/v1/policies/{}", id(&policy("fleet-read")))),
        200,
        "detaching keeps the policy"
    );
    assert_eq!(expect(&registered(&all), 200), json!([]));
    for e in &all {
        assert!(
            !api.allowed(&bob, "epr:endpoint:read", e),
            "{e} after detach"
        );
    }
    let d = per_action(&["epr:endpoint:read"]);
    assert_eq!(
        d["epr:endpoint:read"],
        json!({"allowed": [], "denied": all}),
        "{d}"
    );
    // Attached again, for the deletes below.
    api.attach("pools", &pool("fleet"), &["fleet-read"]);
    assert!(api.allowed(&bob, "epr:endpoint:read", &endpoint("e1")));

    // e2's own policy grants bob delete on it.
    api.ok(
        "PUT",
        &format!("/api/v1/resources/{}/policy", id(&endpoint("e2"))),
        Some(
            json!({"statements": [{"effect": "allow", "actions": ["epr:endpoint:delete"],
            "resources": [endpoint("e2")], "principals": [bob]}]}),
        ),
        200,
    );
    assert!(api.allowed(&bob, "epr:endpoint:delete", &endpoint("e2")));

    // Bulk resource delete with a missing id: 404, nothing deleted.
    let r = api.call(
        "POST",
        "/api/v1/resources/delete",
        Some(json!({"resourceIDs": [raw_id(&endpoint("e1")), raw_id(&endpoint("ghost"))]})),
    );
    expect(&r, 404);
    assert_eq!(
        api.status(&format!("/api/v1/resources/{}", id(&endpoint("e1")))),
        200
    );

    api.ok(
        "POST",
        "/api/v1/resources/delete",
        Some(json!({"resourceIDs": [raw_id(&endpoint("e1")), raw_id(&endpoint("e2"))]})),
        204,
    );
    for e in ["e1", "e2"] {
        let path = format!("/api/v1/resources/{}", id(&endpoint(e)));
        assert_eq!(api.status(&path), 404, "{e}");
        assert_eq!(api.status(&format!("{path}/policy")), 404, "{e}'s policy");
        assert!(
            !api.allowed(&bob, "epr:endpoint:read", &endpoint(e)),
            "{e} is still decided as a pool member"
        );
    }
    assert!(
        !api.allowed(&bob, "epr:endpoint:delete", &endpoint("e2")),
        "e2's own policy outlived it"
    );
    let fleet = api.ok(
        "GET",
        &format!("/api/v1/pools/{}", id(&pool("fleet"))),
        None,
        200,
    );
    assert_eq!(
        fleet["data"]["resourceIDs"],
        json!([raw_id(&endpoint("e3"))]),
        "{fleet}"
    );
    // Registered resources only: the deleted ones are 404 to `/resources/evaluate`.
    let r = registered(&all);
    expect(&r, 404);
    let m = r.json()["message"].as_str().unwrap_or("").to_string();
    assert!(
        m.contains(&endpoint("e1")) && m.contains(&endpoint("e2")),
        "{m}"
    );
    assert_eq!(
        expect(&registered(&[endpoint("e3"), endpoint("e4")]), 200),
        json!([endpoint("e3")])
    );
    assert!(api.allowed(&bob, "epr:endpoint:read", &endpoint("e3")));
    assert_eq!(
        api.krns(&format!("/api/v1/resources?tenantID={T}")),
        BTreeSet::from([endpoint("e3"), endpoint("e4")])
    );
}

fn run(addr: SocketAddr) {
    let api = Api(addr);
    bulk_group_delete(&api);
    pools_and_resources(&api);
}

#[test]
fn sqlite_deletes_and_detaches_change_what_is_decided() {
    let dir = support::TempDir::new();
    let svc = support::service::start_iam(&support::sqlite_settings(&dir), "");
    run(svc.addr);
}

#[test]
fn postgres_deletes_and_detaches_change_what_is_decided() {
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip("postgres_deletes_and_detaches_change_what_is_decided");
    };
    let svc = support::service::start_iam(&pg.storage(), "");
    run(svc.addr);
}
