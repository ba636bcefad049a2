//! Bootstrap, idempotent at every start: version 1 of every template, the scopes, roles and
//! default resources of a Kaa realm and their mappings, the default Keycloak server from the
//! configuration, and the system tenant (whose realm the installer made: never provisioned).
//! It runs under the start-up lock, and every write is insert-if-absent as well, so that
//! replicas starting together, or beside a replica of an earlier release, all start.

use serde_json::{Value, json};

use super::err::TmError;
use super::service::{AVAILABLE, Tm, random_hex, uuid4};
use crate::clock::now_ms;
use crate::storage::{
    CatalogRecord, CatalogStore, KeycloakServerStore, StorageError, TenantRecord, TenantStore,
};

/// Scopes of a tenant realm's resource server (Kaa 1.x names, and `tenant:audit:read`: the
/// tenant's administrator reads its Tenant Manager trail).
pub const SCOPES: &[&str] = &[
    "tenant:application:create",
    "tenant:audit:read",
    "tenant:basic-credentials:create",
    "tenant:basic-credentials:read",
    "tenant:basic-credentials:update",
    "tenant:x509-credentials:create",
    "tenant:x509-credentials:read",
    "tenant:x509-credentials:update",
    "tenant:ttn-app-integration:create",
    "tenant:ttn-app-integration:read",
    "endpoint:read",
    "endpoint:update",
    "endpoint:delete",
    "application:read",
    "application:update",
    "application:delete",
    "application:endpoint:create",
    "application:endpoint-filter:create",
    "application:endpoint-filter:read",
    "application:endpoint-filter:update",
    "application:endpoint-filter:delete",
    "application:endpoints-metadata-keys:read",
    "application:endpoint-command:read",
    "application:timeseries-config:read",
    "application:endpoint-config:read",
    "application:endpoint-config:update",
    "application:endpoint-config:delete",
    "application:software:read",
    "application:software:update",
    "application:software:delete",
    "application:ttn-app-integration:create",
    "dashboard:read",
    "ttn-app-integration:read",
    "ttn-app-integration:update",
    "ttn-app-integration:delete",
    "ttn-app-integration:ttn-device-integration:create",
    "ttn-device-integration:read",
    "ttn-device-integration:update",
    "ttn-device-integration:delete",
];

/// Realm roles and the scope prefixes each grants.
pub const ROLES: &[(&str, &str, &[&str])] = &[
    ("tenant-admin", "Administers the tenant", &[""]),
    (
        "application-admin",
        "Manages applications and their endpoints",
        &["application:", "endpoint:", "tenant:application:"],
    ),
    ("dashboard-admin", "Manages dashboards", &["dashboard:"]),
    (
        "analytics-admin",
        "Manages analytics",
        &["application:timeseries-config:"],
    ),
    (
        "analytics-reader",
        "Reads analytics",
        &["application:timeseries-config:read"],
    ),
];

/// Catalogue kind and id of the installation id made at the first start.
const INSTALLATION_KIND: &str = "installation";
const INSTALLATION_ENTRY: &str = "id";

/// The id of this Tenant Manager installation, which marks the realms it makes: the configured
/// `tenant-manager.installation-id`, else the one made (a random UUID) at the first start against
/// this database and kept there, so every replica and every restart uses the same one.
pub fn installation_id(
    db: &crate::storage::Database,
    configured: Option<&str>,
) -> Result<String, TmError> {
    if let Some(id) = configured {
        return Ok(id.to_string());
    }
    let now = now_ms();
    db.ensure_entries(&[CatalogRecord {
        kind: INSTALLATION_KIND.into(),
        id: INSTALLATION_ENTRY.into(),
        body: json!({ "id": uuid4()? }).to_string(),
        created_ms: now,
        updated_ms: now,
    }])?;
    // Another replica starting at the same moment may have written first: its id stands.
    let stored = db.get_entry(INSTALLATION_KIND, INSTALLATION_ENTRY)?;
    serde_json::from_str::<Value>(&stored.body)
        .ok()
        .and_then(|b| b.get("id").and_then(Value::as_str).map(str::to_string))
        .filter(|id| !id.is_empty())
        .ok_or_else(|| TmError::Internal("the stored installation id is unreadable".into()))
}

