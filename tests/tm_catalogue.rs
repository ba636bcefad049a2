//! The Tenant Manager's catalogue over HTTP, every kind of it: list, create, read one, replace,
//! delete, and the 400, 404 and 409 answers around them (each changing nothing). Then the
//! versions a tenant is bound to: moving a tenant to new template, scope, role and default
//! resource versions brings its realm (in the Keycloak stand-in) to what they describe.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;

use kaa::tenants::bootstrap::{ROLES, SCOPES};
use kaa::tenants::keycloak_provisioner::{permission_name, policy_name};
use serde_json::{Value, json};
use support::keycloak::{ADMIN_PASSWORD, ADMIN_USER, Keycloak};
use support::proc::{Resp, call_json};
use support::service::start_tm;

fn expect(r: &Resp, status: u16) -> Value {
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
    if r.body.is_empty() {
        Value::Null
    } else {
        r.json()
    }
}

/// One entry of a kind, as the walk uses it.
struct Entry {
    path: &'static str,
    /// The id as answered, and as it goes into a path (`/` percent-encoded).
    id: &'static str,
    create: Value,
    /// A replacement that changes a field other than those forming the id.
    replace: Value,
    /// The field `replace` changes and its new value.
    changed: (&'static str, Value),
    /// A replacement that would change the id: 400.
    moves: Value,
}

fn path_id(id: &str) -> String {
    id.replace('/', "%2F")
}

/// Every kind in the order its references need (mappings after what they name; per-tenant
/// entries after the tenant).
fn entries() -> Vec<Entry> {
    let versioned = |path: &'static str, extra: Value| {
        let mut create = json!({"version": 7});
        let mut replace = json!({"version": 7, "description": "replaced"});
        if let (Value::Object(c), Value::Object(r), Value::Object(x)) =
            (&mut create, &mut replace, &extra)
        {
            c.extend(x.clone());
            r.extend(x.clone());
        }
        let mut moves = create.clone();
        moves["version"] = json!(8);
        Entry {
            path,
            id: "7",
            create,
            replace,
            changed: ("description", json!("replaced")),
            moves,
        }
    };
    let template = json!({"template": {"displayName": "walk"}});
    vec![
        versioned("realm-templates", template.clone()),
        versioned("realm-backend-client-templates", template.clone()),
        versioned("realm-frontend-client-templates", template),
        Entry {
            path: "scopes",
            id: "walk:read",
            create: json!({"name": "walk:read"}),
            replace: json!({"name": "walk:read", "description": "replaced"}),
            changed: ("description", json!("replaced")),
            moves: json!({"name": "walk:other"}),
        },
        versioned("scope-versions", json!({})),
        Entry {
            path: "scope-version-mappings",
            id: "7:walk:read",
            create: json!({"version": 7, "scope_id": "walk:read"}),
            replace: json!({"version": 7, "scope_id": "walk:read"}),
            changed: ("scope_id", json!("walk:read")),
            moves: json!({"version": 1, "scope_id": "walk:read"}),
        },
        Entry {
            path: "roles",
            id: "walker",
            create: json!({"name": "walker"}),
            replace: json!({"name": "walker", "template": {"attributes": {"k": ["v"]}}}),
            changed: ("template", json!({"attributes": {"k": ["v"]}})),
            moves: json!({"name": "runner"}),
        },
        versioned("role-versions", json!({})),
        Entry {
            path: "role-scope-mappings",
            id: "walker:walk:read",
            create: json!({"role_id": "walker", "scope_id": "walk:read"}),
            replace: json!({"role_id": "walker", "scope_id": "walk:read"}),
            changed: ("role_id", json!("walker")),
            moves: json!({"role_id": "tenant-admin", "scope_id": "walk:read"}),
        },
        Entry {
            path: "role-version-mappings",
            id: "7:walker",
            create: json!({"version": 7, "role_id": "walker"}),
            replace: json!({"version": 7, "role_id": "walker"}),
            changed: ("role_id", json!("walker")),
            moves: json!({"version": 1, "role_id": "walker"}),
        },
        Entry {
            path: "default-resources",
            id: "walkway",
            create: json!({"name": "walkway", "type": "walk"}),
            replace: json!({"name": "walkway", "type": "path"}),
            changed: ("type", json!("path")),
            moves: json!({"name": "runway", "type": "walk"}),
        },
        versioned("default-resource-versions", json!({})),
        Entry {
            path: "default-resource-scope-mappings",
            id: "walkway:walk:read",
            create: json!({"resource_id": "walkway", "scope_id": "walk:read"}),
            replace: json!({"resource_id": "walkway", "scope_id": "walk:read"}),
            changed: ("resource_id", json!("walkway")),
            moves: json!({"resource_id": "tenant-system", "scope_id": "walk:read"}),
        },
        Entry {
            path: "default-resource-version-mappings",
            id: "7:walkway",
            create: json!({"version": 7, "resource_id": "walkway"}),
            replace: json!({"version": 7, "resource_id": "walkway"}),
            changed: ("resource_id", json!("walkway")),
            moves: json!({"version": 1, "resource_id": "walkway"}),
        },
        Entry {
            path: "package-types",
            id: "walk-pack",
            create: json!({"name": "walk-pack", "limits": {"max_endpoints": 5}}),
            replace: json!({"name": "walk-pack", "limits": {"max_endpoints": 9}}),
            changed: ("limits", json!({"max_endpoints": 9})),
            moves: json!({"name": "run-pack"}),
        },
        Entry {
            path: "tenant-subscriptions",
            id: "walk/walk-pack",
            create: json!({"tenant_id": "walk", "package_type_id": "walk-pack"}),
            replace: json!({"tenant_id": "walk", "package_type_id": "walk-pack",
                            "subscription_type": "trial"}),
            changed: ("subscription_type", json!("trial")),
            moves: json!({"tenant_id": "walk", "package_type_id": "unlimited"}),
        },
        Entry {
            path: "idps",
            id: "walk/corp",
            create: json!({"tenant_id": "walk", "alias": "corp", "provider_id": "oidc",
                           "config": {"clientId": "kaa"}}),
            replace: json!({"tenant_id": "walk", "alias": "corp", "provider_id": "oidc",
                            "config": {"clientId": "kaa"}, "enabled": false}),
            changed: ("enabled", json!(false)),
            moves: json!({"tenant_id": "walk", "alias": "other", "provider_id": "oidc"}),
        },
    ]
}

