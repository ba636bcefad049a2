//! The Tenant Manager's audit trail over HTTP, on SQLite and (with `IAM_TEST_POSTGRES_URL`)
//! PostgreSQL: every write endpoint (tenants, their moves, retries and deletes, Keycloak servers,
//! every kind of the catalogue, IDPs, subscriptions, tenant users) leaves exactly one record with
//! the right action, entity, versions and changed fields, and never a secret; a write that fails
//! leaves none; the provisioning worker's and bootstrap's writes are the service's; filters and
//! cursor paging; the retention prunes; with security on the record names the caller, a tenant's
//! administrator reads only its own tenant's trail and a caller without the scope none; and both
//! services' feeds reach NATS (`IAM_TEST_NATS_URL`), also for records written while NATS is down.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kaa::clients::nats::{NatsClient, NatsSubscription};
use serde_json::{Value, json};
use support::proc::{Resp, call_json_with};

/// Secrets sent in the story; none may ever appear in the trail.
const KC_PASSWORD: &str = "kc-admin-password-Zq81";
const KC_PASSWORD_2: &str = "kc-admin-password-Yx27";
const KC_CLIENT_SECRET: &str = "kc-client-secret-Wv53";
const IDP_SECRET: &str = "idp-client-secret-Tu64";
const IDP_SECRET_2: &str = "idp-client-secret-Sr95";
const USER_PASSWORD: &str = "user-password-Qp46";
const USER_PASSWORD_2: &str = "user-password-On37";
const FIRST_ADMIN_PASSWORD: &str = "first-admin-password-Ml28";

fn request_id() -> String {
    static N: AtomicU64 = AtomicU64::new(1);
    format!("tm-audit-{}", N.fetch_add(1, Ordering::Relaxed))
}

fn call(a: SocketAddr, method: &str, path: &str, body: Option<&Value>, id: &str) -> Resp {
    call_json_with(
        a,
        method,
        path,
        None,
        &[("X-Request-Id", id)],
        body,
        Duration::from_secs(20),
    )
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
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

/// The whole trail under `filter` (query string), newest first, read page by page.
fn trail_as(a: SocketAddr, token: Option<&str>, filter: &str, size: u32) -> Vec<Value> {
    let mut out = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/audit?limit={size}{filter}");
        if let Some(n) = &next {
            path.push_str(&format!("&next={n}"));
        }
        let r = call_json_with(a, "GET", &path, token, &[], None, Duration::from_secs(20)).unwrap();
        let page = expect(&r, 200, &path);
        let rows = page["results"].as_array().unwrap().clone();
        assert!(rows.len() <= size as usize);
        out.extend(rows);
        match page["next"].as_str() {
            Some(n) => next = Some(n.to_string()),
            None => return out,
        }
    }
}

fn trail(a: SocketAddr, filter: &str) -> Vec<Value> {
    trail_as(a, None, filter, 100)
}

/// The records the request `id` left (the API's writes are `anonymous` with security off).
fn records_of(a: SocketAddr, id: &str) -> Vec<Value> {
    trail(a, "&principal=anonymous")
        .into_iter()
        .filter(|r| r["request_id"] == id)
        .collect()
}

fn fields(r: &Value) -> Vec<String> {
    let mut f: Vec<String> = r["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    f.sort();
    f
}

/// What a write must have recorded (an entity ending in `*`: its prefix).
struct Want<'a> {
    action: &'a str,
    entity: &'a str,
    tenant: &'a str,
    versions: (Option<i64>, Option<i64>),
}

