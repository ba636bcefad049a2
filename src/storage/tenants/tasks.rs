//! The durable task queue: a task is written in the same transaction as the change that needs
//! it, claimed with a lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL), one at a time per tenant,
//! and finished with its outcome on the tenant and the event it reports.

use super::locking;
use super::outbox::{OutboxEvent, emit};
use super::tenant::{get_tenant_tx, record_tenant_tx};
use crate::storage::query::{count, placeholders};
use crate::storage::{Database, Row, StorageError, Tx, Val};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    pub id: i64,
    pub tenant_id: String,
    pub kind: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub last_error: Option<String>,
}

/// A task to enqueue with a write.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub kind: String,
    pub max_attempts: i64,
}

/// How a finished task leaves its tenant.
#[derive(Debug, Clone)]
pub enum TaskOutcome {
    /// Set the tenant's status (clearing any failure reason).
    Status(String),
    /// Remove the tenant row, its catalogue rows and its tasks.
    Removed,
}

pub trait TaskStore {
    /// Take the next due task no one holds, leasing it to `worker` until `now + lease_ms`.
    fn claim_task(
        &self,
        worker: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<TaskRecord>, StorageError>;
    /// Finish a task: apply the outcome to its tenant and enqueue the event, in one transaction;
    /// nothing when the task is gone (another worker finished it).
    fn complete_task(
        &self,
        task: &TaskRecord,
        outcome: &TaskOutcome,
        event: Option<&OutboxEvent>,
        now_ms: i64,
    ) -> Result<(), StorageError>;
    /// Record a failed attempt: run again at `retry_at_ms`, or (no retry) delete the tenant's
    /// tasks, set it `FAILED` with the reason and enqueue the event, in one transaction.
    fn fail_task(
        &self,
        task: &TaskRecord,
        error: &str,
        retry_at_ms: Option<i64>,
        event: Option<&OutboxEvent>,
        now_ms: i64,
    ) -> Result<(), StorageError>;
    fn pending_tasks(&self, tenant_id: &str) -> Result<Vec<TaskRecord>, StorageError>;
    /// End a move that cannot finish: the task goes, the tenant stays on the server it is on
    /// (`AVAILABLE`, or `UPDATING` with changes queued) with `reason` as its failure reason and
    /// no move left, and the event is enqueued, in one transaction; nothing when the task is
    /// gone (another worker finished it).
    fn end_move(
        &self,
        task: &TaskRecord,
        reason: &str,
        event: Option<&OutboxEvent>,
        now_ms: i64,
    ) -> Result<(), StorageError>;
    /// Release every task leased to `worker` (a worker that is running none: a claim whose
    /// answer was lost); returns how many.
    fn release_tasks(&self, worker: &str) -> Result<u64, StorageError>;
    /// Extend to `until_ms` the leases the `workers` hold (tasks still running); returns how
    /// many.
    fn renew_leases(&self, workers: &[String], until_ms: i64) -> Result<u64, StorageError>;
}

/// Remove a finished task from the queue; whether it was there (another worker that took it
/// over after its lease ran out may have finished it).
fn take_tx(tx: &mut dyn Tx, t: &TaskRecord) -> Result<bool, StorageError> {
    Ok(tx.execute("DELETE FROM tasks WHERE id = $1", &[Val::I64(t.id)])? > 0)
}

/// How many tasks of the tenant are queued.
fn queued_tasks(tx: &mut dyn Tx, tenant_id: &str) -> Result<u64, StorageError> {
    count(
        tx,
        "SELECT COUNT(*) FROM tasks WHERE tenant_id = $1",
        &[Val::from(tenant_id)],
    )
}

/// Queue `task` for the tenant, due at once.
pub(super) fn enqueue(
    tx: &mut dyn Tx,
    tenant_id: &str,
    task: &NewTask,
    now_ms: i64,
) -> Result<(), StorageError> {
    tx.execute(
        "INSERT INTO tasks (tenant_id, kind, attempts, max_attempts, next_run_ms, created_ms) \
         VALUES ($1, $2, 0, $3, $4, $4)",
        &[
            Val::from(tenant_id),
            Val::from(&task.kind),
            Val::I64(task.max_attempts),
            Val::I64(now_ms),
        ],
    )?;
    Ok(())
}

const TASK_COLS: &str = "id, tenant_id, kind, attempts, max_attempts, last_error";

fn task(r: &Row) -> Result<TaskRecord, StorageError> {
    Ok(TaskRecord {
        id: r.i64(0)?,
        tenant_id: r.string(1)?,
        kind: r.string(2)?,
        attempts: r.i64(3)?,
        max_attempts: r.i64(4)?,
        last_error: r.opt_string(5)?,
    })
}

impl TaskStore for Database {
    fn claim_task(
        &self,
        worker: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<TaskRecord>, StorageError> {
        self.tx(|tx| {
            // One task per tenant at a time: a tenant whose task is leased waits.
            let lock = locking(tx, " FOR UPDATE SKIP LOCKED");
            let due = tx.query(
                &format!(
                    "SELECT id FROM tasks t WHERE next_run_ms <= $1 \
                     AND (locked_until_ms IS NULL OR locked_until_ms < $1) \
                     AND NOT EXISTS (SELECT 1 FROM tasks o WHERE o.tenant_id = t.tenant_id \
                         AND o.id <> t.id AND ((o.locked_until_ms IS NOT NULL AND o.locked_until_ms >= $1) \
                         OR o.id < t.id)) \
                     ORDER BY next_run_ms, id LIMIT 1{lock}"
                ),
                &[Val::I64(now_ms)],
            )?;
            let Some(id) = due.first().map(|r| r.i64(0)).transpose()? else {
                return Ok(None);
            };
            let rows = tx.query(
                &format!(
                    "UPDATE tasks SET locked_by = $1, locked_until_ms = $2, attempts = attempts + 1 \
                     WHERE id = $3 RETURNING {TASK_COLS}"
                ),
                &[Val::from(worker), Val::I64(now_ms + lease_ms), Val::I64(id)],
            )?;
            rows.first().map(task).transpose()
        })
    }

    fn release_tasks(&self, worker: &str) -> Result<u64, StorageError> {
        self.tx(|tx| {
            tx.execute(
                "UPDATE tasks SET locked_by = NULL, locked_until_ms = NULL WHERE locked_by = $1",
                &[Val::from(worker)],
            )
        })
    }

    fn renew_leases(&self, workers: &[String], until_ms: i64) -> Result<u64, StorageError> {
        if workers.is_empty() {
            return Ok(0);
        }
        let workers: Vec<&str> = workers.iter().map(String::as_str).collect();
        let mut params = vec![Val::I64(until_ms)];
        let marks = placeholders(&mut params, &workers);
        self.tx(|tx| {
            tx.execute(
                &format!(
                    "UPDATE tasks SET locked_until_ms = $1 WHERE locked_until_ms IS NOT NULL \
                     AND locked_by IN ({})",
                    marks
                ),
                &params,
            )
        })
    }

    fn complete_task(
        &self,
        t: &TaskRecord,
        outcome: &TaskOutcome,
        event: Option<&OutboxEvent>,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let k = self.secret_keys();
        self.tx(|tx| {
            if !take_tx(tx, t)? {
                // Already finished by another worker that took the task over after its lease
                // ran out: its outcome and event stand, this one's would be a second.
                return Ok(());
            }
            let before = get_tenant_tx(tx, &t.tenant_id).ok();
            match outcome {
                TaskOutcome::Status(s) => {
                    // A tenant with another change queued (an IDP changed while this run was
                    // under way) stays UPDATING until its last task.
                    let queued = queued_tasks(tx, &t.tenant_id)?;
                    let status = if queued > 0 && s == "AVAILABLE" {
                        "UPDATING"
                    } else {
                        s.as_str()
                    };
                    // The realm work is done: the first administrator (made) and the move (finished)
                    // are no longer needed; a skipped task (DELETING) keeps them for the delete.
                    let done = if s == "AVAILABLE" {
                        ", first_admin = NULL, move_from = NULL, move_to = NULL"
                    } else {
                        ""
                    };
                    tx.execute(
                        &format!(
                            "UPDATE tenants SET status = $1, failure_reason = NULL, updated_ms = $2, \
                             version = version + 1{done} WHERE id = $3"
                        ),
                        &[Val::from(status), Val::I64(now_ms), Val::from(&t.tenant_id)],
                    )?;
                }
                TaskOutcome::Removed => {
                    tx.execute(
                        "DELETE FROM tasks WHERE tenant_id = $1",
                        &[Val::from(&t.tenant_id)],
                    )?;
                    tx.execute(
                        "DELETE FROM subscription_phases WHERE tenant_id = $1",
                        &[Val::from(&t.tenant_id)],
                    )?;
                    tx.execute(
                        "DELETE FROM catalog WHERE id LIKE $1",
                        &[Val::from(format!("{}/%", t.tenant_id.replace('%', "")))],
                    )?;
                    tx.execute(
                        "DELETE FROM tenants WHERE id = $1",
                        &[Val::from(&t.tenant_id)],
                    )?;
                }
            }
            let action = match outcome {
                TaskOutcome::Status(_) => "kaa:tenant:update",
                TaskOutcome::Removed => "kaa:tenant:remove",
            };
            record_tenant_tx(tx, &k, action, before.as_ref(), &t.tenant_id)?;
            if let Some(e) = event {
                emit(tx, e, now_ms)?;
            }
            Ok(())
        })
    }

    fn fail_task(
        &self,
        t: &TaskRecord,
        error: &str,
        retry_at_ms: Option<i64>,
        event: Option<&OutboxEvent>,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let k = self.secret_keys();
        self.tx(|tx| {
            match retry_at_ms {
                Some(at) => {
                    tx.execute(
                        "UPDATE tasks SET last_error = $1, next_run_ms = $2, locked_by = NULL, \
                         locked_until_ms = NULL WHERE id = $3",
                        &[Val::from(error), Val::I64(at), Val::I64(t.id)],
                    )?;
                }
                None => {
                    if !take_tx(tx, t)? {
                        // Finished by another worker meanwhile: its outcome stands.
                        return Ok(());
                    }
                    // A failed tenant runs nothing more until its retry (which reads the plan
                    // anew), so changes queued behind this task go with it.
                    tx.execute(
                        "DELETE FROM tasks WHERE tenant_id = $1",
                        &[Val::from(&t.tenant_id)],
                    )?;
                    let before = get_tenant_tx(tx, &t.tenant_id).ok();
                    tx.execute(
                        "UPDATE tenants SET status = 'FAILED', failure_reason = $1, updated_ms = $2, \
                         version = version + 1 WHERE id = $3",
                        &[Val::from(error), Val::I64(now_ms), Val::from(&t.tenant_id)],
                    )?;
                    if before.is_some() {
                        record_tenant_tx(
                            tx,
                            &k,
                            "kaa:tenant:update",
                            before.as_ref(),
                            &t.tenant_id,
                        )?;
                    }
                    if let Some(e) = event {
                        emit(tx, e, now_ms)?;
                    }
                }
            }
            Ok(())
        })
    }

    fn end_move(
        &self,
        t: &TaskRecord,
        reason: &str,
        event: Option<&OutboxEvent>,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let k = self.secret_keys();
        self.tx(|tx| {
            if !take_tx(tx, t)? {
                return Ok(());
            }
            let before = get_tenant_tx(tx, &t.tenant_id).ok();
            let queued = queued_tasks(tx, &t.tenant_id)?;
            let status = if queued > 0 { "UPDATING" } else { "AVAILABLE" };
            tx.execute(
                "UPDATE tenants SET status = $1, failure_reason = $2, updated_ms = $3, \
                 version = version + 1, move_from = NULL, move_to = NULL WHERE id = $4",
                &[
                    Val::from(status),
                    Val::from(reason),
                    Val::I64(now_ms),
                    Val::from(&t.tenant_id),
                ],
            )?;
            if before.is_some() {
                record_tenant_tx(tx, &k, "kaa:tenant:update", before.as_ref(), &t.tenant_id)?;
            }
            if let Some(e) = event {
                emit(tx, e, now_ms)?;
            }
            Ok(())
        })
    }

    fn pending_tasks(&self, tenant_id: &str) -> Result<Vec<TaskRecord>, StorageError> {
        self.tx(|tx| {
            tx.query(
                &format!("SELECT {TASK_COLS} FROM tasks WHERE tenant_id = $1 ORDER BY id"),
                &[Val::from(tenant_id)],
            )?
            .iter()
            .map(task)
            .collect()
        })
    }
}
