//! Realms and their declarative user profile.

use super::KeycloakAdmin;
use super::transport::{KeycloakError, Method, Result, encode};
use serde_json::Value;

impl KeycloakAdmin {
    /// `POST /admin/realms` with a `RealmRepresentation` (its `realm` is the name).
    pub fn create_realm(&self, rep: &Value) -> Result<()> {
        self.send(Method::Post, "", &[], Some(rep)).map(|_| ())
    }

    pub fn get_realm(&self, realm: &str) -> Result<Value> {
        self.get_json(&format!("/{}", encode(realm)), &[])
    }

    pub fn update_realm(&self, realm: &str, rep: &Value) -> Result<()> {
        self.put(&format!("/{}", encode(realm)), rep)
    }

    pub fn delete_realm(&self, realm: &str) -> Result<()> {
        self.delete(&format!("/{}", encode(realm)))
    }

    /// `GET …/users/profile`: the realm's declarative user profile (Keycloak 24 and later);
    /// `None` where the server has none.
    pub fn user_profile(&self, realm: &str) -> Result<Option<Value>> {
        match self.get_json(&format!("/{}/users/profile", encode(realm)), &[]) {
            Ok(v) => Ok(Some(v)),
            Err(KeycloakError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `PUT …/users/profile`.
    pub fn update_user_profile(&self, realm: &str, rep: &Value) -> Result<()> {
        self.put(&format!("/{}/users/profile", encode(realm)), rep)
    }
}
