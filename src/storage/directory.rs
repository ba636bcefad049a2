//! The IAM directory, written once for both backends: users, nested groups and their members,
//! policy attachments, resources, pools and their members, and the per-tenant snapshot the
//! decision index is built from. Every write bumps the tenant revision in its transaction.

use super::audit::{Change, Fields, changed, set};
use super::policies::PolicyRecord;
use super::{Database, Page, Row, SortOrder, StorageError, Tx, Val, bump_revision, lock_row};
use serde_json::json;

fn o(v: &Option<String>) -> String {
    v.clone().unwrap_or_default()
}

impl UserRecord {
    /// The audited fields (the password is compared, never shown).
    pub fn audit_fields(&self) -> Fields {
        vec![
            ("username", self.username.clone()),
            ("path", self.path.clone()),
            ("email", o(&self.email)),
            ("firstName", o(&self.first_name)),
            ("lastName", o(&self.last_name)),
            ("enabled", self.enabled.to_string()),
            ("authID", o(&self.auth_id)),
            ("password", o(&self.password_hash)),
            ("metadata", self.metadata.clone()),
            ("requiredActions", self.required_actions.clone()),
            ("poolIDs", self.pools.join(",")),
        ]
    }
}

impl GroupRecord {
    pub fn audit_fields(&self) -> Fields {
        vec![
            ("name", self.name.clone()),
            ("displayName", o(&self.display_name)),
            ("parentID", o(&self.parent_krn)),
            ("path", self.path.clone()),
            ("metadata", self.metadata.clone()),
            ("poolIDs", self.pools.join(",")),
        ]
    }
}

impl ResourceRecord {
    pub fn audit_fields(&self) -> Fields {
        vec![
            ("service", self.service.clone()),
            ("resourceType", self.resource_type.clone()),
            ("name", self.name.clone()),
            ("path", self.path.clone()),
            ("displayName", o(&self.display_name)),
            ("description", o(&self.description)),
            ("enabled", self.enabled.to_string()),
            ("metadata", self.metadata.clone()),
            ("poolIDs", self.pools.join(",")),
        ]
    }
}

impl PoolRecord {
    pub fn audit_fields(&self) -> Fields {
        vec![
            ("name", self.name.clone()),
            ("displayName", o(&self.display_name)),
            ("description", o(&self.description)),
        ]
    }
}

/// The version of an entity about to be deleted (`NotFound` when there is none).
fn version_tx(tx: &mut dyn Tx, table: &str, tenant: &str, krn: &str) -> Result<i64, StorageError> {
    one(
        tx.query(
            &format!("SELECT version FROM {table} WHERE tenant = $1 AND krn = $2"),
            &[Val::from(tenant), Val::from(krn)],
        )?,
        |r| r.i64(0),
    )
}

// ---------------------------------------------------------------- records and filters

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRecord {
    pub tenant: String,
    pub krn: String,
    pub service: String,
    pub resource_type: String,
    pub name: String,
    pub path: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub enabled: bool,
    pub metadata: String,
    pub version: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// Pools (KRNs) the entity is a member of: read with the record, written by its insert
    /// and by an update that names them.
    pub pools: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ResourcePatch {
    pub display_name: Option<Option<String>>,
    pub description: Option<Option<String>>,
    pub enabled: Option<bool>,
    pub metadata: Option<String>,
    /// The pools the resource is a member of, all of them.
    pub pools: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default)]
pub struct ResourceFilter {
    pub tenant: String,
    /// Exactly this entity (its canonical KRN).
    pub krn: Option<String>,
    pub service: Option<String>,
    pub resource_type: Option<String>,
    pub path_prefix: Option<String>,
    pub display_name: Option<String>,
    pub enabled: Option<bool>,
    pub sort: String,
    pub order: SortOrder,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRecord {
    pub tenant: String,
    pub krn: String,
    pub name: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub version: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
}

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

// ---------------------------------------------------------------- traits

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

pub trait AttachmentStore {
    /// Attach policies to a target (user, group, role or pool); already-attached is fine.
    fn attach(&self, tenant: &str, target: &str, policies: &[String]) -> Result<(), StorageError>;
    fn detach(&self, tenant: &str, target: &str, policies: &[String]) -> Result<(), StorageError>;
    fn policies_of(
        &self,
        tenant: &str,
        target: &str,
        page: Page,
    ) -> Result<(Vec<PolicyRecord>, u64), StorageError>;
    /// Targets a policy is attached to.
    fn targets_of(&self, tenant: &str, policy: &str) -> Result<Vec<String>, StorageError>;
}

pub trait ResourceStore {
    /// Insert the resource and, when given, its resource-based policy, in one transaction.
    /// Insert a resource, its resource-based policy and its memberships of `pools`, all or
    /// nothing (`NotFound` when a pool does not exist).
    fn insert_resource(
        &self,
        r: &ResourceRecord,
        policy: Option<&super::NewPolicy>,
        pools: &[String],
    ) -> Result<ResourceRecord, StorageError>;
    fn get_resource(&self, tenant: &str, krn: &str) -> Result<ResourceRecord, StorageError>;
    fn list_resources(
        &self,
        f: &ResourceFilter,
        page: Page,
    ) -> Result<(Vec<ResourceRecord>, u64), StorageError>;
    fn update_resource(
        &self,
        tenant: &str,
        krn: &str,
        patch: &ResourcePatch,
        expected_version: Option<i64>,
        now_ms: i64,
    ) -> Result<ResourceRecord, StorageError>;
    /// Delete all or none, with their resource-based policies.
    fn delete_resources(&self, tenant: &str, krns: &[String]) -> Result<(), StorageError>;
    /// The resource-based policy bound to a resource.
    fn resource_policy(&self, tenant: &str, resource: &str) -> Result<PolicyRecord, StorageError>;
}

pub trait PoolStore {
    fn insert_pool(&self, p: &PoolRecord, resources: &[String])
    -> Result<PoolRecord, StorageError>;
    fn get_pool(&self, tenant: &str, krn: &str) -> Result<PoolRecord, StorageError>;
    fn list_pools(
        &self,
        tenant: &str,
        name_contains: Option<&str>,
        resource: Option<&str>,
        krn: Option<&str>,
        page: Page,
    ) -> Result<(Vec<PoolRecord>, u64), StorageError>;
    fn update_pool(
        &self,
        tenant: &str,
        krn: &str,
        display_name: Option<Option<String>>,
        description: Option<Option<String>>,
        expected_version: Option<i64>,
        now_ms: i64,
    ) -> Result<PoolRecord, StorageError>;
    fn delete_pool(&self, tenant: &str, krn: &str) -> Result<(), StorageError>;
    fn add_pool_members(
        &self,
        tenant: &str,
        pool: &str,
        resources: &[String],
    ) -> Result<(), StorageError>;
    fn remove_pool_members(
        &self,
        tenant: &str,
        pool: &str,
        resources: &[String],
    ) -> Result<(), StorageError>;
    fn pool_members(&self, tenant: &str, pool: &str) -> Result<Vec<String>, StorageError>;
    /// The users and groups that are members of a pool.
    fn pool_principals(&self, tenant: &str, pool: &str) -> Result<Vec<String>, StorageError>;
    /// Pools of the user or group `principal`.
    fn pools_of_principal(
        &self,
        tenant: &str,
        principal: &str,
    ) -> Result<Vec<String>, StorageError>;
    /// Per policy of `policies`: the pools it is attached to.
    fn pools_of_policies(
        &self,
        tenant: &str,
        policies: &[String],
    ) -> Result<std::collections::HashMap<String, Vec<String>>, StorageError>;
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

// ---------------------------------------------------------------- helpers

fn one<T>(rows: Vec<Row>, f: impl Fn(&Row) -> Result<T, StorageError>) -> Result<T, StorageError> {
    rows.first().map(f).ok_or(StorageError::NotFound)?
}

fn count(tx: &mut dyn Tx, sql: &str, params: &[Val]) -> Result<u64, StorageError> {
    let rows = tx.query(sql, params)?;
    let n = rows.first().map(|r| r.i64(0)).transpose()?.unwrap_or(0);
    Ok(u64::try_from(n).unwrap_or(0))
}

fn exists(tx: &mut dyn Tx, table: &str, tenant: &str, krn: &str) -> Result<bool, StorageError> {
    Ok(!tx
        .query(
            &format!("SELECT 1 FROM {table} WHERE tenant = $1 AND krn = $2"),
            &[Val::from(tenant), Val::from(krn)],
        )?
        .is_empty())
}

fn require(tx: &mut dyn Tx, table: &str, tenant: &str, krn: &str) -> Result<(), StorageError> {
    if exists(tx, table, tenant, krn)? {
        Ok(())
    } else {
        Err(StorageError::NotFound)
    }
}

/// A WHERE clause under construction, with its parameters.
struct Where {
    sql: String,
    params: Vec<Val>,
}

impl Where {
    fn tenant(tenant: &str) -> Where {
        Where {
            sql: "tenant = $1".into(),
            params: vec![Val::from(tenant)],
        }
    }

