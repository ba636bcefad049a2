//! Tenant Manager domain operations. A tenant change is one transaction: the row, the task that
//! provisions it and the lifecycle event that reports it; workers run the task afterwards and the
//! outbox publisher sends the event once the change committed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::err::{TmError, storage};
use super::provision::{
    Plan, PlannedResource, PlannedRole, ProvisionError, Provisioner, Provisioners,
};
use crate::clients::tle::{self, LifecycleEvent, LifecycleKind};
use crate::clock::now_ms;
use crate::storage::{
    CatalogStore, Database, KeycloakServerRecord, KeycloakServerStore, NewTask, OutboxEvent,
    OutboxStore, StorageError, TaskOutcome, TaskRecord, TaskStore, TenantChange, TenantFilter,
    TenantRecord, TenantStore,
};

pub const CREATING: &str = "CREATING";
pub const AVAILABLE: &str = "AVAILABLE";
pub const UPDATING: &str = "UPDATING";
pub const DELETING: &str = "DELETING";
pub const FAILED: &str = "FAILED";
/// The realm is being made on another Keycloak server; the tenant works on its current one.
pub const MOVING: &str = "MOVING";

/// The realm role that makes a user the tenant's administrator.
pub const TENANT_ADMIN_ROLE: &str = "tenant-admin";

/// How long the event of a change made outside the database is held back before it goes out
/// anyway (the change's outcome never came back: at least once).
pub const EVENT_HOLD_MS: i64 = 5 * 60 * 1000;

/// Task kinds of the queue.
pub const TASK_CREATE: &str = "create_realm";
pub const TASK_UPDATE: &str = "update_realm";
pub const TASK_DELETE: &str = "delete_realm";
/// Make the realm on the server of `move_to`, switch the tenant to it, remove the old realm.
pub const TASK_MOVE: &str = "move_realm";

/// The fields of a tenant's first administrator (`admin` of `POST /tenants`).
const ADMIN_FIELDS: &[&str] = &[
    "username",
    "email",
    "first_name",
    "last_name",
    "password",
    "temporary_password",
];

/// A tenant as a change leaves it, with the task it queues and the action it is audited as.
type Rewrite = (TenantRecord, &'static str, &'static str);

/// Settings of the `tenant-manager` config section.
#[derive(Debug, Clone)]
pub struct TmSettings {
    pub system_tenant: String,
    pub workers: usize,
    pub max_attempts: i64,
    pub lease_ms: i64,
    pub backoff_ms: i64,
    pub max_backoff_ms: i64,
    /// The default Keycloak server, registered as id 1 at start (None: the local provisioner).
    pub keycloak: Option<KeycloakServerRecord>,
    /// Public URL of the Keycloak of the local provisioner (security contexts of the dev run).
    pub public_keycloak_url: String,
    /// Realms a Keycloak server takes before new tenants go to another one (0: no bound).
    pub max_realms_per_server: i64,
    /// Originator instance name in event subjects.
    pub instance: String,
    pub replica: String,
    /// Whether lifecycle events are written (NATS configured).
    pub events: bool,
    /// Client credentials of the system tenant's backend client.
    pub system_client_id: String,
    pub system_client_secret: String,
    /// The package type whose limits a tenant has while its subscription is not in force
    /// (`tenant-manager.subscriptions.fallback-package-type`); none: the tenant is `SUSPENDED`.
    pub fallback_package_type: Option<String>,
    /// How often each replica looks for subscriptions that started or ended.
    pub subscription_sweep_ms: i64,
    /// `tenant-manager.installation-id`: the id marking the realms this installation makes
    /// (none: the one made at the first start and kept in the database).
    pub installation_id: Option<String>,
    /// Realm names no tenant may have (compared case-insensitively): `master`, the system
    /// tenant's, the realm of the configured issuer, the default server's admin realm.
    pub reserved_realms: Vec<String>,
    /// `tenant-manager.audit`: the trail's retention and NATS feed.
    pub audit: crate::audit::TrailConfig,
}

pub use crate::config::valid_installation_id;

/// The realm an issuer URL (`…/realms/<name>`) names.
fn realm_of_issuer(url: &str) -> Option<String> {
    url.trim_end_matches('/')
        .rsplit_once("/realms/")
        .map(|(_, r)| r.to_string())
        .filter(|r| !r.is_empty() && !r.contains('/'))
}

impl TmSettings {
    /// The settings of the `tenant-manager` section (checked by the configuration).
    pub fn from_config(c: &crate::config::Config) -> Result<TmSettings, String> {
        let s = &c.tenant_manager;
        let (kc, tasks) = (&s.keycloak, &s.tasks);
        let keycloak = kc.url.as_ref().map(|url| KeycloakServerRecord {
            id: 1,
            url: url.clone(),
            admin_realm: kc.admin_realm.clone(),
            username: kc.username.clone(),
            password: kc.password.as_ref().map(|p| p.expose().to_string()),
            client_id: kc.client_id.clone(),
            client_secret: kc.client_secret.as_ref().map(|p| p.expose().to_string()),
            is_default: true,
            created_ms: 0,
            updated_ms: 0,
        });
        let system_tenant = s.system_tenant.clone();
        let mut reserved_realms = vec!["master".to_string(), system_tenant.clone()];
        reserved_realms.extend(
            [
                &c.security.issuer_public_url,
                &c.security.issuer_private_url,
            ]
            .into_iter()
            .filter_map(|u| realm_of_issuer(u)),
        );
        reserved_realms.extend(keycloak.as_ref().map(|k| k.admin_realm.clone()));
        let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let audit = crate::audit::trail_config(
            &s.audit,
            "tenant-manager",
            crate::storage::Trail::TenantManager,
            !c.nats.urls.is_empty(),
        )?;
        Ok(TmSettings {
            audit,
            installation_id: s.installation_id.clone(),
            reserved_realms,
            system_tenant,
            workers: tasks.workers as usize,
            max_attempts: int(tasks.max_attempts),
            lease_ms: int(tasks.lease_seconds) * 1000,
            backoff_ms: int(tasks.backoff_ms),
            max_backoff_ms: int(tasks.max_backoff_ms),
            public_keycloak_url: kc
                .public_url
                .clone()
                .or_else(|| keycloak.as_ref().map(|k| k.url.clone()))
                .unwrap_or_default(),
            max_realms_per_server: int(kc.max_realms_per_server),
            keycloak,
            instance: c.service.instance_name.clone(),
            replica: c.service.replica_id.clone(),
            events: !c.nats.urls.is_empty(),
            system_client_id: c.security.client_id.clone(),
            system_client_secret: c.security.client_secret.expose().to_string(),
            fallback_package_type: s.subscriptions.fallback_package_type.clone(),
            subscription_sweep_ms: int(s.subscriptions.sweep_ms),
        })
    }
}

