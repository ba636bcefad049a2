//! IAM domain services: users, groups, policies, resources, pools and authorization decisions.
//! Calls the storage traits and the policy engine only; HTTP lives in `http::iam_api`, the
//! wiring in `app::iam`.

pub mod audit;
pub mod caller;
pub mod decision_log;
pub mod err;
pub mod evaluate;
pub mod events;
pub mod generate;
pub mod model;
pub mod notices;
pub mod realm_users;
pub mod replay;
pub mod resources;
pub mod service;
pub mod state;
pub mod users;

use crate::config::Config;

pub use caller::Caller;
pub use err::IamError;
pub use service::Iam;

/// Check the `iam` section of the configuration (used by `check-config` and at start).
pub fn validate_config(config: &Config) -> Result<(), String> {
    service::parse_iam_config(&config.iam)?;
    decision_log::settings(&config.iam.decision_log)?;
    audit::trail_config(&config.iam, !config.nats.urls.is_empty()).map(|_| ())
}
