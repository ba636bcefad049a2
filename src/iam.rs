//! IAM domain services and their HTTP wiring: users, groups, policies, resources, pools and
//! authorization decisions. Calls the storage traits and the policy engine only.

use std::sync::Arc;

use crate::app::{App, HasOps, Ops, ops_routes};
use crate::config::Config;
use crate::http::router::Router;
use crate::http::server::Handler;

/// Everything an IAM handler can reach.
pub struct IamCtx {
    pub ops: Arc<Ops>,
    pub config: Arc<Config>,
}

impl HasOps for IamCtx {
    fn ops(&self) -> &Ops {
        &self.ops
    }
}

/// Check the `iam` section of the configuration (used by `check-config` and at start).
pub fn validate_config(_config: &Config) -> Result<(), String> {
    Ok(())
}

/// The IAM router: operational routes and the `/api/v1` surface.
pub fn router() -> Router<IamCtx> {
    let mut r = Router::new();
    ops_routes(&mut r);
    r
}

/// Wire the IAM service over opened storage.
pub fn build(config: &Arc<Config>, ops: &Arc<Ops>) -> Result<Arc<dyn Handler>, String> {
    validate_config(config)?;
    let ctx = IamCtx {
        ops: Arc::clone(ops),
        config: Arc::clone(config),
    };
    Ok(Arc::new(App::new(router(), ctx, Arc::clone(&ops.metrics))))
}
