//! Nested groups of users: the groups, their members, and the groups of a user.

use super::entity::{Versioned, absent, created, deleting, list, put, read, update};
use super::pools::set_principal_pools_tx;
use super::users::{USER_COLS, UserRecord};
use super::{GROUP_USERS, PRINCIPAL_POOLS, text};
use crate::storage::audit::{Change, Fields};
use crate::storage::query::{
    Links, Where, count, insert_row, require, require_all, run_each, sort_column,
};
use crate::storage::{Database, Page, Row, SortOrder, StorageError, Tx, Val, bump_revision};
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    pub tenant: String,
    pub krn: String,
    pub name: String,
    pub display_name: Option<String>,
    pub parent_krn: Option<String>,
    pub path: String,
    pub metadata: String,
    pub version: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// Pools (KRNs) the entity is a member of: read with the record, written by its insert
    /// and by an update that names them.
    pub pools: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct GroupFilter {
    pub tenant: String,
    /// Exactly this entity (its canonical KRN).
    pub krn: Option<String>,
    pub name: Option<String>,
    pub display_name: Option<String>,
    pub path_prefix: Option<String>,
    /// `Some(None)`: top-level groups only.
    pub parent: Option<Option<String>>,
    pub sort: String,
    pub order: SortOrder,
}

pub trait GroupStore {
    fn insert_group(&self, g: &GroupRecord) -> Result<GroupRecord, StorageError>;
    fn get_group(&self, tenant: &str, krn: &str) -> Result<GroupRecord, StorageError>;
    fn list_groups(
        &self,
        f: &GroupFilter,
        page: Page,
    ) -> Result<(Vec<GroupRecord>, u64), StorageError>;
    #[allow(clippy::too_many_arguments)] // the inputs of one write, each used once
    fn update_group(
        &self,
        tenant: &str,
        krn: &str,
        display_name: Option<Option<String>>,
        metadata: Option<String>,
        pools: Option<Vec<String>>,
        expected_version: Option<i64>,
        now_ms: i64,
    ) -> Result<GroupRecord, StorageError>;
    /// Delete all or none; a group that still has subgroups is a `Conflict`.
    fn delete_groups(&self, tenant: &str, krns: &[String]) -> Result<(), StorageError>;
    /// Add users to a group (already-members are fine); unknown users are `NotFound`.
    fn add_members(&self, tenant: &str, group: &str, users: &[String]) -> Result<(), StorageError>;
    fn remove_members(
        &self,
        tenant: &str,
        group: &str,
        users: &[String],
    ) -> Result<(), StorageError>;
    /// Add one user to several groups, all or none.
    fn join_groups(&self, tenant: &str, user: &str, groups: &[String]) -> Result<(), StorageError>;
    fn list_members(
        &self,
        tenant: &str,
        group: &str,
        page: Page,
    ) -> Result<(Vec<UserRecord>, u64), StorageError>;
    fn groups_of_user(
        &self,
        tenant: &str,
        user: &str,
        page: Page,
    ) -> Result<(Vec<GroupRecord>, u64), StorageError>;
}

const GROUP_COLS: &str =
    "tenant, krn, name, display_name, parent_krn, path, metadata, version, created_ms, updated_ms";

impl GroupRecord {
    /// The values of `GROUP_COLS`, in its order.
    pub(crate) fn values(&self) -> Vec<Val> {
        vec![
            Val::from(&self.tenant),
            Val::from(&self.krn),
            Val::from(&self.name),
            Val::from(self.display_name.clone()),
            Val::from(self.parent_krn.clone()),
            Val::from(&self.path),
            Val::from(&self.metadata),
            Val::I64(self.version),
            Val::I64(self.created_ms),
            Val::I64(self.updated_ms),
        ]
    }
}

impl Versioned for GroupRecord {
    const TABLE: &'static str = "user_groups";
    const KIND: &'static str = "group";
    const POOLS: Option<Links> = Some(PRINCIPAL_POOLS);
    const COLUMNS: &'static str = GROUP_COLS;

