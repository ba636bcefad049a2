//! Authorization services of a client: its resource server, scopes, resources, role policies and
//! scope permissions.

use super::KeycloakAdmin;
use super::transport::{LOOKUP_MAX, Result, encode, named};
use serde_json::Value;

impl KeycloakAdmin {
    /// `…/clients/{client}/authz/resource-server{rest}`.
    fn authz(realm: &str, client: &str, rest: &str) -> String {
        format!(
            "/{}/clients/{}/authz/resource-server{rest}",
            encode(realm),
            encode(client)
        )
    }

    /// The object `id` of `kind` (`scope`, `resource`, `policy/role`, ...).
    fn authz_object(realm: &str, client: &str, kind: &str, id: &str) -> String {
        Self::authz(realm, client, &format!("/{kind}/{}", encode(id)))
    }

    /// The objects of `kind` (`query`: Keycloak's filters), up to [`LOOKUP_MAX`].
    fn list_authz(
        &self,
        realm: &str,
        client: &str,
        kind: &str,
        query: &[(&str, &str)],
    ) -> Result<Vec<Value>> {
        let mut q = query.to_vec();
        q.extend([("first", "0"), ("max", LOOKUP_MAX)]);
        self.get_list(&Self::authz(realm, client, &format!("/{kind}")), &q)
    }

    /// The object of `kind` named exactly `name` (`query`: more of Keycloak's filters).
    fn find_authz(
        &self,
        realm: &str,
        client: &str,
        kind: &str,
        name: &str,
        query: &[(&str, &str)],
    ) -> Result<Option<Value>> {
        let mut q = vec![("name", name)];
        q.extend_from_slice(query);
        let list = self.list_authz(realm, client, kind, &q)?;
        Ok(named(&list, name).cloned())
    }

    /// The resource server settings of a client with authorization services.
    pub fn resource_server(&self, realm: &str, client: &str) -> Result<Value> {
        self.get_json(&Self::authz(realm, client, ""), &[])
    }

    /// `POST …/authz/resource-server/scope` with `{name}`: the new scope (with its `id`).
    pub fn create_authz_scope(&self, realm: &str, client: &str, rep: &Value) -> Result<Value> {
        self.create_returning(&Self::authz(realm, client, "/scope"), rep)
    }

    pub fn list_authz_scopes(&self, realm: &str, client: &str) -> Result<Vec<Value>> {
        self.list_authz(realm, client, "scope", &[])
    }

    /// The scope with exactly this name.
    pub fn find_authz_scope(&self, realm: &str, client: &str, name: &str) -> Result<Option<Value>> {
        self.find_authz(realm, client, "scope", name, &[])
    }

    pub fn update_authz_scope(
        &self,
        realm: &str,
        client: &str,
        id: &str,
        rep: &Value,
    ) -> Result<()> {
        self.put(&Self::authz_object(realm, client, "scope", id), rep)
    }

    pub fn delete_authz_scope(&self, realm: &str, client: &str, id: &str) -> Result<()> {
        self.delete(&Self::authz_object(realm, client, "scope", id))
    }

    /// `POST …/authz/resource-server/resource` with `{name, type, scopes: [{name}]}`: the new
    /// resource (its id is `_id`, see [`object_id`](super::object_id)).
    pub fn create_resource(&self, realm: &str, client: &str, rep: &Value) -> Result<Value> {
        self.create_returning(&Self::authz(realm, client, "/resource"), rep)
    }

    pub fn list_resources(&self, realm: &str, client: &str) -> Result<Vec<Value>> {
        self.list_authz(realm, client, "resource", &[])
    }

    pub fn find_resource(&self, realm: &str, client: &str, name: &str) -> Result<Option<Value>> {
        self.find_authz(realm, client, "resource", name, &[("exactName", "true")])
    }

    pub fn update_resource(&self, realm: &str, client: &str, id: &str, rep: &Value) -> Result<()> {
        self.put(&Self::authz_object(realm, client, "resource", id), rep)
    }

    pub fn delete_resource(&self, realm: &str, client: &str, id: &str) -> Result<()> {
        self.delete(&Self::authz_object(realm, client, "resource", id))
    }

    /// `POST …/policy/role` with `{name, roles: [{id, required}], logic}`: the new policy.
    pub fn create_role_policy(&self, realm: &str, client: &str, rep: &Value) -> Result<Value> {
        self.create_returning(&Self::authz(realm, client, "/policy/role"), rep)
    }

    pub fn update_role_policy(
        &self,
        realm: &str,
        client: &str,
        id: &str,
        rep: &Value,
    ) -> Result<()> {
        self.put(&Self::authz_object(realm, client, "policy/role", id), rep)
    }

    /// Policies and permissions alike (`permission` filters to one or the other).
    pub fn list_policies(
        &self,
        realm: &str,
        client: &str,
        permission: Option<bool>,
    ) -> Result<Vec<Value>> {
        let q: &[(&str, &str)] = match permission {
            Some(true) => &[("permission", "true")],
            Some(false) => &[("permission", "false")],
            None => &[],
        };
        self.list_authz(realm, client, "policy", q)
    }

    /// The policy or permission with exactly this name (they share one namespace).
    pub fn find_policy(&self, realm: &str, client: &str, name: &str) -> Result<Option<Value>> {
        self.find_authz(realm, client, "policy", name, &[])
    }

    /// Removes a policy or a permission.
    pub fn delete_policy(&self, realm: &str, client: &str, id: &str) -> Result<()> {
        self.delete(&Self::authz_object(realm, client, "policy", id))
    }

    /// `POST …/permission/scope` with `{name, scopes, policies, decisionStrategy}` (scopes and
    /// policies by id or name): the new permission.
    pub fn create_scope_permission(&self, realm: &str, client: &str, rep: &Value) -> Result<Value> {
        self.create_returning(&Self::authz(realm, client, "/permission/scope"), rep)
    }

    pub fn update_scope_permission(
        &self,
        realm: &str,
        client: &str,
        id: &str,
        rep: &Value,
    ) -> Result<()> {
        self.put(
            &Self::authz_object(realm, client, "permission/scope", id),
            rep,
        )
    }
}
