//! What tests read back: a realm as a snapshot.

use super::*;

#[derive(Debug, Clone)]
pub struct ClientSnapshot {
    pub id: String,
    pub client_id: String,
    pub public_client: bool,
    pub secret: Option<String>,
    pub authorization: bool,
    pub service_accounts: bool,
    pub representation: Value,
}

#[derive(Debug, Clone)]
pub struct ResourceSnapshot {
    pub id: String,
    pub name: String,
    pub resource_type: Option<String>,
    /// Scope names.
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct PolicySnapshot {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub logic: String,
    pub decision_strategy: String,
    /// Role names (role policies).
    pub roles: Vec<String>,
    /// Scope, resource and policy names (permissions).
    pub scopes: Vec<String>,
    pub resources: Vec<String>,
    pub policies: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct UserSnapshot {
    pub id: String,
    pub username: String,
    pub email: Option<String>,
    pub enabled: bool,
    pub password: Option<String>,
    pub roles: Vec<String>,
    pub required_actions: Vec<String>,
    pub emails: Vec<Value>,
    pub service_account: bool,
    /// Client roles as `clientId/role`.
    pub client_roles: Vec<String>,
    /// Other attributes of the stored representation (firstName, lastName, ...).
    pub representation: Value,
}

/// Everything in one realm; the authorization lists cover every client's resource server.
#[derive(Debug, Clone)]
pub struct RealmSnapshot {
    pub name: String,
    pub representation: Value,
    pub roles: Vec<String>,
    pub clients: Vec<ClientSnapshot>,
    pub scopes: Vec<String>,
    pub resources: Vec<ResourceSnapshot>,
    pub policies: Vec<PolicySnapshot>,
    pub permissions: Vec<PolicySnapshot>,
    pub idps: Vec<Value>,
    pub components: Vec<Value>,
    pub users: Vec<UserSnapshot>,
}

pub(super) fn dupes<'a>(kind: &str, names: impl Iterator<Item = &'a str>, out: &mut Vec<String>) {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for n in names {
        *seen.entry(n).or_default() += 1;
    }
    for (n, c) in seen {
        if c > 1 {
            out.push(format!("{kind} `{n}` x{c}"));
        }
    }
}

impl RealmSnapshot {
    pub fn client(&self, client_id: &str) -> Option<&ClientSnapshot> {
        self.clients.iter().find(|c| c.client_id == client_id)
    }

    pub fn user(&self, username: &str) -> Option<&UserSnapshot> {
        self.users.iter().find(|u| u.username == username)
    }

    pub fn permission(&self, name: &str) -> Option<&PolicySnapshot> {
        self.permissions.iter().find(|p| p.name == name)
    }

    pub fn policy(&self, name: &str) -> Option<&PolicySnapshot> {
        self.policies.iter().find(|p| p.name == name)
    }

    pub fn resource(&self, name: &str) -> Option<&ResourceSnapshot> {
        self.resources.iter().find(|r| r.name == name)
    }

    /// Names that occur more than once in any list (`kind `name` xN`).
    pub fn duplicates(&self) -> Vec<String> {
        let mut out = Vec::new();
        dupes("role", self.roles.iter().map(String::as_str), &mut out);
        dupes(
            "client",
            self.clients.iter().map(|c| c.client_id.as_str()),
            &mut out,
        );
        dupes("scope", self.scopes.iter().map(String::as_str), &mut out);
        dupes(
            "resource",
            self.resources.iter().map(|r| r.name.as_str()),
            &mut out,
        );
        dupes(
            "policy",
            self.policies
                .iter()
                .chain(&self.permissions)
                .map(|p| p.name.as_str()),
            &mut out,
        );
        dupes(
            "idp",
            self.idps.iter().filter_map(|i| i["alias"].as_str()),
            &mut out,
        );
        dupes(
            "user",
            self.users.iter().map(|u| u.username.as_str()),
            &mut out,
        );
        dupes(
            "component",
            self.components.iter().filter_map(|c| c["name"].as_str()),
            &mut out,
        );
        out
    }

    /// The component of that name, if any.
    pub fn component(&self, name: &str) -> Option<&Value> {
        self.components.iter().find(|c| c["name"] == name)
    }

