//! IAM's client of the Tenant Manager: the security context of the tenant whose realm issued a
//! token (issuer, key set, backend client), cached per realm for a while and dropped when the
//! tenant's `updated` lifecycle event arrives. Calls carry a client-credentials token of the
//! system realm's backend client when one is configured.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Deserialize;
use thiserror::Error;

use super::oidc::Jwks;

#[derive(Debug, Error)]
pub enum TenantManagerError {
    #[error("tenant manager: cannot reach `{url}`: {message}")]
    Unreachable { url: String, message: String },
    #[error("tenant manager: `{url}` answered {status}")]
    Status { url: String, status: u16 },
    #[error("tenant manager: unreadable answer from `{url}`: {message}")]
    Format { url: String, message: String },
    #[error("tenant manager: cannot get a token from the system realm: {0}")]
    Token(String),
}

/// What IAM needs of a tenant (the Tenant Manager's security context, secrets left out).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct SecurityContext {
    pub tenant_id: String,
    pub realm_name: String,
    pub status: String,
    pub issuer: Option<String>,
    pub jwks_uri: Option<String>,
    pub client_id: String,
    /// The tenant's web UI client: its users' tokens are issued to it.
    #[serde(default)]
    pub frontend_client_id: Option<String>,
}

/// How IAM reaches a tenant's realm to manage its users: the realm on the Keycloak server's
/// private URL and the tenant's backend client (whose service account manages users).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealmAccess {
    pub keycloak_url: String,
    pub realm: String,
    pub client_id: String,
    pub client_secret: crate::config::Secret,
    /// The client the links of e-mails (verify e-mail) belong to.
    pub frontend_client_id: Option<String>,
}

#[derive(Deserialize)]
struct AccessRow {
    realm_name: String,
    status: String,
    #[serde(default)]
    keycloak_private_url: Option<String>,
    #[serde(default)]
    keycloak_url: Option<String>,
    client_id: String,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    frontend_client_id: Option<String>,
}

/// A tenant's issuer as IAM checks its tokens.
pub struct TenantIssuer {
    pub context: SecurityContext,
    pub jwks: Jwks,
}

struct Cached {
    issuer: Option<Arc<TenantIssuer>>,
    at: Instant,
}

struct Token {
    value: String,
    until: Instant,
}

pub struct TenantManagerClient {
    base: String,
    agent: ureq::Agent,
    /// System realm token endpoint and backend client (no token when the id is empty).
    token_url: String,
    client_id: String,
    client_secret: String,
    token: Mutex<Option<Token>>,
    cache: RwLock<HashMap<String, Cached>>,
    /// Realm access by tenant id (None: the tenant has no Keycloak realm or is not available).
    access: RwLock<HashMap<String, (Option<RealmAccess>, Instant)>>,
    ttl: Duration,
    jwks_refresh: Duration,
}

#[derive(Deserialize)]
struct TenantList {
    results: Vec<TenantRow>,
}

#[derive(Deserialize)]
struct TenantRow {
    id: String,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl TenantManagerClient {
    pub fn new(
        base: &str,
        system_issuer_private: &str,
        client_id: &str,
        client_secret: &str,
        ttl: Duration,
        jwks_refresh: Duration,
    ) -> TenantManagerClient {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .http_status_as_error(false)
            .build()
            .new_agent();
        TenantManagerClient {
            base: base.trim_end_matches('/').to_string(),
            agent,
            token_url: format!(
                "{}/protocol/openid-connect/token",
                system_issuer_private.trim_end_matches('/')
            ),
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
            token: Mutex::new(None),
            cache: RwLock::new(HashMap::new()),
            access: RwLock::new(HashMap::new()),
            ttl,
            jwks_refresh,
        }
    }

    fn bearer(&self) -> Result<Option<String>, TenantManagerError> {
        if self.client_id.is_empty() {
            return Ok(None);
        }
        let mut slot = self.token.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = slot.as_ref().filter(|t| t.until > Instant::now()) {
            return Ok(Some(t.value.clone()));
        }
        let mut resp = self
            .agent
            .post(&self.token_url)
            .send_form([
                ("grant_type", "client_credentials"),
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.client_secret.as_str()),
            ])
            .map_err(|e| TenantManagerError::Token(e.to_string()))?;
        if resp.status() != 200 {
            return Err(TenantManagerError::Token(format!(
                "status {}",
                resp.status()
            )));
        }
        let t: TokenAnswer = resp
            .body_mut()
            .read_json()
            .map_err(|e| TenantManagerError::Token(e.to_string()))?;
        let life = Duration::from_secs(t.expires_in.unwrap_or(60).saturating_sub(10).max(5));
        *slot = Some(Token {
            value: t.access_token.clone(),
            until: Instant::now() + life,
        });
        Ok(Some(t.access_token))
    }

    fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<T>, TenantManagerError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.get(&url);
        if let Some(b) = self.bearer()? {
            req = req.header("Authorization", &format!("Bearer {b}"));
        }
        let mut resp = req.call().map_err(|e| TenantManagerError::Unreachable {
            url: url.clone(),
            message: e.to_string(),
        })?;
        match resp.status().as_u16() {
            200 => resp
                .body_mut()
                .with_config()
                .limit(1 << 20)
                .read_json()
                .map(Some)
                .map_err(|e| TenantManagerError::Format {
                    url,
                    message: e.to_string(),
                }),
            404 => Ok(None),
            status => Err(TenantManagerError::Status { url, status }),
        }
    }

    /// The issuer of the tenant whose realm is `realm` (None: no such tenant, or not available).
    pub fn issuer_for_realm(
        &self,
        realm: &str,
    ) -> Result<Option<Arc<TenantIssuer>>, TenantManagerError> {
        // Unknown realms are remembered briefly only: a tenant created a moment ago must work.
        let negative_ttl = self.ttl.min(Duration::from_secs(5));
        if let Some(c) = self.cache.read().ok().and_then(|m| {
            m.get(realm)
                .filter(|c| {
                    let ttl = if c.issuer.is_some() {
                        self.ttl
                    } else {
                        negative_ttl
                    };
                    c.at.elapsed() < ttl
                })
                .map(|c| c.issuer.clone())
        }) {
            return Ok(c);
        }
        let enc = super::keycloak::encode(realm);
        let list: Option<TenantList> =
            self.get(&format!("/api/v1/tenants?realm_name={enc}&limit=1"))?;
        let issuer = match list.and_then(|l| l.results.into_iter().next()) {
            None => None,
            Some(row) => {
                let ctx: Option<SecurityContext> =
                    self.get(&format!("/api/v1/tenants/{}/security-context", row.id))?;
                ctx.filter(|c| c.status == "AVAILABLE" || c.status == "UPDATING")
                    .and_then(|c| {
                        let jwks = c.jwks_uri.clone()?;
                        Some(Arc::new(TenantIssuer {
                            jwks: Jwks::new(&jwks, Duration::from_secs(5), self.jwks_refresh),
                            context: c,
                        }))
                    })
            }
        };
        if let Ok(mut m) = self.cache.write() {
            if m.len() > 10_000 {
                m.clear();
            }
            m.insert(
                realm.to_string(),
                Cached {
                    issuer: issuer.clone(),
                    at: Instant::now(),
                },
            );
        }
        Ok(issuer)
    }

    /// How to reach the realm of tenant `tenant` (by id) to manage its users; None when the
    /// tenant is unknown, has no Keycloak (the embedded provisioner) or is not available.
    pub fn realm_access(&self, tenant: &str) -> Result<Option<RealmAccess>, TenantManagerError> {
        if let Some((a, _)) = self.access.read().ok().and_then(|m| {
            m.get(tenant)
                .filter(|(a, at)| {
                    at.elapsed()
                        < if a.is_some() {
                            self.ttl
                        } else {
                            Duration::from_secs(5)
                        }
                })
                .cloned()
        }) {
            return Ok(a);
        }
        let enc = super::keycloak::encode(tenant);
        let row: Option<AccessRow> =
            self.get(&format!("/api/v1/tenants/{enc}/security-context"))?;
        let access = row
            .filter(|r| r.status == "AVAILABLE" || r.status == "UPDATING")
            .and_then(|r| {
                let url = r
                    .keycloak_private_url
                    .filter(|u| !u.is_empty())
                    .or(r.keycloak_url.filter(|u| !u.is_empty()))?;
                let secret = r.client_secret.filter(|s| !s.is_empty())?;
                Some(RealmAccess {
                    keycloak_url: url,
                    realm: r.realm_name,
                    client_id: r.client_id,
                    client_secret: crate::config::Secret::new(&secret),
                    frontend_client_id: r.frontend_client_id.filter(|c| !c.is_empty()),
                })
            });
        if let Ok(mut m) = self.access.write() {
            if m.len() > 10_000 {
                m.clear();
            }
            m.insert(tenant.to_string(), (access.clone(), Instant::now()));
        }
        Ok(access)
    }

    /// Forget what is cached about a tenant (its `updated` event arrived).
    pub fn forget_tenant(&self, tenant: &str) {
        if let Ok(mut m) = self.access.write() {
            m.remove(tenant);
        }
        if let Ok(mut m) = self.cache.write() {
            m.retain(|realm, c| {
                realm != tenant
                    && c.issuer
                        .as_ref()
                        .is_none_or(|i| i.context.tenant_id != tenant)
            });
        }
    }
}
