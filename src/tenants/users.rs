//! Tenant users (spec/tenant-manager.md §2 entity 2, §4.3, §5): the users of a tenant's realm,
//! who can be made tenant administrators by giving them the realm role `tenant-admin` (or any
//! other role of the tenant's plan). On a Keycloak server they are the realm's users through the
//! admin API (`POST/GET/PUT/DELETE …/users`, `reset-password`, realm role mappings); in the
//! embedded run (no Keycloak) they are kept in the catalogue with an Argon2 hash of the password.
//! Passwords are write-only: no answer carries one.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::err::TmError;
use crate::clients::keycloak::{KeycloakAdmin, KeycloakError, NewUser, UserQuery, object_id};
use crate::clock::{now_ms, rfc3339_ms};
use crate::storage::{CatalogRecord, CatalogStore, Database, StorageError};

/// A user of a tenant's realm as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantUser {
    pub id: String,
    pub username: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub enabled: bool,
    /// Realm roles of the tenant's plan the user holds.
    pub roles: Vec<String>,
    pub created_ms: i64,
    /// Kept by a user federation (LDAP, Active Directory), not by the realm itself.
    pub federated: bool,
}

impl TenantUser {
    pub fn view(&self, tenant: &str) -> Value {
        json!({
            "id": self.id,
            "tenant_id": tenant,
            "username": self.username,
            "email": self.email,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "enabled": self.enabled,
            "roles": self.roles,
            "created": rfc3339_ms(self.created_ms),
        })
    }
}

/// The names of the fields a write changed (`before` absent: a create, the fields it set): the
/// trail's `fields`, with `password` named when one was given, never shown.
pub fn changed_fields(
    before: Option<&TenantUser>,
    after: &TenantUser,
    input: &UserInput,
) -> Vec<String> {
    let fields = |u: &TenantUser| -> Vec<(&'static str, Value)> {
        vec![
            ("username", json!(u.username)),
            ("email", json!(u.email)),
            ("first_name", json!(u.first_name)),
            ("last_name", json!(u.last_name)),
            ("enabled", json!(u.enabled)),
            ("roles", json!(u.roles)),
        ]
    };
    let now = fields(after);
    let mut out: Vec<String> = match before {
        Some(b) => {
            let was = fields(b);
            now.iter()
                .zip(was.iter())
                .filter(|((_, a), (_, b))| a != b)
                .map(|((n, _), _)| (*n).to_string())
                .collect()
        }
        None => now
            .iter()
            .filter(|(_, v)| !v.is_null() && *v != json!([]))
            .map(|(n, _)| (*n).to_string())
            .collect(),
    };
    if input.password.is_some() {
        out.push("password".into());
        if input.temporary_password {
            out.push("temporary_password".into());
        }
    }
    out
}

/// A create or an update (`None`: not given).
#[derive(Debug, Clone, Default)]
pub struct UserInput {
    pub username: Option<String>,
    pub email: Option<Option<String>>,
    pub first_name: Option<Option<String>>,
    pub last_name: Option<Option<String>>,
    pub enabled: Option<bool>,
    pub password: Option<String>,
    /// The user must change the password at the next login.
    pub temporary_password: bool,
    pub roles: Option<Vec<String>>,
}

const FIELDS: &[&str] = &[
    "username",
    "email",
    "first_name",
    "last_name",
    "enabled",
    "password",
    "temporary_password",
    "roles",
];

fn valid_username(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'@' | b'.'))
}

fn valid_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && s.len() <= 254
                && !s.chars().any(|c| c.is_whitespace() || c.is_control())
                && !domain.contains('@')
        }
        None => false,
    }
}

