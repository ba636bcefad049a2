//! IAM with multitenancy: a tenant's tokens come from its own realm, whose issuer and keys IAM
//! learns from the Tenant Manager (the real `tenant-manager` binary here); a tenant's caller acts
//! in its tenant only; the system tenant's callers may act in any.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::keycloak::{Keycloak, Mint};
use support::proc::{self, Resp, call_json_as};

const TM: &str = env!("CARGO_BIN_EXE_tenant-manager");

fn body(r: &Resp) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

#[test]
fn tenants_act_in_their_own_tenant_only() {
    let kc = Keycloak::start();
    kc.add_realm("acme");
    kc.add_realm("ghost");
    kc.add_client("kaa", "kaa-iam", "iam-secret");

    // The Tenant Manager knows `acme` (its realm lives on the stand-in Keycloak).
    let dir = support::TempDir::new();
    let cfg = dir.0.join("tm.yml");
    std::fs::write(
        &cfg,
        format!(
            "tenant-manager:\n  keycloak:\n    public-url: http://{}\n",
            kc.addr
        ),
    )
    .unwrap();
    let tm = proc::start(
        TM,
        &dir.0,
        &[
            ("SERVER_PORT", "0"),
            ("APP_CONFIG_PATH", cfg.to_str().unwrap()),
        ],
    )
    .unwrap();
    let r = call_json_as(
        tm.addr,
        "POST",
        "/api/v1/tenants",
        None,
        Some(&json!({"id": "acme"})),
    );
    assert_eq!(r.status, 202, "{}", body(&r));
    let started = Instant::now();
    let acme = loop {
        let t = call_json_as(tm.addr, "GET", "/api/v1/tenants/acme", None, None).json();
        if t["status"] == "AVAILABLE" {
            break t;
        }
        assert!(started.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    };
    let acme_client = acme["client_backend_id"].as_str().unwrap().to_string();
    let acme_frontend = acme["client_frontend_id"].as_str().unwrap().to_string();

    // The system realm's web UI client is among IAM's audiences, as in the shipped
    // configuration; a tenant's web UI client is accepted for its realm's tokens.
    let yaml = format!(
        "security:\n  enabled: true\n  client-id: kaa-iam\n  client-secret: iam-secret\n  audiences: [kaa-iam, kaa-frontend]\n  issuer:\n    public-url: {}\n  multitenancy:\n    enabled: true\n    tenant-manager-url: http://{}\n",
        kc.issuer("kaa"),
        tm.addr
    );
    let iam_dir = support::TempDir::new();
    let iam = support::service::start_iam(&support::sqlite_settings(&iam_dir), &yaml);
    let a = iam.addr;

    // The tokens the web UI's logins get: acme's administrator through acme's web UI client,
    // the platform's through the system realm's.
    kc.add_user("acme", "boss", "boss-password", &["tenant-admin"]);
    kc.add_user(
        "kaa",
        "root",
        "root-password",
        &["tenant-admin", "platform-admin"],
    );
    let (acme_admin, acme_id_token) =
        support::login(&kc.url(), "acme", &acme_frontend, "boss", "boss-password");
    let (system_admin, _) =
        support::login(&kc.url(), "kaa", "kaa-frontend", "root", "root-password");
    assert_eq!(support::jwt_payload(&acme_admin)["aud"], "account");
    let r = call_json_as(a, "GET", "/api/v1/users/me/krn", Some(&acme_id_token), None);
    assert_eq!(r.status, 401, "an ID token: {}", body(&r));

    // The tenant's administrator works in its tenant.
    let r = call_json_as(
        a,
        "POST",
        "/api/v1/policies",
        Some(&acme_admin),
        Some(&json!({"name": "readers", "statements": [
        {"effect": "allow", "actions": ["iam:user:read"], "resources": ["krn:iam:acme::user/*"]}]})),
    );
    assert_eq!(r.status, 201, "{}", body(&r));
    assert_eq!(r.json()["data"]["krn"], "krn:iam:acme::policy/readers");
    let r = call_json_as(a, "GET", "/api/v1/users/me/krn", Some(&acme_admin), None);
    assert_eq!(r.json()["data"], "krn:iam:acme::user/boss");
    let r = call_json_as(a, "GET", "/api/v1/policies", Some(&acme_admin), None);
    assert_eq!(r.status, 200, "{}", body(&r));
    assert_eq!(r.json()["count"], 1);

    // The tenant's audit trail: its own changes, by its own administrator; another tenant's
    // trail is not its to read; the platform's administrator reads any.
    let r = call_json_as(a, "GET", "/api/v1/audit", Some(&acme_admin), None);
    assert_eq!(r.status, 200, "{}", body(&r));
    let trail = r.json()["data"].as_array().unwrap().clone();
    assert_eq!(trail.len(), 1, "{trail:?}");
    assert_eq!(trail[0]["entity"], "krn:iam:acme::policy/readers");
    assert_eq!(trail[0]["principal"], "krn:iam:acme::user/boss");
    assert_eq!(trail[0]["callerTenantID"], "acme");
    let r = call_json_as(
        a,
        "GET",
        "/api/v1/audit?tenantID=kaa",
        Some(&acme_admin),
        None,
    );
    assert_eq!(r.status, 403, "{}", body(&r));
    let r = call_json_as(
        a,
        "GET",
        "/api/v1/audit?tenantID=acme",
        Some(&system_admin),
        None,
    );
    assert_eq!(r.status, 200, "{}", body(&r));
    assert_eq!(r.json()["data"], json!(trail));
    let r = call_json_as(a, "GET", "/api/v1/audit", Some(&system_admin), None);
    assert!(
        r.json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|row| row["tenantID"] == "kaa"),
        "{}",
        body(&r)
    );

    // Replaying logged decisions: a tenant's own, yes; another tenant's, no (the system
    // tenant's administrator may replay any).
    let logged = |tenant: &str| {
        json!({"decisions": [{"time": "2026-12-07T10:00:00.000Z", "tenantID": tenant,
            "principal": format!("krn:iam:{tenant}::user/carol"), "action": "iam:user:read",
            "resource": format!("krn:iam:{tenant}::user/dave"), "outcome": "allow", "statements": []}]})
    };
    let r = call_json_as(
        a,
        "POST",
        "/api/v1/evaluate/replay",
        Some(&acme_admin),
        Some(&logged("acme")),
    );
    assert_eq!(r.status, 200, "{}", body(&r));
    assert_eq!(
        r.json()["data"]["results"][0]["current"]["outcome"],
        "implicitDeny"
    );
    let r = call_json_as(
        a,
        "POST",
        "/api/v1/evaluate/replay",
        Some(&acme_admin),
        Some(&logged("kaa")),
    );
    assert_eq!(r.status, 403, "{}", body(&r));
    let r = call_json_as(
        a,
        "POST",
        "/api/v1/evaluate/replay",
        Some(&system_admin),
        Some(&logged("acme")),
    );
    assert_eq!(r.status, 200, "{}", body(&r));

    // Tokens naming realms no tenant has (unverifiable: IAM would have to ask the Tenant
    // Manager first) are refused, and do not push the tenant's issuer out of the cache.
    for i in 0..200 {
        let stray = kc.mint(
            "acme",
            &Mint {
                iss: Some(kc.issuer(&format!("stray-{i}"))),
                ..Mint::user("mallory").roles(&["tenant-admin"])
            },
        );
        let r = call_json_as(a, "GET", "/api/v1/users/me/krn", Some(&stray), None);
        assert_eq!(r.status, 401, "{}", body(&r));
    }
    let r = call_json_as(a, "GET", "/api/v1/users/me/krn", Some(&acme_admin), None);
    assert_eq!(r.json()["data"], "krn:iam:acme::user/boss");

    // ...and nowhere else.
    let before = call_json_as(
        a,
        "GET",
        "/api/v1/policies?tenantID=kaa&pageSize=100",
        Some(&system_admin),
        None,
    )
    .json();
    let r = call_json_as(
        a,
        "GET",
        "/api/v1/policies?tenantID=kaa",
        Some(&acme_admin),
        None,
    );
    assert_eq!(r.status, 403, "{}", body(&r));
    let r = call_json_as(
        a,
        "POST",
        "/api/v1/policies",
        Some(&acme_admin),
        Some(&json!({"name": "reach", "statements": [
        {"effect": "allow", "actions": ["iam:user:read"], "resources": ["krn:iam:kaa::user/*"]}]})),
    );
    assert_eq!(
        r.status,
        400,
        "a statement naming another tenant: {}",
        body(&r)
    );
    let r = call_json_as(
        a,
        "POST",
        "/api/v1/policies",
        Some(&acme_admin),
        Some(&json!({"name": "reach", "statements": [
        {"effect": "allow", "actions": ["iam:user:read"], "resources": ["*"]}]})),
    );
    assert_eq!(r.status, 400, "a wildcard tenant: {}", body(&r));
    let kaa_policy = "a3JuOmlhbTprYWE6OnBvbGljeS90ZW5hbnQtYWRtaW4%3D";
    let r = call_json_as(
        a,
        "GET",
        &format!("/api/v1/policies/{kaa_policy}"),
        Some(&acme_admin),
        None,
    );
    assert_eq!(
        r.status,
        404,
        "another tenant's entity is invisible: {}",
        body(&r)
    );
    let r = call_json_as(
        a,
        "POST",
        "/api/v1/evaluate",
        Some(&acme_admin),
        Some(&json!({"principal": "krn:iam:kaa::user/root",
        "action": "iam:user:read", "resources": ["krn:iam:kaa::user/x"]})),
    );
    assert_eq!(r.status, 403, "{}", body(&r));
    let after = call_json_as(
        a,
        "GET",
        "/api/v1/policies?tenantID=kaa&pageSize=100",
        Some(&system_admin),
        None,
    )
    .json();
    assert_eq!(before, after);

    // The system tenant's administrator may act in any tenant.
    let r = call_json_as(
        a,
        "GET",
        "/api/v1/policies?tenantID=acme",
        Some(&system_admin),
        None,
    );
    assert_eq!(r.status, 200, "{}", body(&r));
    assert_eq!(r.json()["count"], 1);

    // Tokens of realms that are no tenant, or meant for another client, are refused.
    let ghost = kc.mint("ghost", &Mint::user("x").roles(&["tenant-admin"]));
    assert_eq!(
        call_json_as(a, "GET", "/api/v1/policies", Some(&ghost), None).status,
        401
    );
    let wrong_aud = kc.mint(
        "acme",
        &Mint {
            aud: Some(vec!["other".into()]),
            azp: Some("other".into()),
            ..Mint::user("boss").roles(&["tenant-admin"])
        },
    );
    assert_eq!(
        call_json_as(a, "GET", "/api/v1/policies", Some(&wrong_aud), None).status,
        401
    );
    // A token naming acme's issuer but signed with the system realm's key.
    let forged = kc.mint(
        "kaa",
        &Mint {
            iss: Some(kc.issuer("acme")),
            aud: Some(vec![acme_client.clone()]),
            ..Mint::user("boss").roles(&["tenant-admin"])
        },
    );
    assert_eq!(
        call_json_as(a, "GET", "/api/v1/policies", Some(&forged), None).status,
        401
    );
    assert!(tm.terminate(Duration::from_secs(10)).success());
}
