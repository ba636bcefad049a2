//! Shared support of the integration tests: per-test SQLite files and PostgreSQL databases,
//! created fresh and dropped afterwards so runs never see each other's data.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod certs;
pub mod keycloak;
pub mod proc;
pub mod proxy;
pub mod service;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kaa::config::{PostgresSettings, Secret, SqliteSettings, StorageSettings};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A unique name per test within this process and across processes.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let p = std::env::temp_dir().join(unique("kaa-test"));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn sqlite_settings(dir: &TempDir) -> StorageSettings {
    StorageSettings::Sqlite(SqliteSettings {
        path: dir.0.join("iam.db"),
    })
}

/// The PostgreSQL server for tests, if `IAM_TEST_POSTGRES_URL` is set.
pub fn pg_url() -> Option<String> {
    match std::env::var("IAM_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => None,
    }
}

/// Say that a test was skipped, visibly: a direct write to stderr is not captured by the
/// test harness, so `cargo test` shows it even when the test passes.
pub fn skip(what: &str) {
    skip_because(what, "set IAM_TEST_POSTGRES_URL to run it");
}

pub fn skip_because(what: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: {what} ({why})");
}

/// A database of its own on the test server, dropped when this guard drops.
pub struct PgTestDb {
    pub settings: PostgresSettings,
    admin: String,
    pub name: String,
}

pub fn settings_from_url(url: &str, database: &str) -> PostgresSettings {
    let c = postgres::Config::from_str(url).expect("IAM_TEST_POSTGRES_URL is a postgres URL");
    let host = match c.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_string(),
    };
    PostgresSettings {
        host,
        port: c.get_ports().first().copied().unwrap_or(5432),
        username: c.get_user().unwrap_or("postgres").to_string(),
        password: Secret::new(
            &c.get_password()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .unwrap_or_default(),
        ),
        database: database.to_string(),
        ssl_mode: "disable".into(),
        ssl_root_cert: None,
        max_open_connections: 8,
        connect_timeout: Duration::from_secs(3),
        statement_timeout: Duration::from_secs(30),
        startup_wait: Duration::from_secs(60),
    }
}

impl PgTestDb {
    pub fn create() -> Option<PgTestDb> {
        let url = pg_url()?;
        let name = unique("kaa_test");
        let mut admin = postgres::Client::connect(&url, postgres::NoTls)
            .unwrap_or_else(|e| panic!("IAM_TEST_POSTGRES_URL {url} does not answer: {e}"));
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        Some(PgTestDb {
            settings: settings_from_url(&url, &name),
            admin: url,
            name,
        })
    }

    pub fn storage(&self) -> StorageSettings {
        StorageSettings::Postgres(self.settings.clone())
    }
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// The real Keycloak server for tests, if `IAM_TEST_KEYCLOAK_URL` is set
/// (`scripts/dev-services.sh` starts one and prints the variables).
pub struct RealKeycloak {
    /// Base URL, without `/realms`.
    pub url: String,
    /// The master realm's administrator.
    pub admin_username: String,
    pub admin_password: String,
}

/// The real Keycloak named by `IAM_TEST_KEYCLOAK_URL` (admin from
/// `IAM_TEST_KEYCLOAK_ADMIN_USERNAME` / `_PASSWORD`, default `admin`/`admin`), or `None` after
/// saying that `what` was skipped.
pub fn real_keycloak(what: &str) -> Option<RealKeycloak> {
    let var = |name: &str, default: &str| match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => default.to_string(),
    };
    let url = var("IAM_TEST_KEYCLOAK_URL", "");
    if url.is_empty() {
        skip_because(what, "set IAM_TEST_KEYCLOAK_URL to run it");
        return None;
    }
    Some(RealKeycloak {
        url: url.trim_end_matches('/').to_string(),
        admin_username: var("IAM_TEST_KEYCLOAK_ADMIN_USERNAME", "admin"),
        admin_password: var("IAM_TEST_KEYCLOAK_ADMIN_PASSWORD", "admin"),
    })
}

impl RealKeycloak {
    /// The project's admin client, as the master realm's administrator.
    pub fn admin(&self) -> kaa::clients::keycloak::KeycloakAdmin {
        kaa::clients::keycloak::KeycloakAdmin::new(
            &self.url,
            "master",
            kaa::clients::keycloak::AdminCredentials::Password {
                username: self.admin_username.clone(),
                password: self.admin_password.clone(),
            },
            Duration::from_secs(30),
        )
    }

