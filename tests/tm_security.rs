//! The Tenant Manager with security on: tokens of the system realm only, and each endpoint's
//! scope on `kaa-system` decided by Keycloak (UMA, `response_mode=decision`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use kaa::clients::keycloak::{AdminCredentials, KeycloakAdmin};
use serde_json::json;
use support::keycloak::{ADMIN_PASSWORD, ADMIN_USER, Keycloak, Mint};
use support::proc::call_json_as;

#[test]
fn scopes_on_kaa_system_guard_every_endpoint() {
    let kc = Keycloak::start();
    kc.add_realm("acme");
    // The system realm as an installer makes it through the admin API: the Tenant Manager's
    // client with the `kaa-system` resource, role policies and scope permissions, which the
    // stand-in's UMA decisions are evaluated from.
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
                    "kaa:tenant:role:read",
                    "kaa:tenant:tenant-user:read",
                ],
            ),
            ("viewer", &["kaa:tenant:read"]),
            // A role with a scope the endpoints below never ask for.
            ("auditor", &["kaa:tenant:keycloak-server:update"]),
        ],
    );
    support::add_realm_user(&admin_api, "kaa", "root", "root-pw", &["platform-admin"]);
    support::add_realm_user(&admin_api, "kaa", "ann", "ann-pw", &["viewer"]);
    support::add_realm_user(&admin_api, "kaa", "joe", "joe-pw", &["auditor"]);
    let dir = support::TempDir::new();
    let yaml = format!(
        "security:\n  enabled: true\n  client-id: kaa-tm\n  client-secret: tm-secret\n  audiences: [kaa-tm, kaa-frontend]\n  issuer:\n    public-url: {}\n",
        kc.issuer("kaa")
    );
    let tm = support::service::start_tm(&support::sqlite_settings(&dir), &yaml);
    let a = tm.addr;
    // The tokens the web UI's login gets from the system realm.
    let url = kc.url();
    let (admin, admin_id_token) = support::login(&url, "kaa", "kaa-frontend", "root", "root-pw");
    let (viewer, _) = support::login(&url, "kaa", "kaa-frontend", "ann", "ann-pw");
    let (nobody, _) = support::login(&url, "kaa", "kaa-frontend", "joe", "joe-pw");
    let claims = support::jwt_payload(&admin);
    assert_eq!(claims["typ"], "Bearer");
    assert_eq!(claims["aud"], "account", "{claims}");
    assert_eq!(claims["azp"], "kaa-frontend");
    assert_eq!(claims["iss"], kc.issuer("kaa"));
    let outsider = kc.mint(
        "acme",
        &Mint {
            aud: None,
            ..Mint::user("eve").roles(&["platform-admin"])
        },
    );

    // No token, a token of another realm: 401 in the v1 error shape.
    let r = call_json_as(a, "GET", "/api/v1/tenants", None, None);
    assert_eq!(r.status, 401);
    assert!(r.json()["error"].is_string());
    assert!(r.header("www-authenticate").is_some());
    assert_eq!(
        call_json_as(a, "GET", "/api/v1/tenants", Some(&outsider), None).status,
        401
    );

    // Tokens not meant for the Tenant Manager: the login's ID token, another service's
    // audience, a client the Tenant Manager does not know, an ID token made by hand.
    let r = call_json_as(a, "GET", "/api/v1/tenants", Some(&admin_id_token), None);
    assert_eq!(r.status, 401, "{:?}", r.json());
    for bad in [
        Mint {
            aud: Some(vec!["billing".into()]),
            ..Mint::user("root").roles(&["platform-admin"])
        },
        Mint {
            aud: Some(vec!["account".into()]),
            azp: Some("stranger".into()),
            ..Mint::user("root").roles(&["platform-admin"])
        },
        Mint {
            aud: None,
            typ: Some("ID".into()),
            ..Mint::user("root").roles(&["platform-admin"])
        },
    ] {
        let token = kc.mint("kaa", &bad);
        let r = call_json_as(a, "GET", "/api/v1/tenants", Some(&token), None);
        assert_eq!(r.status, 401, "{:?}", r.json());
    }

    // Scopes decide.
    assert_eq!(
        call_json_as(a, "GET", "/api/v1/tenants", Some(&viewer), None).status,
        200
    );
    let r = call_json_as(
        a,
        "POST",
        "/api/v1/tenants",
        Some(&viewer),
        Some(&json!({"id": "nope"})),
    );
    assert_eq!(r.status, 403);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("kaa:tenant:create")
    );
    assert_eq!(
        call_json_as(a, "GET", "/api/v1/tenants/nope", Some(&admin), None).status,
        404,
        "nothing was created"
    );
    let r = call_json_as(
        a,
        "POST",
        "/api/v1/tenants",
        Some(&admin),
        Some(&json!({"id": "acme2"})),
    );
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        call_json_as(a, "DELETE", "/api/v1/tenants/acme2", Some(&admin), None).status,
        403
    );
    assert_eq!(
        call_json_as(a, "GET", "/api/v1/roles", Some(&admin), None).status,
        200
    );
    assert_eq!(
        call_json_as(a, "GET", "/api/v1/roles", Some(&viewer), None).status,
        403
    );
    assert_eq!(
        call_json_as(a, "GET", "/api/v1/keycloak-servers", Some(&admin), None).status,
        403
    );
    assert_eq!(
        call_json_as(
            a,
            "GET",
            "/api/v1/tenants/acme2/security-context",
            Some(&viewer),
            None
        )
        .status,
        200
    );

    // Tenant users: their own scopes.
    let r = call_json_as(a, "GET", "/api/v1/tenants/acme2/users", Some(&viewer), None);
    assert_eq!(r.status, 403);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("kaa:tenant:tenant-user:read")
    );
    let r = call_json_as(
        a,
        "POST",
        "/api/v1/tenants/acme2/users",
        Some(&admin),
        Some(&json!({"username": "boss", "password": "long-enough"})),
    );
    assert_eq!(r.status, 403);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("kaa:tenant:tenant-user:create")
    );
    let started = std::time::Instant::now();
    loop {
        let r = call_json_as(a, "GET", "/api/v1/tenants/acme2/users", Some(&admin), None);
        if r.status == 200 {
            assert_eq!(r.json()["count"], 0, "the refused create made nothing");
            break;
        }
        assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
        assert!(started.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    }

    // The limit check: `kaa:tenant:read`, decided before anything is read.
    let ask = json!({"limit": "max_endpoints", "current": 0, "requested": 1});
    let check = |token: Option<&str>| {
        call_json_as(
            a,
            "POST",
            "/api/v1/tenants/acme2/limits/check",
            token,
            Some(&ask),
        )
    };
    assert_eq!(check(None).status, 401);
    let r = check(Some(&nobody));
    assert_eq!(r.status, 403);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("kaa:tenant:read")
    );
    let r = check(Some(&viewer));
    assert_eq!(r.status, 400, "no subscription, no limit: {:?}", r.json());
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("max_endpoints")
    );

    // The login page's config needs no token and holds no secret; operations are open.
    let r = call_json_as(a, "GET", "/api/v1/tenants/acme2/public-config", None, None);
    assert_eq!(r.status, 200);
    assert!(r.json().get("client_secret").is_none());
    assert_eq!(call_json_as(a, "GET", "/health", None, None).status, 200);
}

