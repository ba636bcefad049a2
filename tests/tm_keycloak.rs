#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The Tenant Manager against a Keycloak: the tenant-manager in this process, its default
//! Keycloak server the admin-API stand-in of `support::keycloak`, everything over HTTP. A tenant
//! becomes a realm with the roles, clients, scopes, resources, policies and permissions of its
//! plan; provisioning survives 5xx answers (before and after Keycloak did the work), an outage,
//! a slow server and timeouts without duplicates; a template Keycloak rejects fails the tenant
//! with Keycloak's message until it is fixed and retried; delete removes the realm. Also the
//! admin client on its own: token caching and renewal, error kinds, users and role mappings.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kaa::clients::keycloak::{AdminCredentials, KeycloakAdmin, KeycloakError, NewUser};
use kaa::clients::nats::{NatsClient, NatsSubscription};
use kaa::clients::oidc::{Jwks, KeyLookup};
use kaa::clients::tle::LifecycleEvent;
use kaa::tenants::bootstrap::{ROLES, SCOPES};
use kaa::tenants::keycloak_provisioner::{permission_name, policy_name};
use serde_json::{Value, json};
use support::keycloak::{ADMIN_PASSWORD, ADMIN_USER, Keycloak};
use support::proc::{Resp, call_json, request};
use support::service::{RunningTm, start_tm};

fn expect(r: &Resp, status: u16) -> Value {
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
    if r.body.is_empty() {
        Value::Null
    } else {
        r.json()
    }
}

fn get_tenant(a: SocketAddr, id: &str) -> Resp {
    call_json(a, "GET", &format!("/api/v1/tenants/{id}"), None)
}

/// Poll until the tenant has `status` (`GONE`: 404), at most 10 s.
fn wait_status(a: SocketAddr, id: &str, status: &str) -> Value {
    let started = Instant::now();
    loop {
        let r = get_tenant(a, id);
        if r.status == 200 && r.json()["status"] == status {
            return r.json();
        }
        if status == "GONE" && r.status == 404 {
            return Value::Null;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "tenant `{id}` never {status}: {}",
            String::from_utf8_lossy(&r.body)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Poll until `cond` holds, at most 10 s.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < Duration::from_secs(10), "never: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn tm_yaml(kc: &Keycloak, extra_keycloak: &str) -> String {
    format!(
        "tenant-manager:\n  keycloak:\n    url: {}\n    username: {ADMIN_USER}\n    password: {ADMIN_PASSWORD}\n{extra_keycloak}  tasks:\n    workers: 2\n    backoff-ms: 20\n    max-backoff-ms: 100\n    max-attempts: 200\n",
        kc.url()
    )
}

fn start(kc: &Keycloak, dir: &support::TempDir) -> RunningTm {
    start_tm(&support::sqlite_settings(dir), &tm_yaml(kc, ""))
}

fn create(a: SocketAddr, body: Value) -> Value {
    let t = expect(&call_json(a, "POST", "/api/v1/tenants", Some(&body)), 202);
    assert_eq!(t["status"], "CREATING");
    t
}

/// The scopes each role of the default plan grants.
fn role_scopes(role: &str) -> Vec<&'static str> {
    let (_, _, prefixes) = ROLES.iter().find(|(r, _, _)| *r == role).unwrap();
    SCOPES
        .iter()
        .copied()
        .filter(|s| prefixes.iter().any(|p| s.starts_with(p)))
        .collect()
}

/// The realm holds exactly the default plan (plus Keycloak's own defaults), once each.
fn assert_realm_is_the_plan(kc: &Keycloak, t: &Value) {
    let realm = t["realm_name"].as_str().unwrap();
    let snap = kc
        .realm_snapshot(realm)
        .unwrap_or_else(|| panic!("no realm `{realm}` in Keycloak"));
    assert_eq!(snap.duplicates(), Vec::<String>::new(), "{snap:#?}");
    assert_eq!(snap.representation["enabled"], true);
    assert_eq!(snap.representation["sslRequired"], "external");

    // Roles: the plan's and Keycloak's three defaults.
    let roles: BTreeSet<&str> = snap.roles.iter().map(String::as_str).collect();
    for (r, _, _) in ROLES {
        assert!(roles.contains(r), "role {r}: {roles:?}");
    }
    assert_eq!(snap.roles.len(), ROLES.len() + 3, "{:?}", snap.roles);

    // The backend client: confidential, the tenant's secret, the resource server.
    let backend = snap
        .client(t["client_backend_id"].as_str().unwrap())
        .expect("backend client");
    assert!(!backend.public_client);
    // The tenant as read shows no secret; the realm's client has the 48 hex digits made for it.
    assert!(t.get("client_backend_secret").is_none(), "{t}");
    assert_eq!(backend.secret.as_deref().map(str::len), Some(48));
    assert!(backend.authorization && backend.service_accounts);
    assert_eq!(backend.representation["standardFlowEnabled"], false);
    // Its service account manages the realm's users (IAM creates users through it).
    let sa = snap
        .user(&format!(
            "service-account-{}",
            backend.client_id.to_lowercase()
        ))
        .expect("service-account user");
    let mut held = sa.client_roles.clone();
    held.sort();
    assert_eq!(
        held,
        vec![
            "realm-management/manage-users",
            "realm-management/query-users",
            "realm-management/view-users"
        ]
    );
    // The frontend client: public, no secret, the template's redirect URIs.
    let frontend = snap
        .client(t["client_frontend_id"].as_str().unwrap())
        .expect("frontend client");
    assert!(frontend.public_client);
    assert_eq!(frontend.secret, None);
    assert!(!frontend.authorization);
    assert_eq!(frontend.representation["redirectUris"], json!(["*"]));

    // Authorization scopes: every scope of the plan, once.
    let scopes: BTreeSet<&str> = snap.scopes.iter().map(String::as_str).collect();
    assert_eq!(scopes, SCOPES.iter().copied().collect::<BTreeSet<_>>());
    assert_eq!(snap.scopes.len(), SCOPES.len());

    // Resources: `tenant-system` (type `tenant`, its tenant scopes) and Keycloak's default.
    let ts = snap.resource("tenant-system").expect("tenant-system");
    assert_eq!(ts.resource_type.as_deref(), Some("tenant"));
    let want: BTreeSet<&str> = SCOPES
        .iter()
        .copied()
        .filter(|s| s.starts_with("tenant:"))
        .collect();
    assert_eq!(
        ts.scopes
            .iter()
            .map(String::as_str)
            .collect::<BTreeSet<_>>(),
        want
    );
    assert_eq!(snap.resources.len(), 2, "{:?}", snap.resources);

    // A role policy per role; a scope permission per scope naming every role that grants it.
    for (r, _, _) in ROLES {
        let p = snap
            .policy(&policy_name(r))
            .unwrap_or_else(|| panic!("policy of {r}"));
        assert_eq!(p.kind, "role");
        assert_eq!(p.roles, vec![r.to_string()]);
        assert_eq!(p.logic, "POSITIVE");
    }
    assert_eq!(snap.policies.len(), ROLES.len() + 1, "plus Default Policy");
    for s in SCOPES {
        let p = snap
            .permission(&permission_name(s))
            .unwrap_or_else(|| panic!("permission of {s}"));
        assert_eq!(p.kind, "scope");
        assert_eq!(p.scopes, vec![s.to_string()]);
        assert_eq!(p.decision_strategy, "AFFIRMATIVE");
        let granting: BTreeSet<String> = ROLES
            .iter()
            .filter(|(r, _, _)| role_scopes(r).contains(s))
            .map(|(r, _, _)| policy_name(r))
            .collect();
        assert_eq!(
            p.policies.iter().cloned().collect::<BTreeSet<_>>(),
            granting,
            "{s}"
        );
    }
    assert_eq!(
        snap.permissions.len(),
        SCOPES.len() + 1,
        "plus Default Permission"
    );
}

/// Create `acme`, check the realm, the security context and that the realm issues tokens.
fn happy_path(storage: &kaa::config::StorageSettings) {
    let kc = Keycloak::start();
    let tm = start_tm(storage, &tm_yaml(&kc, ""));
    let a = tm.addr;

    let t = create(a, json!({"id": "acme", "display_name": "Acme"}));
    assert_eq!(t["keycloak_server_id"], 1);
    let t = wait_status(a, "acme", "AVAILABLE");
    assert!(t["failure_reason"].is_null());
    assert_realm_is_the_plan(&kc, &t);
    // One create call per object, each answered 201: the realm, its roles, two clients, the
    // scopes, one resource, the role policies and the scope permissions.
    let realm_creates = kc
        .calls()
        .iter()
        .filter(|c| c.method == "POST" && c.path == "/admin/realms" && c.status == 201)
        .count();
    assert_eq!(realm_creates, 1);
    assert_eq!(
        kc.count_calls("POST", "/admin/realms/acme/roles", 201),
        ROLES.len()
    );
    assert_eq!(
        kc.count_calls("POST", "/admin/realms/acme/clients", 201),
        2 + SCOPES.len() + 1 + ROLES.len() + SCOPES.len()
    );
    assert!(
        kc.calls().iter().all(|c| c.status < 300),
        "no call failed: {:?}",
        kc.calls()
            .iter()
            .filter(|c| c.status >= 300)
            .collect::<Vec<_>>()
    );

    // The security context names the stand-in's issuer and the backend client.
    let ctx = expect(
        &call_json(a, "GET", "/api/v1/tenants/acme/security-context", None),
        200,
    );
    assert_eq!(ctx["issuer"], kc.issuer("acme"));
    assert_eq!(ctx["keycloak_url"], kc.url());
    assert_eq!(ctx["client_id"], t["client_backend_id"]);
    // Only the security context carries the secret: the one the realm's backend client has.
    let secret = kc
        .realm_snapshot("acme")
        .unwrap()
        .client(t["client_backend_id"].as_str().unwrap())
        .unwrap()
        .secret
        .clone()
        .unwrap();
    assert_eq!(ctx["client_secret"], secret.as_str());
    let public = expect(
        &call_json(a, "GET", "/api/v1/tenants/acme/public-config", None),
        200,
    );
    assert_eq!(public["client_id"], t["client_frontend_id"]);

    // The new realm issues tokens to its backend client, signed with a key its JWKS publishes.
    let form = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}",
        t["client_backend_id"].as_str().unwrap(),
        ctx["client_secret"].as_str().unwrap()
    );
    let r = request(
        kc.addr,
        "POST",
        "/realms/acme/protocol/openid-connect/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
        Duration::from_secs(5),
    )
    .unwrap();
    let token = expect(&r, 200)["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let jwks = Jwks::new(
        ctx["jwks_uri"].as_str().unwrap(),
        Duration::from_secs(5),
        Duration::from_secs(1),
    );
    let KeyLookup::Found(key) = jwks.key(&kc.current_kid("acme")).unwrap() else {
        panic!("the realm's key is not published");
    };
    let claims = key
        .verify::<jwt_simple::prelude::NoCustomClaims>(
            &token,
            jwt_simple::prelude::VerificationOptions::default(),
        )
        .unwrap();
    assert_eq!(claims.issuer.as_deref(), Some(kc.issuer("acme").as_str()));
}

