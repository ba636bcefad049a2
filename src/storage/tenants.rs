//! The Tenant Manager's storage, written once for both backends: tenants and their durable
//! task queue (a task is written in the same transaction as the change that needs it, claimed
//! with a lease, `FOR UPDATE SKIP LOCKED` on PostgreSQL), the event outbox (written in the same
//! transaction as the change it reports), Keycloak servers, the catalogue and the phases of
//! tenants' subscriptions.
//!
//! One file a capability. Secrets (a tenant's backend client secret and first administrator, a
//! server's admin password and client secret) are sealed at rest (`secrets`). Each write
//! reports its change (`Tx::record`) to the Tenant Manager's trail; the audit layer inserts it
//! in the write's transaction. Values never reach the trail: field names only, and
//! before/after values of a tenant's plain fields in `detail`; secrets only by name.

mod catalog;
mod outbox;
mod secrets;
mod servers;
mod stats;
mod subscriptions;
mod tasks;
mod tenant;

pub use catalog::{CatalogRecord, CatalogStore, EntryEffect, EntryWrite};
pub(super) use outbox::hex;
pub use outbox::{OutboxEvent, OutboxRecord, OutboxStore, Pass};
pub use servers::{KeycloakServerRecord, KeycloakServerStore};
pub use stats::TmStats;
pub use subscriptions::{DuePhase, SubscriptionStore};
pub use tasks::{NewTask, TaskOutcome, TaskRecord, TaskStore};
pub use tenant::{TenantChange, TenantFilter, TenantRecord, TenantStore};

use super::{Dialect, StorageError, Tx};

/// Makes a tenant's `updated` event (`None`: events are off), for changes whose tenants are
/// found inside the transaction.
pub type EventFor<'a> = &'a dyn Fn(&str) -> Result<Option<OutboxEvent>, StorageError>;

/// `lock` on PostgreSQL (` FOR UPDATE`, ...), nothing on SQLite (its write transactions are
/// serial): the end of a SELECT that locks the rows it reads.
fn locking(tx: &dyn Tx, lock: &'static str) -> &'static str {
    match tx.dialect() {
        Dialect::Postgres => lock,
        Dialect::Sqlite => "",
    }
}
