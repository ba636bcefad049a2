//! A Keycloak stand-in for tests, on a real socket: per realm an RS256 key set (rotatable) served
//! at `/realms/{realm}/protocol/openid-connect/certs`, OIDC discovery, and a token endpoint for
//! the client_credentials and password grants, signing real RS256 access tokens with Keycloak's
//! claims (`preferred_username`, `azp`, `realm_access.roles`). Tests also mint tokens directly.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration as StdDuration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwt_simple::prelude::*;
use kaa::http::message::{Request, Response};
use kaa::http::server::{Server, ServerConfig, ShutdownHandle};
use serde_json::json;

#[derive(Clone, Serialize, Deserialize, Default)]
pub struct KcClaims {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub azp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub realm_access: Option<serde_json::Value>,
}

/// What a minted token says.
#[derive(Clone)]
pub struct Mint {
    pub sub: String,
    pub username: Option<String>,
    pub roles: Vec<String>,
    pub aud: Option<Vec<String>>,
    pub azp: Option<String>,
    /// Seconds from now; negative for an expired token.
    pub exp_in: i64,
    /// Seconds from now of `nbf`, if any.
    pub nbf_in: Option<i64>,
    /// Overrides the realm's issuer.
    pub iss: Option<String>,
    /// Overrides the key id in the header.
    pub kid: Option<String>,
    pub no_exp: bool,
}

impl Mint {
    pub fn user(username: &str) -> Mint {
        Mint {
            sub: format!("sub-{username}"),
            username: Some(username.to_string()),
            roles: Vec::new(),
            aud: Some(vec!["kaa-iam".into()]),
            azp: Some("kaa-frontend".into()),
            exp_in: 300,
            nbf_in: None,
            iss: None,
            kid: None,
            no_exp: false,
        }
    }

    pub fn roles(mut self, roles: &[&str]) -> Mint {
        self.roles = roles.iter().map(|r| r.to_string()).collect();
        self
    }
}

struct Realm {
    /// Newest last; all are published.
    keys: Vec<(String, RS256KeyPair)>,
    clients: HashMap<String, String>,
    users: HashMap<String, (String, Vec<String>)>,
}

impl Realm {
    fn new(name: &str) -> Realm {
        Realm {
            keys: vec![(
                format!("{name}-key-1"),
                RS256KeyPair::generate(2048).unwrap(),
            )],
            clients: HashMap::new(),
            users: HashMap::new(),
        }
    }
}

struct State {
    base: String,
    realms: HashMap<String, Realm>,
}