    fn eq(&mut self, column: &str, v: Option<&String>) {
        if let Some(v) = v {
            self.params.push(Val::from(v));
            self.sql
                .push_str(&format!(" AND {column} = ${}", self.params.len()));
        }
    }

    fn contains(&mut self, column: &str, v: Option<&String>) {
        if let Some(v) = v {
            self.params
                .push(Val::from(super::policies::like_contains(v)));
            self.sql.push_str(&format!(
                " AND {column} LIKE ${} ESCAPE '\\'",
                self.params.len()
            ));
        }
    }

    fn prefix(&mut self, column: &str, v: Option<&String>) {
        if let Some(v) = v {
            let pattern = super::policies::like_contains(v);
            // like_contains gives %v%: keep the trailing % only.
            self.params
                .push(Val::from(pattern.trim_start_matches('%').to_string()));
            self.sql.push_str(&format!(
                " AND {column} LIKE ${} ESCAPE '\\'",
                self.params.len()
            ));
        }
    }

    /// `SELECT cols FROM table WHERE ... ORDER BY ... LIMIT/OFFSET` and the total count.
    fn page(
        &self,
        tx: &mut dyn Tx,
        table: &str,
        cols: &str,
        order_by: &str,
        order: SortOrder,
        page: Page,
    ) -> Result<(Vec<Row>, u64), StorageError> {
        let total = count(
            tx,
            &format!("SELECT COUNT(*) FROM {table} WHERE {}", self.sql),
            &self.params,
        )?;
        let dir = match order {
            SortOrder::Asc => "ASC",
            SortOrder::Desc => "DESC",
        };
        let mut p = self.params.clone();
        p.push(Val::I64(i64::from(page.size)));
        p.push(Val::I64(page.offset()));
        let rows = tx.query(
            &format!(
                "SELECT {cols} FROM {table} WHERE {} ORDER BY {order_by} {dir}, krn {dir} LIMIT ${} OFFSET ${}",
                self.sql,
                p.len() - 1,
                p.len()
            ),
            &p,
        )?;
        Ok((rows, total))
    }
}

/// A column name from a whitelist (never from input directly).
fn sort_column<'a>(requested: &str, allowed: &[(&str, &'a str)], default: &'a str) -> &'a str {
    allowed
        .iter()
        .find(|(k, _)| *k == requested)
        .map_or(default, |(_, c)| c)
}

// ---------------------------------------------------------------- users

const USER_COLS: &str = "tenant, krn, username, path, email, first_name, last_name, enabled, \
                         auth_id, password_hash, metadata, required_actions, version, created_ms, updated_ms";

