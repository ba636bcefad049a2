//! IAM domain services: users, groups, policies, resources, pools and authorization decisions.
//! Calls the storage traits and the policy engine only; HTTP lives in `http::iam_api`.

pub mod caller;
pub mod err;
pub mod evaluate;
pub mod model;
pub mod resources;
pub mod service;
pub mod state;
pub mod users;

use std::sync::Arc;
use std::time::Duration;

use crate::app::{App, HasOps, Ops};
use crate::config::Config;
use crate::http::server::Handler;

pub use caller::Caller;
pub use err::IamError;
pub use service::Iam;

/// Everything an IAM handler can reach.
pub struct IamCtx {
    pub ops: Arc<Ops>,
    pub config: Arc<Config>,
    pub iam: Arc<Iam>,
}

impl HasOps for IamCtx {
    fn ops(&self) -> &Ops {
        &self.ops
    }
}

/// Check the `iam` section of the configuration (used by `check-config` and at start).
pub fn validate_config(config: &Config) -> Result<(), String> {
    service::parse_iam_config(&config.iam).map(|_| ())
}

/// Wire the IAM service over opened storage: sync base policies, load the decision index, keep
/// it in step with the database, and serve the API.
pub fn build(config: &Arc<Config>, ops: &Arc<Ops>) -> Result<Arc<dyn Handler>, String> {
    if config.security.enabled {
        // Refuse rather than serve an open API to a deployment that asked for protection.
        return Err(
            "config: `security.enabled` is true but this build serves IAM without token \
             validation yet; run with security off only where the network is trusted"
                .into(),
        );
    }
    let iam = Arc::new(Iam::new(
        Arc::clone(&ops.db),
        &config.iam,
        config.server.max_page_size,
    )?);
    iam.sync_base_policies()
        .map_err(|e| format!("base policies: {e}"))?;
    let started = std::time::Instant::now();
    let tenants = iam
        .state
        .load_all(&ops.db)
        .map_err(|e| format!("index: {e}"))?;
    log::info!(
        "index: {tenants} tenants loaded in {} ms",
        started.elapsed().as_millis()
    );
    spawn_refresher(&iam, Duration::from_millis(500));
    let ctx = IamCtx {
        ops: Arc::clone(ops),
        config: Arc::clone(config),
        iam,
    };
    Ok(Arc::new(App::new(
        crate::http::iam_api::router(),
        ctx,
        Arc::clone(&ops.metrics),
    )))
}

/// Poll the per-tenant revisions so writes of other replicas show up within a second.
fn spawn_refresher(iam: &Arc<Iam>, every: Duration) {
    let weak = Arc::downgrade(iam);
    let _ = std::thread::Builder::new()
        .name("index-refresh".into())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                let Some(iam) = weak.upgrade() else { return };
                match iam.state.refresh(&iam.db) {
                    Ok(0) => {}
                    Ok(n) => log::debug!("index: {n} tenants reloaded after writes elsewhere"),
                    Err(e) => log::debug!("index: refresh skipped: {e}"),
                }
            }
        });
}