/// Read a create (`create`) or update body; `roles` must be among `known_roles`.
pub fn parse_input(
    body: &Value,
    create: bool,
    known_roles: &[String],
) -> Result<UserInput, TmError> {
    let Value::Object(b) = body else {
        return Err(TmError::invalid("the body must be a JSON object"));
    };
    if let Some(k) = b.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(TmError::field(
            k,
            format!("unknown field; the fields are {}", FIELDS.join(", ")),
        ));
    }
    let text = |k: &str, max: usize| -> Result<Option<Option<String>>, TmError> {
        match b.get(k) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::String(s)) if s.chars().count() > max => {
                Err(TmError::field(k, format!("at most {max} characters")))
            }
            Some(Value::String(s)) if s.chars().any(char::is_control) => {
                Err(TmError::field(k, "must not hold control characters"))
            }
            Some(Value::String(s)) => Ok(Some(Some(s.clone()).filter(|s| !s.is_empty()))),
            Some(_) => Err(TmError::field(k, "must be a string")),
        }
    };
    let flag = |k: &str| -> Result<Option<bool>, TmError> {
        match b.get(k) {
            None => Ok(None),
            Some(Value::Bool(x)) => Ok(Some(*x)),
            Some(_) => Err(TmError::field(k, "must be true or false")),
        }
    };
    let username = match b.get("username") {
        None if create => return Err(TmError::field("username", "is required")),
        None => None,
        Some(_) if !create => {
            return Err(TmError::field(
                "username",
                "cannot change; delete the user and create another",
            ));
        }
        Some(Value::String(s)) if valid_username(s) => Some(s.to_lowercase()),
        Some(_) => {
            return Err(TmError::field(
                "username",
                "1 to 255 of letters, digits and _ - @ .",
            ));
        }
    };
    let email = text("email", 254)?;
    if let Some(Some(e)) = &email
        && !valid_email(e)
    {
        return Err(TmError::field(
            "email",
            format!("`{e}` is not an e-mail address"),
        ));
    }
    let password = match b.get("password") {
        None if create => return Err(TmError::field("password", "is required")),
        None => None,
        Some(Value::String(p)) if p.chars().count() < 8 => {
            return Err(TmError::field("password", "at least 8 characters"));
        }
        Some(Value::String(p)) if p.chars().count() > 256 => {
            return Err(TmError::field("password", "at most 256 characters"));
        }
        Some(Value::String(p)) => Some(p.clone()),
        Some(_) => return Err(TmError::field("password", "must be a string")),
    };
    let roles = match b.get("roles") {
        None => None,
        Some(Value::Array(a)) => {
            let mut out: Vec<String> = Vec::new();
            for r in a {
                let Some(name) = r.as_str() else {
                    return Err(TmError::field("roles", "must be a list of role names"));
                };
                if !known_roles.iter().any(|k| k == name) {
                    return Err(TmError::field(
                        "roles",
                        format!(
                            "`{name}` is not a role of the tenant; its roles are {}",
                            known_roles.join(", ")
                        ),
                    ));
                }
                if !out.iter().any(|x| x == name) {
                    out.push(name.to_string());
                }
            }
            Some(out)
        }
        Some(_) => return Err(TmError::field("roles", "must be a list of role names")),
    };
    Ok(UserInput {
        username,
        email: email.map(|e| e.map(|e| e.to_lowercase())),
        first_name: text("first_name", 255)?,
        last_name: text("last_name", 255)?,
        enabled: flag("enabled")?,
        password,
        temporary_password: flag("temporary_password")?.unwrap_or(false),
        roles,
    })
}

