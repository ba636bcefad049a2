//! IAM's side of the Tenant Lifecycle Events: `unregistered` removes the tenant's users, groups,
//! policies, resources and pools; `updated` drops what IAM caches about the tenant. Delivery is at
//! least once, so both are idempotent. The listener connects in the background and keeps trying:
//! a NATS outage never stops IAM from serving.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::caller::SYSTEM_TENANT;
use super::err::IamError;
use super::service::Iam;
use crate::clients::nats::NatsClient;
use crate::clients::tle::{self, LifecycleEvent, LifecycleKind};
use crate::clock::now_ms;
use crate::storage::SnapshotStore;

/// IAM's NATS subscriptions as `/metrics` shows them.
#[derive(Debug, Default)]
pub struct NatsState {
    /// The tenant lifecycle events' subscription is in place.
    pub events_subscribed: AtomicBool,
    /// The revision notices' subscription is in place.
    pub notices_subscribed: AtomicBool,
    /// Tenant lifecycle messages handled since start: applied, or ignored as undecodable.
    pub events_handled: AtomicU64,
}

impl NatsState {
    /// How many of the two subscriptions are in place.
    pub fn subscriptions(&self) -> i64 {
        i64::from(self.events_subscribed.load(Ordering::Relaxed))
            + i64::from(self.notices_subscribed.load(Ordering::Relaxed))
    }

    pub fn events_handled(&self) -> u64 {
        self.events_handled.load(Ordering::Relaxed)
    }
}

/// Called once, when a listener's first try to subscribe has ended (subscribed or not): IAM's
/// readiness waits for it, so that a replica reported ready with NATS reachable hears events.
pub type FirstTry = Box<dyn FnOnce() + Send>;

/// What one reconciliation with the Tenant Manager did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// Tenants IAM holds data for that the Tenant Manager knows (kept).
    pub kept: usize,
    /// Tenants removed because the Tenant Manager does not know them.
    pub removed: Vec<String>,
}

impl Iam {
    /// Apply one lifecycle event. Returns what was done, for the log.
    pub fn on_lifecycle(
        &self,
        kind: LifecycleKind,
        e: &LifecycleEvent,
    ) -> Result<&'static str, IamError> {
        if e.expired(now_ms()) {
            return Ok("expired, ignored");
        }
        match kind {
            LifecycleKind::Unregistered if e.tenant_id == SYSTEM_TENANT => {
                Ok("the system tenant is never removed, ignored")
            }
            LifecycleKind::Unregistered => {
                self.remove_tenant(&e.tenant_id)?;
                Ok("tenant data removed")
            }
            LifecycleKind::Updated => {
                if let Some(r) = self.realm_users.get() {
                    r.forget(&e.tenant_id);
                }
                match self.tenant_contexts.get() {
                    Some(tm) => {
                        tm.forget_tenant(&e.tenant_id);
                        Ok("cached security context dropped")
                    }
                    None => Ok("nothing cached for the tenant"),
                }
            }
        }
    }
}

impl Iam {
    /// Remove every user, group, policy, resource and pool of `tenant` and what is cached about
    /// it (the tenant was unregistered).
    fn remove_tenant(&self, tenant: &str) -> Result<(), IamError> {
        self.db.purge_tenant(tenant)?;
        self.state.drop_tenant(tenant);
        if let Some(r) = self.realm_users.get() {
            r.forget(tenant);
        }
        if let Some(tm) = self.tenant_contexts.get() {
            tm.forget_tenant(tenant);
        }
        Ok(())
    }

    /// Remove the data of every tenant the Tenant Manager does not know (an `unregistered` event
    /// this process missed). The system tenant is always kept. Nothing is removed unless the
    /// Tenant Manager answered for every tenant, and for the system tenant as known (a wrong URL
    /// answering 404 to everything must not empty IAM). Without a Tenant Manager: nothing to do.
    pub fn reconcile_tenants(&self) -> Result<Reconciled, String> {
        let Some(tm) = self.tenant_contexts.get() else {
            return Ok(Reconciled::default());
        };
        let held = self
            .db
            .tenants_with_data()
            .map_err(|e| format!("tenants with data: {e}"))?;
        match tm.knows_tenant(SYSTEM_TENANT) {
            Ok(true) => {}
            Ok(false) => {
                return Err(format!(
                    "the tenant manager does not know the system tenant `{SYSTEM_TENANT}`: \
                     nothing removed"
                ));
            }
            Err(e) => return Err(format!("{e}; nothing removed")),
        }
        let mut kept = 0;
        let mut unknown = Vec::new();
        for t in held.into_iter().filter(|t| t != SYSTEM_TENANT) {
            match tm.knows_tenant(&t) {
                Ok(true) => kept += 1,
                Ok(false) => unknown.push(t),
                Err(e) => return Err(format!("tenant `{t}`: {e}; nothing removed")),
            }
        }
        let mut removed = Vec::new();
        for t in unknown {
            self.remove_tenant(&t)
                .map_err(|e| format!("tenant `{t}`: {e}"))?;
            log::info!(
                "events: tenant `{t}` is unknown to the tenant manager: its data was removed"
            );
            removed.push(t);
        }
        Ok(Reconciled { kept, removed })
    }
}

