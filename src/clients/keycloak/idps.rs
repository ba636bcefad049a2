//! Identity providers and user-federation components (LDAP, Active Directory) of a realm.

use super::KeycloakAdmin;
use super::transport::{Method, Result, encode};
use serde_json::Value;

impl KeycloakAdmin {
    /// `POST …/identity-provider/instances` with `{alias, providerId, enabled, config}`.
    pub fn create_idp(&self, realm: &str, rep: &Value) -> Result<()> {
        self.send(
            Method::Post,
            &format!("/{}/identity-provider/instances", encode(realm)),
            &[],
            Some(rep),
        )
        .map(|_| ())
    }

    pub fn get_idp(&self, realm: &str, alias: &str) -> Result<Value> {
        self.get_json(
            &format!(
                "/{}/identity-provider/instances/{}",
                encode(realm),
                encode(alias)
            ),
            &[],
        )
    }

    pub fn list_idps(&self, realm: &str) -> Result<Vec<Value>> {
        self.get_list(
            &format!("/{}/identity-provider/instances", encode(realm)),
            &[],
        )
    }

    pub fn update_idp(&self, realm: &str, alias: &str, rep: &Value) -> Result<()> {
        self.put(
            &format!(
                "/{}/identity-provider/instances/{}",
                encode(realm),
                encode(alias)
            ),
            rep,
        )
    }

    pub fn delete_idp(&self, realm: &str, alias: &str) -> Result<()> {
        self.delete(&format!(
            "/{}/identity-provider/instances/{}",
            encode(realm),
            encode(alias)
        ))
    }

    /// `GET …/components?type=&name=` (names are not unique in Keycloak).
    pub fn list_components(
        &self,
        realm: &str,
        provider_type: &str,
        name: Option<&str>,
    ) -> Result<Vec<Value>> {
        let mut q = vec![("type", provider_type)];
        if let Some(n) = name {
            q.push(("name", n));
        }
        self.get_list(&format!("/{}/components", encode(realm)), &q)
    }

    /// `POST …/components`; returns the new component's id.
    pub fn create_component(&self, realm: &str, rep: &Value) -> Result<String> {
        self.create_located(&format!("/{}/components", encode(realm)), rep)
    }

    pub fn update_component(&self, realm: &str, id: &str, rep: &Value) -> Result<()> {
        self.put(
            &format!("/{}/components/{}", encode(realm), encode(id)),
            rep,
        )
    }

    pub fn delete_component(&self, realm: &str, id: &str) -> Result<()> {
        self.delete(&format!("/{}/components/{}", encode(realm), encode(id)))
    }
}
