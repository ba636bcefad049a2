//! The transport of Keycloak's Admin REST API: HTTP on ureq, the admin token, errors by kind.
//!
//! The admin token comes from `{url}/realms/{admin_realm}/protocol/openid-connect/token`
//! (password grant with the `admin-cli` client, or client credentials), is cached until shortly
//! before it expires and is fetched again then, or once when a call answers 401. Answers become a
//! [`KeycloakError`] by kind (404, 409, 401/403, any other status, no answer at all), never a
//! panic; bodies are read up to a bound, and error messages carry at most a short excerpt of what
//! Keycloak said.

use std::io::Read;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use thiserror::Error;

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
pub(super) const LOOKUP_MAX: &str = "1000";

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
pub(super) struct Reply {
    status: u16,
    location: Option<String>,
    body: Vec<u8>,
}

#[derive(Clone, Copy)]
pub(super) enum Method {
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

/// The representation in `list` whose `name` is `name`.
pub(super) fn named<'a>(list: &'a [Value], name: &str) -> Option<&'a Value> {
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

pub(super) type Result<T> = std::result::Result<T, KeycloakError>;

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

    pub(super) fn send(
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

    pub(super) fn get_json(&self, path: &str, query: &[(&str, &str)]) -> Result<Value> {
        let r = self.send(Method::Get, path, query, None)?;
        Self::json_of(path, &r)
    }

    pub(super) fn get_list(&self, path: &str, query: &[(&str, &str)]) -> Result<Vec<Value>> {
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
    pub(super) fn create_located(&self, path: &str, body: &Value) -> Result<String> {
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
    pub(super) fn create_returning(&self, path: &str, body: &Value) -> Result<Value> {
        let r = self.send(Method::Post, path, &[], Some(body))?;
        Self::json_of(path, &r)
    }

    pub(super) fn put(&self, path: &str, body: &Value) -> Result<()> {
        self.send(Method::Put, path, &[], Some(body)).map(|_| ())
    }

    pub(super) fn delete(&self, path: &str) -> Result<()> {
        self.send(Method::Delete, path, &[], None).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