struct Api(SocketAddr);

impl Api {
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Resp {
        call_json(self.0, method, &format!("/api/v1/{path}"), body)
    }

    fn ids(&self, kind: &str) -> Vec<String> {
        // `limit=0`: all of them (the count is of all in any case).
        let v = expect(&self.call("GET", &format!("{kind}?limit=0"), None), 200);
        let results = v["results"].as_array().unwrap();
        assert_eq!(v["count"].as_u64(), Some(results.len() as u64), "{v}");
        results
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    }

    fn get(&self, e: &Entry) -> Resp {
        self.call("GET", &format!("{}/{}", e.path, path_id(e.id)), None)
    }

    /// The entry without its timestamps.
    fn read(&self, e: &Entry) -> Value {
        let mut v = expect(&self.get(e), 200);
        v.as_object_mut().unwrap().remove("updated");
        v
    }

    fn wait_available(&self, tenant: &str) -> Value {
        let mut t = Value::Null;
        support::wait_until(&format!("tenant {tenant} AVAILABLE"), || {
            t = self.call("GET", &format!("tenants/{tenant}"), None).json();
            t["status"] == "AVAILABLE"
        });
        t
    }
}

/// The 400 of a bad body names the field.
fn bad(r: &Resp, field: &str) {
    let e = expect(r, 400);
    assert_eq!(e["details"]["field"], field, "{e}");
}

