//! Tenant Manager domain services: tenants over Keycloak realms, the catalogue of templates, the
//! durable task queue and its workers, provisioning, lifecycle events. HTTP lives in
//! `http::tm_api`; the service is wired in `app::tenant_manager`.

pub mod audit;
pub mod bootstrap;
pub mod catalog;
pub mod err;
pub mod keycloak_provisioner;
pub mod limits;
pub mod provision;
pub mod service;
pub mod users;
pub mod worker;

use crate::config::Config;

/// Check what the `tenant-manager` section holds beyond its keys' types and bounds (used by
/// `check-config` and at start): the secret keys.
pub fn validate_config(config: &Config) -> Result<(), String> {
    secret_keys(config).map(|_| ())
}

/// The keys stored secrets are sealed with: `tenant-manager.secret-key` (32 bytes, base64) and
/// the decrypt-only `tenant-manager.previous-secret-keys` (a list, or comma-separated).
pub fn secret_keys(config: &Config) -> Result<crate::storage::SecretKeys, String> {
    let tm = &config.tenant_manager;
    let current = tm.secret_key.expose();
    let previous: Vec<String> = tm
        .previous_secret_keys
        .iter()
        .map(|k| k.expose().to_string())
        .collect();
    crate::storage::SecretKeys::parse(current, &previous).map_err(|e| {
        format!(
            "config: `tenant-manager.secret-key` / `tenant-manager.previous-secret-keys` \
             (KAA_TENANT_MANAGER_SECRET_KEY / KAA_TENANT_MANAGER_PREVIOUS_SECRET_KEYS): {e}"
        )
    })
}