/// One write that must leave exactly one record, as `want` says; the answer and the record.
fn one(
    a: SocketAddr,
    (method, path, body, status): (&str, &str, Option<Value>, u16),
    want: Want,
) -> (Value, Value) {
    let id = request_id();
    let out = expect(
        &call(a, method, path, body.as_ref(), &id),
        status,
        &format!("{method} {path}"),
    );
    let added = records_of(a, &id);
    assert_eq!(added.len(), 1, "{method} {path}: {added:?}");
    let r = added[0].clone();
    assert_eq!(r["service"], "tenant-manager");
    assert_eq!(r["action"], want.action, "{method} {path}: {r}");
    match want.entity.strip_suffix('*') {
        Some(prefix) => assert!(
            r["entity"].as_str().unwrap().starts_with(prefix),
            "{method} {path}: {r}"
        ),
        None => assert_eq!(r["entity"], want.entity, "{method} {path}: {r}"),
    }
    assert_eq!(r["tenant_id"], want.tenant, "{method} {path}: {r}");
    assert_eq!(r["version_before"], json!(want.versions.0), "{r}");
    assert_eq!(r["version_after"], json!(want.versions.1), "{r}");
    assert_eq!(r["principal"], "anonymous", "security is off: {r}");
    assert_eq!(r["caller_tenant_id"], "kaa");
    assert!(
        r["source"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{r}"
    );
    assert!(r["time"].as_str().unwrap().ends_with('Z'));
    (out, r)
}

/// A write that fails: it leaves nothing.
fn refused(a: SocketAddr, method: &str, path: &str, body: Option<Value>, status: u16) {
    let id = request_id();
    expect(
        &call(a, method, path, body.as_ref(), &id),
        status,
        &format!("{method} {path}"),
    );
    let added = records_of(a, &id);
    assert!(
        added.is_empty(),
        "{method} {path} failed yet left {added:?}"
    );
}

fn wait_status(a: SocketAddr, tenant: &str, status: &str) {
    support::wait_until(&format!("tenant `{tenant}` {status}"), || {
        let r = call(a, "GET", &format!("/api/v1/tenants/{tenant}"), None, "poll");
        (status == "GONE" && r.status == 404) || (r.status == 200 && r.json()["status"] == status)
    });
}

/// The service's records of a tenant (the provisioning worker's).
fn service_records(a: SocketAddr, tenant: &str) -> Vec<Value> {
    trail(a, &format!("&entity=tenant/{tenant}&principal=service"))
}

fn tenants_and_their_moves(a: SocketAddr) {
    let (_, r) = one(
        a,
        (
            "POST",
            "/api/v1/tenants",
            Some(json!({"id": "acme", "display_name": "Acme",
                "admin": {"username": "boss", "password": FIRST_ADMIN_PASSWORD}})),
            202,
        ),
        Want {
            action: "kaa:tenant:create",
            entity: "tenant/acme",
            tenant: "acme",
            versions: (None, Some(1)),
        },
    );
    let f = fields(&r);
    for name in ["display_name", "admin", "status", "realm_name"] {
        assert!(f.contains(&name.to_string()), "{name} in {f:?}");
    }
    assert_eq!(r["detail"]["status"], "CREATING");
    // The worker makes the realm: the service's write, CREATING to AVAILABLE.
    wait_status(a, "acme", "AVAILABLE");
    let done = service_records(a, "acme");
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0]["action"], "kaa:tenant:update");
    assert_eq!(done[0]["request_id"], Value::Null);
    assert_eq!(
        (&done[0]["version_before"], &done[0]["version_after"]),
        (&json!(1), &json!(2))
    );
    assert_eq!(
        done[0]["detail"]["status"],
        json!({"before": "CREATING", "after": "AVAILABLE"})
    );
    assert_eq!(
        fields(&done[0]),
        ["admin", "status"],
        "the first admin made"
    );
    assert!(done[0]["detail"].get("admin").is_none(), "a secret's value");

    let (_, r) = one(
        a,
        (
            "PATCH",
            "/api/v1/tenants/acme",
            Some(json!({"display_name": "Acme Inc"})),
            200,
        ),
        Want {
            action: "kaa:tenant:update",
            entity: "tenant/acme",
            tenant: "acme",
            versions: (Some(2), Some(3)),
        },
    );
    assert_eq!(fields(&r), ["display_name"]);
    assert_eq!(
        r["detail"]["display_name"],
        json!({"before": "Acme", "after": "Acme Inc"})
    );
    // Refused: a stale version, an unknown field, a tenant that is not there, the system tenant.
    refused(
        a,
        "PATCH",
        "/api/v1/tenants/acme",
        Some(json!({"display_name": "x", "version": 1})),
        409,
    );
    refused(
        a,
        "PUT",
        "/api/v1/tenants/acme",
        Some(json!({"colour": "red"})),
        400,
    );
    refused(
        a,
        "PATCH",
        "/api/v1/tenants/nobody",
        Some(json!({"display_name": "x"})),
        404,
    );
    refused(a, "DELETE", "/api/v1/tenants/kaa", None, 409);
    refused(
        a,
        "POST",
        "/api/v1/tenants",
        Some(json!({"id": "acme"})),
        409,
    );
    refused(a, "POST", "/api/v1/tenants/acme/retry", None, 409);

    // A delete: DELETING by the request, the row removed by the worker.
    one(
        a,
        ("POST", "/api/v1/tenants", Some(json!({"id": "brief"})), 202),
        Want {
            action: "kaa:tenant:create",
            entity: "tenant/brief",
            tenant: "brief",
            versions: (None, Some(1)),
        },
    );
    wait_status(a, "brief", "AVAILABLE");
    let (_, r) = one(
        a,
        ("DELETE", "/api/v1/tenants/brief", None, 202),
        Want {
            action: "kaa:tenant:delete",
            entity: "tenant/brief",
            tenant: "brief",
            versions: (Some(2), Some(3)),
        },
    );
    assert_eq!(
        r["detail"]["status"],
        json!({"before": "AVAILABLE", "after": "DELETING"})
    );
    wait_status(a, "brief", "GONE");
    let removed: Vec<Value> = service_records(a, "brief")
        .into_iter()
        .filter(|r| r["action"] == "kaa:tenant:remove")
        .collect();
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert_eq!(
        (&removed[0]["version_before"], &removed[0]["version_after"]),
        (&json!(3), &Value::Null)
    );
    refused(a, "DELETE", "/api/v1/tenants/brief", None, 404);

    // A tenant on a Keycloak server that cannot be reached fails (one attempt: the worker's
    // write), a retry is the request's, and a move of a tenant without a server is refused.
    one(
        a,
        (
            "POST",
            "/api/v1/keycloak-servers",
            Some(
                json!({"id": 8, "url": "http://127.0.0.1:1", "username": "admin",
                "password": KC_PASSWORD}),
            ),
            201,
        ),
        Want {
            action: "kaa:tenant:keycloak-server:create",
            entity: "keycloak-server/8",
            tenant: "kaa",
            versions: (None, None),
        },
    );
    one(
        a,
        (
            "POST",
            "/api/v1/tenants",
            Some(json!({"id": "flaky", "keycloak_server_id": 8})),
            202,
        ),
        Want {
            action: "kaa:tenant:create",
            entity: "tenant/flaky",
            tenant: "flaky",
            versions: (None, Some(1)),
        },
    );
    wait_status(a, "flaky", "FAILED");
    let failed = service_records(a, "flaky");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(fields(&failed[0]), ["failure_reason", "status"]);
    let (_, r) = one(
        a,
        ("POST", "/api/v1/tenants/flaky/retry", None, 202),
        Want {
            action: "kaa:tenant:retry",
            entity: "tenant/flaky",
            tenant: "flaky",
            versions: (Some(2), Some(3)),
        },
    );
    assert_eq!(
        r["detail"]["status"],
        json!({"before": "FAILED", "after": "CREATING"})
    );
    wait_status(a, "flaky", "FAILED");
    refused(
        a,
        "PATCH",
        "/api/v1/tenants/acme",
        Some(json!({"keycloak_server_id": 8})),
        409,
    );
    refused(a, "DELETE", "/api/v1/keycloak-servers/8", None, 409);
}