fn user(r: &Row) -> Result<UserRecord, StorageError> {
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

fn get_user_tx(tx: &mut dyn Tx, tenant: &str, krn: &str) -> Result<UserRecord, StorageError> {
    let mut u = one(
        tx.query(
            &format!("SELECT {USER_COLS} FROM users WHERE tenant = $1 AND krn = $2"),
            &[Val::from(tenant), Val::from(krn)],
        )?,
        user,
    )?;
    u.pools = principal_pools_tx(tx, tenant, krn)?;
    Ok(u)
}

// ---------------------------------------------------------------- pool memberships

/// Pools of one user or group, sorted.
fn principal_pools_tx(
    tx: &mut dyn Tx,
    tenant: &str,
    principal: &str,
) -> Result<Vec<String>, StorageError> {
    let rows = tx.query(
        "SELECT pool_krn FROM pool_principals WHERE tenant = $1 AND principal_krn = $2 \
         ORDER BY pool_krn",
        &[Val::from(tenant), Val::from(principal)],
    )?;
    rows.iter().map(|r| r.string(0)).collect()
}

/// Make `pools` (each must exist: `NotFound` otherwise) the pools of a user or group.
fn set_principal_pools_tx(
    tx: &mut dyn Tx,
    tenant: &str,
    principal: &str,
    pools: &[String],
) -> Result<(), StorageError> {
    tx.execute(
        "DELETE FROM pool_principals WHERE tenant = $1 AND principal_krn = $2",
        &[Val::from(tenant), Val::from(principal)],
    )?;
    for p in pools {
        require(tx, "pools", tenant, p)?;
        tx.execute(
            "INSERT INTO pool_principals (tenant, pool_krn, principal_krn) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
            &[Val::from(tenant), Val::from(p), Val::from(principal)],
        )?;
    }
    Ok(())
}

/// Per member of `members` (a page of users, groups or resources): its pools, read in one query
/// from `table` (`pool_principals` keyed by `principal_krn`, `pool_members` by `resource_krn`).
fn pools_of_members_tx(
    tx: &mut dyn Tx,
    tenant: &str,
    members: &[&str],
    table: &str,
    column: &str,
) -> Result<std::collections::HashMap<String, Vec<String>>, StorageError> {
    let mut out: std::collections::HashMap<String, Vec<String>> = Default::default();
    for chunk in members.chunks(500) {
        let mut params = vec![Val::from(tenant)];
        let marks: Vec<String> = chunk
            .iter()
            .map(|m| {
                params.push(Val::from(*m));
                format!("${}", params.len())
            })
            .collect();
        let rows = tx.query(
            &format!(
                "SELECT {column}, pool_krn FROM {table} WHERE tenant = $1 AND {column} IN ({}) \
                 ORDER BY pool_krn",
                marks.join(", ")
            ),
            &params,
        )?;
        for r in &rows {
            out.entry(r.string(0)?).or_default().push(r.string(1)?);
        }
    }
    Ok(out)
}

/// Fill the `pools` of a page of records.
fn fill_pools<T>(
    tx: &mut dyn Tx,
    tenant: &str,
    items: &mut [T],
    table: &str,
    column: &str,
    krn: impl Fn(&T) -> &str,
    pools: impl Fn(&mut T) -> &mut Vec<String>,
) -> Result<(), StorageError> {
    if items.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = items.iter().map(&krn).collect();
    let mut found = pools_of_members_tx(tx, tenant, &keys, table, column)?;
    for it in items.iter_mut() {
        let k = krn(it).to_string();
        if let Some(v) = found.remove(&k) {
            *pools(it) = v;
        }
    }
    Ok(())
}

fn add_members_tx(
    tx: &mut dyn Tx,
    tenant: &str,
    group: &str,
    users: &[String],
) -> Result<(), StorageError> {
    for u in users {
        tx.execute(
            "INSERT INTO group_members (tenant, group_krn, user_krn) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
            &[Val::from(tenant), Val::from(group), Val::from(u)],
        )?;
    }
    Ok(())
}

fn attach_tx(
    tx: &mut dyn Tx,
    tenant: &str,
    target: &str,
    policies: &[String],
) -> Result<(), StorageError> {
    for p in policies {
        require(tx, "policies", tenant, p)?;
        tx.execute(
            "INSERT INTO policy_attachments (tenant, policy_krn, target_krn) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
            &[Val::from(tenant), Val::from(p), Val::from(target)],
        )?;
    }
    Ok(())
}

impl UserStore for Database {
    fn insert_user(
        &self,
        u: &UserRecord,
        groups: &[String],
        policies: &[String],
    ) -> Result<UserRecord, StorageError> {
        self.tx(|tx| {
            if exists(tx, "users", &u.tenant, &u.krn)? {
                return Err(StorageError::Conflict("user exists".into()));
            }
            tx.execute(
                &format!(
                    "INSERT INTO users ({USER_COLS}) VALUES \
                     ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 1, $13, $13)"
                ),
                &[
                    Val::from(&u.tenant),
                    Val::from(&u.krn),
                    Val::from(&u.username),
                    Val::from(&u.path),
                    Val::from(u.email.clone()),
                    Val::from(u.first_name.clone()),
                    Val::from(u.last_name.clone()),
                    Val::Bool(u.enabled),
                    Val::from(u.auth_id.clone()),
                    Val::from(u.password_hash.clone()),
                    Val::from(&u.metadata),
                    Val::from(&u.required_actions),
                    Val::I64(u.created_ms),
                ],
            )?;
            for g in groups {
                require(tx, "user_groups", &u.tenant, g)?;
                add_members_tx(tx, &u.tenant, g, std::slice::from_ref(&u.krn))?;
            }
            attach_tx(tx, &u.tenant, &u.krn, policies)?;
            set_principal_pools_tx(tx, &u.tenant, &u.krn, &u.pools)?;
            bump_revision(tx, &u.tenant)?;
            let out = get_user_tx(tx, &u.tenant, &u.krn)?;
            tx.record(
                Change::new(&u.tenant, "iam:user:create", &u.krn)
                    .versions(None, Some(out.version))
                    .fields(set(&out.audit_fields()))
                    .detail(json!({ "groupIDs": groups, "policyIDs": policies })),
            );
            Ok(out)
        })
    }

    fn get_user(&self, tenant: &str, krn: &str) -> Result<UserRecord, StorageError> {
        self.tx(|tx| get_user_tx(tx, tenant, krn))
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
                user,
            )
        })
    }

    fn list_users(
        &self,
        f: &UserFilter,
        page: Page,
    ) -> Result<(Vec<UserRecord>, u64), StorageError> {
        let mut w = Where::tenant(&f.tenant);
        w.eq("krn", f.krn.as_ref());
        w.eq("username", f.username.as_ref());
        w.eq("email", f.email.as_ref());
        w.eq("first_name", f.first_name.as_ref());
        w.eq("last_name", f.last_name.as_ref());
        w.prefix("path", f.path_prefix.as_ref());
        if let Some(s) = &f.search {
            w.params.push(Val::from(super::policies::like_contains(s)));
            let n = w.params.len();
            w.sql.push_str(&format!(
                " AND (username LIKE ${n} ESCAPE '\\' OR email LIKE ${n} ESCAPE '\\' \
                 OR first_name LIKE ${n} ESCAPE '\\' OR last_name LIKE ${n} ESCAPE '\\')"
            ));
        }
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
        self.tx(|tx| {
            let (rows, total) = w.page(tx, "users", USER_COLS, col, f.order, page)?;
            let mut items: Vec<UserRecord> = rows.iter().map(user).collect::<Result<_, _>>()?;
            fill_pools(
                tx,
                &f.tenant,
                &mut items,
                "pool_principals",
                "principal_krn",
                |u| u.krn.as_str(),
                |u| &mut u.pools,
            )?;
            Ok((items, total))
        })
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
            lock_row(tx, "users", tenant, krn)?;
            let mut cur = get_user_tx(tx, tenant, krn)?;
            if expected_version.is_some_and(|v| v != cur.version) {
                return Err(StorageError::Stale);
            }
            let before = cur.audit_fields();
            if let Some(v) = &p.email {
                cur.email.clone_from(v);
            }
            if let Some(v) = &p.first_name {
                cur.first_name.clone_from(v);
            }
            if let Some(v) = &p.last_name {
                cur.last_name.clone_from(v);
            }
            if let Some(v) = p.enabled {
                cur.enabled = v;
            }
            if let Some(v) = &p.auth_id {
                cur.auth_id.clone_from(v);
            }
            if let Some(v) = &p.metadata {
                cur.metadata.clone_from(v);
            }
            if let Some(v) = &p.required_actions {
                cur.required_actions.clone_from(v);
            }
            let n = tx.execute(
                "UPDATE users SET email = $1, first_name = $2, last_name = $3, enabled = $4, \
                 auth_id = $5, metadata = $6, required_actions = $7, version = version + 1, \
                 updated_ms = $8 WHERE tenant = $9 AND krn = $10 AND version = $11",
                &[
                    Val::from(cur.email.clone()),
                    Val::from(cur.first_name.clone()),
                    Val::from(cur.last_name.clone()),
                    Val::Bool(cur.enabled),
                    Val::from(cur.auth_id.clone()),
                    Val::from(&cur.metadata),
                    Val::from(&cur.required_actions),
                    Val::I64(now_ms),
                    Val::from(tenant),
                    Val::from(krn),
                    Val::I64(cur.version),
                ],
            )?;
            if n == 0 {
                return Err(StorageError::Stale);
            }
            if let Some(pools) = &p.pools {
                set_principal_pools_tx(tx, tenant, krn, pools)?;
            }
            bump_revision(tx, tenant)?;
            let out = get_user_tx(tx, tenant, krn)?;
            tx.record(
                Change::new(tenant, "iam:user:update", krn)
                    .versions(Some(cur.version), Some(out.version))
                    .fields(changed(&before, &out.audit_fields())),
            );
            Ok(out)
        })
    }

    fn delete_users(&self, tenant: &str, krns: &[String]) -> Result<(), StorageError> {
        self.tx(|tx| {
            for k in krns {
                let v = version_tx(tx, "users", tenant, k)?;
                tx.record(Change::new(tenant, "iam:user:delete", k).versions(Some(v), None));
                tx.execute(
                    "DELETE FROM policy_attachments WHERE tenant = $1 AND target_krn = $2",
                    &[Val::from(tenant), Val::from(k)],
                )?;
                tx.execute(
                    "DELETE FROM group_members WHERE tenant = $1 AND user_krn = $2",
                    &[Val::from(tenant), Val::from(k)],
                )?;
                tx.execute(
                    "DELETE FROM pool_principals WHERE tenant = $1 AND principal_krn = $2",
                    &[Val::from(tenant), Val::from(k)],
                )?;
                tx.execute(
                    "DELETE FROM users WHERE tenant = $1 AND krn = $2",
                    &[Val::from(tenant), Val::from(k)],
                )?;
            }
            bump_revision(tx, tenant)?;
            Ok(())
        })
    }
}