/// Asks for a reconciliation (a full queue already holds one: asking again changes nothing).
#[derive(Clone)]
pub struct ReconcileTrigger(SyncSender<()>);

impl ReconcileTrigger {
    pub fn request(&self) {
        match self.0.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
        }
    }
}

/// Run [`Iam::reconcile_tenants`] once at start and whenever asked, retrying with backoff while
/// the Tenant Manager or storage cannot answer. Nothing to start without a Tenant Manager.
pub fn spawn_reconciler(iam: &Arc<Iam>) -> Option<ReconcileTrigger> {
    iam.tenant_contexts.get()?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let trigger = ReconcileTrigger(tx);
    trigger.request();
    let weak = Arc::downgrade(iam);
    std::thread::Builder::new()
        .name("tenant-reconcile".into())
        .spawn(move || reconcile_loop(&weak, &rx))
        .ok()?;
    Some(trigger)
}

fn reconcile_loop(weak: &Weak<Iam>, rx: &Receiver<()>) {
    use std::sync::mpsc::RecvTimeoutError;
    loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(()) => {}
            Err(RecvTimeoutError::Timeout) => {
                if weak.strong_count() == 0 {
                    return;
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let mut backoff = Duration::from_millis(500);
        loop {
            let Some(iam) = weak.upgrade() else { return };
            let outcome = iam.reconcile_tenants();
            drop(iam);
            match outcome {
                Ok(r) => {
                    log::info!(
                        "events: reconciled with the tenant manager: {} tenants kept, {} removed",
                        r.kept,
                        r.removed.len()
                    );
                    break;
                }
                Err(e) => {
                    log::warn!("events: reconciliation: {e}; retrying in {backoff:?}");
                    // A newer request coalesces with this retry.
                    let _ = rx.recv_timeout(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

/// Subscribe to every originator's tenant lifecycle events and apply them until `iam` is dropped.
/// After the subscription is in place, and after every reconnect (async-nats renews it), ask
/// `reconcile` for a reconciliation: events sent while this process was not subscribed are lost.
/// `first_try` is called when the first try to subscribe has ended, in place or not.
pub fn spawn_listener(
    iam: &Arc<Iam>,
    urls: Vec<String>,
    username: String,
    password: String,
    reconcile: Option<ReconcileTrigger>,
    first_try: FirstTry,
) {
    let weak: Weak<Iam> = Arc::downgrade(iam);
    let _ = std::thread::Builder::new()
        .name("tle-listener".into())
        .spawn(move || {
            let mut backoff = Duration::from_millis(500);
            let mut first_try = Some(first_try);
            let mut tried = move || {
                if let Some(f) = first_try.take() {
                    f();
                }
            };
            loop {
                if weak.strong_count() == 0 {
                    return;
                }
                let client = match NatsClient::connect(
                    &urls,
                    &username,
                    &password,
                    Duration::from_secs(5),
                ) {
                    Ok(c) => c,
                    Err(e) => {
                        log::warn!("events: {e}; retrying in {backoff:?}");
                        tried();
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        continue;
                    }
                };
                let mut sub = match client.subscribe(tle::SUBSCRIPTION) {
                    Ok(s) => s,
                    Err(e) => {
                        log::warn!("events: cannot subscribe: {e}; retrying in {backoff:?}");
                        tried();
                        std::thread::sleep(backoff);
                        continue;
                    }
                };
                // From here async-nats reconnects and resubscribes by itself. The subscription
                // is in place: `subscribe` returns after the server answered a flush behind it.
                log::info!("events: listening on `{}`", tle::SUBSCRIPTION);
                if let Some(iam) = weak.upgrade() {
                    iam.nats.events_subscribed.store(true, Ordering::Relaxed);
                }
                tried();
                let mut connects = client.connects();
                if let Some(r) = &reconcile {
                    r.request();
                }
                loop {
                    let Some(iam) = weak.upgrade() else { return };
                    iam.nats
                        .events_subscribed
                        .store(client.is_connected(), Ordering::Relaxed);
                    drop(iam);
                    let now = client.connects();
                    if now != connects && client.is_connected() {
                        connects = now;
                        log::info!("events: reconnected to NATS; reconciling");
                        if let Some(r) = &reconcile {
                            r.request();
                        }
                    }
                    let Some(msg) = sub.next_timeout(Duration::from_millis(500)) else {
                        continue;
                    };
                    let Some(iam) = weak.upgrade() else { return };
                    let outcome = tle::kind_of(&msg.subject)
                        .and_then(|k| LifecycleEvent::decode(&msg.payload).map(|e| (k, e)));
                    match outcome {
                        Ok((kind, e)) => match iam.on_lifecycle(kind, &e) {
                            Ok(what) => log::info!(
                                "events: tenant `{}` {} ({}): {what}",
                                e.tenant_id,
                                kind.event_type(),
                                e.correlation_id
                            ),
                            // Not acknowledged in any way: the next delivery or the next
                            // `unregistered` retries; storage errors are transient.
                            Err(err) => log::warn!(
                                "events: tenant `{}` {}: {err}",
                                e.tenant_id,
                                kind.event_type()
                            ),
                        },
                        Err(err) => log::warn!("events: `{}` ignored: {err}", msg.subject),
                    }
                    // Counted once its effects are in place: tests wait on it.
                    iam.nats.events_handled.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
}
