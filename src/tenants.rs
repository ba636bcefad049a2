//! Tenant Manager domain services and their HTTP wiring: tenants over Keycloak realms,
//! templates, tasks, provisioning, lifecycle events.

use std::sync::Arc;

use crate::app::{App, HasOps, Ops, ops_routes};
use crate::config::Config;
use crate::http::router::Router;
use crate::http::server::Handler;

pub struct TenantCtx {
    pub ops: Arc<Ops>,
    pub config: Arc<Config>,
}

impl HasOps for TenantCtx {
    fn ops(&self) -> &Ops {
        &self.ops
    }
}

pub fn router() -> Router<TenantCtx> {
    let mut r = Router::new();
    ops_routes(&mut r);
    r
}

pub fn build(config: &Arc<Config>, ops: &Arc<Ops>) -> Result<Arc<dyn Handler>, String> {
    let ctx = TenantCtx {
        ops: Arc::clone(ops),
        config: Arc::clone(config),
    };
    Ok(Arc::new(App::new(router(), ctx, Arc::clone(&ops.metrics))))
}