    /// Object counts by kind.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        BTreeMap::from([
            ("roles", self.roles.len()),
            ("clients", self.clients.len()),
            ("scopes", self.scopes.len()),
            ("resources", self.resources.len()),
            ("policies", self.policies.len()),
            ("permissions", self.permissions.len()),
            ("idps", self.idps.len()),
            ("users", self.users.len()),
        ])
    }
}

pub(super) fn snapshot(r: &Realm) -> RealmSnapshot {
    let role_name = |id: &str| {
        r.roles
            .iter()
            .find(|x| x.id == id)
            .map_or(id.to_string(), |x| x.name.clone())
    };
    let mut scopes = Vec::new();
    let mut resources = Vec::new();
    let mut policies = Vec::new();
    let mut permissions = Vec::new();
    for c in &r.clients {
        let Some(rs) = &c.authz else { continue };
        let scope_name = |id: &String| {
            rs.scopes
                .iter()
                .find(|s| s["id"] == id.as_str())
                .and_then(|s| s["name"].as_str())
                .unwrap_or(id)
                .to_string()
        };
        scopes.extend(
            rs.scopes
                .iter()
                .map(|s| s["name"].as_str().unwrap().to_string()),
        );
        for res in &rs.resources {
            resources.push(ResourceSnapshot {
                id: res["_id"].as_str().unwrap().to_string(),
                name: res["name"].as_str().unwrap().to_string(),
                resource_type: res["type"].as_str().map(String::from),
                scopes: res["scopes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|id| scope_name(&id.as_str().unwrap().to_string()))
                    .collect(),
            });
        }
        for p in &rs.policies {
            let snap = PolicySnapshot {
                id: p.id.clone(),
                name: p.name.clone(),
                kind: p.kind.clone(),
                logic: p.logic.clone(),
                decision_strategy: p.decision_strategy.clone(),
                roles: p.roles.iter().map(|(id, _)| role_name(id)).collect(),
                scopes: p.scopes.iter().map(scope_name).collect(),
                resources: p
                    .resources
                    .iter()
                    .map(|id| {
                        rs.resources
                            .iter()
                            .find(|x| x["_id"] == id.as_str())
                            .and_then(|x| x["name"].as_str())
                            .unwrap_or(id)
                            .to_string()
                    })
                    .collect(),
                policies: p
                    .policies
                    .iter()
                    .map(|id| {
                        rs.policies
                            .iter()
                            .find(|x| x.id == *id)
                            .map_or(id.clone(), |x| x.name.clone())
                    })
                    .collect(),
            };
            if p.is_permission() {
                permissions.push(snap);
            } else {
                policies.push(snap);
            }
        }
    }
    RealmSnapshot {
        name: r.name.clone(),
        representation: realm_rep(r),
        roles: r.roles.iter().map(|x| x.name.clone()).collect(),
        clients: r
            .clients
            .iter()
            .map(|c| ClientSnapshot {
                id: c.id.clone(),
                client_id: c.client_id.clone(),
                public_client: c.public,
                secret: c.secret.clone(),
                authorization: c.authz.is_some(),
                service_accounts: c.flag("serviceAccountsEnabled"),
                representation: c.representation(),
            })
            .collect(),
        scopes,
        resources,
        policies,
        permissions,
        idps: r.idps.clone(),
        components: r.components.clone(),
        users: r
            .users
            .iter()
            .map(|u| UserSnapshot {
                id: u.id.clone(),
                username: u.username.clone(),
                email: u.email.clone(),
                enabled: u.enabled,
                password: u.password.clone(),
                roles: u.roles.clone(),
                required_actions: u.required_actions.clone(),
                emails: u.emails.clone(),
                service_account: u.service_account_client.is_some(),
                client_roles: r
                    .client_roles
                    .iter()
                    .filter(|(_, x)| u.client_roles.contains(&x.id))
                    .filter_map(|(c, x)| {
                        let c = r.clients.iter().find(|k| &k.id == c)?;
                        Some(format!("{}/{}", c.client_id, x.name))
                    })
                    .collect(),
                representation: u.representation(),
            })
            .collect(),
    }
}