// ---------------------------------------------------------------- groups

const GROUP_COLS: &str =
    "tenant, krn, name, display_name, parent_krn, path, metadata, version, created_ms, updated_ms";

fn group(r: &Row) -> Result<GroupRecord, StorageError> {
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

fn get_group_tx(tx: &mut dyn Tx, tenant: &str, krn: &str) -> Result<GroupRecord, StorageError> {
    let mut g = one(
        tx.query(
            &format!("SELECT {GROUP_COLS} FROM user_groups WHERE tenant = $1 AND krn = $2"),
            &[Val::from(tenant), Val::from(krn)],
        )?,
        group,
    )?;
    g.pools = principal_pools_tx(tx, tenant, krn)?;
    Ok(g)
}

/// Users by KRN within one tenant: `NotFound` when one is missing.
fn require_users(tx: &mut dyn Tx, tenant: &str, users: &[String]) -> Result<(), StorageError> {
    for u in users {
        require(tx, "users", tenant, u)?;
    }
    Ok(())
}

impl GroupStore for Database {
    fn insert_group(&self, g: &GroupRecord) -> Result<GroupRecord, StorageError> {
        self.tx(|tx| {
            if exists(tx, "user_groups", &g.tenant, &g.krn)? {
                return Err(StorageError::Conflict("group exists".into()));
            }
            if let Some(parent) = &g.parent_krn {
                require(tx, "user_groups", &g.tenant, parent)?;
            }
            tx.execute(
                &format!(
                    "INSERT INTO user_groups ({GROUP_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $8)"
                ),
                &[
                    Val::from(&g.tenant),
                    Val::from(&g.krn),
                    Val::from(&g.name),
                    Val::from(g.display_name.clone()),
                    Val::from(g.parent_krn.clone()),
                    Val::from(&g.path),
                    Val::from(&g.metadata),
                    Val::I64(g.created_ms),
                ],
            )?;
            set_principal_pools_tx(tx, &g.tenant, &g.krn, &g.pools)?;
            bump_revision(tx, &g.tenant)?;
            let out = get_group_tx(tx, &g.tenant, &g.krn)?;
            tx.record(
                Change::new(&g.tenant, "iam:group:create", &g.krn)
                    .versions(None, Some(out.version))
                    .fields(set(&out.audit_fields())),
            );
            Ok(out)
        })
    }

    fn get_group(&self, tenant: &str, krn: &str) -> Result<GroupRecord, StorageError> {
        self.tx(|tx| get_group_tx(tx, tenant, krn))
    }

    fn list_groups(
        &self,
        f: &GroupFilter,
        page: Page,
    ) -> Result<(Vec<GroupRecord>, u64), StorageError> {
        let mut w = Where::tenant(&f.tenant);
        w.eq("krn", f.krn.as_ref());
        w.eq("name", f.name.as_ref());
        w.contains("display_name", f.display_name.as_ref());
        w.prefix("path", f.path_prefix.as_ref());
        match &f.parent {
            Some(Some(p)) => w.eq("parent_krn", Some(p)),
            Some(None) => w.sql.push_str(" AND parent_krn IS NULL"),
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
        self.tx(|tx| {
            let (rows, total) = w.page(tx, "user_groups", GROUP_COLS, col, f.order, page)?;
            let mut items: Vec<GroupRecord> = rows.iter().map(group).collect::<Result<_, _>>()?;
            fill_pools(
                tx,
                &f.tenant,
                &mut items,
                "pool_principals",
                "principal_krn",
                |g| g.krn.as_str(),
                |g| &mut g.pools,
            )?;
            Ok((items, total))
        })
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
            lock_row(tx, "user_groups", tenant, krn)?;
            let cur = get_group_tx(tx, tenant, krn)?;
            if expected_version.is_some_and(|v| v != cur.version) {
                return Err(StorageError::Stale);
            }
            let (before, version) = (cur.audit_fields(), cur.version);
            let n = tx.execute(
                "UPDATE user_groups SET display_name = $1, metadata = $2, version = version + 1, \
                 updated_ms = $3 WHERE tenant = $4 AND krn = $5 AND version = $6",
                &[
                    Val::from(display_name.unwrap_or(cur.display_name)),
                    Val::from(metadata.unwrap_or(cur.metadata)),
                    Val::I64(now_ms),
                    Val::from(tenant),
                    Val::from(krn),
                    Val::I64(cur.version),
                ],
            )?;
            if n == 0 {
                return Err(StorageError::Stale);
            }
            if let Some(pools) = &pools {
                set_principal_pools_tx(tx, tenant, krn, pools)?;
            }
            bump_revision(tx, tenant)?;
            let out = get_group_tx(tx, tenant, krn)?;
            tx.record(
                Change::new(tenant, "iam:group:update", krn)
                    .versions(Some(version), Some(out.version))
                    .fields(changed(&before, &out.audit_fields())),
            );
            Ok(out)
        })
    }

    fn delete_groups(&self, tenant: &str, krns: &[String]) -> Result<(), StorageError> {
        self.tx(|tx| {
            for k in krns {
                let v = version_tx(tx, "user_groups", tenant, k)?;
                tx.record(Change::new(tenant, "iam:group:delete", k).versions(Some(v), None));
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
                tx.execute(
                    "DELETE FROM policy_attachments WHERE tenant = $1 AND target_krn = $2",
                    &[Val::from(tenant), Val::from(k)],
                )?;
                tx.execute(
                    "DELETE FROM group_members WHERE tenant = $1 AND group_krn = $2",
                    &[Val::from(tenant), Val::from(k)],
                )?;
                tx.execute(
                    "DELETE FROM pool_principals WHERE tenant = $1 AND principal_krn = $2",
                    &[Val::from(tenant), Val::from(k)],
                )?;
                tx.execute(
                    "DELETE FROM user_groups WHERE tenant = $1 AND krn = $2",
                    &[Val::from(tenant), Val::from(k)],
                )?;
            }
            bump_revision(tx, tenant)?;
            Ok(())
        })
    }

    fn add_members(&self, tenant: &str, group: &str, users: &[String]) -> Result<(), StorageError> {
        self.tx(|tx| {
            require(tx, "user_groups", tenant, group)?;
            require_users(tx, tenant, users)?;
            add_members_tx(tx, tenant, group, users)?;
            bump_revision(tx, tenant)?;
            tx.record(
                Change::new(tenant, "iam:group:user:add", group)
                    .fields(vec!["members".into()])
                    .detail(json!({ "userIDs": users })),
            );
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
            require_users(tx, tenant, users)?;
            for u in users {
                tx.execute(
                    "DELETE FROM group_members WHERE tenant = $1 AND group_krn = $2 AND user_krn = $3",
                    &[Val::from(tenant), Val::from(group), Val::from(u)],
                )?;
            }
            bump_revision(tx, tenant)?;
            tx.record(
                Change::new(tenant, "iam:group:user:remove", group)
                    .fields(vec!["members".into()])
                    .detail(json!({ "userIDs": users })),
            );
            Ok(())
        })
    }

    fn join_groups(&self, tenant: &str, user: &str, groups: &[String]) -> Result<(), StorageError> {
        self.tx(|tx| {
            require(tx, "users", tenant, user)?;
            for g in groups {
                require(tx, "user_groups", tenant, g)?;
                add_members_tx(tx, tenant, g, &[user.to_string()])?;
            }
            bump_revision(tx, tenant)?;
            tx.record(
                Change::new(tenant, "iam:group:user:add", user)
                    .fields(vec!["groups".into()])
                    .detail(json!({ "groupIDs": groups })),
            );
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
            w.params.push(Val::from(group));
            w.sql.push_str(
                " AND krn IN (SELECT user_krn FROM group_members WHERE tenant = $1 AND group_krn = $2)",
            );
            let (rows, total) =
                w.page(tx, "users", USER_COLS, "username", SortOrder::Asc, page)?;
            Ok((rows.iter().map(user).collect::<Result<_, _>>()?, total))
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
            w.params.push(Val::from(user_krn));
            w.sql.push_str(
                " AND krn IN (SELECT group_krn FROM group_members WHERE tenant = $1 AND user_krn = $2)",
            );
            let (rows, total) =
                w.page(tx, "user_groups", GROUP_COLS, "path", SortOrder::Asc, page)?;
            Ok((rows.iter().map(group).collect::<Result<_, _>>()?, total))
        })
    }
}

