//! Keycloak's Admin REST API, blocking, on ureq: one client per Keycloak server. The admin token
//! comes from `{url}/realms/{admin_realm}/protocol/openid-connect/token` (password grant with the
//! `admin-cli` client, or client credentials), is cached until shortly before it expires and is
//! fetched again then, or once when a call answers 401. `url` is the server's address as the
//! operator gives it, with the `/auth` context path of Keycloak before 17 or without it.
//!
//! Every call of `spec/tenant-manager.md` §5 has a typed method here; representations are JSON
//! (templates are free-form Keycloak representations). Answers become a [`KeycloakError`] by kind
//! (404, 409, 401/403, any other status, no answer at all), never a panic; bodies are read up to
//! a bound, and error messages carry at most a short excerpt of what Keycloak said.

use std::io::Read;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};
use thiserror::Error;

use crate::storage::KeycloakServerRecord;

/// Largest successful answer read (user and role lists included).
const MAX_BODY_BYTES: u64 = 8 << 20;
/// Bytes of an error answer read; the message keeps at most `EXCERPT_CHARS` of it.
const MAX_ERROR_BYTES: u64 = 64 << 10;
const EXCERPT_CHARS: usize = 300;
/// A cached admin token is renewed this long before it expires (at most a quarter of its life),
/// plus [`EXP_GRANULARITY`].
const RENEW_MARGIN: Duration = Duration::from_secs(10);
/// A token's `exp` is in whole seconds from an `iat` cut to the second: it may end up to a
/// second before `expires_in` counted from the moment it was issued.
const EXP_GRANULARITY: Duration = Duration::from_secs(1);
/// `max` of list calls that look a name up (Keycloak's default page is 100).
const LOOKUP_MAX: &str = "1000";

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeycloakError {
    /// 404: the realm or object is not there.
    #[error("not found: {0}")]
    NotFound(String),
    /// 409: an object of that name (or id) exists.
    #[error("conflict: {0}")]
    Conflict(String),
    /// 401 or 403 (after one fresh token), or the admin credentials were refused.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// Any other status, with an excerpt of Keycloak's message.
    #[error("answered {0}: {1}")]
    Server(u16, String),
    /// No answer: connection refused or reset, a timeout, a name that does not resolve.
    #[error("unreachable: {0}")]
    Unreachable(String),
}

impl KeycloakError {
    /// Whether trying again later may succeed (no answer, 5xx, 408, 429).
    pub fn is_transient(&self) -> bool {
        match self {
            KeycloakError::Unreachable(_) => true,
            KeycloakError::Server(s, _) => *s >= 500 || *s == 408 || *s == 429,
            _ => false,
        }
    }
}

/// How the client authenticates to the admin realm.
#[derive(Clone, PartialEq, Eq)]
pub enum AdminCredentials {
    /// Password grant with the public `admin-cli` client.
    Password { username: String, password: String },
    /// Client credentials of a confidential client with a service account.
    Client {
        client_id: String,
        client_secret: String,
    },
}

impl std::fmt::Debug for AdminCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminCredentials::Password { username, .. } => {
                write!(f, "Password {{ username: {username:?}, password: *** }}")
            }
            AdminCredentials::Client { client_id, .. } => {
                write!(
                    f,
                    "Client {{ client_id: {client_id:?}, client_secret: *** }}"
                )
            }
        }
    }
}

struct CachedToken {
    value: String,
    renew_at: Instant,
}

/// One answer, body read (bounded).
struct Reply {
    status: u16,
    location: Option<String>,
    body: Vec<u8>,
}

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

#[derive(Clone, Copy)]
enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }
}