fn keycloak_servers(a: SocketAddr) {
    let (_, r) = one(
        a,
        (
            "POST",
            "/api/v1/keycloak-servers",
            Some(
                json!({"id": 7, "url": "https://kc7.example", "username": "admin",
                "password": KC_PASSWORD, "client_id": "tm", "client_secret": KC_CLIENT_SECRET}),
            ),
            201,
        ),
        Want {
            action: "kaa:tenant:keycloak-server:create",
            entity: "keycloak-server/7",
            tenant: "kaa",
            versions: (None, None),
        },
    );
    assert_eq!(
        fields(&r),
        [
            "admin_realm",
            "client_id",
            "client_secret",
            "is_default",
            "password",
            "url",
            "username"
        ]
    );
    let (_, r) = one(
        a,
        (
            "PUT",
            "/api/v1/keycloak-servers/7",
            Some(
                json!({"url": "https://kc7b.example", "username": "admin", "client_id": "tm",
                "password": KC_PASSWORD_2}),
            ),
            200,
        ),
        Want {
            action: "kaa:tenant:keycloak-server:update",
            entity: "keycloak-server/7",
            tenant: "kaa",
            versions: (None, None),
        },
    );
    assert_eq!(
        fields(&r),
        ["password", "url"],
        "the secrets kept are no change"
    );
    refused(
        a,
        "POST",
        "/api/v1/keycloak-servers",
        Some(json!({"id": 7, "url": "https://x.example"})),
        409,
    );
    refused(
        a,
        "PUT",
        "/api/v1/keycloak-servers/7",
        Some(json!({"url": "ftp://x"})),
        400,
    );
    one(
        a,
        ("DELETE", "/api/v1/keycloak-servers/7", None, 204),
        Want {
            action: "kaa:tenant:keycloak-server:delete",
            entity: "keycloak-server/7",
            tenant: "kaa",
            versions: (None, None),
        },
    );
    refused(a, "DELETE", "/api/v1/keycloak-servers/7", None, 404);
}

