//! Storage errors as kinds callers can branch on; the detail is for logs, never for clients.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StorageError {
    /// The row does not exist.
    #[error("not found")]
    NotFound,
    /// A unique key or reference is violated (duplicate name, missing parent).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The row changed since the caller read it (optimistic version check).
    #[error("stale version")]
    Stale,
    /// The database cannot be reached or is overloaded; retrying later may succeed.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The server refused the configured connection (credentials, database name): retrying
    /// cannot help, the configuration must change.
    #[error("{0}")]
    Refused(String),
    /// Anything else: a bug or a schema mismatch.
    #[error("storage internal error: {0}")]
    Internal(String),
}

impl StorageError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StorageError::Unavailable(_))
    }
}
