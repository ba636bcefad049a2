//! A Keycloak stand-in for tests, on a real socket.
//!
//! OpenID side: per realm an RS256 key set (rotatable) served at
//! `/realms/{realm}/protocol/openid-connect/certs`, OIDC discovery, and a token endpoint for the
//! client_credentials and password grants, signing real RS256 tokens shaped as Keycloak 26 shapes
//! them: an access token has `typ: Bearer`, the realm's `iss`, `iat`/`exp`, `sub`,
//! `preferred_username`, `azp` (the requesting client), `realm_access.roles` (with the realm's
//! default roles every user holds), `resource_access` (the account console's roles and the mapped
//! client roles) and as `aud` the clients of `resource_access` but the requesting one (`account`
//! for every user); with `scope=openid` an ID token (`typ: ID`, `aud` the client) comes with it.
//! UMA decisions (`grant_type=urn:ietf:params:oauth:grant-type:uma-ticket`,
//! `response_mode=decision`) are evaluated, as Keycloak does, from the resources, scopes, role
//! policies and permissions provisioned in the audience's resource server through the admin API,
//! for a bearer whose access token verifies (key, issuer, `exp` and `nbf` without tolerance).
//! Tests also mint tokens directly.
//!
//! Admin side: the Admin REST API as Keycloak documents it, kept in memory: realms, clients
//! (with their service-account users and, for `authorizationServicesEnabled`, a resource server
//! with Keycloak's default resource, policy and permission), realm roles, authorization scopes,
//! resources, role and scope policies and permissions, identity providers, users (credentials,
//! reset-password, execute-actions-email, realm role mappings). Every `/admin/*` call needs a
//! Bearer token of the `master` realm carrying the `admin` role (password grant of
//! [`ADMIN_USER`] with `admin-cli`, or client credentials of a client from
//! [`Keycloak::add_admin_client`]). Creates answer 201 with a `Location` (realms, clients, roles,
//! identity providers, users) or with the new representation (authorization objects); a second
//! object of the same name answers 409 with Keycloak's body; a missing realm 404
//! `{"error":"Realm not found."}`. Realms made through the admin API issue tokens at the token
//! endpoint and publish keys like the others.
//!
//! Faults: [`Keycloak::fail_next`] (answer a status before doing anything),
//! [`Keycloak::lose_next`] (do the work, then answer a status: the reply is lost),
//! [`Keycloak::fail_all`], [`Keycloak::delay`], and [`Keycloak::set_down`] (the listener is
//! closed: connections are refused until it is up again, on the same port). Faults apply to the
//! admin API and token requests, never to key sets and discovery documents.
//!
//! Tests read the state back: [`Keycloak::realm_snapshot`], [`Keycloak::calls`].
//!
//! This file holds the stand-in's public face ([`Keycloak`], [`Mint`]); the server is in parts:
//! `model` (realms, clients, roles, users), `state` (what the threads share, faults), `tokens`
//! (signing, key sets), `replies` (Keycloak's answers and representation checks),
//! `token_endpoint` (grants, UMA decisions, the admin API's caller checks), `realms` (admin
//! dispatch, realms, clients), `authz`, `roles`, `idps` (with components), `users`, `routing`
//! (faults and the call log around a request) and `snapshot` (what tests read back).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration as StdDuration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwt_simple::prelude::*;
use kaa::http::message::{Request, Response, percent_decode};
use kaa::http::server::{Server, ServerConfig, ShutdownHandle};
use serde_json::{Map, Value, json};

mod authz;
mod idps;
mod model;
mod realms;
mod replies;
mod roles;
mod routing;
mod snapshot;
mod state;
mod token_endpoint;
mod tokens;
mod users;

use authz::*;
use idps::*;
use model::*;
use realms::*;
use replies::*;
use roles::*;
use routing::*;
pub use snapshot::*;
pub use state::*;
use token_endpoint::*;
use tokens::*;
use users::*;

/// The master realm's administrator (password grant with `admin-cli`).
pub const ADMIN_USER: &str = "admin";
pub const ADMIN_PASSWORD: &str = "admin";

#[derive(Clone, Serialize, Deserialize, Default)]
pub struct KcClaims {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub azp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub realm_access: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_access: Option<serde_json::Value>,
    /// Keycloak's token type (`Bearer`, `ID`, `Refresh`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    /// The granted scopes (`openid profile email`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
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
    /// Client roles by client id (the `resource_access` claim).
    pub client_roles: BTreeMap<String, Vec<String>>,
    /// The `typ` claim: `Bearer` for access tokens, as Keycloak writes it.
    pub typ: Option<String>,
    /// The `scope` claim.
    pub scope: Option<String>,
}

