//! The Tenant Manager's audit trail as `GET /api/v1/audit` reads it, and who may read it: the
//! system realm's callers with the scope `kaa:tenant:audit:read` on `kaa-system` read every
//! tenant's trail; a tenant's own administrator, with a token of the tenant's realm and the
//! scope `tenant:audit:read` on the realm's `tenant-system` resource (decided by the realm's
//! Keycloak, UMA), reads only that tenant's. The rows are written by the storage writes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use super::err::TmError;
use super::service::Tm;
use crate::clients::oidc::Jwks;
use crate::clients::uma::UmaClient;
use crate::http::auth::{AuthError, Authenticator, Issuer};
use crate::storage::{AuditFilter, AuditStore, TenantFilter, TenantStore, Trail};

/// The tenant realms' scope a tenant's administrator needs to read its trail.
pub const TENANT_SCOPE: &str = "tenant:audit:read";
/// The system realm's scope (on `kaa-system`) that reads every tenant's trail.
pub const SYSTEM_SCOPE: &str = "kaa:tenant:audit:read";

/// One page of the trail: the rows as the API and the NATS feed show them, and the cursor of
/// the next page (none on the last).
pub type AuditPage = (Vec<Value>, Option<String>);

impl Tm {
    /// `GET /audit`: one page of the trail of `tenant` (none: every tenant's), newest first,
    /// filtered by `entity`, `principal` (KRN or token subject), `action`, `from`, `to`; `limit`
    /// rows (50, at most `max_page`), after the cursor `next`.
    pub fn list_audit(
        &self,
        tenant: Option<String>,
        q: &HashMap<String, String>,
        max_page: u32,
    ) -> Result<AuditPage, TmError> {
        let get = |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let size = match get("limit") {
            None => 50.min(max_page),
            Some(s) => match s.parse::<u32>() {
                Ok(n) if n >= 1 && n <= max_page => n,
                _ => {
                    return Err(TmError::field(
                        "limit",
                        format!("must be a whole number from 1 to {max_page}, got `{s}`"),
                    ));
                }
            },
        };
        let time = |k: &str| -> Result<Option<i64>, TmError> {
            get(k)
                .map(|s| crate::audit::parse_time(k, s).map_err(|m| TmError::field(k, m)))
                .transpose()
        };
        let (from_ms, to_ms) = (time("from")?, time("to")?);
        if let (Some(f), Some(t)) = (from_ms, to_ms)
            && f > t
        {
            return Err(TmError::field("from", "is after `to`"));
        }
        let before_id = get("next")
            .map(|c| crate::audit::parse_cursor(c).map_err(|m| TmError::field("next", m)))
            .transpose()?;
        let filter = AuditFilter {
            trail: Trail::TenantManager,
            tenant,
            entity: get("entity").map(str::to_string),
            principal: get("principal").map(str::to_string),
            action: get("action").map(str::to_string),
            from_ms,
            to_ms,
            before_id,
            limit: size + 1,
        };
        let mut rows = self.db.audit(&filter)?;
        let next = if rows.len() > size as usize {
            rows.truncate(size as usize);
            rows.last().map(|r| crate::audit::cursor(r.id))
        } else {
            None
        };
        let views = rows
            .iter()
            .map(|r| crate::storage::audit::feed_message(Trail::TenantManager, r))
            .collect();
        Ok((views, next))
    }

    /// The tenant whose realm is `realm`, if any.
    pub fn tenant_of_realm(
        &self,
        realm: &str,
    ) -> Result<Option<crate::storage::TenantRecord>, TmError> {
        let filter = TenantFilter {
            realm_name: Some(realm.to_string()),
            ..TenantFilter::default()
        };
        Ok(self
            .db
            .list_tenants(&filter, 0, Some(1))?
            .0
            .into_iter()
            .next())
    }
}

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
