//! IAM with `security.enabled`: every API call needs a valid bearer token from the configured
//! issuer, and every endpoint's action is decided by IAM's own engine. An attack catalogue: each
//! case asserts the status and that nothing changed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwt_simple::prelude::*;
use kaa::policy::Krn;
use serde_json::{Value, json};
use support::keycloak::{Keycloak, Mint};
use support::proc::{Resp, call_json_as, request};

fn config(kc: &Keycloak) -> String {
    format!(
        "security:\n  enabled: true\n  client-id: kaa-iam\n  audiences: [kaa-iam, kaa-frontend]\n  jwks-refresh-interval: 2\n  issuer:\n    public-url: {}\n",
        kc.issuer("kaa")
    )
}

fn raw(a: SocketAddr, headers: &[(&str, &str)]) -> Resp {
    request(
        a,
        "GET",
        "/api/v1/policies",
        headers,
        b"",
        Duration::from_secs(10),
    )
    .unwrap()
}

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

/// Everything a caller could have changed, read with the admin token.
fn snapshot(a: SocketAddr, admin: &str) -> Value {
    let mut all = serde_json::Map::new();
    for what in ["policies", "users", "groups", "resources", "pools"] {
        let r = call_json_as(
            a,
            "GET",
            &format!("/api/v1/{what}?pageSize=100"),
            Some(admin),
            None,
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let mut v = r.json();
        for item in v["data"].as_array_mut().unwrap() {
            item.as_object_mut().unwrap().remove("updated");
        }
        all.insert(what.into(), v);
    }
    Value::Object(all)
}

fn assert_401(r: &Resp, what: &str) {
    assert_eq!(
        r.status,
        401,
        "{what}: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .starts_with("Bearer realm=\"kaa\""),
        "{what}"
    );
    assert!(r.json()["message"].is_string(), "{what}");
}

