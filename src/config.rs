//! Configuration: the YAML file at `APP_CONFIG_PATH`, then every environment variable of the
//! table below over it, validated into one [`Config`]. The same mechanism serves both binaries.
//! An invalid value stops the start with one line naming the key; secrets are never shown.

mod err;
mod secret;
mod sections;
mod tree;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use err::ConfigError;
pub use secret::Secret;
pub use sections::{
    AuditSection, IamDecisionLog, IamSection, Section, TenantManagerSection, TmAuthSection,
    TmKeycloak, TmSubscriptions, TmTasks, valid_installation_id,
};
pub use tree::{Tree, parse_duration};

/// Which binary is loading its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceKind {
    Iam,
    TenantManager,
}

impl ServiceKind {
    pub fn name(self) -> &'static str {
        match self {
            ServiceKind::Iam => "iam",
            ServiceKind::TenantManager => "tenant-manager",
        }
    }

    /// Default REST port.
    pub fn default_port(self) -> u16 {
        match self {
            ServiceKind::Iam => 8090,
            ServiceKind::TenantManager => 8091,
        }
    }

    /// Default database name, user and password (the seed's `iam` for IAM).
    fn default_db(self) -> &'static str {
        match self {
            ServiceKind::Iam => "iam",
            ServiceKind::TenantManager => "tenant_manager",
        }
    }
}

/// Default of `security.jwks-max-age`: a key set older than this is fetched again, so a key the
/// issuer withdrew is refused within about this time.
pub const DEFAULT_JWKS_MAX_AGE: Duration = Duration::from_secs(600);

/// Environment variable -> dotted config key. Every variable of the seed's table is here; the
/// rest are documented in README.md. `*_FILE` variants of the secrets read the value from a file.
pub const ENV_KEYS: &[(&str, &str)] = &[
    ("SERVER_PORT", "server.port"),
    ("SERVICE_DEBUG", "service.debug"),
    ("SERVICE_INSTANCE_NAME", "service.instance.name"),
    ("SERVICE_INSTANCE_REPLICA_ID", "service.instance.replica.id"),
    ("SERVICE_GRACEFUL_SHUTDOWN", "service.graceful-shutdown"),
    ("SERVICE_SHUTDOWN_DELAY", "service.shutdown-delay"),
    ("KAA_POSTGRESQL_HOST", "postgresql.host"),
    ("KAA_POSTGRESQL_PORT", "postgresql.port"),
    ("KAA_POSTGRESQL_USERNAME", "postgresql.username"),
    ("KAA_POSTGRESQL_PASSWORD", "postgresql.password"),
    ("KAA_POSTGRESQL_DATABASE", "postgresql.database"),
    ("KAA_POSTGRESQL_SSL_MODE", "postgresql.ssl-mode"),
    (
        "KAA_POSTGRESQL_MAX_OPEN_CONNECTIONS",
        "postgresql.max-open-connections",
    ),
    ("KAA_POSTGRESQL_STARTUP_WAIT", "postgresql.startup-wait"),
    ("KAA_SQLITE_PATH", "sqlite.path"),
    ("KAA_SECURITY_ENABLED", "security.enabled"),
    (
        "KAA_SECURITY_MULTITENANCY_ENABLED",
        "security.multitenancy.enabled",
    ),
    (
        "KAA_SECURITY_ISSUER_PUBLIC_URL",
        "security.issuer.public-url",
    ),
    (
        "KAA_SECURITY_ISSUER_PRIVATE_URL",
        "security.issuer.private-url",
    ),
    ("KAA_SECURITY_KEYCLOAK_USERS", "security.keycloak-users"),
    ("KAA_SECURITY_CLIENT_ID", "security.client-id"),
    ("KAA_SECURITY_CLIENT_SECRET", "security.client-secret"),
    (
        "KAA_SECURITY_MULTITENANCY_TENANT_MANAGER_URL",
        "security.multitenancy.tenant-manager-url",
    ),
    ("KAA_LICENSE_CERT_PATH", "license.cert-path"),
    ("KAA_LICENSE_CERT_PASSWORD", "license.cert-password"),
    ("KAA_LICENSE_REQUIRED", "license.required"),
    ("KAA_NATS_URLS", "nats.urls"),
    ("KAA_IAM_AUDIT_RETENTION_DAYS", "iam.audit.retention-days"),
    ("KAA_IAM_AUDIT_RETENTION_ROWS", "iam.audit.retention-rows"),
    ("KAA_IAM_AUDIT_PUBLISH", "iam.audit.publish"),
    ("KAA_IAM_AUDIT_SUBJECT", "iam.audit.subject"),
    (
        "KAA_TENANT_MANAGER_AUDIT_RETENTION_DAYS",
        "tenant-manager.audit.retention-days",
    ),
    (
        "KAA_TENANT_MANAGER_AUDIT_RETENTION_ROWS",
        "tenant-manager.audit.retention-rows",
    ),
    (
        "KAA_TENANT_MANAGER_AUDIT_PUBLISH",
        "tenant-manager.audit.publish",
    ),
    (
        "KAA_TENANT_MANAGER_AUDIT_SUBJECT",
        "tenant-manager.audit.subject",
    ),
    ("KAA_IAM_DECISION_LOG_MODE", "iam.decision-log.mode"),
    (
        "KAA_IAM_DECISION_LOG_SAMPLE_RATE",
        "iam.decision-log.sample-rate",
    ),
    (
        "KAA_IAM_DECISION_LOG_DESTINATION",
        "iam.decision-log.destination",
    ),
    ("KAA_KEYCLOAK_URL", "tenant-manager.keycloak.url"),
    (
        "KAA_KEYCLOAK_PUBLIC_URL",
        "tenant-manager.keycloak.public-url",
    ),
    (
        "KAA_KEYCLOAK_ADMIN_REALM",
        "tenant-manager.keycloak.admin-realm",
    ),
    (
        "KAA_KEYCLOAK_ADMIN_USERNAME",
        "tenant-manager.keycloak.username",
    ),
    (
        "KAA_KEYCLOAK_ADMIN_PASSWORD",
        "tenant-manager.keycloak.password",
    ),
    ("KAA_TENANT_MANAGER_SECRET_KEY", "tenant-manager.secret-key"),
    (
        "KAA_TENANT_MANAGER_FALLBACK_PACKAGE_TYPE",
        "tenant-manager.subscriptions.fallback-package-type",
    ),
    (
        "KAA_TENANT_MANAGER_PREVIOUS_SECRET_KEYS",
        "tenant-manager.previous-secret-keys",
    ),
    (
        "KAA_TENANT_MANAGER_INSTALLATION_ID",
        "tenant-manager.installation-id",
    ),
    ("NATS_USERNAME", "nats.username"),
    ("NATS_PASSWORD", "nats.password"),
];

