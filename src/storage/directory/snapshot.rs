//! A tenant as the decision index reads it (whole or in parts), and its removal.

use crate::storage::audit::Change;
use crate::storage::policies::{COLUMNS, PolicyRecord, record};
use crate::storage::query::count;
use crate::storage::{Database, StorageError, Tx, Val, bump_revision};

/// Everything the decision index of one tenant is built from.
#[derive(Debug, Clone, Default)]
pub struct TenantSnapshot {
    pub revision: i64,
    pub policies: Vec<PolicyRecord>,
    /// (policy KRN, target KRN)
    pub attachments: Vec<(String, String)>,
    /// (user KRN, group KRN)
    pub memberships: Vec<(String, String)>,
    /// (resource KRN, pool KRN)
    pub pool_members: Vec<(String, String)>,
    /// (user or group KRN, pool KRN)
    pub pool_principals: Vec<(String, String)>,
}

/// One part of a tenant snapshot read page by page (see [`SnapshotStore::tenant_snapshot_paged`]).
#[derive(Debug)]
pub enum SnapshotPart {
    /// First: the revision the rest is at least as new as.
    Revision(i64),
    /// (policy KRN, target KRN), all of them.
    Attachments(Vec<(String, String)>),
    /// (user KRN, group KRN), all of them.
    Memberships(Vec<(String, String)>),
    /// (resource KRN, pool KRN), all of them.
    PoolMembers(Vec<(String, String)>),
    /// (user or group KRN, pool KRN), all of them.
    PoolPrincipals(Vec<(String, String)>),
    /// (KRN, metadata JSON) of the users and of the registered resources whose metadata is not
    /// `{}`: what conditions on `iam:metadata/...` and `resource:metadata/...` read.
    Metadata {
        users: Vec<(String, String)>,
        resources: Vec<(String, String)>,
    },
    /// The users and the registered resources marked disabled.
    Disabled {
        users: Vec<String>,
        resources: Vec<String>,
    },
    /// Last: the policies, one page at a time, ordered by KRN.
    Policies(Vec<PolicyRecord>),
}

pub trait SnapshotStore {
    /// Everything the decision index of `tenant` needs, read in one transaction.
    fn tenant_snapshot(&self, tenant: &str) -> Result<TenantSnapshot, StorageError>;
    /// The same in one transaction, handed to `each` in parts (revision, attachments,
    /// memberships, pool members, disabled users and resources, then the policies `page` at a
    /// time) so that the caller never
    /// holds every policy row at once.
    fn tenant_snapshot_paged(
        &self,
        tenant: &str,
        page: usize,
        each: &mut dyn FnMut(SnapshotPart) -> Result<(), StorageError>,
    ) -> Result<(), StorageError>;
    /// Remove every row of a tenant (tenant unregistered).
    fn purge_tenant(&self, tenant: &str) -> Result<(), StorageError>;
    /// Every tenant that has at least one user, group, policy, resource or pool, sorted.
    fn tenants_with_data(&self) -> Result<Vec<String>, StorageError>;
}

/// The relations of a tenant, as (KRN, KRN) pairs: attachments, memberships, pool members and
/// pool principals, in the order of [`TenantSnapshot`]'s fields.
const RELATIONS: [&str; 4] = [
    "SELECT policy_krn, target_krn FROM policy_attachments WHERE tenant = $1",
    "SELECT user_krn, group_krn FROM group_members WHERE tenant = $1",
    "SELECT resource_krn, pool_krn FROM pool_members WHERE tenant = $1",
    "SELECT principal_krn, pool_krn FROM pool_principals WHERE tenant = $1",
];

fn pairs(tx: &mut dyn Tx, sql: &str, tenant: &str) -> Result<Vec<(String, String)>, StorageError> {
    tx.query(sql, &[Val::from(tenant)])?
        .iter()
        .map(|r| Ok((r.string(0)?, r.string(1)?)))
        .collect()
}

/// The four relations of [`RELATIONS`].
type Relations = [Vec<(String, String)>; 4];

fn relations(tx: &mut dyn Tx, tenant: &str) -> Result<Relations, StorageError> {
    let [a, m, pm, pp] = RELATIONS;
    Ok([
        pairs(tx, a, tenant)?,
        pairs(tx, m, tenant)?,
        pairs(tx, pm, tenant)?,
        pairs(tx, pp, tenant)?,
    ])
}

/// The tenant's revision (0 before its first write).
fn revision(tx: &mut dyn Tx, tenant: &str) -> Result<i64, StorageError> {
    Ok(tx
        .query(
            "SELECT revision FROM tenant_revisions WHERE tenant = $1",
            &[Val::from(tenant)],
        )?
        .first()
        .map(|r| r.i64(0))
        .transpose()?
        .unwrap_or(0))
}

