//! IAM's side of the Tenant Lifecycle Events: `unregistered` removes the tenant's users, groups,
//! policies, resources and pools; `updated` drops what IAM caches about the tenant. Delivery is at
//! least once, so both are idempotent. The listener connects in the background and keeps trying:
//! a NATS outage never stops IAM from serving.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::caller::SYSTEM_TENANT;
use super::err::IamError;
use super::service::Iam;
use crate::clients::nats::NatsClient;
use crate::clients::tle::{self, LifecycleEvent, LifecycleKind};
use crate::clock::now_ms;
use crate::storage::SnapshotStore;

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
                self.db.purge_tenant(&e.tenant_id)?;
                self.state.drop_tenant(&e.tenant_id);
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

/// Subscribe to every originator's tenant lifecycle events and apply them until `iam` is dropped.
pub fn spawn_listener(iam: &Arc<Iam>, urls: Vec<String>, username: String, password: String) {
    let weak: Weak<Iam> = Arc::downgrade(iam);
    let _ = std::thread::Builder::new()
        .name("tle-listener".into())
        .spawn(move || {
            let mut backoff = Duration::from_millis(500);
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
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        continue;
                    }
                };
                let mut sub = match client.subscribe(tle::SUBSCRIPTION) {
                    Ok(s) => s,
                    Err(e) => {
                        log::warn!("events: cannot subscribe: {e}; retrying in {backoff:?}");
                        std::thread::sleep(backoff);
                        continue;
                    }
                };
                // From here async-nats reconnects and resubscribes by itself.
                log::info!("events: listening on `{}`", tle::SUBSCRIPTION);
                loop {
                    let Some(iam) = weak.upgrade() else { return };
                    drop(iam);
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
                }
            }
        });
}
