#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! IAM with security and multitenancy on, against the real Keycloak that
//! `scripts/dev-services.sh` starts (`IAM_TEST_KEYCLOAK_URL`) and a Tenant Manager provisioning
//! on it: tokens Keycloak issues (a tenant administrator's password grant through the web UI's
//! client, as a browser's login gets it; the tenant's backend client credentials) are accepted
//! for their tenant; an ID token and a token of another realm are not; a realm key rotated
//! through the admin API while calls go on is picked up. Skipped, with a `skipped:` line,
//! without the variable.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::proc::{Resp, call_json_as, call_json_with};
use support::service::{start_iam, start_tm};

fn call(a: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Resp {
    call_json_with(a, method, path, None, &[], body, Duration::from_secs(60)).unwrap()
}

fn expect(r: &Resp, status: u16) -> Value {
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
    if r.body.is_empty() {
        Value::Null
    } else {
        r.json()
    }
}

fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn keycloak_tokens_act_in_their_tenant_and_a_rotated_key_is_picked_up() {
    let Some(kc) = support::real_keycloak("IAM against the real Keycloak") else {
        return;
    };
    let admin = kc.admin();
    let run = support::unique("iam").replace('_', "-").to_lowercase();

    // The system realm of this run, with IAM's own confidential client.
    let system = format!("{run}-sys");
    admin
        .create_realm(&json!({"realm": system, "enabled": true}))
        .unwrap();
    let iam_secret = "iam-client-secret";
    admin
        .create_client(
            &system,
            &json!({"clientId": "kaa-iam", "publicClient": false, "secret": iam_secret,
                    "serviceAccountsEnabled": true, "standardFlowEnabled": false}),
        )
        .unwrap();

    // A tenant provisioned on the real server, with its first administrator.
    let dir = support::TempDir::new();
    let tm = start_tm(
        &support::sqlite_settings(&dir),
        &format!(
            "tenant-manager:\n  keycloak:\n    url: {}\n    username: {}\n    password: {}\n  tasks:\n    workers: 2\n    backoff-ms: 200\n    max-backoff-ms: 2000\n",
            kc.url, kc.admin_username, kc.admin_password
        ),
    );
    let id = format!("{run}-t");
    expect(
        &call(tm.addr, "POST", "/api/v1/tenants", Some(&json!({"id": id}))),
        202,
    );
    let started = Instant::now();
    let t = loop {
        let t = call(tm.addr, "GET", &format!("/api/v1/tenants/{id}"), None).json();
        if t["status"] == "AVAILABLE" {
            break t;
        }
        assert_ne!(t["status"], "FAILED", "{t}");
        assert!(started.elapsed() < Duration::from_secs(120), "{t}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let realm = t["realm_name"].as_str().unwrap().to_string();
    let frontend = t["client_frontend_id"].as_str().unwrap().to_string();
    let backend = t["client_backend_id"].as_str().unwrap().to_string();
    let ctx = expect(
        &call(
            tm.addr,
            "GET",
            &format!("/api/v1/tenants/{id}/security-context"),
            None,
        ),
        200,
    );
    expect(
        &call(
            tm.addr,
            "POST",
            &format!("/api/v1/tenants/{id}/users"),
            Some(&json!({"username": "boss", "password": "boss-password",
                         "roles": ["tenant-admin"]})),
        ),
        201,
    );

    let iam_dir = support::TempDir::new();
    let iam = start_iam(
        &support::sqlite_settings(&iam_dir),
        &format!(
            "security:\n  enabled: true\n  client-id: kaa-iam\n  client-secret: {iam_secret}\n  jwks-refresh-interval: 1\n  issuer:\n    public-url: {}/realms/{system}\n  multitenancy:\n    enabled: true\n    tenant-manager-url: http://{}\n",
            kc.url, tm.addr
        ),
    );
    let a = iam.addr;

    // The tenant administrator's login through the web UI's client: `aud: account`, `azp` the
    // frontend client, exactly as a browser gets it.
    let login = || {
        let (status, body) = kc.token(
            &realm,
            &[
                ("grant_type", "password"),
                ("client_id", &frontend),
                ("username", "boss"),
                ("password", "boss-password"),
                ("scope", "openid"),
            ],
        );
        assert_eq!(status, 200, "{body}");
        body
    };
    let tokens = login();
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let c = claims(&access);
    assert_eq!(c["azp"], frontend.as_str(), "{c}");
    assert_eq!(
        c["iss"], ctx["issuer"],
        "the security context names the real issuer"
    );

    let r = call_json_as(a, "GET", "/api/v1/users/me/krn", Some(&access), None);
    assert_eq!(r.status, 200, "{}: {}", String::from_utf8_lossy(&r.body), c);
    assert_eq!(r.json()["data"], format!("krn:iam:{id}::user/boss"));
    let r = call_json_as(
        a,
        "POST",
        "/api/v1/policies",
        Some(&access),
        Some(
            &json!({"name": "readers", "statements": [{"effect": "allow",
            "actions": ["iam:user:read"], "resources": [format!("krn:iam:{id}::user/*")]}]}),
        ),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    // ...in its own tenant only.
    let r = call_json_as(
        a,
        "GET",
        "/api/v1/policies?tenantID=kaa",
        Some(&access),
        None,
    );
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));

    // The ID token of the same login is not an access token.
    let id_token = tokens["id_token"].as_str().expect("an ID token");
    let r = call_json_as(a, "GET", "/api/v1/users/me/krn", Some(id_token), None);
    assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
    // The same user's token issued to another client of the realm (Keycloak's `admin-cli`):
    // not meant for IAM.
    let (status, body) = kc.token(
        &realm,
        &[
            ("grant_type", "password"),
            ("client_id", "admin-cli"),
            ("username", "boss"),
            ("password", "boss-password"),
        ],
    );
    assert_eq!(status, 200, "{body}");
    let other = body["access_token"].as_str().unwrap();
    assert_eq!(claims(other)["azp"], "admin-cli");
    let r = call_json_as(a, "GET", "/api/v1/users/me/krn", Some(other), None);
    assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));

    // The tenant's backend client (client credentials) is a caller of that tenant too.
    let (status, body) = kc.token(
        &realm,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &backend),
            ("client_secret", ctx["client_secret"].as_str().unwrap()),
        ],
    );
    assert_eq!(status, 200, "{body}");
    let service = body["access_token"].as_str().unwrap().to_string();
    let r = call_json_as(a, "GET", "/api/v1/users/me/krn", Some(&service), None);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json()["data"],
        format!(
            "krn:iam:{id}::user/service-account-{}",
            backend.to_lowercase()
        )
    );

    // A token of a realm no tenant has is refused.
    let (status, body) = kc.token(
        &system,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "kaa-iam"),
            ("client_secret", iam_secret),
        ],
    );
    assert_eq!(status, 200, "{body}");
    let stranger_realm = format!("{run}-stranger");
    admin
        .create_realm(&json!({"realm": stranger_realm, "enabled": true}))
        .unwrap();
    admin
        .create_client(
            &stranger_realm,
            &json!({"clientId": "kaa-iam", "publicClient": false, "secret": "x",
                    "serviceAccountsEnabled": true}),
        )
        .unwrap();
    let (status, body) = kc.token(
        &stranger_realm,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "kaa-iam"),
            ("client_secret", "x"),
        ],
    );
    assert_eq!(status, 200, "{body}");
    let stranger = body["access_token"].as_str().unwrap();
    let r = call_json_as(a, "GET", "/api/v1/users/me/krn", Some(stranger), None);
    assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));

    // A new signing key, of higher priority, added through the admin API while calls go on:
    // tokens of the old key keep working, and tokens signed with the new one are accepted once
    // IAM fetched the key set again for the unknown kid (at most once per
    // `security.jwks-refresh-interval`, 1 s here, as Keycloak's own adapters throttle it).
    let old_kid = jwt_simple::prelude::Token::decode_metadata(&access)
        .unwrap()
        .key_id()
        .unwrap()
        .to_string();
    let realm_id = admin.get_realm(&realm).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    admin
        .create_component(
            &realm,
            &json!({"name": "rotated", "providerId": "rsa-generated",
                    "providerType": "org.keycloak.keys.KeyProvider", "parentId": realm_id,
                    "config": {"priority": ["1000"], "keySize": ["2048"], "algorithm": ["RS256"]}}),
        )
        .unwrap();
    let fresh = login()["access_token"].as_str().unwrap().to_string();
    let new_kid = jwt_simple::prelude::Token::decode_metadata(&fresh)
        .unwrap()
        .key_id()
        .unwrap()
        .to_string();
    assert_ne!(new_kid, old_kid, "the realm signs with the new key");
    let rotated = Instant::now();
    loop {
        let old = call_json_as(a, "GET", "/api/v1/users/me/krn", Some(&access), None);
        assert_eq!(old.status, 200, "{}", String::from_utf8_lossy(&old.body));
        let new = call_json_as(a, "GET", "/api/v1/users/me/krn", Some(&fresh), None);
        if new.status == 200 {
            break;
        }
        assert_eq!(new.status, 401, "{}", String::from_utf8_lossy(&new.body));
        assert!(
            rotated.elapsed() < Duration::from_secs(5),
            "the new key was never picked up: {}",
            String::from_utf8_lossy(&new.body)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // IAM users of the tenant are users of its realm: created, logged in, disabled, deleted.
    let r = call_json_as(
        a,
        "POST",
        "/api/v1/users",
        Some(&access),
        Some(
            &json!({"username": "alice", "email": "alice@example.com", "firstName": "Alice",
                     "password": "alice-password", "confirmPassword": "alice-password"}),
        ),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let alice = r.json()["data"].clone();
    let auth_id = alice["authID"].as_str().expect("authID").to_string();
    let kc_alice = admin
        .find_user(&realm, "alice")
        .unwrap()
        .expect("alice in the realm");
    assert_eq!(kc_alice["id"], auth_id.as_str());
    assert_eq!(kc_alice["email"], "alice@example.com");
    assert_eq!(kc_alice["enabled"], true);
    let alice_login = || {
        kc.token(
            &realm,
            &[
                ("grant_type", "password"),
                ("client_id", &frontend),
                ("username", "alice"),
                ("password", "alice-password"),
            ],
        )
    };
    let (status, body) = alice_login();
    assert_eq!(status, 200, "{body}");
    let alice_token = body["access_token"].as_str().unwrap().to_string();
    let r = call_json_as(a, "GET", "/api/v1/users/me/krn", Some(&alice_token), None);
    assert_eq!(r.json()["data"], format!("krn:iam:{id}::user/alice"));
    let path = format!(
        "/api/v1/users/{}",
        alice["id"]
            .as_str()
            .unwrap()
            .replace('/', "%2F")
            .replace('+', "%2B")
            .replace('=', "%3D")
    );
    let r = call_json_as(
        a,
        "PATCH",
        &path,
        Some(&access),
        Some(&json!({"enabled": false, "lastName": "Builder"})),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let kc_alice = admin.get_user(&realm, &auth_id).unwrap();
    assert_eq!(kc_alice["enabled"], false);
    assert_eq!(kc_alice["lastName"], "Builder");
    assert_ne!(alice_login().0, 200, "a disabled user cannot log in");
    let r = call_json_as(a, "DELETE", &path, Some(&access), None);
    assert!(
        r.status == 204 || r.status == 200,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert!(admin.find_user(&realm, "alice").unwrap().is_none());

    for r in [&realm, &system, &stranger_realm] {
        let _ = admin.delete_realm(r);
    }
}
