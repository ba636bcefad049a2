//! Against the real Keycloak that `scripts/dev-services.sh` starts (`IAM_TEST_KEYCLOAK_URL`):
//! the project's own admin client takes a token from the master realm and creates, reads and
//! removes a realm. Skipped, with a `skipped:` line, when the variable is unset.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use kaa::clients::keycloak::{AdminCredentials, KeycloakAdmin, KeycloakError};
use serde_json::json;

#[test]
fn admin_client_creates_reads_and_removes_a_realm() {
    let Some(kc) = support::real_keycloak("real Keycloak smoke test") else {
        return;
    };
    let admin = kc.admin();
    let token = admin.token().expect("an admin token from the master realm");
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");

    let realm = support::unique("smoke").to_lowercase();
    admin
        .create_realm(&json!({"realm": realm, "enabled": true, "displayName": "Smoke"}))
        .expect("realm created");
    let read = admin.get_realm(&realm).expect("realm read back");
    assert_eq!(read["realm"], realm);
    assert_eq!(read["enabled"], true);
    assert_eq!(read["displayName"], "Smoke");

    // A second create of the same name is a conflict, as the provisioner relies on.
    let again = admin.create_realm(&json!({"realm": realm, "enabled": true}));
    assert!(
        matches!(again, Err(KeycloakError::Conflict(_))),
        "{again:?}"
    );

    admin.delete_realm(&realm).expect("realm removed");
    let gone = admin.get_realm(&realm);
    assert!(matches!(gone, Err(KeycloakError::NotFound(_))), "{gone:?}");
}

#[test]
fn wrong_admin_password_is_refused_as_unauthorized() {
    let Some(kc) = support::real_keycloak("real Keycloak refused credentials") else {
        return;
    };
    let admin = KeycloakAdmin::new(
        &kc.url,
        "master",
        AdminCredentials::Password {
            username: kc.admin_username.clone(),
            password: format!("{}-wrong", kc.admin_password),
        },
        Duration::from_secs(30),
    );
    let r = admin.get_realm("master");
    assert!(matches!(r, Err(KeycloakError::Unauthorized(_))), "{r:?}");
}
