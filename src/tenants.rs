//! Tenant Manager domain services and their wiring: tenants over Keycloak realms, the catalogue
//! of templates, the durable task queue and its workers, provisioning, lifecycle events.

pub mod bootstrap;
pub mod catalog;
pub mod err;
pub mod provision;
pub mod service;
pub mod worker;

use std::sync::Arc;

use std::time::Duration;

use crate::app::{App, ErrorStyle, HasOps, Ops};
use crate::clients::oidc::Jwks;
use crate::clients::uma::UmaClient;
use crate::config::Config;
use crate::http::auth::{Authenticator, Issuer};
use crate::http::server::Handler;
use crate::storage::KeycloakServerRecord;
use provision::{LocalProvisioner, ProvisionError, Provisioner, Provisioners};
use service::{Tm, TmSettings};
use worker::Signal;

pub struct TenantCtx {
    pub ops: Arc<Ops>,
    pub config: Arc<Config>,
    pub tm: Arc<Tm>,
    /// Wakes the workers and the outbox publisher after a write.
    pub signal: Arc<Signal>,
    /// Token and scope checks (security on): tokens of the system realm, scopes of
    /// `kaa-system` decided by Keycloak.
    pub auth: Option<TmAuth>,
}

pub struct TmAuth {
    pub tokens: Authenticator,
    pub scopes: UmaClient,
}

impl HasOps for TenantCtx {
    fn ops(&self) -> &Ops {
        &self.ops
    }
}

/// Tenants without a Keycloak server are provisioned locally; a server needs the Keycloak
/// admin client.
struct DefaultProvisioners {
    local: Arc<LocalProvisioner>,
}

impl Provisioners for DefaultProvisioners {
    fn for_server(
        &self,
        server: Option<&KeycloakServerRecord>,
    ) -> Result<Arc<dyn Provisioner>, ProvisionError> {
        match server {
            None => Ok(Arc::clone(&self.local) as Arc<dyn Provisioner>),
            Some(s) => Err(ProvisionError::Fatal(format!(
                "Keycloak server {} ({}): this build has no Keycloak admin client",
                s.id, s.url
            ))),
        }
    }
}

/// With security on: tokens from the system realm only, scopes asked of Keycloak.
fn tm_auth(config: &Config) -> Result<Option<TmAuth>, String> {
    let s = &config.security;
    if !s.enabled {
        return Ok(None);
    }
    if s.issuer_public_url.is_empty() || s.client_id.is_empty() {
        return Err("config: the Tenant Manager with security on needs \
                    `security.issuer.public-url` and `security.client-id` (the system realm's \
                    backend client, the audience of scope decisions)"
            .into());
    }
    let keys_from = if s.issuer_private_url.is_empty() {
        &s.issuer_public_url
    } else {
        &s.issuer_private_url
    };
    let jwks = Jwks::new(
        &Jwks::certs_url(keys_from),
        Duration::from_secs(5),
        s.jwks_refresh_interval,
    );
    let tokens = Authenticator::new(
        vec![Issuer {
            issuer: s.issuer_public_url.clone(),
            tenant: "kaa".into(),
            jwks,
        }],
        s.audiences.iter().cloned().collect(),
        s.leeway,
    );
    let ttl = config
        .tenant_manager
        .get("auth")
        .and_then(|a| a.get("decision-cache-seconds"))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(30);
    Ok(Some(TmAuth {
        tokens,
        scopes: UmaClient::new(
            keys_from,
            &s.client_id,
            "kaa-system",
            Duration::from_secs(ttl),
        ),
    }))
}

/// Wire the Tenant Manager: bootstrap, workers, outbox publisher, API.
pub fn build(config: &Arc<Config>, ops: &Arc<Ops>) -> Result<Arc<dyn Handler>, String> {
    let auth = tm_auth(config)?;
    let settings = TmSettings::from_config(config)?;
    let provisioners = Arc::new(DefaultProvisioners {
        local: Arc::new(LocalProvisioner {
            db: Arc::clone(&ops.db),
        }),
    });
    let tm = Arc::new(Tm {
        db: Arc::clone(&ops.db),
        settings,
        provisioners,
    });
    bootstrap::run(&tm).map_err(|e| format!("bootstrap: {e}"))?;
    let signal = Signal::new();
    worker::spawn_workers(&tm, &signal);
    if !config.nats.urls.is_empty() {
        worker::spawn_publisher(
            &tm,
            &signal,
            config.nats.urls.clone(),
            config.nats.username.clone(),
            config.nats.password.expose().to_string(),
        );
    }
    let ctx = TenantCtx {
        ops: Arc::clone(ops),
        config: Arc::clone(config),
        tm,
        signal,
        auth,
    };
    Ok(Arc::new(
        App::new(crate::http::tm_api::router(), ctx, Arc::clone(&ops.metrics))
            .with_error_style(ErrorStyle::ErrorDetails),
    ))
}
