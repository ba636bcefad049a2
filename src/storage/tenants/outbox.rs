//! The event outbox: events written in the same transaction as the change they report (or
//! held, for a change made outside the database, until it is done), published to NATS by the
//! outbox publisher and marked once sent.

use crate::storage::{Change, Database, Dialect, StorageError, Trail, Tx, Val};

/// An event to publish after the write commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    pub subject: String,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRecord {
    pub id: i64,
    pub subject: String,
    pub payload: Vec<u8>,
    pub created_ms: i64,
}

/// What a publication pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Nothing to send (or another replica is sending).
    Idle,
    /// This many events sent and marked.
    Sent(usize),
    /// NATS did not confirm the batch: it goes again.
    Failed,
}

pub trait OutboxStore {
    /// Oldest unpublished events of the Tenant Manager first (held events once their hold
    /// ended): [`OutboxStore::pending_events_of`] its own trail.
    fn pending_events(&self, limit: i64) -> Result<Vec<OutboxRecord>, StorageError> {
        self.pending_events_of(Trail::TenantManager, limit)
    }
    /// Oldest unpublished events written by the service of `origin` first (IAM's audit feed,
    /// or the Tenant Manager's lifecycle events and audit feed).
    fn pending_events_of(
        &self,
        origin: Trail,
        limit: i64,
    ) -> Result<Vec<OutboxRecord>, StorageError>;
    /// Write an event that is not published before `until_ms` (the event of a change made
    /// outside the database, written before it); returns its id.
    fn hold_event(&self, e: &OutboxEvent, until_ms: i64, now_ms: i64) -> Result<i64, StorageError>;
    /// The change a held event reports is done: publish it now.
    fn release_event(&self, id: i64, now_ms: i64) -> Result<(), StorageError>;
    /// The change a held event reports was not made: remove it (unless already published).
    fn drop_event(&self, id: i64) -> Result<(), StorageError>;
    fn mark_published(&self, ids: &[i64], now_ms: i64) -> Result<(), StorageError>;
    /// One publication pass over the oldest unpublished events of `origin` (at most `limit`):
    /// `publish` gets them and says whether NATS confirmed them, and confirmed events are
    /// marked published. On PostgreSQL the pass holds a transaction-scoped advisory lock of
    /// `origin` from the read to the mark, so that of several replicas' publishers one at a
    /// time sends (each event by one of them, in order; a replica that finds the lock taken
    /// has nothing to do). SQLite's database has one publisher in practice and is not held
    /// while NATS answers.
    fn publish_pending(
        &self,
        origin: Trail,
        limit: i64,
        publish: &mut dyn FnMut(&[OutboxRecord]) -> bool,
    ) -> Result<Pass, StorageError>;
    /// Events not yet published (a gauge).
    fn outbox_backlog(&self) -> Result<i64, StorageError>;
}

/// Bytes as lower-case hex text (how a payload is stored).
pub(in crate::storage) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// [`hex`] text back to bytes.
fn unhex(s: &str) -> Result<Vec<u8>, StorageError> {
    if s.len() % 2 != 0 {
        return Err(StorageError::Internal("outbox payload is not hex".into()));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&s[i..i + 2], 16)
                .map_err(|_| StorageError::Internal("outbox payload is not hex".into()))
        })
        .collect()
}

/// Write the event, to be published once the transaction commits.
pub(super) fn emit(tx: &mut dyn Tx, e: &OutboxEvent, now_ms: i64) -> Result<(), StorageError> {
    tx.execute(
        "INSERT INTO outbox (subject, payload, created_ms) VALUES ($1, $2, $3)",
        &[
            Val::from(&e.subject),
            Val::from(hex(&e.payload)),
            Val::I64(now_ms),
        ],
    )?;
    Ok(())
}

/// The key of `origin`'s publisher lock (`pg_try_advisory_xact_lock`).
fn publisher_lock(origin: Trail) -> i64 {
    // "kaa-outbox" in the high bytes, the trail in the low one.
    0x6b61_615f_6f75_7400
        | match origin {
            Trail::Iam => 1,
            Trail::TenantManager => 2,
        }
}

/// Mark `ids` published.
fn mark_tx(tx: &mut dyn Tx, ids: &[i64], now_ms: i64) -> Result<(), StorageError> {
    for id in ids {
        tx.execute(
            "UPDATE outbox SET published_ms = $1 WHERE id = $2",
            &[Val::I64(now_ms), Val::I64(*id)],
        )?;
    }
    Ok(())
}

/// The oldest unpublished events of `origin` whose hold ended.
fn pending_tx(
    tx: &mut dyn Tx,
    origin: Trail,
    limit: i64,
) -> Result<Vec<OutboxRecord>, StorageError> {
    tx.query(
        "SELECT id, subject, payload, created_ms FROM outbox WHERE published_ms IS NULL \
                 AND (not_before_ms IS NULL OR not_before_ms <= $2) \
                 AND COALESCE(origin, 'tenant-manager') = $3 ORDER BY id LIMIT $1",
        &[
            Val::I64(limit),
            Val::I64(crate::clock::now_ms()),
            Val::from(origin.service()),
        ],
    )?
    .iter()
    .map(|r| {
        Ok(OutboxRecord {
            id: r.i64(0)?,
            subject: r.string(1)?,
            payload: unhex(&r.string(2)?)?,
            created_ms: r.i64(3)?,
        })
    })
    .collect()
}