#[test]
fn a_tenant_becomes_a_realm_with_its_plan_on_sqlite() {
    let dir = support::TempDir::new();
    happy_path(&support::sqlite_settings(&dir));
}

#[test]
fn a_tenant_becomes_a_realm_with_its_plan_on_postgres() {
    let Some(db) = support::PgTestDb::create() else {
        support::skip("tm_keycloak happy path on PostgreSQL");
        return;
    };
    happy_path(&db.storage());
}

#[test]
fn five_hundreds_before_and_after_the_work_leave_no_duplicates() {
    let kc = Keycloak::start();
    let dir = support::TempDir::new();
    let tm = start(&kc, &dir);
    let a = tm.addr;

    // Keycloak answers 500 to everything: the tenant waits in CREATING.
    kc.fail_all(Some(500));
    create(a, json!({"id": "acme"}));
    wait_for("three failed attempts", || {
        kc.count_calls("POST", "/realms/master/protocol/openid-connect/token", 500) >= 3
    });
    assert_eq!(get_tenant(a, "acme").json()["status"], "CREATING");

    // Then it works but loses some answers after doing the work, at every stage of the run:
    // the token, a role, an authorization scope, a permission, the frontend client.
    kc.fail_next(2, 503);
    kc.lose_after(1, 500);
    kc.lose_after(4, 500);
    kc.lose_after(30, 502);
    kc.lose_after(70, 500);
    kc.lose_after(99, 500);
    kc.fail_all(None);
    let t = wait_status(a, "acme", "AVAILABLE");
    assert_eq!(kc.pending_faults(), 0, "every fault was met");
    assert_realm_is_the_plan(&kc, &t);
    // The lost answers fell on each stage: realm, role, scope, permission, frontend client.
    let lost: Vec<String> = kc
        .calls()
        .iter()
        .filter(|c| c.method == "POST" && c.status >= 500 && c.path.starts_with("/admin"))
        .map(|c| c.path.rsplit("acme/").next().unwrap_or(&c.path).to_string())
        .collect();
    let stages: Vec<&str> = lost
        .iter()
        .map(|p| match p.as_str() {
            "/admin/realms" => "realm",
            "roles" => "role",
            "clients" => "client",
            p if p.ends_with("/permission/scope") => "permission",
            p if p.ends_with("/scope") => "scope",
            _ => "other",
        })
        .collect();
    assert_eq!(
        stages,
        ["realm", "role", "scope", "permission", "client"],
        "{lost:?}"
    );
    assert_eq!(kc.realm_names(), ["acme", "kaa", "master"]);
}

#[test]
fn keycloak_down_at_creation_then_up() {
    let kc = Keycloak::start();
    let dir = support::TempDir::new();
    let tm = start(&kc, &dir);
    let a = tm.addr;

    kc.set_down(true);
    create(a, json!({"id": "acme"}));
    // Two runs of its task failed (the queue's attempts count them).
    support::wait_until("two attempts at acme's realm", || {
        support::metric(a, "tm_tasks_attempts").unwrap_or(0) >= 2
    });
    assert_eq!(get_tenant(a, "acme").json()["status"], "CREATING");
    assert!(
        kc.calls().is_empty(),
        "nothing reached a Keycloak that is down"
    );

    kc.set_down(false);
    let t = wait_status(a, "acme", "AVAILABLE");
    assert_realm_is_the_plan(&kc, &t);

    // Down in the middle of a later run (a slowed one), up again: the tenant converges.
    kc.delay(Duration::from_millis(5));
    create(a, json!({"id": "beta"}));
    wait_for("beta's run started", || {
        kc.count_calls("POST", "/admin/realms/beta/roles", 201) >= 1
    });
    let attempts = support::metric(a, "tm_tasks_attempts").unwrap_or(0);
    kc.set_down(true);
    assert_eq!(get_tenant(a, "beta").json()["status"], "CREATING");
    // The run met the outage and was taken up again while Keycloak was down.
    support::wait_until("another attempt at beta's realm", || {
        support::metric(a, "tm_tasks_attempts").unwrap_or(0) > attempts
    });
    kc.delay(Duration::ZERO);
    kc.set_down(false);
    let t = wait_status(a, "beta", "AVAILABLE");
    assert_realm_is_the_plan(&kc, &t);
}

#[test]
fn a_template_keycloak_rejects_fails_the_tenant_until_fixed_and_retried() {
    let kc = Keycloak::start();
    let dir = support::TempDir::new();
    let tm = start(&kc, &dir);
    let a = tm.addr;

    expect(
        &call_json(
            a,
            "POST",
            "/api/v1/realm-templates",
            Some(&json!({"version": 2, "template": {"sslRequired": "sometimes"}})),
        ),
        201,
    );
    create(a, json!({"id": "beta", "realm_template_version": 2}));
    let t = wait_status(a, "beta", "FAILED");
    let reason = t["failure_reason"].as_str().unwrap();
    assert!(reason.contains("400"), "{reason}");
    assert!(
        reason.contains("Invalid value `sometimes` for field `sslRequired`"),
        "Keycloak's message: {reason}"
    );
    assert!(reason.contains("create realm `beta`"), "{reason}");
    assert_eq!(
        kc.count_calls("POST", "/admin/realms", 400),
        1,
        "a 400 is not retried"
    );
    assert!(!kc.has_realm("beta"));

    // Retrying before the fix fails the same way.
    expect(
        &call_json(a, "POST", "/api/v1/tenants/beta/retry", None),
        202,
    );
    wait_status(a, "beta", "FAILED");

    // Fixed template, retry: AVAILABLE.
    expect(
        &call_json(
            a,
            "PUT",
            "/api/v1/realm-templates/2",
            Some(
                &json!({"version": 2, "template": {"sslRequired": "external", "displayName": "Beta"}}),
            ),
        ),
        200,
    );
    let r = expect(
        &call_json(a, "POST", "/api/v1/tenants/beta/retry", None),
        202,
    );
    assert_eq!(r["status"], "CREATING");
    let t = wait_status(a, "beta", "AVAILABLE");
    assert!(t["failure_reason"].is_null());
    assert_realm_is_the_plan(&kc, &t);
    assert_eq!(
        kc.realm_snapshot("beta").unwrap().representation["displayName"],
        "Beta"
    );

    // An injected 400 in the middle of a run (a role Keycloak refuses) fails another tenant with
    // Keycloak's message; clearing it and retrying finishes the realm without duplicates.
    kc.fail_after(6, 400);
    create(a, json!({"id": "gamma"}));
    let t = wait_status(a, "gamma", "FAILED");
    assert!(
        t["failure_reason"]
            .as_str()
            .unwrap()
            .contains("injected failure 400"),
        "{t}"
    );
    expect(
        &call_json(a, "POST", "/api/v1/tenants/gamma/retry", None),
        202,
    );
    let t = wait_status(a, "gamma", "AVAILABLE");
    assert_realm_is_the_plan(&kc, &t);
}

