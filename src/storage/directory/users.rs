//! Users: the directory's principals, with their group memberships and pools.

use super::entity::{Versioned, absent, created, deleting, list, put, read, update};
use super::pools::set_principal_pools_tx;
use super::{GROUP_USERS, POLICY_TARGETS, PRINCIPAL_POOLS, text};
use crate::storage::audit::Fields;
use crate::storage::query::{Links, Where, insert_row, one, require, run_each, sort_column};
use crate::storage::{Database, Page, Row, SortOrder, StorageError, Val, bump_revision};
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub tenant: String,
    pub krn: String,
    pub username: String,
    pub path: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub enabled: bool,
    pub auth_id: Option<String>,
    pub password_hash: Option<String>,
    /// JSON object.
    pub metadata: String,
    /// JSON array of strings.
    pub required_actions: String,
    pub version: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// Pools (KRNs) the entity is a member of: read with the record, written by its insert
    /// and by an update that names them.
    pub pools: Vec<String>,
}

/// Fields a user update may change (`None`: unchanged).
#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    pub email: Option<Option<String>>,
    pub first_name: Option<Option<String>>,
    pub last_name: Option<Option<String>>,
    pub enabled: Option<bool>,
    pub auth_id: Option<Option<String>>,
    pub metadata: Option<String>,
    pub required_actions: Option<String>,
    /// The pools the user is a member of, all of them.
    pub pools: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    pub tenant: String,
    /// Exactly this entity (its canonical KRN).
    pub krn: Option<String>,
    pub username: Option<String>,
    pub email: Option<String>,
    pub path_prefix: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// Substring of username, email, first or last name.
    pub search: Option<String>,
    pub sort: String,
    pub order: SortOrder,
}

pub trait UserStore {
    /// Insert the user, its group memberships and its policy attachments in one transaction.
    fn insert_user(
        &self,
        u: &UserRecord,
        groups: &[String],
        policies: &[String],
    ) -> Result<UserRecord, StorageError>;
    fn get_user(&self, tenant: &str, krn: &str) -> Result<UserRecord, StorageError>;
    fn find_user_by_auth_id(&self, tenant: &str, auth_id: &str)
    -> Result<UserRecord, StorageError>;
    fn list_users(
        &self,
        f: &UserFilter,
        page: Page,
    ) -> Result<(Vec<UserRecord>, u64), StorageError>;
    fn update_user(
        &self,
        tenant: &str,
        krn: &str,
        patch: &UserPatch,
        expected_version: Option<i64>,
        now_ms: i64,
    ) -> Result<UserRecord, StorageError>;
    /// Delete all of `krns` or none (`NotFound` when one is missing).
    fn delete_users(&self, tenant: &str, krns: &[String]) -> Result<(), StorageError>;
}

pub(super) const USER_COLS: &str = "tenant, krn, username, path, email, first_name, last_name, \
                                    enabled, auth_id, password_hash, metadata, required_actions, \
                                    version, created_ms, updated_ms";

/// A user of a row of `USER_COLS` (its pools are read apart).
impl UserRecord {
    /// The values of `USER_COLS`, in its order.
    pub(crate) fn values(&self) -> Vec<Val> {
        vec![
            Val::from(&self.tenant),
            Val::from(&self.krn),
            Val::from(&self.username),
            Val::from(&self.path),
            Val::from(self.email.clone()),
            Val::from(self.first_name.clone()),
            Val::from(self.last_name.clone()),
            Val::Bool(self.enabled),
            Val::from(self.auth_id.clone()),
            Val::from(self.password_hash.clone()),
            Val::from(&self.metadata),
            Val::from(&self.required_actions),
            Val::I64(self.version),
            Val::I64(self.created_ms),
            Val::I64(self.updated_ms),
        ]
    }
}

impl Versioned for UserRecord {
    const TABLE: &'static str = "users";
    const KIND: &'static str = "user";
    const POOLS: Option<Links> = Some(PRINCIPAL_POOLS);
    const COLUMNS: &'static str = USER_COLS;

