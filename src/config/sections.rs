//! The services' own sections, `iam` and `tenant-manager`, typed: every key is read and checked
//! once, here, and each error names the key (and the variable that set it), as the rest of the
//! configuration does; a key the section does not have is an error too (a typo must not silently
//! leave a default in force).
//!
//! A section is declared with `section!`, one line a key: its name, the field, the field's type
//! and its reader (default and bounds). Adding a key is adding that line.

use std::time::Duration;

use serde_json::Value;

use super::{ConfigError, Secret, Tree};

/// A section of keys read under a prefix (`tenant-manager.tasks`).
pub trait Section: Sized {
    /// Read and check every key under `prefix`.
    fn read(t: &mut Tree, prefix: &str) -> Result<Self, ConfigError>;
}

/// Declare a section: `"key" => field: Type = reader,` a line.
macro_rules! section {
    ($(#[$meta:meta])* pub struct $name:ident {
        $($(#[$fmeta:meta])* $key:literal => $field:ident: $ty:ty = $reader:expr,)*
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
        }

        impl Section for $name {
            fn read(t: &mut Tree, prefix: &str) -> Result<Self, ConfigError> {
                Ok($name {
                    $($field: ($reader)(t, &format!("{prefix}.{}", $key))?,)*
                })
            }
        }

        impl $name {
            /// Every key at its default.
            pub fn defaults() -> Result<$name, ConfigError> {
                <$name as Section>::read(&mut Tree::new(Value::Null), "")
            }
        }
    };
}

/// Read the section at `prefix` and refuse any key under it that is not one of its keys.
pub(super) fn read_strict<T: Section>(t: &mut Tree, prefix: &str) -> Result<T, ConfigError> {
    let section = T::read(t, prefix)?;
    let own = format!("{prefix}.");
    if let Some(key) = t.unread_keys().into_iter().find(|k| k.starts_with(&own)) {
        return Err(ConfigError::UnknownKey {
            key,
            section: prefix.to_string(),
        });
    }
    Ok(section)
}

// ------------------------------------------------------------------ readers

/// A whole number from `min` to `max`.
fn uint(default: u64, min: u64, max: u64) -> impl Fn(&mut Tree, &str) -> Result<u64, ConfigError> {
    move |t, key| t.uint(key, default, min, max)
}

/// A whole number of seconds from `min` to `max`.
fn seconds(
    default: u64,
    min: u64,
    max: u64,
) -> impl Fn(&mut Tree, &str) -> Result<Duration, ConfigError> {
    move |t, key| t.uint(key, default, min, max).map(Duration::from_secs)
}

/// A text, trimmed; empty or absent: `default`.
fn text(default: &'static str) -> impl Fn(&mut Tree, &str) -> Result<String, ConfigError> {
    move |t, key| {
        Ok(t.opt_string(key)?
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| default.to_string()))
    }
}

/// A text, trimmed; empty or absent: none.
fn opt_text() -> impl Fn(&mut Tree, &str) -> Result<Option<String>, ConfigError> {
    |t, key| {
        Ok(t.opt_string(key)?
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty()))
    }
}

/// An `http://` or `https://` URL without its trailing `/`; empty or absent: none.
fn opt_url() -> impl Fn(&mut Tree, &str) -> Result<Option<String>, ConfigError> {
    |t, key| match opt_text()(t, key)? {
        Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
            Ok(Some(u.trim_end_matches('/').to_string()))
        }
        Some(u) => Err(t.error(key, &u, "expected an http:// or https:// URL")),
        None => Ok(None),
    }
}

/// A secret, trimmed; empty or absent: none.
fn opt_secret() -> impl Fn(&mut Tree, &str) -> Result<Option<Secret>, ConfigError> {
    |t, key| {
        let s = t.secret(key, "")?;
        let s = s.expose().trim();
        Ok((!s.is_empty()).then(|| Secret::new(s)))
    }
}

/// A secret; absent: empty.
fn secret() -> impl Fn(&mut Tree, &str) -> Result<Secret, ConfigError> {
    |t, key| t.secret(key, "")
}

/// Secrets: a list, or comma-separated.
fn secrets() -> impl Fn(&mut Tree, &str) -> Result<Vec<Secret>, ConfigError> {
    |t, key| Ok(t.string_list(key)?.iter().map(|s| Secret::new(s)).collect())
}

