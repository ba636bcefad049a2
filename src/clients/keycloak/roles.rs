//! Realm roles and the realm roles of a user.

use super::KeycloakAdmin;
use super::transport::{Method, Result, encode, object_id};
use serde_json::{Value, json};

impl KeycloakAdmin {
    /// `POST …/roles` with `{name, description}`.
    pub fn create_role(&self, realm: &str, rep: &Value) -> Result<()> {
        self.send(
            Method::Post,
            &format!("/{}/roles", encode(realm)),
            &[],
            Some(rep),
        )
        .map(|_| ())
    }

    pub fn get_role(&self, realm: &str, name: &str) -> Result<Value> {
        self.get_json(&format!("/{}/roles/{}", encode(realm), encode(name)), &[])
    }

    /// Every realm role (brief representations: id, name, description).
    pub fn list_roles(&self, realm: &str) -> Result<Vec<Value>> {
        self.get_list(
            &format!("/{}/roles", encode(realm)),
            &[("briefRepresentation", "true")],
        )
    }

    pub fn update_role(&self, realm: &str, name: &str, rep: &Value) -> Result<()> {
        self.put(&format!("/{}/roles/{}", encode(realm), encode(name)), rep)
    }

    pub fn delete_role(&self, realm: &str, name: &str) -> Result<()> {
        self.delete(&format!("/{}/roles/{}", encode(realm), encode(name)))
    }

    pub fn realm_role_mappings(&self, realm: &str, user: &str) -> Result<Vec<Value>> {
        self.get_list(&Self::user_path(realm, user, "/role-mappings/realm"), &[])
    }

    /// `POST …/role-mappings/realm` with role representations (Keycloak wants `id` and `name`).
    pub fn add_realm_role_mappings(&self, realm: &str, user: &str, roles: &[Value]) -> Result<()> {
        self.send(
            Method::Post,
            &Self::user_path(realm, user, "/role-mappings/realm"),
            &[],
            Some(&Value::Array(roles.to_vec())),
        )
        .map(|_| ())
    }

    pub fn remove_realm_role_mappings(
        &self,
        realm: &str,
        user: &str,
        roles: &[Value],
    ) -> Result<()> {
        self.send(
            Method::Delete,
            &Self::user_path(realm, user, "/role-mappings/realm"),
            &[],
            Some(&Value::Array(roles.to_vec())),
        )
        .map(|_| ())
    }

    /// Give a user a realm role by name (looks the role's id up first).
    pub fn grant_realm_role(&self, realm: &str, user: &str, role: &str) -> Result<()> {
        let r = self.get_role(realm, role)?;
        let rep = json!({"id": object_id(&r).unwrap_or_default(), "name": role});
        self.add_realm_role_mappings(realm, user, &[rep])
    }

    /// Take a realm role from a user by name.
    pub fn revoke_realm_role(&self, realm: &str, user: &str, role: &str) -> Result<()> {
        let r = self.get_role(realm, role)?;
        let rep = json!({"id": object_id(&r).unwrap_or_default(), "name": role});
        self.remove_realm_role_mappings(realm, user, &[rep])
    }
}
