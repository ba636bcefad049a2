//! The Tenant Manager wired: its token and scope checks, settings and secret keys, storage's
//! audit settings, the provisioners (local, or one Keycloak admin client per registered
//! server), bootstrap, the task workers, the outbox publisher, the gauges, and the router over
//! the handler context.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clients::keycloak::{AdminCredentials, KeycloakAdmin, KeycloakError};
use crate::clients::oidc::Jwks;
use crate::clients::uma::UmaClient;
use crate::config::Config;
use crate::http::api::Api;
use crate::http::auth::{Authenticator, Issuer};
use crate::http::error::ErrorStyle;
use crate::http::ops::Ops;
use crate::http::realm_auth::RealmAuths;
use crate::http::server::Handler;
use crate::http::tm_api::{TenantCtx, TmAuth};
use crate::storage::KeycloakServerRecord;
use crate::tenants::keycloak_provisioner::KeycloakProvisioner;
use crate::tenants::provision::{LocalProvisioner, ProvisionError, Provisioner, Provisioners};
use crate::tenants::service::{self, Tm, TmSettings};
use crate::tenants::worker::{self, Signal};
use crate::tenants::{bootstrap, secret_keys};

/// Tenants without a Keycloak server are provisioned locally; a tenant on a Keycloak server by
/// that server's admin client, one per server (made again when the server's record changes).
struct DefaultProvisioners {
    local: Arc<LocalProvisioner>,
    timeout: Duration,
    /// The installation id the realms are marked with.
    installation: String,
    servers: Mutex<HashMap<i64, (KeycloakServerRecord, Arc<KeycloakProvisioner>)>>,
}

impl Provisioners for DefaultProvisioners {
    fn for_server(
        &self,
        server: Option<&KeycloakServerRecord>,
    ) -> Result<Arc<dyn Provisioner>, ProvisionError> {
        let Some(s) = server else {
            return Ok(Arc::clone(&self.local) as Arc<dyn Provisioner>);
        };
        let mut cache = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((record, p)) = cache.get(&s.id)
            && record == s
        {
            return Ok(Arc::clone(p) as Arc<dyn Provisioner>);
        }
        let kc = keycloak_admin(s, self.timeout)
            .map_err(|e| ProvisionError::Fatal(format!("keycloak: {e}")))?;
        let p = Arc::new(KeycloakProvisioner::with_client(
            s.id,
            Arc::new(kc),
            &self.installation,
        ));
        cache.insert(s.id, (s.clone(), Arc::clone(&p)));
        Ok(p as Arc<dyn Provisioner>)
    }
}

/// The admin client of a registered server: its URL, admin realm and credentials (a username
/// and password win over a client id and secret).
fn keycloak_admin(
    s: &KeycloakServerRecord,
    timeout: Duration,
) -> Result<KeycloakAdmin, KeycloakError> {
    let credentials = match (&s.username, &s.password, &s.client_id, &s.client_secret) {
        (Some(u), Some(p), _, _) => AdminCredentials::Password {
            username: u.clone(),
            password: p.clone(),
        },
        (_, _, Some(c), Some(cs)) => AdminCredentials::Client {
            client_id: c.clone(),
            client_secret: cs.clone(),
        },
        _ => {
            return Err(KeycloakError::Unauthorized(format!(
                "Keycloak server {} (`{}`) has no admin credentials (username and password, \
                 or client id and secret)",
                s.id, s.url
            )));
        }
    };
    let realm = if s.admin_realm.is_empty() {
        "master"
    } else {
        &s.admin_realm
    };
    Ok(KeycloakAdmin::new(&s.url, realm, credentials, timeout))
}

/// Timeout of one Keycloak admin call: `tenant-manager.keycloak.timeout-ms` (default 10 s).
fn keycloak_timeout(config: &Config) -> Result<Duration, String> {
    Ok(Duration::from_millis(
        config.tenant_manager.keycloak.timeout_ms,
    ))
}

