//! IAM users backed by Keycloak users (DESIGN.md §3.8): where a tenant has a Keycloak realm,
//! creating an IAM user creates the realm's user (password, enabled, required actions, the
//! verify-e-mail mail) and keeps its id as `authID`; deleting and updating follow. Calls use the
//! tenant's backend client, whose service account the Tenant Manager gives the realm's
//! user-management roles; its admin token is cached per tenant.
//!
//! Where a realm comes from: with multitenancy, the tenant's security context from the Tenant
//! Manager (private Keycloak URL, realm, backend client and secret); without, the system tenant's
//! issuer (`security.issuer.private-url`) and `security.client-id`/`client-secret`. Security
//! off, or `security.keycloak-users: false`: users are local (an Argon2 hash of the password).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::caller::SYSTEM_TENANT;
use super::err::IamError;
use crate::clients::keycloak::{AdminCredentials, KeycloakAdmin, KeycloakError, NewUser};
use crate::clients::tenant_manager::{RealmAccess, TenantManagerClient};

/// How long a tenant's admin client (and its cached token) is kept before the realm access is
/// read again.
const CLIENT_TTL: Duration = Duration::from_secs(300);
/// Each Keycloak call must finish within this (connecting included).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Where realms are found.
pub enum RealmSource {
    /// No realm is known: users are local.
    None,
    /// One realm for the system tenant (multitenancy off).
    Static(RealmAccess),
    /// The Tenant Manager's security contexts, plus an optional static realm for the system
    /// tenant when the Tenant Manager does not know it.
    TenantManager(Arc<TenantManagerClient>, Option<RealmAccess>),
}

/// The realm of one tenant, ready for calls.
#[derive(Clone)]
pub struct TenantRealm {
    pub admin: Arc<KeycloakAdmin>,
    pub realm: String,
    pub frontend_client_id: Option<String>,
    pub backend_client_id: String,
}

/// What a new Keycloak user gets.
pub struct NewRealmUser<'a> {
    pub username: &'a str,
    pub email: Option<&'a str>,
    pub first_name: Option<&'a str>,
    pub last_name: Option<&'a str>,
    pub enabled: bool,
    pub password: &'a str,
    pub required_actions: Vec<String>,
    /// Send the `VERIFY_EMAIL` mail, whose link leads here.
    pub verify_email_redirect: Option<&'a str>,
    pub send_verify_email: bool,
}

pub struct RealmUsers {
    source: RealmSource,
    clients: Mutex<HashMap<String, (Option<TenantRealm>, Instant)>>,
}

/// A Keycloak failure as the API shows it: its conflicts and refusals are the caller's, anything
/// else makes the call unavailable (nothing was changed, retry later).
pub fn keycloak_error(what: &str, e: KeycloakError) -> IamError {
    match e {
        KeycloakError::Conflict(m) => IamError::Conflict(format!("Keycloak: {what}: {m}")),
        KeycloakError::Server(400, m) => IamError::invalid(format!("Keycloak refused {what}: {m}")),
        KeycloakError::Unauthorized(m) => IamError::Unavailable(format!(
            "Keycloak refused IAM's client while trying to {what} ({m}); the tenant's backend \
             client needs the realm-management roles manage-users and view-users"
        )),
        other => IamError::Unavailable(format!("Keycloak: cannot {what}: {other}")),
    }
}

