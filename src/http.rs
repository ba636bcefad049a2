//! HTTP layer: our connection layer and worker pool, the router, JSON helpers, the one
//! error-to-status mapping. Never SQL, never a concrete backend.

pub mod message;
pub mod server;
