//! Errors of configuration loading: each names the key, the variable that set it and the problem.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file at an explicitly set path could not be read.
    #[error("config: cannot read `{path}`: {message}")]
    Unreadable { path: String, message: String },
    /// The file is not valid YAML or not a mapping.
    #[error("config: `{path}` is not a valid config file: {message}")]
    File { path: String, message: String },
    /// A value has the wrong type or is out of range.
    #[error("config: `{key}`{}: `{value}` is invalid: {problem}", env.as_ref().map(|e| format!(" (from {e})")).unwrap_or_default())]
    Invalid {
        key: String,
        env: Option<String>,
        value: String,
        problem: String,
    },
    /// A key the service's own section (`iam`, `tenant-manager`) does not have.
    #[error("config: `{key}` is not a key of the `{section}` section (a typo?)")]
    UnknownKey { key: String, section: String },
}
