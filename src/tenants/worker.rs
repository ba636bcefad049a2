//! Background work: task workers that claim due tasks from the database queue (a lease guards
//! each one, so a crashed worker's task is taken again after the lease), and the outbox publisher
//! that sends committed events to NATS in order and marks them published only after the server
//! confirms it has them (at least once; nothing is lost while NATS is down or cut mid-batch).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::service::Tm;
use crate::clock::now_ms;
use crate::storage::{TaskRecord, TaskStore};

pub use crate::outbox::Signal;

/// Start `tm.settings.workers` task workers, and the thread that keeps their leases.
pub fn spawn_workers(tm: &Arc<Tm>, signal: &Arc<Signal>) {
    // Unique to this process, so that releasing or renewing this process's leases never
    // touches another process's.
    let prefix = format!(
        "{}-{}-{}-{}",
        tm.settings.instance,
        tm.settings.replica,
        std::process::id(),
        now_ms()
    );
    let names: Vec<String> = (0..tm.settings.workers)
        .map(|i| format!("{prefix}-w{i}"))
        .collect();
    let running = Arc::new(AtomicUsize::new(0));
    spawn_lease_keeper(tm, signal, names.clone(), Arc::clone(&running));
    for (i, name) in names.into_iter().enumerate() {
        let (tm, signal, running) = (Arc::clone(tm), Arc::clone(signal), Arc::clone(&running));
        let _ = std::thread::Builder::new()
            .name(format!("task-worker-{i}"))
            .spawn(move || {
                // A failed claim may have committed without its answer arriving: the task would
                // stay leased to this worker, which runs nothing, until the lease runs out.
                let mut unsure = false;
                while !signal.stopped() {
                    if unsure {
                        match tm.db.release_tasks(&name) {
                            Ok(n) => {
                                if n > 0 {
                                    log::warn!("tasks: released {n} task(s) of a lost claim");
                                }
                                unsure = false;
                            }
                            Err(e) => {
                                log::warn!("tasks: cannot release a lost claim yet: {e}");
                                signal.wait(Duration::from_secs(1));
                                continue;
                            }
                        }
                    }
                    match tm.db.claim_task(&name, now_ms(), tm.settings.lease_ms) {
                        Ok(Some(task)) => {
                            running.fetch_add(1, Ordering::SeqCst);
                            let ran = tm.run_task(&task);
                            running.fetch_sub(1, Ordering::SeqCst);
                            if let Err(e) = ran {
                                log::warn!("tasks: task {} of `{}`: {e}", task.id, task.tenant_id);
                                hand_back(&tm, &signal, &task, &e.to_string());
                            }
                            signal.notify();
                        }
                        Ok(None) => signal.wait(Duration::from_millis(200)),
                        Err(e) => {
                            log::warn!("tasks: cannot claim: {e}");
                            unsure = true;
                            signal.wait(Duration::from_secs(1));
                        }
                    }
                }
            });
    }
}

/// Renew the leases of this process's running tasks three times per lease: a task that runs
/// longer than `lease-seconds` (a slow Keycloak) stays with its worker, while the task of a
/// process that died is free again one lease after its last renewal.
fn spawn_lease_keeper(
    tm: &Arc<Tm>,
    signal: &Arc<Signal>,
    names: Vec<String>,
    running: Arc<AtomicUsize>,
) {
    let (tm, signal) = (Arc::clone(tm), Arc::clone(signal));
    let every = Duration::from_millis(u64::try_from(tm.settings.lease_ms / 3).unwrap_or(1).max(1));
    let _ = std::thread::Builder::new()
        .name("task-leases".into())
        .spawn(move || {
            let mut next = Instant::now() + every;
            while !signal.stopped() {
                let now = Instant::now();
                if now < next {
                    signal.wait(next - now);
                    continue;
                }
                next = now + every;
                if running.load(Ordering::SeqCst) == 0 {
                    continue;
                }
                if let Err(e) = tm.db.renew_leases(&names, now_ms() + tm.settings.lease_ms) {
                    log::warn!("tasks: cannot renew leases: {e}");
                }
            }
        });
}

/// A task whose run failed on storage (the database went away mid-run) goes back to the queue
/// for a retry after `backoff-ms`, instead of staying leased to this worker until the lease
/// (`lease-seconds`, 30 by default) runs out: a short database outage must not hold tenants in
/// CREATING for minutes. Tried while the lease lasts; after it another worker may hold the task.
fn hand_back(tm: &Tm, signal: &Signal, task: &TaskRecord, error: &str) {
    let started = now_ms();
    while !signal.stopped() && now_ms() - started < tm.settings.lease_ms {
        let now = now_ms();
        match tm
            .db
            .fail_task(task, error, Some(now + tm.settings.backoff_ms), None, now)
        {
            Ok(()) => return,
            Err(e) => {
                log::warn!("tasks: cannot hand task {} back yet: {e}", task.id);
                signal.wait(Duration::from_millis(500));
            }
        }
    }
}

/// Apply subscriptions' starts and ends every `subscription_sweep_ms` on this replica. The
/// phases are in the database, so a start or end that came while no replica ran is applied at
/// the next start, and replicas sweeping together move each phase once (one `updated` event).
pub fn spawn_subscription_sweep(tm: &Arc<Tm>, signal: &Arc<Signal>) {
    let (tm, signal) = (Arc::clone(tm), Arc::clone(signal));
    let every =
        Duration::from_millis(u64::try_from(tm.settings.subscription_sweep_ms).unwrap_or(1000));
    let _ = std::thread::Builder::new()
        .name("subscriptions".into())
        .spawn(move || {
            while !signal.stopped() {
                match tm.sweep_subscriptions(now_ms()) {
                    // More may be due at once: go on without waiting.
                    Ok(n) if n > 0 => {
                        signal.notify();
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => log::warn!("subscriptions: {e}"),
                }
                signal.wait(every);
            }
        });
}

/// Publish the Tenant Manager's outbox (lifecycle events, its audit feed) to NATS, oldest
/// first.
pub fn spawn_publisher(
    tm: &Arc<Tm>,
    signal: &Arc<Signal>,
    urls: Vec<String>,
    username: String,
    password: String,
) {
    crate::outbox::spawn_publisher(
        &tm.db,
        crate::storage::Trail::TenantManager,
        signal,
        urls,
        username,
        password,
    );
}