/// Where a tenant's users live.
pub trait TenantUsers: Send + Sync {
    /// Users whose username contains `username` (all without), `offset`/`limit` (None: all),
    /// and how many match in all. `roles` are the plan's roles (what `roles` may show).
    fn list(
        &self,
        realm: &str,
        roles: &[String],
        username: Option<&str>,
        offset: i64,
        limit: Option<i64>,
    ) -> Result<(u64, Vec<TenantUser>), TmError>;
    fn get(&self, realm: &str, roles: &[String], id: &str) -> Result<TenantUser, TmError>;
    fn create(&self, realm: &str, roles: &[String], u: &UserInput) -> Result<TenantUser, TmError>;
    fn update(
        &self,
        realm: &str,
        roles: &[String],
        id: &str,
        u: &UserInput,
    ) -> Result<TenantUser, TmError>;
    fn delete(&self, realm: &str, id: &str) -> Result<(), TmError>;
    /// Create a user so that a later attempt of the same work finds the one an earlier attempt
    /// made: the user carries `marker` (kept by the caller), and a user of that name that
    /// carries it is taken as made (its roles set again); any other user of that name is a
    /// conflict.
    fn create_marked(
        &self,
        realm: &str,
        roles: &[String],
        u: &UserInput,
        marker: &str,
    ) -> Result<TenantUser, TmError>;
    /// Make a copy of a user of another realm: names, e-mail, `enabled` and the plan's roles,
    /// without a password (none can be read from a realm); the user must choose one (Keycloak's
    /// required action `UPDATE_PASSWORD`, set through a reset or the forgotten-password flow).
    /// A user of that name there already is left as it is; whether the copy was made.
    fn copy_in(&self, realm: &str, roles: &[String], u: &TenantUser) -> Result<bool, TmError>;
}

/// Keycloak's required action that makes a user choose a new password.
pub const UPDATE_PASSWORD: &str = "UPDATE_PASSWORD";

fn not_found(id: &str) -> TmError {
    TmError::NotFound(format!("tenant user `{id}` not found"))
}

/// Keycloak's answers as the API shows them: its conflicts and refusals are the caller's, no
/// answer or a 5xx is 503.
fn kc_error(what: &str, e: KeycloakError) -> TmError {
    match e {
        KeycloakError::Conflict(m) => TmError::Conflict(format!("Keycloak: {m}")),
        KeycloakError::Server(400, m) => TmError::invalid(format!("Keycloak refused {what}: {m}")),
        KeycloakError::NotFound(m) => TmError::NotFound(format!("Keycloak: {what}: {m}")),
        other => TmError::Unavailable(format!("Keycloak: cannot {what}: {other}")),
    }
}

/// The users of realms on one Keycloak server.
pub struct KeycloakUsers {
    pub kc: Arc<KeycloakAdmin>,
}

impl KeycloakUsers {
    fn user_of(&self, realm: &str, roles: &[String], rep: &Value) -> Result<TenantUser, TmError> {
        let id = object_id(rep).unwrap_or_default();
        let held = self
            .kc
            .realm_role_mappings(realm, &id)
            .map_err(|e| kc_error("read the user's roles", e))?;
        let s = |k: &str| rep.get(k).and_then(Value::as_str).map(String::from);
        Ok(TenantUser {
            id: id.clone(),
            username: s("username").unwrap_or_default(),
            email: s("email"),
            first_name: s("firstName"),
            last_name: s("lastName"),
            enabled: rep.get("enabled").and_then(Value::as_bool).unwrap_or(false),
            roles: roles
                .iter()
                .filter(|r| {
                    held.iter()
                        .any(|h| h.get("name").and_then(Value::as_str) == Some(r.as_str()))
                })
                .cloned()
                .collect(),
            created_ms: rep
                .get("createdTimestamp")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            federated: rep.get("federationLink").is_some_and(|l| !l.is_null()),
        })
    }

    /// Give or take the plan's roles so that the user holds exactly `want` of them.
    fn set_roles(
        &self,
        realm: &str,
        id: &str,
        roles: &[String],
        want: &[String],
    ) -> Result<(), TmError> {
        let held: Vec<String> = self
            .kc
            .realm_role_mappings(realm, id)
            .map_err(|e| kc_error("read the user's roles", e))?
            .iter()
            .filter_map(|r| r.get("name").and_then(Value::as_str).map(String::from))
            .collect();
        for r in roles {
            let has = held.contains(r);
            let wanted = want.contains(r);
            if wanted && !has {
                self.kc
                    .grant_realm_role(realm, id, r)
                    .map_err(|e| kc_error(&format!("give the role `{r}`"), e))?;
            } else if has && !wanted {
                self.kc
                    .revoke_realm_role(realm, id, r)
                    .map_err(|e| kc_error(&format!("take the role `{r}`"), e))?;
            }
        }
        Ok(())
    }
}

