//! The outbox publisher: rows written into `outbox` in the transaction of the change they
//! report (the Tenant Manager's lifecycle events, either service's audit feed) are sent to NATS
//! in order and marked published only after the server confirms it has them (at least once;
//! nothing is lost while NATS is down or cut mid-batch).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::clients::nats::NatsClient;
use crate::storage::{Database, OutboxStore, Pass, Trail};

/// Stops the background threads and wakes them for new work.
#[derive(Default)]
pub struct Signal {
    stop: AtomicBool,
    wake: Mutex<u64>,
    cv: Condvar,
}

impl Signal {
    pub fn new() -> Arc<Signal> {
        Arc::new(Signal::default())
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.notify();
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// New work is there (a write committed).
    pub fn notify(&self) {
        if let Ok(mut n) = self.wake.lock() {
            *n += 1;
        }
        self.cv.notify_all();
    }

    /// Sleep until notified, stopped or `d` passed.
    pub fn wait(&self, d: Duration) {
        let Ok(g) = self.wake.lock() else { return };
        let seen = *g;
        let _ = self
            .cv
            .wait_timeout_while(g, d, |n| *n == seen && !self.stop.load(Ordering::SeqCst));
    }
}

/// Publish to NATS, oldest first, the outbox rows the service of `origin` wrote, until `signal`
/// stops or the database is dropped.
pub fn spawn_publisher(
    db: &Arc<Database>,
    origin: Trail,
    signal: &Arc<Signal>,
    urls: Vec<String>,
    username: String,
    password: String,
) {
    let (db, signal) = (Arc::downgrade(db), Arc::clone(signal));
    let _ = std::thread::Builder::new()
        .name("outbox".into())
        .spawn(move || {
            let mut client: Option<NatsClient> = None;
            let mut backoff = Duration::from_millis(200);
            while !signal.stopped() {
                let Some(db) = db.upgrade() else { return };
                let mut trouble: Option<String> = None;
                let pass = db.publish_pending(origin, 100, &mut |batch| {
                    if client.is_none() {
                        match NatsClient::connect(
                            &urls,
                            &username,
                            &password,
                            Duration::from_secs(5),
                        ) {
                            Ok(c) => client = Some(c),
                            Err(e) => {
                                trouble = Some(format!("{e}; {} events wait", batch.len()));
                                return false;
                            }
                        }
                    }
                    let Some(c) = &client else { return false };
                    let msgs: Vec<(String, Vec<u8>)> = batch
                        .iter()
                        .map(|e| (e.subject.clone(), e.payload.clone()))
                        .collect();
                    // Marked published only once the server confirms the whole batch;
                    // otherwise the batch goes again (at least once).
                    match c.publish_confirmed(msgs) {
                        Ok(()) => true,
                        Err(err) => {
                            trouble = Some(format!("{} events not confirmed: {err}", batch.len()));
                            client = None;
                            false
                        }
                    }
                });
                match pass {
                    Err(e) => {
                        // Published but not marked (or not read): they go again.
                        log::warn!("outbox: {e}");
                        signal.wait(Duration::from_secs(1));
                    }
                    Ok(Pass::Idle) => signal.wait(Duration::from_millis(250)),
                    Ok(Pass::Sent(_)) => backoff = Duration::from_millis(200),
                    Ok(Pass::Failed) => {
                        log::warn!("outbox: {}", trouble.unwrap_or_default());
                        signal.wait(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
        });
}
