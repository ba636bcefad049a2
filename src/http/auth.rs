//! Bearer-token authentication: the `Authorization` header, the token's issuer among the ones we
//! accept, its key from the issuer's JWKS, its signature (only the key's own algorithm; `none`
//! and symmetric algorithms are refused), `exp` and `nbf` with a small leeway, `iss`, the token
//! type (access tokens only: Keycloak's ID and refresh tokens are refused), and the audience as
//! Keycloak's resource servers decide it ([`audience_accepted`]). The result is the caller's
//! identity.

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwt_simple::prelude::*;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::message::Request;
use std::sync::Arc;

use crate::clients::oidc::{Jwks, KeyLookup};
use crate::clients::tenant_manager::TenantManagerClient;
use crate::iam::caller::Identity;

/// Algorithms a token may be signed with (each only with a key of that algorithm).
const ACCEPTED_ALGS: &[&str] = &["RS256", "RS384", "RS512", "PS256", "ES256"];
/// Longest token accepted, in bytes.
const MAX_TOKEN: usize = 16 * 1024;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("authentication required: send `Authorization: Bearer <access token>`")]
    Missing,
    #[error("unexpected Authorization header format, must be `Bearer <access-token>`")]
    Malformed,
    /// The token is not acceptable; the reason is safe to show.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The issuer's keys could not be fetched.
    #[error("cannot verify tokens right now: the issuer's keys are unavailable")]
    Unavailable,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RealmAccess {
    #[serde(default)]
    roles: Vec<String>,
}

/// The Keycloak claims we read beyond the registered ones.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct KeycloakClaims {
    /// Keycloak's token type: `Bearer` for access tokens, `ID`, `Refresh`, `Logout` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    preferred_username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    azp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    realm_access: Option<RealmAccess>,
}

/// One issuer we accept tokens from, and the tenant its tokens act in.
pub struct Issuer {
    pub issuer: String,
    pub tenant: String,
    pub jwks: Jwks,
}

pub struct Authenticator {
    issuers: Vec<Issuer>,
    /// Tenants' issuers, resolved through the Tenant Manager (multitenancy on).
    tenants: Option<Arc<TenantManagerClient>>,
    /// Accepted `aud` (or `azp`) values; empty accepts any audience.
    audiences: HashSet<String>,
    leeway: Duration,
}

/// The unverified `iss` of a token, to pick the issuer whose keys verify it.
fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss")?.as_str().map(str::to_string)
}

impl Authenticator {
    pub fn new(
        issuers: Vec<Issuer>,
        audiences: HashSet<String>,
        leeway: Duration,
    ) -> Authenticator {
        Authenticator {
            issuers,
            tenants: None,
            audiences,
            leeway,
        }
    }

    /// Also accept tokens of every tenant the Tenant Manager knows.
    pub fn with_tenants(mut self, tm: Arc<TenantManagerClient>) -> Authenticator {
        self.tenants = Some(tm);
        self
    }