fn walk(api: &Api) {
    expect(
        &api.call("POST", "tenants", Some(&json!({"id": "walk"}))),
        202,
    );
    api.wait_available("walk");
    let all = entries();
    assert_eq!(
        all.iter()
            .map(|e| e.path)
            .collect::<std::collections::BTreeSet<_>>(),
        kaa::tenants::catalog::KINDS
            .iter()
            .map(|k| k.path)
            .collect(),
        "the walk covers every kind"
    );
    let mut before = Vec::new();
    for e in &all {
        let ids = api.ids(e.path);
        assert!(!ids.contains(&e.id.to_string()), "{}: {ids:?}", e.path);
        // Bad bodies: 400 naming the field, nothing stored.
        let mut unknown = e.create.clone();
        unknown["bogus"] = json!(1);
        bad(&api.call("POST", e.path, Some(&unknown)), "bogus");
        let required = e.create.as_object().unwrap().keys().next().unwrap().clone();
        let mut missing = e.create.clone();
        missing.as_object_mut().unwrap().remove(&required);
        bad(&api.call("POST", e.path, Some(&missing)), &required);
        let mut wrong = e.create.clone();
        wrong[&required] = json!([]);
        bad(&api.call("POST", e.path, Some(&wrong)), &required);
        expect(&api.call("POST", e.path, Some(&json!("text"))), 400);
        assert_eq!(api.get(e).status, 404, "{}", e.path);

        // Create, read one, read all.
        let made = expect(&api.call("POST", e.path, Some(&e.create)), 201);
        assert_eq!(made["id"], e.id, "{made}");
        for (k, v) in e.create.as_object().unwrap() {
            assert_eq!(&made[k], v, "{}: {k}", e.path);
        }
        let mut made_now = made.clone();
        made_now.as_object_mut().unwrap().remove("updated");
        assert_eq!(api.read(e), made_now, "{}", e.path);
        let after = api.ids(e.path);
        assert_eq!(after.len(), ids.len() + 1, "{}", e.path);
        assert!(after.contains(&e.id.to_string()));
        expect(&api.call("POST", e.path, Some(&e.create)), 409);
        before.push(ids);

        // Replace; the id cannot move; missing entries are 404.
        let item = format!("{}/{}", e.path, path_id(e.id));
        let replaced = expect(&api.call("PUT", &item, Some(&e.replace)), 200);
        assert_eq!(replaced[e.changed.0], e.changed.1, "{replaced}");
        assert_eq!(api.read(e)[e.changed.0], e.changed.1, "{}", e.path);
        assert_eq!(replaced["created"], made["created"]);
        let kept = api.read(e);
        let r = api.call("PUT", &item, Some(&e.moves));
        expect(&r, 400);
        assert_eq!(api.read(e), kept, "{}: a refused PUT changed it", e.path);
        bad(&api.call("PUT", &item, Some(&unknown)), "bogus");
        assert_eq!(api.read(e), kept);
        let ghost = format!("{}/ghost-9", e.path);
        expect(&api.call("GET", &ghost, None), 404);
        expect(&api.call("PUT", &ghost, Some(&e.create)), 404);
        expect(&api.call("DELETE", &ghost, None), 404);
    }

    // References: mappings name existing entries only, and keep what they name.
    for (path, body, field) in [
        (
            "scope-version-mappings",
            json!({"version": 7, "scope_id": "nope"}),
            "scope_id",
        ),
        (
            "role-version-mappings",
            json!({"version": 99, "role_id": "walker"}),
            "version",
        ),
        (
            "role-scope-mappings",
            json!({"role_id": "nope", "scope_id": "walk:read"}),
            "role_id",
        ),
        (
            "default-resource-scope-mappings",
            json!({"resource_id": "nope", "scope_id": "walk:read"}),
            "resource_id",
        ),
        (
            "tenant-subscriptions",
            json!({"tenant_id": "walk", "package_type_id": "nope"}),
            "package_type_id",
        ),
    ] {
        bad(&api.call("POST", path, Some(&body)), field);
    }
    expect(
        &api.call(
            "POST",
            "idps",
            Some(&json!({"tenant_id": "nobody", "alias": "corp", "provider_id": "oidc"})),
        ),
        404,
    );
    for named in [
        "scopes/walk:read",
        "roles/walker",
        "default-resources/walkway",
        "package-types/walk-pack",
        "scope-versions/7",
    ] {
        expect(&api.call("DELETE", named, None), 409);
        assert_eq!(api.call("GET", named, None).status, 200, "{named}");
    }

    // Deletes, in reverse: each entry 404 afterwards and the lists as they were.
    for (e, ids) in all.iter().zip(before).rev() {
        let item = format!("{}/{}", e.path, path_id(e.id));
        expect(&api.call("DELETE", &item, None), 204);
        assert_eq!(api.get(e).status, 404, "{}", e.path);
        expect(&api.call("DELETE", &item, None), 404);
        assert_eq!(api.ids(e.path), ids, "{}", e.path);
    }
    api.wait_available("walk");
}