/// Percent-encode one path segment or query value (everything but RFC 3986 unreserved bytes).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The message in a Keycloak error body: `errorMessage`, `error_description` or `error`
/// (joined when both of the last two are there), else the start of the body.
fn message_of(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let from_json = serde_json::from_str::<Value>(&text).ok().and_then(|v| {
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(String::from)
        };
        s("errorMessage").or_else(|| match (s("error"), s("error_description")) {
            (Some(e), Some(d)) => Some(format!("{e}: {d}")),
            (e, d) => d.or(e),
        })
    });
    let m = from_json.unwrap_or_else(|| text.trim().to_string());
    let m: String = m.chars().filter(|c| !c.is_control()).collect();
    if m.chars().count() > EXCERPT_CHARS {
        let cut: String = m.chars().take(EXCERPT_CHARS).collect();
        format!("{cut}…")
    } else if m.is_empty() {
        "(empty body)".into()
    } else {
        m
    }
}

/// The last path segment of a `Location` header (the id Keycloak gave the new object).
fn id_from_location(location: &str) -> Option<String> {
    let path = location.split(['?', '#']).next().unwrap_or("");
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .map(String::from)
}

/// The id field of an authorization representation (`_id` for resources, `id` otherwise).
pub fn object_id(v: &Value) -> Option<String> {
    v.get("id")
        .or_else(|| v.get("_id"))
        .and_then(Value::as_str)
        .map(String::from)
}

fn named<'a>(list: &'a [Value], name: &str) -> Option<&'a Value> {
    list.iter()
        .find(|v| v.get("name").and_then(Value::as_str) == Some(name))
}

/// The admin client of one Keycloak server.
pub struct KeycloakAdmin {
    base: String,
    admin_realm: String,
    credentials: AdminCredentials,
    agent: ureq::Agent,
    token: Mutex<Option<CachedToken>>,
    token_fetches: AtomicU64,
}

impl std::fmt::Debug for KeycloakAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeycloakAdmin")
            .field("base", &self.base)
            .field("admin_realm", &self.admin_realm)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

type Result<T> = std::result::Result<T, KeycloakError>;

impl KeycloakAdmin {
    /// A client of the server at `url` (with or without `/auth`); each call must finish
    /// within `timeout` (connecting included).
    pub fn new(
        url: &str,
        admin_realm: &str,
        credentials: AdminCredentials,
        timeout: Duration,
    ) -> KeycloakAdmin {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .timeout_connect(Some(timeout.min(Duration::from_secs(5))))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("kaa-tenant-manager/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        KeycloakAdmin {
            base: url.trim_end_matches('/').to_string(),
            admin_realm: admin_realm.to_string(),
            credentials,
            agent,
            token: Mutex::new(None),
            token_fetches: AtomicU64::new(0),
        }
    }

