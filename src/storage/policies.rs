//! The policy capability, written once for both backends.

use super::audit::{Change, Fields, changed, keep_policy_version, set};
use super::directory::POLICY_TARGETS;
use super::query::Where;
use super::{
    Database, Page, PolicyStore, SortOrder, StorageError, Tx, Val, bump_revision, lock_row,
};

/// A stored policy. `statements` is the validated JSON array of statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRecord {
    pub tenant: String,
    pub krn: String,
    pub name: String,
    pub kind: String,
    pub description: Option<String>,
    pub statements: String,
    pub origin: String,
    pub version: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// For resource-based policies: the resource it is bound to.
    pub resource_krn: Option<String>,
}

impl PolicyRecord {
    /// The audited fields.
    pub fn audit_fields(&self) -> Fields {
        vec![
            ("name", self.name.clone()),
            ("type", self.kind.clone()),
            ("description", self.description.clone().unwrap_or_default()),
            ("statements", self.statements.clone()),
            ("resourceID", self.resource_krn.clone().unwrap_or_default()),
        ]
    }

    /// The action a write of this policy is audited as.
    fn audit_action(&self, verb: &str) -> String {
        if self.kind == "resource" {
            "iam:resource:policy:update".to_string()
        } else {
            format!("iam:policy:{verb}")
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewPolicy {
    pub tenant: String,
    pub krn: String,
    pub name: String,
    pub kind: String,
    pub description: Option<String>,
    pub statements: String,
    pub origin: String,
    pub now_ms: i64,
    pub resource_krn: Option<String>,
    /// Pools (KRNs) to attach the new policy to; each must exist.
    pub pools: Vec<String>,
}

/// Sortable columns of the policy list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PolicySort {
    #[default]
    Name,
    Created,
    Updated,
}

#[derive(Debug, Clone, Default)]
pub struct PolicyFilter {
    pub tenant: String,
    /// Exactly this policy (its canonical KRN).
    pub krn: Option<String>,
    /// Substring of the name (case-sensitive).
    pub name_contains: Option<String>,
    pub kind: Option<String>,
    pub origin: Option<String>,
    pub sort: PolicySort,
    pub order: SortOrder,
}

pub(crate) const COLUMNS: &str = "tenant, krn, name, kind, description, statements, origin, version, \
                       created_ms, updated_ms, resource_krn";

pub(crate) fn record(r: &super::Row) -> Result<PolicyRecord, StorageError> {
    Ok(PolicyRecord {
        tenant: r.string(0)?,
        krn: r.string(1)?,
        name: r.string(2)?,
        kind: r.string(3)?,
        description: r.opt_string(4)?,
        statements: r.string(5)?,
        origin: r.string(6)?,
        version: r.i64(7)?,
        created_ms: r.i64(8)?,
        updated_ms: r.i64(9)?,
        resource_krn: r.opt_string(10)?,
    })
}

pub(crate) fn get(tx: &mut dyn Tx, tenant: &str, krn: &str) -> Result<PolicyRecord, StorageError> {
    let rows = tx.query(
        &format!("SELECT {COLUMNS} FROM policies WHERE tenant = $1 AND krn = $2"),
        &[Val::from(tenant), Val::from(krn)],
    )?;
    rows.first().map(record).ok_or(StorageError::NotFound)?
}

/// Insert a policy inside the caller's transaction (`Conflict` when the KRN exists).
pub(crate) fn insert_tx(tx: &mut dyn Tx, p: &NewPolicy) -> Result<(), StorageError> {
    let exists = tx.query(
        "SELECT 1 FROM policies WHERE tenant = $1 AND krn = $2",
        &[Val::from(&p.tenant), Val::from(&p.krn)],
    )?;
    if !exists.is_empty() {
        return Err(StorageError::Conflict(format!("policy `{}` exists", p.krn)));
    }
    tx.execute(
        &format!(
            "INSERT INTO policies ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $8, $9)"
        ),
        &[
            Val::from(&p.tenant),
            Val::from(&p.krn),
            Val::from(&p.name),
            Val::from(&p.kind),
            Val::from(p.description.clone()),
            Val::from(&p.statements),
            Val::from(&p.origin),
            Val::I64(p.now_ms),
            Val::from(p.resource_krn.clone()),
        ],
    )?;
    // A policy made again under the name of a deleted one starts a history of its own.
    tx.execute(
        "DELETE FROM policy_versions WHERE tenant = $1 AND krn = $2",
        &[Val::from(&p.tenant), Val::from(&p.krn)],
    )?;
    keep_policy_version(tx, &new_record(p))?;
    Ok(())
}

/// The row `insert_tx` writes.
fn new_record(p: &NewPolicy) -> PolicyRecord {
    PolicyRecord {
        tenant: p.tenant.clone(),
        krn: p.krn.clone(),
        name: p.name.clone(),
        kind: p.kind.clone(),
        description: p.description.clone(),
        statements: p.statements.clone(),
        origin: p.origin.clone(),
        version: 1,
        created_ms: p.now_ms,
        updated_ms: p.now_ms,
        resource_krn: p.resource_krn.clone(),
    }
}

/// Make `pools` (each must exist: `NotFound` otherwise) the pools `policy` is attached to; its
/// attachments to users and groups stay.
pub(crate) fn set_policy_pools_tx(
    tx: &mut dyn Tx,
    tenant: &str,
    policy: &str,
    pools: &[String],
) -> Result<(), StorageError> {
    tx.execute(
        "DELETE FROM policy_attachments WHERE tenant = $1 AND policy_krn = $2 \
         AND target_krn IN (SELECT krn FROM pools WHERE tenant = $1)",
        &[Val::from(tenant), Val::from(policy)],
    )?;
    POLICY_TARGETS.add_existing(tx, tenant, policy, pools, "pools")
}

/// Delete one policy (`NotFound` when absent), audited.
fn delete_tx(tx: &mut dyn Tx, tenant: &str, krn: &str) -> Result<(), StorageError> {
    let current = get(tx, tenant, krn)?;
    tx.execute(
        "DELETE FROM policies WHERE tenant = $1 AND krn = $2",
        &[Val::from(tenant), Val::from(krn)],
    )?;
    tx.record(
        Change::new(tenant, &current.audit_action("delete"), krn)
            .versions(Some(current.version), None),
    );
    Ok(())
}

impl PolicyStore for Database {
    fn insert_policy(&self, p: &NewPolicy) -> Result<PolicyRecord, StorageError> {
        let p = p.clone();
        self.tx_grouped(move |tx| {
            let p = &p;
            insert_tx(tx, p)?;
            if !p.pools.is_empty() {
                set_policy_pools_tx(tx, &p.tenant, &p.krn, &p.pools)?;
            }
            bump_revision(tx, &p.tenant)?;
            // The row as just inserted (no read back: one round trip less).
            let out = new_record(p);
            tx.record(
                Change::new(&p.tenant, &out.audit_action("create"), &p.krn)
                    .versions(None, Some(1))
                    .fields(set(&out.audit_fields()))
                    .detail(serde_json::json!({ "poolIDs": p.pools })),
            );
            Ok(out)
        })
    }

    fn get_policy(&self, tenant: &str, krn: &str) -> Result<PolicyRecord, StorageError> {
        self.tx(|tx| get(tx, tenant, krn))
    }

    fn list_policies(
        &self,
        f: &PolicyFilter,
        page: Page,
    ) -> Result<(Vec<PolicyRecord>, u64), StorageError> {
        let mut w = Where::tenant(&f.tenant);
        w.eq("krn", f.krn.as_deref());
        w.contains("name", f.name_contains.as_deref());
        w.eq("kind", f.kind.as_deref());
        w.eq("origin", f.origin.as_deref());
        let column = match f.sort {
            PolicySort::Name => "name",
            PolicySort::Created => "created_ms",
            PolicySort::Updated => "updated_ms",
        };
        self.tx(|tx| w.page_of(tx, "policies", COLUMNS, column, f.order, page, record))
    }

    #[allow(clippy::too_many_arguments)] // the inputs of one write, each used once
    fn replace_policy(
        &self,
        tenant: &str,
        krn: &str,
        expected_version: Option<i64>,
        description: Option<&str>,
        statements: &str,
        pools: Option<&[String]>,
        now_ms: i64,
    ) -> Result<PolicyRecord, StorageError> {
        let (tenant, krn) = (tenant.to_string(), krn.to_string());
        let description = description.map(str::to_string);
        let statements = statements.to_string();
        let pools = pools.map(<[String]>::to_vec);
        self.tx_grouped(move |tx| {
            let (tenant, krn) = (tenant.as_str(), krn.as_str());
            let (description, statements) = (description.as_deref(), statements.as_str());
            lock_row(tx, "policies", tenant, krn)?;
            let current = get(tx, tenant, krn)?;
            if expected_version.is_some_and(|v| v != current.version) {
                return Err(StorageError::Stale);
            }
            let n = tx.execute(
                "UPDATE policies SET description = $1, statements = $2, version = version + 1, \
                 updated_ms = $3 WHERE tenant = $4 AND krn = $5 AND version = $6",
                &[
                    Val::from(description),
                    Val::from(statements),
                    Val::I64(now_ms),
                    Val::from(tenant),
                    Val::from(krn),
                    Val::I64(current.version),
                ],
            )?;
            if n == 0 {
                return Err(StorageError::Stale);
            }
            if let Some(pools) = &pools {
                set_policy_pools_tx(tx, tenant, krn, pools)?;
            }
            bump_revision(tx, tenant)?;
            let before = current.audit_fields();
            let out = PolicyRecord {
                description: description.map(str::to_string),
                statements: statements.to_string(),
                version: current.version + 1,
                updated_ms: now_ms,
                ..current
            };
            let mut fields = changed(&before, &out.audit_fields());
            if pools.is_some() {
                fields.push("poolIDs".into());
            }
            tx.record(
                Change::new(tenant, &out.audit_action("update"), krn)
                    .versions(Some(out.version - 1), Some(out.version))
                    .fields(fields)
                    .detail(match &pools {
                        Some(p) => serde_json::json!({ "poolIDs": p }),
                        None => serde_json::json!({}),
                    }),
            );
            keep_policy_version(tx, &out)?;
            Ok(out)
        })
    }

    fn delete_policy(&self, tenant: &str, krn: &str) -> Result<(), StorageError> {
        let (tenant, krn) = (tenant.to_string(), krn.to_string());
        self.tx_grouped(move |tx| {
            let (tenant, krn) = (tenant.as_str(), krn.as_str());
            delete_tx(tx, tenant, krn)?;
            bump_revision(tx, tenant)?;
            Ok(())
        })
    }

    fn delete_policies(&self, tenant: &str, krns: &[String]) -> Result<(), StorageError> {
        let (tenant, krns) = (tenant.to_string(), krns.to_vec());
        self.tx_grouped(move |tx| {
            let tenant = tenant.as_str();
            for krn in &krns {
                delete_tx(tx, tenant, krn)?;
            }
            bump_revision(tx, tenant)?;
            Ok(())
        })
    }

    fn all_policies(&self) -> Result<Vec<PolicyRecord>, StorageError> {
        self.tx(|tx| {
            tx.query(
                &format!("SELECT {COLUMNS} FROM policies ORDER BY tenant, krn"),
                &[],
            )?
            .iter()
            .map(record)
            .collect()
        })
    }
}