// ---------------------------------------------------------------- attachments

/// A policy attachment's target (a user, group or pool) must exist: `NotFound` otherwise.
/// `user`, `group` or `pool` of `krn:iam:<tenant>::<type>/...`.
fn kind_of(target: &str) -> &str {
    target
        .split("::")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("")
}

fn require_target(tx: &mut dyn Tx, tenant: &str, target: &str) -> Result<(), StorageError> {
    let table = match kind_of(target) {
        "user" => "users",
        "group" => "user_groups",
        "pool" => "pools",
        _ => return Err(StorageError::NotFound),
    };
    require(tx, table, tenant, target)
}

impl AttachmentStore for Database {
    fn attach(&self, tenant: &str, target: &str, policies: &[String]) -> Result<(), StorageError> {
        self.tx(|tx| {
            require_target(tx, tenant, target)?;
            attach_tx(tx, tenant, target, policies)?;
            bump_revision(tx, tenant)?;
            tx.record(
                Change::new(
                    tenant,
                    &format!("iam:policy:{}:attach", kind_of(target)),
                    target,
                )
                .fields(vec!["policies".into()])
                .detail(json!({ "policyIDs": policies })),
            );
            Ok(())
        })
    }

    fn detach(&self, tenant: &str, target: &str, policies: &[String]) -> Result<(), StorageError> {
        self.tx(|tx| {
            require_target(tx, tenant, target)?;
            for p in policies {
                require(tx, "policies", tenant, p)?;
                tx.execute(
                    "DELETE FROM policy_attachments WHERE tenant = $1 AND policy_krn = $2 AND target_krn = $3",
                    &[Val::from(tenant), Val::from(p), Val::from(target)],
                )?;
            }
            bump_revision(tx, tenant)?;
            tx.record(
                Change::new(tenant, &format!("iam:policy:{}:detach", kind_of(target)), target)
                    .fields(vec!["policies".into()])
                    .detail(json!({ "policyIDs": policies })),
            );
            Ok(())
        })
    }

    fn policies_of(
        &self,
        tenant: &str,
        target: &str,
        page: Page,
    ) -> Result<(Vec<PolicyRecord>, u64), StorageError> {
        self.tx(|tx| {
            let mut w = Where::tenant(tenant);
            w.params.push(Val::from(target));
            w.sql.push_str(
                " AND krn IN (SELECT policy_krn FROM policy_attachments WHERE tenant = $1 AND target_krn = $2)",
            );
            let (rows, total) = w.page(
                tx,
                "policies",
                super::policies::COLUMNS,
                "name",
                SortOrder::Asc,
                page,
            )?;
            Ok((
                rows.iter()
                    .map(super::policies::record)
                    .collect::<Result<_, _>>()?,
                total,
            ))
        })
    }

    fn targets_of(&self, tenant: &str, policy: &str) -> Result<Vec<String>, StorageError> {
        self.tx(|tx| {
            tx.query(
                "SELECT target_krn FROM policy_attachments WHERE tenant = $1 AND policy_krn = $2 \
                 ORDER BY target_krn",
                &[Val::from(tenant), Val::from(policy)],
            )?
            .iter()
            .map(|r| r.string(0))
            .collect()
        })
    }
}

// ---------------------------------------------------------------- resources

const RESOURCE_COLS: &str = "tenant, krn, service, resource_type, name, path, display_name, \
                             description, enabled, metadata, version, created_ms, updated_ms";

fn resource(r: &Row) -> Result<ResourceRecord, StorageError> {
    Ok(ResourceRecord {
        tenant: r.string(0)?,
        krn: r.string(1)?,
        service: r.string(2)?,
        resource_type: r.string(3)?,
        name: r.string(4)?,
        path: r.string(5)?,
        display_name: r.opt_string(6)?,
        description: r.opt_string(7)?,
        enabled: r.bool(8)?,
        metadata: r.string(9)?,
        version: r.i64(10)?,
        created_ms: r.i64(11)?,
        updated_ms: r.i64(12)?,
        pools: Vec::new(),
    })
}