    /// The bearer token of a request.
    pub fn bearer(req: &Request) -> Result<&str, AuthError> {
        let Some(h) = req.header("authorization") else {
            return Err(AuthError::Missing);
        };
        let h = h.trim();
        let (scheme, token) = h.split_once(' ').ok_or(AuthError::Malformed)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
            return Err(AuthError::Malformed);
        }
        Ok(token)
    }

    pub fn authenticate(&self, req: &Request) -> Result<Identity, AuthError> {
        let token = Authenticator::bearer(req)?;
        self.verify(token)
    }

    /// Verify a token and read the identity out of it.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let invalid = |m: &str| AuthError::Invalid(m.to_string());
        if token.len() > MAX_TOKEN || token.split('.').count() != 3 {
            return Err(invalid("not a signed JWT"));
        }
        let meta = Token::decode_metadata(token).map_err(|_| invalid("unreadable token header"))?;
        let alg = meta.algorithm();
        if !ACCEPTED_ALGS.contains(&alg) {
            return Err(AuthError::Invalid(format!(
                "algorithm `{alg}` is not accepted"
            )));
        }
        let kid = meta
            .key_id()
            .ok_or_else(|| invalid("the token names no key (kid)"))?;
        let iss = unverified_issuer(token).ok_or_else(|| invalid("the token names no issuer"))?;
        let tenant_issuer;
        let (issuer_url, tenant, jwks, own_clients): (_, _, _, Vec<&str>) =
            match self.issuers.iter().find(|i| i.issuer == iss) {
                Some(i) => (i.issuer.as_str(), i.tenant.as_str(), &i.jwks, Vec::new()),
                None => {
                    let tm = self
                        .tenants
                        .as_ref()
                        .ok_or_else(|| invalid("the token's issuer is not accepted here"))?;
                    let realm = iss
                        .rsplit_once("/realms/")
                        .map(|(_, r)| r.trim_end_matches('/'))
                        .filter(|r| !r.is_empty() && !r.contains('/'))
                        .ok_or_else(|| invalid("the token's issuer is not accepted here"))?;
                    tenant_issuer = match tm.issuer_for_realm(realm) {
                        Ok(Some(t)) if t.context.issuer.as_deref() == Some(iss.as_str()) => t,
                        Ok(_) => return Err(invalid("the token's issuer is not accepted here")),
                        Err(e) => {
                            log::warn!("auth: {e}");
                            return Err(AuthError::Unavailable);
                        }
                    };
                    (
                        iss.as_str(),
                        tenant_issuer.context.tenant_id.as_str(),
                        &tenant_issuer.jwks,
                        std::iter::once(tenant_issuer.context.client_id.as_str())
                            .chain(tenant_issuer.context.frontend_client_id.as_deref())
                            .collect(),
                    )
                }
            };
        let key = match jwks.key(kid) {
            Ok(KeyLookup::Found(k)) => k,
            Ok(KeyLookup::Unknown) => {
                return Err(invalid("the token is signed with an unknown key"));
            }
            Err(e) => {
                log::warn!("auth: {e}");
                return Err(AuthError::Unavailable);
            }
        };
        if key.algorithm() != alg {
            return Err(invalid("the token's algorithm does not match its key"));
        }
        let options = VerificationOptions {
            allowed_issuers: Some(HashSet::from([issuer_url.to_string()])),
            time_tolerance: Some(jwt_simple::prelude::Duration::from_secs(
                self.leeway.as_secs(),
            )),
            max_token_length: Some(MAX_TOKEN),
            ..Default::default()
        };
        let claims = key
            .verify::<KeycloakClaims>(token, options)
            .map_err(|e| AuthError::Invalid(describe(&e)))?;
        if claims.expires_at.is_none() {
            return Err(invalid("the token has no expiry (exp)"));
        }
        let subject = claims
            .subject
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid("the token has no subject (sub)"))?;
        let custom = claims.custom;
        if let Some(typ) = &custom.typ
            && !typ.eq_ignore_ascii_case("bearer")
        {
            return Err(AuthError::Invalid(format!(
                "a `{typ}` token is not an access token"
            )));
        }
        let mut audiences = self.audiences.clone();
        // A tenant's tokens may also be meant for its own backend client, or be its web UI's.
        audiences.extend(own_clients.iter().map(|c| c.to_string()));
        let aud: Vec<String> = claims
            .audiences
            .as_ref()
            .map(|a| a.clone().into_set().into_iter().collect())
            .unwrap_or_default();
        if !audience_accepted(&aud, custom.azp.as_deref(), &audiences) {
            return Err(invalid("the token's audience is not accepted here"));
        }
        Ok(Identity {
            tenant: tenant.to_string(),
            issuer: issuer_url.to_string(),
            subject,
            username: custom.preferred_username,
            client: custom.azp,
            roles: custom.realm_access.map(|r| r.roles).unwrap_or_default(),
        })
    }
}

/// The audiences a service accepts: `security.audiences`, or its own client id
/// (`security.client-id`) when none are listed. Empty only when neither is set: then no token
/// passes the audience check.
pub fn token_audiences(configured: &[String], client_id: &str) -> HashSet<String> {
    let mut audiences: HashSet<String> = configured.iter().cloned().collect();
    if audiences.is_empty() && !client_id.is_empty() {
        audiences.insert(client_id.to_string());
    }
    audiences
}

