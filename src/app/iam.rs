//! The IAM service wired: its configuration checked, the audit trail and decision log set up,
//! the domain ([`Iam`]) over opened storage, its base policies synced and decision index loaded
//! and kept in step (refresher, NATS notices and tenant events), its metrics, and the router over
//! the handler context.

use std::sync::Arc;
use std::time::Duration;

use crate::clients::oidc::Jwks;
use crate::clients::tenant_manager::TenantManagerClient;
use crate::config::Config;
use crate::http::api::Api;
use crate::http::auth::{Authenticator, Issuer};
use crate::http::iam_api::IamCtx;
use crate::http::ops::Ops;
use crate::http::server::Handler;
use crate::iam::{Iam, audit, caller, decision_log, events, notices, realm_users};

/// Wire the IAM service over opened storage: sync base policies, load the decision index, keep
/// it in step with the database, and serve the API.
pub fn build(config: &Arc<Config>, ops: &Arc<Ops>) -> Result<Arc<dyn Handler>, String> {
    let (auth, tenants) = authenticator(config)?;
    let trail = audit::trail_config(&config.iam, !config.nats.urls.is_empty())?;
    let retention = trail.retention;
    // Published, every record is written into the outbox with its change, from the first one.
    ops.db.set_audit_settings(crate::storage::AuditSettings {
        iam_feed: trail.subject.clone(),
        ..(*ops.db.audit_settings()).clone()
    });
    let decisions = decision_log::settings(&config.iam.decision_log)?;
    let iam = Arc::new(Iam::new(
        Arc::clone(&ops.db),
        &config.iam,
        config.server.max_page_size,
    )?);
    let s = &config.security;
    if s.enabled && s.keycloak_users {
        let own = realm_users::RealmUsers::static_access(
            if s.issuer_private_url.is_empty() {
                &s.issuer_public_url
            } else {
                &s.issuer_private_url
            },
            &s.client_id,
            &s.client_secret,
        );
        let source = match (&tenants, own) {
            (Some(tm), own) => realm_users::RealmSource::TenantManager(Arc::clone(tm), own),
            (None, Some(own)) => realm_users::RealmSource::Static(own),
            (None, None) => {
                log::warn!(
                    "config: security.keycloak-users is on but the system tenant's realm cannot \
                     be reached (it needs security.client-id, security.client-secret and an \
                     issuer URL ending in /realms/<realm>): its users stay local"
                );
                realm_users::RealmSource::None
            }
        };
        let _ = iam
            .realm_users
            .set(Arc::new(realm_users::RealmUsers::new(source)));
    }
    if let Some(t) = tenants {
        let _ = iam.tenant_contexts.set(t);
    }
    {
        // Replicas starting together write the base policies one after the other.
        let _lock = ops
            .db
            .startup_lock()
            .map_err(|e| format!("base policies: start-up lock: {e}"))?;
        iam.sync_base_policies()
            .map_err(|e| format!("base policies: {e}"))?;
    }
    let started = std::time::Instant::now();
    let tenants = iam
        .state
        .load_all(&ops.db)
        .map_err(|e| format!("index: {e}"))?;
    log::info!(
        "index: {tenants} tenants loaded in {} ms",
        started.elapsed().as_millis()
    );
    let _ = iam.decision_log.set(decision_log::DecisionLog::start(
        decisions,
        &config.service.replica_id,
    ));
    spawn_refresher(&iam, Duration::from_millis(500));
    audit::spawn_pruner(&iam, retention);
    let weak = Arc::downgrade(&iam);
    let _ = ops.scrape.set(Box::new(move |m| {
        if let Some(iam) = weak.upgrade() {
            let (reloads, deltas) = iam.state.update_counts();
            m.set_total(
                "iam_index_reloads_total",
                "Whole-tenant reloads of the decision index",
                reloads,
            );
            m.set_total(
                "iam_index_updates_total",
                "Incremental updates of the decision index",
                deltas,
            );
            m.set_total(
                "iam_revision_notices_total",
                "Revision notices received from other replicas",
                iam.state.notice_count(),
            );
            m.set_total(
                "iam_index_refresh_passes_total",
                "Passes of the refresher comparing every tenant's revision with the database",
                iam.state.refresh_passes(),
            );
            m.set_total(
                "iam_tenant_events_total",
                "Tenant lifecycle messages handled (applied, or ignored as undecodable)",
                iam.nats.events_handled(),
            );
            m.set_gauge("iam_nats_subscriptions", iam.nats.subscriptions());
            m.set_total(
                "iam_audit_prune_passes_total",
                "Completed passes of the audit trail's pruning",
                iam.audit_prune_passes
                    .load(std::sync::atomic::Ordering::Relaxed),
            );
            let (written, dropped) = iam
                .decision_log
                .get()
                .map_or((0, 0), decision_log::DecisionLog::counts);
            m.set_total(
                "iam_decision_log_lines_total",
                "Decision log lines written",
                written,
            );
            m.set_total(
                "iam_decision_log_dropped_total",
                "Decision log lines dropped (the buffer was full, or the destination failed)",
                dropped,
            );
            m.set_total(
                "iam_audit_rows_pruned_total",
                "Audit rows deleted as past the retention",
                iam.audit_pruned.load(std::sync::atomic::Ordering::Relaxed),
            );
        }
    }));
    // With a Tenant Manager: reconcile at start and after every NATS (re)connection.
    let reconcile = events::spawn_reconciler(&iam);
    if trail.subject.is_some() {
        // The audit feed's publisher: stops when the database goes (the service with it).
        crate::outbox::spawn_publisher(
            &ops.db,
            crate::storage::Trail::Iam,
            &crate::outbox::Signal::new(),
            config.nats.urls.clone(),
            config.nats.username.clone(),
            config.nats.password.expose().to_string(),
        );
    }
    if !config.nats.urls.is_empty() {
        let [events_tried, notices_tried] = nats_start_gate(ops);
        events::spawn_listener(
            &iam,
            config.nats.urls.clone(),
            config.nats.username.clone(),
            config.nats.password.expose().to_string(),
            reconcile,
            events_tried,
        );
        notices::spawn(
            &iam,
            config.nats.urls.clone(),
            config.nats.username.clone(),
            config.nats.password.expose().to_string(),
            &config.service.instance_name,
            &config.service.replica_id,
            notices_tried,
        );
    }
    let ctx = IamCtx {
        ops: Arc::clone(ops),
        config: Arc::clone(config),
        iam,
        auth,
    };
    // Without security a decision reads only the in-memory index; with it, the caller's token
    // and user may need the issuer, the Tenant Manager or the database.
    Ok(Arc::new(
        Api::new(
            crate::http::iam_api::router(),
            ctx,
            Arc::clone(&ops.metrics),
        )
        .with_inline_if(|ctx: &IamCtx, _| ctx.auth.is_none()),
    ))
}