fn get_resource_tx(
    tx: &mut dyn Tx,
    tenant: &str,
    krn: &str,
) -> Result<ResourceRecord, StorageError> {
    let mut r = one(
        tx.query(
            &format!("SELECT {RESOURCE_COLS} FROM resources WHERE tenant = $1 AND krn = $2"),
            &[Val::from(tenant), Val::from(krn)],
        )?,
        resource,
    )?;
    r.pools = tx
        .query(
            "SELECT pool_krn FROM pool_members WHERE tenant = $1 AND resource_krn = $2 \
             ORDER BY pool_krn",
            &[Val::from(tenant), Val::from(krn)],
        )?
        .iter()
        .map(|row| row.string(0))
        .collect::<Result<_, _>>()?;
    Ok(r)
}

impl ResourceStore for Database {
    fn insert_resource(
        &self,
        r: &ResourceRecord,
        policy: Option<&super::NewPolicy>,
        pools: &[String],
    ) -> Result<ResourceRecord, StorageError> {
        self.tx(|tx| {
            if exists(tx, "resources", &r.tenant, &r.krn)? {
                return Err(StorageError::Conflict("resource exists".into()));
            }
            tx.execute(
                &format!(
                    "INSERT INTO resources ({RESOURCE_COLS}) VALUES \
                     ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 1, $11, $11)"
                ),
                &[
                    Val::from(&r.tenant),
                    Val::from(&r.krn),
                    Val::from(&r.service),
                    Val::from(&r.resource_type),
                    Val::from(&r.name),
                    Val::from(&r.path),
                    Val::from(r.display_name.clone()),
                    Val::from(r.description.clone()),
                    Val::Bool(r.enabled),
                    Val::from(&r.metadata),
                    Val::I64(r.created_ms),
                ],
            )?;
            if let Some(p) = policy {
                super::policies::insert_tx(tx, p)?;
            }
            for pool in pools {
                require(tx, "pools", &r.tenant, pool)?;
                add_pool_members_tx(tx, &r.tenant, pool, std::slice::from_ref(&r.krn))?;
            }
            bump_revision(tx, &r.tenant)?;
            let out = get_resource_tx(tx, &r.tenant, &r.krn)?;
            tx.record(
                Change::new(&r.tenant, "iam:resource:create", &r.krn)
                    .versions(None, Some(out.version))
                    .fields(set(&out.audit_fields()))
                    .detail(json!({ "policy": policy.map(|p| p.krn.clone()) })),
            );
            Ok(out)
        })
    }

    fn get_resource(&self, tenant: &str, krn: &str) -> Result<ResourceRecord, StorageError> {
        self.tx(|tx| get_resource_tx(tx, tenant, krn))
    }

    fn list_resources(
        &self,
        f: &ResourceFilter,
        page: Page,
    ) -> Result<(Vec<ResourceRecord>, u64), StorageError> {
        let mut w = Where::tenant(&f.tenant);
        w.eq("krn", f.krn.as_ref());
        w.eq("service", f.service.as_ref());
        w.eq("resource_type", f.resource_type.as_ref());
        w.prefix("path", f.path_prefix.as_ref());
        w.contains("display_name", f.display_name.as_ref());
        if let Some(e) = f.enabled {
            w.params.push(Val::Bool(e));
            w.sql
                .push_str(&format!(" AND enabled = ${}", w.params.len()));
        }
        let col = sort_column(
            &f.sort,
            &[
                ("name", "name"),
                ("path", "path"),
                ("resourceType", "resource_type"),
                ("created", "created_ms"),
                ("updated", "updated_ms"),
            ],
            "krn",
        );
        self.tx(|tx| {
            let (rows, total) = w.page(tx, "resources", RESOURCE_COLS, col, f.order, page)?;
            let mut items: Vec<ResourceRecord> =
                rows.iter().map(resource).collect::<Result<_, _>>()?;
            fill_pools(
                tx,
                &f.tenant,
                &mut items,
                "pool_members",
                "resource_krn",
                |r| r.krn.as_str(),
                |r| &mut r.pools,
            )?;
            Ok((items, total))
        })
    }

    fn update_resource(
        &self,
        tenant: &str,
        krn: &str,
        p: &ResourcePatch,
        expected_version: Option<i64>,
        now_ms: i64,
    ) -> Result<ResourceRecord, StorageError> {
        self.tx(|tx| {
            lock_row(tx, "resources", tenant, krn)?;
            let mut cur = get_resource_tx(tx, tenant, krn)?;
            if expected_version.is_some_and(|v| v != cur.version) {
                return Err(StorageError::Stale);
            }
            let before = cur.audit_fields();
            if let Some(v) = &p.display_name {
                cur.display_name.clone_from(v);
            }
            if let Some(v) = &p.description {
                cur.description.clone_from(v);
            }
            if let Some(v) = p.enabled {
                cur.enabled = v;
            }
            if let Some(v) = &p.metadata {
                cur.metadata.clone_from(v);
            }
            let n = tx.execute(
                "UPDATE resources SET display_name = $1, description = $2, enabled = $3, \
                 metadata = $4, version = version + 1, updated_ms = $5 \
                 WHERE tenant = $6 AND krn = $7 AND version = $8",
                &[
                    Val::from(cur.display_name.clone()),
                    Val::from(cur.description.clone()),
                    Val::Bool(cur.enabled),
                    Val::from(&cur.metadata),
                    Val::I64(now_ms),
                    Val::from(tenant),
                    Val::from(krn),
                    Val::I64(cur.version),
                ],
            )?;
            if n == 0 {
                return Err(StorageError::Stale);
            }
            if let Some(pools) = &p.pools {
                tx.execute(
                    "DELETE FROM pool_members WHERE tenant = $1 AND resource_krn = $2",
                    &[Val::from(tenant), Val::from(krn)],
                )?;
                for pool in pools {
                    require(tx, "pools", tenant, pool)?;
                    add_pool_members_tx(tx, tenant, pool, &[krn.to_string()])?;
                }
            }
            bump_revision(tx, tenant)?;
            let out = get_resource_tx(tx, tenant, krn)?;
            tx.record(
                Change::new(tenant, "iam:resource:update", krn)
                    .versions(Some(cur.version), Some(out.version))
                    .fields(changed(&before, &out.audit_fields())),
            );
            Ok(out)
        })
    }

