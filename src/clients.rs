//! Clients of other systems behind small synchronous facades: NATS (events), the OpenID issuer (keys).

pub mod keycloak;
pub mod nats;
pub mod oidc;
pub mod tenant_manager;
pub mod tle;
pub mod uma;