/// Every kind of the shared catalogue: create, update, delete (mappings first).
fn the_catalogue(a: SocketAddr) {
    let entries: Vec<(&str, &str, Value)> = vec![
        (
            "realm-templates",
            "realm-template/2",
            json!({"version": 2, "template": {"sslRequired": "all"}}),
        ),
        (
            "realm-backend-client-templates",
            "realm-backend-client-template/2",
            json!({"version": 2, "template": {}}),
        ),
        (
            "realm-frontend-client-templates",
            "realm-frontend-client-template/2",
            json!({"version": 2, "template": {}}),
        ),
        ("scopes", "scope/fleet:read", json!({"name": "fleet:read"})),
        ("scope-versions", "scope-version/2", json!({"version": 2})),
        ("roles", "role/fleet-admin", json!({"name": "fleet-admin"})),
        ("role-versions", "role-version/2", json!({"version": 2})),
        (
            "default-resources",
            "default-resource/fleet",
            json!({"name": "fleet", "type": "fleet"}),
        ),
        (
            "default-resource-versions",
            "default-resource-version/2",
            json!({"version": 2}),
        ),
        (
            "package-types",
            "package-type/gold",
            json!({"name": "gold"}),
        ),
        (
            "scope-version-mappings",
            "scope-version-mapping/2:fleet:read",
            json!({"version": 2, "scope_id": "fleet:read"}),
        ),
        (
            "role-scope-mappings",
            "role-scope-mapping/fleet-admin:fleet:read",
            json!({"role_id": "fleet-admin", "scope_id": "fleet:read"}),
        ),
        (
            "role-version-mappings",
            "role-version-mapping/2:fleet-admin",
            json!({"version": 2, "role_id": "fleet-admin"}),
        ),
        (
            "default-resource-scope-mappings",
            "default-resource-scope-mapping/fleet:fleet:read",
            json!({"resource_id": "fleet", "scope_id": "fleet:read"}),
        ),
        (
            "default-resource-version-mappings",
            "default-resource-version-mapping/2:fleet",
            json!({"version": 2, "resource_id": "fleet"}),
        ),
    ];
    for (path, entity, body) in &entries {
        let kind = entity.split('/').next().unwrap();
        let (_, r) = one(
            a,
            ("POST", &format!("/api/v1/{path}"), Some(body.clone()), 201),
            Want {
                action: &format!("kaa:tenant:{kind}:create"),
                entity,
                tenant: "kaa",
                versions: (None, None),
            },
        );
        let mut set: Vec<String> = body.as_object().unwrap().keys().cloned().collect();
        set.sort();
        assert_eq!(fields(&r), set, "{entity}");
        refused(
            a,
            "POST",
            &format!("/api/v1/{path}"),
            Some(body.clone()),
            409,
        );
    }
    // Updates: a description where the kind has one, the same body where it has none.
    for (path, entity, body) in &entries {
        let kind = entity.split('/').next().unwrap();
        let id = &entity[kind.len() + 1..];
        let mut b = body.clone();
        let described = !kind.ends_with("-mapping");
        if described {
            b["description"] = json!("changed");
        }
        let (_, r) = one(
            a,
            ("PUT", &format!("/api/v1/{path}/{id}"), Some(b), 200),
            Want {
                action: &format!("kaa:tenant:{kind}:update"),
                entity,
                tenant: "kaa",
                versions: (None, None),
            },
        );
        let want: Vec<String> = if described {
            vec!["description".into()]
        } else {
            Vec::new()
        };
        assert_eq!(fields(&r), want, "{entity}");
    }
    // An entry a mapping names, and a version a tenant uses, stay.
    refused(a, "DELETE", "/api/v1/scopes/fleet:read", None, 409);
    refused(a, "DELETE", "/api/v1/realm-templates/1", None, 409);
    refused(a, "DELETE", "/api/v1/roles/nothing-here", None, 404);
    for (path, entity, _) in entries.iter().rev() {
        let kind = entity.split('/').next().unwrap();
        let id = &entity[kind.len() + 1..];
        one(
            a,
            ("DELETE", &format!("/api/v1/{path}/{id}"), None, 204),
            Want {
                action: &format!("kaa:tenant:{kind}:delete"),
                entity,
                tenant: "kaa",
                versions: (None, None),
            },
        );
    }
}

/// A tenant's own entries: IDPs (the tenant's realm follows) and its subscription.
fn idps_and_subscriptions(a: SocketAddr) {
    let (_, r) = one(
        a,
        (
            "POST",
            "/api/v1/tenants/acme/idps",
            Some(json!({"alias": "corp", "provider_id": "oidc",
                "config": {"clientId": "corp", "clientSecret": IDP_SECRET}})),
            201,
        ),
        Want {
            action: "kaa:tenant:idp:create",
            entity: "idp/acme/corp",
            tenant: "acme",
            versions: (None, None),
        },
    );
    assert_eq!(fields(&r), ["alias", "config", "provider_id", "tenant_id"]);
    assert_eq!(r["detail"]["tenant"]["status_after"], "UPDATING", "{r}");
    wait_status(a, "acme", "AVAILABLE");
    let (_, r) = one(
        a,
        (
            "PUT",
            "/api/v1/tenants/acme/idps/corp",
            Some(json!({"provider_id": "oidc",
                "config": {"clientId": "corp", "clientSecret": IDP_SECRET_2}})),
            200,
        ),
        Want {
            action: "kaa:tenant:idp:update",
            entity: "idp/acme/corp",
            tenant: "acme",
            versions: (None, None),
        },
    );
    assert_eq!(fields(&r), ["config"]);
    wait_status(a, "acme", "AVAILABLE");
    refused(
        a,
        "POST",
        "/api/v1/tenants/acme/idps",
        Some(json!({"alias": "x", "provider_id": "oidc", "tenant_id": "other"})),
        400,
    );
    refused(
        a,
        "POST",
        "/api/v1/idps",
        Some(json!({"alias": "x", "provider_id": "oidc", "tenant_id": "nobody"})),
        404,
    );
    one(
        a,
        ("DELETE", "/api/v1/tenants/acme/idps/corp", None, 204),
        Want {
            action: "kaa:tenant:idp:delete",
            entity: "idp/acme/corp",
            tenant: "acme",
            versions: (None, None),
        },
    );
    wait_status(a, "acme", "AVAILABLE");

    one(
        a,
        (
            "POST",
            "/api/v1/tenant-subscriptions",
            Some(json!({"tenant_id": "acme", "package_type_id": "unlimited"})),
            201,
        ),
        Want {
            action: "kaa:tenant:tenant-subscription:create",
            entity: "tenant-subscription/acme/unlimited",
            tenant: "acme",
            versions: (None, None),
        },
    );
    let (_, r) = one(
        a,
        (
            "PUT",
            "/api/v1/tenant-subscriptions/acme%2Funlimited",
            Some(json!({"tenant_id": "acme", "package_type_id": "unlimited",
                "end_date": "2999-01-01"})),
            200,
        ),
        Want {
            action: "kaa:tenant:tenant-subscription:update",
            entity: "tenant-subscription/acme/unlimited",
            tenant: "acme",
            versions: (None, None),
        },
    );
    assert_eq!(fields(&r), ["end_date"]);
    one(
        a,
        (
            "DELETE",
            "/api/v1/tenant-subscriptions/acme%2Funlimited",
            None,
            204,
        ),
        Want {
            action: "kaa:tenant:tenant-subscription:delete",
            entity: "tenant-subscription/acme/unlimited",
            tenant: "acme",
            versions: (None, None),
        },
    );
}