impl Mint {
    /// What Keycloak gives a user who logged in through the web UI's client `kaa-frontend`:
    /// the account console's audience only, the web UI as `azp`.
    pub fn user(username: &str) -> Mint {
        Mint {
            sub: format!("sub-{username}"),
            username: Some(username.to_string()),
            roles: Vec::new(),
            aud: Some(vec!["account".into()]),
            azp: Some("kaa-frontend".into()),
            typ: Some("Bearer".into()),
            scope: Some("profile email".into()),
            exp_in: 300,
            nbf_in: None,
            iss: None,
            kid: None,
            no_exp: false,
            client_roles: BTreeMap::new(),
        }
    }

    pub fn roles(mut self, roles: &[&str]) -> Mint {
        self.roles = roles.iter().map(|r| r.to_string()).collect();
        self
    }
}

pub struct Keycloak {
    pub addr: SocketAddr,
    pub jwks_fetches: Arc<AtomicUsize>,
    shared: Arc<Shared>,
    server: Mutex<Option<(ShutdownHandle, JoinHandle<()>)>>,
}

impl Drop for Keycloak {
    fn drop(&mut self) {
        self.stop();
    }
}

// ------------------------------------------------------------------ the stand-in

static SEEDS: AtomicU64 = AtomicU64::new(0x5eed);

impl Keycloak {
    /// Start with the realms `master` (administrator [`ADMIN_USER`]) and `kaa`.
    pub fn start() -> Keycloak {
        Keycloak::start_at("")
    }