#[test]
fn delete_removes_the_realm_and_the_tenant() {
    let kc = Keycloak::start();
    let dir = support::TempDir::new();
    let tm = start(&kc, &dir);
    let a = tm.addr;

    create(a, json!({"id": "acme"}));
    create(a, json!({"id": "beta"}));
    wait_status(a, "acme", "AVAILABLE");
    wait_status(a, "beta", "AVAILABLE");
    assert!(kc.has_realm("acme") && kc.has_realm("beta"));

    let r = expect(&call_json(a, "DELETE", "/api/v1/tenants/acme", None), 202);
    assert_eq!(r["status"], "DELETING");
    wait_status(a, "acme", "GONE");
    assert!(!kc.has_realm("acme"));
    assert!(kc.has_realm("beta"), "only the tenant's realm goes");

    // A realm someone removed from Keycloak already: the delete still completes (404 is done).
    let admin = admin_client(&kc);
    admin.delete_realm("beta").unwrap();
    // A delete through an outage finishes once Keycloak is back.
    kc.fail_next(3, 503);
    expect(&call_json(a, "DELETE", "/api/v1/tenants/beta", None), 202);
    wait_status(a, "beta", "GONE");
    assert_eq!(kc.realm_names(), ["kaa", "master"]);
    assert_eq!(
        kc.count_calls("GET", "/admin/realms/beta", 404),
        1,
        "the stand-in said the realm was gone"
    );
    assert_eq!(
        kc.count_calls("DELETE", "/admin/realms/beta", 404),
        0,
        "so nothing was deleted"
    );
}

#[test]
fn a_slow_keycloak_and_timeouts_still_converge() {
    let kc = Keycloak::start();
    let dir = support::TempDir::new();
    let tm = start_tm(
        &support::sqlite_settings(&dir),
        &tm_yaml(&kc, "    timeout-ms: 400\n"),
    );
    let a = tm.addr;

    // Slow but within the timeout.
    kc.delay(Duration::from_millis(8));
    create(a, json!({"id": "acme"}));
    let t = wait_status(a, "acme", "AVAILABLE");
    assert_realm_is_the_plan(&kc, &t);

    // Slower than the timeout: every call times out (Keycloak still does the work later).
    kc.delay(Duration::from_millis(600));
    create(a, json!({"id": "beta"}));
    // A later attempt finds the realm the timed-out one made.
    wait_for("a retry after a timeout", || {
        kc.count_calls("POST", "/admin/realms", 409) >= 1
    });
    assert_eq!(get_tenant(a, "beta").json()["status"], "CREATING");
    kc.delay(Duration::from_millis(2));
    let t = wait_status(a, "beta", "AVAILABLE");
    assert_realm_is_the_plan(&kc, &t);
}

#[test]
fn a_version_change_updates_the_realm() {
    let kc = Keycloak::start();
    let dir = support::TempDir::new();
    let tm = start(&kc, &dir);
    let a = tm.addr;
    create(a, json!({"id": "acme"}));
    wait_status(a, "acme", "AVAILABLE");

    expect(
        &call_json(
            a,
            "POST",
            "/api/v1/realm-templates",
            Some(
                &json!({"version": 3, "template": {"sslRequired": "external", "displayName": "Acme Inc"}}),
            ),
        ),
        201,
    );
    // An identity provider of the tenant goes into the realm at once (through UPDATING).
    expect(
        &call_json(
            a,
            "POST",
            "/api/v1/idps",
            Some(
                &json!({"tenant_id": "acme", "alias": "corp", "provider_id": "oidc",
                        "enabled": true, "config": {"clientId": "kaa", "issuer": "https://idp.example.com"}}),
            ),
        ),
        201,
    );
    wait_status(a, "acme", "AVAILABLE");
    let corp = kc.realm_snapshot("acme").unwrap().idps;
    assert_eq!(corp.len(), 1);
    assert_eq!(corp[0]["config"]["kaaManaged"], "true");
    // Someone removed a role by hand (Keycloak drops its role policy): the update puts both back.
    let admin = admin_client(&kc);
    admin.delete_role("acme", "dashboard-admin").unwrap();
    let t = expect(
        &call_json(
            a,
            "PATCH",
            "/api/v1/tenants/acme",
            Some(&json!({"realm_template_version": 3})),
        ),
        202,
    );
    assert_eq!(t["status"], "UPDATING");
    let t = wait_status(a, "acme", "AVAILABLE");
    let snap = kc.realm_snapshot("acme").unwrap();
    assert_eq!(snap.representation["displayName"], "Acme Inc");
    assert_eq!(snap.idps.len(), 1);
    assert_eq!(snap.idps[0]["alias"], "corp");
    assert_eq!(snap.idps[0]["providerId"], "oidc");
    assert_eq!(snap.idps[0]["config"]["issuer"], "https://idp.example.com");
    assert_realm_is_the_plan(&kc, &t);

    // A realm that vanished is made again by an update.
    admin.delete_realm("acme").unwrap();
    expect(
        &call_json(
            a,
            "PATCH",
            "/api/v1/tenants/acme",
            Some(&json!({"realm_template_version": 1})),
        ),
        202,
    );
    let t = wait_status(a, "acme", "AVAILABLE");
    assert_realm_is_the_plan(&kc, &t);
}