fn tenant_users(a: SocketAddr) {
    let (u, r) = one(
        a,
        (
            "POST",
            "/api/v1/tenants/acme/users",
            Some(json!({"username": "ann", "password": USER_PASSWORD,
                "email": "ann@example.com", "roles": ["tenant-admin"]})),
            201,
        ),
        Want {
            action: "kaa:tenant:tenant-user:create",
            entity: "tenant-user/acme/*",
            tenant: "acme",
            versions: (None, None),
        },
    );
    let id = u["id"].as_str().unwrap().to_string();
    assert_eq!(r["entity"], format!("tenant-user/acme/{id}"));
    assert_eq!(
        fields(&r),
        ["email", "enabled", "password", "roles", "username"]
    );
    assert_eq!(r["detail"], json!({"username": "ann"}));
    let path = format!("/api/v1/tenants/acme/users/{id}");
    let entity = format!("tenant-user/acme/{id}");
    let want = |verb: &'static str| -> (String, String) {
        (format!("kaa:tenant:tenant-user:{verb}"), entity.clone())
    };
    let (action, e) = want("update");
    let (_, r) = one(
        a,
        ("PATCH", &path, Some(json!({"first_name": "Ann"})), 200),
        Want {
            action: &action,
            entity: &e,
            tenant: "acme",
            versions: (None, None),
        },
    );
    assert_eq!(fields(&r), ["first_name"]);
    let (_, r) = one(
        a,
        (
            "PATCH",
            &path,
            Some(json!({"password": USER_PASSWORD_2})),
            200,
        ),
        Want {
            action: &action,
            entity: &e,
            tenant: "acme",
            versions: (None, None),
        },
    );
    assert_eq!(fields(&r), ["password"]);
    refused(
        a,
        "POST",
        "/api/v1/tenants/acme/users",
        Some(json!({"username": "ann", "password": USER_PASSWORD})),
        409,
    );
    refused(
        a,
        "PATCH",
        &path,
        Some(json!({"roles": ["no-such-role"]})),
        400,
    );
    refused(
        a,
        "PATCH",
        "/api/v1/tenants/acme/users/no-such-user",
        Some(json!({"first_name": "x"})),
        404,
    );
    let (action, e) = want("delete");
    one(
        a,
        ("DELETE", &path, None, 204),
        Want {
            action: &action,
            entity: &e,
            tenant: "acme",
            versions: (None, None),
        },
    );
    refused(a, "DELETE", &path, None, 404);
}

fn filters_paging_and_no_secret(a: SocketAddr) {
    let all = trail(a, "");
    // Bootstrap's writes are the service's: the catalogue's seeds, the system tenant.
    assert!(
        all.iter()
            .any(|r| r["entity"] == "tenant/kaa" && r["principal"] == "service"),
        "bootstrap's system tenant"
    );
    assert!(all.iter().any(|r| r["entity"] == "scope/tenant:audit:read"
        && r["action"] == "kaa:tenant:scope:create"
        && r["principal"] == "service"));
    // No secret anywhere, whatever page or filter.
    let text = serde_json::to_string(&all).unwrap();
    let backend_secret = expect(
        &call(a, "GET", "/api/v1/tenants/acme/security-context", None, "s"),
        200,
        "security context",
    )["client_secret"]
        .as_str()
        .unwrap()
        .to_string();
    for secret in [
        KC_PASSWORD,
        KC_PASSWORD_2,
        KC_CLIENT_SECRET,
        IDP_SECRET,
        IDP_SECRET_2,
        USER_PASSWORD,
        USER_PASSWORD_2,
        FIRST_ADMIN_PASSWORD,
        backend_secret.as_str(),
    ] {
        assert!(!text.contains(secret), "a secret in the trail: {secret}");
    }

    // Newest first; small pages give the same rows as one big one.
    let ids: Vec<i64> = all.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]));
    let acme = trail(a, "&tenant_id=acme");
    assert!(acme.iter().all(|r| r["tenant_id"] == "acme"));
    assert_eq!(trail_as(a, None, "&tenant_id=acme", 3), acme);
    // Filters.
    let updates = trail(a, "&entity=tenant/acme&action=kaa:tenant:update");
    assert_eq!(
        updates
            .iter()
            .filter(|r| r["principal"] == "anonymous")
            .count(),
        1,
        "the request's, beside the worker's: {updates:?}"
    );
    assert!(
        updates
            .iter()
            .all(|r| r["entity"] == "tenant/acme" && r["action"] == "kaa:tenant:update")
    );
    assert!(trail(a, "&to=2000-01-01").is_empty());
    assert_eq!(trail(a, "&from=2000-01-01&tenant_id=acme"), acme);
    assert!(trail(a, "&from=2999-01-01").is_empty());
    for bad in [
        "&next=bm90LWEtY3Vyc29y",
        "&from=yesterday",
        "&from=2026-02-01&to=2026-01-01",
        "&limit=0",
        "&limit=many",
    ] {
        let r = call(a, "GET", &format!("/api/v1/audit?{bad}"), None, "bad");
        let v = expect(&r, 400, bad);
        assert!(v["error"].is_string(), "{v}");
    }
}