/// The stand-in decides UMA requests from what the Tenant Manager provisioned in a tenant's
/// realm: the `tenant-system` resource, its scopes, a role policy per role and a scope permission
/// per scope. A role that grants the scope gets it; one that does not is refused; a role taken
/// away is refused at the next login; a scope the resource does not have and an ID token are
/// refused as Keycloak refuses them.
#[test]
fn a_tenant_realms_provisioned_permissions_decide_uma_requests() {
    let kc = Keycloak::start();
    let dir = support::TempDir::new();
    let tm = support::service::start_tm(
        &support::sqlite_settings(&dir),
        &format!(
            "tenant-manager:\n  keycloak:\n    url: {}\n    username: {ADMIN_USER}\n    password: {ADMIN_PASSWORD}\n  tasks:\n    backoff-ms: 20\n    max-backoff-ms: 100\n",
            kc.url()
        ),
    );
    let a = tm.addr;
    let r = call_json_as(
        a,
        "POST",
        "/api/v1/tenants",
        None,
        Some(&json!({"id": "acme"})),
    );
    assert_eq!(r.status, 202);
    let started = std::time::Instant::now();
    let t = loop {
        let t = call_json_as(a, "GET", "/api/v1/tenants/acme", None, None).json();
        if t["status"] == "AVAILABLE" {
            break t;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{t}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let backend = t["client_backend_id"].as_str().unwrap();
    let frontend = t["client_frontend_id"].as_str().unwrap();
    let mut ids = Vec::new();
    for (name, role) in [("apps", "application-admin"), ("dash", "dashboard-admin")] {
        let r = call_json_as(
            a,
            "POST",
            "/api/v1/tenants/acme/users",
            None,
            Some(
                &json!({"username": name, "password": format!("{name}-password"),
                         "roles": [role]}),
            ),
        );
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        ids.push(r.json()["id"].as_str().unwrap().to_string());
    }
    let url = kc.url();
    let (apps, apps_id_token) = support::login(&url, "acme", frontend, "apps", "apps-password");
    let (dash, _) = support::login(&url, "acme", frontend, "dash", "dash-password");
    let create = "tenant-system#tenant:application:create";

    let (status, body) = support::uma_decision(&url, "acme", &apps, backend, create);
    assert_eq!((status, &body), (200, &json!({"result": true})));
    let (status, body) = support::uma_decision(&url, "acme", &dash, backend, create);
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "access_denied");
    // `tenant-admin` holds every scope; `dashboard:read` is no scope of `tenant-system`.
    let (status, body) =
        support::uma_decision(&url, "acme", &dash, backend, "tenant-system#dashboard:read");
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_resource");
    // The resource alone: granted when one of its scopes is.
    assert_eq!(
        support::uma_decision(&url, "acme", &apps, backend, "tenant-system").0,
        200
    );
    assert_eq!(
        support::uma_decision(&url, "acme", &dash, backend, "tenant-system").0,
        403
    );
    // Not a bearer token, or no resource server of that name.
    assert_eq!(
        support::uma_decision(&url, "acme", &apps_id_token, backend, create).0,
        401
    );
    let (status, body) = support::uma_decision(&url, "acme", &apps, "no-such-client", create);
    assert_eq!(status, 400, "{body}");

    // The role taken away: the next login's token is refused.
    let r = call_json_as(
        a,
        "PATCH",
        &format!("/api/v1/tenants/acme/users/{}", ids[0]),
        None,
        Some(&json!({"roles": ["dashboard-admin"]})),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let (apps, _) = support::login(&url, "acme", frontend, "apps", "apps-password");
    assert_eq!(
        support::uma_decision(&url, "acme", &apps, backend, create).0,
        403
    );
}