pub fn run(tm: &Tm) -> Result<(), TmError> {
    let now = now_ms();
    // The catalogue's seeds, inserted when absent in one transaction at the end.
    let entries = std::cell::RefCell::new(Vec::new());
    let put = |kind: &str, id: &str, body: Value| {
        entries.borrow_mut().push(CatalogRecord {
            kind: kind.into(),
            id: id.into(),
            body: body.to_string(),
            created_ms: now,
            updated_ms: now,
        });
    };
    put(
        "realm-template",
        "1",
        json!({"version": 1, "description": "Kaa tenant realm",
        "template": {"sslRequired": "external", "registrationAllowed": false, "loginWithEmailAllowed": true,
                     "duplicateEmailsAllowed": false, "resetPasswordAllowed": true, "bruteForceProtected": true}}),
    );
    put(
        "realm-backend-client-template",
        "1",
        json!({"version": 1, "description": "confidential backend client (UMA resource server)",
        "template": {"protocol": "openid-connect", "standardFlowEnabled": false, "directAccessGrantsEnabled": false}}),
    );
    put(
        "realm-frontend-client-template",
        "1",
        json!({"version": 1, "description": "public web UI client",
        "template": {"protocol": "openid-connect", "standardFlowEnabled": true, "directAccessGrantsEnabled": true,
                     "redirectUris": ["*"], "webOrigins": ["*"]}}),
    );
    for kind in ["scope-version", "role-version", "default-resource-version"] {
        put(
            kind,
            "1",
            json!({"version": 1, "description": "everything (the default)"}),
        );
    }
    for s in SCOPES {
        put("scope", s, json!({"name": s}));
        put(
            "scope-version-mapping",
            &format!("1:{s}"),
            json!({"version": 1, "scope_id": s}),
        );
    }
    for (role, description, prefixes) in ROLES {
        put(
            "role",
            role,
            json!({"name": role, "description": description}),
        );
        put(
            "role-version-mapping",
            &format!("1:{role}"),
            json!({"version": 1, "role_id": role}),
        );
        for s in SCOPES
            .iter()
            .filter(|s| prefixes.iter().any(|p| s.starts_with(p)))
        {
            put(
                "role-scope-mapping",
                &format!("{role}:{s}"),
                json!({"role_id": role, "scope_id": s}),
            );
        }
    }
    put(
        "default-resource",
        "tenant-system",
        json!({"name": "tenant-system", "type": "tenant",
        "description": "the tenant itself"}),
    );
    put(
        "default-resource-version-mapping",
        "1:tenant-system",
        json!({"version": 1, "resource_id": "tenant-system"}),
    );
    for s in SCOPES.iter().filter(|s| s.starts_with("tenant:")) {
        put(
            "default-resource-scope-mapping",
            &format!("tenant-system:{s}"),
            json!({"resource_id": "tenant-system", "scope_id": s}),
        );
    }
    put(
        "package-type",
        "unlimited",
        json!({"name": "unlimited", "description": "no limits", "limits": {}}),
    );

    tm.db.ensure_entries(&entries.into_inner())?;

    if let Some(kc) = &tm.settings.keycloak {
        match tm.db.get_server(kc.id) {
            Ok(_) => {}
            Err(StorageError::NotFound) => {
                let mut s = kc.clone();
                s.created_ms = now;
                s.updated_ms = now;
                // Inserted meanwhile by a replica that does not take the start-up lock.
                match tm.db.insert_server(&s) {
                    Ok(_) | Err(StorageError::Conflict(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }

    let sys = &tm.settings.system_tenant;
    match tm.db.get_tenant(sys) {
        Ok(_) => {}
        Err(StorageError::NotFound) => {
            let servers = tm.db.list_servers()?;
            let server = servers
                .iter()
                .find(|s| s.is_default)
                .or(servers.first())
                .map(|s| s.id);
            let client_id = if tm.settings.system_client_id.is_empty() {
                uuid4()?
            } else {
                tm.settings.system_client_id.clone()
            };
            let secret = if tm.settings.system_client_secret.is_empty() {
                random_hex(24)?
            } else {
                tm.settings.system_client_secret.clone()
            };
            let t = TenantRecord {
                id: sys.clone(),
                realm_name: sys.clone(),
                client_frontend_id: "kaa-frontend".into(),
                client_backend_id: client_id,
                client_backend_secret: secret,
                realm_template_version: 1,
                realm_scopes_version: 1,
                client_backend_version: 1,
                client_frontend_version: 1,
                roles_version: 1,
                resources_version: 1,
                keycloak_server_id: server,
                opendistro_enabled: false,
                subscription_type: "PERMANENT".into(),
                status: AVAILABLE.into(),
                failure_reason: None,
                display_name: Some("System tenant".into()),
                version: 1,
                created_ms: now,
                updated_ms: now,
                first_admin: None,
                move_from: None,
                move_to: None,
            };
            match tm.db.insert_tenant(&t, None, None) {
                Ok(_) | Err(StorageError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}
