//! Versioned, append-only migrations under storage/<backend>/NNNN_name.sql, compiled in.
//! Each applied migration is recorded with a checksum; a shipped migration that was edited
//! afterwards stops the start instead of leaving two databases with different schemas.

use super::{StorageError, Tx, Val};

pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

macro_rules! migration {
    ($backend:literal, $version:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/storage/",
                $backend,
                "/",
                $name,
                ".sql"
            )),
        }
    };
}

pub const SQLITE: &[Migration] = &[
    migration!("sqlite", 1, "0001_policies"),
    migration!("sqlite", 2, "0002_directory"),
    migration!("sqlite", 3, "0003_tenants"),
    migration!("sqlite", 4, "0004_tenant_events"),
    migration!("sqlite", 5, "0005_subscription_phases"),
    migration!("sqlite", 6, "0006_pool_principals"),
    migration!("sqlite", 7, "0007_tenant_admin_and_moves"),
    migration!("sqlite", 8, "0008_audit"),
    migration!("sqlite", 9, "0009_tm_audit_and_feed"),
];
pub const POSTGRES: &[Migration] = &[
    migration!("postgres", 1, "0001_policies"),
    migration!("postgres", 2, "0002_directory"),
    migration!("postgres", 3, "0003_tenants"),
    migration!("postgres", 4, "0004_tenant_events"),
    migration!("postgres", 5, "0005_subscription_phases"),
    migration!("postgres", 6, "0006_pool_principals"),
    migration!("postgres", 7, "0007_tenant_admin_and_moves"),
    migration!("postgres", 8, "0008_audit"),
    migration!("postgres", 9, "0009_tm_audit_and_feed"),
];

/// The advisory lock key that makes replicas starting together migrate one at a time.
pub const MIGRATION_LOCK: i64 = 7_420_113;

/// FNV-1a over the SQL text: a stable checksum without a dependency.
fn checksum(sql: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sql.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Apply every migration not yet recorded, in order, inside the caller's transaction.
pub fn apply(tx: &mut dyn Tx, set: &[Migration]) -> Result<(), StorageError> {
    if tx.dialect() == super::Dialect::Postgres {
        // Replicas starting together migrate one at a time.
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[Val::I64(MIGRATION_LOCK)],
        )?;
    }
    tx.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (\
            version BIGINT PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL)",
        &[],
    )?;
    let applied = tx.query(
        "SELECT version, name, checksum FROM schema_migrations ORDER BY version",
        &[],
    )?;
    let newest = set.iter().map(|m| m.version).max().unwrap_or(0);
    for row in &applied {
        let version = row.i64(0)?;
        let Some(m) = set.iter().find(|m| m.version == version) else {
            if version > newest {
                // A newer release migrated already (a rolling upgrade, or a rollback): its
                // migrations only add (docs/DEPLOYMENT.md), so this release's queries still
                // work on the schema and it serves beside the newer one.
                log::warn!(
                    "storage: the database has migration {version} `{}` of a newer release; \
                     this release knows migrations up to {newest} and runs on the expanded schema",
                    row.string(1)?
                );
                continue;
            }
            return Err(StorageError::Internal(format!(
                "database has migration {version} (`{}`) that this build does not know",
                row.string(1)?
            )));
        };
        if row.string(2)? != checksum(m.sql) {
            return Err(StorageError::Internal(format!(
                "migration {version} `{}` was changed after it was applied",
                m.name
            )));
        }
    }
    for m in set {
        if applied.iter().any(|r| r.i64(0).ok() == Some(m.version)) {
            continue;
        }
        for statement in m
            .sql
            .split(';')
            .map(str::trim)
            .filter(|s| !only_comments(s))
        {
            tx.execute(statement, &[])?;
        }
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[
                Val::I64(m.version),
                Val::from(m.name),
                Val::from(checksum(m.sql)),
            ],
        )?;
        log::info!("storage: applied migration {} {}", m.version, m.name);
    }
    Ok(())
}

fn only_comments(s: &str) -> bool {
    s.lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with("--"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_backends_have_the_same_versions_in_order() {
        let v = |set: &[Migration]| set.iter().map(|m| (m.version, m.name)).collect::<Vec<_>>();
        assert_eq!(v(SQLITE), v(POSTGRES));
        for (i, m) in SQLITE.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1);
            assert!(m.name.starts_with(&format!("{:04}_", m.version)));
        }
    }

    /// Migrations only add (docs/DEPLOYMENT.md, "Rolling upgrades"): the previous release keeps
    /// running on the migrated schema, so no migration drops, renames, retypes or empties what
    /// it reads or writes, and a column it does not know is nullable or has a default.
    #[test]
    fn migrations_only_expand_the_schema() {
        for m in SQLITE.iter().chain(POSTGRES) {
            for statement in m.sql.split(';') {
                let text: String = statement
                    .lines()
                    .map(|l| l.split("--").next().unwrap_or(""))
                    .collect::<Vec<_>>()
                    .join(" ")
                    .to_uppercase();
                let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
                for word in [
                    "DROP ",
                    "RENAME ",
                    "ALTER COLUMN",
                    "TRUNCATE",
                    "DELETE FROM",
                ] {
                    assert!(
                        !text.contains(word),
                        "migration {} `{}`: `{word}` is not expand-only: {text}",
                        m.version,
                        m.name
                    );
                }
                if text.contains("ADD COLUMN") && text.contains("NOT NULL") {
                    assert!(
                        text.contains("DEFAULT"),
                        "migration {} `{}`: a NOT NULL column without a default breaks the \
                         previous release's inserts: {text}",
                        m.version,
                        m.name
                    );
                }
            }
        }
    }

    #[test]
    fn checksum_is_stable() {
        assert_eq!(checksum(""), "cbf29ce484222325");
        assert_ne!(checksum("a"), checksum("b"));
    }
}