    /// The client of a registered server: its URL, admin realm and credentials (a username and
    /// password win over a client id and secret).
    pub fn for_server(s: &KeycloakServerRecord, timeout: Duration) -> Result<KeycloakAdmin> {
        let credentials = match (&s.username, &s.password, &s.client_id, &s.client_secret) {
            (Some(u), Some(p), _, _) => AdminCredentials::Password {
                username: u.clone(),
                password: p.clone(),
            },
            (_, _, Some(c), Some(cs)) => AdminCredentials::Client {
                client_id: c.clone(),
                client_secret: cs.clone(),
            },
            _ => {
                return Err(KeycloakError::Unauthorized(format!(
                    "Keycloak server {} (`{}`) has no admin credentials (username and password, \
                     or client id and secret)",
                    s.id, s.url
                )));
            }
        };
        let realm = if s.admin_realm.is_empty() {
            "master"
        } else {
            &s.admin_realm
        };
        Ok(KeycloakAdmin::new(&s.url, realm, credentials, timeout))
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// How many admin tokens were fetched so far.
    pub fn token_fetches(&self) -> u64 {
        self.token_fetches.load(Ordering::Relaxed)
    }

    // ------------------------------------------------------------ transport

    fn exchange(
        &self,
        method: Method,
        url: &str,
        token: Option<&str>,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<Reply> {
        let what = || format!("{} {url}", method.as_str());
        let mut b = ureq::http::Request::builder()
            .method(method.as_str())
            .uri(url)
            .header("Accept", "application/json");
        if let Some(t) = token {
            b = b.header("Authorization", format!("Bearer {t}"));
        }
        let sent = match body {
            Some((content_type, bytes)) => b
                .header("Content-Type", content_type)
                .body(bytes)
                .map_err(|e| KeycloakError::Server(0, format!("{}: {e}", what())))
                .and_then(|r| {
                    self.agent
                        .run(r)
                        .map_err(|e| KeycloakError::Unreachable(format!("{}: {e}", what())))
                }),
            None => b
                .body(())
                .map_err(|e| KeycloakError::Server(0, format!("{}: {e}", what())))
                .and_then(|r| {
                    self.agent
                        .run(r)
                        .map_err(|e| KeycloakError::Unreachable(format!("{}: {e}", what())))
                }),
        };
        let mut resp = sent?;
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let mut buf = Vec::new();
        if (200..300).contains(&status) {
            buf = resp
                .body_mut()
                .with_config()
                .limit(MAX_BODY_BYTES)
                .read_to_vec()
                .map_err(|e| match e {
                    ureq::Error::BodyExceedsLimit(n) => KeycloakError::Server(
                        status,
                        format!("{}: answer larger than {n} bytes", what()),
                    ),
                    e => KeycloakError::Unreachable(format!("{}: reading: {e}", what())),
                })?;
        } else {
            // An error body is only quoted: read a bounded prefix, ignore a cut-off connection.
            let _ = resp
                .body_mut()
                .as_reader()
                .take(MAX_ERROR_BYTES)
                .read_to_end(&mut buf);
        }
        Ok(Reply {
            status,
            location,
            body: buf,
        })
    }

    fn token_url(&self) -> String {
        format!(
            "{}/realms/{}/protocol/openid-connect/token",
            self.base,
            encode(&self.admin_realm)
        )
    }

    fn fetch_token(&self) -> Result<CachedToken> {
        self.token_fetches.fetch_add(1, Ordering::Relaxed);
        let mut form = String::new();
        let mut add = |k: &str, v: &str| {
            if !form.is_empty() {
                form.push('&');
            }
            form.push_str(k);
            form.push('=');
            form.push_str(&encode(v));
        };
        match &self.credentials {
            AdminCredentials::Password { username, password } => {
                add("grant_type", "password");
                add("client_id", "admin-cli");
                add("username", username);
                add("password", password);
            }
            AdminCredentials::Client {
                client_id,
                client_secret,
            } => {
                add("grant_type", "client_credentials");
                add("client_id", client_id);
                add("client_secret", client_secret);
            }
        }
        let url = self.token_url();
        let r = self.exchange(
            Method::Post,
            &url,
            None,
            Some(("application/x-www-form-urlencoded", form.into_bytes())),
        )?;
        let ctx = |m: String| format!("admin token from `{url}`: {m}");
        match r.status {
            200 => {
                let v: Value = serde_json::from_slice(&r.body)
                    .map_err(|e| KeycloakError::Server(200, ctx(e.to_string())))?;
                let value = v
                    .get("access_token")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| KeycloakError::Server(200, ctx("no access_token".into())))?
                    .to_string();
                let life =
                    Duration::from_secs(v.get("expires_in").and_then(Value::as_u64).unwrap_or(60));
                let margin = RENEW_MARGIN.min(life / 4) + EXP_GRANULARITY;
                Ok(CachedToken {
                    value,
                    renew_at: Instant::now() + life.saturating_sub(margin),
                })
            }
            400 | 401 | 403 => Err(KeycloakError::Unauthorized(ctx(message_of(&r.body)))),
            404 => Err(KeycloakError::NotFound(ctx(message_of(&r.body)))),
            s => Err(KeycloakError::Server(s, ctx(message_of(&r.body)))),
        }
    }

    /// The cached admin token, fetched when there is none or it is about to expire.
    pub fn token(&self) -> Result<String> {
        let mut slot = self.token.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = slot.as_ref()
            && Instant::now() < t.renew_at
        {
            return Ok(t.value.clone());
        }
        *slot = None;
        let fresh = self.fetch_token()?;
        let value = fresh.value.clone();
        *slot = Some(fresh);
        Ok(value)
    }

    /// Forget `used` (a 401 said it is no longer good) unless another thread renewed it already.
    fn drop_token(&self, used: &str) {
        let mut slot = self.token.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|t| t.value == used) {
            *slot = None;
        }
    }