    fn from_row(r: &Row) -> Result<Self, StorageError> {
        Ok(UserRecord {
            tenant: r.string(0)?,
            krn: r.string(1)?,
            username: r.string(2)?,
            path: r.string(3)?,
            email: r.opt_string(4)?,
            first_name: r.opt_string(5)?,
            last_name: r.opt_string(6)?,
            enabled: r.bool(7)?,
            auth_id: r.opt_string(8)?,
            password_hash: r.opt_string(9)?,
            metadata: r.string(10)?,
            required_actions: r.string(11)?,
            version: r.i64(12)?,
            created_ms: r.i64(13)?,
            updated_ms: r.i64(14)?,
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
            ("username", self.username.clone()),
            ("path", self.path.clone()),
            ("email", text(&self.email)),
            ("firstName", text(&self.first_name)),
            ("lastName", text(&self.last_name)),
            ("enabled", self.enabled.to_string()),
            ("authID", text(&self.auth_id)),
            ("password", text(&self.password_hash)),
            ("metadata", self.metadata.clone()),
            ("requiredActions", self.required_actions.clone()),
            ("poolIDs", self.pools.join(",")),
        ]
    }

    fn updatable(&self) -> Vec<(&'static str, Val)> {
        vec![
            ("email", Val::from(self.email.clone())),
            ("first_name", Val::from(self.first_name.clone())),
            ("last_name", Val::from(self.last_name.clone())),
            ("enabled", Val::Bool(self.enabled)),
            ("auth_id", Val::from(self.auth_id.clone())),
            ("metadata", Val::from(&self.metadata)),
            ("required_actions", Val::from(&self.required_actions)),
        ]
    }
}

impl UserStore for Database {
    fn insert_user(
        &self,
        u: &UserRecord,
        groups: &[String],
        policies: &[String],
    ) -> Result<UserRecord, StorageError> {
        self.tx(|tx| {
            absent::<UserRecord>(tx, &u.tenant, &u.krn)?;
            let row = UserRecord {
                version: 1,
                updated_ms: u.created_ms,
                ..u.clone()
            };
            insert_row(tx, "users", USER_COLS, &row.values())?;
            for g in groups {
                require(tx, "user_groups", &u.tenant, g)?;
                GROUP_USERS.add(tx, &u.tenant, g, &u.krn)?;
            }
            POLICY_TARGETS
                .reversed()
                .add_existing(tx, &u.tenant, &u.krn, policies, "policies")?;
            set_principal_pools_tx(tx, &u.tenant, &u.krn, &u.pools)?;
            created(
                tx,
                &u.tenant,
                &u.krn,
                json!({ "groupIDs": groups, "policyIDs": policies }),
            )
        })
    }

    fn get_user(&self, tenant: &str, krn: &str) -> Result<UserRecord, StorageError> {
        self.tx(|tx| read(tx, tenant, krn))
    }

    fn find_user_by_auth_id(
        &self,
        tenant: &str,
        auth_id: &str,
    ) -> Result<UserRecord, StorageError> {
        self.tx(|tx| {
            one(
                tx.query(
                    &format!("SELECT {USER_COLS} FROM users WHERE tenant = $1 AND auth_id = $2"),
                    &[Val::from(tenant), Val::from(auth_id)],
                )?,
                UserRecord::from_row,
            )
        })
    }

    fn list_users(
        &self,
        f: &UserFilter,
        page: Page,
    ) -> Result<(Vec<UserRecord>, u64), StorageError> {
        let mut w = Where::tenant(&f.tenant);
        w.eq("krn", f.krn.as_deref());
        w.eq("username", f.username.as_deref());
        w.eq("email", f.email.as_deref());
        w.eq("first_name", f.first_name.as_deref());
        w.eq("last_name", f.last_name.as_deref());
        w.prefix("path", f.path_prefix.as_deref());
        w.any_contains(
            &["username", "email", "first_name", "last_name"],
            f.search.as_deref(),
        );
        let col = sort_column(
            &f.sort,
            &[
                ("username", "username"),
                ("email", "email"),
                ("created", "created_ms"),
                ("updated", "updated_ms"),
                ("path", "path"),
            ],
            "username",
        );
        self.tx(|tx| list::<UserRecord>(tx, &f.tenant, &w, col, f.order, page))
    }

    fn update_user(
        &self,
        tenant: &str,
        krn: &str,
        p: &UserPatch,
        expected_version: Option<i64>,
        now_ms: i64,
    ) -> Result<UserRecord, StorageError> {
        self.tx(|tx| {
            update(
                tx,
                tenant,
                krn,
                expected_version,
                now_ms,
                |u: &mut UserRecord| {
                    put(&mut u.email, &p.email);
                    put(&mut u.first_name, &p.first_name);
                    put(&mut u.last_name, &p.last_name);
                    put(&mut u.enabled, &p.enabled);
                    put(&mut u.auth_id, &p.auth_id);
                    put(&mut u.metadata, &p.metadata);
                    put(&mut u.required_actions, &p.required_actions);
                },
                |tx| match &p.pools {
                    Some(pools) => set_principal_pools_tx(tx, tenant, krn, pools),
                    None => Ok(()),
                },
            )
        })
    }

    fn delete_users(&self, tenant: &str, krns: &[String]) -> Result<(), StorageError> {
        self.tx(|tx| {
            for k in krns {
                deleting::<UserRecord>(tx, tenant, k)?;
                run_each(
                    tx,
                    &[
                        "DELETE FROM policy_attachments WHERE tenant = $1 AND target_krn = $2",
                        "DELETE FROM group_members WHERE tenant = $1 AND user_krn = $2",
                        "DELETE FROM pool_principals WHERE tenant = $1 AND principal_krn = $2",
                        "DELETE FROM users WHERE tenant = $1 AND krn = $2",
                    ],
                    tenant,
                    k,
                )?;
            }
            bump_revision(tx, tenant)
        })
    }
}
