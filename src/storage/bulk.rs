//! Bulk writes for generated data (`iam generate`): users, groups, memberships, policies and
//! attachments of one tenant inserted in large transactions with multi-row `INSERT`s, written
//! once for both backends over [`Tx`]. Each transaction bumps the tenant revision once, so a
//! running replica reloads the tenant when it next polls, as after any other write.
//!
//! Nothing is validated here beyond what the schema enforces (keys, foreign keys): callers build
//! rows exactly as the domain layer would. A row that already exists fails its transaction with
//! `Conflict`; transactions committed before it stay.

use super::directory::{GroupRecord, UserRecord};
use super::policies::NewPolicy;
use super::{Database, StorageError, Tx, Val, bump_revision};

/// Default rows per transaction.
pub const ROWS_PER_TX: usize = 1000;

/// Most parameters in one statement: below SQLite's default limit (32766) and PostgreSQL's
/// (65535).
const MAX_PARAMS: usize = 30_000;

/// What one bulk call wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BulkCount {
    pub rows: u64,
    pub transactions: u64,
}

/// Rows of one tenant, counted per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantCounts {
    pub users: u64,
    pub groups: u64,
    pub memberships: u64,
    pub policies: u64,
    pub attachments: u64,
}

impl TenantCounts {
    pub fn is_empty(&self) -> bool {
        *self == TenantCounts::default()
    }
}

/// Large-transaction inserts of a tenant's directory and policies. `per_tx` rows go in one
/// transaction (0 means [`ROWS_PER_TX`]); rows must belong to `tenant` and come parents first
/// (groups) and after what they reference (memberships after users and groups, attachments
/// after policies).
pub trait BulkStore {
    fn bulk_users(
        &self,
        tenant: &str,
        rows: &[UserRecord],
        per_tx: usize,
    ) -> Result<BulkCount, StorageError>;
    fn bulk_groups(
        &self,
        tenant: &str,
        rows: &[GroupRecord],
        per_tx: usize,
    ) -> Result<BulkCount, StorageError>;
    /// (user KRN, group KRN) pairs.
    fn bulk_memberships(
        &self,
        tenant: &str,
        rows: &[(String, String)],
        per_tx: usize,
    ) -> Result<BulkCount, StorageError>;
    /// Policies with their statements as stored (the validated JSON array).
    fn bulk_policies(
        &self,
        tenant: &str,
        rows: &[NewPolicy],
        per_tx: usize,
    ) -> Result<BulkCount, StorageError>;
    /// (policy KRN, target KRN) pairs.
    fn bulk_attachments(
        &self,
        tenant: &str,
        rows: &[(String, String)],
        per_tx: usize,
    ) -> Result<BulkCount, StorageError>;
    /// How many rows of each kind the tenant holds.
    fn tenant_counts(&self, tenant: &str) -> Result<TenantCounts, StorageError>;
}

/// `INSERT INTO table (cols) VALUES (...), (...)` for `rows`, split so that no statement
/// carries more than [`MAX_PARAMS`] parameters.
fn insert_rows(
    tx: &mut dyn Tx,
    table: &str,
    cols: &[&str],
    rows: Vec<Vec<Val>>,
) -> Result<u64, StorageError> {
    let width = cols.len().max(1);
    let per_stmt = (MAX_PARAMS / width).max(1);
    let head = format!("INSERT INTO {table} ({}) VALUES ", cols.join(", "));
    let mut written = 0;
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let mut sql = head.clone();
        let mut params: Vec<Val> = Vec::with_capacity(per_stmt * width);
        for (i, row) in rows.by_ref().take(per_stmt).enumerate() {
            if row.len() != width {
                return Err(StorageError::Internal(format!(
                    "bulk insert into {table}: row of {} values for {width} columns",
                    row.len()
                )));
            }
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for j in 0..width {
                if j > 0 {
                    sql.push_str(", ");
                }
                sql.push('$');
                sql.push_str(&(params.len() + j + 1).to_string());
            }
            sql.push(')');
            params.extend(row);
        }
        written += tx.execute(&sql, &params)?;
    }
    Ok(written)
}

/// Insert `items` in transactions of `per_tx` rows, each bumping the tenant revision once.
fn bulk<T>(
    db: &Database,
    tenant: &str,
    table: &str,
    cols: &[&str],
    items: &[T],
    per_tx: usize,
    row: impl Fn(&T) -> Result<Vec<Val>, StorageError>,
) -> Result<BulkCount, StorageError> {
    let per_tx = if per_tx == 0 { ROWS_PER_TX } else { per_tx };
    let mut count = BulkCount::default();
    for chunk in items.chunks(per_tx) {
        let rows = chunk.iter().map(&row).collect::<Result<Vec<_>, _>>()?;
        let n = db.tx(|tx| {
            let n = insert_rows(tx, table, cols, rows)?;
            bump_revision(tx, tenant)?;
            Ok(n)
        })?;
        count.rows += n;
        count.transactions += 1;
    }
    Ok(count)
}

fn same_tenant(tenant: &str, row_tenant: &str, what: &str) -> Result<(), StorageError> {
    if tenant == row_tenant {
        Ok(())
    } else {
        Err(StorageError::Internal(format!(
            "bulk insert into tenant `{tenant}`: {what} of tenant `{row_tenant}`"
        )))
    }
}

impl BulkStore for Database {
    fn bulk_users(
        &self,
        tenant: &str,
        rows: &[UserRecord],
        per_tx: usize,
    ) -> Result<BulkCount, StorageError> {
        const COLS: &[&str] = &[
            "tenant",
            "krn",
            "username",
            "path",
            "email",
            "first_name",
            "last_name",
            "enabled",
            "auth_id",
            "password_hash",
            "metadata",
            "required_actions",
            "version",
            "created_ms",
            "updated_ms",
        ];
        bulk(self, tenant, "users", COLS, rows, per_tx, |u| {
            same_tenant(tenant, &u.tenant, "a user")?;
            Ok(u.values())
        })
    }

