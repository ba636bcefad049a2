//! Policy attachments: which policies apply to a user, group, role or pool.

use super::POLICY_TARGETS;
use crate::storage::audit::Change;
use crate::storage::policies::{COLUMNS, PolicyRecord, record};
use crate::storage::query::{Where, require};
use crate::storage::{Database, Page, SortOrder, StorageError, Tx, bump_revision};
use serde_json::json;

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

/// `user`, `group` or `pool` of `krn:iam:<tenant>::<type>/...`.
fn kind_of(target: &str) -> &str {
    target
        .split("::")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("")
}

/// A policy attachment's target (a user, group or pool) must exist: `NotFound` otherwise.
fn require_target(tx: &mut dyn Tx, tenant: &str, target: &str) -> Result<(), StorageError> {
    let table = match kind_of(target) {
        "user" => "users",
        "group" => "user_groups",
        "pool" => "pools",
        _ => return Err(StorageError::NotFound),
    };
    require(tx, table, tenant, target)
}

/// Report that `target` gained or lost `policies` (`verb`: `attach` or `detach`).
fn record_attachments(
    tx: &mut dyn Tx,
    tenant: &str,
    target: &str,
    verb: &str,
    policies: &[String],
) {
    tx.record(
        Change::new(
            tenant,
            &format!("iam:policy:{}:{verb}", kind_of(target)),
            target,
        )
        .fields(vec!["policies".into()])
        .detail(json!({ "policyIDs": policies })),
    );
}

impl AttachmentStore for Database {
    fn attach(&self, tenant: &str, target: &str, policies: &[String]) -> Result<(), StorageError> {
        self.tx(|tx| {
            require_target(tx, tenant, target)?;
            POLICY_TARGETS
                .reversed()
                .add_existing(tx, tenant, target, policies, "policies")?;
            bump_revision(tx, tenant)?;
            record_attachments(tx, tenant, target, "attach", policies);
            Ok(())
        })
    }

    fn detach(&self, tenant: &str, target: &str, policies: &[String]) -> Result<(), StorageError> {
        self.tx(|tx| {
            require_target(tx, tenant, target)?;
            for p in policies {
                require(tx, "policies", tenant, p)?;
                POLICY_TARGETS.remove(tx, tenant, p, target)?;
            }
            bump_revision(tx, tenant)?;
            record_attachments(tx, tenant, target, "detach", policies);
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
            w.linked(POLICY_TARGETS.reversed(), Some(target));
            w.page_of(
                tx,
                "policies",
                COLUMNS,
                "name",
                SortOrder::Asc,
                page,
                record,
            )
        })
    }

    fn targets_of(&self, tenant: &str, policy: &str) -> Result<Vec<String>, StorageError> {
        self.tx(|tx| POLICY_TARGETS.targets(tx, tenant, policy))
    }
}
