//! Clients of a realm: the clients, their secrets, service accounts and client roles.

use super::KeycloakAdmin;
use super::transport::{KeycloakError, Method, Result, encode, object_id};
use serde_json::Value;

impl KeycloakAdmin {
    /// `POST …/clients`: the new client's uuid.
    pub fn create_client(&self, realm: &str, rep: &Value) -> Result<String> {
        self.create_located(&format!("/{}/clients", encode(realm)), rep)
    }

    /// The client with this `clientId`, if any.
    pub fn find_client(&self, realm: &str, client_id: &str) -> Result<Option<Value>> {
        let list = self.get_list(
            &format!("/{}/clients", encode(realm)),
            &[("clientId", client_id)],
        )?;
        Ok(list
            .into_iter()
            .find(|c| c.get("clientId").and_then(Value::as_str) == Some(client_id)))
    }

    /// The uuid of the client with this `clientId` (`NotFound` without one).
    pub fn client_uuid(&self, realm: &str, client_id: &str) -> Result<String> {
        self.find_client(realm, client_id)?
            .as_ref()
            .and_then(object_id)
            .ok_or_else(|| {
                KeycloakError::NotFound(format!("client `{client_id}` in realm `{realm}`"))
            })
    }

    pub fn get_client(&self, realm: &str, uuid: &str) -> Result<Value> {
        self.get_json(&format!("/{}/clients/{}", encode(realm), encode(uuid)), &[])
    }

    pub fn update_client(&self, realm: &str, uuid: &str, rep: &Value) -> Result<()> {
        self.put(&format!("/{}/clients/{}", encode(realm), encode(uuid)), rep)
    }

    pub fn delete_client(&self, realm: &str, uuid: &str) -> Result<()> {
        self.delete(&format!("/{}/clients/{}", encode(realm), encode(uuid)))
    }

    /// The secret of a confidential client.
    pub fn client_secret(&self, realm: &str, uuid: &str) -> Result<String> {
        let v = self.get_json(
            &format!("/{}/clients/{}/client-secret", encode(realm), encode(uuid)),
            &[],
        )?;
        Ok(v.get("value")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string())
    }

    /// `GET …/clients/{uuid}/service-account-user`.
    pub fn service_account_user(&self, realm: &str, client_uuid: &str) -> Result<Value> {
        self.get_json(
            &format!(
                "/{}/clients/{}/service-account-user",
                encode(realm),
                encode(client_uuid)
            ),
            &[],
        )
    }

    /// `GET …/clients/{uuid}/roles`.
    pub fn list_client_roles(&self, realm: &str, client_uuid: &str) -> Result<Vec<Value>> {
        self.get_list(
            &format!("/{}/clients/{}/roles", encode(realm), encode(client_uuid)),
            &[],
        )
    }

    /// `GET …/users/{id}/role-mappings/clients/{uuid}`.
    pub fn client_role_mappings(
        &self,
        realm: &str,
        user: &str,
        client_uuid: &str,
    ) -> Result<Vec<Value>> {
        let rest = format!("/role-mappings/clients/{}", encode(client_uuid));
        self.get_list(&Self::user_path(realm, user, &rest), &[])
    }

    /// `POST …/users/{id}/role-mappings/clients/{uuid}` with role representations (mapping a
    /// role the user holds already is no error).
    pub fn add_client_role_mappings(
        &self,
        realm: &str,
        user: &str,
        client_uuid: &str,
        roles: &[Value],
    ) -> Result<()> {
        let rest = format!("/role-mappings/clients/{}", encode(client_uuid));
        self.send(
            Method::Post,
            &Self::user_path(realm, user, &rest),
            &[],
            Some(&Value::Array(roles.to_vec())),
        )
        .map(|_| ())
    }
}
