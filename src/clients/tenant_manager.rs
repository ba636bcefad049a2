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

/// Realms (tenants) whose issuer is kept at most; beyond it the oldest entry goes, one at a time.
const KNOWN_MAX: usize = 100_000;
/// Realms remembered as unknown at most: an attacker's tokens naming random realms fill only
/// this part, and push out only each other, never a tenant's keys.
const UNKNOWN_MAX: usize = 1_000;
/// Questions to the Tenant Manager about realms not cached, per second at most; beyond it a
/// token of such a realm is refused without asking (a new tenant's first token may need a retry
/// while tokens of random realms arrive faster than this).
const LOOKUPS_PER_SECOND: u32 = 20;

/// A budget of `per_second` events in each one-second window.
struct RateBudget {
    per_second: u32,
    window: Mutex<(Instant, u32)>,
}

impl RateBudget {
    fn new(per_second: u32) -> RateBudget {
        RateBudget {
            per_second,
            window: Mutex::new((Instant::now(), 0)),
        }
    }

    /// Takes one event from the budget; false when this second's budget is spent.
    fn take(&self) -> bool {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if w.0.elapsed() >= Duration::from_secs(1) {
            *w = (Instant::now(), 0);
        }
        if w.1 >= self.per_second {
            return false;
        }
        w.1 += 1;
        true
    }
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
    /// Realms of tenants, with their issuer.
    cache: RwLock<HashMap<String, Cached>>,
    /// Realms the Tenant Manager did not know (or not as available), when it was asked.
    unknown: RwLock<HashMap<String, Instant>>,
    lookups: RateBudget,
    /// Realm access by tenant id (None: the tenant has no Keycloak realm or is not available).
    access: RwLock<HashMap<String, (Option<RealmAccess>, Instant)>>,
    ttl: Duration,
    jwks_refresh: Duration,
    jwks_max_age: Duration,
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
        jwks_max_age: Duration,
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
            unknown: RwLock::new(HashMap::new()),
            lookups: RateBudget::new(LOOKUPS_PER_SECOND),
            access: RwLock::new(HashMap::new()),
            ttl,
            jwks_refresh,
            jwks_max_age,
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
                .filter(|c| c.at.elapsed() < self.ttl)
                .map(|c| c.issuer.clone())
        }) {
            return Ok(c);
        }
        if self
            .unknown
            .read()
            .ok()
            .and_then(|m| m.get(realm).copied())
            .is_some_and(|at| at.elapsed() < negative_ttl)
        {
            return Ok(None);
        }
        if !self.lookups.take() {
            log::warn!("auth: realm `{realm}` not cached and the look-up budget is spent");
            return Ok(None);
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
                            jwks: Jwks::new(&jwks, Duration::from_secs(5), self.jwks_refresh)
                                .with_max_age(self.jwks_max_age),
                            context: c,
                        }))
                    })
            }
        };
        let now = Instant::now();
        if issuer.is_some() {
            if let Ok(mut m) = self.unknown.write() {
                m.remove(realm);
            }
            if let Ok(mut m) = self.cache.write() {
                let cached = Cached {
                    issuer: issuer.clone(),
                    at: now,
                };
                super::insert_bounded(&mut m, KNOWN_MAX, realm, cached, |c| c.at);
            }
        } else {
            if let Ok(mut m) = self.cache.write() {
                m.remove(realm);
            }
            if let Ok(mut m) = self.unknown.write() {
                super::insert_bounded(&mut m, UNKNOWN_MAX, realm, now, |at| *at);
            }
        }
        Ok(issuer)
    }

    /// Does the Tenant Manager know tenant `tenant` (in any state)? `false` only on its 404;
    /// every other answer, and no answer, is an error.
    pub fn knows_tenant(&self, tenant: &str) -> Result<bool, TenantManagerError> {
        let enc = super::keycloak::encode(tenant);
        let found: Option<serde_json::Value> = self.get(&format!("/api/v1/tenants/{enc}"))?;
        Ok(found.is_some())
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
            super::insert_bounded(
                &mut m,
                KNOWN_MAX,
                tenant,
                (access.clone(), Instant::now()),
                |(_, at)| *at,
            );
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
        if let Ok(mut m) = self.unknown.write() {
            m.remove(tenant);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_map_drops_its_oldest_entry_only() {
        let t0 = Instant::now();
        let mut m: HashMap<String, Instant> = HashMap::new();
        for i in 0..3u64 {
            crate::clients::insert_bounded(
                &mut m,
                3,
                &format!("r{i}"),
                t0 + Duration::from_secs(i),
                |a| *a,
            );
        }
        crate::clients::insert_bounded(&mut m, 3, "r9", t0 + Duration::from_secs(9), |a| *a);
        let mut keys: Vec<&String> = m.keys().collect();
        keys.sort();
        assert_eq!(keys, ["r1", "r2", "r9"]);
        // Replacing a key that is there drops nothing.
        crate::clients::insert_bounded(&mut m, 3, "r1", t0 + Duration::from_secs(10), |a| *a);
        assert_eq!(m.len(), 3);
        assert!(m.contains_key("r2"));
    }

    #[test]
    fn the_lookup_budget_refills_each_second() {
        let b = RateBudget::new(2);
        assert!(b.take() && b.take());
        assert!(!b.take());
        b.window.lock().unwrap().0 = Instant::now() - Duration::from_secs(2);
        assert!(b.take());
    }
}
