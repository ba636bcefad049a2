//! Revision notices between the replicas of one instance: after each committed write a replica
//! publishes `{"tenant", "revision", "replica"}` on `kaa.v1.iam.{instance}.revision`, and every
//! other replica that receives it brings that tenant up to the revision at once. Best effort:
//! a notice lost (NATS down, a full queue) is covered by the refresher's polling, which stays.
//!
//! Publishing never waits on the request path: the write hands the notice to a bounded queue and
//! a thread of its own sends it.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::service::Iam;
use crate::clients::nats::NatsClient;

/// Notices waiting to be sent; beyond this many they are dropped (polling covers them).
const QUEUE: usize = 4096;

/// The subject the replicas of `instance` announce their revisions on.
pub fn subject(instance: &str) -> String {
    format!("kaa.v1.iam.{instance}.revision")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub tenant: String,
    pub revision: i64,
    pub replica: String,
}

/// The sending side, held by [`Iam`].
pub struct Outbox {
    tx: SyncSender<(String, i64)>,
}

impl Outbox {
    /// Queue a notice for `tenant` at `revision`; never blocks.
    pub fn announce(&self, tenant: &str, revision: i64) {
        match self.tx.try_send((tenant.to_string(), revision)) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                log::debug!("notices: queue full; tenant `{tenant}` left to polling");
            }
        }
    }
}

/// Connect to NATS in the background, announce this replica's revisions and apply the others'.
/// `first_try` is called when the first try to subscribe has ended, in place or not.
pub fn spawn(
    iam: &Arc<Iam>,
    urls: Vec<String>,
    username: String,
    password: String,
    instance: &str,
    replica: &str,
    first_try: super::events::FirstTry,
) {
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
    if iam.notices.set(Outbox { tx }).is_err() {
        return;
    }
    let subject = subject(instance);
    let replica = replica.to_string();
    let client: Arc<Mutex<Option<Arc<NatsClient>>>> = Arc::new(Mutex::new(None));
    {
        let client = Arc::clone(&client);
        let subject = subject.clone();
        let replica = replica.clone();
        let weak = Arc::downgrade(iam);
        let _ = std::thread::Builder::new()
            .name("notice-send".into())
            .spawn(move || send_loop(&weak, &rx, &client, &subject, &replica));
    }
    let weak = Arc::downgrade(iam);
    let _ = std::thread::Builder::new()
        .name("notice-receive".into())
        .spawn(move || {
            receive_loop(
                &weak, &urls, &username, &password, &client, &subject, &replica, first_try,
            )
        });
}

fn current(client: &Mutex<Option<Arc<NatsClient>>>) -> Option<Arc<NatsClient>> {
    client.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

fn send_loop(
    weak: &Weak<Iam>,
    rx: &Receiver<(String, i64)>,
    client: &Mutex<Option<Arc<NatsClient>>>,
    subject: &str,
    replica: &str,
) {
    loop {
        let (tenant, revision) = match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(n) => n,
            Err(RecvTimeoutError::Timeout) => {
                if weak.strong_count() == 0 {
                    return;
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let Some(c) = current(client).filter(|c| c.is_connected()) else {
            continue;
        };
        let notice = Notice {
            tenant,
            revision,
            replica: replica.to_string(),
        };
        let Ok(payload) = serde_json::to_vec(&notice) else {
            continue;
        };
        if let Err(e) = c.publish(subject, payload) {
            log::debug!("notices: tenant `{}`: {e}", notice.tenant);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn receive_loop(
    weak: &Weak<Iam>,
    urls: &[String],
    username: &str,
    password: &str,
    slot: &Mutex<Option<Arc<NatsClient>>>,
    subject: &str,
    replica: &str,
    first_try: super::events::FirstTry,
) {
    use std::sync::atomic::Ordering;
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
        let client = match NatsClient::connect(urls, username, password, Duration::from_secs(5)) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                log::warn!("notices: {e}; retrying in {backoff:?}");
                tried();
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        let mut sub = match client.subscribe(subject) {
            Ok(s) => s,
            Err(e) => {
                log::warn!("notices: cannot subscribe: {e}; retrying in {backoff:?}");
                tried();
                std::thread::sleep(backoff);
                continue;
            }
        };
        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&client));
        log::info!("notices: listening on `{subject}`");
        if let Some(iam) = weak.upgrade() {
            iam.nats.notices_subscribed.store(true, Ordering::Relaxed);
        }
        tried();
        loop {
            let msg = sub.next_timeout(Duration::from_millis(500));
            let Some(iam) = weak.upgrade() else { return };
            iam.nats
                .notices_subscribed
                .store(client.is_connected(), Ordering::Relaxed);
            let Some(msg) = msg else {
                continue;
            };
            let notice: Notice = match serde_json::from_slice(&msg.payload) {
                Ok(n) => n,
                Err(e) => {
                    log::debug!("notices: `{}` ignored: {e}", msg.subject);
                    continue;
                }
            };
            if notice.replica == replica {
                continue;
            }
            iam.state.noticed();
            if let Err(e) = iam
                .state
                .refresh_tenant(&iam.db, &notice.tenant, notice.revision)
            {
                log::debug!(
                    "notices: tenant `{}` at {}: {e}; left to polling",
                    notice.tenant,
                    notice.revision
                );
            }
        }
    }
}
