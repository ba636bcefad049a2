//! Errors of the Tenant Manager domain; the HTTP layer renders them as `{"error", "details"}`.

use thiserror::Error;

use crate::storage::StorageError;

#[derive(Debug, Error)]
pub enum TmError {
    /// Bad input: a message and per-field problems.
    #[error("{0}")]
    Invalid(String, Vec<(String, String)>),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    /// The entity is not at the version the request expected.
    #[error("{0}")]
    Stale(String),
    /// Keycloak failed or did not answer; nothing was changed.
    #[error("{0}")]
    Unavailable(String),
    /// A failure of the Tenant Manager itself that is not storage's (randomness, hashing, a
    /// catalogue entry that cannot be read); the detail is logged, never sent.
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl TmError {
    pub fn invalid(message: impl Into<String>) -> TmError {
        TmError::Invalid(message.into(), Vec::new())
    }

    pub fn field(field: &str, message: impl Into<String>) -> TmError {
        let m = message.into();
        TmError::Invalid(format!("`{field}`: {m}"), vec![(field.to_string(), m)])
    }
}

/// Storage errors with entity words for the kinds a client can cause.
pub fn storage(e: StorageError, entity: &str, id: &str) -> TmError {
    match e {
        StorageError::NotFound => TmError::NotFound(format!("{entity} `{id}` not found")),
        StorageError::Conflict(_) => TmError::Conflict(format!("{entity} `{id}` already exists")),
        StorageError::Stale => TmError::Stale(format!(
            "{entity} `{id}` changed meanwhile: read it again and retry"
        )),
        other => TmError::Storage(other),
    }
}
