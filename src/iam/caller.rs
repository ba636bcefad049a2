//! Who is calling: the tenant the call acts in and the principal set decisions are made for.
//! With security off every call acts as the system tenant's administrator.

use crate::policy::Krn;

/// The system tenant of a Kaa installation.
pub const SYSTEM_TENANT: &str = "kaa";

#[derive(Debug, Clone)]
pub struct Caller {
    /// The caller's own tenant.
    pub tenant: String,
    /// The caller's principal KRN (a user, or a service account), when known.
    pub principal: Option<Krn>,
    /// Realm roles as `krn:iam:<tenant>::role/<name>`.
    pub roles: Vec<Krn>,
    /// Security is off: every action is allowed.
    pub unrestricted: bool,
}

impl Caller {
    /// The caller of an unsecured (embedded, development) deployment.
    pub fn system_admin() -> Caller {
        Caller {
            tenant: SYSTEM_TENANT.to_string(),
            principal: None,
            roles: Vec::new(),
            unrestricted: true,
        }
    }

    pub fn is_system(&self) -> bool {
        self.tenant == SYSTEM_TENANT
    }
}

/// Who a verified access token says the caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub tenant: String,
    pub issuer: String,
    pub subject: String,
    pub username: Option<String>,
    pub client: Option<String>,
    pub roles: Vec<String>,
}