    fn bulk_groups(
        &self,
        tenant: &str,
        rows: &[GroupRecord],
        per_tx: usize,
    ) -> Result<BulkCount, StorageError> {
        const COLS: &[&str] = &[
            "tenant",
            "krn",
            "name",
            "display_name",
            "parent_krn",
            "path",
            "metadata",
            "version",
            "created_ms",
            "updated_ms",
        ];
        bulk(self, tenant, "user_groups", COLS, rows, per_tx, |g| {
            same_tenant(tenant, &g.tenant, "a group")?;
            Ok(g.values())
        })
    }

    fn bulk_memberships(
        &self,
        tenant: &str,
        rows: &[(String, String)],
        per_tx: usize,
    ) -> Result<BulkCount, StorageError> {
        const COLS: &[&str] = &["tenant", "group_krn", "user_krn"];
        bulk(
            self,
            tenant,
            "group_members",
            COLS,
            rows,
            per_tx,
            |(user, group)| Ok(vec![Val::from(tenant), Val::from(group), Val::from(user)]),
        )
    }

    fn bulk_policies(
        &self,
        tenant: &str,
        rows: &[NewPolicy],
        per_tx: usize,
    ) -> Result<BulkCount, StorageError> {
        const COLS: &[&str] = &[
            "tenant",
            "krn",
            "name",
            "kind",
            "description",
            "statements",
            "origin",
            "version",
            "created_ms",
            "updated_ms",
            "resource_krn",
        ];
        bulk(self, tenant, "policies", COLS, rows, per_tx, |p| {
            same_tenant(tenant, &p.tenant, "a policy")?;
            Ok(vec![
                Val::from(tenant),
                Val::from(&p.krn),
                Val::from(&p.name),
                Val::from(&p.kind),
                Val::from(p.description.clone()),
                Val::from(&p.statements),
                Val::from(&p.origin),
                Val::I64(1),
                Val::I64(p.now_ms),
                Val::I64(p.now_ms),
                Val::from(p.resource_krn.clone()),
            ])
        })
    }

    fn bulk_attachments(
        &self,
        tenant: &str,
        rows: &[(String, String)],
        per_tx: usize,
    ) -> Result<BulkCount, StorageError> {
        const COLS: &[&str] = &["tenant", "policy_krn", "target_krn"];
        bulk(
            self,
            tenant,
            "policy_attachments",
            COLS,
            rows,
            per_tx,
            |(policy, target)| {
                Ok(vec![
                    Val::from(tenant),
                    Val::from(policy),
                    Val::from(target),
                ])
            },
        )
    }

    fn tenant_counts(&self, tenant: &str) -> Result<TenantCounts, StorageError> {
        self.tx(|tx| {
            let mut n = |table: &str| -> Result<u64, StorageError> {
                let rows = tx.query(
                    &format!("SELECT COUNT(*) FROM {table} WHERE tenant = $1"),
                    &[Val::from(tenant)],
                )?;
                let v = rows.first().map(|r| r.i64(0)).transpose()?.unwrap_or(0);
                Ok(u64::try_from(v).unwrap_or(0))
            };
            Ok(TenantCounts {
                users: n("users")?,
                groups: n("user_groups")?,
                memberships: n("group_members")?,
                policies: n("policies")?,
                attachments: n("policy_attachments")?,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SqliteSettings, StorageSettings};
    use crate::storage::{PolicyStore, RevisionStore};

    fn temp_db() -> (Database, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "kaa-bulk-{}-{}",
            std::process::id(),
            crate::clock::now_ms()
        ));
        let db = Database::open(&StorageSettings::Sqlite(SqliteSettings {
            path: dir.join("t.db"),
        }))
        .unwrap_or_else(|e| panic!("open: {e}"));
        (db, dir)
    }

    fn policy(i: usize) -> NewPolicy {
        NewPolicy {
            tenant: "t".into(),
            krn: format!("krn:iam:t::policy/p{i}"),
            name: format!("p{i}"),
            kind: "identity".into(),
            description: None,
            statements: r#"[{"actions":["iam:user:read"],"effect":"allow","principals":[],"resources":["krn:iam:t::user/*"]}]"#.into(),
            origin: "api".into(),
            now_ms: 1,
            resource_krn: None,
            pools: Vec::new(),
        }
    }

    #[test]
    fn rows_go_in_transactions_of_the_given_size_each_bumping_the_revision_once() {
        let (db, dir) = temp_db();
        let rows: Vec<NewPolicy> = (0..25).map(policy).collect();
        let c = db
            .bulk_policies("t", &rows, 10)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c,
            BulkCount {
                rows: 25,
                transactions: 3
            }
        );
        assert_eq!(db.revision("t").unwrap_or_default(), 3);
        let p = db
            .get_policy("t", "krn:iam:t::policy/p24")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.version, 1);
        let pairs: Vec<(String, String)> = (0..25)
            .map(|i| {
                (
                    format!("krn:iam:t::policy/p{i}"),
                    "krn:iam:t::user/u".into(),
                )
            })
            .collect();
        db.bulk_attachments("t", &pairs, 0)
            .unwrap_or_else(|e| panic!("{e}"));
        let counts = db.tenant_counts("t").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((counts.policies, counts.attachments), (25, 25));
        assert!(matches!(
            db.bulk_policies("t", &rows[..1], 0),
            Err(StorageError::Conflict(_))
        ));
        drop(db);
        let _ = std::fs::remove_dir_all(dir);
    }
}
