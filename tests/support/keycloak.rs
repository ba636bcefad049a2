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

// ------------------------------------------------------------------ model

struct Client {
    id: String,
    client_id: String,
    /// The stored representation (without `id`, `clientId`, `secret`).
    rep: Map<String, Value>,
    secret: Option<String>,
    public: bool,
    /// Id of the service-account user (clients made through the admin API).
    service_account: Option<String>,
    /// Clients of `add_client`: a service account without a user (`sa-<clientId>`).
    helper_sa: bool,
    authz: Option<ResourceServer>,
}

impl Client {
    fn flag(&self, name: &str) -> bool {
        self.rep.get(name).and_then(Value::as_bool).unwrap_or(false)
    }

    fn representation(&self) -> Value {
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

struct ResourceServer {
    id: String,
    /// Ids of new objects: the server's id prefix and a counter.
    next: u64,
    settings: Map<String, Value>,
    scopes: Vec<Value>,
    resources: Vec<Value>,
    policies: Vec<Policy>,
}

#[derive(Clone)]
struct Policy {
    id: String,
    name: String,
    /// `role`, `scope`, `resource`, `js`, …
    kind: String,
    description: Option<String>,
    logic: String,
    decision_strategy: String,
    /// Role policies: (role id, required).
    roles: Vec<(String, bool)>,
    /// Permissions: scope ids, resource ids, policy ids; resource-type permissions.
    scopes: Vec<String>,
    resources: Vec<String>,
    policies: Vec<String>,
    resource_type: Option<String>,
}

impl ResourceServer {
    fn fresh_id(&mut self) -> String {
        self.next += 1;
        format!("{}{:012x}", &self.id[..24], self.next)
    }
}

impl Policy {
    fn is_permission(&self) -> bool {
        matches!(self.kind.as_str(), "scope" | "resource")
    }

    fn brief(&self) -> Value {
        let mut v = json!({"id": self.id, "name": self.name, "type": self.kind,
            "logic": self.logic, "decisionStrategy": self.decision_strategy, "config": {}});
        if let Some(d) = &self.description {
            v["description"] = json!(d);
        }
        v
    }

    fn typed(&self) -> Value {
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

struct Role {
    id: String,
    name: String,
    description: Option<String>,
    attributes: Value,
}

impl Role {
    fn representation(&self, container: &str) -> Value {
        let mut v = json!({"id": self.id, "name": self.name, "composite": false,
            "clientRole": false, "containerId": container, "attributes": self.attributes});
        if let Some(d) = &self.description {
            v["description"] = json!(d);
        }
        v
    }
}

struct User {
    id: String,
    username: String,
    email: Option<String>,
    rep: Map<String, Value>,
    enabled: bool,
    password: Option<String>,
    /// Realm role names.
    roles: Vec<String>,
    required_actions: Vec<String>,
    /// `execute-actions-email` calls: `{actions, client_id, redirect_uri, lifespan}`.
    emails: Vec<Value>,
    service_account_client: Option<String>,
    /// Ids of the client roles mapped to the user (`role-mappings/clients/{client}`).
    client_roles: Vec<String>,
    created: u64,
}

impl User {
    fn representation(&self) -> Value {
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

struct Realm {
    id: String,
    name: String,
    rep: Map<String, Value>,
    /// Newest last; all are published. Made on first use (RSA key generation is slow).
    keys: Vec<(String, RS256KeyPair)>,
    token_lifespan: u64,
    clients: Vec<Client>,
    roles: Vec<Role>,
    idps: Vec<Value>,
    users: Vec<User>,
    /// Client roles: (client uuid, role).
    client_roles: Vec<(String, Role)>,
    /// Components (user storage providers such as LDAP), with their `id`.
    components: Vec<Value>,
    /// Tokens issued by the token endpoint (for revocation).
    issued: Vec<String>,
    token_requests: usize,
    /// The declarative user profile (`…/users/profile`), Keycloak 26's default at creation.
    profile: Value,
}

/// Keycloak 26's default user profile, in short: e-mail and names required of users.
fn default_user_profile() -> Value {
    let required = json!({"roles": ["user"]});
    json!({"attributes": [
        {"name": "username", "displayName": "${username}"},
        {"name": "email", "displayName": "${email}", "required": required},
        {"name": "firstName", "displayName": "${firstName}", "required": required},
        {"name": "lastName", "displayName": "${lastName}", "required": required},
    ], "groups": [{"name": "user-metadata"}]})
}

const BUILTIN_CLIENTS: &[(&str, bool, bool)] = &[
    // (clientId, public, directAccessGrantsEnabled)
    ("account", true, false),
    ("account-console", true, false),
    ("admin-cli", true, true),
    ("broker", false, false),
    ("realm-management", false, false),
    ("security-admin-console", true, false),
];

/// The client roles of a realm's `realm-management` client (what its admin API checks).
const REALM_MANAGEMENT_ROLES: &[&str] = &[
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

// ------------------------------------------------------------------ state

struct State {
    base: String,
    realms: HashMap<String, Realm>,
    revoked: HashSet<String>,
    seq: u64,
    seed: u64,
}

impl State {
    fn uuid(&mut self) -> String {
        self.seq += 1;
        let a = self.seed ^ self.seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            (a >> 32) as u32,
            (a >> 16) as u16,
            a & 0xfff,
            self.seq & 0xfff,
            self.seq
        )
    }

    fn new_realm(&mut self, name: &str) -> Realm {
        let mut r = Realm {
            id: self.uuid(),
            name: name.to_string(),
            rep: Map::new(),
            keys: Vec::new(),
            token_lifespan: 300,
            clients: Vec::new(),
            roles: Vec::new(),
            idps: Vec::new(),
            users: Vec::new(),
            client_roles: Vec::new(),
            components: Vec::new(),
            issued: Vec::new(),
            token_requests: 0,
            profile: default_user_profile(),
        };
        for role in [
            "offline_access".to_string(),
            "uma_authorization".to_string(),
            format!("default-roles-{name}"),
        ] {
            let id = self.uuid();
            r.roles.push(Role {
                id,
                name: role,
                description: None,
                attributes: json!({}),
            });
        }
        for (client_id, public, direct) in BUILTIN_CLIENTS {
            let id = self.uuid();
            let mut rep = Map::new();
            rep.insert("enabled".into(), json!(true));
            rep.insert("protocol".into(), json!("openid-connect"));
            rep.insert("directAccessGrantsEnabled".into(), json!(direct));
            rep.insert("redirectUris".into(), json!([]));
            let secret = (!public).then(|| format!("secret-{id}"));
            if *client_id == "realm-management" {
                for name in REALM_MANAGEMENT_ROLES {
                    let role_id = self.uuid();
                    r.client_roles.push((
                        id.clone(),
                        Role {
                            id: role_id,
                            name: name.to_string(),
                            description: None,
                            attributes: json!({}),
                        },
                    ));
                }
            }
            r.clients.push(Client {
                id,
                client_id: client_id.to_string(),
                rep,
                secret,
                public: *public,
                service_account: None,
                helper_sa: false,
                authz: None,
            });
        }
        r
    }

    fn ensure_key(&mut self, realm: &str) {
        let r = self.realms.get_mut(realm).unwrap();
        if r.keys.is_empty() {
            r.keys.push((
                format!("{realm}-key-1"),
                RS256KeyPair::generate(2048).unwrap(),
            ));
        }
    }
}

/// A one-shot fault: after `skip` more calls, one call answers `status` (before doing anything,
/// or after doing its work when `lose`).
struct Scheduled {
    skip: usize,
    status: u16,
    lose: bool,
}

#[derive(Default)]
struct Faults {
    queue: std::collections::VecDeque<Scheduled>,
    fail_all: Option<u16>,
    delay: StdDuration,
    /// The next call with this method whose path ends so does the work and answers `status`.
    lose_on: Option<(String, String, u16)>,
}

/// One admin or token call as the stand-in saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub status: u16,
}

struct Shared {
    state: Mutex<State>,
    faults: Mutex<Faults>,
    calls: Mutex<Vec<Call>>,
    fetches: Arc<AtomicUsize>,
    context: String,
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

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(state: &mut State, realm: &str, m: &Mint) -> String {
    state.ensure_key(realm);
    let jti = state.uuid();
    let r = &state.realms[realm];
    let (kid, key) = r.keys.last().unwrap();
    let custom = KcClaims {
        scope: m.scope.clone(),
        typ: m.typ.clone(),
        preferred_username: m.username.clone(),
        azp: m.azp.clone(),
        realm_access: (!m.roles.is_empty()).then(|| json!({ "roles": m.roles })),
        resource_access: (!m.client_roles.is_empty()).then(|| {
            Value::Object(
                m.client_roles
                    .iter()
                    .map(|(c, roles)| (c.clone(), json!({ "roles": roles })))
                    .collect(),
            )
        }),
    };
    let mut claims = Claims::with_custom_claims(custom, Duration::from_secs(300))
        .with_issuer(
            m.iss
                .clone()
                .unwrap_or_else(|| format!("{}/realms/{realm}", state.base)),
        )
        .with_subject(m.sub.clone())
        .with_jwt_id(jti);
    // One audience is a string, as Keycloak writes it; more are a list.
    match m.aud.as_deref() {
        None | Some([]) => {}
        Some([one]) => claims = claims.with_audience(one.clone()),
        Some(many) => {
            claims = claims.with_audiences(many.iter().cloned().collect::<HashSet<_>>());
        }
    }
    claims.expires_at = if m.no_exp {
        None
    } else {
        Some(Duration::from_secs((now() as i64 + m.exp_in).max(0) as u64))
    };
    claims.issued_at = Some(Duration::from_secs(now()));
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

// ------------------------------------------------------------------ answers

fn error_message(status: u16, message: &str) -> Response {
    Response::json(status, &json!({ "errorMessage": message }))
}

fn error(status: u16, error: &str) -> Response {
    Response::json(status, &json!({ "error": error }))
}

fn error_described(status: u16, error: &str, description: &str) -> Response {
    Response::json(
        status,
        &json!({ "error": error, "error_description": description }),
    )
}

fn unknown_error(status: u16) -> Response {
    error_described(
        status,
        "unknown_error",
        "For more on this error consult the server log.",
    )
}

fn no_content() -> Response {
    Response::new(204)
}

fn created(location: &str) -> Response {
    Response::new(201).with_header("Location", location)
}

fn realm_not_found() -> Response {
    error(404, "Realm not found.")
}

fn not_found() -> Response {
    error(404, "HTTP 404 Not Found")
}

fn not_allowed() -> Response {
    error(405, "HTTP 405 Method Not Allowed")
}

fn body_json(req: &Request) -> Result<Value, Response> {
    serde_json::from_slice(&req.body).map_err(|_| unknown_error(400))
}

fn body_object(req: &Request) -> Result<Map<String, Value>, Response> {
    match body_json(req)? {
        Value::Object(m) => Ok(m),
        _ => Err(unknown_error(400)),
    }
}

fn str_field<'a>(m: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    m.get(k).and_then(Value::as_str)
}

/// Fields of a representation whose JSON type Keycloak's binding insists on.
fn check_types(
    m: &Map<String, Value>,
    bools: &[&str],
    ints: &[&str],
    strings: &[&str],
    lists: &[&str],
) -> Result<(), Response> {
    let bad = |k: &str, v: &Value| {
        Err(error_message(
            400,
            &format!("Invalid value `{v}` for field `{k}`"),
        ))
    };
    for (k, v) in m {
        if v.is_null() {
            continue;
        }
        let ok = if bools.contains(&k.as_str()) {
            v.is_boolean()
        } else if ints.contains(&k.as_str()) {
            v.is_i64()
        } else if strings.contains(&k.as_str()) {
            v.is_string()
        } else if lists.contains(&k.as_str()) {
            v.is_array()
        } else {
            true
        };
        if !ok {
            return bad(k, v);
        }
    }
    Ok(())
}

const REALM_BOOLS: &[&str] = &[
    "enabled",
    "registrationAllowed",
    "registrationEmailAsUsername",
    "rememberMe",
    "verifyEmail",
    "loginWithEmailAllowed",
    "duplicateEmailsAllowed",
    "resetPasswordAllowed",
    "editUsernameAllowed",
    "bruteForceProtected",
    "permanentLockout",
    "userManagedAccessAllowed",
    "internationalizationEnabled",
    "eventsEnabled",
    "adminEventsEnabled",
];
const REALM_INTS: &[&str] = &[
    "accessTokenLifespan",
    "accessTokenLifespanForImplicitFlow",
    "ssoSessionIdleTimeout",
    "ssoSessionMaxLifespan",
    "offlineSessionIdleTimeout",
    "accessCodeLifespan",
    "accessCodeLifespanUserAction",
    "accessCodeLifespanLogin",
    "actionTokenGeneratedByAdminLifespan",
    "actionTokenGeneratedByUserLifespan",
    "failureFactor",
    "maxFailureWaitSeconds",
    "minimumQuickLoginWaitSeconds",
    "waitIncrementSeconds",
    "quickLoginCheckMilliSeconds",
    "maxDeltaTimeSeconds",
    "notBefore",
];
const REALM_STRINGS: &[&str] = &[
    "realm",
    "displayName",
    "displayNameHtml",
    "sslRequired",
    "loginTheme",
    "accountTheme",
    "adminTheme",
    "emailTheme",
    "defaultLocale",
    "passwordPolicy",
];

fn check_realm(m: &Map<String, Value>) -> Result<(), Response> {
    check_types(
        m,
        REALM_BOOLS,
        REALM_INTS,
        REALM_STRINGS,
        &["supportedLocales", "users", "clients"],
    )?;
    if let Some(s) = str_field(m, "sslRequired")
        && !["all", "external", "none"].contains(&s.to_ascii_lowercase().as_str())
    {
        return Err(error_message(
            400,
            &format!("Invalid value `{s}` for field `sslRequired`"),
        ));
    }
    Ok(())
}

const CLIENT_BOOLS: &[&str] = &[
    "enabled",
    "publicClient",
    "bearerOnly",
    "consentRequired",
    "standardFlowEnabled",
    "implicitFlowEnabled",
    "directAccessGrantsEnabled",
    "serviceAccountsEnabled",
    "authorizationServicesEnabled",
    "frontchannelLogout",
    "fullScopeAllowed",
    "surrogateAuthRequired",
    "alwaysDisplayInConsole",
];
const CLIENT_STRINGS: &[&str] = &[
    "clientId",
    "name",
    "description",
    "rootUrl",
    "adminUrl",
    "baseUrl",
    "secret",
    "protocol",
    "clientAuthenticatorType",
];
const CLIENT_LISTS: &[&str] = &[
    "redirectUris",
    "webOrigins",
    "defaultClientScopes",
    "optionalClientScopes",
];

fn check_client(m: &Map<String, Value>) -> Result<(), Response> {
    check_types(
        m,
        CLIENT_BOOLS,
        &["notBefore", "nodeReRegistrationTimeout"],
        CLIENT_STRINGS,
        CLIENT_LISTS,
    )?;
    if let Some(p) = str_field(m, "protocol")
        && p != "openid-connect"
        && p != "saml"
    {
        return Err(error_message(400, &format!("Invalid protocol `{p}`")));
    }
    Ok(())
}

/// Whether a redirect URI is allowed by a client's `redirectUris` (`*` ends a prefix pattern).
fn redirect_allowed(client: &Client, uri: &str) -> bool {
    client
        .rep
        .get("redirectUris")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .any(|p| match p.strip_suffix('*') {
            Some(prefix) => uri.starts_with(prefix),
            None => p == uri,
        })
}

fn query(req: &Request) -> HashMap<String, String> {
    req.query_pairs().into_iter().collect()
}

/// `first`/`max` of a list query (`default_max` when absent; `-1` = all).
fn page<T: Clone>(items: Vec<T>, q: &HashMap<String, String>, default_max: i64) -> Vec<T> {
    let first = q
        .get("first")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(0);
    let max = q
        .get("max")
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or(default_max);
    let it = items.into_iter().skip(first);
    if max < 0 {
        it.collect()
    } else {
        it.take(max as usize).collect()
    }
}

fn contains_ci(hay: &str, needle: &str) -> bool {
    hay.to_lowercase().contains(&needle.to_lowercase())
}

// ------------------------------------------------------------------ token endpoint

/// A UMA decision (`grant_type=urn:ietf:params:oauth:grant-type:uma-ticket`,
/// `response_mode=decision`): does the bearer hold `permission=<resource>[#<scope>]` of the
/// resource server `audience`? Answered as Keycloak 26 answers: 401 `invalid_grant` for a bearer
/// token that does not verify (signature, issuer, `exp`/`nbf` with no tolerance, an access token
/// only), 400 for an unknown resource server, or a resource (or a scope of it) that does not
/// exist, 200 `{"result": true}` or 403 `access_denied` as [`evaluate`] decides.
fn uma_decision(st: &State, realm: &str, req: &Request) -> Response {
    let Some(r) = st.realms.get(realm) else {
        return Response::json(404, &json!({"error": "Realm does not exist"}));
    };
    let f = form(&req.body);
    let Some(audience) = f.get("audience") else {
        return error_described(400, "invalid_request", "Missing audience");
    };
    let token = req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or("");
    let options = VerificationOptions {
        allowed_issuers: Some(HashSet::from([format!("{}/realms/{realm}", st.base)])),
        time_tolerance: Some(Duration::from_secs(0)),
        ..VerificationOptions::default()
    };
    let verified = Token::decode_metadata(token).ok().and_then(|m| {
        let kid = m.key_id()?.to_string();
        let (_, key) = r.keys.iter().find(|(k, _)| *k == kid)?;
        key.public_key()
            .verify_token::<KcClaims>(token, Some(options))
            .ok()
    });
    let Some(claims) = verified.filter(|c| c.custom.typ.as_deref() == Some("Bearer")) else {
        return error_described(401, "invalid_grant", "Invalid bearer token");
    };
    let Some(rs) = r
        .clients
        .iter()
        .find(|c| &c.client_id == audience)
        .and_then(|c| c.authz.as_ref())
    else {
        return error_described(
            400,
            "invalid_request",
            &format!("Unknown resource server id: [{audience}]"),
        );
    };
    if f.get("response_mode").map(String::as_str) != Some("decision") {
        return error_described(
            400,
            "invalid_request",
            "the stand-in answers response_mode=decision only",
        );
    }
    let roles: Vec<String> = claims
        .custom
        .realm_access
        .as_ref()
        .and_then(|r| r.get("roles"))
        .and_then(|r| r.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    // Role policies name roles by id.
    let held: Vec<&str> = r
        .roles
        .iter()
        .filter(|role| roles.contains(&role.name))
        .map(|role| role.id.as_str())
        .collect();
    let permission = f.get("permission").cloned().unwrap_or_default();
    let (resource, scope) = match permission.split_once('#') {
        Some((res, sc)) => (res, Some(sc)),
        None => (permission.as_str(), None),
    };
    let no_resource = || {
        error_described(
            400,
            "invalid_resource",
            &format!("Resource with id [{resource}] does not exist."),
        )
    };
    let Some(res) = rs
        .resources
        .iter()
        .find(|x| x["_id"] == resource)
        .or_else(|| rs.resources.iter().find(|x| x["name"] == resource))
    else {
        return no_resource();
    };
    let res_scopes: Vec<String> = res["scopes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(String::from))
        .collect();
    let granted = match scope {
        Some(name) => {
            let Some(sid) = rs
                .scopes
                .iter()
                .find(|x| x["name"] == name || x["id"] == name)
                .and_then(|x| x["id"].as_str())
                .filter(|id| res_scopes.iter().any(|s| s == id))
            else {
                return no_resource();
            };
            evaluate(rs, &held, res, Some(sid))
        }
        // The resource alone: granted when any of its scopes is (or the resource itself, when it
        // has none).
        None if res_scopes.is_empty() => evaluate(rs, &held, res, None),
        None => res_scopes
            .iter()
            .any(|sid| evaluate(rs, &held, res, Some(sid))),
    };
    if granted {
        Response::json(200, &json!({ "result": true }))
    } else {
        error_described(403, "access_denied", "not_authorized")
    }
}

/// Keycloak's evaluation of one resource (and scope) for a subject holding the realm roles with
/// ids `held`: the permissions that apply (resource permissions naming the resource or its type,
/// scope permissions naming the scope and, if they name resources, this one) each decide by
/// their strategy over their policies; the resource server's strategy (`UNANIMOUS` by default)
/// combines them; with no permission that applies, `ENFORCING` denies and `PERMISSIVE` grants.
fn evaluate(rs: &ResourceServer, held: &[&str], res: &Value, scope: Option<&str>) -> bool {
    let setting = |k: &str, default: &str| {
        rs.settings
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_string()
    };
    let mode = setting("policyEnforcementMode", "ENFORCING");
    if mode == "DISABLED" {
        return true;
    }
    let res_id = res["_id"].as_str().unwrap_or_default();
    let res_type = res["type"].as_str();
    let applies = |p: &Policy| match p.kind.as_str() {
        "resource" => {
            p.resources.iter().any(|x| x == res_id)
                || (p.resources.is_empty()
                    && p.resource_type.is_some()
                    && p.resource_type.as_deref() == res_type)
        }
        "scope" => {
            scope.is_some_and(|sid| p.scopes.iter().any(|x| x == sid))
                && (p.resources.is_empty() || p.resources.iter().any(|x| x == res_id))
        }
        _ => false,
    };
    let decisions: Vec<bool> = rs
        .policies
        .iter()
        .filter(|p| applies(p))
        .map(|p| policy_grants(rs, held, p, 0))
        .collect();
    if decisions.is_empty() {
        return mode == "PERMISSIVE";
    }
    match setting("decisionStrategy", "UNANIMOUS").as_str() {
        "AFFIRMATIVE" => decisions.iter().any(|d| *d),
        "CONSENSUS" => {
            let yes = decisions.iter().filter(|d| **d).count();
            yes > decisions.len() - yes
        }
        _ => decisions.iter().all(|d| *d),
    }
}

/// Whether a policy (or permission) grants, with its logic applied: a role policy when the
/// subject holds one of its roles and every role marked required; Keycloak's default JS policy
/// always; permissions and aggregates by their decision strategy over the policies they name.
fn policy_grants(rs: &ResourceServer, held: &[&str], p: &Policy, depth: usize) -> bool {
    let raw = match p.kind.as_str() {
        "role" => {
            let has = |id: &String| held.contains(&id.as_str());
            p.roles.iter().any(|(id, _)| has(id))
                && p.roles.iter().all(|(id, required)| !required || has(id))
        }
        "js" => p.name == "Default Policy",
        "scope" | "resource" | "aggregate" if depth < 8 => {
            let inner: Vec<bool> = p
                .policies
                .iter()
                .filter_map(|id| rs.policies.iter().find(|x| &x.id == id))
                .map(|x| policy_grants(rs, held, x, depth + 1))
                .collect();
            let yes = inner.iter().filter(|d| **d).count();
            !inner.is_empty()
                && match p.decision_strategy.as_str() {
                    "AFFIRMATIVE" => yes > 0,
                    "CONSENSUS" => yes > inner.len() - yes,
                    _ => yes == inner.len(),
                }
        }
        _ => false,
    };
    // A permission's logic is always positive; a policy's NEGATIVE logic inverts it.
    if p.logic == "NEGATIVE" && !matches!(p.kind.as_str(), "scope" | "resource") {
        !raw
    } else {
        raw
    }
}

/// The `resource_access` of a user: client id -> names of its mapped client roles.
fn client_role_claims(r: &Realm, ids: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (client, role) in &r.client_roles {
        if ids.contains(&role.id)
            && let Some(c) = r.clients.iter().find(|c| &c.id == client)
        {
            out.entry(c.client_id.clone())
                .or_default()
                .push(role.name.clone());
        }
    }
    out
}

fn token_endpoint(st: &mut State, realm: &str, req: &Request) -> Response {
    if form(&req.body).get("grant_type").map(String::as_str)
        == Some("urn:ietf:params:oauth:grant-type:uma-ticket")
    {
        return uma_decision(st, realm, req);
    }
    let Some(r) = st.realms.get_mut(realm) else {
        return Response::json(404, &json!({"error": "Realm does not exist"}));
    };
    r.token_requests += 1;
    let f = form(&req.body);
    let client_id = f.get("client_id").cloned().unwrap_or_default();
    let invalid_client = || {
        error_described(
            401,
            "unauthorized_client",
            "Invalid client or Invalid client credentials",
        )
    };
    let client = r.clients.iter().find(|c| c.client_id == client_id);
    // Users of `add_user` log in through any client id, as they always did here.
    let helper_login = f.get("grant_type").map(String::as_str) == Some("password")
        && r.users.iter().any(|u| {
            u.id == format!("sub-{}", u.username) && Some(&u.username) == f.get("username")
        });
    if client.is_none() && !helper_login {
        return invalid_client();
    }
    if client.is_some_and(|c| !c.public && c.secret.as_ref() != f.get("client_secret")) {
        return invalid_client();
    }
    let lifespan = r.token_lifespan as i64;
    let mint = match f.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {
            let Some(client) = client else {
                return invalid_client();
            };
            if client.public {
                return invalid_client();
            }
            if client.helper_sa {
                Mint {
                    sub: format!("sa-{client_id}"),
                    username: Some(format!("service-account-{client_id}")),
                    azp: Some(client_id.clone()),
                    exp_in: lifespan,
                    ..Mint::user("x")
                }
            } else {
                let Some(sa) = client
                    .service_account
                    .as_ref()
                    .and_then(|id| r.users.iter().find(|u| &u.id == id))
                else {
                    return error_described(
                        401,
                        "unauthorized_client",
                        "Client not enabled to retrieve service account",
                    );
                };
                Mint {
                    sub: sa.id.clone(),
                    username: Some(sa.username.clone()),
                    azp: Some(client_id.clone()),
                    roles: sa.roles.clone(),
                    client_roles: client_role_claims(r, &sa.client_roles),
                    exp_in: lifespan,
                    ..Mint::user("x")
                }
            }
        }
        Some("password") => {
            if client.is_some_and(|c| !c.flag("directAccessGrantsEnabled")) {
                return error_described(
                    400,
                    "unauthorized_client",
                    "Client not allowed for direct access grants",
                );
            }
            let name = f
                .get("username")
                .cloned()
                .unwrap_or_default()
                .to_lowercase();
            let user = r.users.iter().find(|u| {
                u.username == name
                    || u.email.as_deref().map(str::to_lowercase) == Some(name.clone())
            });
            match user {
                Some(u) if u.password.is_some() && u.password.as_ref() == f.get("password") => {
                    if !u.enabled {
                        return error_described(400, "invalid_grant", "Account disabled");
                    }
                    if !u.required_actions.is_empty() {
                        return error_described(
                            400,
                            "invalid_grant",
                            "Account is not fully set up",
                        );
                    }
                    Mint {
                        sub: u.id.clone(),
                        azp: Some(client_id.clone()),
                        roles: u.roles.clone(),
                        client_roles: client_role_claims(r, &u.client_roles),
                        exp_in: lifespan,
                        ..Mint::user(&u.username)
                    }
                }
                _ => {
                    return error_described(401, "invalid_grant", "Invalid user credentials");
                }
            }
        }
        _ => return invalid_client(),
    };
    // Keycloak's shape: every user holds the realm's default roles (the account console's client
    // roles among them); `aud` names the clients of `resource_access` but the requesting one.
    let mut mint = mint;
    for role in [
        format!("default-roles-{realm}"),
        "offline_access".into(),
        "uma_authorization".into(),
    ] {
        if !mint.roles.contains(&role) {
            mint.roles.push(role);
        }
    }
    mint.client_roles.insert(
        "account".into(),
        ACCOUNT_ROLES.iter().map(|r| r.to_string()).collect(),
    );
    let aud: Vec<String> = mint
        .client_roles
        .iter()
        .filter(|(c, roles)| **c != client_id && !roles.is_empty())
        .map(|(c, _)| c.clone())
        .collect();
    mint.aud = (!aud.is_empty()).then_some(aud);
    let openid = f
        .get("scope")
        .is_some_and(|sc| sc.split(' ').any(|x| x == "openid"));
    mint.scope = Some(if openid {
        "openid profile email".into()
    } else {
        "profile email".into()
    });
    let token = sign(st, realm, &mint);
    let mut answer = json!({"access_token": token, "expires_in": lifespan,
        "token_type": "Bearer", "refresh_expires_in": 0, "not-before-policy": 0,
        "scope": mint.scope});
    if openid {
        // The ID token: for the client itself, no roles.
        let id_token = sign(
            st,
            realm,
            &Mint {
                aud: Some(vec![client_id.clone()]),
                typ: Some("ID".into()),
                roles: Vec::new(),
                client_roles: BTreeMap::new(),
                scope: None,
                ..mint.clone()
            },
        );
        answer["id_token"] = json!(id_token);
    }
    st.realms.get_mut(realm).unwrap().issued.push(token);
    Response::json(200, &answer)
}

/// The `account` client roles of Keycloak's default roles, which every user holds.
const ACCOUNT_ROLES: &[&str] = &["manage-account", "manage-account-links", "view-profile"];

/// The caller of an admin call: a valid token of the master realm with the `admin` role.
/// The caller of an admin call on `parts` (after `/admin/realms`): a token of the master realm
/// with the `admin` role may do anything; a token of the realm the path names may do what its
/// `realm-management` client roles allow, as in Keycloak (users: `view-users` to read,
/// `manage-users` to change; anything else: `view-realm` / `manage-realm`; `realm-admin` all).
fn admin_auth(st: &mut State, req: &Request, parts: &[String]) -> Result<(), Response> {
    let unauthorized = || error(401, "HTTP 401 Unauthorized");
    let token = req
        .header("authorization")
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(unauthorized)?;
    let target = parts.first().map(String::as_str).unwrap_or("master");
    if target == "master" || !st.realms.contains_key(target) || st.revoked.contains(token) {
        return master_admin_auth(st, req);
    }
    // A token of the master realm is checked as before; one of the target realm by its roles.
    st.ensure_key(target);
    let issuer = format!("{}/realms/{target}", st.base);
    let options = VerificationOptions {
        allowed_issuers: Some(HashSet::from([issuer])),
        time_tolerance: Some(Duration::from_secs(0)),
        ..VerificationOptions::default()
    };
    let Some(claims) = st.realms[target].keys.iter().find_map(|(_, k)| {
        k.public_key()
            .verify_token::<KcClaims>(token, Some(options.clone()))
            .ok()
    }) else {
        return master_admin_auth(st, req);
    };
    let roles: Vec<String> = claims
        .custom
        .resource_access
        .as_ref()
        .and_then(|a| a.get("realm-management"))
        .and_then(|c| c.get("roles"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let has = |r: &str| roles.iter().any(|x| x == r || x == "realm-admin");
    let read = req.method == "GET";
    let allowed = match parts.get(1).map(String::as_str) {
        Some("users") if read => has("view-users") || has("manage-users"),
        Some("users") => has("manage-users"),
        _ if read => has("view-realm") || has("manage-realm"),
        _ => has("manage-realm"),
    };
    if allowed {
        Ok(())
    } else {
        Err(error(403, "HTTP 403 Forbidden"))
    }
}

fn master_admin_auth(st: &mut State, req: &Request) -> Result<(), Response> {
    let unauthorized = || error(401, "HTTP 401 Unauthorized");
    let token = req
        .header("authorization")
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(unauthorized)?;
    if st.revoked.contains(token) || !st.realms.contains_key("master") {
        return Err(unauthorized());
    }
    st.ensure_key("master");
    let issuer = format!("{}/realms/master", st.base);
    let options = VerificationOptions {
        allowed_issuers: Some(HashSet::from([issuer])),
        time_tolerance: Some(Duration::from_secs(0)),
        ..VerificationOptions::default()
    };
    let claims = st.realms["master"]
        .keys
        .iter()
        .find_map(|(_, k)| {
            k.public_key()
                .verify_token::<KcClaims>(token, Some(options.clone()))
                .ok()
        })
        .ok_or_else(unauthorized)?;
    let admin = claims
        .custom
        .realm_access
        .as_ref()
        .and_then(|a| a.get("roles"))
        .and_then(Value::as_array)
        .is_some_and(|roles| roles.iter().any(|r| r == "admin"));
    if admin {
        Ok(())
    } else {
        Err(error(403, "HTTP 403 Forbidden"))
    }
}

// ------------------------------------------------------------------ admin API

fn admin(st: &mut State, req: &Request, parts: &[String]) -> Response {
    let m = req.method.as_str();
    let p: Vec<&str> = parts.iter().map(String::as_str).collect();
    match p.as_slice() {
        [] => match m {
            "GET" => {
                let mut names: Vec<&String> = st.realms.keys().collect();
                names.sort();
                let list: Vec<Value> = names
                    .into_iter()
                    .map(|n| realm_rep(&st.realms[n]))
                    .collect();
                Response::json(200, &list)
            }
            "POST" => create_realm(st, req),
            _ => not_allowed(),
        },
        [realm, rest @ ..] => {
            let realm = realm.to_string();
            if !st.realms.contains_key(&realm) {
                return realm_not_found();
            }
            match rest {
                [] => realm_item(st, req, &realm),
                ["clients", rest @ ..] => clients(st, req, &realm, rest),
                ["roles", rest @ ..] => roles(st, req, &realm, rest),
                ["roles-by-id", id] if m == "GET" => {
                    let r = &st.realms[&realm];
                    match r.roles.iter().find(|x| x.id == *id) {
                        Some(role) => Response::json(200, &role.representation(&r.id)),
                        None => error(404, "Could not find role with id"),
                    }
                }
                ["identity-provider", "instances", rest @ ..] => idps(st, req, &realm, rest),
                ["components", rest @ ..] => components(st, req, &realm, rest),
                ["users", "profile"] => match m {
                    "GET" => Response::json(200, &st.realms[&realm].profile),
                    "PUT" => match body_object(req) {
                        Ok(rep) => {
                            let profile = Value::Object(rep);
                            if let Some(r) = st.realms.get_mut(&realm) {
                                r.profile = profile.clone();
                            }
                            Response::json(200, &profile)
                        }
                        Err(r) => r,
                    },
                    _ => not_allowed(),
                },
                ["users", rest @ ..] => users(st, req, &realm, rest),
                _ => not_found(),
            }
        }
    }
}

fn realm_rep(r: &Realm) -> Value {
    let mut m = r.rep.clone();
    m.insert("id".into(), json!(r.id));
    m.insert("realm".into(), json!(r.name));
    m.entry("enabled").or_insert(json!(false));
    m.insert("accessTokenLifespan".into(), json!(r.token_lifespan));
    Value::Object(m)
}

fn create_realm(st: &mut State, req: &Request) -> Response {
    let mut rep = match body_object(req) {
        Ok(m) => m,
        Err(r) => return r,
    };
    if let Err(r) = check_realm(&rep) {
        return r;
    }
    let name = match str_field(&rep, "realm") {
        Some(n) if !n.trim().is_empty() => n.to_string(),
        _ => return error_message(400, "Realm name cannot be empty"),
    };
    if st.realms.contains_key(&name) {
        return error_message(409, "Conflict detected. See logs for details");
    }
    let mut realm = st.new_realm(&name);
    if let Some(id) = str_field(&rep, "id") {
        realm.id = id.to_string();
    }
    if let Some(l) = rep.get("accessTokenLifespan").and_then(Value::as_u64) {
        realm.token_lifespan = l;
    }
    for k in ["id", "realm", "accessTokenLifespan"] {
        rep.remove(k);
    }
    realm.rep = rep;
    st.realms.insert(name.clone(), realm);
    created(&format!("{}/admin/realms/{name}", st.base))
}

fn realm_item(st: &mut State, req: &Request, realm: &str) -> Response {
    match req.method.as_str() {
        "GET" => Response::json(200, &realm_rep(&st.realms[realm])),
        "PUT" => {
            let mut rep = match body_object(req) {
                Ok(m) => m,
                Err(r) => return r,
            };
            if let Err(r) = check_realm(&rep) {
                return r;
            }
            let new_name = str_field(&rep, "realm").map(String::from);
            if let Some(n) = &new_name
                && n != realm
                && st.realms.contains_key(n)
            {
                return error_message(409, "Realm with same name exists");
            }
            let mut r = st.realms.remove(realm).unwrap();
            if let Some(l) = rep.get("accessTokenLifespan").and_then(Value::as_u64) {
                r.token_lifespan = l;
            }
            for k in ["id", "realm", "accessTokenLifespan"] {
                rep.remove(k);
            }
            for (k, v) in rep {
                r.rep.insert(k, v);
            }
            let name = match new_name {
                Some(n) if !n.is_empty() => n,
                _ => realm.to_string(),
            };
            r.name = name.clone();
            st.realms.insert(name, r);
            no_content()
        }
        "DELETE" => {
            st.realms.remove(realm);
            no_content()
        }
        _ => not_allowed(),
    }
}

fn clients(st: &mut State, req: &Request, realm: &str, rest: &[&str]) -> Response {
    let m = req.method.as_str();
    match rest {
        [] => match m {
            "GET" => {
                let q = query(req);
                let r = &st.realms[realm];
                let search = q.get("search").is_some_and(|s| s == "true");
                let list: Vec<Value> = r
                    .clients
                    .iter()
                    .filter(|c| match q.get("clientId") {
                        None => true,
                        Some(want) if search => contains_ci(&c.client_id, want),
                        Some(want) => &c.client_id == want,
                    })
                    .map(Client::representation)
                    .collect();
                Response::json(200, &page(list, &q, 100))
            }
            "POST" => create_client(st, req, realm),
            _ => not_allowed(),
        },
        [id, rest @ ..] => {
            let Some(ci) = st.realms[realm].clients.iter().position(|c| c.id == *id) else {
                return error(404, "Could not find client");
            };
            match rest {
                [] => match m {
                    "GET" => Response::json(200, &st.realms[realm].clients[ci].representation()),
                    "PUT" => update_client(st, req, realm, ci),
                    "DELETE" => {
                        let r = st.realms.get_mut(realm).unwrap();
                        let c = r.clients.remove(ci);
                        if let Some(sa) = c.service_account {
                            r.users.retain(|u| u.id != sa);
                        }
                        no_content()
                    }
                    _ => not_allowed(),
                },
                ["client-secret"] => {
                    let seq = st.uuid();
                    let c = &mut st.realms.get_mut(realm).unwrap().clients[ci];
                    if c.public {
                        return error_message(400, "Client is public");
                    }
                    if m == "POST" {
                        c.secret = Some(format!("secret-{seq}"));
                    } else if m != "GET" {
                        return not_allowed();
                    }
                    Response::json(
                        200,
                        &json!({"type": "secret", "value": c.secret.clone().unwrap_or_default()}),
                    )
                }
                ["service-account-user"] if m == "GET" => {
                    let r = &st.realms[realm];
                    match r.clients[ci]
                        .service_account
                        .as_ref()
                        .and_then(|id| r.users.iter().find(|u| &u.id == id))
                    {
                        Some(u) => Response::json(200, &u.representation()),
                        None => error_message(400, "Service account not enabled for the client"),
                    }
                }
                ["authz", "resource-server", rest @ ..] => authz(st, req, realm, ci, rest),
                ["roles"] if m == "GET" => {
                    let r = &st.realms[realm];
                    let list: Vec<Value> = r
                        .client_roles
                        .iter()
                        .filter(|(c, _)| c == id)
                        .map(|(c, role)| client_role_rep(role, c))
                        .collect();
                    Response::json(200, &list)
                }
                ["roles", name] if m == "GET" => {
                    let r = &st.realms[realm];
                    match r
                        .client_roles
                        .iter()
                        .find(|(c, x)| c == id && x.name == *name)
                    {
                        Some((c, role)) => Response::json(200, &client_role_rep(role, c)),
                        None => error(404, "Could not find role"),
                    }
                }
                _ => not_found(),
            }
        }
    }
}

fn client_role_rep(role: &Role, client: &str) -> Value {
    let mut v = role.representation(client);
    v["clientRole"] = json!(true);
    v
}

fn create_client(st: &mut State, req: &Request, realm: &str) -> Response {
    let mut rep = match body_object(req) {
        Ok(m) => m,
        Err(r) => return r,
    };
    if let Err(r) = check_client(&rep) {
        return r;
    }
    let client_id = match str_field(&rep, "clientId") {
        Some(c) if !c.is_empty() => c.to_string(),
        _ => return error_message(400, "Client id is missing"),
    };
    if st.realms[realm]
        .clients
        .iter()
        .any(|c| c.client_id == client_id)
    {
        return error_message(409, &format!("Client {client_id} already exists"));
    }
    let public = rep
        .get("publicClient")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let authz = rep
        .get("authorizationServicesEnabled")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if public && authz {
        return error_message(
            400,
            "Authorization services cannot be enabled for a public client",
        );
    }
    let id = match str_field(&rep, "id") {
        Some(i) => i.to_string(),
        None => st.uuid(),
    };
    let secret = if public {
        None
    } else {
        Some(
            str_field(&rep, "secret")
                .map(String::from)
                .unwrap_or_else(|| format!("secret-{}", st.uuid())),
        )
    };
    let sa_enabled = authz
        || rep
            .get("serviceAccountsEnabled")
            .and_then(Value::as_bool)
            .unwrap_or(false);
    for k in [
        "id",
        "clientId",
        "secret",
        "publicClient",
        "authorizationServicesEnabled",
        "authorizationSettings",
    ] {
        rep.remove(k);
    }
    rep.entry("enabled").or_insert(json!(true));
    rep.entry("protocol").or_insert(json!("openid-connect"));
    rep.insert("serviceAccountsEnabled".into(), json!(sa_enabled));
    let service_account = if sa_enabled && !public {
        let uid = st.uuid();
        let user = User {
            id: uid.clone(),
            username: format!("service-account-{}", client_id.to_lowercase()),
            email: None,
            rep: Map::new(),
            enabled: true,
            password: None,
            roles: Vec::new(),
            required_actions: Vec::new(),
            emails: Vec::new(),
            service_account_client: Some(id.clone()),
            client_roles: Vec::new(),
            created: now(),
        };
        st.realms.get_mut(realm).unwrap().users.push(user);
        Some(uid)
    } else {
        None
    };
    let resource_server = authz.then(|| default_resource_server(st, &id, &client_id));
    st.realms.get_mut(realm).unwrap().clients.push(Client {
        id: id.clone(),
        client_id,
        rep,
        secret,
        public,
        service_account,
        helper_sa: false,
        authz: resource_server,
    });
    created(&format!("{}/admin/realms/{realm}/clients/{id}", st.base))
}

/// Keycloak's defaults for a new resource server: a resource of the client's default type, a
/// JavaScript policy granting every user of the realm, and a permission tying them together.
fn default_resource_server(st: &mut State, client_uuid: &str, client_id: &str) -> ResourceServer {
    let default_type = format!("urn:{client_id}:resources:default");
    let rid = st.uuid();
    let pid = st.uuid();
    let perm = st.uuid();
    let id = st.uuid();
    ResourceServer {
        id: id.clone(),
        next: 0,
        settings: json!({"id": id, "clientId": client_uuid, "name": client_id,
            "allowRemoteResourceManagement": true, "policyEnforcementMode": "ENFORCING",
            "decisionStrategy": "UNANIMOUS"})
        .as_object()
        .unwrap()
        .clone(),
        scopes: Vec::new(),
        resources: vec![
            json!({"_id": rid, "name": "Default Resource", "type": default_type,
            "uris": ["/*"], "owner": {"id": client_uuid, "name": client_id},
            "ownerManagedAccess": false, "scopes": [], "attributes": {}}),
        ],
        policies: vec![
            Policy {
                id: pid.clone(),
                name: "Default Policy".into(),
                kind: "js".into(),
                description: Some(
                    "A policy that grants access only for users within this realm".into(),
                ),
                logic: "POSITIVE".into(),
                decision_strategy: "AFFIRMATIVE".into(),
                roles: Vec::new(),
                scopes: Vec::new(),
                resources: Vec::new(),
                policies: Vec::new(),
                resource_type: None,
            },
            Policy {
                id: perm,
                name: "Default Permission".into(),
                kind: "resource".into(),
                description: Some("A permission that applies to the default resource type".into()),
                logic: "POSITIVE".into(),
                decision_strategy: "UNANIMOUS".into(),
                roles: Vec::new(),
                scopes: Vec::new(),
                resources: Vec::new(),
                policies: vec![pid],
                resource_type: Some(default_type),
            },
        ],
    }
}

fn update_client(st: &mut State, req: &Request, realm: &str, ci: usize) -> Response {
    let mut rep = match body_object(req) {
        Ok(m) => m,
        Err(r) => return r,
    };
    if let Err(r) = check_client(&rep) {
        return r;
    }
    if let Some(cid) = str_field(&rep, "clientId") {
        let r = &st.realms[realm];
        if r.clients
            .iter()
            .enumerate()
            .any(|(i, c)| i != ci && c.client_id == cid)
        {
            return error_message(409, &format!("Client {cid} already exists"));
        }
    }
    let wants_authz = rep
        .get("authorizationServicesEnabled")
        .and_then(Value::as_bool);
    let (uuid, cid_now) = {
        let c = &st.realms[realm].clients[ci];
        (c.id.clone(), c.client_id.clone())
    };
    let rs = match wants_authz {
        Some(true) if st.realms[realm].clients[ci].authz.is_none() => {
            Some(default_resource_server(st, &uuid, &cid_now))
        }
        _ => None,
    };
    let c = &mut st.realms.get_mut(realm).unwrap().clients[ci];
    if let Some(cid) = str_field(&rep, "clientId") {
        c.client_id = cid.to_string();
    }
    if let Some(p) = rep.get("publicClient").and_then(Value::as_bool) {
        c.public = p;
        if p {
            c.secret = None;
        }
    }
    if let Some(s) = str_field(&rep, "secret")
        && !c.public
    {
        c.secret = Some(s.to_string());
    }
    match wants_authz {
        Some(false) => c.authz = None,
        Some(true) if c.authz.is_none() => c.authz = rs,
        _ => {}
    }
    for k in [
        "id",
        "clientId",
        "secret",
        "publicClient",
        "authorizationServicesEnabled",
        "authorizationSettings",
    ] {
        rep.remove(k);
    }
    for (k, v) in rep {
        c.rep.insert(k, v);
    }
    no_content()
}

// ------------------------------------------------------------------ authorization services

fn scope_rep(s: &Value) -> Value {
    json!({"id": s["id"], "name": s["name"]})
}

/// A scope id from an id or a name.
fn resolve_scope(rs: &ResourceServer, key: &str) -> Option<String> {
    rs.scopes
        .iter()
        .find(|s| s["id"] == key)
        .or_else(|| rs.scopes.iter().find(|s| s["name"] == key))
        .map(|s| s["id"].as_str().unwrap().to_string())
}

fn resolve_policy(rs: &ResourceServer, key: &str) -> Option<String> {
    rs.policies
        .iter()
        .find(|p| p.id == key)
        .or_else(|| rs.policies.iter().find(|p| p.name == key))
        .map(|p| p.id.clone())
}

fn resolve_resource(rs: &ResourceServer, key: &str) -> Option<String> {
    rs.resources
        .iter()
        .find(|r| r["_id"] == key)
        .or_else(|| rs.resources.iter().find(|r| r["name"] == key))
        .map(|r| r["_id"].as_str().unwrap().to_string())
}

fn resource_rep(rs: &ResourceServer, r: &Value) -> Value {
    let mut v = r.clone();
    let scopes: Vec<Value> = r["scopes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|id| rs.scopes.iter().find(|s| s["id"] == *id).map(scope_rep))
        .collect();
    v["scopes"] = json!(scopes);
    v
}

/// A `[{id}|{name}]` or `["id-or-name"]` list of references.
fn refs(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|x| match x {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o
                .get("id")
                .or_else(|| o.get("name"))
                .and_then(Value::as_str)
                .map(String::from),
            _ => None,
        })
        .collect()
}

fn invalid(description: &str) -> Response {
    error_described(400, "invalid_request", description)
}

fn authz(st: &mut State, req: &Request, realm: &str, ci: usize, rest: &[&str]) -> Response {
    let m = req.method.as_str();
    let q = query(req);
    let r = st.realms.get_mut(realm).unwrap();
    let client = &mut r.clients[ci];
    let client_uuid = client.id.clone();
    let client_name = client.client_id.clone();
    let role_ids: Vec<(String, String)> = r
        .roles
        .iter()
        .map(|x| (x.id.clone(), x.name.clone()))
        .collect();
    let Some(rs) = r.clients[ci].authz.as_mut() else {
        return error_described(
            404,
            "invalid_request",
            "Authorization services are not enabled for this client",
        );
    };
    match (m, rest) {
        ("GET", []) => Response::json(200, &Value::Object(rs.settings.clone())),
        ("PUT", []) => match body_object(req) {
            Ok(b) => {
                for (k, v) in b {
                    if !matches!(k.as_str(), "resources" | "policies" | "scopes" | "id") {
                        rs.settings.insert(k, v);
                    }
                }
                no_content()
            }
            Err(e) => e,
        },

        // scopes
        ("GET", ["scope"]) => {
            let list: Vec<Value> = rs
                .scopes
                .iter()
                .filter(|s| {
                    q.get("name")
                        .is_none_or(|n| contains_ci(s["name"].as_str().unwrap(), n))
                })
                .filter(|s| q.get("scopeId").is_none_or(|i| s["id"] == **i))
                .cloned()
                .collect();
            Response::json(200, &page(list, &q, 100))
        }
        ("GET", ["scope", "search"]) => match q.get("name") {
            None => Response::new(400),
            Some(n) => match rs.scopes.iter().find(|s| s["name"] == **n) {
                Some(s) => Response::json(200, s),
                None => Response::new(204),
            },
        },
        ("POST", ["scope"]) => {
            let b = match body_object(req) {
                Ok(b) => b,
                Err(e) => return e,
            };
            let Some(name) = str_field(&b, "name").filter(|n| !n.is_empty()) else {
                return invalid("Scope name is required");
            };
            if rs.scopes.iter().any(|s| s["name"] == name) {
                return invalid_conflict(&format!("Scope with name [{name}] already exists"));
            }
            let mut s = Value::Object(b.clone());
            s["id"] = json!(rs.fresh_id());
            rs.scopes.push(s.clone());
            Response::json(201, &s)
        }
        (_, ["scope", id]) => {
            let Some(i) = rs.scopes.iter().position(|s| s["id"] == *id) else {
                return Response::new(404);
            };
            match m {
                "GET" => Response::json(200, &rs.scopes[i]),
                "PUT" => match body_object(req) {
                    Ok(b) => {
                        let mut s = Value::Object(b);
                        s["id"] = json!(id);
                        rs.scopes[i] = s;
                        no_content()
                    }
                    Err(e) => e,
                },
                "DELETE" => {
                    if rs
                        .resources
                        .iter()
                        .any(|r| r["scopes"].as_array().unwrap().iter().any(|x| x == id))
                    {
                        return error_message(
                            400,
                            "Scopes can not be removed while associated with resources.",
                        );
                    }
                    rs.scopes.remove(i);
                    let sid = id.to_string();
                    rs.policies.retain_mut(|p| {
                        if p.scopes.contains(&sid) {
                            if p.scopes.len() == 1 {
                                return false;
                            }
                            p.scopes.retain(|x| *x != sid);
                        }
                        true
                    });
                    no_content()
                }
                _ => not_allowed(),
            }
        }

        // resources
        ("GET", ["resource"]) => {
            let exact = q.get("exactName").is_some_and(|e| e == "true");
            let list: Vec<Value> = rs
                .resources
                .iter()
                .filter(|r| {
                    q.get("name").is_none_or(|n| {
                        let name = r["name"].as_str().unwrap();
                        if exact {
                            name == n
                        } else {
                            contains_ci(name, n)
                        }
                    })
                })
                .filter(|r| q.get("type").is_none_or(|t| r["type"] == **t))
                .map(|r| resource_rep(rs, r))
                .collect();
            Response::json(200, &page(list, &q, 100))
        }
        ("GET", ["resource", "search"]) => match q.get("name") {
            None => Response::new(400),
            Some(n) => match rs.resources.iter().find(|r| r["name"] == **n) {
                Some(r) => Response::json(200, &resource_rep(rs, r)),
                None => Response::new(204),
            },
        },
        ("POST", ["resource"]) => {
            let b = match body_object(req) {
                Ok(b) => b,
                Err(e) => return e,
            };
            let Some(name) = str_field(&b, "name").filter(|n| !n.is_empty()) else {
                return invalid("Resource name is required");
            };
            if rs.resources.iter().any(|r| r["name"] == name) {
                return invalid_conflict(&format!("Resource with name [{name}] already exists."));
            }
            let scope_ids = resource_scopes(rs, b.get("scopes"));
            let mut r = Value::Object(b.clone());
            let m = r.as_object_mut().unwrap();
            m.remove("id");
            m.insert("_id".into(), json!(rs.fresh_id()));
            m.insert("scopes".into(), json!(scope_ids));
            m.entry("owner")
                .or_insert(json!({"id": client_uuid, "name": client_name}));
            m.entry("ownerManagedAccess").or_insert(json!(false));
            m.entry("uris").or_insert(json!([]));
            rs.resources.push(r.clone());
            Response::json(201, &resource_rep(rs, &r))
        }
        (_, ["resource", id]) => {
            let Some(i) = rs.resources.iter().position(|r| r["_id"] == *id) else {
                return error_described(404, "not_found", "Could not find resource");
            };
            match m {
                "GET" => Response::json(200, &resource_rep(rs, &rs.resources[i])),
                "PUT" => {
                    let b = match body_object(req) {
                        Ok(b) => b,
                        Err(e) => return e,
                    };
                    let scope_ids = resource_scopes(rs, b.get("scopes"));
                    let cur = rs.resources[i].as_object_mut().unwrap();
                    for (k, v) in b {
                        if k != "_id" && k != "id" && k != "scopes" {
                            cur.insert(k, v);
                        }
                    }
                    cur.insert("scopes".into(), json!(scope_ids));
                    no_content()
                }
                "DELETE" => {
                    rs.resources.remove(i);
                    let rid = id.to_string();
                    for p in &mut rs.policies {
                        p.resources.retain(|x| *x != rid);
                    }
                    no_content()
                }
                _ => not_allowed(),
            }
        }

        // policies and permissions (one namespace)
        ("GET", [kind @ ("policy" | "permission")]) => {
            let only_permissions = match (*kind, q.get("permission").map(String::as_str)) {
                ("permission", _) | (_, Some("true")) => Some(true),
                (_, Some("false")) => Some(false),
                _ => None,
            };
            let list: Vec<Value> = rs
                .policies
                .iter()
                .filter(|p| only_permissions.is_none_or(|want| p.is_permission() == want))
                .filter(|p| q.get("name").is_none_or(|n| contains_ci(&p.name, n)))
                .filter(|p| q.get("type").is_none_or(|t| p.kind == *t))
                .filter(|p| q.get("policyId").is_none_or(|i| p.id == *i))
                .map(Policy::brief)
                .collect();
            Response::json(200, &page(list, &q, 100))
        }
        ("GET", ["policy" | "permission", "search"]) => match q.get("name") {
            None => Response::new(400),
            Some(n) => match rs.policies.iter().find(|p| p.name == *n) {
                Some(p) => Response::json(200, &p.brief()),
                None => Response::new(204),
            },
        },
        ("POST", ["policy", kind]) | ("POST", ["permission", kind]) => {
            let is_permission = rest[0] == "permission";
            let known = if is_permission {
                ["scope", "resource"].contains(kind)
            } else {
                ["role", "js", "user", "group", "client", "time", "aggregate"].contains(kind)
            };
            if !known {
                return not_found();
            }
            let b = match body_object(req) {
                Ok(b) => b,
                Err(e) => return e,
            };
            let Some(name) = str_field(&b, "name").filter(|n| !n.is_empty()) else {
                return invalid("Policy name is required");
            };
            if rs.policies.iter().any(|p| p.name == name) {
                return error_described(
                    409,
                    &format!("Policy with name [{name}] already exists"),
                    "Conflicting policy",
                );
            }
            let id = rs.fresh_id();
            match policy_from(rs, &role_ids, kind, &b, id) {
                Ok(p) => {
                    let v = p.typed();
                    rs.policies.push(p);
                    Response::json(201, &v)
                }
                Err(e) => e,
            }
        }
        (_, ["policy" | "permission", kind, id])
            if ["role", "scope", "resource", "js"].contains(kind) =>
        {
            let Some(i) = rs
                .policies
                .iter()
                .position(|p| p.id == *id && p.kind == *kind)
            else {
                return Response::new(404);
            };
            match m {
                "GET" => Response::json(200, &rs.policies[i].typed()),
                "PUT" => {
                    let b = match body_object(req) {
                        Ok(b) => b,
                        Err(e) => return e,
                    };
                    if let Some(n) = str_field(&b, "name")
                        && rs.policies.iter().any(|p| p.name == n && p.id != *id)
                    {
                        return error_described(
                            409,
                            &format!("Policy with name [{n}] already exists"),
                            "Conflicting policy",
                        );
                    }
                    match policy_from(rs, &role_ids, kind, &b, id.to_string()) {
                        Ok(p) => {
                            rs.policies[i] = p;
                            Response::new(201)
                        }
                        Err(e) => e,
                    }
                }
                _ => not_allowed(),
            }
        }
        (_, ["policy" | "permission", id]) => {
            let Some(i) = rs.policies.iter().position(|p| p.id == *id) else {
                return Response::new(404);
            };
            match m {
                "GET" => Response::json(200, &rs.policies[i].brief()),
                "DELETE" => {
                    let pid = rs.policies.remove(i).id;
                    for p in &mut rs.policies {
                        p.policies.retain(|x| *x != pid);
                    }
                    no_content()
                }
                _ => not_allowed(),
            }
        }
        _ => not_found(),
    }
}

fn invalid_conflict(description: &str) -> Response {
    error_described(409, "invalid_request", description)
}

/// Scope ids of a resource: by id or name; unknown names are made (as Keycloak does).
fn resource_scopes(rs: &mut ResourceServer, scopes: Option<&Value>) -> Vec<String> {
    let mut ids = Vec::new();
    for key in refs(scopes) {
        let id = match resolve_scope(rs, &key) {
            Some(id) => id,
            None => {
                let id = rs.fresh_id();
                rs.scopes.push(json!({"id": id, "name": key}));
                id
            }
        };
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

fn policy_from(
    rs: &ResourceServer,
    roles: &[(String, String)],
    kind: &str,
    b: &Map<String, Value>,
    id: String,
) -> Result<Policy, Response> {
    let name = str_field(b, "name").unwrap_or_default().to_string();
    let logic = str_field(b, "logic").unwrap_or("POSITIVE").to_string();
    if !["POSITIVE", "NEGATIVE"].contains(&logic.as_str()) {
        return Err(invalid(&format!("Invalid logic [{logic}]")));
    }
    let decision = str_field(b, "decisionStrategy")
        .unwrap_or("UNANIMOUS")
        .to_string();
    if !["UNANIMOUS", "AFFIRMATIVE", "CONSENSUS"].contains(&decision.as_str()) {
        return Err(invalid(&format!("Invalid decision strategy [{decision}]")));
    }
    let mut p = Policy {
        id,
        name: name.clone(),
        kind: kind.to_string(),
        description: str_field(b, "description").map(String::from),
        logic,
        decision_strategy: decision,
        roles: Vec::new(),
        scopes: Vec::new(),
        resources: Vec::new(),
        policies: Vec::new(),
        resource_type: str_field(b, "resourceType").map(String::from),
    };
    if kind == "role" {
        for def in b
            .get("roles")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = def.get("id").and_then(Value::as_str).unwrap_or_default();
            // Keycloak looks a role definition up by name first, then by id.
            let Some((rid, _)) = roles
                .iter()
                .find(|(_, n)| n == key)
                .or_else(|| roles.iter().find(|(i, _)| i == key))
            else {
                return Err(invalid(&format!(
                    "Error while updating policy [{name}]. Role [{key}] could not be found."
                )));
            };
            let required = def
                .get("required")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            p.roles.push((rid.clone(), required));
        }
        if p.roles.is_empty() {
            return Err(invalid("You must provide at least one role"));
        }
    }
    for key in refs(b.get("scopes")) {
        match resolve_scope(rs, &key) {
            Some(id) => p.scopes.push(id),
            None => {
                return Err(invalid(&format!(
                    "Scope with id or name [{key}] does not exist"
                )));
            }
        }
    }
    for key in refs(b.get("resources")) {
        match resolve_resource(rs, &key) {
            Some(id) => p.resources.push(id),
            None => {
                return Err(invalid(&format!(
                    "Resource with id or name [{key}] does not exist"
                )));
            }
        }
    }
    for key in refs(b.get("policies")) {
        match resolve_policy(rs, &key) {
            Some(id) => p.policies.push(id),
            None => {
                return Err(invalid(&format!(
                    "Policy with id or name [{key}] does not exist"
                )));
            }
        }
    }
    if kind == "scope" && p.scopes.is_empty() && p.resources.is_empty() {
        return Err(invalid("A scope permission needs scopes or resources"));
    }
    Ok(p)
}

// ------------------------------------------------------------------ roles

fn roles(st: &mut State, req: &Request, realm: &str, rest: &[&str]) -> Response {
    let m = req.method.as_str();
    match rest {
        [] => match m {
            "GET" => {
                let q = query(req);
                let r = &st.realms[realm];
                let list: Vec<Value> = r
                    .roles
                    .iter()
                    .filter(|x| q.get("search").is_none_or(|s| contains_ci(&x.name, s)))
                    .map(|x| x.representation(&r.id))
                    .collect();
                Response::json(200, &page(list, &q, -1))
            }
            "POST" => {
                let b = match body_object(req) {
                    Ok(b) => b,
                    Err(e) => return e,
                };
                let Some(name) = str_field(&b, "name").filter(|n| !n.is_empty()) else {
                    return error_message(400, "Role name is missing");
                };
                let name = name.to_string();
                if st.realms[realm].roles.iter().any(|x| x.name == name) {
                    return error_message(409, &format!("Role with name {name} already exists"));
                }
                let id = st.uuid();
                st.realms.get_mut(realm).unwrap().roles.push(Role {
                    id,
                    name: name.clone(),
                    description: str_field(&b, "description").map(String::from),
                    attributes: b.get("attributes").cloned().unwrap_or(json!({})),
                });
                created(&format!(
                    "{}/admin/realms/{realm}/roles/{}",
                    st.base,
                    kaa::clients::keycloak::encode(&name)
                ))
            }
            _ => not_allowed(),
        },
        [name] => {
            let r = st.realms.get_mut(realm).unwrap();
            let Some(i) = r.roles.iter().position(|x| x.name == *name) else {
                return error(404, "Could not find role");
            };
            match m {
                "GET" => Response::json(200, &r.roles[i].representation(&r.id)),
                "PUT" => {
                    let b = match body_object(req) {
                        Ok(b) => b,
                        Err(e) => return e,
                    };
                    if let Some(n) = str_field(&b, "name")
                        && n != *name
                        && r.roles.iter().any(|x| x.name == n)
                    {
                        return error_message(409, &format!("Role with name {n} already exists"));
                    }
                    let old = r.roles[i].name.clone();
                    let role = &mut r.roles[i];
                    if let Some(n) = str_field(&b, "name") {
                        role.name = n.to_string();
                    }
                    if b.contains_key("description") {
                        role.description = str_field(&b, "description").map(String::from);
                    }
                    if let Some(a) = b.get("attributes") {
                        role.attributes = a.clone();
                    }
                    let new = role.name.clone();
                    for u in &mut r.users {
                        for x in &mut u.roles {
                            if *x == old {
                                x.clone_from(&new);
                            }
                        }
                    }
                    no_content()
                }
                "DELETE" => {
                    let role = r.roles.remove(i);
                    for u in &mut r.users {
                        u.roles.retain(|x| *x != role.name);
                    }
                    // Role policies lose the role; one left without roles goes, and the
                    // permissions that named it forget it.
                    for rs in r.clients.iter_mut().filter_map(|c| c.authz.as_mut()) {
                        let mut gone = Vec::new();
                        rs.policies.retain_mut(|p| {
                            if p.kind != "role" {
                                return true;
                            }
                            p.roles.retain(|(id, _)| *id != role.id);
                            if p.roles.is_empty() {
                                gone.push(p.id.clone());
                                return false;
                            }
                            true
                        });
                        for p in &mut rs.policies {
                            p.policies.retain(|x| !gone.contains(x));
                        }
                    }
                    no_content()
                }
                _ => not_allowed(),
            }
        }
        _ => not_found(),
    }
}

// ------------------------------------------------------------------ identity providers

const IDP_PROVIDERS: &[&str] = &[
    "oidc",
    "keycloak-oidc",
    "saml",
    "google",
    "github",
    "gitlab",
    "facebook",
    "microsoft",
    "linkedin-openid-connect",
    "twitter",
    "bitbucket",
    "openshift-v4",
    "paypal",
    "stackoverflow",
    "instagram",
];

fn idps(st: &mut State, req: &Request, realm: &str, rest: &[&str]) -> Response {
    let m = req.method.as_str();
    let uuid = st.uuid();
    let base = st.base.clone();
    let r = st.realms.get_mut(realm).unwrap();
    match rest {
        [] => match m {
            "GET" => Response::json(200, &r.idps),
            "POST" => {
                let mut b = match body_object(req) {
                    Ok(b) => b,
                    Err(e) => return e,
                };
                let Some(alias) = str_field(&b, "alias").filter(|a| !a.is_empty()) else {
                    return error_message(400, "Identity Provider alias is missing");
                };
                let alias = alias.to_string();
                match str_field(&b, "providerId") {
                    Some(p) if IDP_PROVIDERS.contains(&p) => {}
                    other => {
                        return error_message(
                            400,
                            &format!("Invalid identity provider id [{}]", other.unwrap_or("")),
                        );
                    }
                }
                if r.idps.iter().any(|i| i["alias"] == alias.as_str()) {
                    return error_message(
                        409,
                        &format!("Identity Provider {alias} already exists"),
                    );
                }
                b.insert("internalId".into(), json!(uuid));
                b.entry("enabled").or_insert(json!(false));
                b.entry("config").or_insert(json!({}));
                r.idps.push(Value::Object(b));
                created(&format!(
                    "{base}/admin/realms/{realm}/identity-provider/instances/{alias}"
                ))
            }
            _ => not_allowed(),
        },
        [alias] => {
            let Some(i) = r.idps.iter().position(|x| x["alias"] == *alias) else {
                return error(404, "Could not find identity provider");
            };
            match m {
                "GET" => Response::json(200, &r.idps[i]),
                "PUT" => match body_object(req) {
                    Ok(b) => {
                        let cur = r.idps[i].as_object_mut().unwrap();
                        for (k, v) in b {
                            if k != "internalId" {
                                cur.insert(k, v);
                            }
                        }
                        no_content()
                    }
                    Err(e) => e,
                },
                "DELETE" => {
                    r.idps.remove(i);
                    no_content()
                }
                _ => not_allowed(),
            }
        }
        _ => not_found(),
    }
}

/// Component types and the providers the stand-in knows of each.
const COMPONENT_PROVIDERS: &[(&str, &[&str])] = &[(
    "org.keycloak.storage.UserStorageProvider",
    &["ldap", "kerberos"],
)];

/// Keycloak's component config: every value a list of strings.
fn check_component(b: &Map<String, Value>) -> Result<(), Response> {
    if str_field(b, "name").is_none_or(str::is_empty) {
        return Err(error_message(400, "Component name is missing"));
    }
    let ty = str_field(b, "providerType").unwrap_or("");
    let provider = str_field(b, "providerId").unwrap_or("");
    let known = COMPONENT_PROVIDERS
        .iter()
        .any(|(t, ps)| *t == ty && ps.contains(&provider));
    if !known {
        return Err(error_message(
            400,
            &format!("Invalid provider [{provider}] of type [{ty}]"),
        ));
    }
    if let Some(c) = b.get("config") {
        let ok = c.as_object().is_some_and(|m| {
            m.values()
                .all(|v| v.as_array().is_some_and(|a| a.iter().all(Value::is_string)))
        });
        if !ok {
            return Err(unknown_error(400));
        }
    }
    if provider == "ldap" {
        let has = |k: &str| {
            b.get("config")
                .and_then(|c| c.get(k))
                .and_then(|v| v.get(0))
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
        };
        if !has("connectionUrl") {
            return Err(error_message(400, "ldapErrorMissingConnectionUrl"));
        }
        if !has("usersDn") {
            return Err(error_message(400, "ldapErrorMissingUsersDn"));
        }
    }
    Ok(())
}

fn components(st: &mut State, req: &Request, realm: &str, rest: &[&str]) -> Response {
    let m = req.method.as_str();
    let uuid = st.uuid();
    let base = st.base.clone();
    let r = st.realms.get_mut(realm).unwrap();
    let realm_id = r.id.clone();
    match rest {
        [] => match m {
            "GET" => {
                let q = query(req);
                let list: Vec<Value> = r
                    .components
                    .iter()
                    .filter(|c| {
                        q.get("type")
                            .is_none_or(|t| c["providerType"] == t.as_str())
                    })
                    .filter(|c| q.get("name").is_none_or(|n| c["name"] == n.as_str()))
                    .filter(|c| q.get("parent").is_none_or(|p| c["parentId"] == p.as_str()))
                    .cloned()
                    .collect();
                Response::json(200, &list)
            }
            // Names are not unique: a second POST makes a second component, as in Keycloak.
            "POST" => {
                let mut b = match body_object(req) {
                    Ok(b) => b,
                    Err(e) => return e,
                };
                if let Err(e) = check_component(&b) {
                    return e;
                }
                b.insert("id".into(), json!(uuid));
                b.entry("parentId").or_insert(json!(realm_id));
                b.entry("config").or_insert(json!({}));
                r.components.push(Value::Object(b));
                created(&format!("{base}/admin/realms/{realm}/components/{uuid}"))
            }
            _ => not_allowed(),
        },
        [id] => {
            let Some(i) = r.components.iter().position(|c| c["id"] == *id) else {
                return error(404, "Could not find component");
            };
            match m {
                "GET" => Response::json(200, &r.components[i]),
                "PUT" => {
                    let mut b = match body_object(req) {
                        Ok(b) => b,
                        Err(e) => return e,
                    };
                    if let Err(e) = check_component(&b) {
                        return e;
                    }
                    b.insert("id".into(), json!(id));
                    b.entry("parentId").or_insert(json!(realm_id));
                    r.components[i] = Value::Object(b);
                    no_content()
                }
                "DELETE" => {
                    r.components.remove(i);
                    no_content()
                }
                _ => not_allowed(),
            }
        }
        _ => not_found(),
    }
}

// ------------------------------------------------------------------ users

fn users(st: &mut State, req: &Request, realm: &str, rest: &[&str]) -> Response {
    let m = req.method.as_str();
    match rest {
        [] => match m {
            "GET" => {
                let q = query(req);
                let exact = q.get("exact").is_some_and(|e| e == "true");
                let matches = |have: Option<&str>, want: &String| {
                    let have = have.unwrap_or("");
                    if exact {
                        have.eq_ignore_ascii_case(want)
                    } else {
                        contains_ci(have, want)
                    }
                };
                let list: Vec<Value> = st.realms[realm]
                    .users
                    .iter()
                    .filter(|u| u.service_account_client.is_none())
                    .filter(|u| {
                        q.get("username")
                            .is_none_or(|w| matches(Some(&u.username), w))
                    })
                    .filter(|u| {
                        q.get("email")
                            .is_none_or(|w| matches(u.email.as_deref(), w))
                    })
                    .filter(|u| {
                        q.get("search").is_none_or(|s| {
                            contains_ci(&u.username, s)
                                || u.email.as_deref().is_some_and(|e| contains_ci(e, s))
                        })
                    })
                    .map(User::representation)
                    .collect();
                Response::json(200, &page(list, &q, 100))
            }
            "POST" => create_user(st, req, realm),
            _ => not_allowed(),
        },
        ["count"] if m == "GET" => {
            let q = query(req);
            Response::json(
                200,
                &st.realms[realm]
                    .users
                    .iter()
                    .filter(|u| u.service_account_client.is_none())
                    .filter(|u| {
                        q.get("username")
                            .is_none_or(|w| contains_ci(&u.username, w))
                    })
                    .count(),
            )
        }
        [id, rest @ ..] => {
            let Some(ui) = st.realms[realm].users.iter().position(|u| u.id == *id) else {
                return error(404, "User not found");
            };
            user_item(st, req, realm, ui, rest)
        }
    }
}

fn password_of(b: &Map<String, Value>) -> Option<(String, bool)> {
    b.get("credentials")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c.get("type").and_then(Value::as_str).unwrap_or("password") == "password")
        .and_then(|c| {
            Some((
                c.get("value")?.as_str()?.to_string(),
                c.get("temporary").and_then(Value::as_bool).unwrap_or(false),
            ))
        })
}

fn create_user(st: &mut State, req: &Request, realm: &str) -> Response {
    let mut b = match body_object(req) {
        Ok(b) => b,
        Err(e) => return e,
    };
    if let Err(e) = check_types(
        &b,
        &["enabled", "emailVerified"],
        &[],
        &["username", "email", "firstName", "lastName"],
        &["credentials", "requiredActions", "groups", "realmRoles"],
    ) {
        return e;
    }
    let email_as_username = st.realms[realm]
        .rep
        .get("registrationEmailAsUsername")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let email = str_field(&b, "email")
        .filter(|e| !e.is_empty())
        .map(str::to_lowercase);
    let username = match str_field(&b, "username").filter(|u| !u.is_empty()) {
        Some(u) => u.to_lowercase(),
        None if email_as_username && email.is_some() => email.clone().unwrap_or_default(),
        None => return error_message(400, "User name is missing"),
    };
    let r = &st.realms[realm];
    if r.users.iter().any(|u| u.username == username) {
        return error_message(409, "User exists with same username");
    }
    let dup_emails = r
        .rep
        .get("duplicateEmailsAllowed")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if let Some(e) = &email
        && !dup_emails
        && r.users.iter().any(|u| u.email.as_ref() == Some(e))
    {
        return error_message(409, "User exists with same email");
    }
    let password = password_of(&b);
    let mut required: Vec<String> = b
        .get("requiredActions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(String::from))
        .collect();
    if password.as_ref().is_some_and(|(_, t)| *t)
        && !required.iter().any(|a| a == "UPDATE_PASSWORD")
    {
        required.push("UPDATE_PASSWORD".into());
    }
    let enabled = b.get("enabled").and_then(Value::as_bool).unwrap_or(false);
    let id = st.uuid();
    for k in [
        "id",
        "username",
        "email",
        "enabled",
        "credentials",
        "requiredActions",
    ] {
        b.remove(k);
    }
    b.entry("emailVerified").or_insert(json!(false));
    st.realms.get_mut(realm).unwrap().users.push(User {
        id: id.clone(),
        username,
        email,
        rep: b,
        enabled,
        password: password.map(|(p, _)| p),
        roles: Vec::new(),
        required_actions: required,
        emails: Vec::new(),
        service_account_client: None,
        client_roles: Vec::new(),
        created: now(),
    });
    created(&format!("{}/admin/realms/{realm}/users/{id}", st.base))
}

fn user_item(st: &mut State, req: &Request, realm: &str, ui: usize, rest: &[&str]) -> Response {
    let m = req.method.as_str();
    let q = query(req);
    let r = st.realms.get_mut(realm).unwrap();
    match rest {
        [] => match m {
            "GET" => Response::json(200, &r.users[ui].representation()),
            "PUT" => {
                let mut b = match body_object(req) {
                    Ok(b) => b,
                    Err(e) => return e,
                };
                if let Some(u) = str_field(&b, "username").map(str::to_lowercase)
                    && r.users
                        .iter()
                        .enumerate()
                        .any(|(i, x)| i != ui && x.username == u)
                {
                    return error_message(409, "User exists with same username");
                }
                let dup_emails = r
                    .rep
                    .get("duplicateEmailsAllowed")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if let Some(e) = str_field(&b, "email").map(str::to_lowercase)
                    && !dup_emails
                    && r.users
                        .iter()
                        .enumerate()
                        .any(|(i, x)| i != ui && x.email.as_ref() == Some(&e))
                {
                    return error_message(409, "User exists with same email");
                }
                let u = &mut r.users[ui];
                if let Some(n) = str_field(&b, "username") {
                    u.username = n.to_lowercase();
                }
                if b.contains_key("email") {
                    u.email = str_field(&b, "email")
                        .filter(|e| !e.is_empty())
                        .map(str::to_lowercase);
                }
                if let Some(e) = b.get("enabled").and_then(Value::as_bool) {
                    u.enabled = e;
                }
                if let Some(a) = b.get("requiredActions").and_then(Value::as_array) {
                    u.required_actions = a
                        .iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect();
                }
                if let Some((p, t)) = password_of(&b) {
                    u.password = Some(p);
                    if t && !u.required_actions.iter().any(|a| a == "UPDATE_PASSWORD") {
                        u.required_actions.push("UPDATE_PASSWORD".into());
                    }
                }
                for k in [
                    "id",
                    "username",
                    "email",
                    "enabled",
                    "credentials",
                    "requiredActions",
                ] {
                    b.remove(k);
                }
                for (k, v) in b {
                    u.rep.insert(k, v);
                }
                no_content()
            }
            "DELETE" => {
                r.users.remove(ui);
                no_content()
            }
            _ => not_allowed(),
        },
        ["reset-password"] if m == "PUT" => {
            let b = match body_object(req) {
                Ok(b) => b,
                Err(e) => return e,
            };
            let Some(value) = str_field(&b, "value").filter(|v| !v.is_empty()) else {
                return error_message(400, "Empty password");
            };
            let temporary = b.get("temporary").and_then(Value::as_bool).unwrap_or(false);
            let u = &mut r.users[ui];
            u.password = Some(value.to_string());
            u.required_actions.retain(|a| a != "UPDATE_PASSWORD");
            if temporary {
                u.required_actions.push("UPDATE_PASSWORD".into());
            }
            no_content()
        }
        [action @ ("execute-actions-email" | "send-verify-email")] if m == "PUT" => {
            let actions: Vec<String> = if *action == "send-verify-email" {
                vec!["VERIFY_EMAIL".into()]
            } else {
                match body_json(req) {
                    Ok(Value::Array(a)) if a.iter().all(Value::is_string) => {
                        a.iter().map(|x| x.as_str().unwrap().to_string()).collect()
                    }
                    _ => return unknown_error(400),
                }
            };
            let u = &r.users[ui];
            if u.email.is_none() {
                return error_message(400, "User email missing");
            }
            if !u.enabled {
                return error_message(400, "User is disabled");
            }
            let client_id = q.get("client_id").cloned();
            let redirect = q.get("redirect_uri").cloned();
            if let Some(uri) = &redirect {
                let Some(cid) = &client_id else {
                    return error_message(400, "Client id missing");
                };
                let Some(c) = r.clients.iter().find(|c| &c.client_id == cid) else {
                    return error_message(400, "Client doesn't exist");
                };
                if !c
                    .rep
                    .get("enabled")
                    .and_then(Value::as_bool)
                    .unwrap_or(true)
                {
                    return error_message(400, "Client is not enabled");
                }
                if !redirect_allowed(c, uri) {
                    return error_message(400, "Invalid redirect uri.");
                }
            }
            let u = &mut r.users[ui];
            for a in &actions {
                if !u.required_actions.contains(a) {
                    u.required_actions.push(a.clone());
                }
            }
            u.emails
                .push(json!({"actions": actions, "client_id": client_id,
                "redirect_uri": redirect, "lifespan": q.get("lifespan")}));
            no_content()
        }
        ["role-mappings"] if m == "GET" => {
            let list: Vec<Value> = r.users[ui]
                .roles
                .iter()
                .filter_map(|n| r.roles.iter().find(|x| x.name == *n))
                .map(|x| x.representation(&r.id))
                .collect();
            Response::json(200, &json!({ "realmMappings": list }))
        }
        ["role-mappings", "clients", client] => {
            let client = client.to_string();
            if !r.clients.iter().any(|c| c.id == client) {
                return error(404, "Client not found");
            }
            match m {
                "GET" => {
                    let list: Vec<Value> = r
                        .client_roles
                        .iter()
                        .filter(|(c, x)| *c == client && r.users[ui].client_roles.contains(&x.id))
                        .map(|(c, x)| client_role_rep(x, c))
                        .collect();
                    Response::json(200, &list)
                }
                "POST" | "DELETE" => {
                    let list = match body_json(req) {
                        Ok(Value::Array(a)) => a,
                        _ => return unknown_error(400),
                    };
                    let mut ids = Vec::new();
                    for rep in &list {
                        let name = rep.get("name").and_then(Value::as_str);
                        let id = rep.get("id").and_then(Value::as_str);
                        let found = r
                            .client_roles
                            .iter()
                            .filter(|(c, _)| *c == client)
                            .map(|(_, x)| x)
                            .find(|x| Some(x.name.as_str()) == name || Some(x.id.as_str()) == id)
                            .filter(|x| id.is_none_or(|i| x.id == i));
                        match found {
                            Some(x) => ids.push(x.id.clone()),
                            None => return error(404, "Role not found"),
                        }
                    }
                    let u = &mut r.users[ui];
                    for id in ids {
                        if m == "POST" {
                            if !u.client_roles.contains(&id) {
                                u.client_roles.push(id);
                            }
                        } else {
                            u.client_roles.retain(|x| *x != id);
                        }
                    }
                    no_content()
                }
                _ => not_allowed(),
            }
        }
        ["role-mappings", "realm"] => match m {
            "GET" => {
                let list: Vec<Value> = r.users[ui]
                    .roles
                    .iter()
                    .filter_map(|n| r.roles.iter().find(|x| x.name == *n))
                    .map(|x| x.representation(&r.id))
                    .collect();
                Response::json(200, &list)
            }
            "POST" | "DELETE" => {
                let list = match body_json(req) {
                    Ok(Value::Array(a)) => a,
                    _ => return unknown_error(400),
                };
                let mut names = Vec::new();
                for rep in &list {
                    let name = rep.get("name").and_then(Value::as_str);
                    let id = rep.get("id").and_then(Value::as_str);
                    // Keycloak finds the role by name and wants the id to agree.
                    let found = name
                        .and_then(|n| r.roles.iter().find(|x| x.name == n))
                        .or_else(|| id.and_then(|i| r.roles.iter().find(|x| x.id == i)))
                        .filter(|x| id.is_none_or(|i| x.id == i));
                    match found {
                        Some(x) => names.push(x.name.clone()),
                        None => return error(404, "Role not found"),
                    }
                }
                let u = &mut r.users[ui];
                for n in names {
                    if m == "POST" {
                        if !u.roles.contains(&n) {
                            u.roles.push(n);
                        }
                    } else {
                        u.roles.retain(|x| *x != n);
                    }
                }
                no_content()
            }
            _ => not_allowed(),
        },
        _ => not_found(),
    }
}

// ------------------------------------------------------------------ routing

/// Whether a request is a "Keycloak call" (faults, delay and the call log apply).
fn counted(parts: &[String], method: &str) -> bool {
    match parts.first().map(String::as_str) {
        Some("admin") => true,
        Some("realms") => {
            method == "POST" && parts.len() == 5 && parts[2] == "protocol" && parts[4] == "token"
        }
        _ => false,
    }
}

fn handle(shared: &Shared, req: Request) -> Response {
    let path = match req.path.strip_prefix(shared.context.as_str()) {
        Some(p) if shared.context.is_empty() || p.is_empty() || p.starts_with('/') => p,
        _ => return not_found(),
    };
    let parts: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s, false))
        .collect();
    let is_call = counted(&parts, &req.method);
    let mut lose = None;
    if is_call {
        let (delay, fail) = {
            let mut f = shared.faults.lock().unwrap();
            if let Some((m, suffix, status)) = f.lose_on.clone()
                && m == req.method
                && path.ends_with(suffix.as_str())
            {
                f.lose_on = None;
                lose = Some(status);
            }
            let mut fail = f.fail_all;
            if fail.is_none()
                && let Some(head) = f.queue.front_mut()
            {
                if head.skip > 0 {
                    head.skip -= 1;
                } else if let Some(due) = f.queue.pop_front() {
                    if due.lose {
                        lose = Some(due.status);
                    } else {
                        fail = Some(due.status);
                    }
                }
            }
            (f.delay, fail)
        };
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        if let Some(status) = fail {
            shared.calls.lock().unwrap().push(Call {
                method: req.method.clone(),
                path: path.to_string(),
                status,
            });
            return fault(status);
        }
    }
    let resp = {
        let mut st = shared.state.lock().unwrap();
        route(&mut st, &shared.fetches, &req, &parts)
    };
    let resp = match lose {
        Some(status) => fault(status),
        None => resp,
    };
    if is_call {
        shared.calls.lock().unwrap().push(Call {
            method: req.method.clone(),
            path: path.to_string(),
            status: resp.status,
        });
    }
    resp
}

fn fault(status: u16) -> Response {
    if status >= 500 {
        unknown_error(status)
    } else {
        error_message(status, &format!("injected failure {status}"))
    }
}

fn route(st: &mut State, fetches: &AtomicUsize, req: &Request, parts: &[String]) -> Response {
    let p: Vec<&str> = parts.iter().map(String::as_str).collect();
    match (req.method.as_str(), p.as_slice()) {
        ("GET", ["realms", realm, "protocol", "openid-connect", "certs"]) => {
            if !st.realms.contains_key(*realm) {
                return Response::json(404, &json!({"error": "Realm does not exist"}));
            }
            st.ensure_key(realm);
            fetches.fetch_add(1, Ordering::SeqCst);
            Response::json(200, &jwks(&st.realms[*realm]))
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
            token_endpoint(st, realm, req)
        }
        (_, ["admin", "realms", ..]) => {
            if let Err(resp) = admin_auth(st, req, &parts[2..]) {
                return resp;
            }
            admin(st, req, &parts[2..])
        }
        _ => Response::json(404, &json!({"error": "not found"})),
    }
}

// ------------------------------------------------------------------ snapshots

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

fn dupes<'a>(kind: &str, names: impl Iterator<Item = &'a str>, out: &mut Vec<String>) {
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

fn snapshot(r: &Realm) -> RealmSnapshot {
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
