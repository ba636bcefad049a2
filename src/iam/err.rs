//! Errors of the IAM domain; `http::error` maps them to statuses.

use thiserror::Error;

use crate::storage::StorageError;

#[derive(Debug, Error)]
pub enum IamError {
    /// Bad input: a message and the individual problems.
    #[error("{0}")]
    Invalid(String, Vec<String>),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    /// The entity changed since the version the caller sent.
    #[error("{0}")]
    Stale(String),
    /// A service IAM depends on (Keycloak, the Tenant Manager) failed; nothing was changed.
    #[error("{0}")]
    Unavailable(String),
    /// A failure of IAM itself that is not storage's (hashing a password, a record that cannot
    /// be read back); the detail is logged, never sent.
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl IamError {
    pub fn invalid(message: impl Into<String>) -> IamError {
        IamError::Invalid(message.into(), Vec::new())
    }
}

/// The message of an entity that does not exist: its kind and KRN (or name), and the id a
/// client uses in paths when `name` is a KRN.
pub fn not_found_message(entity: &str, name: &str) -> String {
    match crate::policy::Krn::parse(name) {
        Ok(k) if !k.is_wildcard() => {
            format!("{entity} `{name}` (id `{}`) not found", k.to_id())
        }
        _ => format!("{entity} `{name}` not found"),
    }
}

/// [`not_found_message`] as a 404.
pub fn not_found(entity: &str, name: &str) -> IamError {
    IamError::NotFound(not_found_message(entity, name))
}

/// Map a storage error with entity-specific words for the kinds a client can cause.
pub fn storage(e: StorageError, entity: &str, name: &str) -> IamError {
    match e {
        StorageError::NotFound => not_found(entity, name),
        StorageError::Conflict(_) => {
            IamError::Conflict(format!("{entity} `{name}` already exists"))
        }
        StorageError::Stale => IamError::Stale(format!(
            "{entity} `{name}` changed since the version you sent: read it again and retry"
        )),
        other => IamError::Storage(other),
    }
}