    fn from_row(r: &Row) -> Result<Self, StorageError> {
        Ok(GroupRecord {
            tenant: r.string(0)?,
            krn: r.string(1)?,
            name: r.string(2)?,
            display_name: r.opt_string(3)?,
            parent_krn: r.opt_string(4)?,
            path: r.string(5)?,
            metadata: r.string(6)?,
            version: r.i64(7)?,
            created_ms: r.i64(8)?,
            updated_ms: r.i64(9)?,
            pools: Vec::new(),
        })
    }

    fn krn(&self) -> &str {
        &self.krn
    }

    fn pools_mut(&mut self) -> Option<&mut Vec<String>> {
        Some(&mut self.pools)
    }

    fn version(&self) -> i64 {
        self.version
    }

    fn audit_fields(&self) -> Fields {
        vec![
            ("name", self.name.clone()),
            ("displayName", text(&self.display_name)),
            ("parentID", text(&self.parent_krn)),
            ("path", self.path.clone()),
            ("metadata", self.metadata.clone()),
            ("poolIDs", self.pools.join(",")),
        ]
    }

    fn updatable(&self) -> Vec<(&'static str, Val)> {
        vec![
            ("display_name", Val::from(self.display_name.clone())),
            ("metadata", Val::from(&self.metadata)),
        ]
    }
}

/// Report a change of memberships, named on `entity`.
fn record_members(
    tx: &mut dyn Tx,
    tenant: &str,
    action: &str,
    entity: &str,
    field: &str,
    detail: serde_json::Value,
) {
    tx.record(
        Change::new(tenant, action, entity)
            .fields(vec![field.into()])
            .detail(detail),
    );
}

impl GroupStore for Database {
    fn insert_group(&self, g: &GroupRecord) -> Result<GroupRecord, StorageError> {
        self.tx(|tx| {
            absent::<GroupRecord>(tx, &g.tenant, &g.krn)?;
            if let Some(parent) = &g.parent_krn {
                require(tx, "user_groups", &g.tenant, parent)?;
            }
            let row = GroupRecord {
                version: 1,
                updated_ms: g.created_ms,
                ..g.clone()
            };
            insert_row(tx, "user_groups", GROUP_COLS, &row.values())?;
            set_principal_pools_tx(tx, &g.tenant, &g.krn, &g.pools)?;
            created(tx, &g.tenant, &g.krn, json!({}))
        })
    }

    fn get_group(&self, tenant: &str, krn: &str) -> Result<GroupRecord, StorageError> {
        self.tx(|tx| read(tx, tenant, krn))
    }

    fn list_groups(
        &self,
        f: &GroupFilter,
        page: Page,
    ) -> Result<(Vec<GroupRecord>, u64), StorageError> {
        let mut w = Where::tenant(&f.tenant);
        w.eq("krn", f.krn.as_deref());
        w.eq("name", f.name.as_deref());
        w.contains("display_name", f.display_name.as_deref());
        w.prefix("path", f.path_prefix.as_deref());
        match &f.parent {
            Some(Some(p)) => w.eq("parent_krn", Some(p)),
            Some(None) => w.is_null("parent_krn"),
            None => {}
        }
        let col = sort_column(
            &f.sort,
            &[
                ("name", "name"),
                ("path", "path"),
                ("created", "created_ms"),
                ("updated", "updated_ms"),
            ],
            "path",
        );
        self.tx(|tx| list::<GroupRecord>(tx, &f.tenant, &w, col, f.order, page))
    }

    #[allow(clippy::too_many_arguments)] // the inputs of one write, each used once
    fn update_group(
        &self,
        tenant: &str,
        krn: &str,
        display_name: Option<Option<String>>,
        metadata: Option<String>,
        pools: Option<Vec<String>>,
        expected_version: Option<i64>,
        now_ms: i64,
    ) -> Result<GroupRecord, StorageError> {
        self.tx(|tx| {
            update(
                tx,
                tenant,
                krn,
                expected_version,
                now_ms,
                |g: &mut GroupRecord| {
                    put(&mut g.display_name, &display_name);
                    put(&mut g.metadata, &metadata);
                },
                |tx| match &pools {
                    Some(pools) => set_principal_pools_tx(tx, tenant, krn, pools),
                    None => Ok(()),
                },
            )
        })
    }