/// A token with a hand-made header and payload, signed (or not) by `sign`.
fn forge(header: Value, payload: Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let p = URL_SAFE_NO_PAD.encode(payload.to_string());
    let input = format!("{h}.{p}");
    let sig = URL_SAFE_NO_PAD.encode(sign(input.as_bytes()));
    format!("{input}.{sig}")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn attack_catalogue() {
    let kc = Keycloak::start();
    let dir = support::TempDir::new();
    let svc = support::service::start_iam(&support::sqlite_settings(&dir), &config(&kc));
    let a = svc.addr;
    let admin = kc.mint("kaa", &Mint::user("admin").roles(&["tenant-admin"]));
    let bob = kc.mint("kaa", &Mint::user("bob"));

    // The tenant administrator (base policy) sets the stage.
    let r = call_json_as(
        a,
        "POST",
        "/api/v1/users",
        Some(&admin),
        Some(
            &json!({"username": "bob", "password": "bob-password", "confirmPassword": "bob-password", "enabled": true}),
        ),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = call_json_as(
        a,
        "POST",
        "/api/v1/policies",
        Some(&admin),
        Some(&json!({"name": "creators", "statements": [
        {"effect": "allow", "actions": ["iam:policy:create", "iam:policy:read"], "resources": ["krn:iam:kaa::policy/*"]}]})),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = call_json_as(
        a,
        "PUT",
        &format!(
            "/api/v1/users/{}/policies/attach",
            id("krn:iam:kaa::user/bob")
        ),
        Some(&admin),
        Some(&json!({"policyIDs": [raw_id("krn:iam:kaa::policy/creators")]})),
    );
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    let r = call_json_as(
        a,
        "POST",
        "/api/v1/policies",
        Some(&admin),
        Some(&json!({"name": "everything", "statements": [
        {"effect": "allow", "actions": ["*"], "resources": ["*"]}]})),
    );
    assert_eq!(r.status, 201);
    let before = snapshot(a, &admin);

    // Operational routes need no token.
    assert_eq!(call_json_as(a, "GET", "/health", None, None).status, 200);
    assert_eq!(
        call_json_as(a, "GET", "/health/ready", None, None).status,
        200
    );
    assert_eq!(call_json_as(a, "GET", "/metrics", None, None).status, 200);

    // 1-6: the header.
    let r = raw(a, &[]);
    assert_401(&r, "no header");
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"kaa\""));
    assert_401(&raw(a, &[("Authorization", "Basic Ym9iOmJvYg==")]), "basic");
    assert_401(&raw(a, &[("Authorization", "Bearer")]), "empty bearer");
    assert_401(&raw(a, &[("Authorization", "Bearer a.b")]), "two parts");
    assert_401(
        &raw(a, &[("Authorization", "Bearer not-a-token-at-all")]),
        "garbage",
    );
    let big = format!("Bearer {}.{}.{}", "a".repeat(6000), "b".repeat(6000), "c");
    assert_401(&raw(a, &[("Authorization", &big)]), "big token");
    let huge = format!("Bearer {}.{}.{}", "a".repeat(9000), "b".repeat(9000), "c");
    assert_eq!(
        raw(a, &[("Authorization", &huge)]).status,
        431,
        "headers past the limit"
    );

    let kid = kc.current_kid("kaa");
    let iss = kc.issuer("kaa");
    let claims = json!({"iss": iss, "sub": "sub-admin", "aud": "kaa-iam", "exp": now() + 300, "iat": now(),
        "preferred_username": "admin", "realm_access": {"roles": ["tenant-admin"]}});
    // 7: alg none.
    let none = forge(
        json!({"alg": "none", "typ": "JWT", "kid": kid}),
        claims.clone(),
        |_| Vec::new(),
    );
    assert_401(
        &call_json_as(a, "GET", "/api/v1/policies", Some(&none), None),
        "alg none",
    );
    let none2 = forge(json!({"alg": "None", "kid": kid}), claims.clone(), |_| {
        b"x".to_vec()
    });
    assert_401(
        &call_json_as(a, "GET", "/api/v1/policies", Some(&none2), None),
        "alg None",
    );
    // 8: HS256 keyed with the realm's RSA public key (algorithm confusion).
    let der = kc.public_key_der("kaa");
    let hs = HS256Key::from_bytes(&der);
    let confused = forge(
        json!({"alg": "HS256", "typ": "JWT", "kid": kid}),
        claims.clone(),
        |input| hs.authentication_tag(input),
    );
    assert_401(
        &call_json_as(a, "GET", "/api/v1/policies", Some(&confused), None),
        "HS256 with the public key",
    );
    // 9: a key of another issuer under the realm's kid.
    let other = RS256KeyPair::generate(2048).unwrap().with_key_id(&kid);
    let custom: Value =
        json!({"preferred_username": "admin", "realm_access": {"roles": ["tenant-admin"]}});
    let c = Claims::with_custom_claims(custom, Duration::from_secs(300).into())
        .with_issuer(&iss)
        .with_subject("sub-admin")
        .with_audience("kaa-iam");
    let foreign = other.sign(c).unwrap();
    assert_401(
        &call_json_as(a, "GET", "/api/v1/policies", Some(&foreign), None),
        "foreign key",
    );
    // 10: tampered payload: bob's signature with an admin payload.
    let parts: Vec<&str> = bob.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    assert_401(
        &call_json_as(
            a,
            "POST",
            "/api/v1/policies",
            Some(&tampered),
            Some(&json!({"name": "t", "statements": []})),
        ),
        "tampered",
    );
    // 11-17: claims.
    let bad = |m: Mint| kc.mint("kaa", &m);
    let admin_mint = Mint::user("admin").roles(&["tenant-admin"]);
    assert_401(
        &call_json_as(
            a,
            "GET",
            "/api/v1/policies",
            Some(&bad(Mint {
                exp_in: -120,
                ..admin_mint.clone()
            })),
            None,
        ),
        "expired",
    );
    assert_401(
        &call_json_as(
            a,
            "GET",
            "/api/v1/policies",
            Some(&bad(Mint {
                nbf_in: Some(600),
                ..admin_mint.clone()
            })),
            None,
        ),
        "not yet valid",
    );
    assert_401(
        &call_json_as(
            a,
            "GET",
            "/api/v1/policies",
            Some(&bad(Mint {
                iss: Some(kc.issuer("other")),
                ..admin_mint.clone()
            })),
            None,
        ),
        "wrong iss",
    );
    assert_401(
        &call_json_as(
            a,
            "GET",
            "/api/v1/policies",
            Some(&bad(Mint {
                aud: Some(vec!["billing".into()]),
                azp: Some("billing".into()),
                ..admin_mint.clone()
            })),
            None,
        ),
        "wrong aud",
    );
    // Meant for another service though got by IAM's own client; a token of a client IAM does
    // not know (Keycloak's default audience only); an ID token.
    for (m, what) in [
        (
            Mint {
                aud: Some(vec!["billing".into()]),
                azp: Some("kaa-iam".into()),
                ..admin_mint.clone()
            },
            "aud billing, azp kaa-iam",
        ),
        (
            Mint {
                aud: Some(vec!["account".into()]),
                azp: Some("stranger".into()),
                ..admin_mint.clone()
            },
            "a client not among the audiences",
        ),
        (
            Mint {
                typ: Some("ID".into()),
                ..admin_mint.clone()
            },
            "an ID token",
        ),
    ] {
        assert_401(
            &call_json_as(a, "GET", "/api/v1/policies", Some(&bad(m)), None),
            what,
        );
    }
    assert_401(
        &call_json_as(
            a,
            "GET",
            "/api/v1/policies",
            Some(&bad(Mint {
                no_exp: true,
                ..admin_mint.clone()
            })),
            None,
        ),
        "no exp",
    );
    assert_401(
        &call_json_as(
            a,
            "GET",
            "/api/v1/policies",
            Some(&bad(Mint {
                sub: String::new(),
                ..admin_mint.clone()
            })),
            None,
        ),
        "no sub",
    );
    let fetches = kc.jwks_fetches.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..5 {
        assert_401(
            &call_json_as(
                a,
                "GET",
                "/api/v1/policies",
                Some(&bad(Mint {
                    kid: Some("no-such-kid".into()),
                    ..admin_mint.clone()
                })),
                None,
            ),
            "unknown kid",
        );
    }
    let after = kc.jwks_fetches.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        after - fetches <= 1,
        "unknown kids refetched the key set {} times",
        after - fetches
    );
    // A token from another realm of the same server.
    kc.add_realm("other");
    let other_realm = kc.mint("other", &admin_mint);
    assert_401(
        &call_json_as(a, "GET", "/api/v1/policies", Some(&other_realm), None),
        "other realm",
    );

    // 18-24: authorization with valid tokens.
    let r = call_json_as(
        a,
        "POST",
        "/api/v1/users",
        Some(&bob),
        Some(
            &json!({"username": "eve", "password": "eve-password", "confirmPassword": "eve-password"}),
        ),
    );
    assert_eq!(r.status, 403);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("iam:user:create")
    );
    // Naming oneself in a statement is attaching: needs iam:policy:user:attach on oneself.
    let r = call_json_as(
        a,
        "POST",
        "/api/v1/policies",
        Some(&bob),
        Some(&json!({"name": "mine", "statements": [
        {"effect": "allow", "actions": ["*"], "resources": ["*"], "principals": ["krn:iam:kaa::user/bob"]}]})),
    );
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    let r = call_json_as(
        a,
        "POST",
        "/api/v1/policies",
        Some(&bob),
        Some(&json!({"name": "mine", "statements": [
        {"effect": "allow", "actions": ["*"], "resources": ["*"], "principals": ["krn:iam:kaa::user/*"]}]})),
    );
    assert_eq!(
        r.status, 403,
        "a wildcard principal is attaching to everyone"
    );
    let r = call_json_as(
        a,
        "PUT",
        &format!(
            "/api/v1/users/{}/policies/attach",
            id("krn:iam:kaa::user/bob")
        ),
        Some(&bob),
        Some(&json!({"policyIDs": [raw_id("krn:iam:kaa::policy/everything")]})),
    );
    assert_eq!(r.status, 403, "self-escalation through attach");
    let r = call_json_as(
        a,
        "DELETE",
        &format!("/api/v1/policies/{}", id("krn:iam:kaa::policy/everything")),
        Some(&bob),
        None,
    );
    assert_eq!(r.status, 403);
    let r = call_json_as(
        a,
        "POST",
        "/api/v1/evaluate",
        Some(&bob),
        Some(&json!({"principal": "krn:iam:kaa::user/admin",
        "action": "iam:user:read", "resources": ["krn:iam:kaa::user/x"]})),
    );
    assert_eq!(
        r.status, 403,
        "evaluating another principal needs iam:user:evaluate"
    );
    let r = call_json_as(
        a,
        "GET",
        &format!("/api/v1/policies/{}", id("krn:iam:kaa::user/bob")),
        Some(&bob),
        None,
    );
    assert_eq!(r.status, 404, "an id of the wrong type");
    let r = call_json_as(a, "GET", "/api/v1/policies/..%2F..%2Fetc", Some(&bob), None);
    assert_eq!(r.status, 404);
    assert_eq!(snapshot(a, &admin), before, "no attack changed anything");

    // What bob may do, he may do; his own decisions need no extra right.
    let r = call_json_as(
        a,
        "POST",
        "/api/v1/policies",
        Some(&bob),
        Some(
            &json!({"name": "bobs", "description": "it's \"fine\"; --", "statements": [
        {"effect": "allow", "actions": ["iam:user:read"], "resources": ["krn:iam:kaa::user/*"]}]}),
        ),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["data"]["description"], "it's \"fine\"; --");
    let r = call_json_as(
        a,
        "POST",
        "/api/v1/evaluate",
        Some(&bob),
        Some(&json!({"action": "iam:policy:read", "resources": ["krn:iam:kaa::policy/x"]})),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = call_json_as(a, "GET", "/api/v1/users/me/krn", Some(&bob), None);
    assert_eq!(r.json()["data"], "krn:iam:kaa::user/bob");
    // iamcore's name for the same question, which Kaa's downstream services ask.
    let r = call_json_as(a, "GET", "/api/v1/users/me/irn", Some(&bob), None);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json(), json!({"data": "krn:iam:kaa::user/bob"}));
    assert_eq!(
        call_json_as(a, "GET", "/api/v1/users/me/irn", None, None).status,
        401
    );
    let r = call_json_as(a, "GET", "/api/v1/users/me", Some(&bob), None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"]["username"], "bob");

    // Key rotation: a token signed with a new key is accepted once the key set is refetched
    // (an unknown key id refetches it, at most once per `jwks-refresh-interval`).
    kc.rotate("kaa");
    let fresh = kc.mint("kaa", &admin_mint);
    support::wait_until("a token of the new key accepted", || {
        let s = call_json_as(a, "GET", "/api/v1/policies", Some(&fresh), None).status;
        assert!(s == 200 || s == 401, "{s}");
        s == 200
    });
    assert_eq!(
        call_json_as(a, "GET", "/api/v1/policies", Some(&admin), None).status,
        200,
        "old keys stay valid while published"
    );
}