/// The Keycloak user of a create.
fn new_user(u: &UserInput) -> NewUser {
    NewUser {
        username: u.username.clone().unwrap_or_default(),
        email: u.email.clone().flatten(),
        first_name: u.first_name.clone().flatten(),
        last_name: u.last_name.clone().flatten(),
        enabled: u.enabled.unwrap_or(true),
        ..NewUser::default()
    }
    .with_password(u.password.as_deref().unwrap_or(""), u.temporary_password)
}

fn changes(u: &UserInput) -> Value {
    let mut m = Map::new();
    let text = |v: &Option<String>| Value::from(v.clone().unwrap_or_default());
    if let Some(e) = &u.email {
        m.insert("email".into(), text(e));
    }
    if let Some(f) = &u.first_name {
        m.insert("firstName".into(), text(f));
    }
    if let Some(l) = &u.last_name {
        m.insert("lastName".into(), text(l));
    }
    if let Some(e) = u.enabled {
        m.insert("enabled".into(), Value::Bool(e));
    }
    Value::Object(m)
}

impl TenantUsers for KeycloakUsers {
    fn list(
        &self,
        realm: &str,
        roles: &[String],
        username: Option<&str>,
        offset: i64,
        limit: Option<i64>,
    ) -> Result<(u64, Vec<TenantUser>), TmError> {
        let count = self
            .kc
            .count_users(realm, username)
            .map_err(|e| kc_error("count the users", e))?;
        let max = limit.unwrap_or(count as i64).max(0);
        if max == 0 || offset as u64 >= count {
            return Ok((count, Vec::new()));
        }
        let reps = self
            .kc
            .list_users(
                realm,
                &UserQuery {
                    username: username.map(String::from),
                    first: Some(offset.clamp(0, i64::from(u32::MAX)) as u32),
                    max: Some(max.clamp(0, i64::from(u32::MAX)) as u32),
                    ..UserQuery::default()
                },
            )
            .map_err(|e| kc_error("list the users", e))?;
        let users = reps
            .iter()
            .map(|r| self.user_of(realm, roles, r))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((count, users))
    }

    fn get(&self, realm: &str, roles: &[String], id: &str) -> Result<TenantUser, TmError> {
        let rep = self.kc.get_user(realm, id).map_err(|e| match e {
            KeycloakError::NotFound(_) => not_found(id),
            e => kc_error("read the user", e),
        })?;
        // Service accounts are clients' users, not tenant users.
        if rep.get("serviceAccountClientId").is_some() {
            return Err(not_found(id));
        }
        self.user_of(realm, roles, &rep)
    }

    fn create(&self, realm: &str, roles: &[String], u: &UserInput) -> Result<TenantUser, TmError> {
        let user = new_user(u);
        let id = self
            .kc
            .create_user_once(realm, &user)
            .map_err(|e| kc_error("create the user", e))?;
        // The roles, or no user at all.
        if let Some(want) = &u.roles
            && let Err(e) = self.set_roles(realm, &id, roles, want)
        {
            if let Err(d) = self.kc.delete_user(realm, &id) {
                log::warn!("keycloak: user `{id}` of `{realm}` stays without its roles: {d}");
            }
            return Err(e);
        }
        self.get(realm, roles, &id)
    }

    fn create_marked(
        &self,
        realm: &str,
        roles: &[String],
        u: &UserInput,
        marker: &str,
    ) -> Result<TenantUser, TmError> {
        let id = self
            .kc
            .create_user_marked(realm, &new_user(u), marker, true)
            .map_err(|e| kc_error("create the user", e))?;
        if let Some(want) = &u.roles {
            self.set_roles(realm, &id, roles, want)?;
        }
        self.get(realm, roles, &id)
    }