    /// Start under a context path, as Keycloak before 17 did (`/auth`).
    pub fn start_at(context: &str) -> Keycloak {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            ^ SEEDS.fetch_add(0x1000_0000, Ordering::Relaxed);
        let mut state = State {
            base: String::new(),
            realms: HashMap::new(),
            revoked: HashSet::new(),
            seq: 0,
            seed,
        };
        let mut master = state.new_realm("master");
        master.token_lifespan = 60;
        master.rep.insert("enabled".into(), json!(true));
        for role in ["admin", "create-realm"] {
            let id = state.uuid();
            master.roles.push(Role {
                id,
                name: role.into(),
                description: None,
                attributes: json!({}),
            });
        }
        let admin_id = state.uuid();
        master.users.push(User {
            id: admin_id,
            username: ADMIN_USER.into(),
            email: None,
            rep: Map::new(),
            enabled: true,
            password: Some(ADMIN_PASSWORD.into()),
            roles: vec!["admin".into(), "create-realm".into()],
            required_actions: Vec::new(),
            emails: Vec::new(),
            service_account_client: None,
            client_roles: Vec::new(),
            created: now(),
        });
        state.realms.insert("master".into(), master);
        let mut kaa = state.new_realm("kaa");
        kaa.rep.insert("enabled".into(), json!(true));
        state.realms.insert("kaa".into(), kaa);
        let fetches = Arc::new(AtomicUsize::new(0));
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            faults: Mutex::new(Faults::default()),
            calls: Mutex::new(Vec::new()),
            fetches: Arc::clone(&fetches),
            context: context.trim_end_matches('/').to_string(),
        });
        let (server, addr) = Keycloak::bind(&shared, "127.0.0.1:0".parse().unwrap()).unwrap();
        shared.state.lock().unwrap().base = format!("http://{addr}{}", shared.context);
        let kc = Keycloak {
            addr,
            jwks_fetches: fetches,
            shared,
            server: Mutex::new(None),
        };
        kc.run(server);
        kc
    }

    fn bind(shared: &Arc<Shared>, at: SocketAddr) -> std::io::Result<(Server, SocketAddr)> {
        let s = Arc::clone(shared);
        let server = Server::bind(
            ServerConfig {
                bind: at,
                workers: 8,
                ..ServerConfig::default()
            },
            Arc::new(move |req: Request| handle(&s, req)),
        )?;
        let addr = server.local_addr();
        Ok((server, addr))
    }

    fn run(&self, server: Server) {
        let shutdown = server.shutdown_handle();
        let thread = std::thread::spawn(move || {
            server.run(StdDuration::from_secs(1));
        });
        *self.server.lock().unwrap() = Some((shutdown, thread));
    }

    fn stop(&self) {
        let running = self.server.lock().unwrap().take();
        if let Some((shutdown, thread)) = running {
            shutdown.shutdown();
            let _ = thread.join();
        }
    }

    /// The base URL (with the context path, if any): what the Tenant Manager is given.
    pub fn url(&self) -> String {
        self.shared.state.lock().unwrap().base.clone()
    }

    pub fn issuer(&self, realm: &str) -> String {
        format!("{}/realms/{realm}", self.url())
    }

    pub fn add_realm(&self, realm: &str) {
        let mut st = self.shared.state.lock().unwrap();
        let mut r = st.new_realm(realm);
        r.rep.insert("enabled".into(), json!(true));
        st.realms.insert(realm.into(), r);
    }

    /// A confidential client whose service account tokens are `sa-<id>` /
    /// `service-account-<id>` without roles.
    pub fn add_client(&self, realm: &str, id: &str, secret: &str) {
        let mut st = self.shared.state.lock().unwrap();
        let uuid = st.uuid();
        let r = st.realms.get_mut(realm).unwrap();
        r.clients.retain(|c| c.client_id != id);
        let mut rep = Map::new();
        rep.insert("enabled".into(), json!(true));
        rep.insert("serviceAccountsEnabled".into(), json!(true));
        rep.insert("directAccessGrantsEnabled".into(), json!(true));
        r.clients.push(Client {
            id: uuid,
            client_id: id.into(),
            rep,
            secret: Some(secret.into()),
            public: false,
            service_account: None,
            helper_sa: true,
            authz: None,
        });
    }

    /// A client of the master realm whose service account is an administrator (for the
    /// client-credentials way to the admin API).
    pub fn add_admin_client(&self, id: &str, secret: &str) {
        let mut st = self.shared.state.lock().unwrap();
        let (cid, uid) = (st.uuid(), st.uuid());
        let r = st.realms.get_mut("master").unwrap();
        let mut rep = Map::new();
        rep.insert("enabled".into(), json!(true));
        rep.insert("serviceAccountsEnabled".into(), json!(true));
        r.clients.push(Client {
            id: cid.clone(),
            client_id: id.into(),
            rep,
            secret: Some(secret.into()),
            public: false,
            service_account: Some(uid.clone()),
            helper_sa: false,
            authz: None,
        });
        r.users.push(User {
            id: uid,
            username: format!("service-account-{id}"),
            email: None,
            rep: Map::new(),
            enabled: true,
            password: None,
            roles: vec!["admin".into()],
            required_actions: Vec::new(),
            emails: Vec::new(),
            service_account_client: Some(cid),
            client_roles: Vec::new(),
            created: now(),
        });
    }

    pub fn add_user(&self, realm: &str, username: &str, password: &str, roles: &[&str]) {
        let mut st = self.shared.state.lock().unwrap();
        let r = st.realms.get_mut(realm).unwrap();
        r.users.retain(|u| u.username != username);
        r.users.push(User {
            id: format!("sub-{username}"),
            username: username.into(),
            email: None,
            rep: Map::new(),
            enabled: true,
            password: Some(password.into()),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            required_actions: Vec::new(),
            emails: Vec::new(),
            service_account_client: None,
            client_roles: Vec::new(),
            created: now(),
        });
    }

    /// A token signed with the realm's newest key.
    pub fn mint(&self, realm: &str, m: &Mint) -> String {
        sign(&mut self.shared.state.lock().unwrap(), realm, m)
    }

    /// Add a new signing key (the old ones stay published); returns its kid.
    pub fn rotate(&self, realm: &str) -> String {
        let mut st = self.shared.state.lock().unwrap();
        st.ensure_key(realm);
        let r = st.realms.get_mut(realm).unwrap();
        let kid = format!("{realm}-key-{}", r.keys.len() + 1);
        r.keys
            .push((kid.clone(), RS256KeyPair::generate(2048).unwrap()));
        kid
    }

    /// Withdraw a signing key: the realm's key set (`.../certs`) no longer publishes it, as
    /// when an administrator deletes or disables a key provider. Another key must remain.
    pub fn withdraw_key(&self, realm: &str, kid: &str) {
        let mut st = self.shared.state.lock().unwrap();
        let r = st.realms.get_mut(realm).unwrap();
        r.keys.retain(|(k, _)| k != kid);
        assert!(!r.keys.is_empty(), "withdrew the last key of realm {realm}");
    }

    /// The public key (DER) of the realm's newest key: for algorithm-confusion attacks.
    pub fn public_key_der(&self, realm: &str) -> Vec<u8> {
        let mut st = self.shared.state.lock().unwrap();
        st.ensure_key(realm);
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
        let mut st = self.shared.state.lock().unwrap();
        st.ensure_key(realm);
        st.realms[realm].keys.last().unwrap().0.clone()
    }

    // -------------------------------------------------------------- reading the state

    pub fn has_realm(&self, realm: &str) -> bool {
        self.shared.state.lock().unwrap().realms.contains_key(realm)
    }

    pub fn realm_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .shared
            .state
            .lock()
            .unwrap()
            .realms
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// Everything in a realm, or `None` when there is no such realm.
    pub fn realm_snapshot(&self, realm: &str) -> Option<RealmSnapshot> {
        self.shared
            .state
            .lock()
            .unwrap()
            .realms
            .get(realm)
            .map(snapshot)
    }

    /// Admin and token calls so far, in order (faulted ones included).
    pub fn calls(&self) -> Vec<Call> {
        self.shared.calls.lock().unwrap().clone()
    }

    /// Calls with this method whose path starts with `prefix` and that answered `status`.
    pub fn count_calls(&self, method: &str, prefix: &str, status: u16) -> usize {
        self.shared
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.method == method && c.path.starts_with(prefix) && c.status == status)
            .count()
    }

    /// Requests to a realm's token endpoint so far.
    pub fn token_requests(&self, realm: &str) -> usize {
        self.shared
            .state
            .lock()
            .unwrap()
            .realms
            .get(realm)
            .map_or(0, |r| r.token_requests)
    }

    /// Lifetime (seconds) of tokens the realm's token endpoint issues from now on.
    pub fn set_token_lifespan(&self, realm: &str, seconds: u64) {
        self.shared
            .state
            .lock()
            .unwrap()
            .realms
            .get_mut(realm)
            .unwrap()
            .token_lifespan = seconds;
    }

    /// Every token the realm's token endpoint issued so far stops working on the admin API
    /// (as a Keycloak restart with new keys or a session logout would do).
    pub fn revoke_tokens(&self, realm: &str) {
        let mut st = self.shared.state.lock().unwrap();
        let issued = std::mem::take(&mut st.realms.get_mut(realm).unwrap().issued);
        st.revoked.extend(issued);
    }

    // -------------------------------------------------------------- faults

    fn schedule(&self, skip: usize, status: u16, lose: bool) {
        self.shared
            .faults
            .lock()
            .unwrap()
            .queue
            .push_back(Scheduled { skip, status, lose });
    }

    /// The next `n` calls answer `status` without doing anything. One-shot faults queue up:
    /// each waits for the ones scheduled before it.
    pub fn fail_next(&self, n: usize, status: u16) {
        for _ in 0..n {
            self.schedule(0, status, false);
        }
    }

    /// The next `n` calls do their work, then answer `status` (the reply is lost).
    pub fn lose_next(&self, n: usize, status: u16) {
        for _ in 0..n {
            self.schedule(0, status, true);
        }
    }

    /// After `skip` more calls (counted from the previous scheduled fault), one call does its
    /// work and answers `status`.
    /// The next `method` call whose path ends with `suffix` does the work, then answers
    /// `status` (the reply is lost).
    pub fn lose_on(&self, method: &str, suffix: &str, status: u16) {
        self.shared.faults.lock().unwrap().lose_on =
            Some((method.to_string(), suffix.to_string(), status));
    }

    pub fn lose_after(&self, skip: usize, status: u16) {
        self.schedule(skip, status, true);
    }

    /// After `skip` more calls, one call answers `status` without doing anything.
    pub fn fail_after(&self, skip: usize, status: u16) {
        self.schedule(skip, status, false);
    }

    /// One-shot faults not yet due.
    pub fn pending_faults(&self) -> usize {
        let f = self.shared.faults.lock().unwrap();
        f.queue.len() + usize::from(f.lose_on.is_some())
    }

    /// Every call answers `status` until `None`.
    pub fn fail_all(&self, status: Option<u16>) {
        self.shared.faults.lock().unwrap().fail_all = status;
    }

    /// Every call waits this long before it is handled.
    pub fn delay(&self, d: StdDuration) {
        self.shared.faults.lock().unwrap().delay = d;
    }

    /// Pending one-shot faults cleared, `fail_all` and the delay off.
    pub fn clear_faults(&self) {
        *self.shared.faults.lock().unwrap() = Faults::default();
    }

    /// Down: the listener closes and open connections are cut, so connections are refused.
    /// Up again: the same port listens again, with the same state.
    pub fn set_down(&self, down: bool) {
        if down {
            self.stop();
            return;
        }
        if self.server.lock().unwrap().is_some() {
            return;
        }
        let mut last = None;
        for _ in 0..100 {
            match Keycloak::bind(&self.shared, self.addr) {
                Ok((server, _)) => {
                    self.run(server);
                    return;
                }
                Err(e) => {
                    last = Some(e);
                    std::thread::sleep(StdDuration::from_millis(20));
                }
            }
        }
        panic!(
            "keycloak stand-in: cannot listen on {} again: {last:?}",
            self.addr
        );
    }

    pub fn is_down(&self) -> bool {
        self.server.lock().unwrap().is_none()
    }
}
