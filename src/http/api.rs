//! The server-facing handler of one service's API: route the request, run its handler, write
//! its errors (and the connection layer's) in the service's style, record the request's
//! metrics.

use std::sync::Arc;
use std::time::Instant;

use super::error::ErrorStyle;
use super::message::{Request, Response};
use super::metrics::Metrics;
use super::ops::is_probe;
use super::router::Router;
use super::server::Handler;

/// The server-facing handler: route, run, record metrics.
pub struct Api<C> {
    router: Router<C>,
    ctx: C,
    metrics: Arc<Metrics>,
    style: ErrorStyle,
    /// When routes marked inline may run on the I/O thread (their handlers read only memory
    /// only under this condition, e.g. no token to check against another service).
    inline_if: Option<InlineIf<C>>,
}

type InlineIf<C> = Box<dyn Fn(&C, &Request) -> bool + Send + Sync>;

impl<C: Send + Sync + 'static> Api<C> {
    pub fn new(router: Router<C>, ctx: C, metrics: Arc<Metrics>) -> Api<C> {
        Api {
            router,
            ctx,
            metrics,
            style: ErrorStyle::Message,
            inline_if: None,
        }
    }

    /// Lets the routes marked [`Router::inline`] run on the I/O thread when `cond` holds.
    pub fn with_inline_if(
        mut self,
        cond: impl Fn(&C, &Request) -> bool + Send + Sync + 'static,
    ) -> Api<C> {
        self.inline_if = Some(Box::new(cond));
        self
    }

    pub fn with_error_style(mut self, style: ErrorStyle) -> Api<C> {
        self.style = style;
        self
    }

    pub fn router(&self) -> &Router<C> {
        &self.router
    }
}

/// Methods outside this set are counted as `OTHER` (bounded label values).
fn method_label(m: &str) -> &'static str {
    match m {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    }
}

impl<C: Send + Sync + 'static> Handler for Api<C> {
    fn inline(&self, req: &Request) -> bool {
        is_probe(req)
            || self
                .inline_if
                .as_ref()
                .is_some_and(|cond| cond(&self.ctx, req))
                && self.router.is_inline(&req.method, &req.path)
    }

    fn error(&self, status: u16, message: &str) -> Response {
        self.style.refuse(status, message)
    }

    fn handle(&self, req: Request) -> Response {
        let started = Instant::now();
        let (resp, route) = self.router.dispatch(&self.ctx, &req);
        let resp = resp.unwrap_or_else(|e| self.style.render(e));
        self.metrics.observe_request(
            route,
            method_label(&req.method),
            resp.status,
            started.elapsed(),
        );
        resp
    }
}
