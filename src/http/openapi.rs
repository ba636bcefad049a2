//! The OpenAPI 3 documents of the services, compiled in and served as they are.

/// IAM's API (docs/openapi/iam.json).
pub const IAM_OPENAPI: &str = include_str!("../../docs/openapi/iam.json");

/// The Tenant Manager's API (docs/openapi/tenant-manager.json, written by scripts/tm-openapi.py).
pub const TM_OPENAPI: &str = include_str!("../../docs/openapi/tenant-manager.json");
