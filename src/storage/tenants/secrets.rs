//! Secrets at rest: a tenant's backend client secret and first administrator, a server's admin
//! password and client secret, each sealed with the current key and bound to its row and
//! column; the keys, and resealing with a new one.

use std::sync::Arc;

use super::servers::KeycloakServerRecord;
use super::tenant::TenantRecord;
use crate::storage::{Database, SecretKeys, StorageError, Tx, Val};

fn tenant_aad(id: &str) -> String {
    format!("tenants.client_backend_secret/{id}")
}

fn first_admin_aad(id: &str) -> String {
    format!("tenants.first_admin/{id}")
}

fn server_aad(column: &str, id: i64) -> String {
    format!("keycloak_servers.{column}/{id}")
}

pub(super) fn seal_tenant(k: &SecretKeys, t: &TenantRecord) -> Result<TenantRecord, StorageError> {
    Ok(TenantRecord {
        client_backend_secret: k.seal(&tenant_aad(&t.id), &t.client_backend_secret)?,
        first_admin: t
            .first_admin
            .as_deref()
            .map(|a| k.seal(&first_admin_aad(&t.id), a))
            .transpose()?,
        ..t.clone()
    })
}

pub(super) fn open_tenant(k: &SecretKeys, t: TenantRecord) -> Result<TenantRecord, StorageError> {
    Ok(TenantRecord {
        client_backend_secret: k.open(&tenant_aad(&t.id), &t.client_backend_secret)?,
        first_admin: t
            .first_admin
            .as_deref()
            .map(|a| k.open(&first_admin_aad(&t.id), a))
            .transpose()?,
        ..t
    })
}

fn map_server_secrets(
    s: &KeycloakServerRecord,
    f: &dyn Fn(&str, &str) -> Result<String, StorageError>,
) -> Result<KeycloakServerRecord, StorageError> {
    let one = |column: &str, v: &Option<String>| -> Result<Option<String>, StorageError> {
        v.as_deref()
            .map(|v| f(&server_aad(column, s.id), v))
            .transpose()
    };
    Ok(KeycloakServerRecord {
        password: one("password", &s.password)?,
        client_secret: one("client_secret", &s.client_secret)?,
        ..s.clone()
    })
}

pub(super) fn seal_server(
    k: &SecretKeys,
    s: &KeycloakServerRecord,
) -> Result<KeycloakServerRecord, StorageError> {
    map_server_secrets(s, &|aad, v| k.seal(aad, v))
}

pub(super) fn open_server(
    k: &SecretKeys,
    s: &KeycloakServerRecord,
) -> Result<KeycloakServerRecord, StorageError> {
    map_server_secrets(s, &|aad, v| k.open(aad, v))
}

impl Database {
    /// Seal the Tenant Manager's stored secrets with these keys from now on.
    pub fn set_secret_keys(&self, keys: SecretKeys) {
        *self.secret_keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
    }

    pub fn secret_keys(&self) -> Arc<SecretKeys> {
        Arc::clone(&self.secret_keys.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Seal again, with the current key, every stored secret that is not sealed with it (plain
    /// rows from before encryption, rows of a previous key), in one transaction; returns how
    /// many values changed. A value no configured key opens fails it, changing nothing.
    pub fn reseal_secrets(&self) -> Result<u64, StorageError> {
        let k = self.secret_keys();
        self.tx(|tx| {
            let mut n = 0u64;
            for r in tx.query(
                "SELECT id, client_backend_secret FROM tenants ORDER BY id",
                &[],
            )? {
                let id = r.string(0)?;
                let sealed = reseal(&k, &tenant_aad(&id), &r.string(1)?)?;
                n += rewrite(
                    tx,
                    "tenants",
                    "client_backend_secret",
                    sealed,
                    Val::from(id),
                )?;
            }
            for r in tx.query(
                "SELECT id, first_admin FROM tenants WHERE first_admin IS NOT NULL ORDER BY id",
                &[],
            )? {
                let id = r.string(0)?;
                let sealed = reseal(&k, &first_admin_aad(&id), &r.string(1)?)?;
                n += rewrite(tx, "tenants", "first_admin", sealed, Val::from(id))?;
            }
            for r in tx.query(
                "SELECT id, password, client_secret FROM keycloak_servers ORDER BY id",
                &[],
            )? {
                let id = r.i64(0)?;
                for (i, column) in [(1, "password"), (2, "client_secret")] {
                    let Some(stored) = r.opt_string(i)? else {
                        continue;
                    };
                    let sealed = reseal(&k, &server_aad(column, id), &stored)?;
                    n += rewrite(tx, "keycloak_servers", column, sealed, Val::I64(id))?;
                }
            }
            Ok(n)
        })
    }
}

/// A stored secret sealed with the current key, `None` when it is already.
fn reseal(k: &SecretKeys, aad: &str, stored: &str) -> Result<Option<String>, StorageError> {
    if k.is_current(stored) {
        return Ok(None);
    }
    k.seal(aad, &k.open(aad, stored)?).map(Some)
}

/// Write a resealed secret (if any) into `column` of the row `id` of `table`; how many
/// values changed.
fn rewrite(
    tx: &mut dyn Tx,
    table: &str,
    column: &str,
    sealed: Option<String>,
    id: Val,
) -> Result<u64, StorageError> {
    let Some(sealed) = sealed else {
        return Ok(0);
    };
    tx.execute(
        &format!("UPDATE {table} SET {column} = $1 WHERE id = $2"),
        &[Val::from(sealed), id],
    )?;
    Ok(1)
}