/// The server a new tenant goes to (see [`Tm::choose_server`]): `default` while it has room,
/// else the least loaded server with room, else the least loaded; `counts` is (server, realms).
pub fn pick_server(default: Option<i64>, counts: &[(i64, i64)], max_realms: i64) -> Option<i64> {
    let has_room = |n: i64| max_realms == 0 || n < max_realms;
    if let Some(d) = default
        && counts.iter().any(|(id, n)| *id == d && has_room(*n))
    {
        return Some(d);
    }
    let least = |room_only: bool| {
        counts
            .iter()
            .filter(|(_, n)| !room_only || has_room(*n))
            .min_by_key(|(id, n)| (*n, *id))
            .map(|(id, _)| *id)
    };
    let chosen = least(true).or_else(|| least(false));
    if chosen.is_some() && least(true).is_none() {
        log::warn!(
            "every Keycloak server holds {max_realms} realms or more: the new tenant goes to the \
             least loaded one; register another server"
        );
    }
    chosen.or(default)
}

/// `count` random bytes as lowercase hex, from OpenSSL's CSPRNG.
pub fn random_hex(count: usize) -> Result<String, TmError> {
    let mut buf = vec![0u8; count];
    openssl::rand::rand_bytes(&mut buf).map_err(|e| TmError::Internal(format!("random: {e}")))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A random (v4) UUID.
pub fn uuid4() -> Result<String, TmError> {
    let h = random_hex(16)?;
    let mut b: Vec<char> = h.chars().collect();
    b[12] = '4';
    b[16] = ['8', '9', 'a', 'b'][usize::from(b[16].to_digit(16).unwrap_or(0) as u8 % 4)];
    let s: String = b.into_iter().collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &s[0..8],
        &s[8..12],
        &s[12..16],
        &s[16..20],
        &s[20..32]
    ))
}