    fn delete_resources(&self, tenant: &str, krns: &[String]) -> Result<(), StorageError> {
        self.tx(|tx| {
            for k in krns {
                let v = version_tx(tx, "resources", tenant, k)?;
                tx.record(Change::new(tenant, "iam:resource:delete", k).versions(Some(v), None));
                tx.execute(
                    "DELETE FROM policies WHERE tenant = $1 AND resource_krn = $2",
                    &[Val::from(tenant), Val::from(k)],
                )?;
                tx.execute(
                    "DELETE FROM pool_members WHERE tenant = $1 AND resource_krn = $2",
                    &[Val::from(tenant), Val::from(k)],
                )?;
                tx.execute(
                    "DELETE FROM resources WHERE tenant = $1 AND krn = $2",
                    &[Val::from(tenant), Val::from(k)],
                )?;
            }
            bump_revision(tx, tenant)?;
            Ok(())
        })
    }

    fn resource_policy(&self, tenant: &str, resource: &str) -> Result<PolicyRecord, StorageError> {
        self.tx(|tx| {
            one(
                tx.query(
                    &format!(
                        "SELECT {} FROM policies WHERE tenant = $1 AND resource_krn = $2",
                        super::policies::COLUMNS
                    ),
                    &[Val::from(tenant), Val::from(resource)],
                )?,
                super::policies::record,
            )
        })
    }
}

// ---------------------------------------------------------------- pools

const POOL_COLS: &str =
    "tenant, krn, name, display_name, description, version, created_ms, updated_ms";

fn pool(r: &Row) -> Result<PoolRecord, StorageError> {
    Ok(PoolRecord {
        tenant: r.string(0)?,
        krn: r.string(1)?,
        name: r.string(2)?,
        display_name: r.opt_string(3)?,
        description: r.opt_string(4)?,
        version: r.i64(5)?,
        created_ms: r.i64(6)?,
        updated_ms: r.i64(7)?,
    })
}

fn get_pool_tx(tx: &mut dyn Tx, tenant: &str, krn: &str) -> Result<PoolRecord, StorageError> {
    one(
        tx.query(
            &format!("SELECT {POOL_COLS} FROM pools WHERE tenant = $1 AND krn = $2"),
            &[Val::from(tenant), Val::from(krn)],
        )?,
        pool,
    )
}

fn add_pool_members_tx(
    tx: &mut dyn Tx,
    tenant: &str,
    pool_krn: &str,
    resources: &[String],
) -> Result<(), StorageError> {
    for r in resources {
        require(tx, "resources", tenant, r)?;
        tx.execute(
            "INSERT INTO pool_members (tenant, pool_krn, resource_krn) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
            &[Val::from(tenant), Val::from(pool_krn), Val::from(r)],
        )?;
    }
    Ok(())
}

impl PoolStore for Database {
    fn insert_pool(
        &self,
        p: &PoolRecord,
        resources: &[String],
    ) -> Result<PoolRecord, StorageError> {
        self.tx(|tx| {
            if exists(tx, "pools", &p.tenant, &p.krn)? {
                return Err(StorageError::Conflict("pool exists".into()));
            }
            tx.execute(
                &format!("INSERT INTO pools ({POOL_COLS}) VALUES ($1, $2, $3, $4, $5, 1, $6, $6)"),
                &[
                    Val::from(&p.tenant),
                    Val::from(&p.krn),
                    Val::from(&p.name),
                    Val::from(p.display_name.clone()),
                    Val::from(p.description.clone()),
                    Val::I64(p.created_ms),
                ],
            )?;
            add_pool_members_tx(tx, &p.tenant, &p.krn, resources)?;
            bump_revision(tx, &p.tenant)?;
            let out = get_pool_tx(tx, &p.tenant, &p.krn)?;
            tx.record(
                Change::new(&p.tenant, "iam:pool:create", &p.krn)
                    .versions(None, Some(out.version))
                    .fields(set(&out.audit_fields()))
                    .detail(json!({ "resourceIDs": resources })),
            );
            Ok(out)
        })
    }

    fn get_pool(&self, tenant: &str, krn: &str) -> Result<PoolRecord, StorageError> {
        self.tx(|tx| get_pool_tx(tx, tenant, krn))
    }

    fn list_pools(
        &self,
        tenant: &str,
        name_contains: Option<&str>,
        resource_krn: Option<&str>,
        krn: Option<&str>,
        page: Page,
    ) -> Result<(Vec<PoolRecord>, u64), StorageError> {
        let mut w = Where::tenant(tenant);
        w.eq("krn", krn.map(str::to_string).as_ref());
        w.contains("name", name_contains.map(str::to_string).as_ref());
        if let Some(r) = resource_krn {
            w.params.push(Val::from(r));
            w.sql.push_str(&format!(
                " AND krn IN (SELECT pool_krn FROM pool_members WHERE tenant = $1 AND resource_krn = ${})",
                w.params.len()
            ));
        }
        self.tx(|tx| {
            let (rows, total) = w.page(tx, "pools", POOL_COLS, "name", SortOrder::Asc, page)?;
            Ok((rows.iter().map(pool).collect::<Result<_, _>>()?, total))
        })
    }

    fn update_pool(
        &self,
        tenant: &str,
        krn: &str,
        display_name: Option<Option<String>>,
        description: Option<Option<String>>,
        expected_version: Option<i64>,
        now_ms: i64,
    ) -> Result<PoolRecord, StorageError> {
        self.tx(|tx| {
            lock_row(tx, "pools", tenant, krn)?;
            let cur = get_pool_tx(tx, tenant, krn)?;
            if expected_version.is_some_and(|v| v != cur.version) {
                return Err(StorageError::Stale);
            }
            let (before, version) = (cur.audit_fields(), cur.version);
            tx.execute(
                "UPDATE pools SET display_name = $1, description = $2, version = version + 1, \
                 updated_ms = $3 WHERE tenant = $4 AND krn = $5",
                &[
                    Val::from(display_name.unwrap_or(cur.display_name)),
                    Val::from(description.unwrap_or(cur.description)),
                    Val::I64(now_ms),
                    Val::from(tenant),
                    Val::from(krn),
                ],
            )?;
            bump_revision(tx, tenant)?;
            let out = get_pool_tx(tx, tenant, krn)?;
            tx.record(
                Change::new(tenant, "iam:pool:update", krn)
                    .versions(Some(version), Some(out.version))
                    .fields(changed(&before, &out.audit_fields())),
            );
            Ok(out)
        })
    }

    fn delete_pool(&self, tenant: &str, krn: &str) -> Result<(), StorageError> {
        self.tx(|tx| {
            let v = version_tx(tx, "pools", tenant, krn)?;
            tx.record(Change::new(tenant, "iam:pool:delete", krn).versions(Some(v), None));
            for sql in [
                "DELETE FROM policy_attachments WHERE tenant = $1 AND target_krn = $2",
                "DELETE FROM pool_members WHERE tenant = $1 AND pool_krn = $2",
                "DELETE FROM pools WHERE tenant = $1 AND krn = $2",
            ] {
                tx.execute(sql, &[Val::from(tenant), Val::from(krn)])?;
            }
            bump_revision(tx, tenant)?;
            Ok(())
        })
    }