#[test]
fn every_catalogue_kind_is_walked_on_sqlite() {
    let dir = support::TempDir::new();
    let tm = start_tm(&support::sqlite_settings(&dir), "");
    walk(&Api(tm.addr));
}

#[test]
fn every_catalogue_kind_is_walked_on_postgres() {
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip("every_catalogue_kind_is_walked_on_postgres");
    };
    let tm = start_tm(&pg.storage(), "");
    walk(&Api(tm.addr));
}

/// Version 2 of every versioned kind adds to the default plan: a scope, a role granting it, a
/// default resource carrying it, and new realm and client templates. A tenant moved to them
/// gets each in its realm; the versions it uses cannot be deleted; a version that does not
/// exist is refused and changes nothing.
#[test]
fn moving_a_tenant_to_new_versions_brings_its_realm_to_them() {
    let kc = Keycloak::start();
    let dir = support::TempDir::new();
    let yaml = format!(
        "tenant-manager:\n  keycloak:\n    url: {}\n    username: {ADMIN_USER}\n    password: {ADMIN_PASSWORD}\n  tasks:\n    workers: 2\n    backoff-ms: 20\n    max-backoff-ms: 100\n",
        kc.url()
    );
    let tm = start_tm(&support::sqlite_settings(&dir), &yaml);
    let api = Api(tm.addr);
    expect(
        &api.call("POST", "tenants", Some(&json!({"id": "vc"}))),
        202,
    );
    let t = api.wait_available("vc");
    let realm = t["realm_name"].as_str().unwrap().to_string();
    let backend = t["client_backend_id"].as_str().unwrap().to_string();
    let frontend = t["client_frontend_id"].as_str().unwrap().to_string();

    let post = |path: &str, body: Value| expect(&api.call("POST", path, Some(&body)), 201);
    post(
        "realm-templates",
        json!({"version": 2, "template": {"sslRequired": "external", "displayName": "VC two"}}),
    );
    post(
        "realm-backend-client-templates",
        json!({"version": 2, "template": {"protocol": "openid-connect", "standardFlowEnabled": false,
               "directAccessGrantsEnabled": false, "description": "backend two"}}),
    );
    post(
        "realm-frontend-client-templates",
        json!({"version": 2, "template": {"protocol": "openid-connect", "standardFlowEnabled": true,
               "directAccessGrantsEnabled": true, "redirectUris": ["https://ui.example.com/*"],
               "webOrigins": ["https://ui.example.com"]}}),
    );
    post("scopes", json!({"name": "fleet:read"}));
    post("scope-versions", json!({"version": 2}));
    for s in SCOPES.iter().copied().chain(["fleet:read"]) {
        post(
            "scope-version-mappings",
            json!({"version": 2, "scope_id": s}),
        );
    }
    post(
        "roles",
        json!({"name": "fleet-reader", "description": "reads fleets"}),
    );
    post(
        "role-scope-mappings",
        json!({"role_id": "fleet-reader", "scope_id": "fleet:read"}),
    );
    post("role-versions", json!({"version": 2}));
    for (r, _, _) in ROLES.iter().copied().chain([("fleet-reader", "", &[][..])]) {
        post("role-version-mappings", json!({"version": 2, "role_id": r}));
    }
    post(
        "default-resources",
        json!({"name": "fleet", "type": "fleet"}),
    );
    post(
        "default-resource-scope-mappings",
        json!({"resource_id": "fleet", "scope_id": "fleet:read"}),
    );
    post("default-resource-versions", json!({"version": 2}));
    for r in ["tenant-system", "fleet"] {
        post(
            "default-resource-version-mappings",
            json!({"version": 2, "resource_id": r}),
        );
    }
    // The catalogue alone does not move a tenant: its realm is still version 1's.
    let snap = kc.realm_snapshot(&realm).unwrap();
    assert!(!snap.scopes.contains(&"fleet:read".to_string()));
    assert!(!snap.roles.contains(&"fleet-reader".to_string()));

    let versions = json!({"realm_template_version": 2, "client_backend_version": 2,
        "client_frontend_version": 2, "realm_scopes_version": 2, "roles_version": 2,
        "resources_version": 2});
    let t = expect(&api.call("PATCH", "tenants/vc", Some(&versions)), 202);
    assert_eq!(t["status"], "UPDATING");
    let t = api.wait_available("vc");
    for (k, v) in versions.as_object().unwrap() {
        assert_eq!(&t[k], v, "{k}");
    }
    let snap = kc.realm_snapshot(&realm).unwrap();
    assert!(snap.duplicates().is_empty(), "{:?}", snap.duplicates());
    assert_eq!(snap.representation["displayName"], "VC two");
    assert_eq!(
        snap.client(&backend).unwrap().representation["description"],
        "backend two"
    );
    assert_eq!(
        snap.client(&frontend).unwrap().representation["redirectUris"],
        json!(["https://ui.example.com/*"])
    );
    assert!(
        snap.scopes.contains(&"fleet:read".to_string()),
        "{:?}",
        snap.scopes
    );
    assert!(
        snap.roles.contains(&"fleet-reader".to_string()),
        "{:?}",
        snap.roles
    );
    let fleet = snap
        .resource("fleet")
        .expect("the default resource `fleet`");
    assert_eq!(fleet.resource_type.as_deref(), Some("fleet"));
    assert_eq!(fleet.scopes, ["fleet:read"]);
    let policy = snap
        .policy(&policy_name("fleet-reader"))
        .expect("the role policy of fleet-reader");
    assert_eq!(policy.roles, ["fleet-reader"]);
    let permission = snap
        .permission(&permission_name("fleet:read"))
        .expect("the permission of fleet:read");
    assert_eq!(permission.scopes, ["fleet:read"]);
    assert_eq!(permission.policies, [policy_name("fleet-reader")]);
    // What version 1 made is still there.
    assert!(snap.resource("tenant-system").is_some());
    for (r, _, _) in ROLES {
        assert!(snap.roles.contains(&r.to_string()), "{r}");
    }

    // Versions in use stay.
    for path in [
        "realm-templates/2",
        "realm-backend-client-templates/2",
        "realm-frontend-client-templates/2",
        "scope-versions/2",
        "role-versions/2",
        "default-resource-versions/2",
    ] {
        let r = api.call("DELETE", path, None);
        let e = expect(&r, 409);
        assert!(e.to_string().contains("`vc`"), "{path}: {e}");
    }
    // A version that does not exist: 400 naming the field, the tenant as it was.
    let before = expect(&api.call("GET", "tenants/vc", None), 200);
    bad(
        &api.call("PATCH", "tenants/vc", Some(&json!({"roles_version": 9}))),
        "roles_version",
    );
    assert_eq!(expect(&api.call("GET", "tenants/vc", None), 200), before);
}
