//! The gauges `/metrics` shows of the Tenant Manager's queue, outbox and tenants.

use crate::storage::{Database, Row, StorageError, Val};

/// What `/metrics` shows of the Tenant Manager's queue, outbox and tenants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TmStats {
    /// Tasks in the queue (due, waiting for a retry, or running).
    pub tasks: i64,
    /// How long the task that has been due the longest has waited, ms (0: none due).
    pub oldest_due_task_ms: i64,
    /// Attempts made by the queued tasks together.
    pub task_attempts: i64,
    /// Queued tasks whose last attempt failed (waiting for a retry).
    pub failing_tasks: i64,
    /// Events not yet published, and how long the oldest due one has waited, ms.
    pub outbox_pending: i64,
    pub oldest_pending_event_ms: i64,
    /// Tenants by status.
    pub tenants: Vec<(String, i64)>,
}

impl Database {
    /// The gauges of `/metrics`, read in one transaction.
    pub fn tenant_manager_stats(&self, now_ms: i64) -> Result<TmStats, StorageError> {
        self.tx(|tx| {
            let one = |rows: Vec<Row>, i: usize| -> Result<i64, StorageError> {
                match rows.first().map(|r| r.0.get(i).cloned()) {
                    Some(Some(Val::Null)) | Some(None) | None => Ok(0),
                    Some(Some(_)) => rows[0].i64(i),
                }
            };
            let q = tx.query(
                "SELECT COUNT(*), SUM(attempts), \
                 SUM(CASE WHEN last_error IS NOT NULL THEN 1 ELSE 0 END), \
                 MIN(CASE WHEN next_run_ms <= $1 AND (locked_until_ms IS NULL OR locked_until_ms < $1) \
                     THEN next_run_ms END) FROM tasks",
                &[Val::I64(now_ms)],
            )?;
            let oldest_due = one(q.clone(), 3)?;
            let mut st = TmStats {
                tasks: one(q.clone(), 0)?,
                task_attempts: one(q.clone(), 1)?,
                failing_tasks: one(q, 2)?,
                oldest_due_task_ms: if oldest_due > 0 { (now_ms - oldest_due).max(0) } else { 0 },
                ..TmStats::default()
            };
            let o = tx.query(
                "SELECT COUNT(*), MIN(CASE WHEN not_before_ms IS NULL OR not_before_ms <= $1 \
                 THEN COALESCE(not_before_ms, created_ms) END) FROM outbox WHERE published_ms IS NULL \
                 AND COALESCE(origin, 'tenant-manager') = 'tenant-manager'",
                &[Val::I64(now_ms)],
            )?;
            st.outbox_pending = one(o.clone(), 0)?;
            let oldest = one(o, 1)?;
            st.oldest_pending_event_ms = if oldest > 0 { (now_ms - oldest).max(0) } else { 0 };
            for r in tx.query(
                "SELECT status, COUNT(*) FROM tenants GROUP BY status ORDER BY status",
                &[],
            )? {
                st.tenants.push((r.string(0)?, r.i64(1)?));
            }
            Ok(st)
        })
    }
}