/// A tenant id: a DNS label (lowercase letters, digits, `-`; 1 to 63; not starting or ending with `-`).
pub fn valid_tenant_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A realm name: letters, digits, `-`, `_`, `.`; 1 to 64.
pub fn valid_realm(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

pub struct Tm {
    pub db: Arc<Database>,
    pub settings: TmSettings,
    pub provisioners: Arc<dyn Provisioners>,
    /// Audit rows deleted as past the retention, and completed pruning passes (`/metrics`).
    pub audit_pruned: std::sync::atomic::AtomicU64,
    pub audit_prune_passes: std::sync::atomic::AtomicU64,
}

/// The template kinds and the tenant field naming their version.
pub const TEMPLATE_VERSIONS: &[(&str, &str)] = &[
    ("realm_template_version", "realm-template"),
    ("client_backend_version", "realm-backend-client-template"),
    ("client_frontend_version", "realm-frontend-client-template"),
    ("realm_scopes_version", "scope-version"),
    ("roles_version", "role-version"),
    ("resources_version", "default-resource-version"),
];

pub(crate) fn version_field(t: &TenantRecord, field: &str) -> i64 {
    match field {
        "realm_template_version" => t.realm_template_version,
        "client_backend_version" => t.client_backend_version,
        "client_frontend_version" => t.client_frontend_version,
        "realm_scopes_version" => t.realm_scopes_version,
        "roles_version" => t.roles_version,
        _ => t.resources_version,
    }
}

fn set_version(t: &mut TenantRecord, field: &str, v: i64) {
    match field {
        "realm_template_version" => t.realm_template_version = v,
        "client_backend_version" => t.client_backend_version = v,
        "client_frontend_version" => t.client_frontend_version = v,
        "realm_scopes_version" => t.realm_scopes_version = v,
        "roles_version" => t.roles_version = v,
        _ => t.resources_version = v,
    }
}

/// A tenant, the users of its realm, and the roles of its plan.
pub type TenantUsersOf = (
    TenantRecord,
    Arc<dyn super::users::TenantUsers>,
    Vec<String>,
);

impl Tm {
    fn body(&self, kind: &str, id: &str) -> Result<Value, TmError> {
        let e = self.db.get_entry(kind, id)?;
        serde_json::from_str(&e.body)
            .map_err(|err| TmError::Internal(format!("{kind} `{id}`: {err}")))
    }

    fn bodies(&self, kind: &str) -> Result<Vec<Value>, TmError> {
        self.db
            .list_entries(kind)?
            .iter()
            .map(|e| {
                serde_json::from_str(&e.body)
                    .map_err(|err| TmError::Internal(format!("{kind} `{}`: {err}", e.id)))
            })
            .collect()
    }

    /// A lifecycle event for the outbox (none when events are off).
    pub fn event(&self, kind: LifecycleKind, tenant: &str) -> Result<Option<OutboxEvent>, TmError> {
        if !self.settings.events {
            return Ok(None);
        }
        let e = LifecycleEvent {
            correlation_id: uuid4()?,
            timestamp: now_ms(),
            timeout: 0,
            tenant_id: tenant.to_string(),
            originator_replica_id: self.settings.replica.clone(),
        };
        Ok(Some(OutboxEvent {
            subject: tle::subject(&self.settings.instance, kind),
            payload: e.encode(),
        }))
    }

    /// The `updated` event of a tenant, for writes that find their tenants in the transaction.
    /// It is made inside a storage transaction, whose steps can only fail with a storage error:
    /// a failure to make it (no random bytes for its id) aborts the transaction as an internal
    /// one.
    pub fn updated_event(&self, tenant: &str) -> Result<Option<OutboxEvent>, StorageError> {
        self.event(LifecycleKind::Updated, tenant)
            .map_err(|e| match e {
                TmError::Storage(s) => s,
                other => StorageError::Internal(other.to_string()),
            })
    }

    /// Run a change made outside the database (a tenant user in Keycloak) with its `updated`
    /// event and its audit record: the event is written first, held back, and released once the
    /// change is done, in one transaction with the record (`record` of the change's outcome), or
    /// removed when the change failed (no record then). A process that dies in between leaves
    /// the event to go out when the hold ends ([`EVENT_HOLD_MS`]): late, never lost. When the
    /// record cannot be written after the change was made, the call answers 503 saying so.
    pub fn with_event<T>(
        &self,
        tenant: &str,
        change: impl FnOnce() -> Result<T, TmError>,
        record: impl FnOnce(&T) -> crate::storage::Change,
    ) -> Result<T, TmError> {
        let held = match self.event(LifecycleKind::Updated, tenant)? {
            Some(event) => {
                let now = now_ms();
                Some(self.db.hold_event(&event, now + EVENT_HOLD_MS, now)?)
            }
            None => None,
        };
        match change() {
            Ok(v) => {
                if let Err(e) = self.db.record_outside(vec![record(&v)], held, now_ms()) {
                    log::error!(
                        "audit: a change of tenant `{tenant}` was made but its record could not \
                         be written: {e}"
                    );
                    return Err(TmError::Unavailable(format!(
                        "the change was made, but its audit record could not be written \
                         ({e}); read the state again before retrying"
                    )));
                }
                Ok(v)
            }
            Err(err) => {
                if let Some(held) = held
                    && let Err(e) = self.db.drop_event(held)
                {
                    log::warn!("outbox: a held event of tenant `{tenant}` stays: {e}");
                }
                Err(err)
            }
        }
    }

    /// `PUT /keycloak-servers/{id}`: the new record and the `updated` event of every tenant on
    /// the server, in one transaction; nothing when nothing changed.
    pub fn update_server(
        &self,
        current: &KeycloakServerRecord,
        new: &KeycloakServerRecord,
    ) -> Result<KeycloakServerRecord, TmError> {
        let same = KeycloakServerRecord {
            updated_ms: current.updated_ms,
            created_ms: current.created_ms,
            ..new.clone()
        };
        if &same == current {
            return Ok(current.clone());
        }
        let events = |t: &str| self.updated_event(t);
        self.db
            .update_server(new, &events)
            .map_err(|e| storage(e, "keycloak server", &new.id.to_string()))
    }

    pub(crate) fn task(&self, kind: &str) -> NewTask {
        NewTask {
            kind: kind.to_string(),
            max_attempts: self.settings.max_attempts,
        }
    }

    /// Choose the Keycloak server: explicit, else the default while it has room, else the one
    /// with the fewest realms among those with room, else (every server full) the one with the
    /// fewest realms. Room: fewer realms than `keycloak.max-realms-per-server` (no bound at 0).
    fn choose_server(&self, explicit: Option<i64>) -> Result<Option<i64>, TmError> {
        if let Some(id) = explicit {
            self.db.get_server(id).map_err(|e| match e {
                StorageError::NotFound => {
                    TmError::field("keycloak_server_id", format!("no Keycloak server {id}"))
                }
                other => TmError::Storage(other),
            })?;
            return Ok(Some(id));
        }
        let servers = self.db.list_servers()?;
        let counts = self.db.realms_per_server()?;
        Ok(pick_server(
            servers.iter().find(|s| s.is_default).map(|s| s.id),
            &counts,
            self.settings.max_realms_per_server,
        ))
    }

    /// `POST /tenants`: the tenant in `CREATING`, its provisioning task queued with it.
    pub fn create_tenant(&self, body: &Value) -> Result<TenantRecord, TmError> {
        let Value::Object(b) = body else {
            return Err(TmError::invalid("the body must be a JSON object"));
        };
        const KNOWN: &[&str] = &[
            "id",
            "realm_name",
            "display_name",
            "realm_template_version",
            "client_backend_version",
            "client_frontend_version",
            "realm_scopes_version",
            "roles_version",
            "resources_version",
            "keycloak_server_id",
            "opendistro_enabled",
            "subscription_type",
            "admin",
        ];
        if let Some(k) = b.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(TmError::field(k, "unknown field"));
        }
        let id = match b.get("id") {
            None | Some(Value::Null) => uuid4()?,
            Some(Value::String(s)) if valid_tenant_id(s) => s.clone(),
            Some(v) => {
                return Err(TmError::field(
                    "id",
                    format!(
                        "must be lowercase letters, digits and `-` (1 to 63, no `-` at the ends), got `{v}`"
                    ),
                ));
            }
        };
        let realm_name = match b.get("realm_name") {
            None | Some(Value::Null) => id.clone(),
            Some(Value::String(s)) if valid_realm(s) => s.clone(),
            Some(v) => {
                return Err(TmError::field(
                    "realm_name",
                    format!("must be letters, digits, `-`, `_`, `.` (1 to 64), got `{v}`"),
                ));
            }
        };
        self.refuse_reserved("id", &id)?;
        self.refuse_reserved("realm_name", &realm_name)?;
        let display_name = match b.get("display_name") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.chars().count() <= 255 => Some(s.clone()),
            Some(_) => {
                return Err(TmError::field(
                    "display_name",
                    "must be a string of at most 255 characters",
                ));
            }
        };
        let now = now_ms();
        let mut t = TenantRecord {
            id: id.clone(),
            realm_name,
            client_frontend_id: uuid4()?,
            client_backend_id: uuid4()?,
            client_backend_secret: random_hex(24)?,
            realm_template_version: 1,
            realm_scopes_version: 1,
            client_backend_version: 1,
            client_frontend_version: 1,
            roles_version: 1,
            resources_version: 1,
            keycloak_server_id: None,
            opendistro_enabled: false,
            subscription_type: "PERMANENT".into(),
            status: CREATING.into(),
            failure_reason: None,
            display_name,
            version: 1,
            created_ms: now,
            updated_ms: now,
            first_admin: None,
            move_from: None,
            move_to: None,
        };
        self.apply_versions(&mut t, b)?;
        t.first_admin = match b.get("admin") {
            None | Some(Value::Null) => None,
            Some(a) => Some(self.first_admin(a, t.roles_version)?),
        };
        match b.get("opendistro_enabled") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(v)) => t.opendistro_enabled = *v,
            Some(_) => {
                return Err(TmError::field(
                    "opendistro_enabled",
                    "must be true or false",
                ));
            }
        }
        match b.get("subscription_type") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 64 => {
                t.subscription_type = s.clone()
            }
            Some(_) => {
                return Err(TmError::field(
                    "subscription_type",
                    "must be a non-empty string",
                ));
            }
        }
        let explicit = match b.get("keycloak_server_id") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_i64()
                    .ok_or_else(|| TmError::field("keycloak_server_id", "must be an integer"))?,
            ),
        };
        t.keycloak_server_id = self.choose_server(explicit)?;
        self.db
            .insert_tenant(&t, Some(&self.task(TASK_CREATE)), None)
            .map_err(|e| match e {
                StorageError::Conflict(_) => TmError::Conflict(format!(
                    "a tenant with id `{}` or realm `{}` already exists",
                    t.id, t.realm_name
                )),
                other => TmError::Storage(other),
            })
    }

    /// The `admin` of a new tenant, checked as a tenant user is, as stored until it is made (with
    /// the request id that makes its creation idempotent). The tenant's roles must include
    /// [`TENANT_ADMIN_ROLE`].
    fn first_admin(&self, a: &Value, roles_version: i64) -> Result<String, TmError> {
        let Value::Object(m) = a else {
            return Err(TmError::field(
                "admin",
                format!("must be an object with {}", ADMIN_FIELDS.join(", ")),
            ));
        };
        if let Some(k) = m.keys().find(|k| !ADMIN_FIELDS.contains(&k.as_str())) {
            return Err(TmError::field(
                &format!("admin.{k}"),
                format!("unknown field; the fields are {}", ADMIN_FIELDS.join(", ")),
            ));
        }
        let u = super::users::parse_input(a, true, &[]).map_err(|e| match e {
            TmError::Invalid(_, fields) => {
                let (f, m) = fields.into_iter().next().unwrap_or_default();
                TmError::field(&format!("admin.{f}"), m)
            }
            other => other,
        })?;
        if !self
            .roles_of_version(roles_version)?
            .iter()
            .any(|r| r == TENANT_ADMIN_ROLE)
        {
            return Err(TmError::field(
                "admin",
                format!(
                    "role version {roles_version} has no `{TENANT_ADMIN_ROLE}` role to give the \
                     tenant's first administrator"
                ),
            ));
        }
        Ok(json!({
            "username": u.username,
            "email": u.email.flatten(),
            "first_name": u.first_name.flatten(),
            "last_name": u.last_name.flatten(),
            "password": u.password,
            "temporary_password": u.temporary_password,
            "request": random_hex(16)?,
        })
        .to_string())
    }

    /// The realm roles of a role version.
    fn roles_of_version(&self, v: i64) -> Result<Vec<String>, TmError> {
        Ok(self
            .bodies("role-version-mapping")?
            .iter()
            .filter(|m| m.get("version").and_then(Value::as_i64) == Some(v))
            .filter_map(|m| m.get("role_id").and_then(Value::as_str).map(String::from))
            .collect())
    }

    /// A 400 when `name` is a realm no tenant may have: Keycloak's `master`, the system tenant's
    /// realm, the configured issuer's, or the admin realm of a registered Keycloak server.
    fn refuse_reserved(&self, field: &str, name: &str) -> Result<(), TmError> {
        let admin_realms = self.db.list_servers()?.into_iter().map(|s| s.admin_realm);
        let reserved = self
            .settings
            .reserved_realms
            .iter()
            .cloned()
            .chain(admin_realms)
            .find(|r| r.eq_ignore_ascii_case(name));
        match reserved {
            None => Ok(()),
            Some(r) => Err(TmError::field(
                field,
                format!(
                    "`{name}` is reserved: the realm `{r}` belongs to Keycloak or to the system \
                     tenant, never to a tenant"
                ),
            )),
        }
    }

    /// Take `*_version` fields from a body, each naming an existing version.
    fn apply_versions(
        &self,
        t: &mut TenantRecord,
        b: &Map<String, Value>,
    ) -> Result<bool, TmError> {
        let mut changed = false;
        for (field, kind) in TEMPLATE_VERSIONS {
            match b.get(*field) {
                None | Some(Value::Null) => {}
                Some(v) => {
                    let n = v
                        .as_i64()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| TmError::field(field, "must be a positive integer"))?;
                    if let Err(e) = self.db.get_entry(kind, &n.to_string()) {
                        return Err(match e {
                            StorageError::NotFound => {
                                TmError::field(field, format!("there is no {kind} version {n}"))
                            }
                            other => TmError::Storage(other),
                        });
                    }
                    if version_field(t, field) != n {
                        changed = true;
                    }
                    set_version(t, field, n);
                }
            }
        }
        Ok(changed)
    }

    pub fn get_tenant(&self, id: &str) -> Result<TenantRecord, TmError> {
        self.db.get_tenant(id).map_err(|e| storage(e, "tenant", id))
    }

    pub fn list_tenants(
        &self,
        q: &HashMap<String, String>,
    ) -> Result<(Vec<TenantRecord>, u64), TmError> {
        let (offset, limit) = paging(q)?;
        let filter = TenantFilter {
            realm_name: q.get("realm_name").cloned(),
            status: q.get("status").cloned(),
            opendistro_enabled: match q.get("opendistro_enabled").map(String::as_str) {
                None => None,
                Some("true") | Some("True") | Some("1") => Some(true),
                Some("false") | Some("False") | Some("0") => Some(false),
                Some(other) => {
                    return Err(TmError::field(
                        "opendistro_enabled",
                        format!("must be true or false, got `{other}`"),
                    ));
                }
            },
            subscription_type: q.get("subscription_type").cloned(),
        };
        Ok(self.db.list_tenants(&filter, offset, limit)?)
    }

    /// `PUT`/`PATCH /tenants/{id}`: flags change at once (event `updated`); version changes go
    /// through `UPDATING` and a task. The version the write expects is the body's `version` or
    /// `if_match` (they must agree); another current version is [`TmError::Stale`].
    pub fn update_tenant(
        &self,
        id: &str,
        body: &Value,
        if_match: Option<i64>,
    ) -> Result<TenantRecord, TmError> {
        let Value::Object(b) = body else {
            return Err(TmError::invalid("the body must be a JSON object"));
        };
        const KNOWN: &[&str] = &[
            "display_name",
            "realm_template_version",
            "client_backend_version",
            "client_frontend_version",
            "realm_scopes_version",
            "roles_version",
            "resources_version",
            "opendistro_enabled",
            "subscription_type",
            "keycloak_server_id",
            "version",
        ];
        if let Some(k) = b.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(TmError::field(k, "unknown or read-only field"));
        }
        let asked = match b.get("version") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_i64()
                    .ok_or_else(|| TmError::field("version", "must be an integer"))?,
            ),
        };
        let asked = match (asked, if_match) {
            (Some(a), Some(h)) if a != h => {
                return Err(TmError::field(
                    "version",
                    format!("{a} and If-Match {h} disagree"),
                ));
            }
            (a, h) => a.or(h),
        };
        // Every field is checked once, against the tenant as it is now; the change is then
        // applied to the record read inside the write's transaction, so a concurrent change to
        // another field is never overwritten and never makes this one fail.
        let probe_before = self.get_tenant(id)?;
        let mut probe = probe_before.clone();
        self.apply_versions(&mut probe, b)?;
        let versions: Vec<(&str, i64)> = TEMPLATE_VERSIONS
            .iter()
            .map(|(field, _)| (*field, version_field(&probe, field)))
            .filter(|(field, _)| b.get(*field).is_some_and(|v| !v.is_null()))
            .collect();
        let opendistro = match b.get("opendistro_enabled").filter(|v| !v.is_null()) {
            None => None,
            Some(v) => Some(
                v.as_bool()
                    .ok_or_else(|| TmError::field("opendistro_enabled", "must be true or false"))?,
            ),
        };
        let subscription = match b.get("subscription_type").filter(|v| !v.is_null()) {
            None => None,
            Some(v) => Some(
                v.as_str()
                    .filter(|s| !s.is_empty() && s.len() <= 64)
                    .ok_or_else(|| {
                        TmError::field("subscription_type", "must be a non-empty string")
                    })?
                    .to_string(),
            ),
        };
        let display_name = match b.get("display_name") {
            None => None,
            Some(Value::Null) => Some(None),
            Some(Value::String(s)) if s.chars().count() <= 255 => Some(Some(s.clone())),
            Some(_) => {
                return Err(TmError::field(
                    "display_name",
                    "must be a string of at most 255 characters",
                ));
            }
        };
        let move_to = match b.get("keycloak_server_id") {
            None => None,
            Some(v) => {
                let n = v.as_i64().ok_or_else(|| {
                    TmError::field(
                        "keycloak_server_id",
                        "must be the id of a registered Keycloak server",
                    )
                })?;
                let server = self.db.get_server(n).map_err(|e| match e {
                    StorageError::NotFound => {
                        TmError::field("keycloak_server_id", format!("no Keycloak server {n}"))
                    }
                    other => TmError::Storage(other),
                })?;
                if server
                    .admin_realm
                    .eq_ignore_ascii_case(&probe_before.realm_name)
                {
                    return Err(TmError::field(
                        "keycloak_server_id",
                        format!(
                            "the realm `{}` is Keycloak server {n}'s admin realm",
                            probe_before.realm_name
                        ),
                    ));
                }
                Some(n)
            }
        };
        if move_to.is_some() && probe_before.keycloak_server_id.is_none() {
            return Err(TmError::Conflict(format!(
                "tenant `{id}` has no Keycloak server (its realm is kept by the Tenant Manager \
                 itself): it cannot move"
            )));
        }
        if id == self.settings.system_tenant
            && move_to.is_some_and(|n| Some(n) != probe_before.keycloak_server_id)
        {
            return Err(TmError::Conflict(format!(
                "the system tenant `{id}`'s realm is made by the installer, not by the Tenant \
                 Manager: it cannot move to another Keycloak server"
            )));
        }
        if id == self.settings.system_tenant
            && versions
                .iter()
                .any(|(field, n)| version_field(&probe_before, field) != *n)
        {
            return Err(TmError::Conflict(format!(
                "the system tenant `{id}`'s realm is made by the installer, not by the Tenant \
                 Manager: its template versions cannot change"
            )));
        }
        let mut refused: Option<TmError> = None;
        let mut change = |cur: &TenantRecord| -> Result<Option<TenantChange>, StorageError> {
            if cur.status != AVAILABLE {
                refused = Some(TmError::Conflict(format!(
                    "tenant `{id}` is {}: only an AVAILABLE tenant can be changed",
                    cur.status
                )));
                return Err(StorageError::Stale);
            }
            if asked.is_some_and(|v| v != cur.version) {
                return Err(StorageError::Stale);
            }
            let mut t = cur.clone();
            let mut reprovision = false;
            for (field, n) in &versions {
                reprovision |= version_field(&t, field) != *n;
                set_version(&mut t, field, *n);
            }
            if let Some(v) = opendistro {
                t.opendistro_enabled = v;
            }
            if let Some(v) = &subscription {
                t.subscription_type = v.clone();
            }
            if let Some(v) = &display_name {
                t.display_name = v.clone();
            }
            // A move makes the whole plan on the new server (version changes included) and
            // sends its event when the tenant is there.
            if let Some(n) = move_to.filter(|n| Some(*n) != cur.keycloak_server_id) {
                t.move_to = Some(n);
                t.failure_reason = None;
                t.status = MOVING.into();
                t.updated_ms = now_ms();
                return Ok(Some((t, Some(self.task(TASK_MOVE)), None)));
            }
            // A write that changes nothing is no change: no new version, no event.
            if !reprovision && t == *cur {
                return Ok(None);
            }
            t.updated_ms = now_ms();
            if reprovision {
                // The `updated` event comes when the realm is done.
                t.status = UPDATING.into();
                Ok(Some((t, Some(self.task(TASK_UPDATE)), None)))
            } else {
                let event = self.updated_event(id)?;
                Ok(Some((t, None, event)))
            }
        };
        let result = self.db.modify_tenant(id, &mut change);
        if let Some(e) = refused {
            return Err(e);
        }
        result.map_err(|e| storage(e, "tenant", id))
    }

    /// `DELETE /tenants/{id}`: `DELETING` and a task; the row goes when the realm is gone.
    pub fn delete_tenant(&self, id: &str) -> Result<TenantRecord, TmError> {
        if id == self.settings.system_tenant {
            return Err(TmError::Conflict(format!(
                "the system tenant `{id}` cannot be deleted"
            )));
        }
        self.unconditionally(id, |cur| {
            if cur.status == DELETING {
                return Ok(None);
            }
            let mut t = cur.clone();
            t.status = DELETING.into();
            t.updated_ms = now_ms();
            Ok(Some((t, TASK_DELETE, "kaa:tenant:delete")))
        })
    }

    /// `POST /tenants/{id}/retry`: a `FAILED` tenant tries again.
    pub fn retry_tenant(&self, id: &str) -> Result<TenantRecord, TmError> {
        self.unconditionally(id, |cur| {
            if cur.status != FAILED {
                return Err(TmError::Conflict(format!(
                    "tenant `{id}` is {}, not FAILED",
                    cur.status
                )));
            }
            let mut t = cur.clone();
            t.status = CREATING.into();
            t.failure_reason = None;
            t.updated_ms = now_ms();
            Ok(Some((t, TASK_CREATE, "kaa:tenant:retry")))
        })
    }

    /// A change the caller did not make conditional (no version asked): `change` is applied to
    /// the tenant as it is, and again to the tenant as it became should a worker have changed
    /// it between the read and the write (a request must not fail because the service moved a
    /// tenant along meanwhile). `None`: nothing to write, the tenant as it is.
    fn unconditionally(
        &self,
        id: &str,
        change: impl Fn(&TenantRecord) -> Result<Option<Rewrite>, TmError>,
    ) -> Result<TenantRecord, TmError> {
        const ATTEMPTS: usize = 8;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let cur = self.get_tenant(id)?;
            let Some((t, task, action)) = change(&cur)? else {
                return Ok(cur);
            };
            match self
                .db
                .save_tenant(&t, Some(cur.version), Some(&self.task(task)), None, action)
            {
                Err(StorageError::Stale) if attempt < ATTEMPTS => continue,
                result => return result.map_err(|e| storage(e, "tenant", id)),
            }
        }
    }

    /// The realm a tenant's template versions describe.
    pub fn plan(&self, t: &TenantRecord) -> Result<Plan, TmError> {
        let template = |kind: &str, v: i64| -> Result<Value, TmError> {
            Ok(self
                .body(kind, &v.to_string())?
                .get("template")
                .cloned()
                .unwrap_or(json!({})))
        };
        let mut realm = template("realm-template", t.realm_template_version)?;
        if let Value::Object(m) = &mut realm {
            m.insert("realm".into(), Value::from(t.realm_name.clone()));
            m.insert("enabled".into(), Value::Bool(true));
        }
        let mut backend = template("realm-backend-client-template", t.client_backend_version)?;
        if let Value::Object(m) = &mut backend {
            m.insert("clientId".into(), Value::from(t.client_backend_id.clone()));
            m.insert(
                "secret".into(),
                Value::from(t.client_backend_secret.clone()),
            );
            m.insert("publicClient".into(), Value::Bool(false));
            m.insert("serviceAccountsEnabled".into(), Value::Bool(true));
            m.insert("authorizationServicesEnabled".into(), Value::Bool(true));
        }
        let mut frontend = template("realm-frontend-client-template", t.client_frontend_version)?;
        if let Value::Object(m) = &mut frontend {
            m.insert("clientId".into(), Value::from(t.client_frontend_id.clone()));
            m.insert("publicClient".into(), Value::Bool(true));
        }
        let in_version = |kind: &str, v: i64, field: &str| -> Result<Vec<String>, TmError> {
            Ok(self
                .bodies(kind)?
                .iter()
                .filter(|m| m.get("version").and_then(Value::as_i64) == Some(v))
                .filter_map(|m| m.get(field).and_then(Value::as_str).map(String::from))
                .collect())
        };
        let scopes = in_version("scope-version-mapping", t.realm_scopes_version, "scope_id")?;
        let pairs = |kind: &str, left: &str| -> Result<Vec<(String, String)>, TmError> {
            Ok(self
                .bodies(kind)?
                .iter()
                .filter_map(|m| {
                    Some((
                        m.get(left)?.as_str()?.to_string(),
                        m.get("scope_id")?.as_str()?.to_string(),
                    ))
                })
                .collect())
        };
        let role_scopes = pairs("role-scope-mapping", "role_id")?;
        let roles = in_version("role-version-mapping", t.roles_version, "role_id")?
            .into_iter()
            .map(|name| {
                let body = self.body("role", &name).unwrap_or(json!({}));
                PlannedRole {
                    template: body.get("template").filter(|t| t.is_object()).cloned(),
                    description: body
                        .get("description")
                        .and_then(Value::as_str)
                        .map(String::from),
                    scopes: role_scopes
                        .iter()
                        .filter(|(r, s)| *r == name && scopes.contains(s))
                        .map(|(_, s)| s.clone())
                        .collect(),
                    name,
                }
            })
            .collect();
        let resource_scopes = pairs("default-resource-scope-mapping", "resource_id")?;
        let resources = in_version(
            "default-resource-version-mapping",
            t.resources_version,
            "resource_id",
        )?
        .into_iter()
        .map(|name| {
            let body = self.body("default-resource", &name).unwrap_or(json!({}));
            PlannedResource {
                template: body.get("template").filter(|t| t.is_object()).cloned(),
                resource_type: body
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                scopes: resource_scopes
                    .iter()
                    .filter(|(r, s)| *r == name && scopes.contains(s))
                    .map(|(_, s)| s.clone())
                    .collect(),
                name,
            }
        })
        .collect();
        let idps = self
            .bodies("idp")?
            .into_iter()
            .filter(|i| i.get("tenant_id").and_then(Value::as_str) == Some(t.id.as_str()))
            .collect();
        Ok(Plan {
            realm,
            backend_client: backend,
            frontend_client: frontend,
            scopes,
            roles,
            resources,
            idps,
        })
    }

    /// Run one claimed task to its end: done, retried later, or failed for good.
    pub fn run_task(&self, task: &TaskRecord) -> Result<(), TmError> {
        let t = match self.db.get_tenant(&task.tenant_id) {
            Ok(t) => t,
            Err(StorageError::NotFound) => {
                self.db
                    .complete_task(task, &TaskOutcome::Removed, None, now_ms())?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        // A tenant deleted while it was being created: its create task has nothing left to do.
        if t.status == DELETING && task.kind != TASK_DELETE {
            self.db
                .complete_task(task, &TaskOutcome::Status(DELETING.into()), None, now_ms())?;
            return Ok(());
        }
        let result = match task.kind.as_str() {
            TASK_DELETE => self.delete_realms(&t),
            TASK_MOVE => self.move_realm(&t),
            kind => self.provision(&t, kind),
        };
        let now = now_ms();
        match result {
            Ok(()) => {
                let (outcome, event) = if task.kind == TASK_DELETE {
                    (
                        TaskOutcome::Removed,
                        self.event(LifecycleKind::Unregistered, &t.id)?,
                    )
                } else {
                    (
                        TaskOutcome::Status(AVAILABLE.into()),
                        self.event(LifecycleKind::Updated, &t.id)?,
                    )
                };
                self.db.complete_task(task, &outcome, event.as_ref(), now)?;
                log::info!("tasks: {} of tenant `{}` done", task.kind, t.id);
            }
            Err(e) => {
                let last =
                    task.attempts >= task.max_attempts || matches!(e, ProvisionError::Fatal(_));
                let retry_at = if last {
                    None
                } else {
                    let exp = (task.attempts - 1).clamp(0, 30) as u32;
                    let delay = self
                        .settings
                        .backoff_ms
                        .saturating_mul(1i64 << exp)
                        .min(self.settings.max_backoff_ms);
                    Some(now + delay)
                };
                let reason = format!("{} failed (attempt {}): {e}", task.kind, task.attempts);
                if last && task.kind == TASK_MOVE {
                    // The tenant keeps working where it is: the move ends, with the reason.
                    let reason = self.abandon_move(&t.id, &e)?;
                    let event = self.event(LifecycleKind::Updated, &t.id)?;
                    self.db.end_move(task, &reason, event.as_ref(), now)?;
                    log::warn!("tasks: tenant `{}`: {reason}", t.id);
                    return Ok(());
                }
                if last && task.kind == TASK_DELETE {
                    // A delete that cannot finish keeps the tenant DELETING for an operator.
                    self.db.fail_task(
                        task,
                        &reason,
                        Some(now + self.settings.max_backoff_ms),
                        None,
                        now,
                    )?;
                } else {
                    // An update that fails for good ends the change that asked for it: the
                    // tenant was registered, so its consumers hear of it. A create that fails
                    // never registered the tenant.
                    let event = if retry_at.is_none() && task.kind == TASK_UPDATE {
                        self.event(LifecycleKind::Updated, &t.id)?
                    } else {
                        None
                    };
                    self.db
                        .fail_task(task, &reason, retry_at, event.as_ref(), now)?;
                }
                log::warn!("tasks: tenant `{}`: {reason}", t.id);
            }
        }
        Ok(())
    }

    /// The provisioner of a Keycloak server (`None`: the local one).
    fn provisioner_of(&self, server: Option<i64>) -> Result<Arc<dyn Provisioner>, ProvisionError> {
        let server = match server {
            Some(id) => Some(self.db.get_server(id).map_err(|e| match e {
                StorageError::NotFound => {
                    ProvisionError::Fatal(format!("keycloak server {id} is not registered"))
                }
                other => ProvisionError::Transient(other.to_string()),
            })?),
            None => None,
        };
        self.provisioners.for_server(server.as_ref())
    }

    /// The plan of a tenant for a task: one that cannot be read now (storage) is retried; one
    /// that cannot be made (a missing template) fails the tenant.
    fn task_plan(&self, t: &TenantRecord) -> Result<Plan, ProvisionError> {
        self.plan(t).map_err(|e| match e {
            TmError::Storage(s) => ProvisionError::Transient(s.to_string()),
            other => ProvisionError::Fatal(other.to_string()),
        })
    }

    /// A create or an update: the realm brought to the plan, then the tenant's first
    /// administrator made (when it has one still to make).
    fn provision(&self, t: &TenantRecord, kind: &str) -> Result<(), ProvisionError> {
        let p = self.provisioner_of(t.keycloak_server_id)?;
        let plan = self.task_plan(t)?;
        if kind == TASK_UPDATE {
            p.update(t, &plan)?;
        } else {
            p.create(t, &plan)?;
        }
        if let Some(admin) = &t.first_admin {
            self.make_first_admin(&*p, t, admin, &plan)?;
        }
        Ok(())
    }

    /// The tenant's first administrator, a user of its realm with [`TENANT_ADMIN_ROLE`]. The
    /// user carries the request id stored with it, so a retried run finds the user an earlier
    /// one made instead of failing on its name.
    fn make_first_admin(
        &self,
        p: &dyn Provisioner,
        t: &TenantRecord,
        stored: &str,
        plan: &Plan,
    ) -> Result<(), ProvisionError> {
        let a: Value = serde_json::from_str(stored).map_err(|e| {
            ProvisionError::Fatal(format!("the stored first administrator is unreadable: {e}"))
        })?;
        let s = |k: &str| a.get(k).and_then(Value::as_str).map(String::from);
        let username = s("username").unwrap_or_default();
        let input = super::users::UserInput {
            username: Some(username.clone()),
            email: Some(s("email")),
            first_name: Some(s("first_name")),
            last_name: Some(s("last_name")),
            enabled: Some(true),
            password: s("password"),
            temporary_password: a
                .get("temporary_password")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            roles: Some(vec![TENANT_ADMIN_ROLE.to_string()]),
        };
        let roles: Vec<String> = plan.roles.iter().map(|r| r.name.clone()).collect();
        let marker = s("request").unwrap_or_default();
        p.users()
            .create_marked(&t.realm_name, &roles, &input, &marker)
            .map(|_| ())
            .map_err(|e| {
                let why = format!(
                    "the first administrator `{username}` of realm `{}`: {e}",
                    t.realm_name
                );
                match e {
                    TmError::Conflict(_) | TmError::Invalid(..) | TmError::Forbidden(_) => {
                        ProvisionError::Fatal(why)
                    }
                    _ => ProvisionError::Transient(why),
                }
            })
    }

    /// A delete: the tenant's realm on its server, and on the other server of a move under way
    /// (each only when it carries this installation's mark for the tenant).
    fn delete_realms(&self, t: &TenantRecord) -> Result<(), ProvisionError> {
        let mut servers = vec![t.keycloak_server_id];
        for other in [t.move_to, t.move_from] {
            if other.is_some() && !servers.contains(&other) {
                servers.push(other);
            }
        }
        for server in servers {
            self.provisioner_of(server)?.delete(t)?;
        }
        Ok(())
    }

    /// Whether the tenant's realm as `a` and `b` see it is one realm (two registered servers
    /// that are one Keycloak under two addresses).
    fn same_realm(
        &self,
        a: &dyn Provisioner,
        b: &dyn Provisioner,
        t: &TenantRecord,
    ) -> Result<bool, ProvisionError> {
        Ok(match (a.realm_identity(t)?, b.realm_identity(t)?) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        })
    }

    /// A move: the realm made on the new server from the plan (with the realm's users, without
    /// passwords), the tenant switched to that server, then the old realm removed. Each phase is
    /// recorded on the tenant (`move_to`, then `move_from`), so a retried run carries on where
    /// the last one stopped. When both servers are one Keycloak (one realm under two addresses)
    /// nothing is copied or removed: the tenant only switches address.
    fn move_realm(&self, t: &TenantRecord) -> Result<(), ProvisionError> {
        if let Some(to) = t.move_to {
            let from_p = self.provisioner_of(t.keycloak_server_id)?;
            let to_p = self.provisioner_of(Some(to))?;
            let plan = self.task_plan(t)?;
            let same = self.same_realm(&*from_p, &*to_p, t)?;
            to_p.update(t, &plan)?;
            if same {
                log::info!(
                    "move of tenant `{}`: keycloak servers {:?} and {to} hold one realm `{}`: \
                     nothing to copy",
                    t.id,
                    t.keycloak_server_id,
                    t.realm_name
                );
            } else {
                self.copy_users(&*from_p, &*to_p, t, &plan)?;
            }
            let mut switch = |cur: &TenantRecord| -> Result<Option<TenantChange>, StorageError> {
                if cur.move_to != Some(to) {
                    return Ok(None);
                }
                let mut n = cur.clone();
                n.move_from = cur.keycloak_server_id;
                n.keycloak_server_id = Some(to);
                n.move_to = None;
                n.updated_ms = now_ms();
                Ok(Some((n, None, None)))
            };
            self.db.modify_tenant(&t.id, &mut switch)?;
            log::info!("move of tenant `{}`: now on keycloak server {to}", t.id);
        }
        let t = self.db.get_tenant(&t.id)?;
        if let Some(from) = t.move_from {
            let from_p = self.provisioner_of(Some(from))?;
            let cur_p = self.provisioner_of(t.keycloak_server_id)?;
            if self.same_realm(&*from_p, &*cur_p, &t)? {
                log::info!(
                    "move of tenant `{}`: realm `{}` of keycloak server {from} is the one it \
                     moved to: kept",
                    t.id,
                    t.realm_name
                );
            } else {
                from_p.delete(&t)?;
            }
        }
        Ok(())
    }

    /// The users of the old realm copied to the new one (those of a user federation come from
    /// it again, and are not copied).
    fn copy_users(
        &self,
        from: &dyn Provisioner,
        to: &dyn Provisioner,
        t: &TenantRecord,
        plan: &Plan,
    ) -> Result<(), ProvisionError> {
        let roles: Vec<String> = plan.roles.iter().map(|r| r.name.clone()).collect();
        let transient = |e: TmError| match e {
            TmError::Conflict(_) | TmError::Invalid(..) | TmError::Forbidden(_) => {
                ProvisionError::Fatal(format!(
                    "copying the users of realm `{}`: {e}",
                    t.realm_name
                ))
            }
            e => ProvisionError::Transient(format!(
                "copying the users of realm `{}`: {e}",
                t.realm_name
            )),
        };
        let (_, users) = from
            .users()
            .list(&t.realm_name, &roles, None, 0, None)
            .map_err(transient)?;
        let dest = to.users();
        let mut copied = 0;
        for u in users.iter().filter(|u| !u.federated) {
            if dest.copy_in(&t.realm_name, &roles, u).map_err(transient)? {
                copied += 1;
            }
        }
        log::info!(
            "move of tenant `{}`: {copied} of {} users copied (each must choose a new password)",
            t.id,
            users.len()
        );
        Ok(())
    }

    /// Ends a move that cannot finish; the tenant's failure reason. Before the switch, what the
    /// move made on the new server is removed (unless it is the tenant's realm itself).
    fn abandon_move(&self, id: &str, e: &ProvisionError) -> Result<String, TmError> {
        let t = self.db.get_tenant(id)?;
        let on = t
            .keycloak_server_id
            .map_or("no server".to_string(), |s| format!("keycloak server {s}"));
        if let Some(to) = t.move_to {
            let discard = || -> Result<(), ProvisionError> {
                let to_p = self.provisioner_of(Some(to))?;
                let cur_p = self.provisioner_of(t.keycloak_server_id)?;
                if !self.same_realm(&*cur_p, &*to_p, &t)? {
                    to_p.delete(&t)?;
                }
                Ok(())
            };
            if let Err(d) = discard() {
                log::warn!(
                    "move of tenant `{id}`: what was made of realm `{}` on keycloak server {to} \
                     stays: {d}",
                    t.realm_name
                );
            }
            return Ok(format!(
                "moving to keycloak server {to} failed; the tenant stays on {on}: {e}"
            ));
        }
        if let Some(from) = t.move_from {
            return Ok(format!(
                "moved to {on}, but the old realm `{}` on keycloak server {from} could not be \
                 removed (remove it by hand): {e}",
                t.realm_name
            ));
        }
        Ok(format!("move failed: {e}"))
    }

    /// The users of a tenant's realm, and the roles of its plan (what users may be given).
    /// The realm must be there: a tenant being created, deleted or failed answers 409.
    pub fn tenant_users(&self, id: &str) -> Result<TenantUsersOf, TmError> {
        let t = self.get_tenant(id)?;
        if t.status != AVAILABLE && t.status != UPDATING {
            return Err(TmError::Conflict(format!(
                "tenant `{id}` is {}: its realm has no users until it is AVAILABLE",
                t.status
            )));
        }
        let server = match t.keycloak_server_id {
            Some(sid) => Some(self.db.get_server(sid)?),
            None => None,
        };
        let users = self
            .provisioners
            .for_server(server.as_ref())
            .map_err(|e| TmError::Unavailable(e.to_string()))?
            .users();
        let roles = self.plan(&t)?.roles.into_iter().map(|r| r.name).collect();
        Ok((t, users, roles))
    }

    /// What a service needs to check the tenant's tokens and act for it (secrets included).
    pub fn security_context(&self, id: &str) -> Result<Value, TmError> {
        let t = self.get_tenant(id)?;
        let (url, private) = self.keycloak_urls(&t)?;
        let at = |base: &str, rest: &str| -> Value {
            if base.is_empty() {
                Value::Null
            } else {
                Value::from(format!("{base}/realms/{}{rest}", t.realm_name))
            }
        };
        let issuer = self.issuer_of(&t, &url, &private);
        Ok(json!({
            "tenant_id": t.id,
            "realm_name": t.realm_name,
            "status": t.status,
            "keycloak_url": url,
            "keycloak_private_url": private,
            "issuer": issuer,
            "jwks_uri": at(&private, "/protocol/openid-connect/certs"),
            "client_id": t.client_backend_id,
            "client_secret": t.client_backend_secret,
            "frontend_client_id": t.client_frontend_id,
        }))
    }

    /// Where a tenant's tokens come from: the issuer they name (none: the tenant has no
    /// Keycloak to issue any) and its realm at the private address (keys, UMA decisions).
    pub fn token_source(&self, t: &TenantRecord) -> Result<(Option<String>, String), TmError> {
        let (url, private) = self.keycloak_urls(t)?;
        if private.is_empty() {
            return Ok((None, String::new()));
        }
        let issuer = self
            .issuer_of(t, &url, &private)
            .as_str()
            .map(str::to_string);
        Ok((issuer, format!("{private}/realms/{}", t.realm_name)))
    }

    /// What a login page needs: never a secret.
    pub fn public_config(&self, id: &str) -> Result<Value, TmError> {
        let t = self.get_tenant(id)?;
        let (url, private) = self.keycloak_urls(&t)?;
        let issuer = self.issuer_of(&t, &url, &private);
        Ok(json!({
            "tenant_id": t.id,
            "realm_name": t.realm_name,
            "display_name": t.display_name,
            "keycloak_url": url,
            "issuer": issuer,
            "client_id": t.client_frontend_id,
        }))
    }

    /// The public and the private address of the Keycloak a tenant's realm lives on: the
    /// configured public URL belongs to the default server (and to the local provisioner's
    /// realms); every other server is reached, and seen, at its own URL.
    fn keycloak_urls(&self, t: &TenantRecord) -> Result<(String, String), TmError> {
        let (private, is_default) = match t.keycloak_server_id {
            Some(id) => {
                let s = self.db.get_server(id)?;
                (s.url, s.is_default)
            }
            None => (self.settings.public_keycloak_url.clone(), true),
        };
        let public = if !is_default || self.settings.public_keycloak_url.is_empty() {
            private.clone()
        } else {
            self.settings.public_keycloak_url.clone()
        };
        Ok((public, private))
    }

    /// The issuer of a tenant's tokens: what its realm announces (asked of the server at its
    /// private address, cached five minutes), else the realm under the public address.
    fn issuer_of(&self, t: &TenantRecord, public: &str, private: &str) -> Value {
        if t.keycloak_server_id.is_some() && !private.is_empty() {
            let realm_url = format!("{private}/realms/{}", t.realm_name);
            if let Some(issuer) = announced_issuer_cached(&realm_url) {
                return Value::from(issuer);
            }
        }
        if public.is_empty() {
            Value::Null
        } else {
            Value::from(format!("{public}/realms/{}", t.realm_name))
        }
    }
}

