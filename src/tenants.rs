//! Tenant Manager domain services and their wiring: tenants over Keycloak realms, the catalogue
//! of templates, the durable task queue and its workers, provisioning, lifecycle events.

pub mod bootstrap;
pub mod catalog;
pub mod err;
pub mod provision;
pub mod service;
pub mod worker;

use std::sync::Arc;

use crate::app::{App, ErrorStyle, HasOps, Ops};
use crate::config::Config;
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

/// Wire the Tenant Manager: bootstrap, workers, outbox publisher, API.
pub fn build(config: &Arc<Config>, ops: &Arc<Ops>) -> Result<Arc<dyn Handler>, String> {
    if config.security.enabled {
        // Refuse rather than serve tenant secrets unauthenticated.
        return Err(
            "config: `security.enabled` is true but this build's Tenant Manager has no \
                    scope checks yet; run it with security off only on a trusted network"
                .into(),
        );
    }
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
    };
    Ok(Arc::new(
        App::new(crate::http::tm_api::router(), ctx, Arc::clone(&ops.metrics))
            .with_error_style(ErrorStyle::ErrorDetails),
    ))
}
