//! The Tenant Manager with security on: tokens of the system realm only, and each endpoint's
//! scope on `kaa-system` decided by Keycloak (UMA, `response_mode=decision`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use serde_json::json;
use support::keycloak::{Keycloak, Mint};
use support::proc::call_json_as;

#[test]
fn scopes_on_kaa_system_guard_every_endpoint() {
    let kc = Keycloak::start();
    kc.add_client("kaa", "kaa-tm", "tm-secret");
    kc.add_realm("acme");
    for scope in [
        "kaa:tenant:read",
        "kaa:tenant:create",
        "kaa:tenant:role:read",
        "kaa:tenant:tenant-user:read",
    ] {
        kc.grant_scope("kaa", "platform-admin", scope);
    }
    kc.grant_scope("kaa", "viewer", "kaa:tenant:read");
    let dir = support::TempDir::new();
    let yaml = format!(
        "security:\n  enabled: true\n  client-id: kaa-tm\n  client-secret: tm-secret\n  audiences: [kaa-tm, kaa-frontend]\n  issuer:\n    public-url: {}\n",
        kc.issuer("kaa")
    );
    let tm = support::service::start_tm(&support::sqlite_settings(&dir), &yaml);
    let a = tm.addr;
    let admin = kc.mint(
        "kaa",
        &Mint {
            aud: None,
            ..Mint::user("root").roles(&["platform-admin"])
        },
    );
    let viewer = kc.mint(
        "kaa",
        &Mint {
            aud: None,
            ..Mint::user("ann").roles(&["viewer"])
        },
    );
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

    // Tokens not meant for the Tenant Manager: another service's audience, an ID token.
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
    let nobody = kc.mint(
        "kaa",
        &Mint {
            aud: None,
            ..Mint::user("joe").roles(&["nobody"])
        },
    );
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
