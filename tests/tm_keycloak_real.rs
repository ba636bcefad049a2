#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The Tenant Manager against the real Keycloak that `scripts/dev-services.sh` starts
//! (`IAM_TEST_KEYCLOAK_URL`), everything over the Tenant Manager's HTTP API and read back with
//! Keycloak's own admin API: a tenant becomes a realm with its roles, clients, authorization
//! scopes, `tenant-system` resource, role policies and scope permissions; identity providers
//! (OIDC, SAML) and an LDAP federation component follow the catalogue; provisioning run again
//! changes nothing; the realm issues tokens its key set verifies; a tenant user logs in with the
//! password grant and a password reset takes effect; deleting the tenant removes the realm.
//! Skipped, with a `skipped:` line, without the variable.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kaa::clients::keycloak::{KeycloakAdmin, KeycloakError};
use kaa::tenants::bootstrap::{ROLES, SCOPES};
use kaa::tenants::keycloak_provisioner::{permission_name, policy_name};
use serde_json::{Value, json};
use support::RealKeycloak;
use support::proc::{Resp, call_json_with};
use support::service::start_tm;

/// Calls to the Tenant Manager wait long: the real server takes seconds per realm.
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

/// Polls until the tenant has `status` (`GONE`: 404), at most two minutes.
fn wait_status(a: SocketAddr, id: &str, status: &str) -> Value {
    let started = Instant::now();
    loop {
        let r = call(a, "GET", &format!("/api/v1/tenants/{id}"), None);
        if r.status == 200 && r.json()["status"] == status {
            return r.json();
        }
        if status == "GONE" && r.status == 404 {
            return Value::Null;
        }
        if r.status == 200 && r.json()["status"] == "FAILED" {
            panic!("tenant `{id}` failed: {}", r.json());
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "tenant `{id}` never {status}: {}",
            String::from_utf8_lossy(&r.body)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tm_yaml(kc: &RealKeycloak) -> String {
    format!(
        "tenant-manager:\n  keycloak:\n    url: {}\n    username: {}\n    password: {}\n  tasks:\n    workers: 2\n    backoff-ms: 200\n    max-backoff-ms: 2000\n    max-attempts: 20\n",
        kc.url, kc.admin_username, kc.admin_password
    )
}

/// A tenant id of this run (realms stay in the server until it restarts).
fn tenant_id(prefix: &str) -> String {
    support::unique(prefix).replace('_', "-").to_lowercase()
}

fn names(list: &[Value], field: &str) -> BTreeSet<String> {
    list.iter()
        .filter_map(|v| v[field].as_str().map(str::to_string))
        .collect()
}

/// What the realm holds, as Keycloak's admin API reads it back: every object by name with its id.
#[derive(Debug, PartialEq, Eq)]
struct RealmShape {
    roles: BTreeMap<String, String>,
    clients: BTreeMap<String, String>,
    scopes: BTreeMap<String, String>,
    resources: BTreeMap<String, String>,
    policies: BTreeMap<String, String>,
    idps: BTreeSet<String>,
    components: BTreeMap<String, String>,
}

fn by_name(list: &[Value], name: &str) -> BTreeMap<String, String> {
    list.iter()
        .filter_map(|v| {
            Some((
                v[name].as_str()?.to_string(),
                v["id"].as_str().unwrap_or("").to_string(),
            ))
        })
        .collect()
}

fn shape(admin: &KeycloakAdmin, realm: &str, backend: &str) -> RealmShape {
    let uuid = admin.client_uuid(realm, backend).unwrap();
    let all_clients: Vec<Value> = ["account", "admin-cli", backend]
        .iter()
        .filter_map(|c| admin.find_client(realm, c).unwrap())
        .collect();
    RealmShape {
        roles: by_name(&admin.list_roles(realm).unwrap(), "name"),
        clients: by_name(&all_clients, "clientId"),
        scopes: by_name(&admin.list_authz_scopes(realm, &uuid).unwrap(), "name"),
        resources: by_name(&admin.list_resources(realm, &uuid).unwrap(), "name"),
        policies: by_name(&admin.list_policies(realm, &uuid, None).unwrap(), "name"),
        idps: names(&admin.list_idps(realm).unwrap(), "alias"),
        components: by_name(
            &admin
                .list_components(realm, "org.keycloak.storage.UserStorageProvider", None)
                .unwrap(),
            "name",
        ),
    }
}

#[test]
fn a_tenant_becomes_a_real_realm_its_users_log_in_and_delete_removes_it() {
    let Some(kc) = support::real_keycloak("Tenant Manager against the real Keycloak") else {
        return;
    };
    let dir = support::TempDir::new();
    let tm = start_tm(&support::sqlite_settings(&dir), &tm_yaml(&kc));
    let a = tm.addr;
    let admin = kc.admin();
    let id = tenant_id("real");

    let t = expect(
        &call(
            a,
            "POST",
            "/api/v1/tenants",
            Some(&json!({"id": id, "display_name": "Real Co"})),
        ),
        202,
    );
    assert_eq!(t["status"], "CREATING");
    let t = wait_status(a, &id, "AVAILABLE");
    let realm = t["realm_name"].as_str().unwrap().to_string();
    let backend = t["client_backend_id"].as_str().unwrap().to_string();
    let frontend = t["client_frontend_id"].as_str().unwrap().to_string();
    let ctx = expect(
        &call(
            a,
            "GET",
            &format!("/api/v1/tenants/{id}/security-context"),
            None,
        ),
        200,
    );

    // The realm, as Keycloak reads it back.
    let rep = admin.get_realm(&realm).unwrap();
    assert_eq!(rep["enabled"], true);
    assert_eq!(rep["sslRequired"], "external");
    let roles = names(&admin.list_roles(&realm).unwrap(), "name");
    for (r, _, _) in ROLES {
        assert!(roles.contains(*r), "role {r}: {roles:?}");
    }
    let back = admin
        .find_client(&realm, &backend)
        .unwrap()
        .expect("backend client");
    assert_eq!(back["publicClient"], false);
    assert_eq!(back["serviceAccountsEnabled"], true);
    assert_eq!(back["authorizationServicesEnabled"], true);
    let uuid = back["id"].as_str().unwrap();
    assert_eq!(
        admin.client_secret(&realm, uuid).unwrap(),
        ctx["client_secret"].as_str().unwrap(),
        "the security context carries the realm's real secret"
    );
    let front = admin
        .find_client(&realm, &frontend)
        .unwrap()
        .expect("frontend client");
    assert_eq!(front["publicClient"], true);

    // Authorization: every scope, the tenant-system resource, a policy per role, a permission
    // per scope naming the role policies that grant it.
    let scopes = names(&admin.list_authz_scopes(&realm, uuid).unwrap(), "name");
    assert_eq!(
        scopes,
        SCOPES
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>()
    );
    let resources = admin.list_resources(&realm, uuid).unwrap();
    let ts = resources
        .iter()
        .find(|r| r["name"] == "tenant-system")
        .expect("tenant-system resource");
    assert_eq!(ts["type"], "tenant");
    let policies = admin.list_policies(&realm, uuid, Some(false)).unwrap();
    for (r, _, _) in ROLES {
        let p = policies
            .iter()
            .find(|p| p["name"] == policy_name(r))
            .unwrap_or_else(|| panic!("policy of {r}: {:?}", names(&policies, "name")));
        assert_eq!(p["type"], "role");
    }
    let permissions = admin.list_policies(&realm, uuid, Some(true)).unwrap();
    for s in SCOPES {
        let p = permissions
            .iter()
            .find(|p| p["name"] == permission_name(s))
            .unwrap_or_else(|| panic!("permission of {s}"));
        assert_eq!(p["type"], "scope");
    }

    // Identity providers of the catalogue: OIDC and SAML as IDPs, LDAP as a federation component.
    let idp = |alias: &str, provider: &str, config: Value| {
        json!({"tenant_id": id, "alias": alias, "provider_id": provider, "enabled": true,
               "config": config})
    };
    for body in [
        idp(
            "corp-oidc",
            "oidc",
            json!({"clientId": "kaa", "clientSecret": "s3cret",
                   "authorizationUrl": "https://idp.example.com/auth",
                   "tokenUrl": "https://idp.example.com/token", "issuer": "https://idp.example.com"}),
        ),
        idp(
            "corp-saml",
            "saml",
            json!({"singleSignOnServiceUrl": "https://saml.example.com/sso",
                   "entityId": "https://kaa.example.com"}),
        ),
        idp(
            "corp-ldap",
            "ldap",
            json!({"connectionUrl": "ldap://ldap.example.com:389",
                   "usersDn": "ou=people,dc=example,dc=com", "bindDn": "cn=admin,dc=example,dc=com",
                   "editMode": "READ_ONLY"}),
        ),
    ] {
        expect(&call(a, "POST", "/api/v1/idps", Some(&body)), 201);
        wait_status(a, &id, "AVAILABLE");
    }
    let idps = admin.list_idps(&realm).unwrap();
    let oidc = idps
        .iter()
        .find(|i| i["alias"] == "corp-oidc")
        .expect("oidc idp");
    assert_eq!(oidc["providerId"], "oidc");
    assert_eq!(oidc["config"]["issuer"], "https://idp.example.com");
    let saml = idps
        .iter()
        .find(|i| i["alias"] == "corp-saml")
        .expect("saml idp");
    assert_eq!(saml["providerId"], "saml");
    let ldap = admin
        .list_components(&realm, "org.keycloak.storage.UserStorageProvider", None)
        .unwrap();
    let ldap = ldap
        .iter()
        .find(|c| c["name"] == "corp-ldap")
        .expect("ldap component");
    assert_eq!(ldap["providerId"], "ldap");
    assert_eq!(
        ldap["config"]["connectionUrl"],
        json!(["ldap://ldap.example.com:389"])
    );

    // A role's and a default resource's `template` go into the realm with the next provisioning.
    let role = expect(&call(a, "GET", "/api/v1/roles/tenant-admin", None), 200);
    let mut role_body = json!({"name": "tenant-admin",
        "template": {"attributes": {"kaa-origin": ["role template"]}}});
    if let Some(d) = role.get("description").filter(|d| d.is_string()) {
        role_body["description"] = d.clone();
    }
    expect(
        &call(a, "PUT", "/api/v1/roles/tenant-admin", Some(&role_body)),
        200,
    );
    let res = expect(
        &call(a, "GET", "/api/v1/default-resources/tenant-system", None),
        200,
    );
    expect(
        &call(
            a,
            "PUT",
            "/api/v1/default-resources/tenant-system",
            Some(&json!({"name": "tenant-system", "type": res["type"],
                         "template": {"displayName": "Tenant system", "uris": ["/tenant/*"]}})),
        ),
        200,
    );

    // Provisioning run again (a new realm template version: the whole plan is applied again)
    // recreates nothing: every object keeps its id.
    let before = shape(&admin, &realm, &backend);
    let version = 1000 + (std::process::id() % 1000);
    expect(
        &call(
            a,
            "POST",
            "/api/v1/realm-templates",
            Some(&json!({"version": version,
                         "template": {"sslRequired": "external", "displayName": "Real Co v2"}})),
        ),
        201,
    );
    expect(
        &call(
            a,
            "PATCH",
            &format!("/api/v1/tenants/{id}"),
            Some(&json!({"realm_template_version": version})),
        ),
        202,
    );
    wait_status(a, &id, "AVAILABLE");
    let after = shape(&admin, &realm, &backend);
    assert_eq!(before, after, "a second provisioning changed the realm");
    assert_eq!(
        admin.get_realm(&realm).unwrap()["displayName"],
        "Real Co v2"
    );
    let role = admin.get_role(&realm, "tenant-admin").unwrap();
    assert_eq!(
        role["attributes"]["kaa-origin"],
        json!(["role template"]),
        "{role}"
    );
    let ts = admin
        .find_resource(&realm, uuid, "tenant-system")
        .unwrap()
        .expect("tenant-system");
    assert_eq!(ts["displayName"], "Tenant system", "{ts}");
    assert_eq!(ts["uris"], json!(["/tenant/*"]), "{ts}");
    assert_eq!(ts["type"], "tenant");

    // The realm issues tokens to its backend client, signed with a key its JWKS publishes.
    let (status, body) = kc.token(
        &realm,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &backend),
            ("client_secret", ctx["client_secret"].as_str().unwrap()),
        ],
    );
    assert_eq!(status, 200, "{body}");
    let access = body["access_token"].as_str().unwrap();
    let kid = jwt_simple::prelude::Token::decode_metadata(access)
        .unwrap()
        .key_id()
        .unwrap()
        .to_string();
    let jwks = kaa::clients::oidc::Jwks::new(
        ctx["jwks_uri"].as_str().unwrap(),
        Duration::from_secs(10),
        Duration::from_secs(1),
    );
    let kaa::clients::oidc::KeyLookup::Found(key) = jwks.key(&kid).unwrap() else {
        panic!("the realm's signing key is not in its key set");
    };
    let claims = key
        .verify::<jwt_simple::prelude::NoCustomClaims>(
            access,
            jwt_simple::prelude::VerificationOptions::default(),
        )
        .unwrap();
    assert_eq!(claims.issuer.as_deref(), ctx["issuer"].as_str());

    // A tenant administrator logs in through the frontend client with the password grant; a
    // password reset through the Tenant Manager takes effect at once.
    let users = format!("/api/v1/tenants/{id}/users");
    let boss = expect(
        &call(
            a,
            "POST",
            &users,
            Some(&json!({"username": "boss", "email": "boss@example.com",
                         "password": "first-password", "roles": ["tenant-admin"]})),
        ),
        201,
    );
    let login = |password: &str| {
        kc.token(
            &realm,
            &[
                ("grant_type", "password"),
                ("client_id", &frontend),
                ("username", "boss"),
                ("password", password),
            ],
        )
    };
    let (status, body) = login("first-password");
    assert_eq!(status, 200, "{body}");
    let payload = body["access_token"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .unwrap(),
    )
    .unwrap();
    let realm_roles = &claims["realm_access"]["roles"];
    assert!(
        realm_roles
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x == "tenant-admin")),
        "{claims}"
    );
    let boss_id = boss["id"].as_str().unwrap();
    expect(
        &call(
            a,
            "PATCH",
            &format!("{users}/{boss_id}"),
            Some(&json!({"password": "second-password"})),
        ),
        200,
    );
    let (status, body) = login("first-password");
    assert_eq!(status, 401, "{body}");
    let (status, body) = login("second-password");
    assert_eq!(status, 200, "{body}");

    // Keycloak decides UMA requests from the provisioned permissions: the tenant administrator
    // holds a scope of `tenant-system`, a dashboard administrator does not; `dashboard:read` is
    // no scope of that resource.
    let boss_token = body["access_token"].as_str().unwrap().to_string();
    expect(
        &call(
            a,
            "POST",
            &users,
            Some(&json!({"username": "dash", "email": "dash@example.com",
                         "password": "dash-password", "roles": ["dashboard-admin"]})),
        ),
        201,
    );
    let (status, body) = kc.token(
        &realm,
        &[
            ("grant_type", "password"),
            ("client_id", &frontend),
            ("username", "dash"),
            ("password", "dash-password"),
        ],
    );
    assert_eq!(status, 200, "{body}");
    let dash_token = body["access_token"].as_str().unwrap().to_string();
    let create = "tenant-system#tenant:application:create";
    let (status, body) = support::uma_decision(&kc.url, &realm, &boss_token, &backend, create);
    assert_eq!((status, &body), (200, &json!({"result": true})));
    let (status, body) = support::uma_decision(&kc.url, &realm, &dash_token, &backend, create);
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "access_denied");
    let (status, body) = support::uma_decision(
        &kc.url,
        &realm,
        &dash_token,
        &backend,
        "tenant-system#dashboard:read",
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_resource");

    // Deleting the tenant removes the realm.
    expect(
        &call(a, "DELETE", &format!("/api/v1/tenants/{id}"), None),
        202,
    );
    wait_status(a, &id, "GONE");
    let gone = admin.get_realm(&realm);
    assert!(matches!(gone, Err(KeycloakError::NotFound(_))), "{gone:?}");
}