impl OutboxStore for Database {
    fn pending_events_of(
        &self,
        origin: Trail,
        limit: i64,
    ) -> Result<Vec<OutboxRecord>, StorageError> {
        self.tx(|tx| pending_tx(tx, origin, limit))
    }

    fn publish_pending(
        &self,
        origin: Trail,
        limit: i64,
        publish: &mut dyn FnMut(&[OutboxRecord]) -> bool,
    ) -> Result<Pass, StorageError> {
        let send = |batch: &[OutboxRecord], publish: &mut dyn FnMut(&[OutboxRecord]) -> bool| {
            if batch.is_empty() {
                Pass::Idle
            } else if publish(batch) {
                Pass::Sent(batch.len())
            } else {
                Pass::Failed
            }
        };
        if self.dialect() == Dialect::Sqlite {
            let batch = self.pending_events_of(origin, limit)?;
            let pass = send(&batch, publish);
            if let Pass::Sent(_) = pass {
                let ids: Vec<i64> = batch.iter().map(|e| e.id).collect();
                self.mark_published(&ids, crate::clock::now_ms())?;
            }
            return Ok(pass);
        }
        self.tx(|tx| {
            let locked = tx
                .query(
                    "SELECT pg_try_advisory_xact_lock($1)",
                    &[Val::I64(publisher_lock(origin))],
                )?
                .first()
                .map(|r| r.bool(0))
                .transpose()?
                .unwrap_or(false);
            if !locked {
                return Ok(Pass::Idle);
            }
            let batch = pending_tx(tx, origin, limit)?;
            let pass = send(&batch, publish);
            if let Pass::Sent(_) = pass {
                let ids: Vec<i64> = batch.iter().map(|e| e.id).collect();
                mark_tx(tx, &ids, crate::clock::now_ms())?;
            }
            Ok(pass)
        })
    }

    fn hold_event(&self, e: &OutboxEvent, until_ms: i64, now_ms: i64) -> Result<i64, StorageError> {
        self.tx(|tx| {
            tx.query(
                "INSERT INTO outbox (subject, payload, created_ms, not_before_ms) \
                 VALUES ($1, $2, $3, $4) RETURNING id",
                &[
                    Val::from(&e.subject),
                    Val::from(hex(&e.payload)),
                    Val::I64(now_ms),
                    Val::I64(until_ms),
                ],
            )?
            .first()
            .map(|r| r.i64(0))
            .transpose()?
            .ok_or_else(|| StorageError::Internal("outbox insert returned no id".into()))
        })
    }

    fn release_event(&self, id: i64, now_ms: i64) -> Result<(), StorageError> {
        self.tx(|tx| release_tx(tx, id, now_ms))
    }

    fn drop_event(&self, id: i64) -> Result<(), StorageError> {
        self.tx(|tx| {
            tx.execute(
                "DELETE FROM outbox WHERE id = $1 AND published_ms IS NULL",
                &[Val::I64(id)],
            )?;
            Ok(())
        })
    }

    fn mark_published(&self, ids: &[i64], now_ms: i64) -> Result<(), StorageError> {
        self.tx(|tx| mark_tx(tx, ids, now_ms))
    }

    fn outbox_backlog(&self) -> Result<i64, StorageError> {
        self.tx(|tx| {
            Ok(tx
                .query(
                    "SELECT COUNT(*) FROM outbox WHERE published_ms IS NULL \
                     AND COALESCE(origin, 'tenant-manager') = 'tenant-manager'",
                    &[],
                )?
                .first()
                .map(|r| r.i64(0))
                .transpose()?
                .unwrap_or(0))
        })
    }
}

impl Database {
    /// The trail's records of changes made outside the database (a tenant user in Keycloak),
    /// written once the change is done, with the release of its held event, in one
    /// transaction.
    pub fn record_outside(
        &self,
        changes: Vec<Change>,
        held_event: Option<i64>,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        self.tx(|tx| {
            if let Some(id) = held_event {
                release_tx(tx, id, now_ms)?;
            }
            for c in changes {
                tx.record(c);
            }
            Ok(())
        })
    }
}

/// A held event is due now (unless already published).
fn release_tx(tx: &mut dyn Tx, id: i64, now_ms: i64) -> Result<(), StorageError> {
    tx.execute(
        "UPDATE outbox SET not_before_ms = $1 WHERE id = $2 AND published_ms IS NULL",
        &[Val::I64(now_ms), Val::I64(id)],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let b = vec![0u8, 1, 0xab, 0xff];
        assert_eq!(unhex(&hex(&b)).unwrap(), b);
        assert!(unhex("abc").is_err());
        assert!(unhex("zz").is_err());
    }
}