    fn delete_groups(&self, tenant: &str, krns: &[String]) -> Result<(), StorageError> {
        self.tx(|tx| {
            for k in krns {
                deleting::<GroupRecord>(tx, tenant, k)?;
            }
            for k in krns {
                let children = count(
                    tx,
                    "SELECT COUNT(*) FROM user_groups WHERE tenant = $1 AND parent_krn = $2",
                    &[Val::from(tenant), Val::from(k)],
                )?;
                if children > 0 {
                    return Err(StorageError::Conflict(format!(
                        "group `{k}` has {children} subgroups"
                    )));
                }
                run_each(
                    tx,
                    &[
                        "DELETE FROM policy_attachments WHERE tenant = $1 AND target_krn = $2",
                        "DELETE FROM group_members WHERE tenant = $1 AND group_krn = $2",
                        "DELETE FROM pool_principals WHERE tenant = $1 AND principal_krn = $2",
                        "DELETE FROM user_groups WHERE tenant = $1 AND krn = $2",
                    ],
                    tenant,
                    k,
                )?;
            }
            bump_revision(tx, tenant)
        })
    }

    fn add_members(&self, tenant: &str, group: &str, users: &[String]) -> Result<(), StorageError> {
        self.tx(|tx| {
            require(tx, "user_groups", tenant, group)?;
            require_all(tx, "users", tenant, users)?;
            for u in users {
                GROUP_USERS.add(tx, tenant, group, u)?;
            }
            bump_revision(tx, tenant)?;
            let detail = json!({ "userIDs": users });
            record_members(tx, tenant, "iam:group:user:add", group, "members", detail);
            Ok(())
        })
    }

    fn remove_members(
        &self,
        tenant: &str,
        group: &str,
        users: &[String],
    ) -> Result<(), StorageError> {
        self.tx(|tx| {
            require(tx, "user_groups", tenant, group)?;
            require_all(tx, "users", tenant, users)?;
            for u in users {
                GROUP_USERS.remove(tx, tenant, group, u)?;
            }
            bump_revision(tx, tenant)?;
            let detail = json!({ "userIDs": users });
            record_members(
                tx,
                tenant,
                "iam:group:user:remove",
                group,
                "members",
                detail,
            );
            Ok(())
        })
    }

    fn join_groups(&self, tenant: &str, user: &str, groups: &[String]) -> Result<(), StorageError> {
        self.tx(|tx| {
            require(tx, "users", tenant, user)?;
            for g in groups {
                require(tx, "user_groups", tenant, g)?;
                GROUP_USERS.add(tx, tenant, g, user)?;
            }
            bump_revision(tx, tenant)?;
            let detail = json!({ "groupIDs": groups });
            record_members(tx, tenant, "iam:group:user:add", user, "groups", detail);
            Ok(())
        })
    }

    fn list_members(
        &self,
        tenant: &str,
        group: &str,
        page: Page,
    ) -> Result<(Vec<UserRecord>, u64), StorageError> {
        self.tx(|tx| {
            require(tx, "user_groups", tenant, group)?;
            let mut w = Where::tenant(tenant);
            w.linked(GROUP_USERS, Some(group));
            w.page_of(
                tx,
                "users",
                USER_COLS,
                "username",
                SortOrder::Asc,
                page,
                UserRecord::from_row,
            )
        })
    }

    fn groups_of_user(
        &self,
        tenant: &str,
        user_krn: &str,
        page: Page,
    ) -> Result<(Vec<GroupRecord>, u64), StorageError> {
        self.tx(|tx| {
            require(tx, "users", tenant, user_krn)?;
            let mut w = Where::tenant(tenant);
            w.linked(GROUP_USERS.reversed(), Some(user_krn));
            w.page_of(
                tx,
                "user_groups",
                GROUP_COLS,
                "path",
                SortOrder::Asc,
                page,
                GroupRecord::from_row,
            )
        })
    }
}
