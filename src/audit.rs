//! What both services' audit trails share beyond storage: their configuration (retention and
//! the NATS feed, `<section>.audit.*`), the opaque cursor of `GET /audit`, and the background
//! pruning. The rows are written by the storage writes ([`crate::storage::audit`]).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::Value;

use crate::clock::now_ms;
use crate::storage::{AuditStore, Database, StorageError, Trail};

/// How long a trail is kept (`<section>.audit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Rows older than this many days go (0: kept whatever their age).
    pub days: u64,
    /// Each tenant keeps at most this many rows, the newest (0: no bound).
    pub rows: u64,
    /// How often the pruning runs.
    pub every: Duration,
}

/// A trail's configuration: its retention and, when published, its NATS subject prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrailConfig {
    pub retention: Retention,
    /// `<subject>.<tenant>` receives every record (none: not published).
    pub subject: Option<String>,
}

const KEYS: &[&str] = &[
    "retention-days",
    "retention-rows",
    "prune-interval",
    "publish",
    "subject",
];

/// Whether `s` can prefix a NATS subject: tokens of printable characters without wildcards,
/// separated by single dots.
fn valid_subject(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s.split('.').all(|t| {
            !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_graphic() && c != '*' && c != '>')
        })
}

/// Parse `<section_name>.audit` of the `section` (`retention-days` 365, `retention-rows` 0,
/// `prune-interval` 3600 s, `publish` false, `subject` `kaa.audit.<service>`). Publishing needs
/// NATS (`nats_configured`).
pub fn trail_config(
    section: &Value,
    section_name: &str,
    trail: Trail,
    nats_configured: bool,
) -> Result<TrailConfig, String> {
    let audit = match section.get("audit").cloned().unwrap_or(Value::Null) {
        Value::Null => serde_json::Map::new(),
        Value::Object(m) => m,
        _ => return Err(format!("config: `{section_name}.audit` must be a mapping")),
    };
    for key in audit.keys() {
        if !KEYS.contains(&key.as_str()) {
            return Err(format!(
                "config: `{section_name}.audit.{key}` is not a key ({})",
                KEYS.join(", ")
            ));
        }
    }
    let num = |key: &str, default: u64, max: u64| -> Result<u64, String> {
        let n = match audit.get(key) {
            None | Some(Value::Null) => return Ok(default),
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
            Some(_) => None,
        };
        match n {
            Some(n) if n <= max => Ok(n),
            _ => Err(format!(
                "config: `{section_name}.audit.{key}` must be a whole number from 0 to {max}, got {}",
                audit.get(key).map(Value::to_string).unwrap_or_default()
            )),
        }
    };
    let every = num("prune-interval", 3600, 7 * 86_400)?;
    if every == 0 {
        return Err(format!(
            "config: `{section_name}.audit.prune-interval` must be at least 1 second"
        ));
    }
    let publish = match audit.get("publish") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("true") => true,
        Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("false") || s.trim().is_empty() => {
            false
        }
        Some(other) => {
            return Err(format!(
                "config: `{section_name}.audit.publish` must be true or false, got {other}"
            ));
        }
    };
    let subject = match audit.get("subject") {
        None | Some(Value::Null) => format!("kaa.audit.{}", trail.service()),
        Some(Value::String(s)) if s.trim().is_empty() => format!("kaa.audit.{}", trail.service()),
        Some(Value::String(s)) if valid_subject(s.trim()) => s.trim().to_string(),
        Some(other) => {
            return Err(format!(
                "config: `{section_name}.audit.subject` must be a NATS subject without \
                 wildcards (dot-separated tokens, e.g. `kaa.audit.{}`), got {other}",
                trail.service()
            ));
        }
    };
    if publish && !nats_configured {
        return Err(format!(
            "config: `{section_name}.audit.publish` is on but no NATS server is configured \
             (`nats.urls`, KAA_NATS_URLS)"
        ));
    }
    Ok(TrailConfig {
        retention: Retention {
            days: num("retention-days", 365, 100 * 365)?,
            rows: num("retention-rows", 0, 1 << 40)?,
            every: Duration::from_secs(every),
        },
        subject: publish.then_some(subject),
    })
}

