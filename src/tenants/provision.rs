//! Provisioning behind a trait: what a tenant's realm needs (the plan, from the tenant's template
//! versions) and who makes it. The local provisioner serves the embedded development run: it
//! records the realm in the catalogue and talks to no Keycloak. Every operation is idempotent:
//! a retry after a partial run finishes the job without duplicates.

use std::sync::Arc;

use serde_json::{Value, json};
use thiserror::Error;

use crate::clock::now_ms;
use crate::storage::{
    CatalogRecord, CatalogStore, Database, KeycloakServerRecord, StorageError, TenantRecord,
};

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProvisionError {
    /// Worth retrying (the server is down, slow or answered 5xx).
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help (a template Keycloak rejects).
    #[error("{0}")]
    Fatal(String),
}

impl From<StorageError> for ProvisionError {
    fn from(e: StorageError) -> ProvisionError {
        ProvisionError::Transient(e.to_string())
    }
}

/// A realm role and the scopes it grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRole {
    pub name: String,
    pub description: Option<String>,
    pub scopes: Vec<String>,
    /// The role's `template`: more of Keycloak's role representation (attributes, ...);
    /// the name and description above win over it.
    pub template: Option<Value>,
}

/// A default resource of the realm's resource server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedResource {
    pub name: String,
    pub resource_type: String,
    pub scopes: Vec<String>,
    /// The resource's `template`: more of Keycloak's resource representation (displayName,
    /// uris, attributes, ...); the name, type and scopes above win over it.
    pub template: Option<Value>,
}

/// Everything a tenant's realm is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub realm: Value,
    pub backend_client: Value,
    pub frontend_client: Value,
    pub scopes: Vec<String>,
    pub roles: Vec<PlannedRole>,
    pub resources: Vec<PlannedResource>,
    pub idps: Vec<Value>,
}

pub trait Provisioner: Send + Sync {
    /// Make the realm and everything in it (steps in the order of the spec).
    fn create(&self, t: &TenantRecord, plan: &Plan) -> Result<(), ProvisionError>;
    /// Bring an existing realm to the plan.
    fn update(&self, t: &TenantRecord, plan: &Plan) -> Result<(), ProvisionError>;
    /// Remove the realm (absent already is success).
    fn delete(&self, t: &TenantRecord) -> Result<(), ProvisionError>;
    /// The users of the realms this provisioner makes.
    fn users(&self) -> Arc<dyn super::users::TenantUsers>;
    /// The identity of the tenant's realm on this server, whoever made it (`None`: there is no
    /// realm of that name): Keycloak's internal realm id, the same whatever address the server is
    /// reached at, so two registered servers that are one Keycloak are told apart from two.
    fn realm_identity(&self, t: &TenantRecord) -> Result<Option<String>, ProvisionError>;
}

/// Chooses the provisioner of a tenant's Keycloak server.
pub trait Provisioners: Send + Sync {
    fn for_server(
        &self,
        server: Option<&KeycloakServerRecord>,
    ) -> Result<Arc<dyn Provisioner>, ProvisionError>;
}

/// The embedded run: realms are rows of the catalogue (kind `realm`).
pub struct LocalProvisioner {
    pub db: Arc<Database>,
}

impl Provisioner for LocalProvisioner {
    fn create(&self, t: &TenantRecord, plan: &Plan) -> Result<(), ProvisionError> {
        let body = json!({
            "tenant_id": t.id,
            "realm": t.realm_name,
            "roles": plan.roles.iter().map(|r| &r.name).collect::<Vec<_>>(),
            "scopes": plan.scopes,
            "resources": plan.resources.iter().map(|r| &r.name).collect::<Vec<_>>(),
            "frontend_client": t.client_frontend_id,
            "backend_client": t.client_backend_id,
        });
        let now = now_ms();
        self.db.ensure_entry(&CatalogRecord {
            kind: "realm".into(),
            id: t.realm_name.clone(),
            body: body.to_string(),
            created_ms: now,
            updated_ms: now,
        })?;
        Ok(())
    }

    fn update(&self, t: &TenantRecord, plan: &Plan) -> Result<(), ProvisionError> {
        match self.db.delete_entry("realm", &t.realm_name) {
            Ok(()) | Err(StorageError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        self.create(t, plan)
    }

    fn delete(&self, t: &TenantRecord) -> Result<(), ProvisionError> {
        match self.db.delete_entry("realm", &t.realm_name) {
            Ok(()) | Err(StorageError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        // The realm's users go with it.
        let prefix = format!("{}/", t.realm_name);
        for kind in ["tenant-user", "tenant-username"] {
            for e in self.db.list_entries(kind)? {
                if e.id.starts_with(&prefix) {
                    match self.db.delete_entry(kind, &e.id) {
                        Ok(()) | Err(StorageError::NotFound) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Ok(())
    }

    fn users(&self) -> Arc<dyn super::users::TenantUsers> {
        Arc::new(super::users::LocalUsers {
            db: Arc::clone(&self.db),
        })
    }

    fn realm_identity(&self, t: &TenantRecord) -> Result<Option<String>, ProvisionError> {
        match self.db.get_entry("realm", &t.realm_name) {
            Ok(_) => Ok(Some(format!("local/{}", t.realm_name))),
            Err(StorageError::NotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}
