//! Clients of other systems behind small synchronous facades: NATS (events), the OpenID issuer (keys).

pub mod keycloak;
pub mod nats;
pub mod oidc;
pub mod tenant_manager;
pub mod tle;
pub mod uma;

use std::collections::HashMap;
use std::time::Instant;

/// Inserts into a map bounded at `max` entries: when full, the entry with the oldest time goes.
pub fn insert_bounded<V>(
    m: &mut HashMap<String, V>,
    max: usize,
    key: &str,
    value: V,
    at: impl Fn(&V) -> Instant,
) {
    if !m.contains_key(key)
        && m.len() >= max
        && let Some(oldest) = m.iter().min_by_key(|(_, v)| at(v)).map(|(k, _)| k.clone())
    {
        m.remove(&oldest);
    }
    m.insert(key.to_string(), value);
}
