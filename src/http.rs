//! HTTP layer: our connection layer and worker pool, the router, JSON helpers, metrics and the
//! one error-to-status mapping. Never SQL, never a concrete backend.

pub mod api;
pub mod auth;
pub mod error;
pub mod iam_api;
pub mod json;
pub mod message;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod realm_auth;
pub mod router;
pub mod server;
pub mod tm_api;