/// Variables whose value may instead be read from the file named by `<NAME>_FILE`.
const SECRET_ENVS: &[&str] = &[
    "KAA_POSTGRESQL_PASSWORD",
    "KAA_SECURITY_CLIENT_SECRET",
    "KAA_LICENSE_CERT_PASSWORD",
    "NATS_PASSWORD",
    "KAA_KEYCLOAK_ADMIN_PASSWORD",
    "KAA_TENANT_MANAGER_SECRET_KEY",
    "KAA_TENANT_MANAGER_PREVIOUS_SECRET_KEYS",
];

/// Variables read outside the table (not reported as unknown).
const OTHER_ENVS: &[&str] = &["APP_CONFIG_PATH"];

#[derive(Debug, Clone)]
pub struct Config {
    pub kind: ServiceKind,
    /// The file the configuration came from, if any.
    pub source: Option<PathBuf>,
    pub service: ServiceSettings,
    pub server: ServerSettings,
    pub storage: StorageSettings,
    pub security: SecuritySettings,
    pub license: LicenseSettings,
    pub nats: NatsSettings,
    /// The `iam` section (read by IAM; its defaults for the Tenant Manager).
    pub iam: IamSection,
    /// The `tenant-manager` section (read by the Tenant Manager; its defaults for IAM).
    pub tenant_manager: TenantManagerSection,
}

#[derive(Debug, Clone)]
pub struct ServiceSettings {
    pub instance_name: String,
    pub replica_id: String,
    /// After SIGTERM/SIGINT: how long in-flight requests may take to finish once the server
    /// stops accepting.
    pub graceful_shutdown: Duration,
    /// After SIGTERM/SIGINT: how long the server goes on accepting and serving (readiness
    /// already 503) before it stops accepting and drains, so that load balancers notice first.
    pub shutdown_delay: Duration,
    pub debug: bool,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub host: IpAddr,
    pub port: u16,
    pub workers: usize,
    /// Threads for connection I/O and inline handlers (0: one per core).
    pub io_threads: usize,
    pub max_connections: usize,
    pub max_body_bytes: usize,
    /// Request body bytes all requests may hold at once.
    pub max_body_bytes_in_flight: usize,
    /// Longest wait of a request for a handler slot.
    pub queue_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_page_size: u32,
}

#[derive(Debug, Clone)]
pub enum StorageSettings {
    Sqlite(SqliteSettings),
    Postgres(PostgresSettings),
}

