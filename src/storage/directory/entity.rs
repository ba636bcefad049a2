//! The steps every directory write shares, over an entity kept in one versioned row
//! ([`Versioned`]): [`absent`] then [`created`] for an insert, [`update`] for a
//! read-modify-write, [`deleting`] for a delete, each audited in the write's transaction; and
//! [`read`] and [`list`] as callers see the entity.

use crate::storage::audit::{Change, Fields, changed, set};
use crate::storage::query::{Links, Where, exists, one};
use crate::storage::{Page, Row, SortOrder, StorageError, Tx, Val, bump_revision, lock_row};

/// An entity kept in one row of its table with a version, read and audited as a whole: the
/// shape every directory write shares.
pub(crate) trait Versioned: Sized + Clone {
    /// Its table.
    const TABLE: &'static str;
    /// `user`, `group`, ...: its audit actions are `iam:<kind>:<verb>`.
    const KIND: &'static str;
    /// The columns [`Versioned::from_row`] reads, in its order.
    const COLUMNS: &'static str;
    /// For a pool member (user, group, resource): the relation to its pools, read with it.
    const POOLS: Option<Links> = None;
    fn from_row(r: &Row) -> Result<Self, StorageError>;
    fn krn(&self) -> &str;
    fn version(&self) -> i64;
    /// The pools of a pool member ([`Versioned::POOLS`]).
    fn pools_mut(&mut self) -> Option<&mut Vec<String>> {
        None
    }
    /// The audited fields (a secret is compared, never shown).
    fn audit_fields(&self) -> Fields;
    /// The columns an update may change, with this entity's values.
    fn updatable(&self) -> Vec<(&'static str, Val)>;
}

/// Fill the pools of a page of pool members of `tenant`, in one query a 500 of them.
fn complete_page<T: Versioned>(
    tx: &mut dyn Tx,
    tenant: &str,
    page: &mut [T],
) -> Result<(), StorageError> {
    let Some(pools_of) = T::POOLS else {
        return Ok(());
    };
    if page.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = page.iter().map(T::krn).collect();
    let mut found = pools_of.targets_of_each(tx, tenant, &keys)?;
    for it in page.iter_mut() {
        let pools = found.remove(it.krn());
        if let (Some(v), Some(p)) = (pools, it.pools_mut()) {
            *p = v;
        }
    }
    Ok(())
}

/// The stored entity as callers see it (`NotFound` when absent).
pub(crate) fn read<T: Versioned>(
    tx: &mut dyn Tx,
    tenant: &str,
    krn: &str,
) -> Result<T, StorageError> {
    let sql = format!(
        "SELECT {} FROM {} WHERE tenant = $1 AND krn = $2",
        T::COLUMNS,
        T::TABLE
    );
    let mut out = one(
        tx.query(&sql, &[Val::from(tenant), Val::from(krn)])?,
        T::from_row,
    )?;
    complete_page(tx, tenant, std::slice::from_mut(&mut out))?;
    Ok(out)
}

/// Start an insert: `Conflict` when the entity exists already.
pub(crate) fn absent<T: Versioned>(
    tx: &mut dyn Tx,
    tenant: &str,
    krn: &str,
) -> Result<(), StorageError> {
    if exists(tx, T::TABLE, tenant, krn)? {
        return Err(StorageError::Conflict(format!("{} exists", T::KIND)));
    }
    Ok(())
}

/// End an insert: bump the revision, read the entity back and report its creation with
/// `detail`.
pub(crate) fn created<T: Versioned>(
    tx: &mut dyn Tx,
    tenant: &str,
    krn: &str,
    detail: serde_json::Value,
) -> Result<T, StorageError> {
    bump_revision(tx, tenant)?;
    let out = read::<T>(tx, tenant, krn)?;
    tx.record(
        Change::new(tenant, &format!("iam:{}:create", T::KIND), krn)
            .versions(None, Some(out.version()))
            .fields(set(&out.audit_fields()))
            .detail(detail),
    );
    Ok(out)
}

/// Set `field` to the patch's value, if it has one (`None`: unchanged).
pub(crate) fn put<T: Clone>(field: &mut T, patch: &Option<T>) {
    if let Some(v) = patch {
        field.clone_from(v);
    }
}

/// The read-modify-write of one entity: read it with its row locked (`Stale` when
/// `expected_version` names another version), let `change` change it, write its
/// [`Versioned::updatable`] columns with the next version (`Stale` when its row moved
/// meanwhile), run `then` (the relations the update sets), bump the revision, and report the
/// fields that changed. Answers the entity as stored.
pub(crate) fn update<T: Versioned>(
    tx: &mut dyn Tx,
    tenant: &str,
    krn: &str,
    expected_version: Option<i64>,
    now_ms: i64,
    change: impl FnOnce(&mut T),
    then: impl FnOnce(&mut dyn Tx) -> Result<(), StorageError>,
) -> Result<T, StorageError> {
    lock_row(tx, T::TABLE, tenant, krn)?;
    let before = read::<T>(tx, tenant, krn)?;
    let version = before.version();
    if expected_version.is_some_and(|v| v != version) {
        return Err(StorageError::Stale);
    }
    let mut after = before.clone();
    change(&mut after);
    let mut params = Vec::new();
    let mut sets = Vec::new();
    for (column, v) in after.updatable() {
        params.push(v);
        sets.push(format!("{column} = ${}", params.len()));
    }
    let n = params.len();
    params.extend([
        Val::I64(now_ms),
        Val::from(tenant),
        Val::from(krn),
        Val::I64(version),
    ]);
    let written = tx.execute(
        &format!(
            "UPDATE {} SET {}, version = version + 1, updated_ms = ${} \
             WHERE tenant = ${} AND krn = ${} AND version = ${}",
            T::TABLE,
            sets.join(", "),
            n + 1,
            n + 2,
            n + 3,
            n + 4
        ),
        &params,
    )?;
    if written == 0 {
        return Err(StorageError::Stale);
    }
    then(tx)?;
    bump_revision(tx, tenant)?;
    let out = read::<T>(tx, tenant, krn)?;
    tx.record(
        Change::new(tenant, &format!("iam:{}:update", T::KIND), krn)
            .versions(Some(version), Some(out.version()))
            .fields(changed(&before.audit_fields(), &out.audit_fields())),
    );
    Ok(out)
}

/// Report the deletion of an entity (`NotFound` when there is none); the caller deletes its
/// rows.
pub(crate) fn deleting<T: Versioned>(
    tx: &mut dyn Tx,
    tenant: &str,
    krn: &str,
) -> Result<(), StorageError> {
    let version = one(
        tx.query(
            &format!(
                "SELECT version FROM {} WHERE tenant = $1 AND krn = $2",
                T::TABLE
            ),
            &[Val::from(tenant), Val::from(krn)],
        )?,
        |r| r.i64(0),
    )?;
    tx.record(
        Change::new(tenant, &format!("iam:{}:delete", T::KIND), krn).versions(Some(version), None),
    );
    Ok(())
}

/// A page of the entities `w` selects in `tenant`, as callers see them.
pub(crate) fn list<T: Versioned>(
    tx: &mut dyn Tx,
    tenant: &str,
    w: &Where,
    order_by: &str,
    order: SortOrder,
    page: Page,
) -> Result<(Vec<T>, u64), StorageError> {
    let (mut items, total) =
        w.page_of(tx, T::TABLE, T::COLUMNS, order_by, order, page, T::from_row)?;
    complete_page(tx, tenant, &mut items)?;
    Ok((items, total))
}