    fn copy_in(&self, realm: &str, roles: &[String], u: &TenantUser) -> Result<bool, TmError> {
        let user = NewUser {
            username: u.username.clone(),
            email: u.email.clone(),
            first_name: u.first_name.clone(),
            last_name: u.last_name.clone(),
            enabled: u.enabled,
            required_actions: vec![UPDATE_PASSWORD.into()],
            ..NewUser::default()
        };
        let id = match self.kc.create_user_once(realm, &user) {
            Ok(id) => id,
            Err(KeycloakError::Conflict(_)) => return Ok(false),
            Err(e) => return Err(kc_error("copy the user", e)),
        };
        // The roles, or no copy at all (the next attempt makes it again).
        if let Err(e) = self.set_roles(realm, &id, roles, &u.roles) {
            if let Err(d) = self.kc.delete_user(realm, &id) {
                log::warn!("keycloak: copied user `{id}` of `{realm}` stays without roles: {d}");
            }
            return Err(e);
        }
        Ok(true)
    }

    fn update(
        &self,
        realm: &str,
        roles: &[String],
        id: &str,
        u: &UserInput,
    ) -> Result<TenantUser, TmError> {
        self.get(realm, roles, id)?;
        let rep = changes(u);
        if rep.as_object().is_some_and(|m| !m.is_empty()) {
            self.kc
                .update_user(realm, id, &rep)
                .map_err(|e| kc_error("update the user", e))?;
        }
        if let Some(p) = &u.password {
            self.kc
                .reset_password(realm, id, p, u.temporary_password)
                .map_err(|e| kc_error("set the password", e))?;
        }
        if let Some(want) = &u.roles {
            self.set_roles(realm, id, roles, want)?;
        }
        self.get(realm, roles, id)
    }

    fn delete(&self, realm: &str, id: &str) -> Result<(), TmError> {
        // Only tenant users: a service account is its client's.
        self.get(realm, &[], id)?;
        self.kc.delete_user(realm, id).map_err(|e| match e {
            KeycloakError::NotFound(_) => not_found(id),
            e => kc_error("delete the user", e),
        })
    }
}

/// The embedded run: users are catalogue entries `tenant-user` (`<realm>/<id>`), their names
/// held unique per realm by entries `tenant-username` (`<realm>/<username>`).
pub struct LocalUsers {
    pub db: Arc<Database>,
}

const USER_KIND: &str = "tenant-user";
const NAME_KIND: &str = "tenant-username";

impl LocalUsers {
    fn read(&self, realm: &str, id: &str) -> Result<(CatalogRecord, Value), TmError> {
        let e = self
            .db
            .get_entry(USER_KIND, &format!("{realm}/{id}"))
            .map_err(|e| match e {
                StorageError::NotFound => not_found(id),
                other => TmError::Storage(other),
            })?;
        let v: Value = serde_json::from_str(&e.body)
            .map_err(|x| TmError::Internal(format!("tenant user: {x}")))?;
        Ok((e, v))
    }

    fn user_of(v: &Value, created_ms: i64) -> TenantUser {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(String::from);
        TenantUser {
            id: s("id").unwrap_or_default(),
            username: s("username").unwrap_or_default(),
            email: s("email"),
            first_name: s("first_name"),
            last_name: s("last_name"),
            enabled: v.get("enabled").and_then(Value::as_bool).unwrap_or(false),
            roles: v
                .get("roles")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
            created_ms,
            federated: false,
        }
    }

    fn hash(p: &str) -> Result<String, TmError> {
        crate::password::hash(p).map_err(TmError::Internal)
    }
}

impl TenantUsers for LocalUsers {
    fn list(
        &self,
        realm: &str,
        _roles: &[String],
        username: Option<&str>,
        offset: i64,
        limit: Option<i64>,
    ) -> Result<(u64, Vec<TenantUser>), TmError> {
        let prefix = format!("{realm}/");
        let want = username.map(str::to_lowercase);
        let mut all: Vec<TenantUser> = self
            .db
            .list_entries(USER_KIND)?
            .into_iter()
            .filter(|e| e.id.starts_with(&prefix))
            .filter_map(|e| {
                let v: Value = serde_json::from_str(&e.body).ok()?;
                Some(Self::user_of(&v, e.created_ms))
            })
            .filter(|u| want.as_deref().is_none_or(|w| u.username.contains(w)))
            .collect();
        all.sort_by(|a, b| a.username.cmp(&b.username));
        let count = all.len() as u64;
        let page = all
            .into_iter()
            .skip(offset.max(0) as usize)
            .take(limit.map_or(usize::MAX, |l| l.max(0) as usize))
            .collect();
        Ok((count, page))
    }