/// How long an announced issuer is kept, and how long a failed look-up is not repeated.
const ISSUER_TTL: Duration = Duration::from_secs(300);
const ISSUER_RETRY: Duration = Duration::from_secs(5);
/// Realms whose issuer is kept at most; the oldest entry goes first beyond it.
const ISSUER_CACHE_MAX: usize = 10_000;

type IssuerCache = std::sync::Mutex<HashMap<String, (Option<String>, std::time::Instant)>>;

fn announced_issuer_cached(realm_url: &str) -> Option<String> {
    static CACHE: std::sync::OnceLock<IssuerCache> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let now = std::time::Instant::now();
    if let Ok(c) = cache.lock()
        && let Some((issuer, at)) = c.get(realm_url)
    {
        let ttl = if issuer.is_some() {
            ISSUER_TTL
        } else {
            ISSUER_RETRY
        };
        if now.duration_since(*at) < ttl {
            return issuer.clone();
        }
    }
    let found = match crate::clients::oidc::announced_issuer(realm_url, Duration::from_secs(3)) {
        Ok(i) => Some(i),
        Err(e) => {
            log::warn!("issuer of {realm_url}: {e}");
            None
        }
    };
    if let Ok(mut c) = cache.lock() {
        crate::clients::insert_bounded(
            &mut c,
            ISSUER_CACHE_MAX,
            realm_url,
            (found.clone(), now),
            |(_, at)| *at,
        );
    }
    found
}