#[test]
fn ldap_and_active_directory_become_federation_components_and_idps_follow_the_catalogue() {
    let kc = Keycloak::start();
    let dir = support::TempDir::new();
    let tm = start(&kc, &dir);
    let a = tm.addr;
    create(a, json!({"id": "acme"}));
    wait_status(a, "acme", "AVAILABLE");
    let idp = |alias: &str, provider: &str, config: Value| {
        json!({"tenant_id": "acme", "alias": alias, "provider_id": provider, "enabled": true,
               "config": config})
    };
    let ldap_config = json!({"connectionUrl": "ldap://ldap.example.com:389",
        "usersDn": "ou=people,dc=example,dc=com", "bindDn": "cn=admin,dc=example,dc=com",
        "editMode": "READ_ONLY", "pagination": true, "batchSizeForSync": 1000});
    // A lost answer on the component's create: the retry finds it, no second component.
    kc.lose_on("POST", "/admin/realms/acme/components", 502);
    expect(
        &call_json(
            a,
            "POST",
            "/api/v1/idps",
            Some(&idp("corp-ldap", "ldap", ldap_config)),
        ),
        201,
    );
    wait_status(a, "acme", "AVAILABLE");
    expect(
        &call_json(
            a,
            "POST",
            "/api/v1/idps",
            Some(&idp(
                "corp-ad",
                "active-directory",
                json!({"connectionUrl": "ldaps://ad.example.com", "usersDn": "cn=users,dc=corp"}),
            )),
        ),
        201,
    );
    wait_status(a, "acme", "AVAILABLE");
    expect(
        &call_json(
            a,
            "POST",
            "/api/v1/tenants/acme/idps",
            Some(&idp(
                "google",
                "google",
                json!({"clientId": "g", "clientSecret": "s"}),
            )),
        ),
        201,
    );
    wait_status(a, "acme", "AVAILABLE");
    assert_eq!(kc.pending_faults(), 0);
    let lost: Vec<String> = kc
        .calls()
        .iter()
        .filter(|c| c.status == 502)
        .map(|c| format!("{} {}", c.method, c.path))
        .collect();
    assert_eq!(
        lost,
        ["POST /admin/realms/acme/components"],
        "the lost answer"
    );
    let snap = kc.realm_snapshot("acme").unwrap();
    assert!(snap.duplicates().is_empty(), "{:?}", snap.duplicates());
    assert_eq!(snap.components.len(), 2, "{:?}", snap.components);
    let ldap = snap.component("corp-ldap").unwrap();
    assert_eq!(ldap["providerId"], "ldap");
    assert_eq!(
        ldap["providerType"],
        "org.keycloak.storage.UserStorageProvider"
    );
    assert_eq!(
        ldap["config"]["connectionUrl"],
        json!(["ldap://ldap.example.com:389"])
    );
    assert_eq!(ldap["config"]["pagination"], json!(["true"]));
    assert_eq!(ldap["config"]["batchSizeForSync"], json!(["1000"]));
    assert_eq!(ldap["config"]["enabled"], json!(["true"]));
    let ad = snap.component("corp-ad").unwrap();
    assert_eq!(ad["providerId"], "ldap");
    assert_eq!(ad["config"]["vendor"], json!(["ad"]));
    assert_eq!(snap.idps.len(), 1);
    assert_eq!(snap.idps[0]["alias"], "google");

    // An identity provider made by hand in Keycloak stays; changes and removals in the
    // catalogue reach the realm.
    admin_client(&kc)
        .create_idp(
            "acme",
            &json!({"alias": "manual", "providerId": "oidc", "config": {}}),
        )
        .unwrap();
    expect(
        &call_json(
            a,
            "PUT",
            "/api/v1/tenants/acme/idps/corp-ldap",
            Some(&idp(
                "corp-ldap",
                "ldap",
                json!({"connectionUrl": "ldaps://ldap2.example.com", "usersDn": "ou=people"}),
            )),
        ),
        200,
    );
    wait_status(a, "acme", "AVAILABLE");
    expect(
        &call_json(a, "DELETE", "/api/v1/tenants/acme/idps/corp-ad", None),
        204,
    );
    let listed = expect(&call_json(a, "GET", "/api/v1/tenants/acme/idps", None), 200);
    assert_eq!(listed["count"], 2, "{listed}");
    expect(
        &call_json(
            a,
            "POST",
            "/api/v1/tenants/acme/idps",
            Some(&json!({"tenant_id": "other", "alias": "x", "provider_id": "oidc"})),
        ),
        400,
    );
    expect(
        &call_json(a, "GET", "/api/v1/tenants/ghost/idps", None),
        404,
    );
    wait_status(a, "acme", "AVAILABLE");
    expect(
        &call_json(a, "DELETE", "/api/v1/idps/acme%2Fgoogle", None),
        204,
    );
    let t = wait_status(a, "acme", "AVAILABLE");
    let snap = kc.realm_snapshot("acme").unwrap();
    assert_eq!(snap.components.len(), 1, "{:?}", snap.components);
    assert_eq!(
        snap.component("corp-ldap").unwrap()["config"]["connectionUrl"],
        json!(["ldaps://ldap2.example.com"])
    );
    let aliases: Vec<&str> = snap
        .idps
        .iter()
        .filter_map(|i| i["alias"].as_str())
        .collect();
    assert_eq!(aliases, ["manual"]);
    assert_realm_is_the_plan(&kc, &t);

    // An LDAP config Keycloak refuses fails the tenant's run with Keycloak's message.
    expect(
        &call_json(
            a,
            "POST",
            "/api/v1/idps",
            Some(&idp("broken", "ldap", json!({"usersDn": "ou=x"}))),
        ),
        201,
    );
    let t = wait_status(a, "acme", "FAILED");
    assert!(
        t["failure_reason"]
            .as_str()
            .unwrap()
            .contains("ldapErrorMissingConnectionUrl"),
        "{t}"
    );
}