#[derive(Debug, Clone)]
pub struct SqliteSettings {
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct PostgresSettings {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: Secret,
    pub database: String,
    /// `disable`, `require`, `verify-ca` or `verify-full`.
    pub ssl_mode: String,
    /// PEM file of trusted CAs for `verify-ca` / `verify-full` (system roots when unset).
    pub ssl_root_cert: Option<PathBuf>,
    pub max_open_connections: u32,
    /// How long a request waits for a connection (and a connection attempt may take).
    pub connect_timeout: Duration,
    /// Statement timeout sent to the server.
    pub statement_timeout: Duration,
    /// How long the start retries its first connection while the server cannot be reached
    /// (not ready meanwhile) before it gives up.
    pub startup_wait: Duration,
}

#[derive(Debug, Clone)]
pub struct SecuritySettings {
    pub enabled: bool,
    pub multitenancy_enabled: bool,
    pub issuer_public_url: String,
    pub issuer_private_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub tenant_manager_url: String,
    /// With security on: IAM users are users of the tenant's Keycloak realm (created, updated
    /// and deleted through its admin API); off: local users.
    pub keycloak_users: bool,
    /// Accepted `aud`/`azp` values of access tokens; empty accepts any.
    pub audiences: Vec<String>,
    /// Clock leeway for `exp` and `nbf`.
    pub leeway: Duration,
    /// Least time between two fetches of the issuer's keys for an unknown `kid`.
    pub jwks_refresh_interval: Duration,
    /// The issuer's keys are fetched again once older than this: a key the issuer withdrew is
    /// refused within about this time.
    pub jwks_max_age: Duration,
}

#[derive(Debug, Clone)]
pub struct LicenseSettings {
    pub cert_path: PathBuf,
    pub cert_password: Secret,
    /// When true, a missing or invalid license stops the start.
    pub required: bool,
    /// PEM certificate of the issuer a license must be signed by (any issuer when unset).
    pub trusted_issuer: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct NatsSettings {
    /// Empty: no events are published or consumed.
    pub urls: Vec<String>,
    pub username: String,
    pub password: Secret,
}

/// A loaded configuration and the warnings worth logging (unknown keys and variables).
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

/// Where the configuration file is looked for when `APP_CONFIG_PATH` is not set.
pub fn default_config_path(kind: ServiceKind) -> PathBuf {
    PathBuf::from(format!("/srv/{}/service-config.yml", kind.name()))
}

/// Load the configuration from the process environment.
pub fn load_from_env(kind: ServiceKind) -> Result<Loaded, ConfigError> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    load(kind, &env, None)
}

/// Load: the file (an explicit path, else `APP_CONFIG_PATH`, else the default path if it exists),
/// then the environment over it. An explicitly named file that cannot be read is an error; with
/// no file at all the built-in development defaults apply.
pub fn load(
    kind: ServiceKind,
    env: &BTreeMap<String, String>,
    explicit_path: Option<&str>,
) -> Result<Loaded, ConfigError> {
    let mut warnings = Vec::new();
    let (path, must_exist) = match (explicit_path, env.get("APP_CONFIG_PATH")) {
        (Some(p), _) => (PathBuf::from(p), true),
        (None, Some(p)) if !p.is_empty() => (PathBuf::from(p), true),
        _ => (default_config_path(kind), false),
    };
    let (mut tree, source) = match std::fs::read_to_string(&path) {
        Ok(text) => (
            Tree::from_yaml(&text, &path.display().to_string())?,
            Some(path),
        ),
        Err(e) if must_exist || e.kind() != std::io::ErrorKind::NotFound => {
            return Err(ConfigError::Unreadable {
                path: path.display().to_string(),
                message: e.to_string().to_lowercase(),
            });
        }
        Err(_) => (Tree::new(serde_json::Value::Null), None),
    };

    for (name, key) in ENV_KEYS {
        if let Some(v) = env.get(*name) {
            tree.set_env(key, name, v);
        }
    }
    for name in SECRET_ENVS {
        let file_var = format!("{name}_FILE");
        if let Some(p) = env.get(&file_var) {
            if env.contains_key(*name) {
                warnings.push(format!(
                    "config: both {name} and {file_var} are set; {name} wins"
                ));
                continue;
            }
            let value = std::fs::read_to_string(p).map_err(|e| ConfigError::Unreadable {
                path: p.clone(),
                message: format!("{file_var}: {}", e.to_string().to_lowercase()),
            })?;
            if let Some((_, key)) = ENV_KEYS.iter().find(|(n, _)| n == name) {
                tree.set_env(key, &file_var, value.trim_end_matches(['\r', '\n']));
            }
        }
    }
    for name in env.keys() {
        let known = ENV_KEYS.iter().any(|(n, _)| n == name)
            || OTHER_ENVS.contains(&name.as_str())
            || SECRET_ENVS.iter().any(|s| name == &format!("{s}_FILE"));
        if name.starts_with("KAA_") && !known {
            warnings.push(format!(
                "config: unknown environment variable {name} ignored"
            ));
        }
    }

    let config = build(kind, &mut tree, source)?;
    for key in tree.unread_keys() {
        warnings.push(format!("config: unknown key `{key}` ignored"));
    }
    Ok(Loaded { config, warnings })
}

fn build(kind: ServiceKind, t: &mut Tree, source: Option<PathBuf>) -> Result<Config, ConfigError> {
    const HOUR: Duration = Duration::from_secs(3600);
    let service = ServiceSettings {
        instance_name: non_empty(t, "service.instance.name", kind.name())?,
        replica_id: match t.opt_string("service.instance.replica.id")? {
            Some(s) if !s.trim().is_empty() => s,
            _ => random_replica_id(),
        },
        graceful_shutdown: t.duration(
            "service.graceful-shutdown",
            Duration::from_secs(30),
            HOUR,
        )?,
        shutdown_delay: t.duration(
            "service.shutdown-delay",
            Duration::ZERO,
            Duration::from_secs(600),
        )?,
        debug: t.bool("service.debug", false)?,
    };

    let host_text = t.string("server.host", "0.0.0.0")?;
    let host: IpAddr = host_text
        .trim()
        .parse()
        .map_err(|_| t.error("server.host", &host_text, "expected an IP address"))?;
    let server = ServerSettings {
        host,
        // 0 asks the system for a free port (tests); the log line names the port taken.
        port: u16::try_from(t.uint("server.port", u64::from(kind.default_port()), 0, 65535)?)
            .unwrap_or(kind.default_port()),
        workers: t.uint("server.workers", 16, 1, 1024)? as usize,
        max_connections: t.uint("server.max-connections", 1024, 1, 65536)? as usize,
        io_threads: t.uint("server.io-threads", 0, 0, 256)? as usize,
        max_body_bytes: t.uint("server.max-body-bytes", 1 << 20, 1024, 1 << 30)? as usize,
        max_body_bytes_in_flight: t.uint(
            "server.max-body-bytes-in-flight",
            64 << 20,
            1024,
            1 << 34,
        )? as usize,
        queue_timeout: t.duration("server.queue-timeout", Duration::from_secs(30), HOUR)?,
        read_timeout: t.duration("server.read-timeout", Duration::from_secs(5), HOUR)?,
        write_timeout: t.duration("server.write-timeout", Duration::from_secs(5), HOUR)?,
        idle_timeout: t.duration("server.idle-timeout", Duration::from_secs(5), HOUR)?,
        max_page_size: t.uint("server.maxPageSize", 100, 1, 100_000)? as u32,
    };

    let pg_host = t.string("postgresql.host", "")?;
    let db = kind.default_db();
    let pg = PostgresSettings {
        host: pg_host.trim().to_string(),
        port: t.port("postgresql.port", 5432)?,
        username: non_empty(t, "postgresql.username", db)?,
        password: t.secret("postgresql.password", db)?,
        database: non_empty(t, "postgresql.database", db)?,
        ssl_mode: t.one_of(
            "postgresql.ssl-mode",
            "disable",
            &["disable", "require", "verify-ca", "verify-full"],
        )?,
        ssl_root_cert: t.opt_string("postgresql.ssl-root-cert")?.map(PathBuf::from),
        max_open_connections: t.uint("postgresql.max-open-connections", 100, 1, 10_000)? as u32,
        connect_timeout: t.duration(
            "postgresql.connect-timeout",
            Duration::from_secs(5),
            Duration::from_secs(300),
        )?,
        statement_timeout: t.duration(
            "postgresql.statement-timeout",
            Duration::from_secs(30),
            HOUR,
        )?,
        startup_wait: t.duration("postgresql.startup-wait", Duration::from_secs(60), HOUR)?,
    };
    let sqlite_path = t.string("sqlite.path", &format!("./data/{}.db", kind.name()))?;
    let storage = if pg.host.is_empty() {
        if sqlite_path.trim().is_empty() {
            return Err(t.error("sqlite.path", "", "must name a file"));
        }
        StorageSettings::Sqlite(SqliteSettings {
            path: PathBuf::from(sqlite_path),
        })
    } else {
        StorageSettings::Postgres(pg)
    };

    let security = SecuritySettings {
        enabled: t.bool("security.enabled", false)?,
        multitenancy_enabled: t.bool("security.multitenancy.enabled", false)?,
        issuer_public_url: url_or_empty(t, "security.issuer.public-url")?,
        issuer_private_url: url_or_empty(t, "security.issuer.private-url")?,
        keycloak_users: t.bool("security.keycloak-users", true)?,
        client_id: t.string("security.client-id", "")?,
        client_secret: t.secret("security.client-secret", "")?,
        tenant_manager_url: url_or_empty_default(
            t,
            "security.multitenancy.tenant-manager-url",
            "http://tenant-manager",
        )?,
        audiences: t.string_list("security.audiences")?,
        leeway: t.duration(
            "security.leeway",
            Duration::from_secs(30),
            Duration::from_secs(600),
        )?,
        jwks_refresh_interval: t.duration(
            "security.jwks-refresh-interval",
            Duration::from_secs(10),
            HOUR,
        )?,
        jwks_max_age: t.duration("security.jwks-max-age", DEFAULT_JWKS_MAX_AGE, 24 * HOUR)?,
    };
    if security.enabled && security.issuer_public_url.is_empty() && kind == ServiceKind::Iam {
        return Err(t.error(
            "security.issuer.public-url",
            "",
            "must be set when security is enabled",
        ));
    }

    let license = LicenseSettings {
        cert_path: PathBuf::from(t.string("license.cert-path", "/run/license/license.p12")?),
        cert_password: t.secret("license.cert-password", "")?,
        required: t.bool("license.required", false)?,
        trusted_issuer: t.opt_string("license.trusted-issuer")?.map(PathBuf::from),
    };

    let nats_urls = t.string_list("nats.urls")?;
    for u in &nats_urls {
        if !(u.starts_with("nats://") || u.starts_with("tls://")) {
            return Err(t.error("nats.urls", u, "expected nats://host:port URLs"));
        }
    }
    let nats = NatsSettings {
        urls: nats_urls,
        username: t.string("nats.username", "")?,
        password: t.secret("nats.password", "")?,
    };

    // Each binary reads its own section; the other one's keys are warned about as unknown.
    let (iam, tenant_manager) = match kind {
        ServiceKind::Iam => (
            sections::read_strict(t, "iam")?,
            TenantManagerSection::defaults()?,
        ),
        ServiceKind::TenantManager => (
            IamSection::defaults()?,
            sections::read_strict(t, "tenant-manager")?,
        ),
    };

    Ok(Config {
        kind,
        source,
        service,
        server,
        storage,
        security,
        license,
        nats,
        iam,
        tenant_manager,
    })
}

fn non_empty(t: &mut Tree, key: &str, default: &str) -> Result<String, ConfigError> {
    let v = t.string(key, default)?;
    if v.trim().is_empty() {
        Err(t.error(key, &v, "must not be empty"))
    } else {
        Ok(v.trim().to_string())
    }
}

fn url_or_empty(t: &mut Tree, key: &str) -> Result<String, ConfigError> {
    url_or_empty_default(t, key, "")
}

fn url_or_empty_default(t: &mut Tree, key: &str, default: &str) -> Result<String, ConfigError> {
    let v = t.string(key, default)?.trim().to_string();
    if v.is_empty() || v.starts_with("http://") || v.starts_with("https://") {
        Ok(v.trim_end_matches('/').to_string())
    } else {
        Err(t.error(key, &v, "expected an http:// or https:// URL"))
    }
}

fn random_replica_id() -> String {
    // Unique enough per process: hashed time, pid and a stack address through the std hasher.
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn missing_default() -> BTreeMap<String, String> {
        // Point APP_CONFIG_PATH nowhere-with-file so tests never read a machine's /srv file.
        env(&[])
    }

    #[test]
    fn defaults_without_file_are_the_embedded_dev_run() {
        let l = load(ServiceKind::Iam, &missing_default(), None).unwrap();
        let c = l.config;
        assert_eq!(c.server.port, 8090);
        assert!(!c.security.enabled);
        match c.storage {
            StorageSettings::Sqlite(s) => assert_eq!(s.path, PathBuf::from("./data/iam.db")),
            StorageSettings::Postgres(_) => panic!("expected sqlite"),
        }
        assert_eq!(c.service.graceful_shutdown, Duration::from_secs(30));
        assert!(c.nats.urls.is_empty());
    }

    #[test]
    fn postgres_env_selects_postgres_with_seed_defaults() {
        let e = env(&[("KAA_POSTGRESQL_HOST", "db.local"), ("SERVER_PORT", "9001")]);
        let c = load(ServiceKind::Iam, &e, None).unwrap().config;
        assert_eq!(c.server.port, 9001);
        let StorageSettings::Postgres(pg) = c.storage else {
            panic!("expected postgres")
        };
        assert_eq!(pg.host, "db.local");
        assert_eq!(pg.port, 5432);
        assert_eq!(pg.username, "iam");
        assert_eq!(pg.database, "iam");
        assert_eq!(pg.password.expose(), "iam");
        assert_eq!(pg.ssl_mode, "disable");
        assert_eq!(pg.max_open_connections, 100);
        assert_eq!(pg.startup_wait, Duration::from_secs(60));
        assert_eq!(c.service.shutdown_delay, Duration::ZERO);
    }

    #[test]
    fn start_and_stop_timings_come_from_the_environment() {
        let e = env(&[
            ("KAA_POSTGRESQL_HOST", "db.local"),
            ("KAA_POSTGRESQL_STARTUP_WAIT", "5m"),
            ("SERVICE_SHUTDOWN_DELAY", "7"),
            ("SERVICE_GRACEFUL_SHUTDOWN", "45s"),
        ]);
        let c = load(ServiceKind::TenantManager, &e, None).unwrap().config;
        let StorageSettings::Postgres(pg) = c.storage else {
            panic!("expected postgres")
        };
        assert_eq!(pg.startup_wait, Duration::from_secs(300));
        assert_eq!(c.service.shutdown_delay, Duration::from_secs(7));
        assert_eq!(c.service.graceful_shutdown, Duration::from_secs(45));
        let e = env(&[("SERVICE_SHUTDOWN_DELAY", "11m")]);
        let err = load(ServiceKind::Iam, &e, None).unwrap_err().to_string();
        assert!(
            err.contains("service.shutdown-delay") && err.contains("SERVICE_SHUTDOWN_DELAY"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_the_key_and_variable() {
        for (var, val, key) in [
            ("SERVER_PORT", "70000", "server.port"),
            (
                "KAA_POSTGRESQL_SSL_MODE",
                "sometimes",
                "postgresql.ssl-mode",
            ),
            ("KAA_SECURITY_ENABLED", "maybe", "security.enabled"),
            (
                "KAA_POSTGRESQL_MAX_OPEN_CONNECTIONS",
                "0",
                "postgresql.max-open-connections",
            ),
            ("KAA_NATS_URLS", "http://x", "nats.urls"),
        ] {
            let e = env(&[(var, val), ("KAA_POSTGRESQL_HOST", "h")]);
            let err = load(ServiceKind::Iam, &e, None).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{err}");
            assert!(err.contains(var), "{err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn secrets_stay_out_of_debug_and_errors() {
        let e = env(&[
            ("KAA_POSTGRESQL_HOST", "h"),
            ("KAA_POSTGRESQL_PASSWORD", "s3cr3t-pw"),
            ("KAA_SECURITY_CLIENT_SECRET", "client-s3cr3t"),
            ("KAA_LICENSE_CERT_PASSWORD", "lic-s3cr3t"),
        ]);
        let c = load(ServiceKind::Iam, &e, None).unwrap().config;
        let dbg = format!("{c:?}");
        for s in ["s3cr3t-pw", "client-s3cr3t", "lic-s3cr3t"] {
            assert!(!dbg.contains(s), "{s} leaked in {dbg}");
        }
    }

    #[test]
    fn unknown_kaa_variables_are_warned_about() {
        let e = env(&[("KAA_POSTGRES_HOST", "typo"), ("HOME", "/root")]);
        let l = load(ServiceKind::Iam, &e, None).unwrap();
        assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
        assert!(l.warnings[0].contains("KAA_POSTGRES_HOST"));
    }

    #[test]
    fn explicit_missing_file_is_an_error() {
        let e = env(&[("APP_CONFIG_PATH", "/nonexistent/dir/service-config.yml")]);
        let err = load(ServiceKind::Iam, &e, None).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/dir/service-config.yml"), "{err}");
    }

    #[test]
    fn file_values_then_env_over_them() {
        let dir = std::env::temp_dir().join(format!("kaa-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.yml");
        std::fs::write(
            &path,
            "server:\n  port: 9100\n  workers: 4\nservice:\n  graceful-shutdown: 7\nbogus: 1\n",
        )
        .unwrap();
        let e = env(&[
            ("APP_CONFIG_PATH", path.to_str().unwrap()),
            ("SERVER_PORT", "9200"),
        ]);
        let l = load(ServiceKind::Iam, &e, None).unwrap();
        assert_eq!(l.config.server.port, 9200);
        assert_eq!(l.config.server.workers, 4);
        assert_eq!(l.config.service.graceful_shutdown, Duration::from_secs(7));
        assert!(
            l.warnings.iter().any(|w| w.contains("`bogus`")),
            "{:?}",
            l.warnings
        );
        std::fs::write(&path, "server:\n  port: [1]\n").unwrap();
        let err = load(ServiceKind::Iam, &env(&[]), Some(path.to_str().unwrap()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`server.port`"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn secret_file_variables_are_read() {
        let dir = std::env::temp_dir().join(format!("kaa-config-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pw");
        std::fs::write(&path, "from-file\n").unwrap();
        let e = env(&[
            ("KAA_POSTGRESQL_HOST", "h"),
            ("KAA_POSTGRESQL_PASSWORD_FILE", path.to_str().unwrap()),
        ]);
        let c = load(ServiceKind::Iam, &e, None).unwrap().config;
        let StorageSettings::Postgres(pg) = c.storage else {
            panic!()
        };
        assert_eq!(pg.password.expose(), "from-file");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Load `yaml` as the configuration file of `kind`, with `vars` as the environment.
    fn load_yaml(
        kind: ServiceKind,
        yaml: &str,
        vars: &[(&str, &str)],
    ) -> Result<Loaded, ConfigError> {
        let dir = std::env::temp_dir().join(format!(
            "kaa-config-sections-{}-{}",
            std::process::id(),
            crate::clock::now_ms()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}-{}.yml", kind.name(), yaml.len()));
        std::fs::write(&path, yaml).unwrap();
        let out = load(kind, &env(vars), Some(path.to_str().unwrap()));
        std::fs::remove_dir_all(&dir).ok();
        out
    }

    #[test]
    fn the_service_sections_have_their_defaults() {
        let c = load(ServiceKind::Iam, &missing_default(), None)
            .unwrap()
            .config;
        let a = &c.iam.audit;
        assert_eq!(
            (a.retention_days, a.retention_rows, a.prune_interval),
            (365, 0, Duration::from_secs(3600))
        );
        assert!(c.iam.base_policies.is_none() && c.iam.resource_policy_templates.is_none());
        let c = load(ServiceKind::TenantManager, &missing_default(), None)
            .unwrap()
            .config;
        let tm = &c.tenant_manager;
        assert_eq!(tm.system_tenant, "kaa");
        assert_eq!(tm.keycloak.url, None);
        assert_eq!(tm.keycloak.admin_realm, "master");
        assert_eq!(tm.keycloak.timeout_ms, 10_000);
        assert_eq!(
            (
                tm.tasks.workers,
                tm.tasks.max_attempts,
                tm.tasks.lease_seconds
            ),
            (2, 8, 30)
        );
        assert_eq!(
            (tm.tasks.backoff_ms, tm.tasks.max_backoff_ms),
            (500, 60_000)
        );
        assert_eq!(tm.subscriptions.sweep_ms, 1000);
        assert_eq!(tm.auth.decision_cache_seconds, 30);
        assert!(tm.secret_key.expose().is_empty() && tm.previous_secret_keys.is_empty());
    }

    #[test]
    fn iam_audit_is_read_with_its_bounds() {
        let yaml = "iam:\n  audit:\n    retention-rows: \"10\"\n    prune-interval: 1\n";
        let a = load_yaml(ServiceKind::Iam, yaml, &[])
            .unwrap()
            .config
            .iam
            .audit;
        assert_eq!(
            (a.retention_days, a.retention_rows, a.prune_interval),
            (365, 10, Duration::from_secs(1))
        );
        for (yaml, key) in [
            (
                "iam:\n  audit:\n    retention-days: -1\n",
                "iam.audit.retention-days",
            ),
            (
                "iam:\n  audit:\n    prune-interval: 0\n",
                "iam.audit.prune-interval",
            ),
            ("iam:\n  audit:\n    typo: 1\n", "iam.audit.typo"),
            ("iam:\n  base-policies: {a: 1}\n", "iam.base-policies"),
            (
                "iam:\n  resource-policy-templates: [1]\n",
                "iam.resource-policy-templates",
            ),
            ("iam:\n  decision-logs: true\n", "iam.decision-logs"),
        ] {
            let err = load_yaml(ServiceKind::Iam, yaml, &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("`{key}`")), "{yaml}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
        // The variables of the table set the keys of the section, and are named in errors.
        let e = env(&[("KAA_IAM_AUDIT_RETENTION_DAYS", "7")]);
        let c = load(ServiceKind::Iam, &e, None).unwrap().config;
        assert_eq!(c.iam.audit.retention_days, 7);
        let e = env(&[("KAA_IAM_AUDIT_RETENTION_ROWS", "many")]);
        let err = load(ServiceKind::Iam, &e, None).unwrap_err().to_string();
        assert!(
            err.contains("`iam.audit.retention-rows`")
                && err.contains("KAA_IAM_AUDIT_RETENTION_ROWS"),
            "{err}"
        );
    }

    #[test]
    fn the_tenant_manager_section_is_read_from_file_and_environment() {
        let yaml = "tenant-manager:\n  system-tenant: root\n  keycloak:\n    url: https://kc.local/\n    \
                    username: admin\n    password: kc-s3cr3t\n    timeout-ms: 400\n  tasks:\n    \
                    workers: 4\n    lease-seconds: 9\n  auth:\n    decision-cache-seconds: 0\n  \
                    previous-secret-keys: [old-1, old-2]\n";
        let vars = [
            ("KAA_TENANT_MANAGER_FALLBACK_PACKAGE_TYPE", "basic"),
            ("KAA_TENANT_MANAGER_INSTALLATION_ID", "site-a:1"),
            ("KAA_KEYCLOAK_ADMIN_REALM", "ops"),
            ("KAA_TENANT_MANAGER_SECRET_KEY", "seal-s3cr3t"),
        ];
        let c = load_yaml(ServiceKind::TenantManager, yaml, &vars)
            .unwrap()
            .config;
        let tm = &c.tenant_manager;
        assert_eq!(tm.system_tenant, "root");
        assert_eq!(tm.keycloak.url.as_deref(), Some("https://kc.local"));
        assert_eq!(tm.keycloak.admin_realm, "ops");
        assert_eq!(tm.keycloak.username.as_deref(), Some("admin"));
        assert_eq!(
            tm.keycloak.password.as_ref().map(Secret::expose),
            Some("kc-s3cr3t")
        );
        assert_eq!(tm.keycloak.timeout_ms, 400);
        assert_eq!((tm.tasks.workers, tm.tasks.lease_seconds), (4, 9));
        assert_eq!(tm.auth.decision_cache_seconds, 0);
        assert_eq!(
            tm.subscriptions.fallback_package_type.as_deref(),
            Some("basic")
        );
        assert_eq!(tm.installation_id.as_deref(), Some("site-a:1"));
        assert_eq!(tm.secret_key.expose(), "seal-s3cr3t");
        let previous: Vec<&str> = tm.previous_secret_keys.iter().map(Secret::expose).collect();
        assert_eq!(previous, ["old-1", "old-2"]);
        let dbg = format!("{c:?}");
        for s in ["kc-s3cr3t", "seal-s3cr3t", "old-1"] {
            assert!(!dbg.contains(s), "{s} leaked in {dbg}");
        }
    }

    #[test]
    fn bad_tenant_manager_values_name_the_key() {
        for (yaml, key) in [
            (
                "tenant-manager:\n  tasks:\n    workers: 0\n",
                "tenant-manager.tasks.workers",
            ),
            (
                "tenant-manager:\n  tasks:\n    wokers: 3\n",
                "tenant-manager.tasks.wokers",
            ),
            (
                "tenant-manager:\n  keycloak:\n    timeout-ms: soon\n",
                "tenant-manager.keycloak.timeout-ms",
            ),
            (
                "tenant-manager:\n  keycloak:\n    url: kc.local\n",
                "tenant-manager.keycloak.url",
            ),
            (
                "tenant-manager:\n  auth:\n    decision-cache-seconds: often\n",
                "tenant-manager.auth.decision-cache-seconds",
            ),
            (
                "tenant-manager:\n  installation-id: a b\n",
                "tenant-manager.installation-id",
            ),
            (
                "tenant-manager:\n  subscriptions:\n    sweep-ms: 1\n",
                "tenant-manager.subscriptions.sweep-ms",
            ),
            (
                "tenant-manager:\n  secret-key: [1]\n",
                "tenant-manager.secret-key",
            ),
            ("tenant-manager:\n  bogus: 1\n", "tenant-manager.bogus"),
        ] {
            let err = load_yaml(ServiceKind::TenantManager, yaml, &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("`{key}`")), "{yaml}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
        let e = [("KAA_KEYCLOAK_URL", "ftp://kc")];
        let err = load_yaml(ServiceKind::TenantManager, "", &e)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`tenant-manager.keycloak.url`") && err.contains("KAA_KEYCLOAK_URL"),
            "{err}"
        );
    }

    #[test]
    fn each_binary_reads_only_its_own_section() {
        // The other binary's section is warned about, never refused.
        let yaml = "iam:\n  audit:\n    typo: 1\ntenant-manager:\n  tasks:\n    workers: 0\n";
        let l = load_yaml(
            ServiceKind::Iam,
            "tenant-manager:\n  tasks:\n    workers: 0\n",
            &[],
        )
        .unwrap();
        assert!(
            l.warnings
                .iter()
                .any(|w| w.contains("`tenant-manager.tasks.workers`")),
            "{:?}",
            l.warnings
        );
        assert!(load_yaml(ServiceKind::Iam, yaml, &[]).is_err());
        let l = load_yaml(
            ServiceKind::TenantManager,
            "iam:\n  audit:\n    typo: 1\n",
            &[],
        )
        .unwrap();
        assert!(
            l.warnings.iter().any(|w| w.contains("`iam.audit.typo`")),
            "{:?}",
            l.warnings
        );
    }
}
