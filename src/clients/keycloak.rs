//! Keycloak's Admin REST API, blocking, on ureq: one client ([`KeycloakAdmin`]) per Keycloak
//! server. `url` is the server's address as the operator gives it, with the `/auth` context path
//! of Keycloak before 17 or without it.
//!
//! Every call of `spec/tenant-manager.md` §5 has a typed method here; representations are JSON
//! (templates are free-form Keycloak representations). Answers become a [`KeycloakError`] by kind
//! (404, 409, 401/403, any other status, no answer at all), never a panic; bodies are read up to
//! a bound, and error messages carry at most a short excerpt of what Keycloak said.
//!
//! `transport` holds the client itself (HTTP, the admin token and its renewal, the retry of a
//! 401, errors by kind); each other file adds the typed calls of one part of the API.

mod authz;
mod clients;
mod idps;
mod realms;
mod roles;
mod transport;
mod users;

pub use transport::{AdminCredentials, KeycloakAdmin, KeycloakError, encode, object_id};
pub use users::{NewUser, REQUEST_ATTRIBUTE, UserQuery};
