//! Registered resources, with their resource-based policy and their pools.

use super::entity::{Versioned, absent, created, deleting, list, put, read, update};
use super::{RESOURCE_POOLS, text};
use crate::storage::audit::Fields;
use crate::storage::policies::{self, COLUMNS, PolicyRecord};
use crate::storage::query::{Links, Where, insert_row, one, run_each, sort_column};
use crate::storage::{Database, NewPolicy, Page, Row, SortOrder, StorageError, Val, bump_revision};
use serde_json::json;

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

pub trait ResourceStore {
    /// Insert a resource, its resource-based policy (when given) and its memberships of
    /// `pools`, all or nothing (`NotFound` when a pool does not exist).
    fn insert_resource(
        &self,
        r: &ResourceRecord,
        policy: Option<&NewPolicy>,
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

const RESOURCE_COLS: &str = "tenant, krn, service, resource_type, name, path, display_name, \
                             description, enabled, metadata, version, created_ms, updated_ms";

impl Versioned for ResourceRecord {
    const TABLE: &'static str = "resources";
    const KIND: &'static str = "resource";
    const POOLS: Option<Links> = Some(RESOURCE_POOLS);
    const COLUMNS: &'static str = RESOURCE_COLS;

    fn from_row(r: &Row) -> Result<Self, StorageError> {
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
            ("service", self.service.clone()),
            ("resourceType", self.resource_type.clone()),
            ("name", self.name.clone()),
            ("path", self.path.clone()),
            ("displayName", text(&self.display_name)),
            ("description", text(&self.description)),
            ("enabled", self.enabled.to_string()),
            ("metadata", self.metadata.clone()),
            ("poolIDs", self.pools.join(",")),
        ]
    }

    fn updatable(&self) -> Vec<(&'static str, Val)> {
        vec![
            ("display_name", Val::from(self.display_name.clone())),
            ("description", Val::from(self.description.clone())),
            ("enabled", Val::Bool(self.enabled)),
            ("metadata", Val::from(&self.metadata)),
        ]
    }
}

impl ResourceStore for Database {
    fn insert_resource(
        &self,
        r: &ResourceRecord,
        policy: Option<&NewPolicy>,
        pools: &[String],
    ) -> Result<ResourceRecord, StorageError> {
        self.tx(|tx| {
            absent::<ResourceRecord>(tx, &r.tenant, &r.krn)?;
            insert_row(
                tx,
                "resources",
                RESOURCE_COLS,
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
                    Val::I64(1),
                    Val::I64(r.created_ms),
                    Val::I64(r.created_ms),
                ],
            )?;
            if let Some(p) = policy {
                policies::insert_tx(tx, p)?;
            }
            RESOURCE_POOLS.add_existing(tx, &r.tenant, &r.krn, pools, "pools")?;
            created(
                tx,
                &r.tenant,
                &r.krn,
                json!({ "policy": policy.map(|p| p.krn.clone()) }),
            )
        })
    }

    fn get_resource(&self, tenant: &str, krn: &str) -> Result<ResourceRecord, StorageError> {
        self.tx(|tx| read(tx, tenant, krn))
    }

    fn list_resources(
        &self,
        f: &ResourceFilter,
        page: Page,
    ) -> Result<(Vec<ResourceRecord>, u64), StorageError> {
        let mut w = Where::tenant(&f.tenant);
        w.eq("krn", f.krn.as_deref());
        w.eq("service", f.service.as_deref());
        w.eq("resource_type", f.resource_type.as_deref());
        w.prefix("path", f.path_prefix.as_deref());
        w.contains("display_name", f.display_name.as_deref());
        w.flag("enabled", f.enabled);
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
        self.tx(|tx| list::<ResourceRecord>(tx, &f.tenant, &w, col, f.order, page))
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
            update(
                tx,
                tenant,
                krn,
                expected_version,
                now_ms,
                |r: &mut ResourceRecord| {
                    put(&mut r.display_name, &p.display_name);
                    put(&mut r.description, &p.description);
                    put(&mut r.enabled, &p.enabled);
                    put(&mut r.metadata, &p.metadata);
                },
                |tx| match &p.pools {
                    Some(pools) => {
                        RESOURCE_POOLS.clear(tx, tenant, krn)?;
                        RESOURCE_POOLS.add_existing(tx, tenant, krn, pools, "pools")
                    }
                    None => Ok(()),
                },
            )
        })
    }

    fn delete_resources(&self, tenant: &str, krns: &[String]) -> Result<(), StorageError> {
        self.tx(|tx| {
            for k in krns {
                deleting::<ResourceRecord>(tx, tenant, k)?;
                run_each(
                    tx,
                    &[
                        "DELETE FROM policies WHERE tenant = $1 AND resource_krn = $2",
                        "DELETE FROM pool_members WHERE tenant = $1 AND resource_krn = $2",
                        "DELETE FROM resources WHERE tenant = $1 AND krn = $2",
                    ],
                    tenant,
                    k,
                )?;
            }
            bump_revision(tx, tenant)
        })
    }

    fn resource_policy(&self, tenant: &str, resource: &str) -> Result<PolicyRecord, StorageError> {
        self.tx(|tx| {
            one(
                tx.query(
                    &format!(
                        "SELECT {COLUMNS} FROM policies WHERE tenant = $1 AND resource_krn = $2"
                    ),
                    &[Val::from(tenant), Val::from(resource)],
                )?,
                policies::record,
            )
        })
    }
}
