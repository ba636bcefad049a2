//! IAM users backed by Keycloak users (security on): a user made through IAM's API is a user of
//! the tenant's realm (password, enabled, required actions, the verify-e-mail mail) whose id IAM
//! keeps as `authID`; updates and deletes follow; a Keycloak failure leaves no IAM user (and no
//! Keycloak user) behind. The realm comes from the Tenant Manager (in this process, provisioning
//! on the Keycloak stand-in, which checks the backend client's realm-management roles as Keycloak
//! does).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kaa::policy::Krn;
use serde_json::{Value, json};
use support::keycloak::{ADMIN_PASSWORD, ADMIN_USER, Keycloak};
use support::proc::{Resp, call_json_with};
use support::service::{Running, RunningTm, start_iam, start_tm};

/// `call_json_as` with this file's 30 s timeout (longer than `CALL_TIMEOUT`).
fn call(
    a: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Resp {
    call_json_with(a, method, path, token, &[], body, Duration::from_secs(30)).unwrap()
}

fn text(r: &Resp) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

struct World {
    kc: Keycloak,
    tm: RunningTm,
    iam: Running,
    /// A token of acme's administrator.
    admin: String,
    tenant: Value,
    _dirs: (support::TempDir, support::TempDir),
}

impl World {
    fn start() -> World {
        let kc = Keycloak::start();
        kc.add_client("kaa", "kaa-iam", "iam-secret");
        let tm_dir = support::TempDir::new();
        let tm = start_tm(
            &support::sqlite_settings(&tm_dir),
            &format!(
                "tenant-manager:\n  keycloak:\n    url: {}\n    username: {ADMIN_USER}\n    password: {ADMIN_PASSWORD}\n  tasks:\n    workers: 1\n    backoff-ms: 20\n    max-backoff-ms: 100\n",
                kc.url()
            ),
        );
        let r = call(
            tm.addr,
            "POST",
            "/api/v1/tenants",
            None,
            Some(&json!({"id": "acme"})),
        );
        assert_eq!(r.status, 202, "{}", text(&r));
        let started = Instant::now();
        let tenant = loop {
            let t = call(tm.addr, "GET", "/api/v1/tenants/acme", None, None).json();
            if t["status"] == "AVAILABLE" {
                break t;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "{t}");
            std::thread::sleep(Duration::from_millis(20));
        };
        let iam_dir = support::TempDir::new();
        let yaml = format!(
            "security:\n  enabled: true\n  client-id: kaa-iam\n  client-secret: iam-secret\n  issuer:\n    public-url: {}\n  multitenancy:\n    enabled: true\n    tenant-manager-url: http://{}\n",
            kc.issuer("kaa"),
            tm.addr
        );
        let iam = start_iam(&support::sqlite_settings(&iam_dir), &yaml);
        // acme's administrator, a user of its realm, logs in through its web UI's client.
        let r = call(
            tm.addr,
            "POST",
            "/api/v1/tenants/acme/users",
            None,
            Some(&json!({"username": "boss", "password": "boss-password",
                         "roles": ["tenant-admin"]})),
        );
        assert_eq!(r.status, 201, "{}", text(&r));
        let (admin, _) = support::login(
            &kc.url(),
            "acme",
            tenant["client_frontend_id"].as_str().unwrap(),
            "boss",
            "boss-password",
        );
        World {
            kc,
            tm,
            iam,
            admin,
            tenant,
            _dirs: (tm_dir, iam_dir),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        call(
            self.iam.addr,
            method,
            path,
            Some(&self.admin),
            body.as_ref(),
        )
    }

    fn kc_user(&self, username: &str) -> Option<support::keycloak::UserSnapshot> {
        self.kc
            .realm_snapshot("acme")
            .unwrap()
            .user(username)
            .cloned()
    }

    fn iam_usernames(&self) -> Vec<String> {
        let r = self.call("GET", "/api/v1/users?pageSize=50", None);
        assert_eq!(r.status, 200, "{}", text(&r));
        let mut names: Vec<String> = r.json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["username"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    }

    fn new_user(&self, username: &str, extra: Value) -> Resp {
        let mut b = json!({
            "username": username,
            "email": format!("{}@example.com", username.to_lowercase()),
            "firstName": "First",
            "lastName": "Last",
            "enabled": true,
            "password": "Passw0rd-long",
            "confirmPassword": "Passw0rd-long",
        });
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        self.call("POST", "/api/v1/users", Some(b))
    }
}

fn user_id(tenant: &str, name: &str) -> String {
    Krn::parse(&format!("krn:iam:{tenant}::user/{name}"))
        .unwrap()
        .to_id()
}

#[test]
fn a_user_is_a_keycloak_user_of_the_tenants_realm_and_follows_it() {
    let w = World::start();
    let frontend = w.tenant["client_frontend_id"].as_str().unwrap();

    // Created with the verify-e-mail mail: Keycloak has the user, its password and the action.
    let r = w.new_user(
        "Alice",
        json!({"sendVerifyEmail": true, "redirectUri": "http://app.example.com/welcome"}),
    );
    assert_eq!(r.status, 201, "{}", text(&r));
    let alice = r.json()["data"].clone();
    let auth_id = alice["authID"].as_str().expect("authID").to_string();
    assert_eq!(alice["requiredActions"], json!(["VERIFY_EMAIL"]));
    let kc_alice = w.kc_user("alice").expect("Keycloak user");
    assert_eq!(kc_alice.id, auth_id);
    assert_eq!(kc_alice.email.as_deref(), Some("alice@example.com"));
    assert!(kc_alice.enabled);
    assert_eq!(kc_alice.password.as_deref(), Some("Passw0rd-long"));
    assert_eq!(kc_alice.required_actions, vec!["VERIFY_EMAIL"]);
    assert_eq!(kc_alice.representation["firstName"], "First");
    assert_eq!(kc_alice.emails.len(), 1, "{:?}", kc_alice.emails);
    assert_eq!(
        kc_alice.emails[0]["redirect_uri"],
        "http://app.example.com/welcome"
    );
    assert_eq!(kc_alice.emails[0]["client_id"], frontend);
    assert_eq!(kc_alice.emails[0]["actions"], json!(["VERIFY_EMAIL"]));
    // IAM keeps no password of a Keycloak user: nothing in the answer hints at one.
    assert!(alice.get("password").is_none() && alice.get("passwordHash").is_none());

    // Without the mail: the user logs in at Keycloak with the password IAM was given, and the
    // token's subject is the IAM user.
    let r = w.new_user("bob", json!({}));
    assert_eq!(r.status, 201, "{}", text(&r));
    let bob_auth = r.json()["data"]["authID"].as_str().unwrap().to_string();
    assert!(w.kc_user("bob").unwrap().emails.is_empty());
    // The token bob's login through the tenant's web UI client returns, as it is.
    let frontend = w.tenant["client_frontend_id"].as_str().unwrap();
    let (bob_token, bob_id_token) =
        support::login(&w.kc.url(), "acme", frontend, "bob", "Passw0rd-long");
    let claims = support::jwt_payload(&bob_token);
    assert_eq!(claims["sub"], bob_auth.as_str());
    assert_eq!(claims["aud"], "account", "Keycloak's audience: {claims}");
    assert_eq!(claims["azp"], frontend);
    assert_eq!(claims["typ"], "Bearer");
    // Its ID token, and a token the stand-in issued to another client of the realm (for another
    // service), are refused.
    let r = call(
        w.iam.addr,
        "GET",
        "/api/v1/users/me",
        Some(&bob_id_token),
        None,
    );
    assert_eq!(r.status, 401, "an ID token: {}", text(&r));
    let (_, other) = support::login(&w.kc.url(), "acme", "admin-cli", "bob", "Passw0rd-long");
    let r = call(w.iam.addr, "GET", "/api/v1/users/me", Some(&other), None);
    assert_eq!(r.status, 401, "a token of admin-cli: {}", text(&r));
    let me = call(
        w.iam.addr,
        "GET",
        "/api/v1/users/me",
        Some(&bob_token),
        None,
    );
    assert_eq!(me.status, 200, "{}", text(&me));
    assert_eq!(me.json()["data"]["authID"], bob_auth.as_str());
    assert_eq!(me.json()["data"]["username"], "bob");

    // Disabling follows; a stale version changes neither side.
    let path = format!("/api/v1/users/{}", user_id("acme", "bob"));
    let r = w.call(
        "PATCH",
        &path,
        Some(json!({"enabled": false, "lastName": "Builder"})),
    );
    assert_eq!(r.status, 200, "{}", text(&r));
    let kc_bob = w.kc_user("bob").unwrap();
    assert!(!kc_bob.enabled);
    assert_eq!(kc_bob.representation["lastName"], "Builder");
    let r = w.call("PATCH", &path, Some(json!({"enabled": true, "version": 1})));
    assert_eq!(r.status, 409, "{}", text(&r));
    assert!(
        !w.kc_user("bob").unwrap().enabled,
        "a stale update changes Keycloak too"
    );
    // E-mail taken in Keycloak: 409, and IAM's record keeps its e-mail.
    let r = w.call("PATCH", &path, Some(json!({"email": "alice@example.com"})));
    assert_eq!(r.status, 409, "{}", text(&r));
    assert_eq!(
        w.call("GET", &path, None).json()["data"]["email"],
        "bob@example.com"
    );

    // Deleting removes both.
    let r = w.call("DELETE", &path, None);
    assert!(r.status == 204 || r.status == 200, "{}", text(&r));
    assert!(w.kc_user("bob").is_none());
    assert_eq!(w.call("GET", &path, None).status, 404);
    assert_eq!(w.iam_usernames(), vec!["Alice"]);
}

#[test]
fn a_keycloak_failure_leaves_no_user_anywhere() {
    let w = World::start();
    // Warm the tenant's admin client, so that the faults below hit the user calls.
    assert_eq!(w.new_user("warm", json!({})).status, 201);

    // Keycloak answers 500: 503, nothing made.
    w.kc.fail_next(1, 500);
    let r = w.new_user("carol", json!({}));
    assert_eq!(r.status, 503, "{}", text(&r));
    assert!(r.json()["message"].as_str().unwrap().contains("Keycloak"));
    assert!(w.kc_user("carol").is_none());
    assert_eq!(w.iam_usernames(), vec!["warm"]);

    // Keycloak down: 503 again; once it is back the same request succeeds.
    w.kc.set_down(true);
    let r = w.new_user("carol", json!({}));
    assert_eq!(r.status, 503, "{}", text(&r));
    assert_eq!(w.iam_usernames(), vec!["warm"]);
    w.kc.set_down(false);
    let r = w.new_user("carol", json!({}));
    assert_eq!(r.status, 201, "{}", text(&r));

    // Keycloak made the user but the answer was lost: the user carrying this request's marker
    // is adopted, so one user exists on each side.
    w.kc.lose_next(1, 502);
    let r = w.new_user("dave", json!({}));
    assert_eq!(r.status, 201, "{}", text(&r));
    assert_eq!(
        r.json()["data"]["authID"],
        w.kc_user("dave").unwrap().id.as_str()
    );

    // The mail cannot be sent: the Keycloak user goes again.
    w.kc.fail_after(1, 500); // the create is answered, the mail call fails
    let r = w.new_user(
        "erin",
        json!({"sendVerifyEmail": true, "redirectUri": "http://app.example.com/"}),
    );
    assert_eq!(r.status, 503, "{}", text(&r));
    w.kc.clear_faults();
    assert!(w.kc_user("erin").is_none());

    // A name Keycloak has already (made there directly): 409 and no IAM user.
    w.kc.add_user("acme", "frank", "whatever-pw", &[]);
    let r = w.new_user("frank", json!({}));
    assert_eq!(r.status, 409, "{}", text(&r));
    assert!(text(&r).contains("User exists"));

    // IAM refuses the user after Keycloak made it (a group that does not exist): 400, and the
    // Keycloak user is removed again.
    let ghost = Krn::parse("krn:iam:acme::group/ghost").unwrap().to_id();
    let r = w.new_user("gina", json!({"groups": [ghost]}));
    assert_eq!(r.status, 400, "{}", text(&r));
    assert!(w.kc_user("gina").is_none());

    // Deleting while Keycloak is down: 503 and the IAM user stays, so the delete can be retried.
    w.kc.set_down(true);
    let path = format!("/api/v1/users/{}", user_id("acme", "carol"));
    let r = w.call("DELETE", &path, None);
    assert_eq!(r.status, 503, "{}", text(&r));
    w.kc.set_down(false);
    assert_eq!(w.call("GET", &path, None).status, 200);
    assert!(w.kc_user("carol").is_some());
    // A Keycloak user deleted meanwhile by someone else does not block the IAM delete.
    let carol_id = w.kc_user("carol").unwrap().id;
    assert_eq!(
        kc_admin_delete(&w.kc, "acme", &carol_id),
        204,
        "removed in Keycloak directly"
    );
    let r = w.call("DELETE", &path, None);
    assert!(r.status == 204 || r.status == 200, "{}", text(&r));
    assert_eq!(w.iam_usernames(), vec!["dave", "warm"]);
    let _ = &w.tm;
}

/// Delete a user through the stand-in's admin API as the master realm's administrator.
fn kc_admin_delete(kc: &Keycloak, realm: &str, id: &str) -> u16 {
    let token: Value = ureq::post(&format!(
        "{}/protocol/openid-connect/token",
        kc.issuer("master")
    ))
    .send_form([
        ("grant_type", "password"),
        ("client_id", "admin-cli"),
        ("username", ADMIN_USER),
        ("password", ADMIN_PASSWORD),
    ])
    .unwrap()
    .body_mut()
    .read_json()
    .unwrap();
    ureq::delete(&format!("{}/admin/realms/{realm}/users/{id}", kc.url()))
        .header(
            "Authorization",
            &format!("Bearer {}", token["access_token"].as_str().unwrap()),
        )
        .call()
        .unwrap()
        .status()
        .as_u16()
}

/// `keycloakIDAsUsername`: the Keycloak user is made with the e-mail as its username and IAM's
/// username is Keycloak's id (also its `authID`); the user logs in with the e-mail and its token
/// is the IAM user. Without an e-mail nothing is made anywhere.
#[test]
fn keycloak_id_as_username_names_the_user_by_its_keycloak_id() {
    let w = World::start();
    let body = |email: Option<&str>| {
        let mut b = json!({"password": "Passw0rd-long", "confirmPassword": "Passw0rd-long",
                           "keycloakIDAsUsername": true, "firstName": "Kay"});
        if let Some(e) = email {
            b["email"] = json!(e);
        }
        b
    };
    let r = w.call("POST", "/api/v1/users", Some(body(None)));
    assert_eq!(r.status, 400, "{}", text(&r));
    assert!(w.iam_usernames().is_empty());
    assert!(w.kc_user("kay@example.com").is_none());

    let r = w.call("POST", "/api/v1/users", Some(body(Some("Kay@Example.com"))));
    assert_eq!(r.status, 201, "{}", text(&r));
    let kay = r.json()["data"].clone();
    let kc_kay = w
        .kc_user("kay@example.com")
        .expect("Keycloak user named by the e-mail");
    assert_eq!(kay["username"], kc_kay.id.as_str());
    assert_eq!(kay["authID"], kc_kay.id.as_str());
    assert_eq!(kay["krn"], format!("krn:iam:acme::user/{}", kc_kay.id));
    assert_eq!(w.iam_usernames(), vec![kc_kay.id.clone()]);
    let (token, _) = support::login(
        &w.kc.url(),
        "acme",
        w.tenant["client_frontend_id"].as_str().unwrap(),
        "kay@example.com",
        "Passw0rd-long",
    );
    assert_eq!(support::jwt_payload(&token)["sub"], kc_kay.id.as_str());
    let r = call(
        w.iam.addr,
        "GET",
        "/api/v1/users/me/irn",
        Some(&token),
        None,
    );
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json()["data"], kay["krn"]);
}