    fn get(&self, realm: &str, _roles: &[String], id: &str) -> Result<TenantUser, TmError> {
        let (e, v) = self.read(realm, id)?;
        Ok(Self::user_of(&v, e.created_ms))
    }

    fn create(&self, realm: &str, _roles: &[String], u: &UserInput) -> Result<TenantUser, TmError> {
        self.insert(realm, u, None, &[])
    }

    fn create_marked(
        &self,
        realm: &str,
        _roles: &[String],
        u: &UserInput,
        marker: &str,
    ) -> Result<TenantUser, TmError> {
        match self.insert(realm, u, Some(marker), &[]) {
            Err(TmError::Conflict(m)) => {
                let name = u.username.clone().unwrap_or_default();
                let id = self
                    .db
                    .get_entry(NAME_KIND, &format!("{realm}/{name}"))
                    .ok()
                    .and_then(|e| serde_json::from_str::<Value>(&e.body).ok())
                    .and_then(|v| v.get("id").and_then(Value::as_str).map(String::from));
                let Some(id) = id else {
                    return Err(TmError::Conflict(m));
                };
                let (e, v) = self.read(realm, &id)?;
                if v.get("request").and_then(Value::as_str) != Some(marker) {
                    return Err(TmError::Conflict(m));
                }
                Ok(Self::user_of(&v, e.created_ms))
            }
            other => other,
        }
    }