fn story(a: SocketAddr) {
    tenants_and_their_moves(a);
    keycloak_servers(a);
    the_catalogue(a);
    idps_and_subscriptions(a);
    tenant_users(a);
    filters_paging_and_no_secret(a);
}

const FAST: &str =
    "tenant-manager:\n  tasks:\n    backoff-ms: 20\n    max-backoff-ms: 100\n    max-attempts: 1\n";

#[test]
fn sqlite_tm_audit_trail() {
    let dir = support::TempDir::new();
    let tm = support::service::start_tm(&support::sqlite_settings(&dir), FAST);
    story(tm.addr);
}

#[test]
fn postgres_tm_audit_trail() {
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip("postgres_tm_audit_trail");
    };
    let tm = support::service::start_tm(&pg.storage(), FAST);
    story(tm.addr);
}

/// The retention by rows: each tenant keeps its newest rows, bootstrap's many included.
fn retention_prunes(settings: &kaa::config::StorageSettings) {
    let tm = support::service::start_tm(
        settings,
        "tenant-manager:\n  audit:\n    retention-rows: 3\n    prune-interval: 1\n",
    );
    let a = tm.addr;
    // The tenant first: servers registered after it are not where its realm goes.
    expect(
        &call(
            a,
            "POST",
            "/api/v1/tenants",
            Some(&json!({"id": "kept"})),
            "t",
        ),
        202,
        "tenant",
    );
    wait_status(a, "kept", "AVAILABLE");
    for i in 1..=5 {
        expect(
            &call(
                a,
                "POST",
                "/api/v1/keycloak-servers",
                Some(&json!({"id": 10 + i, "url": format!("https://kc{i}.example")})),
                "k",
            ),
            201,
            "server",
        );
    }
    support::wait_until("the system tenant's trail is pruned to 3 rows", || {
        trail(a, "&tenant_id=kaa").len() == 3
    });
    let kept: Vec<Value> = trail(a, "&tenant_id=kaa")
        .iter()
        .map(|r| r["entity"].clone())
        .collect();
    assert_eq!(
        kept,
        [
            json!("keycloak-server/15"),
            json!("keycloak-server/14"),
            json!("keycloak-server/13")
        ]
    );
    assert_eq!(
        trail(a, "&tenant_id=kept").len(),
        2,
        "another tenant's rows are its own to count"
    );
    assert!(support::metric(a, "tm_audit_rows_pruned_total").unwrap() >= 100);
    assert!(support::metric(a, "tm_audit_prune_passes_total").unwrap() >= 1);
}

#[test]
fn sqlite_tm_retention() {
    let dir = support::TempDir::new();
    retention_prunes(&support::sqlite_settings(&dir));
}

#[test]
fn postgres_tm_retention() {
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip("postgres_tm_retention");
    };
    retention_prunes(&pg.storage());
}

