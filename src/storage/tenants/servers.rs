//! The Keycloak servers tenants' realms are made on (admin credentials sealed,
//! [`super::secrets`]); a server's change is told to the tenants it hosts, and a server that
//! hosts a tenant stays.

use super::EventFor;
use super::outbox::emit;
use super::secrets::{open_server, seal_server};
use crate::storage::audit::{Change, Fields, changed, set};
use crate::storage::query::{count, insert_row, one};
use crate::storage::{Database, Row, StorageError, Tx, Val};
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeycloakServerRecord {
    pub id: i64,
    pub url: String,
    pub admin_realm: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub is_default: bool,
    pub created_ms: i64,
    pub updated_ms: i64,
}

pub trait KeycloakServerStore {
    fn insert_server(&self, s: &KeycloakServerRecord)
    -> Result<KeycloakServerRecord, StorageError>;
    fn get_server(&self, id: i64) -> Result<KeycloakServerRecord, StorageError>;
    fn list_servers(&self) -> Result<Vec<KeycloakServerRecord>, StorageError>;
    /// Replace a server's record and enqueue the `updated` event of every tenant on it, in one
    /// transaction.
    fn update_server(
        &self,
        s: &KeycloakServerRecord,
        events: EventFor,
    ) -> Result<KeycloakServerRecord, StorageError>;
    /// `Conflict` while tenants use it.
    fn delete_server(&self, id: i64) -> Result<(), StorageError>;
}

/// A Keycloak server's audited fields: the admin password and client secret by name only.
fn server_fields(s: &KeycloakServerRecord) -> Fields {
    vec![
        ("url", s.url.clone()),
        ("admin_realm", s.admin_realm.clone()),
        ("username", json!(s.username).to_string()),
        ("password", s.password.clone().unwrap_or_default()),
        ("client_id", json!(s.client_id).to_string()),
        ("client_secret", s.client_secret.clone().unwrap_or_default()),
        ("is_default", s.is_default.to_string()),
    ]
}

fn server_change(
    home: &str,
    action: &str,
    before: Option<&KeycloakServerRecord>,
    after: Option<&KeycloakServerRecord>,
) -> Option<Change> {
    let id = after.or(before)?.id;
    let fields = match (before, after) {
        (Some(b), Some(a)) => changed(&server_fields(b), &server_fields(a)),
        (None, Some(a)) => set(&server_fields(a)),
        _ => Vec::new(),
    };
    Some(
        Change::tm(
            home,
            &format!("kaa:tenant:keycloak-server:{action}"),
            &format!("keycloak-server/{id}"),
        )
        .fields(fields),
    )
}

const SERVER_COLS: &str = "id, url, admin_realm, username, password, client_id, client_secret, \
                           is_default, created_ms, updated_ms";

fn server(r: &Row) -> Result<KeycloakServerRecord, StorageError> {
    Ok(KeycloakServerRecord {
        id: r.i64(0)?,
        url: r.string(1)?,
        admin_realm: r.string(2)?,
        username: r.opt_string(3)?,
        password: r.opt_string(4)?,
        client_id: r.opt_string(5)?,
        client_secret: r.opt_string(6)?,
        is_default: r.bool(7)?,
        created_ms: r.i64(8)?,
        updated_ms: r.i64(9)?,
    })
}

fn server_params(s: &KeycloakServerRecord) -> Vec<Val> {
    vec![
        Val::I64(s.id),
        Val::from(&s.url),
        Val::from(&s.admin_realm),
        Val::from(s.username.clone()),
        Val::from(s.password.clone()),
        Val::from(s.client_id.clone()),
        Val::from(s.client_secret.clone()),
        Val::Bool(s.is_default),
        Val::I64(s.created_ms),
        Val::I64(s.updated_ms),
    ]
}

fn get_server_tx(tx: &mut dyn Tx, id: i64) -> Result<KeycloakServerRecord, StorageError> {
    one(
        tx.query(
            &format!("SELECT {SERVER_COLS} FROM keycloak_servers WHERE id = $1"),
            &[Val::I64(id)],
        )?,
        server,
    )
}