/// With security on: tokens from the system realm only, scopes asked of Keycloak.
fn tm_auth(config: &Config) -> Result<Option<TmAuth>, String> {
    let s = &config.security;
    if !s.enabled {
        return Ok(None);
    }
    if s.issuer_public_url.is_empty() || s.client_id.is_empty() {
        return Err("config: the Tenant Manager with security on needs \
                    `security.issuer.public-url` and `security.client-id` (the system realm's \
                    backend client, the audience of scope decisions)"
            .into());
    }
    let keys_from = if s.issuer_private_url.is_empty() {
        &s.issuer_public_url
    } else {
        &s.issuer_private_url
    };
    let jwks = Jwks::new(
        &Jwks::certs_url(keys_from),
        Duration::from_secs(5),
        s.jwks_refresh_interval,
    )
    .with_max_age(s.jwks_max_age);
    let tokens = Authenticator::new(
        vec![Issuer {
            issuer: s.issuer_public_url.clone(),
            tenant: "kaa".into(),
            jwks,
        }],
        crate::http::auth::token_audiences(&s.audiences, &s.client_id),
        s.leeway,
    );
    let ttl = config.tenant_manager.auth.decision_cache_seconds;
    Ok(Some(TmAuth {
        tokens,
        scopes: UmaClient::new(
            keys_from,
            &s.client_id,
            "kaa-system",
            Duration::from_secs(ttl),
        ),
        issuer: s.issuer_public_url.clone(),
        realms: RealmAuths::new(
            s.leeway,
            s.jwks_refresh_interval,
            s.jwks_max_age,
            Duration::from_secs(ttl),
        ),
    }))
}

/// Seal the stored secrets with the configured key: rows of a previous key, or from before
/// encryption, are sealed again with the current one before anything else runs.
fn seal_secrets(config: &Config, db: &crate::storage::Database) -> Result<(), String> {
    let keys = secret_keys(config)?;
    let id = keys.current_id().map(str::to_string);
    db.set_secret_keys(keys);
    let n = db
        .reseal_secrets()
        .map_err(|e| format!("stored secrets: {e}"))?;
    match id {
        Some(id) if n > 0 => {
            log::info!("secrets: {n} stored secrets sealed again with key `{id}`")
        }
        Some(_) => {}
        None => log::warn!(
            "secrets: `tenant-manager.secret-key` is not set: client secrets and Keycloak admin \
             credentials are stored unencrypted (set KAA_TENANT_MANAGER_SECRET_KEY in production)"
        ),
    }
    Ok(())
}

/// The queue, outbox and tenant gauges of `/metrics`, read from the database at scrape time
/// (`service_gauge{name=...}`; `tm_stats_up` 0 when the database did not answer).
fn spawn_gauges(tm: &Arc<Tm>, ops: &Arc<Ops>) {
    let weak = Arc::downgrade(tm);
    let _ = ops.scrape.set(Box::new(move |m| {
        let Some(tm) = weak.upgrade() else { return };
        match tm.db.tenant_manager_stats(crate::clock::now_ms()) {
            Ok(st) => {
                m.set_gauge("tm_stats_up", 1);
                m.set_gauge("tm_tasks_queued", st.tasks);
                m.set_gauge(
                    "tm_tasks_oldest_due_age_seconds",
                    st.oldest_due_task_ms / 1000,
                );
                m.set_gauge("tm_tasks_attempts", st.task_attempts);
                m.set_gauge("tm_tasks_failing", st.failing_tasks);
                m.set_gauge("tm_outbox_pending", st.outbox_pending);
                m.set_gauge(
                    "tm_outbox_oldest_pending_age_seconds",
                    st.oldest_pending_event_ms / 1000,
                );
                for status in [
                    service::CREATING,
                    service::AVAILABLE,
                    service::UPDATING,
                    service::DELETING,
                    service::FAILED,
                    service::MOVING,
                ] {
                    let n = st
                        .tenants
                        .iter()
                        .find(|(s, _)| s == status)
                        .map_or(0, |(_, n)| *n);
                    m.set_gauge(&format!("tm_tenants_{}", status.to_lowercase()), n);
                }
            }
            Err(e) => {
                log::warn!("metrics: tenant manager gauges: {e}");
                m.set_gauge("tm_stats_up", 0);
            }
        }
        m.set_total(
            "tm_audit_prune_passes_total",
            "Completed passes of the audit trail's pruning",
            tm.audit_prune_passes.load(Ordering::Relaxed),
        );
        m.set_total(
            "tm_audit_rows_pruned_total",
            "Audit rows deleted as past the retention",
            tm.audit_pruned.load(Ordering::Relaxed),
        );
    }));
}

