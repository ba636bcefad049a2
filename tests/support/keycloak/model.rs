//! The in-memory model of a Keycloak server: realms, clients and their resource servers, roles,
//! users, and the defaults Keycloak gives them.

use super::*;

pub(super) struct Client {
    pub(super) id: String,
    pub(super) client_id: String,
    /// The stored representation (without `id`, `clientId`, `secret`).
    pub(super) rep: Map<String, Value>,
    pub(super) secret: Option<String>,
    pub(super) public: bool,
    /// Id of the service-account user (clients made through the admin API).
    pub(super) service_account: Option<String>,
    /// Clients of `add_client`: a service account without a user (`sa-<clientId>`).
    pub(super) helper_sa: bool,
    pub(super) authz: Option<ResourceServer>,
}

impl Client {
    pub(super) fn flag(&self, name: &str) -> bool {
        self.rep.get(name).and_then(Value::as_bool).unwrap_or(false)
    }

    pub(super) fn representation(&self) -> Value {
        let mut m = self.rep.clone();
        m.insert("id".into(), json!(self.id));
        m.insert("clientId".into(), json!(self.client_id));
        m.insert("publicClient".into(), json!(self.public));
        if let Some(s) = &self.secret {
            m.insert("secret".into(), json!(s));
        }
        m.insert(
            "authorizationServicesEnabled".into(),
            json!(self.authz.is_some()),
        );
        Value::Object(m)
    }
}

pub(super) struct ResourceServer {
    pub(super) id: String,
    /// Ids of new objects: the server's id prefix and a counter.
    pub(super) next: u64,
    pub(super) settings: Map<String, Value>,
    pub(super) scopes: Vec<Value>,
    pub(super) resources: Vec<Value>,
    pub(super) policies: Vec<Policy>,
}

#[derive(Clone)]
pub(super) struct Policy {
    pub(super) id: String,
    pub(super) name: String,
    /// `role`, `scope`, `resource`, `js`, …
    pub(super) kind: String,
    pub(super) description: Option<String>,
    pub(super) logic: String,
    pub(super) decision_strategy: String,
    /// Role policies: (role id, required).
    pub(super) roles: Vec<(String, bool)>,
    /// Permissions: scope ids, resource ids, policy ids; resource-type permissions.
    pub(super) scopes: Vec<String>,
    pub(super) resources: Vec<String>,
    pub(super) policies: Vec<String>,
    pub(super) resource_type: Option<String>,
}

impl ResourceServer {
    pub(super) fn fresh_id(&mut self) -> String {
        self.next += 1;
        format!("{}{:012x}", &self.id[..24], self.next)
    }
}

impl Policy {
    pub(super) fn is_permission(&self) -> bool {
        matches!(self.kind.as_str(), "scope" | "resource")
    }

    pub(super) fn brief(&self) -> Value {
        let mut v = json!({"id": self.id, "name": self.name, "type": self.kind,
            "logic": self.logic, "decisionStrategy": self.decision_strategy, "config": {}});
        if let Some(d) = &self.description {
            v["description"] = json!(d);
        }
        v
    }

    pub(super) fn typed(&self) -> Value {
        let mut v = self.brief();
        let m = v.as_object_mut().unwrap();
        m.remove("config");
        match self.kind.as_str() {
            "role" => {
                m.insert(
                    "roles".into(),
                    json!(
                        self.roles
                            .iter()
                            .map(|(id, req)| json!({"id": id, "required": req}))
                            .collect::<Vec<_>>()
                    ),
                );
            }
            _ => {
                m.insert("scopes".into(), json!(self.scopes));
                m.insert("resources".into(), json!(self.resources));
                m.insert("policies".into(), json!(self.policies));
                if let Some(t) = &self.resource_type {
                    m.insert("resourceType".into(), json!(t));
                }
            }
        }
        v
    }
}

pub(super) struct Role {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) description: Option<String>,
    pub(super) attributes: Value,
}