    /// An admin call: `path` is below `/admin/realms`, already encoded. A 401 gets one retry
    /// with a fresh token.
    fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Reply> {
        let mut url = format!("{}/admin/realms{path}", self.base);
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&encode(k));
            url.push('=');
            url.push_str(&encode(v));
        }
        let payload = body.map(|b| ("application/json", b.to_string().into_bytes()));
        let mut retried = false;
        loop {
            let token = self.token()?;
            let r = self.exchange(method, &url, Some(&token), payload.clone())?;
            if r.status == 401 && !retried {
                self.drop_token(&token);
                retried = true;
                continue;
            }
            return Ok(r);
        }
    }

    /// The reply if its status is a success, else the error of its kind.
    fn ok(method: Method, path: &str, r: Reply) -> Result<Reply> {
        if (200..300).contains(&r.status) {
            return Ok(r);
        }
        let m = format!(
            "{} /admin/realms{path}: {}",
            method.as_str(),
            message_of(&r.body)
        );
        Err(match r.status {
            404 => KeycloakError::NotFound(m),
            409 => KeycloakError::Conflict(m),
            401 | 403 => KeycloakError::Unauthorized(format!("{} {m}", r.status)),
            s => KeycloakError::Server(s, m),
        })
    }

    fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Reply> {
        let r = self.call(method, path, query, body)?;
        Self::ok(method, path, r)
    }

    fn json_of(path: &str, r: &Reply) -> Result<Value> {
        if r.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&r.body).map_err(|e| {
            KeycloakError::Server(r.status, format!("/admin/realms{path}: not JSON: {e}"))
        })
    }

    fn get_json(&self, path: &str, query: &[(&str, &str)]) -> Result<Value> {
        let r = self.send(Method::Get, path, query, None)?;
        Self::json_of(path, &r)
    }

    fn get_list(&self, path: &str, query: &[(&str, &str)]) -> Result<Vec<Value>> {
        match self.get_json(path, query)? {
            Value::Array(a) => Ok(a),
            Value::Null => Ok(Vec::new()),
            other => Err(KeycloakError::Server(
                200,
                format!(
                    "/admin/realms{path}: expected a list, got {}",
                    message_of(other.to_string().as_bytes())
                ),
            )),
        }
    }

    /// POST answering 201 with a `Location`: the new object's id.
    fn create_located(&self, path: &str, body: &Value) -> Result<String> {
        let r = self.send(Method::Post, path, &[], Some(body))?;
        r.location
            .as_deref()
            .and_then(id_from_location)
            .ok_or_else(|| {
                KeycloakError::Server(
                    r.status,
                    format!("POST /admin/realms{path}: no Location in the answer"),
                )
            })
    }

    /// POST answering 201 with the new representation.
    fn create_returning(&self, path: &str, body: &Value) -> Result<Value> {
        let r = self.send(Method::Post, path, &[], Some(body))?;
        Self::json_of(path, &r)
    }

    fn put(&self, path: &str, body: &Value) -> Result<()> {
        self.send(Method::Put, path, &[], Some(body)).map(|_| ())
    }

    fn delete(&self, path: &str) -> Result<()> {
        self.send(Method::Delete, path, &[], None).map(|_| ())
    }

    // ------------------------------------------------------------ realms

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

    // ------------------------------------------------------------ clients

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

    // ------------------------------------------------------------ realm roles

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

    // ------------------------------------------------------------ authorization services

    fn authz(realm: &str, client: &str, rest: &str) -> String {
        format!(
            "/{}/clients/{}/authz/resource-server{rest}",
            encode(realm),
            encode(client)
        )
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
        self.get_list(
            &Self::authz(realm, client, "/scope"),
            &[("first", "0"), ("max", LOOKUP_MAX)],
        )
    }

    /// The scope with exactly this name.
    pub fn find_authz_scope(&self, realm: &str, client: &str, name: &str) -> Result<Option<Value>> {
        let list = self.get_list(
            &Self::authz(realm, client, "/scope"),
            &[("name", name), ("first", "0"), ("max", LOOKUP_MAX)],
        )?;
        Ok(named(&list, name).cloned())
    }

    pub fn update_authz_scope(
        &self,
        realm: &str,
        client: &str,
        id: &str,
        rep: &Value,
    ) -> Result<()> {
        self.put(
            &Self::authz(realm, client, &format!("/scope/{}", encode(id))),
            rep,
        )
    }

    pub fn delete_authz_scope(&self, realm: &str, client: &str, id: &str) -> Result<()> {
        self.delete(&Self::authz(
            realm,
            client,
            &format!("/scope/{}", encode(id)),
        ))
    }

    /// `POST …/authz/resource-server/resource` with `{name, type, scopes: [{name}]}`: the new
    /// resource (its id is `_id`, see [`object_id`]).
    pub fn create_resource(&self, realm: &str, client: &str, rep: &Value) -> Result<Value> {
        self.create_returning(&Self::authz(realm, client, "/resource"), rep)
    }

    pub fn list_resources(&self, realm: &str, client: &str) -> Result<Vec<Value>> {
        self.get_list(
            &Self::authz(realm, client, "/resource"),
            &[("first", "0"), ("max", LOOKUP_MAX)],
        )
    }

    pub fn find_resource(&self, realm: &str, client: &str, name: &str) -> Result<Option<Value>> {
        let list = self.get_list(
            &Self::authz(realm, client, "/resource"),
            &[
                ("name", name),
                ("exactName", "true"),
                ("first", "0"),
                ("max", LOOKUP_MAX),
            ],
        )?;
        Ok(named(&list, name).cloned())
    }

    pub fn update_resource(&self, realm: &str, client: &str, id: &str, rep: &Value) -> Result<()> {
        self.put(
            &Self::authz(realm, client, &format!("/resource/{}", encode(id))),
            rep,
        )
    }

    pub fn delete_resource(&self, realm: &str, client: &str, id: &str) -> Result<()> {
        self.delete(&Self::authz(
            realm,
            client,
            &format!("/resource/{}", encode(id)),
        ))
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
        self.put(
            &Self::authz(realm, client, &format!("/policy/role/{}", encode(id))),
            rep,
        )
    }

    /// Policies and permissions alike (`permission` filters to one or the other).
    pub fn list_policies(
        &self,
        realm: &str,
        client: &str,
        permission: Option<bool>,
    ) -> Result<Vec<Value>> {
        let mut q = vec![("first", "0"), ("max", LOOKUP_MAX)];
        match permission {
            Some(true) => q.push(("permission", "true")),
            Some(false) => q.push(("permission", "false")),
            None => {}
        }
        self.get_list(&Self::authz(realm, client, "/policy"), &q)
    }

    /// The policy or permission with exactly this name (they share one namespace).
    pub fn find_policy(&self, realm: &str, client: &str, name: &str) -> Result<Option<Value>> {
        let list = self.get_list(
            &Self::authz(realm, client, "/policy"),
            &[("name", name), ("first", "0"), ("max", LOOKUP_MAX)],
        )?;
        Ok(named(&list, name).cloned())
    }

    /// Removes a policy or a permission.
    pub fn delete_policy(&self, realm: &str, client: &str, id: &str) -> Result<()> {
        self.delete(&Self::authz(
            realm,
            client,
            &format!("/policy/{}", encode(id)),
        ))
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
            &Self::authz(realm, client, &format!("/permission/scope/{}", encode(id))),
            rep,
        )
    }

    // ------------------------------------------------------------ identity providers

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

    // ------------------------------------------------------------ users

    fn user_path(realm: &str, id: &str, rest: &str) -> String {
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

    // ------------------------------------------------------------ realm role mappings

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

    // ------------------------------------------------------------ components

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

    // ------------------------------------------------------------ client roles

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_from_keycloak_bodies_and_stay_short() {
        assert_eq!(
            message_of(br#"{"errorMessage":"User exists with same username"}"#),
            "User exists with same username"
        );
        assert_eq!(
            message_of(br#"{"error":"Policy with name [x] already exists","error_description":"Conflicting policy"}"#),
            "Policy with name [x] already exists: Conflicting policy"
        );
        assert_eq!(
            message_of(br#"{"error":"Realm not found."}"#),
            "Realm not found."
        );
        assert_eq!(message_of(b""), "(empty body)");
        let long = "x".repeat(10_000);
        assert_eq!(
            message_of(long.as_bytes()).chars().count(),
            EXCERPT_CHARS + 1
        );
        assert_eq!(message_of(b"line\nbreak"), "linebreak");
    }

    #[test]
    fn ids_come_from_locations_and_segments_are_encoded() {
        assert_eq!(
            id_from_location("http://kc/admin/realms/acme/users/4f1a-9"),
            Some("4f1a-9".into())
        );
        assert_eq!(
            id_from_location("http://kc/admin/realms/acme/clients/c-1/?x=1"),
            Some("c-1".into())
        );
        assert_eq!(id_from_location(""), None);
        assert_eq!(encode("a b/c:d"), "a%20b%2Fc%3Ad");
        assert_eq!(encode("tenant-admin_1.x~"), "tenant-admin_1.x~");
        assert_eq!(object_id(&json!({"_id": "r1"})), Some("r1".into()));
    }

    #[test]
    fn transient_errors_are_the_ones_worth_retrying() {
        assert!(KeycloakError::Unreachable("x".into()).is_transient());
        assert!(KeycloakError::Server(503, "x".into()).is_transient());
        assert!(KeycloakError::Server(429, "x".into()).is_transient());
        assert!(!KeycloakError::Server(400, "x".into()).is_transient());
        assert!(!KeycloakError::Unauthorized("x".into()).is_transient());
        assert!(!KeycloakError::NotFound("x".into()).is_transient());
    }

    #[test]
    fn credentials_never_show_in_debug() {
        let c = AdminCredentials::Password {
            username: "admin".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        let k = KeycloakAdmin::new("http://kc/auth/", "master", c, Duration::from_secs(1));
        assert!(!format!("{k:?}").contains("hunter2"));
        assert_eq!(k.base_url(), "http://kc/auth");
    }

    /// A server answering every request on its own connection: the token endpoint with a
    /// token, `/admin/realms/big` with 9 MiB, anything else 500 with 1 MiB of text.
    fn odd_server() -> std::net::SocketAddr {
        use std::io::{BufRead, BufReader, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let mut len = 0;
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).unwrap();
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    if h == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0u8; len];
                std::io::Read::read_exact(&mut r, &mut body).unwrap();
                let (status, payload) = if line.contains("/token") {
                    (200, br#"{"access_token":"t","expires_in":60}"#.to_vec())
                } else if line.contains("/admin/realms/big") {
                    (200, vec![b' '; 9 << 20])
                } else {
                    (500, vec![b'x'; 1 << 20])
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    payload.len()
                );
                let _ = s.write_all(&payload);
            }
        });
        addr
    }

    #[test]
    fn answers_are_read_only_up_to_a_bound() {
        let addr = odd_server();
        let k = KeycloakAdmin::new(
            &format!("http://{addr}"),
            "master",
            AdminCredentials::Password {
                username: "a".into(),
                password: "b".into(),
            },
            Duration::from_secs(5),
        );
        let e = k.get_realm("big").unwrap_err();
        assert!(
            matches!(&e, KeycloakError::Server(200, m) if m.contains("larger than")),
            "{e}"
        );
        let e = k.get_realm("other").unwrap_err();
        match &e {
            KeycloakError::Server(500, m) => assert!(m.chars().count() < 400, "{}", m.len()),
            other => panic!("{other}"),
        }
        assert!(e.is_transient());
    }

    #[test]
    fn an_unreachable_server_is_unreachable() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let k = KeycloakAdmin::new(
            &format!("http://{addr}"),
            "master",
            AdminCredentials::Password {
                username: "a".into(),
                password: "b".into(),
            },
            Duration::from_secs(2),
        );
        assert!(matches!(
            k.get_realm("acme"),
            Err(KeycloakError::Unreachable(_))
        ));
    }
}