/// Keycloak's own clients, which Keycloak puts into `aud` for the roles a token carries (the
/// account console's for every user with account roles, `realm-management` for a service account
/// that manages users). They name no resource server of ours or of another service.
const KEYCLOAK_OWN_AUDIENCES: &[&str] = &["account", "realm-management", "broker"];

/// Whether a token with audiences `aud`, issued to client `azp`, is meant for this service, whose
/// accepted audiences (its own client ids, and the clients of the tenant's realm) are `accepted`.
/// As Keycloak's resource servers decide it: a token is ours when one of its audiences is ours;
/// a token without an audience of any resource server (none, or only Keycloak's own clients such
/// as `account`) is ours when it was issued to one of our clients (the web UI's token, a service
/// account's). A token meant for another service (`aud: billing`) is refused whoever got it.
/// Nothing is accepted when `accepted` is empty.
pub fn audience_accepted(aud: &[String], azp: Option<&str>, accepted: &HashSet<String>) -> bool {
    if aud.iter().any(|a| accepted.contains(a)) {
        return true;
    }
    aud.iter()
        .all(|a| KEYCLOAK_OWN_AUDIENCES.contains(&a.as_str()))
        && azp.is_some_and(|c| accepted.contains(c))
}

/// A short, safe reason for a failed verification.
fn describe(e: &jwt_simple::Error) -> String {
    let text = e.to_string().to_lowercase();
    if text.contains("expired") {
        "the token has expired".into()
    } else if text.contains("not valid yet") || text.contains("clock drift") {
        "the token is not valid yet".into()
    } else if text.contains("issuer") {
        "the token's issuer is not accepted here".into()
    } else if text.contains("signature") || text.contains("verification") {
        "the token's signature does not verify".into()
    } else {
        "the token does not verify".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_forms() {
        let r = |h: Option<&str>| {
            let mut req = Request::new("GET", "/");
            if let Some(h) = h {
                req = req.with_header("Authorization", h);
            }
            Authenticator::bearer(&req).map(str::to_string)
        };
        assert_eq!(r(None), Err(AuthError::Missing));
        assert_eq!(r(Some("Basic abc")), Err(AuthError::Malformed));
        assert_eq!(r(Some("Bearer")), Err(AuthError::Malformed));
        assert_eq!(r(Some("Bearer   ")), Err(AuthError::Malformed));
        assert_eq!(r(Some("Bearer a b")), Err(AuthError::Malformed));
        assert_eq!(r(Some("bearer x.y.z")), Ok("x.y.z".to_string()));
    }

    #[test]
    fn audiences_are_decided_as_keycloak_resource_servers_do() {
        let ours: HashSet<String> = ["kaa-iam", "web-ui"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Meant for us.
        assert!(audience_accepted(&v(&["kaa-iam"]), Some("other"), &ours));
        assert!(audience_accepted(&v(&["billing", "kaa-iam"]), None, &ours));
        // Our web UI's own token (Keycloak's default audience only) and a service account's.
        assert!(audience_accepted(&v(&["account"]), Some("web-ui"), &ours));
        assert!(audience_accepted(&v(&[]), Some("kaa-iam"), &ours));
        assert!(audience_accepted(
            &v(&["realm-management", "account"]),
            Some("kaa-iam"),
            &ours
        ));
        // Meant for another service, whoever got it; or got by a client we do not know.
        assert!(!audience_accepted(&v(&["billing"]), Some("kaa-iam"), &ours));
        assert!(!audience_accepted(
            &v(&["account", "billing"]),
            Some("web-ui"),
            &ours
        ));
        assert!(!audience_accepted(
            &v(&["account"]),
            Some("stranger"),
            &ours
        ));
        assert!(!audience_accepted(&v(&[]), None, &ours));
        // Nothing configured: nothing accepted.
        assert!(!audience_accepted(
            &v(&["kaa-iam"]),
            Some("kaa-iam"),
            &HashSet::new()
        ));
    }
}