#[test]
fn a_keycloak_under_the_auth_context_path_and_client_credentials() {
    let kc = Keycloak::start_at("/auth");
    kc.add_admin_client("tm-admin", "tm-secret");
    assert!(kc.url().ends_with("/auth"));
    let dir = support::TempDir::new();
    let yaml = format!(
        "tenant-manager:\n  keycloak:\n    url: {}\n    client-id: tm-admin\n    client-secret: tm-secret\n  tasks:\n    backoff-ms: 20\n    max-backoff-ms: 100\n",
        kc.url()
    );
    let tm = start_tm(&support::sqlite_settings(&dir), &yaml);
    create(tm.addr, json!({"id": "acme"}));
    let t = wait_status(tm.addr, "acme", "AVAILABLE");
    assert_realm_is_the_plan(&kc, &t);
    let ctx = call_json(
        tm.addr,
        "GET",
        "/api/v1/tenants/acme/security-context",
        None,
    )
    .json();
    assert_eq!(
        ctx["issuer"],
        format!("http://{}/auth/realms/acme", kc.addr)
    );
    // Without the prefix nothing answers.
    let r = request(
        kc.addr,
        "GET",
        "/realms/acme/protocol/openid-connect/certs",
        &[],
        b"",
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(r.status, 404);
}

#[test]
fn bad_admin_credentials_fail_until_the_server_is_fixed_and_servers_are_apart() {
    let kc = Keycloak::start();
    let dir = support::TempDir::new();
    let yaml = tm_yaml(&kc, "").replace(&format!("password: {ADMIN_PASSWORD}"), "password: wrong");
    let tm = start_tm(&support::sqlite_settings(&dir), &yaml);
    let a = tm.addr;
    create(a, json!({"id": "acme"}));
    let t = wait_status(a, "acme", "FAILED");
    let reason = t["failure_reason"].as_str().unwrap();
    assert!(reason.contains("Invalid user credentials"), "{reason}");
    assert!(
        !reason.contains("wrong"),
        "no password in reasons: {reason}"
    );

    // The operator fixes the server's credentials: the next run uses them.
    expect(
        &call_json(
            a,
            "PUT",
            "/api/v1/keycloak-servers/1",
            Some(
                &json!({"url": kc.url(), "username": ADMIN_USER, "password": ADMIN_PASSWORD,
                        "is_default": true}),
            ),
        ),
        200,
    );
    expect(
        &call_json(a, "POST", "/api/v1/tenants/acme/retry", None),
        202,
    );
    let t = wait_status(a, "acme", "AVAILABLE");
    assert_realm_is_the_plan(&kc, &t);

    // A second server hosts the tenants that name it, and only those.
    let other = Keycloak::start();
    expect(
        &call_json(
            a,
            "POST",
            "/api/v1/keycloak-servers",
            Some(&json!({"id": 2, "url": other.url(), "username": ADMIN_USER,
                        "password": ADMIN_PASSWORD})),
        ),
        201,
    );
    create(a, json!({"id": "beta", "keycloak_server_id": 2}));
    let t = wait_status(a, "beta", "AVAILABLE");
    assert_realm_is_the_plan(&other, &t);
    assert!(!kc.has_realm("beta"));
    assert!(!other.has_realm("acme"));
    let ctx = call_json(a, "GET", "/api/v1/tenants/beta/security-context", None).json();
    assert_eq!(ctx["keycloak_private_url"], other.url());
}

// ------------------------------------------------------------------ the admin client alone

fn admin_client(kc: &Keycloak) -> KeycloakAdmin {
    KeycloakAdmin::new(
        &kc.url(),
        "master",
        AdminCredentials::Password {
            username: ADMIN_USER.into(),
            password: ADMIN_PASSWORD.into(),
        },
        Duration::from_secs(5),
    )
}

#[test]
fn the_admin_token_is_cached_renewed_before_expiry_and_after_a_401() {
    let kc = Keycloak::start();
    let admin = admin_client(&kc);
    for _ in 0..5 {
        admin.get_realm("kaa").unwrap();
    }
    assert_eq!(admin.token_fetches(), 1);
    assert_eq!(kc.token_requests("master"), 1);

    // Revoked: the next call answers 401, the client fetches a token once and goes on.
    kc.revoke_tokens("master");
    admin.get_realm("kaa").unwrap();
    assert_eq!(admin.token_fetches(), 2);
    assert_eq!(kc.count_calls("GET", "/admin/realms/kaa", 401), 1);

    // Short-lived tokens are renewed shortly before they expire, never used expired.
    kc.set_token_lifespan("master", 2);
    kc.revoke_tokens("master");
    admin.get_realm("kaa").unwrap();
    assert_eq!(admin.token_fetches(), 3);
    admin.get_realm("kaa").unwrap();
    assert_eq!(admin.token_fetches(), 3);
    // Called on and on as the 2 s token ages: it is renewed once, before it expires (no 401).
    support::wait_until("the short-lived token renewed", || {
        admin.get_realm("kaa").unwrap();
        admin.token_fetches() == 4
    });
    assert_eq!(
        kc.count_calls("GET", "/admin/realms/kaa", 401),
        2,
        "only the revocations"
    );

    // Wrong credentials and non-admins are Unauthorized, not retried forever.
    let wrong = KeycloakAdmin::new(
        &kc.url(),
        "master",
        AdminCredentials::Password {
            username: ADMIN_USER.into(),
            password: "nope".into(),
        },
        Duration::from_secs(5),
    );
    let e = wrong.get_realm("kaa").unwrap_err();
    assert!(
        matches!(&e, KeycloakError::Unauthorized(m) if m.contains("Invalid user credentials")),
        "{e}"
    );
    kc.add_user("master", "viewer", "pw", &[]);
    let viewer = KeycloakAdmin::new(
        &kc.url(),
        "master",
        AdminCredentials::Password {
            username: "viewer".into(),
            password: "pw".into(),
        },
        Duration::from_secs(5),
    );
    assert!(matches!(
        viewer.get_realm("kaa"),
        Err(KeycloakError::Unauthorized(m)) if m.starts_with("403")
    ));
    // Client credentials of an admin client work as well.
    kc.add_admin_client("tm", "s");
    let client = KeycloakAdmin::new(
        &kc.url(),
        "master",
        AdminCredentials::Client {
            client_id: "tm".into(),
            client_secret: "s".into(),
        },
        Duration::from_secs(5),
    );
    assert_eq!(client.get_realm("kaa").unwrap()["realm"], "kaa");
}

#[test]
fn admin_errors_come_by_kind_with_keycloaks_message() {
    let kc = Keycloak::start();
    let admin = admin_client(&kc);
    assert!(matches!(
        admin.get_realm("nope"),
        Err(KeycloakError::NotFound(m)) if m.contains("Realm not found.")
    ));
    admin
        .create_realm(&json!({"realm": "acme", "enabled": true}))
        .unwrap();
    assert!(matches!(
        admin.create_realm(&json!({"realm": "acme"})),
        Err(KeycloakError::Conflict(m)) if m.contains("Conflict detected. See logs for details")
    ));
    let e = admin
        .create_realm(&json!({"realm": "x", "enabled": "yes"}))
        .unwrap_err();
    assert!(
        matches!(&e, KeycloakError::Server(400, m) if m.contains("enabled")),
        "{e}"
    );
    assert!(!e.is_transient());
    kc.fail_next(1, 503);
    let e = admin.get_realm("acme").unwrap_err();
    assert!(
        matches!(&e, KeycloakError::Server(503, m) if m.contains("unknown_error")),
        "{e}"
    );
    assert!(e.is_transient());
    kc.set_down(true);
    let e = admin.get_realm("acme").unwrap_err();
    assert!(matches!(e, KeycloakError::Unreachable(_)), "{e}");
    assert!(e.is_transient());
    kc.set_down(false);
    assert_eq!(admin.get_realm("acme").unwrap()["realm"], "acme");
    admin.delete_realm("acme").unwrap();
    assert!(matches!(
        admin.delete_realm("acme"),
        Err(KeycloakError::NotFound(_))
    ));
}

#[test]
fn users_credentials_mails_and_role_mappings() {
    let kc = Keycloak::start();
    let admin = admin_client(&kc);
    admin
        .create_realm(&json!({"realm": "acme", "enabled": true}))
        .unwrap();
    admin
        .create_role("acme", &json!({"name": "tenant-admin"}))
        .unwrap();
    admin
        .create_client(
            "acme",
            &json!({"clientId": "web", "publicClient": true, "directAccessGrantsEnabled": true,
                    "redirectUris": ["https://env.example.com/*"]}),
        )
        .unwrap();
    let uuid = admin.client_uuid("acme", "web").unwrap();
    assert_eq!(admin.get_client("acme", &uuid).unwrap()["clientId"], "web");

    let user = NewUser {
        username: "Alice".into(),
        email: Some("alice@example.com".into()),
        first_name: Some("Alice".into()),
        enabled: true,
        ..NewUser::default()
    }
    .with_password("s3cret-pw", false);
    let id = admin.create_user("acme", &user).unwrap();
    assert!(matches!(
        admin.create_user("acme", &user),
        Err(KeycloakError::Conflict(m)) if m.contains("User exists with same username")
    ));
    let found = admin.find_user("acme", "alice").unwrap().unwrap();
    assert_eq!(found["id"], id);
    assert_eq!(found["email"], "alice@example.com");
    admin.grant_realm_role("acme", &id, "tenant-admin").unwrap();
    let roles = admin.realm_role_mappings("acme", &id).unwrap();
    assert_eq!(roles.len(), 1);
    assert_eq!(roles[0]["name"], "tenant-admin");

    // The user logs in with the password grant and carries the role.
    let login = |pw: &str| {
        request(
            kc.addr,
            "POST",
            "/realms/acme/protocol/openid-connect/token",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            format!("grant_type=password&client_id=web&username=alice&password={pw}").as_bytes(),
            Duration::from_secs(5),
        )
        .unwrap()
    };
    let token = expect(&login("s3cret-pw"), 200)["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let payload = token.split('.').nth(1).unwrap();
    use base64::Engine as _;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], id);
    // Keycloak's shape: the mapped role and the realm's default roles, the account console's
    // audience, the requesting client as `azp`.
    assert_eq!(
        claims["realm_access"]["roles"],
        json!([
            "tenant-admin",
            "default-roles-acme",
            "offline_access",
            "uma_authorization"
        ])
    );
    assert_eq!(claims["aud"], "account");
    assert_eq!(claims["azp"], "web");
    assert_eq!(claims["typ"], "Bearer");

    admin
        .reset_password("acme", &id, "other-pw", false)
        .unwrap();
    assert_eq!(login("s3cret-pw").status, 401);
    expect(&login("other-pw"), 200);

    // The verify-email mail: its link must be one of the client's redirect URIs.
    assert!(matches!(
        admin.send_verify_email("acme", &id, "web", "https://evil.example.org/"),
        Err(KeycloakError::Server(400, m)) if m.contains("Invalid redirect uri")
    ));
    admin
        .send_verify_email("acme", &id, "web", "https://env.example.com/login")
        .unwrap();
    let snap = kc.realm_snapshot("acme").unwrap();
    let alice = snap.user("alice").unwrap();
    assert_eq!(alice.required_actions, ["VERIFY_EMAIL"]);
    assert_eq!(alice.emails[0]["actions"], json!(["VERIFY_EMAIL"]));
    assert_eq!(
        alice.emails[0]["redirect_uri"],
        "https://env.example.com/login"
    );
    assert_eq!(
        login("other-pw").json()["error_description"],
        "Account is not fully set up"
    );

    admin
        .update_user(
            "acme",
            &id,
            &json!({"lastName": "Liddell", "requiredActions": []}),
        )
        .unwrap();
    assert_eq!(admin.get_user("acme", &id).unwrap()["lastName"], "Liddell");
    admin
        .revoke_realm_role("acme", &id, "tenant-admin")
        .unwrap();
    assert!(admin.realm_role_mappings("acme", &id).unwrap().is_empty());
    assert_eq!(
        admin
            .list_users("acme", &kaa::clients::keycloak::UserQuery::default())
            .unwrap()
            .len(),
        1
    );
    admin.delete_user("acme", &id).unwrap();
    assert!(matches!(
        admin.get_user("acme", &id),
        Err(KeycloakError::NotFound(_))
    ));

    // Identity providers.
    admin
        .create_idp(
            "acme",
            &json!({"alias": "corp", "providerId": "oidc", "enabled": true,
                    "config": {"clientId": "x"}}),
        )
        .unwrap();
    assert!(matches!(
        admin.create_idp("acme", &json!({"alias": "corp", "providerId": "oidc"})),
        Err(KeycloakError::Conflict(_))
    ));
    admin
        .update_idp(
            "acme",
            "corp",
            &json!({"alias": "corp", "providerId": "oidc", "enabled": false}),
        )
        .unwrap();
    assert_eq!(admin.get_idp("acme", "corp").unwrap()["enabled"], false);
    assert_eq!(admin.list_idps("acme").unwrap().len(), 1);
    admin.delete_idp("acme", "corp").unwrap();
    assert!(matches!(
        admin.get_idp("acme", "corp"),
        Err(KeycloakError::NotFound(_))
    ));
}