/// `offset` (default 0) and `limit` (default 50, `0` = all).
pub fn paging(q: &HashMap<String, String>) -> Result<(i64, Option<i64>), TmError> {
    let n = |k: &str, d: i64| -> Result<i64, TmError> {
        match q.get(k) {
            None => Ok(d),
            Some(s) => s.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                TmError::field(
                    k,
                    format!("must be a whole number of at least 0, got `{s}`"),
                )
            }),
        }
    };
    let offset = n("offset", 0)?;
    let limit = n("limit", 50)?;
    Ok((offset, if limit == 0 { None } else { Some(limit) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_tenants_fill_the_default_server_then_spread_over_the_others() {
        // No bound: the default server always.
        assert_eq!(pick_server(Some(1), &[(1, 900), (2, 0)], 0), Some(1));
        // The default while it has room.
        assert_eq!(
            pick_server(Some(1), &[(1, 299), (2, 0), (3, 5)], 300),
            Some(1)
        );
        // Then the least loaded with room.
        assert_eq!(
            pick_server(Some(1), &[(1, 300), (2, 7), (3, 5)], 300),
            Some(3)
        );
        assert_eq!(
            pick_server(Some(1), &[(1, 300), (2, 300), (3, 301)], 300),
            Some(1)
        );
        // No default: the least loaded.
        assert_eq!(pick_server(None, &[(1, 3), (2, 2)], 0), Some(2));
        assert_eq!(pick_server(None, &[], 0), None);
    }

    #[test]
    fn ids_and_randomness() {
        assert!(valid_tenant_id("acme-1"));
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!valid_tenant_id(bad), "{bad}");
        }
        let u = uuid4().unwrap();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(uuid4().unwrap(), u);
        assert_eq!(random_hex(24).unwrap().len(), 48);
    }

    #[test]
    fn paging_defaults_and_zero_means_all() {
        let q = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(paging(&q(&[])).unwrap(), (0, Some(50)));
        assert_eq!(
            paging(&q(&[("limit", "0"), ("offset", "5")])).unwrap(),
            (5, None)
        );
        assert!(paging(&q(&[("limit", "-1")])).is_err());
        assert!(paging(&q(&[("offset", "x")])).is_err());
    }
}
