//! The Tenant Manager's checks of tokens issued by tenant realms (accepted by `GET /audit` only,
//! from a tenant's own administrator): each realm's issuer and keys, its clients as audiences,
//! and its UMA decisions on `tenant-system`, made when first needed and made again when the
//! tenant's realm changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use super::auth::{AuthError, Authenticator, Issuer};
use crate::clients::oidc::Jwks;
use crate::clients::uma::UmaClient;
use crate::tenants::service::Tm;

/// The unverified `iss` of a token: only to pick the realm whose keys then verify it.
pub fn token_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss")?.as_str().map(str::to_string)
}

/// A tenant realm's token checks: its issuer and keys, its clients as audiences, and its UMA
/// decisions on `tenant-system`.
pub struct RealmAuth {
    /// What it was made from; made again when that changes (a move, another issuer).
    made_from: (String, String, String, String),
    pub issuer: String,
    pub tokens: Authenticator,
    pub scopes: UmaClient,
}

/// The tenant realms' checks, made when first needed (security on).
pub struct RealmAuths {
    pub leeway: Duration,
    pub jwks_refresh: Duration,
    pub jwks_max_age: Duration,
    pub decision_ttl: Duration,
    realms: Mutex<HashMap<String, Arc<RealmAuth>>>,
}

/// Tenants whose realm checks are kept at most; beyond it the cache starts again.
const REALMS_MAX: usize = 10_000;

impl RealmAuths {
    pub fn new(
        leeway: Duration,
        jwks_refresh: Duration,
        jwks_max_age: Duration,
        decision_ttl: Duration,
    ) -> RealmAuths {
        RealmAuths {
            leeway,
            jwks_refresh,
            jwks_max_age,
            decision_ttl,
            realms: Mutex::new(HashMap::new()),
        }
    }

    /// The checks of tenant `t`'s realm as the Tenant Manager knows it now.
    pub fn of(
        &self,
        tm: &Tm,
        t: &crate::storage::TenantRecord,
    ) -> Result<Arc<RealmAuth>, AuthError> {
        let (issuer, realm_url) = tm.token_source(t).map_err(|e| {
            log::warn!("auth: tenant `{}`: {e}", t.id);
            AuthError::Unavailable
        })?;
        let Some(issuer) = issuer else {
            return Err(AuthError::Invalid(
                "the token's issuer is not accepted here".into(),
            ));
        };
        let made_from = (
            issuer.clone(),
            realm_url.clone(),
            t.client_backend_id.clone(),
            t.client_frontend_id.clone(),
        );
        let mut realms = self.realms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = realms.get(&t.id)
            && a.made_from == made_from
        {
            return Ok(Arc::clone(a));
        }
        let jwks = Jwks::new(
            &Jwks::certs_url(&realm_url),
            Duration::from_secs(5),
            self.jwks_refresh,
        )
        .with_max_age(self.jwks_max_age);
        let tokens = Authenticator::new(
            vec![Issuer {
                issuer: issuer.clone(),
                tenant: t.id.clone(),
                jwks,
            }],
            [t.client_backend_id.clone(), t.client_frontend_id.clone()]
                .into_iter()
                .collect(),
            self.leeway,
        );
        let scopes = UmaClient::new(
            &realm_url,
            &t.client_backend_id,
            "tenant-system",
            self.decision_ttl,
        );
        let a = Arc::new(RealmAuth {
            made_from,
            issuer,
            tokens,
            scopes,
        });
        if realms.len() >= REALMS_MAX {
            realms.clear();
        }
        realms.insert(t.id.clone(), Arc::clone(&a));
        Ok(a)
    }
}