impl SnapshotStore for Database {
    fn tenant_snapshot(&self, tenant: &str) -> Result<TenantSnapshot, StorageError> {
        self.tx(|tx| {
            let revision = revision(tx, tenant)?;
            let policies = tx
                .query(
                    &format!("SELECT {COLUMNS} FROM policies WHERE tenant = $1 ORDER BY krn"),
                    &[Val::from(tenant)],
                )?
                .iter()
                .map(record)
                .collect::<Result<_, _>>()?;
            let [attachments, memberships, pool_members, pool_principals] = relations(tx, tenant)?;
            Ok(TenantSnapshot {
                revision,
                policies,
                attachments,
                memberships,
                pool_members,
                pool_principals,
            })
        })
    }

    fn tenant_snapshot_paged(
        &self,
        tenant: &str,
        page: usize,
        each: &mut dyn FnMut(SnapshotPart) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let page = page.max(1);
        self.tx(|tx| {
            each(SnapshotPart::Revision(revision(tx, tenant)?))?;
            let [attachments, memberships, pool_members, pool_principals] =
                relations(tx, tenant)?;
            each(SnapshotPart::Attachments(attachments))?;
            each(SnapshotPart::Memberships(memberships))?;
            each(SnapshotPart::PoolMembers(pool_members))?;
            each(SnapshotPart::PoolPrincipals(pool_principals))?;
            let mut disabled = |table: &str| -> Result<Vec<String>, StorageError> {
                tx.query(
                    &format!("SELECT krn FROM {table} WHERE tenant = $1 AND enabled = $2"),
                    &[Val::from(tenant), Val::Bool(false)],
                )?
                .iter()
                .map(|r| r.string(0))
                .collect()
            };
            let users = disabled("users")?;
            let resources = disabled("resources")?;
            each(SnapshotPart::Disabled { users, resources })?;
            let users = pairs(
                tx,
                "SELECT krn, metadata FROM users WHERE tenant = $1 AND metadata <> '{}'",
                tenant,
            )?;
            let resources = pairs(
                tx,
                "SELECT krn, metadata FROM resources WHERE tenant = $1 AND metadata <> '{}'",
                tenant,
            )?;
            each(SnapshotPart::Metadata { users, resources })?;
            let sql = format!(
                "SELECT {COLUMNS} FROM policies WHERE tenant = $1 AND krn > $2 ORDER BY krn LIMIT $3"
            );
            let mut after = String::new();
            loop {
                let rows = tx.query(
                    &sql,
                    &[
                        Val::from(tenant),
                        Val::from(after.as_str()),
                        Val::I64(i64::try_from(page).unwrap_or(i64::MAX)),
                    ],
                )?;
                let full = rows.len() >= page;
                let records = rows.iter().map(record).collect::<Result<Vec<_>, _>>()?;
                drop(rows);
                match records.last() {
                    Some(last) => after.clone_from(&last.krn),
                    None => break,
                }
                each(SnapshotPart::Policies(records))?;
                if !full {
                    break;
                }
            }
            Ok(())
        })
    }

    fn purge_tenant(&self, tenant: &str) -> Result<(), StorageError> {
        self.tx(|tx| {
            for table in [
                "pool_principals",
                "pool_members",
                "pools",
                "group_members",
                "policy_attachments",
                "policies",
                "policy_versions",
                "resources",
                "users",
            ] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE tenant = $1"),
                    &[Val::from(tenant)],
                )?;
            }
            // Children before parents: leaves first, level by level.
            loop {
                let left = count(
                    tx,
                    "SELECT COUNT(*) FROM user_groups WHERE tenant = $1",
                    &[Val::from(tenant)],
                )?;
                if left == 0 {
                    break;
                }
                let n = tx.execute(
                    "DELETE FROM user_groups WHERE tenant = $1 AND krn NOT IN \
                     (SELECT parent_krn FROM user_groups WHERE tenant = $1 AND parent_krn IS NOT NULL)",
                    &[Val::from(tenant)],
                )?;
                if n == 0 {
                    return Err(StorageError::Internal("group tree has a cycle".into()));
                }
            }
            bump_revision(tx, tenant)?;
            // The trail of the tenant stays (until its retention): it says when and why the
            // tenant's entities went.
            tx.record(Change::new(
                tenant,
                "iam:tenant:purge",
                &format!("krn:iam:{tenant}::tenant/{tenant}"),
            ));
            Ok(())
        })
    }

    fn tenants_with_data(&self) -> Result<Vec<String>, StorageError> {
        self.tx(|tx| {
            // Memberships and attachments name tenants these tables already have.
            tx.query(
                "SELECT tenant FROM users UNION SELECT tenant FROM user_groups \
                 UNION SELECT tenant FROM policies UNION SELECT tenant FROM resources \
                 UNION SELECT tenant FROM pools ORDER BY 1",
                &[],
            )?
            .iter()
            .map(|r| r.string(0))
            .collect()
        })
    }
}