#[test]
fn an_unreachable_issuer_is_503_not_401() {
    let kc = Keycloak::start();
    let token = kc.mint("kaa", &Mint::user("admin").roles(&["tenant-admin"]));
    let issuer = kc.issuer("kaa");
    drop(kc);
    let dir = support::TempDir::new();
    let yaml = format!(
        "security:\n  enabled: true\n  client-id: kaa-iam\n  issuer:\n    public-url: {issuer}\n"
    );
    let svc = support::service::start_iam(&support::sqlite_settings(&dir), &yaml);
    let r = call_json_as(svc.addr, "GET", "/api/v1/policies", Some(&token), None);
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["message"].as_str().unwrap().contains("keys"));
}

#[test]
fn client_credentials_tokens_act_as_the_service_account() {
    let kc = Keycloak::start();
    kc.add_client("kaa", "kaa-iam", "s3cret");
    let dir = support::TempDir::new();
    let svc = support::service::start_iam(&support::sqlite_settings(&dir), &config(&kc));
    let body = "grant_type=client_credentials&client_id=kaa-iam&client_secret=s3cret";
    let r = request(
        kc.addr,
        "POST",
        "/realms/kaa/protocol/openid-connect/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let token = r.json()["access_token"].as_str().unwrap().to_string();
    let r = call_json_as(svc.addr, "GET", "/api/v1/users/me/krn", Some(&token), None);
    assert_eq!(
        r.json()["data"],
        "krn:iam:kaa::user/service-account-kaa-iam"
    );
    let r = call_json_as(svc.addr, "GET", "/api/v1/users/me/irn", Some(&token), None);
    assert_eq!(
        r.json()["data"],
        "krn:iam:kaa::user/service-account-kaa-iam"
    );
    assert_eq!(
        call_json_as(svc.addr, "GET", "/api/v1/policies", Some(&token), None).status,
        403
    );
}

/// A user marked `enabled: false` is refused with a message that says so, whatever its policies
/// allow, and is served again once enabled.
#[test]
fn a_disabled_user_is_refused_until_enabled_again() {
    let kc = Keycloak::start();
    let dir = support::TempDir::new();
    let svc = support::service::start_iam(&support::sqlite_settings(&dir), &config(&kc));
    let a = svc.addr;
    let admin = kc.mint("kaa", &Mint::user("admin").roles(&["tenant-admin"]));
    let carol = kc.mint("kaa", &Mint::user("carol"));
    let ok = |r: Resp, status: u16| {
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
        r
    };
    let r = ok(
        call_json_as(
            a,
            "POST",
            "/api/v1/users",
            Some(&admin),
            Some(&json!({"username": "carol", "password": "carol-password",
                "confirmPassword": "carol-password"})),
        ),
        201,
    );
    assert_eq!(r.json()["data"]["enabled"], true);
    ok(
        call_json_as(
            a,
            "POST",
            "/api/v1/policies",
            Some(&admin),
            Some(&json!({"name": "readers", "statements": [
                {"effect": "allow", "actions": ["iam:policy:read"], "resources": ["krn:iam:kaa::policy/*"]}]})),
        ),
        201,
    );
    let carol_id = id("krn:iam:kaa::user/carol");
    ok(
        call_json_as(
            a,
            "PUT",
            &format!("/api/v1/users/{carol_id}/policies/attach"),
            Some(&admin),
            Some(&json!({"policyIDs": [raw_id("krn:iam:kaa::policy/readers")]})),
        ),
        204,
    );
    let read = format!("/api/v1/policies/{}", id("krn:iam:kaa::policy/readers"));
    ok(call_json_as(a, "GET", &read, Some(&carol), None), 200);
    let set = |enabled: bool| {
        ok(
            call_json_as(
                a,
                "PATCH",
                &format!("/api/v1/users/{carol_id}"),
                Some(&admin),
                Some(&json!({ "enabled": enabled })),
            ),
            200,
        )
    };
    set(false);
    let r = ok(call_json_as(a, "GET", &read, Some(&carol), None), 403);
    let m = r.json()["message"].as_str().unwrap().to_string();
    assert!(
        m.contains("the principal `krn:iam:kaa::user/carol` is disabled"),
        "{m}"
    );
    set(true);
    ok(call_json_as(a, "GET", &read, Some(&carol), None), 200);
}
