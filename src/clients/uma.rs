//! UMA authorization decisions from Keycloak: may the bearer of this token use scope `S` of the
//! `kaa-system` resource? Asked at the system realm's token endpoint with
//! `grant_type=urn:ietf:params:oauth:grant-type:uma-ticket`, `response_mode=decision`; answers
//! are cached briefly per (token, scope).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum UmaError {
    #[error("uma: cannot reach `{url}`: {message}")]
    Unreachable { url: String, message: String },
    #[error("uma: `{url}` answered {status}")]
    Status { url: String, status: u16 },
}

#[derive(Deserialize)]
struct Decision {
    #[serde(default)]
    result: bool,
}

/// Keycloak's error answer (`{"error", "error_description"}`).
#[derive(Deserialize, Default)]
struct ErrorAnswer {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

pub struct UmaClient {
    token_url: String,
    audience: String,
    resource: String,
    agent: ureq::Agent,
    ttl: Duration,
    hasher: std::collections::hash_map::RandomState,
    cache: Mutex<HashMap<(u64, String), (bool, Instant)>>,
}

impl UmaClient {
    /// `issuer_private` is the system realm's issuer URL; `audience` its backend client id.
    pub fn new(issuer_private: &str, audience: &str, resource: &str, ttl: Duration) -> UmaClient {
        UmaClient {
            token_url: format!(
                "{}/protocol/openid-connect/token",
                issuer_private.trim_end_matches('/')
            ),
            audience: audience.to_string(),
            resource: resource.to_string(),
            agent: ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(5)))
                .http_status_as_error(false)
                .build()
                .new_agent(),
            ttl,
            hasher: std::collections::hash_map::RandomState::new(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn key(&self, token: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write(token.as_bytes());
        h.finish()
    }

    /// Whether the token's bearer holds `scope` on the resource.
    pub fn allowed(&self, token: &str, scope: &str) -> Result<bool, UmaError> {
        let key = (self.key(token), scope.to_string());
        if let Ok(c) = self.cache.lock()
            && let Some((ok, at)) = c.get(&key)
            && at.elapsed() < self.ttl
        {
            return Ok(*ok);
        }
        let permission = format!("{}#{scope}", self.resource);
        let resp = self
            .agent
            .post(&self.token_url)
            .header("Authorization", &format!("Bearer {token}"))
            .send_form([
                ("grant_type", "urn:ietf:params:oauth:grant-type:uma-ticket"),
                ("audience", self.audience.as_str()),
                ("permission", permission.as_str()),
                ("response_mode", "decision"),
            ]);
        let mut resp = resp.map_err(|e| UmaError::Unreachable {
            url: self.token_url.clone(),
            message: e.to_string(),
        })?;
        let ok = match resp.status().as_u16() {
            200 => resp
                .body_mut()
                .with_config()
                .limit(64 * 1024)
                .read_json::<Decision>()
                .map(|d| d.result)
                .unwrap_or(false),
            401 | 403 => false,
            // A scope the resource does not have (or a resource the resource server does not
            // have): Keycloak answers 400 `invalid_resource`; nobody holds such a scope.
            400 => {
                let e: ErrorAnswer = resp
                    .body_mut()
                    .with_config()
                    .limit(64 * 1024)
                    .read_json()
                    .unwrap_or_default();
                if e.error != "invalid_resource" && e.error != "invalid_scope" {
                    return Err(UmaError::Status {
                        url: self.token_url.clone(),
                        status: 400,
                    });
                }
                log::warn!(
                    "uma: `{permission}` is not provisioned in `{}`: {}",
                    self.audience,
                    e.error_description
                );
                false
            }
            status => {
                return Err(UmaError::Status {
                    url: self.token_url.clone(),
                    status,
                });
            }
        };
        if let Ok(mut c) = self.cache.lock() {
            if c.len() > 10_000 {
                c.clear();
            }
            c.insert(key, (ok, Instant::now()));
        }
        Ok(ok)
    }
}