/// Why `/health/ready` answers 503 until both NATS listeners tried to subscribe once.
const SUBSCRIBING: &str = "subscribing to NATS (tenant lifecycle events, revision notices)";

/// Readiness waits for the first try of each NATS listener: with NATS reachable, a replica
/// reported ready has its subscriptions in place and hears every event published from then on;
/// with NATS unreachable it is ready after the first failed try and serves without it (events
/// missed are made up by the reconciliation after the subscription, notices by polling).
fn nats_start_gate(ops: &Arc<Ops>) -> [events::FirstTry; 2] {
    use std::sync::atomic::{AtomicUsize, Ordering};
    if let Ok(mut r) = ops.not_ready_reason.write() {
        *r = Some(SUBSCRIBING.to_string());
    }
    let pending = Arc::new(AtomicUsize::new(2));
    let one = || -> events::FirstTry {
        let pending = Arc::clone(&pending);
        let ops = Arc::downgrade(ops);
        Box::new(move || {
            if pending.fetch_sub(1, Ordering::SeqCst) != 1 {
                return;
            }
            let Some(ops) = ops.upgrade() else { return };
            if let Ok(mut r) = ops.not_ready_reason.write()
                && r.as_deref() == Some(SUBSCRIBING)
            {
                *r = None;
            }
        })
    };
    [one(), one()]
}

/// The token checks of a secured deployment. Without multitenancy every token comes from the
/// system tenant's issuer (`security.issuer.public-url`; keys fetched through the private URL).
type Auth = (Option<Authenticator>, Option<Arc<TenantManagerClient>>);

fn authenticator(config: &Config) -> Result<Auth, String> {
    let s = &config.security;
    if !s.enabled {
        return Ok((None, None));
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
    let audiences = crate::http::auth::token_audiences(&s.audiences, &s.client_id);
    let auth = Authenticator::new(
        vec![Issuer {
            issuer: s.issuer_public_url.clone(),
            tenant: caller::SYSTEM_TENANT.to_string(),
            jwks,
        }],
        audiences,
        s.leeway,
    );
    if !s.multitenancy_enabled {
        return Ok((Some(auth), None));
    }
    if s.tenant_manager_url.is_empty() {
        return Err(
            "config: `security.multitenancy.tenant-manager-url` must be set when \
                    multitenancy is enabled"
                .into(),
        );
    }
    let tm = Arc::new(TenantManagerClient::new(
        &s.tenant_manager_url,
        keys_from,
        &s.client_id,
        s.client_secret.expose(),
        Duration::from_secs(300),
        s.jwks_refresh_interval,
        s.jwks_max_age,
    ));
    Ok((Some(auth.with_tenants(Arc::clone(&tm))), Some(tm)))
}

/// Poll the per-tenant revisions so writes of other replicas show up within a second, also when
/// their notices (`notices`) do not arrive.
fn spawn_refresher(iam: &Arc<Iam>, every: Duration) {
    let weak = Arc::downgrade(iam);
    let _ = std::thread::Builder::new()
        .name("index-refresh".into())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                let Some(iam) = weak.upgrade() else { return };
                match iam.state.refresh(&iam.db) {
                    Ok(0) => {}
                    Ok(n) => log::debug!("index: {n} tenants reloaded after writes elsewhere"),
                    Err(e) => log::debug!("index: refresh skipped: {e}"),
                }
            }
        });
}
