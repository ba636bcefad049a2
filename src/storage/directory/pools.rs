//! Pools (resource groups) and their members: resources, users and groups.

use super::entity::{Versioned, absent, created, deleting, list, put, read, update};
use super::{PRINCIPAL_POOLS, RESOURCE_POOLS, text};
use crate::storage::audit::{Change, Fields};
use crate::storage::query::{Links, Where, insert_row, require, run_each, values_by_key};
use crate::storage::{Database, Page, Row, SortOrder, StorageError, Tx, Val, bump_revision};
use serde_json::json;
use std::collections::HashMap;

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
    ) -> Result<HashMap<String, Vec<String>>, StorageError>;
}

/// The resources of a pool.
const POOL_RESOURCES: Links = RESOURCE_POOLS.reversed();

const POOL_COLS: &str =
    "tenant, krn, name, display_name, description, version, created_ms, updated_ms";

impl Versioned for PoolRecord {
    const TABLE: &'static str = "pools";
    const KIND: &'static str = "pool";
    const COLUMNS: &'static str = POOL_COLS;

    fn from_row(r: &Row) -> Result<Self, StorageError> {
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

    fn krn(&self) -> &str {
        &self.krn
    }

    fn version(&self) -> i64 {
        self.version
    }

    fn audit_fields(&self) -> Fields {
        vec![
            ("name", self.name.clone()),
            ("displayName", text(&self.display_name)),
            ("description", text(&self.description)),
        ]
    }

    fn updatable(&self) -> Vec<(&'static str, Val)> {
        vec![
            ("display_name", Val::from(self.display_name.clone())),
            ("description", Val::from(self.description.clone())),
        ]
    }
}

/// Make `pools` (each must exist: `NotFound` otherwise) the pools of a user or group.
pub(super) fn set_principal_pools_tx(
    tx: &mut dyn Tx,
    tenant: &str,
    principal: &str,
    pools: &[String],
) -> Result<(), StorageError> {
    PRINCIPAL_POOLS.clear(tx, tenant, principal)?;
    PRINCIPAL_POOLS.add_existing(tx, tenant, principal, pools, "pools")
}

/// Report that the pool `pool_krn` gained or lost `resources`.
fn record_resources(
    tx: &mut dyn Tx,
    tenant: &str,
    pool_krn: &str,
    verb: &str,
    resources: &[String],
) {
    tx.record(
        Change::new(tenant, &format!("iam:pool:resource:{verb}"), pool_krn)
            .fields(vec!["resources".into()])
            .detail(json!({ "resourceIDs": resources })),
    );
}

impl PoolStore for Database {
    fn insert_pool(
        &self,
        p: &PoolRecord,
        resources: &[String],
    ) -> Result<PoolRecord, StorageError> {
        self.tx(|tx| {
            absent::<PoolRecord>(tx, &p.tenant, &p.krn)?;
            insert_row(
                tx,
                "pools",
                POOL_COLS,
                &[
                    Val::from(&p.tenant),
                    Val::from(&p.krn),
                    Val::from(&p.name),
                    Val::from(p.display_name.clone()),
                    Val::from(p.description.clone()),
                    Val::I64(1),
                    Val::I64(p.created_ms),
                    Val::I64(p.created_ms),
                ],
            )?;
            POOL_RESOURCES.add_existing(tx, &p.tenant, &p.krn, resources, "resources")?;
            created(tx, &p.tenant, &p.krn, json!({ "resourceIDs": resources }))
        })
    }

    fn get_pool(&self, tenant: &str, krn: &str) -> Result<PoolRecord, StorageError> {
        self.tx(|tx| read(tx, tenant, krn))
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
        w.eq("krn", krn);
        w.contains("name", name_contains);
        w.linked(RESOURCE_POOLS, resource_krn);
        self.tx(|tx| list::<PoolRecord>(tx, tenant, &w, "name", SortOrder::Asc, page))
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
            update(
                tx,
                tenant,
                krn,
                expected_version,
                now_ms,
                |p: &mut PoolRecord| {
                    put(&mut p.display_name, &display_name);
                    put(&mut p.description, &description);
                },
                |_| Ok(()),
            )
        })
    }

    fn delete_pool(&self, tenant: &str, krn: &str) -> Result<(), StorageError> {
        self.tx(|tx| {
            deleting::<PoolRecord>(tx, tenant, krn)?;
            run_each(
                tx,
                &[
                    "DELETE FROM policy_attachments WHERE tenant = $1 AND target_krn = $2",
                    "DELETE FROM pool_members WHERE tenant = $1 AND pool_krn = $2",
                    "DELETE FROM pools WHERE tenant = $1 AND krn = $2",
                ],
                tenant,
                krn,
            )?;
            bump_revision(tx, tenant)
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
            POOL_RESOURCES.add_existing(tx, tenant, pool_krn, resources, "resources")?;
            bump_revision(tx, tenant)?;
            record_resources(tx, tenant, pool_krn, "add", resources);
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
                POOL_RESOURCES.remove(tx, tenant, pool_krn, r)?;
            }
            bump_revision(tx, tenant)?;
            record_resources(tx, tenant, pool_krn, "remove", resources);
            Ok(())
        })
    }

    fn pool_members(&self, tenant: &str, pool_krn: &str) -> Result<Vec<String>, StorageError> {
        self.tx(|tx| {
            require(tx, "pools", tenant, pool_krn)?;
            POOL_RESOURCES.targets(tx, tenant, pool_krn)
        })
    }

    fn pool_principals(&self, tenant: &str, pool_krn: &str) -> Result<Vec<String>, StorageError> {
        self.tx(|tx| {
            require(tx, "pools", tenant, pool_krn)?;
            PRINCIPAL_POOLS.reversed().targets(tx, tenant, pool_krn)
        })
    }

    fn pools_of_principal(
        &self,
        tenant: &str,
        principal: &str,
    ) -> Result<Vec<String>, StorageError> {
        self.tx(|tx| PRINCIPAL_POOLS.targets(tx, tenant, principal))
    }

    fn pools_of_policies(
        &self,
        tenant: &str,
        policies: &[String],
    ) -> Result<HashMap<String, Vec<String>>, StorageError> {
        if policies.is_empty() {
            return Ok(HashMap::new());
        }
        let keys: Vec<&str> = policies.iter().map(String::as_str).collect();
        self.tx(|tx| {
            // Pools are the attachment targets that are rows of `pools`.
            values_by_key(tx, tenant, &keys, |marks| {
                format!(
                    "SELECT a.policy_krn, a.target_krn FROM policy_attachments a \
                     JOIN pools p ON p.tenant = a.tenant AND p.krn = a.target_krn \
                     WHERE a.tenant = $1 AND a.policy_krn IN ({marks}) ORDER BY a.target_krn"
                )
            })
        })
    }
}