/// Prune the trail every `tenant-manager.audit.prune-interval` while the service lives.
fn spawn_audit_pruner(tm: &Arc<Tm>) {
    let r = tm.settings.audit.retention;
    crate::audit::spawn_pruner(tm, r, move |tm: &Tm| {
        match crate::audit::prune_once(&tm.db, crate::storage::Trail::TenantManager, r) {
            Ok(0) => {}
            Ok(n) => {
                tm.audit_pruned.fetch_add(n, Ordering::Relaxed);
                log::info!("audit: {n} rows past the retention deleted");
            }
            Err(e) => log::warn!("audit: pruning failed, tried again later: {e}"),
        }
        tm.audit_prune_passes.fetch_add(1, Ordering::Relaxed);
    });
}

/// Wire the Tenant Manager: bootstrap, workers, outbox publisher, API.
pub fn build(config: &Arc<Config>, ops: &Arc<Ops>) -> Result<Arc<dyn Handler>, String> {
    build_with_signal(config, ops).map(|(handler, _)| handler)
}

/// [`build`], and the signal that stops its workers and publisher (tests, embedding).
pub fn build_with_signal(
    config: &Arc<Config>,
    ops: &Arc<Ops>,
) -> Result<(Arc<dyn Handler>, Arc<Signal>), String> {
    let auth = tm_auth(config)?;
    let settings = TmSettings::from_config(config)?;
    seal_secrets(config, &ops.db)?;
    // The trail's platform-wide records belong to the system tenant; published, every record
    // goes into the outbox with its change, from bootstrap's first one.
    ops.db.set_audit_settings(crate::storage::AuditSettings {
        home_tenant: settings.system_tenant.clone(),
        tm_feed: settings.audit.subject.clone(),
        ..(*ops.db.audit_settings()).clone()
    });
    let installation = bootstrap::installation_id(&ops.db, settings.installation_id.as_deref())
        .map_err(|e| format!("bootstrap: installation id: {e}"))?;
    log::info!("tenant manager installation `{installation}`");
    let provisioners = Arc::new(DefaultProvisioners {
        local: Arc::new(LocalProvisioner {
            db: Arc::clone(&ops.db),
        }),
        timeout: keycloak_timeout(config)?,
        installation,
        servers: Mutex::new(HashMap::new()),
    });
    let tm = Arc::new(Tm {
        db: Arc::clone(&ops.db),
        settings,
        provisioners,
        audit_pruned: Default::default(),
        audit_prune_passes: Default::default(),
    });
    {
        // Replicas starting together seal and bootstrap one after the other.
        let _lock = ops
            .db
            .startup_lock()
            .map_err(|e| format!("bootstrap: start-up lock: {e}"))?;
        seal_secrets(config, &ops.db)?;
        bootstrap::run(&tm).map_err(|e| format!("bootstrap: {e}"))?;
    }
    spawn_gauges(&tm, ops);
    spawn_audit_pruner(&tm);
    let signal = Signal::new();
    worker::spawn_workers(&tm, &signal);
    worker::spawn_subscription_sweep(&tm, &signal);
    if !config.nats.urls.is_empty() {
        worker::spawn_publisher(
            &tm,
            &signal,
            config.nats.urls.clone(),
            config.nats.username.clone(),
            config.nats.password.expose().to_string(),
        );
    }
    let ctx = TenantCtx {
        ops: Arc::clone(ops),
        config: Arc::clone(config),
        tm,
        signal: Arc::clone(&signal),
        auth,
    };
    let handler: Arc<dyn Handler> = Arc::new(
        Api::new(crate::http::tm_api::router(), ctx, Arc::clone(&ops.metrics))
            .with_error_style(ErrorStyle::ErrorDetails),
    );
    Ok((handler, signal))
}