const CURSOR_PREFIX: &str = "a1:";

/// The opaque cursor of the page that follows the row `id`.
pub fn cursor(id: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{CURSOR_PREFIX}{id}"))
}

/// The row id a cursor stands for; an error message naming it when it is not one.
pub fn parse_cursor(s: &str) -> Result<i64, String> {
    let bad = || format!("`next` `{s}` is not a cursor this service gave out");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim())
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    text.strip_prefix(CURSOR_PREFIX)
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n > 0)
        .ok_or_else(bad)
}

/// `from`/`to` of `GET /audit`: an RFC 3339 date-time or a date.
pub fn parse_time(field: &str, s: &str) -> Result<i64, String> {
    crate::clock::parse_date_ms(s).ok_or_else(|| {
        format!(
            "`{field}` must be an RFC 3339 date-time (2026-12-07T10:00:00Z) or a date \
             (2026-12-07), got `{s}`"
        )
    })
}

/// One pruning pass of `trail` as `r` says; the rows deleted.
pub fn prune_once(db: &Database, trail: Trail, r: Retention) -> Result<u64, StorageError> {
    let older = (r.days > 0).then(|| {
        now_ms().saturating_sub(i64::try_from(r.days).unwrap_or(i64::MAX / 86_400_000) * 86_400_000)
    });
    let rows = (r.rows > 0).then_some(r.rows);
    db.prune_audit(trail, older, rows)
}

/// Run `pass` on `owner` every `r.every` while `owner` lives (nothing when `r` keeps
/// everything).
pub fn spawn_pruner<T: Send + Sync + 'static>(
    owner: &Arc<T>,
    r: Retention,
    pass: impl Fn(&T) + Send + 'static,
) {
    if r.days == 0 && r.rows == 0 {
        return;
    }
    let weak = Arc::downgrade(owner);
    let _ = std::thread::Builder::new()
        .name("audit-prune".into())
        .spawn(move || {
            loop {
                {
                    let Some(owner) = weak.upgrade() else { return };
                    pass(&owner);
                }
                std::thread::sleep(r.every);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cursors_round_trip_and_refuse_others() {
        assert_eq!(parse_cursor(&cursor(42)).unwrap(), 42);
        assert!(parse_cursor("42").is_err());
        assert!(parse_cursor(&cursor(0)).is_err());
    }

    #[test]
    fn trail_config_defaults_bounds_and_feed() {
        let c = trail_config(&Value::Null, "iam", Trail::Iam, false).unwrap();
        let r = c.retention;
        assert_eq!((r.days, r.rows, r.every.as_secs()), (365, 0, 3600));
        assert_eq!(c.subject, None, "off by default");
        let c = trail_config(
            &json!({"audit": {"retention-rows": "10", "prune-interval": 1, "publish": "true"}}),
            "tenant-manager",
            Trail::TenantManager,
            true,
        )
        .unwrap();
        assert_eq!((c.retention.rows, c.retention.every.as_secs()), (10, 1));
        assert_eq!(c.subject.as_deref(), Some("kaa.audit.tenant-manager"));
        let c = trail_config(
            &json!({"audit": {"publish": true, "subject": "siem.kaa"}}),
            "iam",
            Trail::Iam,
            true,
        )
        .unwrap();
        assert_eq!(c.subject.as_deref(), Some("siem.kaa"));
        for bad in [
            json!({"audit": {"retention-days": -1}}),
            json!({"audit": {"typo": 1}}),
            json!({"audit": {"prune-interval": 0}}),
            json!({"audit": {"publish": "maybe"}}),
            json!({"audit": {"publish": true, "subject": "kaa.*"}}),
            json!({"audit": {"publish": true, "subject": "kaa..audit"}}),
        ] {
            assert!(
                trail_config(&bad, "iam", Trail::Iam, true).is_err(),
                "{bad}"
            );
        }
        let e = trail_config(
            &json!({"audit": {"publish": true}}),
            "iam",
            Trail::Iam,
            false,
        )
        .unwrap_err();
        assert!(e.contains("nats.urls"), "{e}");
    }
}
