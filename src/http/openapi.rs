//! The OpenAPI 3 documents of the services, compiled in and served as they are.

/// IAM's API (docs/openapi/iam.json).
pub const IAM_OPENAPI: &str = include_str!("../../docs/openapi/iam.json");