/// With security on (the Keycloak stand-in): records name the caller; the platform's caller
/// with `kaa:tenant:audit:read` reads every tenant's trail; a tenant's administrator, with its
/// realm's token, reads its own tenant's only; callers without the scope read nothing.
#[test]
fn a_tenant_reads_only_its_own_trail_and_reading_needs_the_scope() {
    use kaa::clients::keycloak::{AdminCredentials, KeycloakAdmin};
    use support::keycloak::{ADMIN_PASSWORD, ADMIN_USER, Keycloak};
    let kc = Keycloak::start();
    let admin_api = KeycloakAdmin::new(
        &kc.url(),
        "master",
        AdminCredentials::Password {
            username: ADMIN_USER.into(),
            password: ADMIN_PASSWORD.into(),
        },
        Duration::from_secs(10),
    );
    support::provision_scopes(
        &admin_api,
        "kaa",
        ("kaa-tm", "tm-secret"),
        "kaa-frontend",
        "kaa-system",
        &[
            (
                "platform-admin",
                &[
                    "kaa:tenant:read",
                    "kaa:tenant:create",
                    "kaa:tenant:tenant-user:create",
                    "kaa:tenant:audit:read",
                ],
            ),
            ("viewer", &["kaa:tenant:read"]),
        ],
    );
    support::add_realm_user(&admin_api, "kaa", "root", "root-pw", &["platform-admin"]);
    support::add_realm_user(&admin_api, "kaa", "ann", "ann-pw", &["viewer"]);
    let dir = support::TempDir::new();
    let yaml = format!(
        "security:\n  enabled: true\n  client-id: kaa-tm\n  client-secret: tm-secret\n  audiences: [kaa-tm, kaa-frontend]\n  issuer:\n    public-url: {}\ntenant-manager:\n  keycloak:\n    url: {}\n    username: {ADMIN_USER}\n    password: {ADMIN_PASSWORD}\n  tasks:\n    backoff-ms: 20\n    max-backoff-ms: 100\n",
        kc.issuer("kaa"),
        kc.url()
    );
    let tm = support::service::start_tm(&support::sqlite_settings(&dir), &yaml);
    let a = tm.addr;
    let url = kc.url();
    let (root, _) = support::login(&url, "kaa", "kaa-frontend", "root", "root-pw");
    let (viewer, _) = support::login(&url, "kaa", "kaa-frontend", "ann", "ann-pw");
    let as_ = |token: &str, method: &str, path: &str, body: Option<&Value>, id: &str| {
        call_json_with(
            a,
            method,
            path,
            Some(token),
            &[("X-Request-Id", id)],
            body,
            Duration::from_secs(20),
        )
        .unwrap()
    };
    let mut frontends = Vec::new();
    for t in ["ta", "tb"] {
        let r = as_(
            &root,
            "POST",
            "/api/v1/tenants",
            Some(&json!({"id": t})),
            "mk",
        );
        expect(&r, 202, "tenant");
        support::wait_until(&format!("tenant {t} AVAILABLE"), || {
            let r = as_(&root, "GET", &format!("/api/v1/tenants/{t}"), None, "poll");
            r.status == 200 && r.json()["status"] == "AVAILABLE"
        });
        let t_view = as_(&root, "GET", &format!("/api/v1/tenants/{t}"), None, "get").json();
        frontends.push(t_view["client_frontend_id"].as_str().unwrap().to_string());
        for (user, role) in [("boss", "tenant-admin"), ("dash", "dashboard-admin")] {
            let r = as_(
                &root,
                "POST",
                &format!("/api/v1/tenants/{t}/users"),
                Some(
                    &json!({"username": user, "password": format!("{user}-password"),
                    "email": format!("{user}@{t}.example"), "first_name": "T",
                    "last_name": "U", "roles": [role]}),
                ),
                &format!("user-{t}-{user}"),
            );
            expect(&r, 201, "tenant user");
        }
    }

    // The platform's caller reads every tenant's trail; the record names it.
    let all = trail_as(a, Some(&root), "", 100);
    let made = all
        .iter()
        .find(|r| r["request_id"] == "user-ta-boss")
        .unwrap_or_else(|| panic!("no record of the request: {all:?}"));
    assert_eq!(made["principal"], "krn:iam:kaa::user/root");
    assert_eq!(made["subject"], support::jwt_payload(&root)["sub"]);
    assert_eq!(made["caller_tenant_id"], "kaa");
    assert_eq!(made["tenant_id"], "ta");
    assert_eq!(made["action"], "kaa:tenant:tenant-user:create");
    for t in ["ta", "tb", "kaa"] {
        assert!(all.iter().any(|r| r["tenant_id"] == t), "{t}'s rows");
    }
    let tb_only = trail_as(a, Some(&root), "&tenant_id=tb", 100);
    assert!(!tb_only.is_empty() && tb_only.iter().all(|r| r["tenant_id"] == "tb"));

    // ta's administrator, with ta's realm's token: ta's trail only, never tb's.
    let (boss_ta, _) = support::login(&url, "ta", &frontends[0], "boss", "boss-password");
    let own = trail_as(a, Some(&boss_ta), "", 100);
    assert!(!own.is_empty());
    assert!(own.iter().all(|r| r["tenant_id"] == "ta"), "{own:?}");
    assert_eq!(
        own,
        trail_as(a, Some(&root), "&tenant_id=ta", 100),
        "all of its own"
    );
    assert_eq!(trail_as(a, Some(&boss_ta), "&tenant_id=ta", 2), own);
    let r = as_(&boss_ta, "GET", "/api/v1/audit?tenant_id=tb", None, "x");
    let v = expect(&r, 403, "ta's admin asks for tb's trail");
    assert!(v["error"].as_str().unwrap().contains("ta"), "{v}");
    // tb's administrator sees tb's.
    let (boss_tb, _) = support::login(&url, "tb", &frontends[1], "boss", "boss-password");
    let theirs = trail_as(a, Some(&boss_tb), "", 100);
    assert!(!theirs.is_empty() && theirs.iter().all(|r| r["tenant_id"] == "tb"));
    // ta's token is no key to anything else of the Tenant Manager.
    expect(
        &as_(&boss_ta, "GET", "/api/v1/tenants", None, "x"),
        401,
        "a tenant realm's token elsewhere",
    );

    // Without the scope: 403, nothing read.
    let (dash_ta, _) = support::login(&url, "ta", &frontends[0], "dash", "dash-password");
    for (who, token) in [("ta's dashboard admin", &dash_ta), ("the viewer", &viewer)] {
        let r = as_(token, "GET", "/api/v1/audit", None, "x");
        let v = expect(&r, 403, who);
        assert!(v["error"].as_str().unwrap().contains("audit:read"), "{v}");
        assert!(v.get("results").is_none());
    }
    expect(
        &call_json_with(
            a,
            "GET",
            "/api/v1/audit",
            None,
            &[],
            None,
            Duration::from_secs(10),
        )
        .unwrap(),
        401,
        "no token",
    );
}