impl Role {
    pub(super) fn representation(&self, container: &str) -> Value {
        let mut v = json!({"id": self.id, "name": self.name, "composite": false,
            "clientRole": false, "containerId": container, "attributes": self.attributes});
        if let Some(d) = &self.description {
            v["description"] = json!(d);
        }
        v
    }
}

pub(super) struct User {
    pub(super) id: String,
    pub(super) username: String,
    pub(super) email: Option<String>,
    pub(super) rep: Map<String, Value>,
    pub(super) enabled: bool,
    pub(super) password: Option<String>,
    /// Realm role names.
    pub(super) roles: Vec<String>,
    pub(super) required_actions: Vec<String>,
    /// `execute-actions-email` calls: `{actions, client_id, redirect_uri, lifespan}`.
    pub(super) emails: Vec<Value>,
    pub(super) service_account_client: Option<String>,
    /// Ids of the client roles mapped to the user (`role-mappings/clients/{client}`).
    pub(super) client_roles: Vec<String>,
    pub(super) created: u64,
}

impl User {
    pub(super) fn representation(&self) -> Value {
        let mut m = self.rep.clone();
        m.insert("id".into(), json!(self.id));
        m.insert("username".into(), json!(self.username));
        if let Some(e) = &self.email {
            m.insert("email".into(), json!(e));
        }
        m.insert("enabled".into(), json!(self.enabled));
        m.insert("requiredActions".into(), json!(self.required_actions));
        m.insert("createdTimestamp".into(), json!(self.created * 1000));
        if let Some(c) = &self.service_account_client {
            m.insert("serviceAccountClientId".into(), json!(c));
        }
        m.remove("credentials");
        Value::Object(m)
    }
}

pub(super) struct Realm {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) rep: Map<String, Value>,
    /// Newest last; all are published. Made on first use (RSA key generation is slow).
    pub(super) keys: Vec<(String, RS256KeyPair)>,
    pub(super) token_lifespan: u64,
    pub(super) clients: Vec<Client>,
    pub(super) roles: Vec<Role>,
    pub(super) idps: Vec<Value>,
    pub(super) users: Vec<User>,
    /// Client roles: (client uuid, role).
    pub(super) client_roles: Vec<(String, Role)>,
    /// Components (user storage providers such as LDAP), with their `id`.
    pub(super) components: Vec<Value>,
    /// Tokens issued by the token endpoint (for revocation).
    pub(super) issued: Vec<String>,
    pub(super) token_requests: usize,
    /// The declarative user profile (`…/users/profile`), Keycloak 26's default at creation.
    pub(super) profile: Value,
}

/// Keycloak 26's default user profile, in short: e-mail and names required of users.
pub(super) fn default_user_profile() -> Value {
    let required = json!({"roles": ["user"]});
    json!({"attributes": [
        {"name": "username", "displayName": "${username}"},
        {"name": "email", "displayName": "${email}", "required": required},
        {"name": "firstName", "displayName": "${firstName}", "required": required},
        {"name": "lastName", "displayName": "${lastName}", "required": required},
    ], "groups": [{"name": "user-metadata"}]})
}

pub(super) const BUILTIN_CLIENTS: &[(&str, bool, bool)] = &[
    // (clientId, public, directAccessGrantsEnabled)
    ("account", true, false),
    ("account-console", true, false),
    ("admin-cli", true, true),
    ("broker", false, false),
    ("realm-management", false, false),
    ("security-admin-console", true, false),
];

/// The client roles of a realm's `realm-management` client (what its admin API checks).
pub(super) const REALM_MANAGEMENT_ROLES: &[&str] = &[
    "create-client",
    "impersonation",
    "manage-authorization",
    "manage-clients",
    "manage-events",
    "manage-identity-providers",
    "manage-realm",
    "manage-users",
    "query-clients",
    "query-groups",
    "query-realms",
    "query-users",
    "realm-admin",
    "view-authorization",
    "view-clients",
    "view-events",
    "view-identity-providers",
    "view-realm",
    "view-users",
];
