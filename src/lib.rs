//! Kaa IAM and Tenant Manager: one library behind the `iam` and `tenant-manager` binaries.
//!
//! Layering: `http -> iam/tenants -> policy`, `iam/tenants -> storage and client traits`; only
//! `app` (the composition root) names concrete backends.

pub mod app;
pub mod audit;
pub mod clients;
pub mod clock;
pub mod config;
pub mod http;
pub mod iam;
pub mod license;
pub mod logging;
pub mod outbox;
pub mod password;
pub mod policy;
pub mod storage;
pub mod tenants;