/// NATS through a proxy that can be taken down, and a listener straight on NATS.
fn nats_via_proxy(name: &str) -> Option<(String, support::proxy::Proxy)> {
    let Ok(url) = std::env::var("IAM_TEST_NATS_URL") else {
        support::skip_because(name, "set IAM_TEST_NATS_URL to run it");
        return None;
    };
    let upstream = url
        .trim_start_matches("nats://")
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap();
    Some((url, support::proxy::Proxy::start(upstream)))
}

/// The next message on `sub` whose payload `pick` accepts (others, such as bootstrap's records
/// or a batch sent again, are passed over).
fn wait_message(
    sub: &mut NatsSubscription,
    what: &str,
    pick: impl Fn(&Value) -> bool,
) -> (String, Value) {
    let deadline = std::time::Instant::now() + support::LIVENESS;
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "never arrived: {what}"
        );
        let Some(m) = sub.next_timeout(Duration::from_secs(1)) else {
            continue;
        };
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        if pick(&v) {
            return (m.subject, v);
        }
    }
}

#[test]
fn tenant_manager_records_reach_nats_also_when_written_while_it_is_down() {
    let name = "tenant_manager_records_reach_nats_also_when_written_while_it_is_down";
    let Some((url, proxy)) = nats_via_proxy(name) else {
        return;
    };
    let subject = support::unique("tmaudit").replace('_', "-");
    let dir = support::TempDir::new();
    let tm = support::service::start_tm(
        &support::sqlite_settings(&dir),
        &format!(
            "nats:\n  urls: nats://{}\ntenant-manager:\n  audit:\n    publish: true\n    subject: {subject}\n",
            proxy.addr
        ),
    );
    let a = tm.addr;
    let listener = NatsClient::connect(&[url], "", "", Duration::from_secs(3)).unwrap();
    let mut sub = listener.subscribe(&format!("{subject}.>")).unwrap();

    let r = call(
        a,
        "POST",
        "/api/v1/keycloak-servers",
        Some(&json!({"id": 3, "url": "https://kc3.example", "password": KC_PASSWORD})),
        "feed-1",
    );
    expect(&r, 201, "server");
    let (subj, m) = wait_message(&mut sub, "the server's record", |v| {
        v["request_id"] == "feed-1"
    });
    assert_eq!(subj, format!("{subject}.kaa"));
    let row = records_of(a, "feed-1");
    assert_eq!(row.len(), 1);
    assert_eq!(m, row[0], "the message is the record as the API shows it");
    assert_eq!(m["action"], "kaa:tenant:keycloak-server:create");
    assert!(!m.to_string().contains(KC_PASSWORD));

    // NATS down: the write is acknowledged, its record waits in the outbox.
    proxy.set_down();
    let r = call(
        a,
        "POST",
        "/api/v1/tenants",
        Some(&json!({"id": "while-down"})),
        "feed-2",
    );
    expect(&r, 202, "tenant");
    assert_eq!(
        records_of(a, "feed-2").len(),
        1,
        "acknowledged and recorded"
    );
    support::wait_until("the record waits in the outbox", || {
        support::metric(a, "tm_outbox_pending").unwrap_or(0) >= 1
    });
    proxy.set_up();
    let (subj, m) = wait_message(&mut sub, "the record written while NATS was down", |v| {
        v["request_id"] == "feed-2"
    });
    assert_eq!(subj, format!("{subject}.while-down"));
    assert_eq!(m["action"], "kaa:tenant:create");
    assert_eq!(m["entity"], "tenant/while-down");
}

#[test]
fn iam_records_reach_nats_also_when_written_while_it_is_down() {
    let name = "iam_records_reach_nats_also_when_written_while_it_is_down";
    let Some((url, proxy)) = nats_via_proxy(name) else {
        return;
    };
    let subject = support::unique("iamaudit").replace('_', "-");
    let dir = support::TempDir::new();
    let iam = support::service::start_iam(
        &support::sqlite_settings(&dir),
        &format!(
            "nats:\n  urls: nats://{}\niam:\n  audit:\n    publish: true\n    subject: {subject}\n",
            proxy.addr
        ),
    );
    let a = iam.addr;
    let listener = NatsClient::connect(&[url], "", "", Duration::from_secs(3)).unwrap();
    let mut sub = listener.subscribe(&format!("{subject}.>")).unwrap();
    let pool = |name: &str, id: &str| {
        let r = call(
            a,
            "POST",
            "/api/v1/pools",
            Some(&json!({"name": name, "tenantID": "tfeed"})),
            id,
        );
        expect(&r, 201, "pool");
    };
    pool("first", "iam-feed-1");
    let (subj, m) = wait_message(&mut sub, "the pool's record", |v| {
        v["request_id"] == "iam-feed-1"
    });
    assert_eq!(subj, format!("{subject}.tfeed"));
    assert_eq!(m["service"], "iam");
    assert_eq!(m["action"], "iam:pool:create");
    assert_eq!(m["entity"], "krn:iam:tfeed::pool/first");
    assert_eq!(m["principal"], "anonymous");

    proxy.set_down();
    pool("second", "iam-feed-2");
    proxy.set_up();
    let (_, m) = wait_message(&mut sub, "the record written while NATS was down", |v| {
        v["request_id"] == "iam-feed-2"
    });
    assert_eq!(m["entity"], "krn:iam:tfeed::pool/second");
}