    fn copy_in(&self, realm: &str, _roles: &[String], u: &TenantUser) -> Result<bool, TmError> {
        let input = UserInput {
            username: Some(u.username.clone()),
            email: Some(u.email.clone()),
            first_name: Some(u.first_name.clone()),
            last_name: Some(u.last_name.clone()),
            enabled: Some(u.enabled),
            roles: Some(u.roles.clone()),
            ..UserInput::default()
        };
        match self.insert(realm, &input, None, &[UPDATE_PASSWORD]) {
            Ok(_) => Ok(true),
            Err(TmError::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn update(
        &self,
        realm: &str,
        _roles: &[String],
        id: &str,
        u: &UserInput,
    ) -> Result<TenantUser, TmError> {
        self.change(realm, id, u)
    }

    fn delete(&self, realm: &str, id: &str) -> Result<(), TmError> {
        self.remove(realm, id)
    }
}

impl LocalUsers {
    /// A new user entry (`marker`: the request id of [`TenantUsers::create_marked`];
    /// `required`: Keycloak's required actions, `UPDATE_PASSWORD` for a copy without password).
    fn insert(
        &self,
        realm: &str,
        u: &UserInput,
        marker: Option<&str>,
        required: &[&str],
    ) -> Result<TenantUser, TmError> {
        let username = u.username.clone().unwrap_or_default();
        let id = super::service::uuid4()?;
        let now = now_ms();
        let name_key = format!("{realm}/{username}");
        self.db
            .insert_entry(&CatalogRecord {
                kind: NAME_KIND.into(),
                id: name_key.clone(),
                body: json!({ "id": id }).to_string(),
                created_ms: now,
                updated_ms: now,
            })
            .map_err(|e| match e {
                StorageError::Conflict(_) => {
                    TmError::Conflict(format!("User exists with same username `{username}`"))
                }
                other => TmError::Storage(other),
            })?;
        let body = json!({
            "id": id,
            "username": username,
            "email": u.email.clone().flatten(),
            "first_name": u.first_name.clone().flatten(),
            "last_name": u.last_name.clone().flatten(),
            "enabled": u.enabled.unwrap_or(true),
            "roles": u.roles.clone().unwrap_or_default(),
            "password_hash": match &u.password {
                Some(p) => Value::from(Self::hash(p)?),
                None => Value::Null,
            },
            "temporary_password": u.temporary_password,
            "request": marker,
            "required_actions": required,
        });
        let made = self.db.insert_entry(&CatalogRecord {
            kind: USER_KIND.into(),
            id: format!("{realm}/{id}"),
            body: body.to_string(),
            created_ms: now,
            updated_ms: now,
        });
        if let Err(e) = made {
            let _ = self.db.delete_entry(NAME_KIND, &name_key);
            return Err(e.into());
        }
        Ok(Self::user_of(&body, now))
    }

    fn change(&self, realm: &str, id: &str, u: &UserInput) -> Result<TenantUser, TmError> {
        let (mut e, mut v) = self.read(realm, id)?;
        let set = |v: &mut Value, k: &str, x: Value| {
            if let Value::Object(m) = v {
                m.insert(k.to_string(), x);
            }
        };
        for (k, x) in [
            ("email", &u.email),
            ("first_name", &u.first_name),
            ("last_name", &u.last_name),
        ] {
            if let Some(x) = x {
                set(&mut v, k, Value::from(x.clone()));
            }
        }
        if let Some(en) = u.enabled {
            set(&mut v, "enabled", Value::Bool(en));
        }
        if let Some(r) = &u.roles {
            set(&mut v, "roles", json!(r));
        }
        if let Some(p) = &u.password {
            set(&mut v, "password_hash", Value::from(Self::hash(p)?));
            set(
                &mut v,
                "temporary_password",
                Value::Bool(u.temporary_password),
            );
        }
        e.body = v.to_string();
        e.updated_ms = now_ms();
        let e = self.db.update_entry(&e)?;
        Ok(Self::user_of(&v, e.created_ms))
    }

    fn remove(&self, realm: &str, id: &str) -> Result<(), TmError> {
        let (_, v) = self.read(realm, id)?;
        self.db
            .delete_entry(USER_KIND, &format!("{realm}/{id}"))
            .map_err(|e| match e {
                StorageError::NotFound => not_found(id),
                other => TmError::Storage(other),
            })?;
        let name = v.get("username").and_then(Value::as_str).unwrap_or("");
        match self.db.delete_entry(NAME_KIND, &format!("{realm}/{name}")) {
            Ok(()) | Err(StorageError::NotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles() -> Vec<String> {
        vec!["tenant-admin".into(), "tenant-user".into()]
    }

    #[test]
    fn inputs_are_checked_field_by_field() {
        let ok = parse_input(
            &json!({"username": "Alice", "email": "A@Example.com", "password": "long-enough",
                    "roles": ["tenant-admin", "tenant-admin"]}),
            true,
            &roles(),
        )
        .unwrap();
        assert_eq!(ok.username.as_deref(), Some("alice"));
        assert_eq!(ok.email, Some(Some("a@example.com".into())));
        assert_eq!(ok.roles, Some(vec!["tenant-admin".to_string()]));
        let field = |b: Value, create: bool| match parse_input(&b, create, &roles()) {
            Err(TmError::Invalid(_, f)) => f[0].0.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(field(json!({"password": "long-enough"}), true), "username");
        assert_eq!(
            field(json!({"username": "a b", "password": "long-enough"}), true),
            "username"
        );
        assert_eq!(field(json!({"username": "a"}), true), "password");
        assert_eq!(
            field(json!({"username": "a", "password": "short"}), true),
            "password"
        );
        assert_eq!(
            field(
                json!({"username": "a", "password": "long-enough", "roles": ["root"]}),
                true
            ),
            "roles"
        );
        assert_eq!(field(json!({"username": "a"}), false), "username");
        assert_eq!(field(json!({"email": "nope"}), false), "email");
        assert_eq!(field(json!({"enabled": "yes"}), false), "enabled");
        assert_eq!(field(json!({"admin": true}), false), "admin");
        assert!(parse_input(&json!([]), false, &roles()).is_err());
    }
}
