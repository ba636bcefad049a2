//! The IAM directory, written once for both backends: users, nested groups and their members,
//! policy attachments, resources, pools and their members, and the per-tenant snapshot the
//! decision index is built from. Every write bumps the tenant revision in its transaction.
//!
//! One file a capability; the steps every write shares are in `entity` (an entity in one
//! versioned row: insert, read-modify-write, delete, each audited), the SQL building blocks in
//! `storage::query`.

mod attachments;
mod entity;
mod groups;
mod pools;
mod resources;
mod snapshot;
mod users;

pub use attachments::AttachmentStore;
pub use groups::{GroupFilter, GroupRecord, GroupStore};
pub use pools::{PoolRecord, PoolStore};
pub use resources::{ResourceFilter, ResourcePatch, ResourceRecord, ResourceStore};
pub use snapshot::{SnapshotPart, SnapshotStore, TenantSnapshot};
pub use users::{UserFilter, UserPatch, UserRecord, UserStore};

use super::query::Links;

/// An optional text as an audited field (absent: empty).
fn text(v: &Option<String>) -> String {
    v.clone().unwrap_or_default()
}

// The relations of the directory, each read from one side.

/// A group's users.
const GROUP_USERS: Links = Links {
    table: "group_members",
    from: "group_krn",
    to: "user_krn",
};
/// The targets (users, groups, roles, pools) a policy is attached to.
pub(crate) const POLICY_TARGETS: Links = Links {
    table: "policy_attachments",
    from: "policy_krn",
    to: "target_krn",
};
/// The pools of a user or group.
const PRINCIPAL_POOLS: Links = Links {
    table: "pool_principals",
    from: "principal_krn",
    to: "pool_krn",
};
/// The pools of a resource.
const RESOURCE_POOLS: Links = Links {
    table: "pool_members",
    from: "resource_krn",
    to: "pool_krn",
};