    /// A form POST to `realm`'s token endpoint: the status and the JSON answer.
    pub fn token(&self, realm: &str, form: &[(&str, &str)]) -> (u16, serde_json::Value) {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .new_agent();
        let mut resp = agent
            .post(format!(
                "{}/realms/{realm}/protocol/openid-connect/token",
                self.url
            ))
            .send_form(form.iter().copied())
            .unwrap();
        let status = resp.status().as_u16();
        (
            status,
            resp.body_mut()
                .read_json()
                .unwrap_or(serde_json::Value::Null),
        )
    }
}

/// What an installer makes in the system realm for the Tenant Manager's scope decisions, through
/// Keycloak's admin API (so that the stand-in and a real Keycloak are set up alike): the
/// confidential client `rs_client` with authorization services, the web UI's public client
/// `frontend` (password grant allowed), the realm roles of `grants`, the authorization scopes they
/// name, the resource `resource` with those scopes, a role policy `<role>-policy` per role, and a
/// scope permission `<scope>-permission` per scope (`AFFIRMATIVE`, naming the resource and the
/// policies of every role that grants the scope). Objects already there are kept.
pub fn provision_scopes(
    admin: &kaa::clients::keycloak::KeycloakAdmin,
    realm: &str,
    (rs_client, rs_secret): (&str, &str),
    frontend: &str,
    resource: &str,
    grants: &[(&str, &[&str])],
) {
    use kaa::clients::keycloak::KeycloakError;
    use serde_json::json;
    let ok = |what: &str, r: Result<(), KeycloakError>| match r {
        Ok(()) | Err(KeycloakError::Conflict(_)) => {}
        Err(e) => panic!("{what}: {e}"),
    };
    ok(
        "resource server client",
        admin
            .create_client(
                realm,
                &json!({"clientId": rs_client, "secret": rs_secret, "publicClient": false,
                        "serviceAccountsEnabled": true, "authorizationServicesEnabled": true,
                        "standardFlowEnabled": false, "directAccessGrantsEnabled": false}),
            )
            .map(|_| ()),
    );
    ok(
        "frontend client",
        admin
            .create_client(
                realm,
                &json!({"clientId": frontend, "publicClient": true,
                        "directAccessGrantsEnabled": true, "standardFlowEnabled": true,
                        "redirectUris": ["*"]}),
            )
            .map(|_| ()),
    );
    let uuid = admin.client_uuid(realm, rs_client).unwrap();
    let mut scopes: Vec<&str> = Vec::new();
    for (role, granted) in grants {
        ok(
            "role",
            admin.create_role(realm, &json!({"name": role, "description": "system role"})),
        );
        for s in *granted {
            if !scopes.contains(s) {
                scopes.push(s);
            }
        }
    }
    for s in &scopes {
        ok(
            "scope",
            admin
                .create_authz_scope(realm, &uuid, &json!({"name": s}))
                .map(|_| ()),
        );
    }
    ok(
        "resource",
        admin
            .create_resource(
                realm,
                &uuid,
                &json!({"name": resource, "ownerManagedAccess": false,
                        "scopes": scopes.iter().map(|s| json!({"name": s})).collect::<Vec<_>>()}),
            )
            .map(|_| ()),
    );
    for (role, _) in grants {
        let id = admin.get_role(realm, role).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        ok(
            "role policy",
            admin
                .create_role_policy(
                    realm,
                    &uuid,
                    &json!({"name": format!("{role}-policy"), "type": "role", "logic": "POSITIVE",
                            "decisionStrategy": "UNANIMOUS",
                            "roles": [{"id": id, "required": false}]}),
                )
                .map(|_| ()),
        );
    }
    for s in &scopes {
        let policies: Vec<String> = grants
            .iter()
            .filter(|(_, granted)| granted.contains(s))
            .map(|(role, _)| format!("{role}-policy"))
            .collect();
        ok(
            "scope permission",
            admin
                .create_scope_permission(
                    realm,
                    &uuid,
                    &json!({"name": format!("{s}-permission"), "type": "scope",
                            "logic": "POSITIVE", "decisionStrategy": "AFFIRMATIVE",
                            "resources": [resource], "scopes": [s], "policies": policies}),
                )
                .map(|_| ()),
        );
    }
}

/// A user of `realm` made through the admin API (e-mail and names, as Keycloak's user profile
/// wants them for a login), with a password and realm roles; its id.
pub fn add_realm_user(
    admin: &kaa::clients::keycloak::KeycloakAdmin,
    realm: &str,
    username: &str,
    password: &str,
    roles: &[&str],
) -> String {
    let user = kaa::clients::keycloak::NewUser {
        username: username.to_string(),
        email: Some(format!("{username}@example.com")),
        first_name: Some("Test".into()),
        last_name: Some("User".into()),
        enabled: true,
        email_verified: Some(true),
        ..Default::default()
    }
    .with_password(password, false);
    let id = admin.create_user(realm, &user).unwrap();
    for role in roles {
        admin.grant_realm_role(realm, &id, role).unwrap();
    }
    id
}

