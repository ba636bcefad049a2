//! What both services' audit trails share beyond storage: their configuration (retention and
//! the NATS feed, `<section>.audit.*`), the opaque cursor of `GET /audit`, and the background
//! pruning. The rows are written by the storage writes ([`crate::storage::audit`]).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;

use crate::clock::now_ms;
use crate::config::AuditSection;
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

/// The trail of `<section_name>.audit` as the configuration read it (`subject` defaults to
/// `kaa.audit.<service>`). Publishing needs NATS (`nats_configured`).
pub fn trail_config(
    audit: &AuditSection,
    section_name: &str,
    trail: Trail,
    nats_configured: bool,
) -> Result<TrailConfig, String> {
    let subject = match audit.subject.as_deref() {
        None => format!("kaa.audit.{}", trail.service()),
        Some(s) if valid_subject(s) => s.to_string(),
        Some(other) => {
            return Err(format!(
                "config: `{section_name}.audit.subject` must be a NATS subject without \
                 wildcards (dot-separated tokens, e.g. `kaa.audit.{}`), got `{other}`",
                trail.service()
            ));
        }
    };
    if audit.publish && !nats_configured {
        return Err(format!(
            "config: `{section_name}.audit.publish` is on but no NATS server is configured \
             (`nats.urls`, KAA_NATS_URLS)"
        ));
    }
    Ok(TrailConfig {
        retention: Retention {
            days: audit.retention_days,
            rows: audit.retention_rows,
            every: audit.prune_interval,
        },
        subject: audit.publish.then_some(subject),
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
    use crate::config::{Section, Tree};

    #[test]
    fn cursors_round_trip_and_refuse_others() {
        assert_eq!(parse_cursor(&cursor(42)).unwrap(), 42);
        assert!(parse_cursor("42").is_err());
        assert!(parse_cursor(&cursor(0)).is_err());
    }

    /// `<section>.audit` read from `yaml` the way the configuration reads it.
    fn read(yaml: &str) -> Result<AuditSection, String> {
        let mut t = Tree::from_yaml(yaml, "test").map_err(|e| e.to_string())?;
        AuditSection::read(&mut t, "x.audit").map_err(|e| e.to_string())
    }

    #[test]
    fn trail_config_defaults_bounds_and_feed() {
        let c = trail_config(&read("").unwrap(), "iam", Trail::Iam, false).unwrap();
        let r = c.retention;
        assert_eq!((r.days, r.rows, r.every.as_secs()), (365, 0, 3600));
        assert_eq!(c.subject, None, "off by default");
        let a = read(
            "x:\n  audit:\n    retention-rows: '10'\n    prune-interval: 1\n    publish: 'true'\n",
        )
        .unwrap();
        let c = trail_config(&a, "tenant-manager", Trail::TenantManager, true).unwrap();
        assert_eq!((c.retention.rows, c.retention.every.as_secs()), (10, 1));
        assert_eq!(c.subject.as_deref(), Some("kaa.audit.tenant-manager"));
        let a = read("x:\n  audit:\n    publish: true\n    subject: siem.kaa\n").unwrap();
        let c = trail_config(&a, "iam", Trail::Iam, true).unwrap();
        assert_eq!(c.subject.as_deref(), Some("siem.kaa"));
        for bad in ["retention-days: -1", "prune-interval: 0", "publish: maybe"] {
            let e = read(&format!("x:\n  audit:\n    {bad}\n")).unwrap_err();
            assert!(e.contains("`x.audit."), "{bad}: {e}");
        }
        for bad in ["kaa.*", "kaa..audit"] {
            let a = read(&format!(
                "x:\n  audit:\n    publish: true\n    subject: '{bad}'\n"
            ))
            .unwrap();
            let e = trail_config(&a, "iam", Trail::Iam, true).unwrap_err();
            assert!(e.contains("`iam.audit.subject`"), "{e}");
        }
        let a = read("x:\n  audit:\n    publish: true\n").unwrap();
        let e = trail_config(&a, "iam", Trail::Iam, false).unwrap_err();
        assert!(e.contains("nats.urls"), "{e}");
    }
}