impl RealmUsers {
    pub fn new(source: RealmSource) -> RealmUsers {
        RealmUsers {
            source,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The static realm of the system tenant from its issuer URL (`{base}/realms/{realm}`).
    pub fn static_access(
        issuer_url: &str,
        client_id: &str,
        client_secret: &crate::config::Secret,
    ) -> Option<RealmAccess> {
        let (base, realm) = issuer_url.trim_end_matches('/').rsplit_once("/realms/")?;
        if base.is_empty() || realm.is_empty() || client_id.is_empty() || client_secret.is_empty() {
            return None;
        }
        Some(RealmAccess {
            keycloak_url: base.to_string(),
            realm: realm.to_string(),
            client_id: client_id.to_string(),
            client_secret: client_secret.clone(),
            frontend_client_id: None,
        })
    }

    /// Drop what is cached about a tenant (its `updated` event arrived).
    pub fn forget(&self, tenant: &str) {
        if let Ok(mut m) = self.clients.lock() {
            m.remove(tenant);
        }
    }

    /// The realm of `tenant`, if it has one.
    pub fn realm(&self, tenant: &str) -> Result<Option<TenantRealm>, IamError> {
        if let Some((r, _)) = self.clients.lock().ok().and_then(|m| {
            m.get(tenant)
                .filter(|(_, at)| at.elapsed() < CLIENT_TTL)
                .cloned()
        }) {
            return Ok(r);
        }
        let access = match &self.source {
            RealmSource::None => None,
            RealmSource::Static(a) => (tenant == SYSTEM_TENANT).then(|| a.clone()),
            RealmSource::TenantManager(tm, fallback) => match tm.realm_access(tenant) {
                Ok(Some(a)) => Some(a),
                Ok(None) if tenant == SYSTEM_TENANT => fallback.clone(),
                Ok(None) => None,
                Err(e) => {
                    return Err(IamError::Unavailable(format!(
                        "cannot read the realm of tenant `{tenant}`: {e}"
                    )));
                }
            },
        };
        let realm = access.map(|a| TenantRealm {
            admin: Arc::new(KeycloakAdmin::new(
                &a.keycloak_url,
                &a.realm,
                AdminCredentials::Client {
                    client_id: a.client_id.clone(),
                    client_secret: a.client_secret.expose().to_string(),
                },
                CALL_TIMEOUT,
            )),
            realm: a.realm,
            frontend_client_id: a.frontend_client_id,
            backend_client_id: a.client_id,
        });
        if let Ok(mut m) = self.clients.lock() {
            if m.len() > 10_000 {
                m.clear();
            }
            m.insert(tenant.to_string(), (realm.clone(), Instant::now()));
        }
        Ok(realm)
    }
}

impl TenantRealm {
    /// Create the user (and send its verify-e-mail mail); returns its id. When the mail cannot be
    /// sent the user is removed again, so that a failed call leaves nothing behind.
    pub fn create(&self, u: &NewRealmUser<'_>) -> Result<String, IamError> {
        let rep = NewUser {
            username: u.username.to_string(),
            email: u.email.map(String::from),
            first_name: u.first_name.map(String::from),
            last_name: u.last_name.map(String::from),
            enabled: u.enabled,
            email_verified: Some(false),
            credentials: Vec::new(),
            required_actions: u.required_actions.clone(),
            attributes: None,
        }
        .with_password(u.password, false);
        let id = self
            .admin
            .create_user_once(&self.realm, &rep)
            .map_err(|e| keycloak_error("create the user", e))?;
        if u.send_verify_email {
            let client = self
                .frontend_client_id
                .as_deref()
                .unwrap_or(&self.backend_client_id);
            let sent = self.admin.execute_actions_email(
                &self.realm,
                &id,
                &["VERIFY_EMAIL"],
                u.verify_email_redirect.map(|_| client),
                u.verify_email_redirect,
                None,
            );
            if let Err(e) = sent {
                self.remove_quietly(&id);
                return Err(keycloak_error("send the verify-e-mail mail", e));
            }
        }
        Ok(id)
    }

    /// Delete the user; one that is gone already counts as deleted.
    pub fn delete(&self, id: &str) -> Result<(), IamError> {
        match self.admin.delete_user(&self.realm, id) {
            Ok(()) | Err(KeycloakError::NotFound(_)) => Ok(()),
            Err(e) => Err(keycloak_error("delete the user", e)),
        }
    }

    /// Undo a create whose second half failed; a failure is logged (the user stays in Keycloak
    /// without an IAM user, which grants nothing in IAM).
    pub fn remove_quietly(&self, id: &str) {
        if let Err(e) = self.delete(id) {
            log::warn!(
                "keycloak: user `{id}` of realm `{}` could not be removed after a failed create: {e}",
                self.realm
            );
        }
    }

    /// Change the given fields of the user (`UserRepresentation` field names).
    pub fn update(&self, id: &str, rep: &Value) -> Result<(), IamError> {
        self.admin
            .update_user(&self.realm, id, rep)
            .map_err(|e| keycloak_error("update the user", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn the_static_realm_comes_from_the_issuer_url() {
        let s = Secret::new("s3cret");
        let a = RealmUsers::static_access("http://kc:8080/auth/realms/kaa/", "iam", &s).unwrap();
        assert_eq!(a.keycloak_url, "http://kc:8080/auth");
        assert_eq!(a.realm, "kaa");
        assert_eq!(a.client_id, "iam");
        assert!(RealmUsers::static_access("http://kc:8080/", "iam", &s).is_none());
        assert!(RealmUsers::static_access("http://kc/realms/kaa", "", &s).is_none());
        assert!(
            RealmUsers::static_access("http://kc/realms/kaa", "c", &Secret::default()).is_none()
        );
    }

    #[test]
    fn keycloak_errors_map_to_what_the_caller_can_do() {
        assert!(matches!(
            keycloak_error("x", KeycloakError::Conflict("User exists with same username".into())),
            IamError::Conflict(m) if m.contains("User exists")
        ));
        assert!(matches!(
            keycloak_error("x", KeycloakError::Server(400, "bad".into())),
            IamError::Invalid(..)
        ));
        assert!(matches!(
            keycloak_error("x", KeycloakError::Server(500, "boom".into())),
            IamError::Unavailable(_)
        ));
        assert!(matches!(
            keycloak_error("x", KeycloakError::Unreachable("refused".into())),
            IamError::Unavailable(_)
        ));
    }
}