/// The JSON payload of a JWT, unverified (to read what a server put into its tokens).
pub fn jwt_payload(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url"),
    )
    .expect("JSON claims")
}

/// A form POST to the token endpoint of `realm` on the Keycloak at `base` (the stand-in's URL or
/// a real server's): the status and the JSON answer.
pub fn token_request(base: &str, realm: &str, form: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent();
    let mut resp = agent
        .post(format!(
            "{}/realms/{realm}/protocol/openid-connect/token",
            base.trim_end_matches('/')
        ))
        .send_form(form.iter().copied())
        .unwrap();
    let status = resp.status().as_u16();
    (
        status,
        resp.body_mut()
            .read_json()
            .unwrap_or(serde_json::Value::Null),
    )
}

/// Log `username` in at `realm` through the public client `client` (password grant with
/// `scope=openid`): the access token and the ID token Keycloak returned.
pub fn login(
    base: &str,
    realm: &str,
    client: &str,
    username: &str,
    password: &str,
) -> (String, String) {
    let (status, body) = token_request(
        base,
        realm,
        &[
            ("grant_type", "password"),
            ("client_id", client),
            ("username", username),
            ("password", password),
            ("scope", "openid"),
        ],
    );
    assert_eq!(status, 200, "login of {username} at {realm}: {body}");
    (
        body["access_token"].as_str().unwrap().to_string(),
        body["id_token"].as_str().unwrap().to_string(),
    )
}

/// One UMA decision (`response_mode=decision`) asked of the Keycloak at `base` for the bearer of
/// `token`: the status and the answer.
pub fn uma_decision(
    base: &str,
    realm: &str,
    token: &str,
    audience: &str,
    permission: &str,
) -> (u16, serde_json::Value) {
    let mut resp = ureq::post(&format!(
        "{}/realms/{realm}/protocol/openid-connect/token",
        base.trim_end_matches('/')
    ))
    .config()
    .http_status_as_error(false)
    .build()
    .header("Authorization", &format!("Bearer {token}"))
    .send_form([
        ("grant_type", "urn:ietf:params:oauth:grant-type:uma-ticket"),
        ("audience", audience),
        ("permission", permission),
        ("response_mode", "decision"),
    ])
    .unwrap();
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_json().unwrap_or_default())
}

/// How long [`wait_until`] waits: far beyond any healthy run, so that it fails only when the
/// condition never holds (a loaded machine makes it slower, never wrong).
pub const LIVENESS: Duration = Duration::from_secs(30);

/// Poll `cond` until it holds; fails the test, naming `what`, when it has not within [`LIVENESS`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + LIVENESS;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "never happened within {LIVENESS:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A value of `/metrics`: the counter `name` (`name{...} v`) or the gauge
/// `service_gauge{name="<name>"}`; `None` when the service does not export it (yet).
pub fn metric(addr: std::net::SocketAddr, name: &str) -> Option<i64> {
    let r = proc::get(addr, "/metrics");
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body).unwrap();
    let counter = format!("{name}{{");
    let gauge = format!("name=\"{name}\"");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.starts_with(&counter) || (l.starts_with("service_gauge{") && l.contains(&gauge))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Wait until IAM at `addr` answers ready with both of its NATS subscriptions (tenant lifecycle
/// events, revision notices) in place: from then on it hears every event published.
pub fn wait_subscribed(addr: std::net::SocketAddr) {
    wait_until("IAM ready with its NATS subscriptions in place", || {
        proc::get(addr, "/health/ready").status == 200
            && metric(addr, "iam_nats_subscriptions") == Some(2)
    });
}

/// The API id of a KRN (base64 of its canonical text).
pub fn raw_id(krn: &str) -> String {
    kaa::policy::Krn::parse(krn).unwrap().to_id()
}

/// The API id of a KRN as a path segment (base64, percent-encoded).
pub fn path_id(krn: &str) -> String {
    raw_id(krn)
        .replace('/', "%2F")
        .replace('+', "%2B")
        .replace('=', "%3D")
}

/// The answer's JSON (`null` for an empty body) after asserting its status.
pub fn expect(r: &proc::Resp, status: u16) -> serde_json::Value {
    assert_eq!(
        r.status,
        status,
        "body: {}",
        String::from_utf8_lossy(&r.body)
    );
    if r.body.is_empty() {
        serde_json::Value::Null
    } else {
        r.json()
    }
}