    fn add_pool_members(
        &self,
        tenant: &str,
        pool_krn: &str,
        resources: &[String],
    ) -> Result<(), StorageError> {
        self.tx(|tx| {
            require(tx, "pools", tenant, pool_krn)?;
            add_pool_members_tx(tx, tenant, pool_krn, resources)?;
            bump_revision(tx, tenant)?;
            tx.record(
                Change::new(tenant, "iam:pool:resource:add", pool_krn)
                    .fields(vec!["resources".into()])
                    .detail(json!({ "resourceIDs": resources })),
            );
            Ok(())
        })
    }

    fn remove_pool_members(
        &self,
        tenant: &str,
        pool_krn: &str,
        resources: &[String],
    ) -> Result<(), StorageError> {
        self.tx(|tx| {
            require(tx, "pools", tenant, pool_krn)?;
            for r in resources {
                require(tx, "resources", tenant, r)?;
                tx.execute(
                    "DELETE FROM pool_members WHERE tenant = $1 AND pool_krn = $2 AND resource_krn = $3",
                    &[Val::from(tenant), Val::from(pool_krn), Val::from(r)],
                )?;
            }
            bump_revision(tx, tenant)?;
            tx.record(
                Change::new(tenant, "iam:pool:resource:remove", pool_krn)
                    .fields(vec!["resources".into()])
                    .detail(json!({ "resourceIDs": resources })),
            );
            Ok(())
        })
    }

    fn pool_members(&self, tenant: &str, pool_krn: &str) -> Result<Vec<String>, StorageError> {
        self.tx(|tx| {
            require(tx, "pools", tenant, pool_krn)?;
            tx.query(
                "SELECT resource_krn FROM pool_members WHERE tenant = $1 AND pool_krn = $2 \
                 ORDER BY resource_krn",
                &[Val::from(tenant), Val::from(pool_krn)],
            )?
            .iter()
            .map(|r| r.string(0))
            .collect()
        })
    }

    fn pool_principals(&self, tenant: &str, pool_krn: &str) -> Result<Vec<String>, StorageError> {
        self.tx(|tx| {
            require(tx, "pools", tenant, pool_krn)?;
            tx.query(
                "SELECT principal_krn FROM pool_principals WHERE tenant = $1 AND pool_krn = $2 \
                 ORDER BY principal_krn",
                &[Val::from(tenant), Val::from(pool_krn)],
            )?
            .iter()
            .map(|r| r.string(0))
            .collect()
        })
    }

    fn pools_of_principal(
        &self,
        tenant: &str,
        principal: &str,
    ) -> Result<Vec<String>, StorageError> {
        self.tx(|tx| principal_pools_tx(tx, tenant, principal))
    }

    fn pools_of_policies(
        &self,
        tenant: &str,
        policies: &[String],
    ) -> Result<std::collections::HashMap<String, Vec<String>>, StorageError> {
        if policies.is_empty() {
            return Ok(Default::default());
        }
        self.tx(|tx| {
            let keys: Vec<&str> = policies.iter().map(String::as_str).collect();
            let mut out: std::collections::HashMap<String, Vec<String>> = Default::default();
            for chunk in keys.chunks(500) {
                let mut params = vec![Val::from(tenant)];
                let marks: Vec<String> = chunk
                    .iter()
                    .map(|m| {
                        params.push(Val::from(*m));
                        format!("${}", params.len())
                    })
                    .collect();
                // Pools are the attachment targets that are rows of `pools`.
                let rows = tx.query(
                    &format!(
                        "SELECT a.policy_krn, a.target_krn FROM policy_attachments a \
                         JOIN pools p ON p.tenant = a.tenant AND p.krn = a.target_krn \
                         WHERE a.tenant = $1 AND a.policy_krn IN ({}) ORDER BY a.target_krn",
                        marks.join(", ")
                    ),
                    &params,
                )?;
                for r in &rows {
                    out.entry(r.string(0)?).or_default().push(r.string(1)?);
                }
            }
            Ok(out)
        })
    }
}

// ---------------------------------------------------------------- snapshots

fn pairs(tx: &mut dyn Tx, sql: &str, tenant: &str) -> Result<Vec<(String, String)>, StorageError> {
    tx.query(sql, &[Val::from(tenant)])?
        .iter()
        .map(|r| Ok((r.string(0)?, r.string(1)?)))
        .collect()
}

impl SnapshotStore for Database {
    fn tenant_snapshot(&self, tenant: &str) -> Result<TenantSnapshot, StorageError> {
        self.tx(|tx| {
            let revision = tx
                .query(
                    "SELECT revision FROM tenant_revisions WHERE tenant = $1",
                    &[Val::from(tenant)],
                )?
                .first()
                .map(|r| r.i64(0))
                .transpose()?
                .unwrap_or(0);
            let policies = tx
                .query(
                    &format!(
                        "SELECT {} FROM policies WHERE tenant = $1 ORDER BY krn",
                        super::policies::COLUMNS
                    ),
                    &[Val::from(tenant)],
                )?
                .iter()
                .map(super::policies::record)
                .collect::<Result<_, _>>()?;
            Ok(TenantSnapshot {
                revision,
                policies,
                attachments: pairs(
                    tx,
                    "SELECT policy_krn, target_krn FROM policy_attachments WHERE tenant = $1",
                    tenant,
                )?,
                memberships: pairs(
                    tx,
                    "SELECT user_krn, group_krn FROM group_members WHERE tenant = $1",
                    tenant,
                )?,
                pool_members: pairs(
                    tx,
                    "SELECT resource_krn, pool_krn FROM pool_members WHERE tenant = $1",
                    tenant,
                )?,
                pool_principals: pairs(
                    tx,
                    "SELECT principal_krn, pool_krn FROM pool_principals WHERE tenant = $1",
                    tenant,
                )?,
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
            let revision = tx
                .query(
                    "SELECT revision FROM tenant_revisions WHERE tenant = $1",
                    &[Val::from(tenant)],
                )?
                .first()
                .map(|r| r.i64(0))
                .transpose()?
                .unwrap_or(0);
            each(SnapshotPart::Revision(revision))?;
            each(SnapshotPart::Attachments(pairs(
                tx,
                "SELECT policy_krn, target_krn FROM policy_attachments WHERE tenant = $1",
                tenant,
            )?))?;
            each(SnapshotPart::Memberships(pairs(
                tx,
                "SELECT user_krn, group_krn FROM group_members WHERE tenant = $1",
                tenant,
            )?))?;
            each(SnapshotPart::PoolMembers(pairs(
                tx,
                "SELECT resource_krn, pool_krn FROM pool_members WHERE tenant = $1",
                tenant,
            )?))?;
            each(SnapshotPart::PoolPrincipals(pairs(
                tx,
                "SELECT principal_krn, pool_krn FROM pool_principals WHERE tenant = $1",
                tenant,
            )?))?;
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
                "SELECT {} FROM policies WHERE tenant = $1 AND krn > $2 ORDER BY krn LIMIT $3",
                super::policies::COLUMNS
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
                let records = rows
                    .iter()
                    .map(super::policies::record)
                    .collect::<Result<Vec<_>, _>>()?;
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