/// Polls until the tenant has `status` (`GONE`: 404), `FAILED` included, at most two minutes.
fn wait_exactly(a: SocketAddr, id: &str, status: &str) -> Value {
    let started = Instant::now();
    loop {
        let r = call(a, "GET", &format!("/api/v1/tenants/{id}"), None);
        if r.status == 200 && r.json()["status"] == status {
            return r.json();
        }
        if status == "GONE" && r.status == 404 {
            return Value::Null;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "tenant `{id}` never {status}: {}",
            String::from_utf8_lossy(&r.body)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A realm made directly through Keycloak's admin API is never taken over: the tenant of the
/// same name fails with the reason and the realm stays as it was, also after the tenant is
/// deleted; `master` is refused with 400.
#[test]
fn a_realm_made_outside_the_tenant_manager_stays_untouched_on_the_real_keycloak() {
    let Some(kc) = support::real_keycloak("realm ownership against the real Keycloak") else {
        return;
    };
    let dir = support::TempDir::new();
    let tm = start_tm(&support::sqlite_settings(&dir), &tm_yaml(&kc));
    let a = tm.addr;
    let admin = kc.admin();
    let id = tenant_id("handmade");
    admin
        .create_realm(&json!({"realm": id, "enabled": true, "displayName": "made by hand"}))
        .unwrap();
    admin.create_role(&id, &json!({"name": "keep-me"})).unwrap();
    let roles_before = names(&admin.list_roles(&id).unwrap(), "name");
    let clients_before = admin.find_client(&id, "admin-cli").unwrap().is_some();

    expect(
        &call(a, "POST", "/api/v1/tenants", Some(&json!({"id": id}))),
        202,
    );
    let t = wait_exactly(a, &id, "FAILED");
    let reason = t["failure_reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("realm `{id}` already exists"))
            && reason.contains("not made by this Tenant Manager"),
        "{reason}"
    );
    let rep = admin.get_realm(&id).unwrap();
    assert_eq!(rep["displayName"], "made by hand");
    assert!(
        rep["attributes"]
            .get(kaa::tenants::keycloak_provisioner::MARK_TENANT)
            .is_none(),
        "{rep}"
    );
    assert_eq!(names(&admin.list_roles(&id).unwrap(), "name"), roles_before);
    assert!(clients_before);
    assert!(
        admin
            .find_client(&id, t["client_backend_id"].as_str().unwrap())
            .unwrap()
            .is_none(),
        "no client of the tenant was made in the realm"
    );

    expect(
        &call(a, "DELETE", &format!("/api/v1/tenants/{id}"), None),
        202,
    );
    wait_exactly(a, &id, "GONE");
    assert_eq!(
        names(&admin.list_roles(&id).unwrap(), "name"),
        roles_before,
        "the realm is still there, as it was"
    );

    for body in [
        json!({"id": "master"}),
        json!({"id": tenant_id("ops"), "realm_name": "Master"}),
    ] {
        let r = call(a, "POST", "/api/v1/tenants", Some(&body));
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
        assert!(String::from_utf8_lossy(&r.body).contains("reserved"));
    }
    assert_eq!(
        call(a, "GET", "/api/v1/tenants/master", None).status,
        404,
        "nothing stored"
    );
    assert!(admin.get_realm("master").is_ok());
    admin.delete_realm(&id).unwrap();
}

/// The Tenant Manager with security on against the real Keycloak: its endpoints' scopes on
/// `kaa-system` are decided by Keycloak's UMA evaluation of what an installer provisioned in the
/// system realm (resource, scopes, role policies, scope permissions), with the tokens the web
/// UI's login gets. A user whose role grants the scope gets the endpoint, one without gets 403;
/// the login's ID token and a token issued to another client get 401.
#[test]
fn the_tenant_managers_scopes_are_decided_by_the_real_keycloak() {
    let Some(kc) = support::real_keycloak("Tenant Manager scope decisions on the real Keycloak")
    else {
        return;
    };
    let admin = kc.admin();
    let system = tenant_id("system");
    admin
        .create_realm(&json!({"realm": system, "enabled": true}))
        .unwrap();
    support::provision_scopes(
        &admin,
        &system,
        ("kaa-tm", "tm-secret"),
        "kaa-frontend",
        "kaa-system",
        &[
            ("platform-admin", &["kaa:tenant:read", "kaa:tenant:create"]),
            ("viewer", &["kaa:tenant:read"]),
        ],
    );
    support::add_realm_user(&admin, &system, "root", "root-pw", &["platform-admin"]);
    support::add_realm_user(&admin, &system, "ann", "ann-pw", &["viewer"]);
    let dir = support::TempDir::new();
    let tm = start_tm(
        &support::sqlite_settings(&dir),
        &format!(
            "security:\n  enabled: true\n  client-id: kaa-tm\n  client-secret: tm-secret\n  audiences: [kaa-tm, kaa-frontend]\n  issuer:\n    public-url: {}/realms/{system}\n",
            kc.url
        ),
    );
    let a = tm.addr;
    let as_ = |token: &str, method: &str, path: &str, body: Option<&Value>| {
        call_json_with(
            a,
            method,
            path,
            Some(token),
            &[],
            body,
            Duration::from_secs(60),
        )
        .unwrap()
    };
    let (root, root_id_token) = support::login(&kc.url, &system, "kaa-frontend", "root", "root-pw");
    let (ann, _) = support::login(&kc.url, &system, "kaa-frontend", "ann", "ann-pw");
    let c = support::jwt_payload(&ann);
    assert_eq!(c["aud"], "account", "{c}");
    assert_eq!(c["azp"], "kaa-frontend");

    let r = as_(&ann, "GET", "/api/v1/tenants", None);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let before = r.json()["count"].clone();
    let r = as_(
        &ann,
        "POST",
        "/api/v1/tenants",
        Some(&json!({"id": "denied"})),
    );
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("kaa:tenant:create"));
    assert_eq!(
        as_(&root, "GET", "/api/v1/tenants", None).json()["count"],
        before
    );
    assert_eq!(
        as_(&root, "GET", "/api/v1/tenants/denied", None).status,
        404,
        "the refused create made nothing"
    );
    // A scope the `kaa-system` resource does not have: nobody holds it (403, not 503).
    let r = as_(&root, "GET", "/api/v1/keycloak-servers", None);
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    // Not access tokens for the Tenant Manager.
    assert_eq!(
        as_(&root_id_token, "GET", "/api/v1/tenants", None).status,
        401
    );
    let (status, body) = kc.token(
        &system,
        &[
            ("grant_type", "password"),
            ("client_id", "admin-cli"),
            ("username", "root"),
            ("password", "root-pw"),
        ],
    );
    assert_eq!(status, 200, "{body}");
    let other = body["access_token"].as_str().unwrap();
    assert_eq!(as_(other, "GET", "/api/v1/tenants", None).status, 401);
    drop(tm);
    admin.delete_realm(&system).unwrap();
}

/// The realm roles a real access token carries.
fn realm_roles(access: &str) -> Vec<String> {
    support::jwt_payload(access)["realm_access"]["roles"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r.as_str().map(String::from))
        .collect()
}

/// A tenant created with its first administrator on the real Keycloak: the administrator logs
/// in with the password grant on the tenant's frontend client and the token carries
/// `tenant-admin`; with a temporary password Keycloak asks for a new one first; bad input is a
/// 400 naming the field and makes nothing.
#[test]
fn a_tenant_created_with_its_first_administrator_on_the_real_keycloak() {
    let Some(kc) = support::real_keycloak("first administrator on the real Keycloak") else {
        return;
    };
    let dir = support::TempDir::new();
    let tm = start_tm(&support::sqlite_settings(&dir), &tm_yaml(&kc));
    let a = tm.addr;
    let admin = kc.admin();
    let id = tenant_id("first-admin");

    let r = call(
        a,
        "POST",
        "/api/v1/tenants",
        Some(&json!({"id": id, "admin": {"username": "boss", "password": "short"}})),
    );
    let e = expect(&r, 400);
    assert_eq!(e["details"]["field"], "admin.password", "{e}");
    assert_eq!(
        call(a, "GET", &format!("/api/v1/tenants/{id}"), None).status,
        404
    );
    assert!(matches!(
        admin.get_realm(&id),
        Err(KeycloakError::NotFound(_))
    ));

    expect(
        &call(
            a,
            "POST",
            "/api/v1/tenants",
            Some(
                &json!({"id": id, "admin": {"username": "boss", "email": "boss@example.com",
                          "first_name": "Bo", "last_name": "Ss",
                          "password": "first-password"}}),
            ),
        ),
        202,
    );
    let t = wait_status(a, &id, "AVAILABLE");
    let frontend = t["client_frontend_id"].as_str().unwrap();
    let (access, _) = support::login(&kc.url, &id, frontend, "boss", "first-password");
    assert!(
        realm_roles(&access).iter().any(|r| r == "tenant-admin"),
        "{}",
        support::jwt_payload(&access)
    );
    let user = admin.find_user(&id, "boss").unwrap().expect("boss");
    assert_eq!(user["email"], "boss@example.com");
    assert_eq!(user["firstName"], "Bo");

    let temp = tenant_id("temp-admin");
    expect(
        &call(
            a,
            "POST",
            "/api/v1/tenants",
            Some(
                &json!({"id": temp, "admin": {"username": "root", "password": "temporary-pw",
                          "temporary_password": true}}),
            ),
        ),
        202,
    );
    let t2 = wait_status(a, &temp, "AVAILABLE");
    let (status, body) = kc.token(
        &temp,
        &[
            ("grant_type", "password"),
            ("client_id", t2["client_frontend_id"].as_str().unwrap()),
            ("username", "root"),
            ("password", "temporary-pw"),
        ],
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error_description"], "Account is not fully set up");

    for t in [&id, &temp] {
        expect(
            &call(a, "DELETE", &format!("/api/v1/tenants/{t}"), None),
            202,
        );
        wait_status(a, t, "GONE");
    }
}

/// A move on the real Keycloak. One real server registered a second time under another address
/// (`localhost` for `127.0.0.1`) is one Keycloak: the move switches the tenant to the other
/// address without copying or removing anything (the realm is recognised by its id), and the
/// tenant's security context and issuer follow the address; the administrator's password still
/// works. A server whose credentials Keycloak refuses leaves the tenant where it was, with the
/// reason.
#[test]
fn a_tenant_moves_between_two_addresses_of_the_real_keycloak() {
    let Some(kc) = support::real_keycloak("tenant move on the real Keycloak") else {
        return;
    };
    let other_url = if kc.url.contains("127.0.0.1") {
        kc.url.replace("127.0.0.1", "localhost")
    } else {
        kc.url.replace("localhost", "127.0.0.1")
    };
    assert_ne!(
        other_url, kc.url,
        "IAM_TEST_KEYCLOAK_URL names neither 127.0.0.1 nor localhost"
    );
    let dir = support::TempDir::new();
    let tm = start_tm(&support::sqlite_settings(&dir), &tm_yaml(&kc));
    let a = tm.addr;
    let admin = kc.admin();
    for (sid, url, password) in [
        (2, other_url.as_str(), kc.admin_password.as_str()),
        (3, kc.url.as_str(), "not-the-password"),
    ] {
        expect(
            &call(
                a,
                "POST",
                "/api/v1/keycloak-servers",
                Some(
                    &json!({"id": sid, "url": url, "username": kc.admin_username,
                             "password": password}),
                ),
            ),
            201,
        );
    }
    let id = tenant_id("mover");
    let path = format!("/api/v1/tenants/{id}");
    expect(
        &call(
            a,
            "POST",
            "/api/v1/tenants",
            Some(&json!({"id": id, "admin": {"username": "boss", "password": "first-password"}})),
        ),
        202,
    );
    let t = wait_status(a, &id, "AVAILABLE");
    assert_eq!(t["keycloak_server_id"], 1);
    let realm_id = admin.get_realm(&id).unwrap()["id"].clone();
    let frontend = t["client_frontend_id"].as_str().unwrap().to_string();

    // Refused credentials: the tenant stays on server 1, with the reason; the realm is intact.
    expect(
        &call(a, "PATCH", &path, Some(&json!({"keycloak_server_id": 3}))),
        202,
    );
    let t = wait_status(a, &id, "AVAILABLE");
    assert_eq!(t["keycloak_server_id"], 1);
    let reason = t["failure_reason"].as_str().unwrap();
    assert!(
        reason.contains("moving to keycloak server 3 failed")
            && reason.contains("Invalid user credentials"),
        "{reason}"
    );
    assert_eq!(admin.get_realm(&id).unwrap()["id"], realm_id);
    support::login(&kc.url, &id, &frontend, "boss", "first-password");

    // The same Keycloak under its other address: the tenant switches, the realm stays.
    let moving = expect(
        &call(a, "PATCH", &path, Some(&json!({"keycloak_server_id": 2}))),
        202,
    );
    assert_eq!(moving["status"], "MOVING");
    let t = wait_status(a, &id, "AVAILABLE");
    assert_eq!(t["keycloak_server_id"], 2);
    assert_eq!(t["failure_reason"], Value::Null);
    assert_eq!(
        admin.get_realm(&id).unwrap()["id"],
        realm_id,
        "the realm is the one it was, not removed and made again"
    );
    let users = admin.list_users(&id, &Default::default()).unwrap();
    assert_eq!(
        names(&users, "username"),
        BTreeSet::from(["boss".to_string()])
    );
    let ctx = expect(
        &call(a, "GET", &format!("{path}/security-context"), None),
        200,
    );
    assert_eq!(ctx["keycloak_private_url"], other_url.as_str());
    assert_eq!(ctx["issuer"], format!("{other_url}/realms/{id}"));
    let (access, _) = support::login(&other_url, &id, &frontend, "boss", "first-password");
    assert_eq!(support::jwt_payload(&access)["iss"], ctx["issuer"]);
    assert!(realm_roles(&access).iter().any(|r| r == "tenant-admin"));

    expect(&call(a, "DELETE", &path, None), 202);
    wait_status(a, &id, "GONE");
    assert!(matches!(
        admin.get_realm(&id),
        Err(KeycloakError::NotFound(_))
    ));
}
