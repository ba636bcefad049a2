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
