//! The operational state both services share ([`Ops`]: storage, metrics, license, readiness,
//! the server's gauges) and the routes that read it: `GET /health` (liveness),
//! `GET /health/ready` and `GET /metrics`, added to each service's router.

use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use serde_json::json;

use super::error::ApiError;
use super::message::{Request, Response};
use super::metrics::Metrics;
use super::router::Router;
use super::server::ServerStats;
use crate::config::ServiceKind;
use crate::license::LicenseState;
use crate::storage::Database;

/// Operational state every service shares: storage, metrics, license.
pub struct Ops {
    pub kind: ServiceKind,
    pub db: Arc<Database>,
    pub metrics: Arc<Metrics>,
    pub license: RwLock<LicenseState>,
    pub started: Instant,
    /// Why the service is not ready (storage unreachable at its last check, see
    /// [`spawn_storage_watch`]); `None`: ready. `/health/ready` reads only this, never storage.
    pub not_ready_reason: RwLock<Option<String>>,
    /// The running server's gauges (set once it is bound).
    pub server: OnceLock<ServerStats>,
    /// The service's own gauges, set at scrape time.
    pub scrape: OnceLock<Scrape>,
}

/// Sets a service's own gauges when `/metrics` is read.
pub type Scrape = Box<dyn Fn(&Metrics) + Send + Sync>;

impl Ops {
    pub fn license_state(&self) -> LicenseState {
        match self.license.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

/// Anything that carries [`Ops`] gets the operational routes.
pub trait HasOps: Send + Sync + 'static {
    fn ops(&self) -> &Ops;
}

/// The probes: `GET /health` (liveness) and `GET /health/ready`. They read only memory and are
/// answered on the connection's I/O thread, never queued behind the API's handlers, so that a
/// busy replica is neither restarted nor taken out of the Service for being busy.
pub fn is_probe(req: &Request) -> bool {
    req.method == "GET" && matches!(req.path.as_str(), "/health" | "/health/ready")
}

/// `GET /health` (liveness), `GET /health/ready`, `GET /metrics`.
pub fn ops_routes<C: HasOps>(router: &mut Router<C>) {
    router.route("GET", "/health", |c: &C, _, _| {
        let ops = c.ops();
        Ok(Response::json(
            200,
            &json!({
                "status": "UP",
                "service": ops.kind.name(),
                "version": env!("CARGO_PKG_VERSION"),
                "uptimeSeconds": ops.started.elapsed().as_secs(),
                "license": ops.license_state(),
            }),
        ))
    });
    router.route("GET", "/health/ready", |c: &C, _, _| {
        let ops = c.ops();
        let reason = ops.not_ready_reason.read().ok().and_then(|r| r.clone());
        if let Some(r) = reason {
            return Err(ApiError::unavailable(format!("not ready: {r}")));
        }
        Ok(Response::json(200, &json!({ "status": "READY" })))
    });
    router.route("GET", "/metrics", |c: &C, _, _| {
        let ops = c.ops();
        let (open, idle) = ops.db.pool_state();
        ops.metrics
            .set_gauge("db_pool_connections", i64::from(open));
        ops.metrics
            .set_gauge("db_pool_idle_connections", i64::from(idle));
        let lic = ops.license_state();
        ops.metrics
            .set_gauge("license_valid", i64::from(lic.is_valid()));
        if let Some(days) = lic.days_to_expiry {
            ops.metrics.set_gauge("license_days_to_expiry", days);
        }
        if let Some(s) = ops.server.get() {
            let g = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
            ops.metrics
                .set_gauge("http_open_connections", g(s.open_connections()));
            ops.metrics
                .set_gauge("http_busy_workers", g(s.busy_workers()));
            ops.metrics
                .set_gauge("http_queued_requests", g(s.queued_requests()));
            ops.metrics.set_gauge("http_workers", g(s.workers()));
            ops.metrics
                .set_gauge("http_body_bytes_in_flight", g(s.body_bytes_in_flight()));
            let m = &ops.metrics;
            m.set_total(
                "http_busy_rejections_total",
                "Requests answered 503 because no handler slot came free in time",
                s.busy_rejections(),
            );
            m.set_total(
                "http_connections_rejected_total",
                "Connections answered 503 at server.max-connections",
                s.connections_rejected(),
            );
            m.set_total(
                "http_handler_panics_total",
                "Handlers that panicked (answered 500)",
                s.handler_panics(),
            );
        }
        if let Some(scrape) = ops.scrape.get() {
            scrape(&ops.metrics);
        }
        Ok(Response::text(
            200,
            "text/plain; version=0.0.4",
            ops.metrics.render(),
        ))
    });
}