/// `true` or `false` (`default` when absent).
fn boolean(default: bool) -> impl Fn(&mut Tree, &str) -> Result<bool, ConfigError> {
    move |t, key| t.bool(key, default)
}

/// One of `allowed` (case-insensitive), lower-case.
fn choice(
    default: &'static str,
    allowed: &'static [&'static str],
) -> impl Fn(&mut Tree, &str) -> Result<String, ConfigError> {
    move |t, key| t.one_of(key, default, allowed)
}

/// A share from 0 to 1 (a number or its text).
fn fraction(default: f64) -> impl Fn(&mut Tree, &str) -> Result<f64, ConfigError> {
    move |t, key| {
        let Some(v) = t.raw(key) else {
            return Ok(default);
        };
        let n = match &v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        match n {
            Some(n) if (0.0..=1.0).contains(&n) => Ok(n),
            _ => {
                let shown = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                Err(t.error(key, &shown, "expected a number from 0 to 1"))
            }
        }
    }
}

/// A nested section.
fn section<T: Section>() -> impl Fn(&mut Tree, &str) -> Result<T, ConfigError> {
    |t, key| T::read(t, key)
}

/// A value kept as written (checked by `check`), for what the service's domain reads itself.
fn document(
    check: fn(&Value) -> Result<(), &'static str>,
) -> impl Fn(&mut Tree, &str) -> Result<Option<Value>, ConfigError> {
    move |t, key| match t.raw(key) {
        None => Ok(None),
        Some(v) => match check(&v) {
            Ok(()) => Ok(Some(v)),
            Err(problem) => Err(t.error(key, &v.to_string(), problem)),
        },
    }
}

/// A reader whose value must also pass `check` (else: the value as shown and the problem).
fn checked<T>(
    read: impl Fn(&mut Tree, &str) -> Result<T, ConfigError>,
    check: fn(&T) -> Result<(), (String, &'static str)>,
) -> impl Fn(&mut Tree, &str) -> Result<T, ConfigError> {
    move |t, key| {
        let v = read(t, key)?;
        check(&v).map_err(|(shown, problem)| t.error(key, &shown, problem))?;
        Ok(v)
    }
}

fn list(v: &Value) -> Result<(), &'static str> {
    if v.is_array() {
        Ok(())
    } else {
        Err("must be a list of policy documents")
    }
}

fn mapping(v: &Value) -> Result<(), &'static str> {
    if v.is_object() {
        Ok(())
    } else {
        Err("must map resource types to templates")
    }
}

// ------------------------------------------------------------------ iam

section! {
    /// The `iam` section.
    pub struct IamSection {
        /// Policies every tenant has (`None`: the built-in `tenant-admin` and `platform-admin`),
        /// as written: the IAM domain reads them as policy documents.
        "base-policies" => base_policies: Option<Value> = document(list),
        /// Resource type -> `{statements}` of the policy a registered resource of that type gets.
        "resource-policy-templates" => resource_policy_templates: Option<Value> = document(mapping),
        "audit" => audit: AuditSection = section(),
        "decision-log" => decision_log: IamDecisionLog = section(),
    }
}

section! {
    /// `<service>.audit` (`iam`, `tenant-manager`): how long the audit trail is kept and whether
    /// it is published to NATS.
    pub struct AuditSection {
        /// Rows older than this many days go (0: kept whatever their age).
        "retention-days" => retention_days: u64 = uint(365, 0, 100 * 365),
        /// Each tenant keeps at most this many rows, the newest (0: no bound).
        "retention-rows" => retention_rows: u64 = uint(0, 0, 1 << 40),
        /// How often the pruning runs.
        "prune-interval" => prune_interval: Duration = seconds(3600, 1, 7 * 86_400),
        /// Every record also goes to NATS through the outbox.
        "publish" => publish: bool = boolean(false),
        /// The subject records are published under, as `<subject>.<tenant>` (none:
        /// `kaa.audit.<service>`).
        "subject" => subject: Option<String> = opt_text(),
    }
}