/// A server written as the default one is the only one.
fn sole_default(tx: &mut dyn Tx, s: &KeycloakServerRecord) -> Result<(), StorageError> {
    if s.is_default {
        tx.execute(
            "UPDATE keycloak_servers SET is_default = $1",
            &[Val::Bool(false)],
        )?;
    }
    Ok(())
}

impl KeycloakServerStore for Database {
    fn insert_server(
        &self,
        s: &KeycloakServerRecord,
    ) -> Result<KeycloakServerRecord, StorageError> {
        let k = self.secret_keys();
        let home = self.audit_settings().home_tenant.clone();
        let plain = s;
        let s = &seal_server(&k, s)?;
        let out = self.tx(|tx| {
            if !tx
                .query(
                    "SELECT 1 FROM keycloak_servers WHERE id = $1",
                    &[Val::I64(s.id)],
                )?
                .is_empty()
            {
                return Err(StorageError::Conflict("server exists".into()));
            }
            sole_default(tx, s)?;
            insert_row(tx, "keycloak_servers", SERVER_COLS, &server_params(s))?;
            if let Some(c) = server_change(&home, "create", None, Some(plain)) {
                tx.record(c);
            }
            get_server_tx(tx, s.id)
        })?;
        open_server(&k, &out)
    }

    fn get_server(&self, id: i64) -> Result<KeycloakServerRecord, StorageError> {
        open_server(&self.secret_keys(), &self.tx(|tx| get_server_tx(tx, id))?)
    }

    fn list_servers(&self) -> Result<Vec<KeycloakServerRecord>, StorageError> {
        self.tx(|tx| {
            tx.query(
                &format!("SELECT {SERVER_COLS} FROM keycloak_servers ORDER BY id"),
                &[],
            )?
            .iter()
            .map(|r| open_server(&self.secret_keys(), &server(r)?))
            .collect()
        })
    }

    fn update_server(
        &self,
        s: &KeycloakServerRecord,
        events: EventFor,
    ) -> Result<KeycloakServerRecord, StorageError> {
        let k = self.secret_keys();
        let home = self.audit_settings().home_tenant.clone();
        let plain = s;
        let s = &seal_server(&k, s)?;
        let out = self.tx(|tx| {
            let cur = open_server(&k, &get_server_tx(tx, s.id)?)?;
            let hosted = tx.query(
                "SELECT id FROM tenants WHERE keycloak_server_id = $1 ORDER BY id",
                &[Val::I64(s.id)],
            )?;
            for row in hosted {
                if let Some(e) = events(&row.string(0)?)? {
                    emit(tx, &e, s.updated_ms)?;
                }
            }
            sole_default(tx, s)?;
            tx.execute(
                "UPDATE keycloak_servers SET url = $2, admin_realm = $3, username = $4, password = $5, \
                 client_id = $6, client_secret = $7, is_default = $8, created_ms = $9, updated_ms = $10 \
                 WHERE id = $1",
                &server_params(s),
            )?;
            if let Some(c) = server_change(&home, "update", Some(&cur), Some(plain)) {
                tx.record(c);
            }
            get_server_tx(tx, s.id)
        })?;
        open_server(&k, &out)
    }

    fn delete_server(&self, id: i64) -> Result<(), StorageError> {
        let home = self.audit_settings().home_tenant.clone();
        self.tx(|tx| {
            let cur = get_server_tx(tx, id)?;
            let used = count(
                tx,
                "SELECT COUNT(*) FROM tenants WHERE keycloak_server_id = $1 OR move_from = $1 \
                 OR move_to = $1",
                &[Val::I64(id)],
            )?;
            if used > 0 {
                return Err(StorageError::Conflict("server hosts tenants".into()));
            }
            tx.execute(
                "DELETE FROM keycloak_servers WHERE id = $1",
                &[Val::I64(id)],
            )?;
            if let Some(c) = server_change(&home, "delete", Some(&cur), None) {
                tx.record(c);
            }
            Ok(())
        })
    }
}