/// Events of one write: read until each wanted `(kind, tenant)` came, then 400 ms more; the
/// events must be exactly the wanted ones.
fn expect_events(sub: &mut NatsSubscription, want: &[(&str, &str)], what: &str) {
    let mut want: Vec<(String, String)> = want
        .iter()
        .map(|(k, t)| (k.to_string(), t.to_string()))
        .collect();
    want.sort();
    let mut got: Vec<(String, String)> = Vec::new();
    let started = Instant::now();
    loop {
        let complete = want.iter().all(|w| got.contains(w));
        let wait = if complete {
            Duration::from_millis(400)
        } else {
            Duration::from_secs(15).saturating_sub(started.elapsed())
        };
        match sub.next_timeout(wait) {
            Some(m) => {
                let kind = m.subject.rsplit('.').next().unwrap().to_string();
                let tenant = LifecycleEvent::decode(&m.payload).unwrap().tenant_id;
                got.push((kind, tenant));
            }
            None if complete => break,
            None => panic!("{what}: only {got:?} of {want:?} arrived"),
        }
    }
    got.sort();
    assert_eq!(got, want, "{what}: events");
}

/// Every write that changes what `GET /tenants/{id}` or the tenant's security context shows, or
/// its users, IDPs, subscription, package or Keycloak server, sends exactly one `updated` event
/// through the outbox to a real NATS subscriber; reads, refused writes and writes that change
/// nothing send none.
#[test]
fn every_tenant_change_sends_one_updated_event() {
    let Ok(nats) = std::env::var("IAM_TEST_NATS_URL") else {
        return support::skip_because(
            "every_tenant_change_sends_one_updated_event",
            "set IAM_TEST_NATS_URL to run it",
        );
    };
    let kc = Keycloak::start();
    let dir = support::TempDir::new();
    let instance = support::unique("tm-ev").replace('_', "-");
    let yaml = format!(
        "service:\n  instance:\n    name: {instance}\nnats:\n  urls: {nats}\n{}",
        tm_yaml(&kc, "")
    );
    let tm = start_tm(&support::sqlite_settings(&dir), &yaml);
    let a = tm.addr;
    let listener = NatsClient::connect(&[nats], "", "", Duration::from_secs(3)).unwrap();
    let mut sub = listener
        .subscribe(&format!("kaa.v1.events.{instance}.tenant.lifecycle.>"))
        .unwrap();
    const EV: &[(&str, &str)] = &[("updated", "ev")];
    const NONE: &[(&str, &str)] = &[];

    create(a, json!({"id": "ev"}));
    create(a, json!({"id": "ev2"}));
    wait_status(a, "ev", "AVAILABLE");
    wait_status(a, "ev2", "AVAILABLE");
    expect_events(
        &mut sub,
        &[("updated", "ev"), ("updated", "ev2")],
        "tenants became AVAILABLE",
    );

    // One write, its answer, and the events it must send.
    let mut step = |method: &str, path: &str, body: Option<Value>, status: u16, want| -> Value {
        let what = format!("{method} {path} {}", body.clone().unwrap_or(Value::Null));
        let r = call_json(a, method, path, body.as_ref());
        assert_eq!(
            r.status,
            status,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        expect_events(&mut sub, want, &what);
        wait_status(a, "ev", "AVAILABLE");
        if r.body.is_empty() {
            Value::Null
        } else {
            r.json()
        }
    };
    let t = "/api/v1/tenants/ev";

    // The tenant itself: flags, names, template versions (through UPDATING: the event comes
    // when the realm is done).
    step(
        "PATCH",
        t,
        Some(json!({"opendistro_enabled": true})),
        200,
        EV,
    );
    step("PUT", t, Some(json!({"display_name": "Event Co"})), 200, EV);
    step(
        "PUT",
        t,
        Some(json!({"display_name": "Event Co"})),
        200,
        NONE,
    );
    step("PATCH", t, Some(json!({"no_such_field": 1})), 400, NONE);
    step("GET", t, None, 200, NONE);
    step("GET", &format!("{t}/security-context"), None, 200, NONE);
    step(
        "POST",
        "/api/v1/realm-templates",
        Some(json!({"version": 2, "template": {"displayName": "v2"}})),
        201,
        NONE,
    );
    step(
        "PATCH",
        t,
        Some(json!({"realm_template_version": 2})),
        202,
        EV,
    );
    step("POST", &format!("{t}/retry"), None, 409, NONE);

    // Its users (in Keycloak).
    let users = format!("{t}/users");
    let ann = step(
        "POST",
        &users,
        Some(json!({"username": "ann", "password": "long-enough"})),
        201,
        EV,
    );
    step(
        "POST",
        &users,
        Some(json!({"username": "bob", "password": "short"})),
        400,
        NONE,
    );
    step(
        "POST",
        &users,
        Some(json!({"username": "ann", "password": "long-enough"})),
        409,
        NONE,
    );
    let ann = format!("{users}/{}", ann["id"].as_str().unwrap());
    step("PUT", &ann, Some(json!({"first_name": "Ann"})), 200, EV);
    step(
        "PATCH",
        &ann,
        Some(json!({"roles": ["tenant-admin"]})),
        200,
        EV,
    );
    step("GET", &ann, None, 200, NONE);
    step("DELETE", &ann, None, 204, EV);
    step("DELETE", &ann, None, 404, NONE);

    // Its IDPs, under the tenant and in the catalogue.
    let idp = |alias: &str, enabled: bool| {
        json!({"alias": alias, "provider_id": "oidc", "enabled": enabled,
               "config": {"clientId": "kaa", "issuer": "https://idp.example.com"}})
    };
    step(
        "POST",
        &format!("{t}/idps"),
        Some(idp("corp", true)),
        201,
        EV,
    );
    step(
        "PUT",
        &format!("{t}/idps/corp"),
        Some(idp("corp", false)),
        200,
        EV,
    );
    step("DELETE", &format!("{t}/idps/corp"), None, 204, EV);
    let mut global = idp("gl", true);
    global["tenant_id"] = json!("ev");
    step("POST", "/api/v1/idps", Some(global), 201, EV);
    step("DELETE", "/api/v1/idps/ev%2Fgl", None, 204, EV);

    // Its subscription and the package type it names.
    step(
        "POST",
        "/api/v1/package-types",
        Some(json!({"name": "gold", "limits": {"devices": 10}})),
        201,
        NONE,
    );
    let sub_body = |end: &str| {
        json!({"tenant_id": "ev", "package_type_id": "gold", "subscription_type": "TRIAL",
               "end_date": end})
    };
    step(
        "POST",
        "/api/v1/tenant-subscriptions",
        Some(sub_body("2027-01-01")),
        201,
        EV,
    );
    step(
        "PUT",
        "/api/v1/tenant-subscriptions/ev%2Fgold",
        Some(sub_body("2028-01-01")),
        200,
        EV,
    );
    step(
        "PUT",
        "/api/v1/package-types/gold",
        Some(json!({"name": "gold", "limits": {"devices": 20}})),
        200,
        EV,
    );
    step(
        "PUT",
        "/api/v1/package-types/unlimited",
        Some(json!({"name": "unlimited", "description": "none", "limits": {}})),
        200,
        NONE,
    );
    step("DELETE", "/api/v1/package-types/gold", None, 409, NONE);
    step(
        "DELETE",
        "/api/v1/tenant-subscriptions/ev%2Fgold",
        None,
        204,
        EV,
    );

    // The Keycloak server both tenants (and the system tenant) live on: every tenant on it
    // hears of an edit.
    let both: &[(&str, &str)] = &[("updated", "ev"), ("updated", "ev2"), ("updated", "kaa")];
    let mut server = step("GET", "/api/v1/keycloak-servers/1", None, 200, NONE);
    server["is_default"] = json!(false);
    step(
        "PUT",
        "/api/v1/keycloak-servers/1",
        Some(server.clone()),
        200,
        both,
    );
    step(
        "PUT",
        "/api/v1/keycloak-servers/1",
        Some(server.clone()),
        200,
        NONE,
    );
    server["url"] = json!("not a url");
    step("PUT", "/api/v1/keycloak-servers/1", Some(server), 400, NONE);

    // A move to another server: one event when the tenant is there; one when a move fails and
    // the tenant stays (its failure reason changed); none for a move to where it is.
    let other = Keycloak::start();
    register(a, 2, &other, ADMIN_PASSWORD);
    register(a, 3, &other, "wrong");
    step("PATCH", t, Some(json!({"keycloak_server_id": 2})), 202, EV);
    step(
        "PATCH",
        t,
        Some(json!({"keycloak_server_id": 2})),
        200,
        NONE,
    );
    step("PATCH", t, Some(json!({"keycloak_server_id": 3})), 202, EV);
    assert_eq!(get_tenant(a, "ev").json()["keycloak_server_id"], 2);

    // Deleting a tenant sends `unregistered`, not `updated`.
    step(
        "DELETE",
        "/api/v1/tenants/ev2",
        None,
        202,
        &[("unregistered", "ev2")],
    );
}

/// A Keycloak server read, changed and written back keeps its admin credentials (GET never
/// shows them): tenants are still provisioned on it. A secret named `null` is cleared.
#[test]
fn a_keycloak_server_read_and_written_back_keeps_its_credentials() {
    let kc = Keycloak::start();
    let dir = support::TempDir::new();
    let tm = start(&kc, &dir);
    let a = tm.addr;
    let mut s = expect(
        &call_json(a, "GET", "/api/v1/keycloak-servers/1", None),
        200,
    );
    assert!(
        s.get("password").is_none() && s.get("client_secret").is_none(),
        "{s}"
    );
    assert_eq!(s["password_set"], true, "{s}");
    assert_eq!(s["client_secret_set"], false, "{s}");
    s["admin_realm"] = json!("master");
    s["is_default"] = json!(true);
    s["url"] = json!(format!("{}/", kc.url()));
    let put = expect(
        &call_json(a, "PUT", "/api/v1/keycloak-servers/1", Some(&s)),
        200,
    );
    assert_eq!(put["password_set"], true, "{put}");
    assert_eq!(put["url"], kc.url());
    create(a, json!({"id": "kept"}));
    let t = wait_status(a, "kept", "AVAILABLE");
    assert_realm_is_the_plan(&kc, &t);

    // Bad input changes nothing.
    for (field, bad) in [
        ("password", json!(5)),
        ("id", json!(2)),
        ("is_default", json!("yes")),
        ("url", json!("ftp://x")),
        ("surprise", json!(1)),
    ] {
        let mut b = s.clone();
        b[field] = bad;
        let r = call_json(a, "PUT", "/api/v1/keycloak-servers/1", Some(&b));
        let e = expect(&r, 400);
        assert_eq!(e["details"]["field"], field, "{e}");
    }
    assert_eq!(
        expect(
            &call_json(a, "GET", "/api/v1/keycloak-servers/1", None),
            200
        )["password_set"],
        true
    );

    // `null` clears a secret: the server then refuses the admin login, the tenant fails.
    s["password"] = Value::Null;
    let put = expect(
        &call_json(a, "PUT", "/api/v1/keycloak-servers/1", Some(&s)),
        200,
    );
    assert_eq!(put["password_set"], false, "{put}");
    create(a, json!({"id": "no-secret"}));
    let failed = wait_status(a, "no-secret", "FAILED");
    assert!(
        failed["failure_reason"]
            .as_str()
            .unwrap()
            .contains("create_realm"),
        "{failed}"
    );
    // And setting it again brings the server back.
    s["password"] = json!(ADMIN_PASSWORD);
    expect(
        &call_json(a, "PUT", "/api/v1/keycloak-servers/1", Some(&s)),
        200,
    );
    expect(
        &call_json(a, "POST", "/api/v1/tenants/no-secret/retry", None),
        202,
    );
    wait_status(a, "no-secret", "AVAILABLE");
}

#[test]
fn new_tenants_fill_the_default_server_up_to_its_bound_then_go_to_the_least_loaded() {
    let first = Keycloak::start();
    let second = Keycloak::start();
    let third = Keycloak::start();
    let dir = support::TempDir::new();
    let tm = start_tm(
        &support::sqlite_settings(&dir),
        &tm_yaml(&first, "    max-realms-per-server: 2\n"),
    );
    let a = tm.addr;
    for (id, kc) in [(2, &second), (3, &third)] {
        expect(
            &call_json(
                a,
                "POST",
                "/api/v1/keycloak-servers",
                Some(&json!({"id": id, "url": kc.url(), "username": ADMIN_USER,
                            "password": ADMIN_PASSWORD})),
            ),
            201,
        );
    }
    // The system tenant `kaa` already lives on the default server: one more fits there.
    let mut placed = Vec::new();
    for id in ["t1", "t2", "t3", "t4"] {
        create(a, json!({"id": id}));
        let t = wait_status(a, id, "AVAILABLE");
        placed.push(t["keycloak_server_id"].as_i64().unwrap());
    }
    assert_eq!(placed[0], 1, "{placed:?}");
    assert_eq!(&placed[1..3], &[2, 3], "{placed:?}");
    assert_eq!(placed[3], 2, "{placed:?}");
    assert!(first.has_realm("t1") && second.has_realm("t2") && third.has_realm("t3"));
    assert!(second.has_realm("t4"));
    // A tenant that names its server goes there, bound or not.
    create(a, json!({"id": "t5", "keycloak_server_id": 1}));
    assert_eq!(wait_status(a, "t5", "AVAILABLE")["keycloak_server_id"], 1);
}

// ------------------------------------------------------------------ first administrator

/// A key for `tenant-manager.secret-key` (32 bytes in base64).
const SECRET_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// The stored (raw) first administrator of a tenant, as the database holds it.
fn raw_first_admin(dir: &support::TempDir, id: &str) -> Option<String> {
    let c = rusqlite::Connection::open(dir.0.join("iam.db")).unwrap();
    c.query_row("SELECT first_admin FROM tenants WHERE id = ?1", [id], |r| {
        r.get(0)
    })
    .unwrap()
}

/// `POST /tenants` with `admin`: bad input is a 400 naming the field and stores nothing; the
/// administrator waits sealed in the database while the realm cannot be made, is made once
/// with `tenant-admin` (also when a run fails after making it), logs in with the password
/// grant on the tenant's frontend client, and is no longer stored once the tenant is AVAILABLE.
#[test]
fn a_tenant_is_created_with_its_first_administrator() {
    let kc = Keycloak::start();
    let dir = support::TempDir::new();
    let yaml = format!("{}  secret-key: {SECRET_KEY}\n", tm_yaml(&kc, ""));
    let tm = start_tm(&support::sqlite_settings(&dir), &yaml);
    let a = tm.addr;
    let admin = json!({"username": "Boss", "email": "boss@example.com", "first_name": "Bo",
                       "last_name": "Ss", "password": "first-password"});

    for (field, bad) in [
        ("admin", json!("boss")),
        ("admin.username", json!({"password": "first-password"})),
        ("admin.password", json!({"username": "boss"})),
        (
            "admin.password",
            json!({"username": "boss", "password": "short"}),
        ),
        (
            "admin.email",
            json!({"username": "boss", "password": "first-password", "email": "nope"}),
        ),
        (
            "admin.roles",
            json!({"username": "boss", "password": "first-password", "roles": ["x"]}),
        ),
    ] {
        let r = call_json(
            a,
            "POST",
            "/api/v1/tenants",
            Some(&json!({"id": "acme", "admin": bad})),
        );
        let e = expect(&r, 400);
        assert_eq!(e["details"]["field"], field, "{e}");
        expect(&get_tenant(a, "acme"), 404);
    }
    assert!(!kc.has_realm("acme"), "nothing made");

    // Keycloak down: the tenant waits with its administrator sealed in the database.
    kc.set_down(true);
    let t = create(a, json!({"id": "acme", "admin": admin}));
    let shown = t.to_string();
    assert!(
        !shown.contains("first-password") && !shown.contains("admin"),
        "{shown}"
    );
    let stored = raw_first_admin(&dir, "acme").expect("the administrator is stored");
    assert!(stored.starts_with("enc:v1:"), "{stored}");
    assert!(!stored.contains("first-password") && !stored.contains("boss"));

    // The user is made, then the answer to its role mapping is lost: the run fails after the
    // user exists, and the next run takes that user on instead of failing on its name.
    kc.lose_on("POST", "/role-mappings/realm", 500);
    kc.set_down(false);
    let t = wait_status(a, "acme", "AVAILABLE");
    assert_eq!(kc.pending_faults(), 0, "the role mapping's answer was lost");
    assert_eq!(raw_first_admin(&dir, "acme"), None, "dropped once made");
    let snap = kc.realm_snapshot("acme").unwrap();
    assert_eq!(snap.duplicates(), Vec::<String>::new());
    let boss = snap.user("boss").expect("the administrator in the realm");
    assert!(boss.roles.iter().any(|r| r == "tenant-admin"), "{boss:?}");
    assert_eq!(boss.email.as_deref(), Some("boss@example.com"));
    assert_eq!(boss.representation["firstName"], "Bo");
    let users = expect(
        &call_json(a, "GET", "/api/v1/tenants/acme/users", None),
        200,
    );
    assert_eq!(users["count"], 1, "{users}");
    assert_eq!(users["results"][0]["username"], "boss");
    assert_eq!(users["results"][0]["roles"], json!(["tenant-admin"]));

    // The administrator logs in through the tenant's frontend client.
    let frontend = t["client_frontend_id"].as_str().unwrap();
    let (access, _) = support::login(&kc.url(), "acme", frontend, "boss", "first-password");
    let claims = support::jwt_payload(&access);
    assert!(
        claims["realm_access"]["roles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "tenant-admin"),
        "{claims}"
    );

    // A temporary password: the administrator must choose another at the first login.
    create(
        a,
        json!({"id": "beta", "admin": {"username": "root", "password": "temporary-pw",
                                        "temporary_password": true}}),
    );
    let t = wait_status(a, "beta", "AVAILABLE");
    let (status, body) = support::token_request(
        &kc.url(),
        "beta",
        &[
            ("grant_type", "password"),
            ("client_id", t["client_frontend_id"].as_str().unwrap()),
            ("username", "root"),
            ("password", "temporary-pw"),
        ],
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error_description"], "Account is not fully set up");
    let root = kc.realm_snapshot("beta").unwrap();
    assert_eq!(
        root.user("root").unwrap().required_actions,
        vec!["UPDATE_PASSWORD".to_string()]
    );
}

// ------------------------------------------------------------------ moves between servers

/// Register a stand-in as Keycloak server `id` (`password`: its admin password).
fn register(a: SocketAddr, id: i64, kc: &Keycloak, password: &str) {
    expect(
        &call_json(
            a,
            "POST",
            "/api/v1/keycloak-servers",
            Some(&json!({"id": id, "url": kc.url(), "username": ADMIN_USER,
                        "password": password})),
        ),
        201,
    );
}

/// Poll until the tenant is AVAILABLE again after a move (which passes through MOVING).
fn wait_moved(a: SocketAddr, id: &str) -> Value {
    let mut last = Value::Null;
    wait_for("the move ended", || {
        last = get_tenant(a, id).json();
        last["status"] == "AVAILABLE"
    });
    last
}

/// `keycloak_server_id` changed on an AVAILABLE tenant moves it: the tenant is MOVING while the
/// realm is made on the new server from the plan (IDPs included) with the realm's users (their
/// roles, no password: each must choose a new one), then it switches to the new server and the
/// old realm is removed. A move the new server refuses leaves the tenant AVAILABLE where it was,
/// with the reason and nothing left on the new server; bad targets are 400s that change nothing.
#[test]
fn a_tenant_moves_to_another_keycloak_server() {
    let one = Keycloak::start();
    let two = Keycloak::start();
    let dir = support::TempDir::new();
    let tm = start(&one, &dir);
    let a = tm.addr;
    register(a, 2, &two, ADMIN_PASSWORD);
    register(a, 3, &two, "not-the-password");
    let t = "/api/v1/tenants/acme";

    create(
        a,
        json!({"id": "acme", "admin": {"username": "boss", "email": "boss@example.com",
                                        "password": "first-password"}}),
    );
    wait_status(a, "acme", "AVAILABLE");
    expect(
        &call_json(
            a,
            "POST",
            "/api/v1/tenants/acme/users",
            Some(&json!({"username": "carl", "password": "carl-password",
                         "roles": ["dashboard-admin"], "enabled": false})),
        ),
        201,
    );
    expect(
        &call_json(
            a,
            "POST",
            "/api/v1/idps",
            Some(
                &json!({"tenant_id": "acme", "alias": "corp", "provider_id": "oidc",
                         "config": {"clientId": "kaa", "issuer": "https://idp.example.com"}}),
            ),
        ),
        201,
    );
    wait_status(a, "acme", "AVAILABLE");

    // Bad targets change nothing.
    for (body, status) in [
        (json!({"keycloak_server_id": 9}), 400),
        (json!({"keycloak_server_id": "2"}), 400),
        (json!({"keycloak_server_id": null}), 400),
    ] {
        let e = expect(&call_json(a, "PATCH", t, Some(&body)), status);
        assert_eq!(e["details"]["field"], "keycloak_server_id", "{e}");
    }
    expect(
        &call_json(
            a,
            "PATCH",
            "/api/v1/tenants/kaa",
            Some(&json!({"keycloak_server_id": 2})),
        ),
        409,
    );
    let same = expect(
        &call_json(a, "PATCH", t, Some(&json!({"keycloak_server_id": 1}))),
        200,
    );
    assert_eq!(same["status"], "AVAILABLE");

    // The move.
    let moving = expect(
        &call_json(a, "PATCH", t, Some(&json!({"keycloak_server_id": 2}))),
        202,
    );
    assert_eq!(moving["status"], "MOVING");
    assert_eq!(moving["keycloak_server_id"], 1);
    assert_eq!(moving["moving_to_keycloak_server_id"], 2);
    let moved = wait_moved(a, "acme");
    assert_eq!(moved["keycloak_server_id"], 2, "{moved}");
    assert_eq!(moved["moving_to_keycloak_server_id"], Value::Null);
    assert_eq!(moved["failure_reason"], Value::Null);
    assert_realm_is_the_plan(&two, &moved);
    assert!(!one.has_realm("acme"), "the old realm is removed");
    let snap = two.realm_snapshot("acme").unwrap();
    assert!(
        snap.idps.iter().any(|i| i["alias"] == "corp"),
        "{:?}",
        snap.idps
    );
    let boss = snap.user("boss").expect("the administrator is copied");
    assert!(boss.roles.iter().any(|r| r == "tenant-admin"));
    assert_eq!(boss.password, None, "no password can be carried");
    assert_eq!(boss.required_actions, vec!["UPDATE_PASSWORD".to_string()]);
    let carl = snap.user("carl").expect("carl is copied");
    assert!(!carl.enabled);
    assert!(carl.roles.iter().any(|r| r == "dashboard-admin"));
    let ctx = expect(
        &call_json(a, "GET", &format!("{t}/security-context"), None),
        200,
    );
    assert_eq!(ctx["keycloak_private_url"], two.url());
    assert_eq!(ctx["issuer"], two.issuer("acme"));
    // The administrator is given a password again and logs in on the new server.
    let users = expect(&call_json(a, "GET", &format!("{t}/users"), None), 200);
    assert_eq!(users["count"], 2, "{users}");
    let boss_id = users["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "boss")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    expect(
        &call_json(
            a,
            "PATCH",
            &format!("{t}/users/{boss_id}"),
            Some(&json!({"password": "second-password"})),
        ),
        200,
    );
    support::login(
        &two.url(),
        "acme",
        moved["client_frontend_id"].as_str().unwrap(),
        "boss",
        "second-password",
    );

    // A server that refuses the Tenant Manager: the tenant stays, with the reason.
    expect(
        &call_json(a, "PATCH", t, Some(&json!({"keycloak_server_id": 3}))),
        202,
    );
    let stayed = wait_moved(a, "acme");
    assert_eq!(stayed["keycloak_server_id"], 2);
    let reason = stayed["failure_reason"].as_str().unwrap();
    assert!(
        reason.contains("moving to keycloak server 3 failed")
            && reason.contains("stays on keycloak server 2")
            && reason.contains("Invalid user credentials"),
        "{reason}"
    );
    assert!(!reason.contains("not-the-password"), "{reason}");
    assert!(two.has_realm("acme"));

    // A new server that fails half way: what was made there is removed again.
    let realm_deletes = |kc: &Keycloak| {
        kc.calls()
            .iter()
            .filter(|c| c.method == "DELETE" && c.path.ends_with("/realms/acme") && c.status < 300)
            .count()
    };
    let deleted_before = realm_deletes(&one);
    one.fail_after(12, 400);
    expect(
        &call_json(a, "PATCH", t, Some(&json!({"keycloak_server_id": 1}))),
        202,
    );
    let stayed = wait_moved(a, "acme");
    assert_eq!(stayed["keycloak_server_id"], 2);
    assert!(
        stayed["failure_reason"]
            .as_str()
            .unwrap()
            .contains("moving to keycloak server 1 failed"),
        "{stayed}"
    );
    assert_eq!(one.pending_faults(), 0);
    assert_eq!(
        realm_deletes(&one),
        deleted_before + 1,
        "the half-made realm is removed"
    );
    assert!(!one.has_realm("acme"));
    assert_realm_is_the_plan(&two, &stayed);

    // And back: the next move succeeds and clears the reason.
    expect(
        &call_json(a, "PATCH", t, Some(&json!({"keycloak_server_id": 1}))),
        202,
    );
    let back = wait_moved(a, "acme");
    assert_eq!(back["keycloak_server_id"], 1);
    assert_eq!(back["failure_reason"], Value::Null);
    assert_realm_is_the_plan(&one, &back);
    assert!(!two.has_realm("acme"));

    // Deleting a tenant removes its realm wherever it is.
    expect(&call_json(a, "DELETE", t, None), 202);
    wait_status(a, "acme", "GONE");
    assert!(!one.has_realm("acme") && !two.has_realm("acme"));
}
