//! Users of a realm: creation (once per request, recognised when its answer was lost), lookups,
//! updates, passwords and the e-mails Keycloak sends.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde_json::{Value, json};

use super::KeycloakAdmin;
use super::transport::{KeycloakError, Method, Result, encode, object_id};

/// The user attribute holding the id of the request that created a user ([`KeycloakAdmin::create_user_once`]).
pub const REQUEST_ATTRIBUTE: &str = "kaa-request";

/// A fresh random request id (hex of 16 random bytes).
fn request_marker() -> String {
    let mut b = [0u8; 16];
    if openssl::rand::rand_bytes(&mut b).is_err() {
        // Unique enough for matching a lost answer: time and a process-wide counter.
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        return format!("{:x}-{n:x}", crate::clock::now_ms());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn marker_of(user: &Value) -> Option<&str> {
    user.get("attributes")?
        .get(REQUEST_ATTRIBUTE)?
        .get(0)?
        .as_str()
}

/// A new user (`POST /users`); `None` fields are left out.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewUser {
    pub username: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    /// `[{type: "password", value, temporary}]` when a password is given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub required_actions: Vec<String>,
    /// User attributes (`{name: [values]}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Value>,
}

impl NewUser {
    pub fn with_password(mut self, value: &str, temporary: bool) -> NewUser {
        self.credentials
            .push(json!({"type": "password", "value": value, "temporary": temporary}));
        self
    }
}

/// `GET /users` filters (Keycloak matches `username`/`email` as substrings unless `exact`).
#[derive(Debug, Clone, Default)]
pub struct UserQuery {
    pub username: Option<String>,
    pub email: Option<String>,
    pub search: Option<String>,
    pub exact: bool,
    pub first: Option<u32>,
    pub max: Option<u32>,
}

impl KeycloakAdmin {
    pub(super) fn user_path(realm: &str, id: &str, rest: &str) -> String {
        format!("/{}/users/{}{rest}", encode(realm), encode(id))
    }

    /// `POST …/users` (credentials included): the new user's id, from `Location`.
    pub fn create_user(&self, realm: &str, user: &NewUser) -> Result<String> {
        let rep = serde_json::to_value(user)
            .map_err(|e| KeycloakError::Server(0, format!("user representation: {e}")))?;
        self.create_user_rep(realm, &rep)
    }

    /// Create a user so that a lost answer does no harm: the user carries a random request id in
    /// the attribute [`REQUEST_ATTRIBUTE`]; when the create gets no answer or a 5xx, a user of
    /// that name carrying this id is the one this call made, and its id is returned. Any other
    /// user of that name is left alone (the error stands).
    pub fn create_user_once(&self, realm: &str, user: &NewUser) -> Result<String> {
        self.create_user_marked(realm, user, &request_marker(), false)
    }

    /// [`KeycloakAdmin::create_user_once`] with a request id the caller keeps (`marker`), so
    /// that a later attempt of the same work finds the user an earlier one made: with
    /// `adopt_conflict`, a 409 is answered by the id of the user of that name that carries
    /// `marker` (a user of that name without it stays a conflict).
    pub fn create_user_marked(
        &self,
        realm: &str,
        user: &NewUser,
        marker: &str,
        adopt_conflict: bool,
    ) -> Result<String> {
        let marker = marker.to_string();
        let mut user = user.clone();
        let mut attrs = user
            .attributes
            .take()
            .and_then(|a| a.as_object().cloned())
            .unwrap_or_default();
        attrs.insert(REQUEST_ATTRIBUTE.into(), json!([marker.as_str()]));
        user.attributes = Some(Value::Object(attrs));
        match self.create_user(realm, &user) {
            Ok(id) => Ok(id),
            Err(e)
                if e.is_transient()
                    || (adopt_conflict && matches!(e, KeycloakError::Conflict(_))) =>
            {
                match self.find_user(realm, &user.username) {
                    Ok(Some(found)) if marker_of(&found) == Some(marker.as_str()) => {
                        object_id(&found).ok_or(e)
                    }
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// `GET …/users/count` (users matching `username` as a substring, if given).
    pub fn count_users(&self, realm: &str, username: Option<&str>) -> Result<u64> {
        let mut q: Vec<(&str, &str)> = Vec::new();
        if let Some(u) = username {
            q.push(("username", u));
        }
        let v = self.get_json(&format!("/{}/users/count", encode(realm)), &q)?;
        v.as_u64()
            .ok_or_else(|| KeycloakError::Server(200, format!("users/count answered `{v}`")))
    }

    /// `POST …/users` with a free-form `UserRepresentation`.
    pub fn create_user_rep(&self, realm: &str, rep: &Value) -> Result<String> {
        self.create_located(&format!("/{}/users", encode(realm)), rep)
    }

    pub fn get_user(&self, realm: &str, id: &str) -> Result<Value> {
        self.get_json(&Self::user_path(realm, id, ""), &[])
    }

    pub fn list_users(&self, realm: &str, q: &UserQuery) -> Result<Vec<Value>> {
        let (first, max) = (q.first.map(|n| n.to_string()), q.max.map(|n| n.to_string()));
        let mut query: Vec<(&str, &str)> = Vec::new();
        for (k, v) in [
            ("username", q.username.as_deref()),
            ("email", q.email.as_deref()),
            ("search", q.search.as_deref()),
            ("first", first.as_deref()),
            ("max", max.as_deref()),
        ] {
            if let Some(v) = v {
                query.push((k, v));
            }
        }
        if q.exact {
            query.push(("exact", "true"));
        }
        self.get_list(&format!("/{}/users", encode(realm)), &query)
    }

    /// The user with exactly this username, if any.
    pub fn find_user(&self, realm: &str, username: &str) -> Result<Option<Value>> {
        let list = self.list_users(
            realm,
            &UserQuery {
                username: Some(username.to_string()),
                exact: true,
                ..UserQuery::default()
            },
        )?;
        let lower = username.to_lowercase();
        Ok(list
            .into_iter()
            .find(|u| u.get("username").and_then(Value::as_str) == Some(lower.as_str())))
    }

    pub fn update_user(&self, realm: &str, id: &str, rep: &Value) -> Result<()> {
        self.put(&Self::user_path(realm, id, ""), rep)
    }

    pub fn delete_user(&self, realm: &str, id: &str) -> Result<()> {
        self.delete(&Self::user_path(realm, id, ""))
    }

    /// `PUT …/users/{id}/reset-password`.
    pub fn reset_password(
        &self,
        realm: &str,
        id: &str,
        password: &str,
        temporary: bool,
    ) -> Result<()> {
        self.put(
            &Self::user_path(realm, id, "/reset-password"),
            &json!({"type": "password", "value": password, "temporary": temporary}),
        )
    }

    /// `PUT …/users/{id}/execute-actions-email` with the actions (e.g. `VERIFY_EMAIL`); the link
    /// in the mail leads to `redirect_uri` (Keycloak wants the client it belongs to as well).
    pub fn execute_actions_email(
        &self,
        realm: &str,
        id: &str,
        actions: &[&str],
        client_id: Option<&str>,
        redirect_uri: Option<&str>,
        lifespan_seconds: Option<u64>,
    ) -> Result<()> {
        let lifespan = lifespan_seconds.map(|n| n.to_string());
        let mut q: Vec<(&str, &str)> = Vec::new();
        if let Some(c) = client_id {
            q.push(("client_id", c));
        }
        if let Some(r) = redirect_uri {
            q.push(("redirect_uri", r));
        }
        if let Some(l) = lifespan.as_deref() {
            q.push(("lifespan", l));
        }
        let path = Self::user_path(realm, id, "/execute-actions-email");
        self.send(Method::Put, &path, &q, Some(&json!(actions)))
            .map(|_| ())
    }

    /// The `VERIFY_EMAIL` mail.
    pub fn send_verify_email(
        &self,
        realm: &str,
        id: &str,
        client_id: &str,
        redirect_uri: &str,
    ) -> Result<()> {
        self.execute_actions_email(
            realm,
            id,
            &["VERIFY_EMAIL"],
            Some(client_id),
            Some(redirect_uri),
            None,
        )
    }
}