pub struct Keycloak {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    pub jwks_fetches: Arc<AtomicUsize>,
    shutdown: ShutdownHandle,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Keycloak {
    fn drop(&mut self) {
        self.shutdown.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(state: &State, realm: &str, m: &Mint) -> String {
    let r = &state.realms[realm];
    let (kid, key) = r.keys.last().unwrap();
    let custom = KcClaims {
        preferred_username: m.username.clone(),
        azp: m.azp.clone(),
        realm_access: Some(json!({ "roles": m.roles })),
    };
    let mut claims = Claims::with_custom_claims(custom, Duration::from_secs(300))
        .with_issuer(
            m.iss
                .clone()
                .unwrap_or_else(|| format!("{}/realms/{realm}", state.base)),
        )
        .with_subject(m.sub.clone());
    if let Some(aud) = &m.aud {
        claims = claims.with_audiences(aud.iter().cloned().collect::<HashSet<_>>());
    }
    claims.expires_at = if m.no_exp {
        None
    } else {
        Some(Duration::from_secs((now() as i64 + m.exp_in).max(0) as u64))
    };
    claims.issued_at = Some(Duration::from_secs(now().saturating_sub(5)));
    claims.invalid_before = m
        .nbf_in
        .map(|n| Duration::from_secs((now() as i64 + n).max(0) as u64));
    key.clone()
        .with_key_id(m.kid.as_deref().unwrap_or(kid))
        .sign(claims)
        .unwrap()
}

fn jwks(r: &Realm) -> serde_json::Value {
    let keys: Vec<serde_json::Value> = r
        .keys
        .iter()
        .map(|(kid, k)| {
            let c = k.public_key().to_components();
            json!({"kid": kid, "kty": "RSA", "alg": "RS256", "use": "sig",
                   "n": URL_SAFE_NO_PAD.encode(&c.n), "e": URL_SAFE_NO_PAD.encode(&c.e)})
        })
        .collect();
    json!({ "keys": keys })
}

fn form(body: &[u8]) -> HashMap<String, String> {
    let text = String::from_utf8_lossy(body);
    Request::new("POST", &format!("/?{text}"))
        .query_pairs()
        .into_iter()
        .collect()
}

fn handle(state: &Mutex<State>, fetches: &AtomicUsize, req: Request) -> Response {
    let parts: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    let st = state.lock().unwrap();
    match (req.method.as_str(), parts.as_slice()) {
        ("GET", ["realms", realm, "protocol", "openid-connect", "certs"]) => {
            match st.realms.get(*realm) {
                Some(r) => {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    Response::json(200, &jwks(r))
                }
                None => Response::json(404, &json!({"error": "Realm does not exist"})),
            }
        }
        ("GET", ["realms", realm, ".well-known", "openid-configuration"])
            if st.realms.contains_key(*realm) =>
        {
            let iss = format!("{}/realms/{realm}", st.base);
            Response::json(
                200,
                &json!({
                    "issuer": iss,
                    "jwks_uri": format!("{iss}/protocol/openid-connect/certs"),
                    "token_endpoint": format!("{iss}/protocol/openid-connect/token"),
                }),
            )
        }
        ("POST", ["realms", realm, "protocol", "openid-connect", "token"]) => {
            let Some(r) = st.realms.get(*realm) else {
                return Response::json(404, &json!({"error": "Realm does not exist"}));
            };
            let f = form(&req.body);
            let client = f.get("client_id").cloned().unwrap_or_default();
            let secret_ok = r.clients.get(&client) == f.get("client_secret");
            let mint = match f.get("grant_type").map(String::as_str) {
                Some("client_credentials") if secret_ok => Mint {
                    sub: format!("sa-{client}"),
                    username: Some(format!("service-account-{client}")),
                    azp: Some(client.clone()),
                    aud: None,
                    ..Mint::user("x")
                },
                Some("password") => {
                    let user = f.get("username").cloned().unwrap_or_default();
                    match r.users.get(&user) {
                        Some((pw, roles)) if Some(pw) == f.get("password") => Mint {
                            azp: Some(client.clone()),
                            roles: roles.clone(),
                            ..Mint::user(&user)
                        },
                        _ => {
                            return Response::json(
                                401,
                                &json!({"error": "invalid_grant", "error_description": "Invalid user credentials"}),
                            );
                        }
                    }
                }
                _ => {
                    return Response::json(
                        401,
                        &json!({"error": "unauthorized_client", "error_description": "Invalid client or Invalid client credentials"}),
                    );
                }
            };
            let token = sign(&st, realm, &mint);
            Response::json(
                200,
                &json!({"access_token": token, "expires_in": 300, "token_type": "Bearer"}),
            )
        }
        _ => Response::json(404, &json!({"error": "not found"})),
    }
}

impl Keycloak {
    /// Start with the realm `kaa`.
    pub fn start() -> Keycloak {
        let state = Arc::new(Mutex::new(State {
            base: String::new(),
            realms: HashMap::from([("kaa".to_string(), Realm::new("kaa"))]),
        }));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (s, f) = (Arc::clone(&state), Arc::clone(&fetches));
        let server = Server::bind(
            ServerConfig {
                workers: 2,
                ..ServerConfig::default()
            },
            Arc::new(move |req: Request| handle(&s, &f, req)),
        )
        .unwrap();
        let addr = server.local_addr();
        state.lock().unwrap().base = format!("http://{addr}");
        let shutdown = server.shutdown_handle();
        let thread = std::thread::spawn(move || {
            server.run(StdDuration::from_secs(1));
        });
        Keycloak {
            addr,
            state,
            jwks_fetches: fetches,
            shutdown,
            thread: Some(thread),
        }
    }

    pub fn issuer(&self, realm: &str) -> String {
        format!("http://{}/realms/{realm}", self.addr)
    }

    pub fn add_realm(&self, realm: &str) {
        self.state
            .lock()
            .unwrap()
            .realms
            .insert(realm.into(), Realm::new(realm));
    }

    pub fn add_client(&self, realm: &str, id: &str, secret: &str) {
        self.state
            .lock()
            .unwrap()
            .realms
            .get_mut(realm)
            .unwrap()
            .clients
            .insert(id.into(), secret.into());
    }

    pub fn add_user(&self, realm: &str, username: &str, password: &str, roles: &[&str]) {
        self.state
            .lock()
            .unwrap()
            .realms
            .get_mut(realm)
            .unwrap()
            .users
            .insert(
                username.into(),
                (
                    password.into(),
                    roles.iter().map(|r| r.to_string()).collect(),
                ),
            );
    }

    /// A token signed with the realm's newest key.
    pub fn mint(&self, realm: &str, m: &Mint) -> String {
        sign(&self.state.lock().unwrap(), realm, m)
    }

    /// Add a new signing key (the old ones stay published); returns its kid.
    pub fn rotate(&self, realm: &str) -> String {
        let mut st = self.state.lock().unwrap();
        let r = st.realms.get_mut(realm).unwrap();
        let kid = format!("{realm}-key-{}", r.keys.len() + 1);
        r.keys
            .push((kid.clone(), RS256KeyPair::generate(2048).unwrap()));
        kid
    }

    /// The public key (DER) of the realm's newest key: for algorithm-confusion attacks.
    pub fn public_key_der(&self, realm: &str) -> Vec<u8> {
        let st = self.state.lock().unwrap();
        st.realms[realm]
            .keys
            .last()
            .unwrap()
            .1
            .public_key()
            .to_der()
            .unwrap()
    }

    pub fn current_kid(&self, realm: &str) -> String {
        self.state.lock().unwrap().realms[realm]
            .keys
            .last()
            .unwrap()
            .0
            .clone()
    }
}
