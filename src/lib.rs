//! Kaa IAM and Tenant Manager: one library behind the `iam` and `tenant-manager` binaries.
//!
//! Layering (docs/DECISIONS.md and DESIGN): `http -> iam/tenants -> policy`, `iam/tenants -> storage
//! and client traits`; only `app` and `src/bin` name concrete backends.

pub mod config;
pub mod http;
pub mod policy;
pub mod storage;