section! {
    /// `iam.decision-log`: which decisions leave a line, and where.
    pub struct IamDecisionLog {
        /// `off`, `denies`, `sampled` (at `sample-rate`) or `all`.
        "mode" => mode: String = choice("sampled", &["off", "denies", "sampled", "all"]),
        /// The share of decisions logged in mode `sampled`.
        "sample-rate" => sample_rate: f64 = fraction(0.01),
        /// `stdout`, or a file the lines are appended to.
        "destination" => destination: String = text("stdout"),
        /// Lines the buffer holds for the writer; beyond, lines are dropped and counted.
        "buffer-lines" => buffer_lines: u64 = uint(8192, 1, 1_000_000),
    }
}

// ------------------------------------------------------------------ tenant-manager

section! {
    /// The `tenant-manager` section.
    pub struct TenantManagerSection {
        /// 32 bytes in base64 sealing the stored secrets (empty: stored unencrypted).
        "secret-key" => secret_key: Secret = secret(),
        /// Older keys that only open values (rotation).
        "previous-secret-keys" => previous_secret_keys: Vec<Secret> = secrets(),
        /// The id marking the realms of this installation (none: the one kept in the database).
        "installation-id" => installation_id: Option<String> = checked(opt_text(), installation_id),
        /// The tenant of the system realm.
        "system-tenant" => system_tenant: String = text("kaa"),
        "keycloak" => keycloak: TmKeycloak = section(),
        "tasks" => tasks: TmTasks = section(),
        "subscriptions" => subscriptions: TmSubscriptions = section(),
        "auth" => auth: TmAuthSection = section(),
        "audit" => audit: AuditSection = section(),
    }
}

section! {
    /// `tenant-manager.keycloak`: the default Keycloak server.
    pub struct TmKeycloak {
        /// The admin API's address (none: realms are recorded locally).
        "url" => url: Option<String> = opt_url(),
        /// The address browsers reach Keycloak at (none: `url`).
        "public-url" => public_url: Option<String> = opt_text(),
        "admin-realm" => admin_realm: String = text("master"),
        "username" => username: Option<String> = opt_text(),
        "password" => password: Option<Secret> = opt_secret(),
        "client-id" => client_id: Option<String> = opt_text(),
        "client-secret" => client_secret: Option<Secret> = opt_secret(),
        /// Longest time of one admin call.
        "timeout-ms" => timeout_ms: u64 = uint(10_000, 1, 600_000),
        /// Realms a server takes before new tenants go to another (0: no bound).
        "max-realms-per-server" => max_realms_per_server: u64 = uint(0, 0, 1_000_000),
    }
}

section! {
    /// `tenant-manager.tasks`: the durable task queue.
    pub struct TmTasks {
        /// Workers per replica.
        "workers" => workers: u64 = uint(2, 1, 64),
        "max-attempts" => max_attempts: u64 = uint(8, 1, 1000),
        /// A running task's lease (renewed every third of it).
        "lease-seconds" => lease_seconds: u64 = uint(30, 1, 86_400),
        "backoff-ms" => backoff_ms: u64 = uint(500, 1, 3_600_000),
        "max-backoff-ms" => max_backoff_ms: u64 = uint(60_000, 1, 86_400_000),
    }
}

section! {
    /// `tenant-manager.subscriptions`.
    pub struct TmSubscriptions {
        /// The package type whose limits a tenant has while its subscription is not in force.
        "fallback-package-type" => fallback_package_type: Option<String> = opt_text(),
        /// How often each replica applies the subscriptions that started or ended.
        "sweep-ms" => sweep_ms: u64 = uint(1000, 50, 3_600_000),
    }
}

section! {
    /// `tenant-manager.auth`: the scope decisions asked of Keycloak.
    pub struct TmAuthSection {
        /// How long a decision is reused (0: asked every time).
        "decision-cache-seconds" => decision_cache_seconds: u64 = uint(30, 0, 86_400),
    }
}

/// An installation id: 1 to 128 letters, digits, `-`, `_`, `.` or `:`.
fn installation_id(id: &Option<String>) -> Result<(), (String, &'static str)> {
    match id {
        Some(id) if !valid_installation_id(id) => Err((
            id.clone(),
            "must be 1 to 128 letters, digits, `-`, `_`, `.` or `:`",
        )),
        _ => Ok(()),
    }
}

/// Whether `s` may mark an installation's realms (1 to 128 letters, digits, `-_.:`).
pub fn valid_installation_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}
