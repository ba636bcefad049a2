//! SQLite backend (bundled, WAL): the embedded default. Write transactions start IMMEDIATE so
//! concurrent writers queue on the busy timeout instead of failing on a lock upgrade.

use std::path::{Path, PathBuf};
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{ErrorCode, TransactionBehavior};

use super::{Dialect, Row, StorageError, Tx, Val};

pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct SqlitePool {
    pool: r2d2::Pool<SqliteConnectionManager>,
    pub path: PathBuf,
}

pub fn open(path: &Path) -> Result<SqlitePool, StorageError> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| {
            StorageError::Unavailable(format!(
                "cannot create the directory of SQLite database {}: {e}",
                path.display()
            ))
        })?;
    }
    let manager = SqliteConnectionManager::file(path).with_init(|c| {
        c.busy_timeout(BUSY_TIMEOUT)?;
        c.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
        )
    });
    let pool = r2d2::Pool::builder()
        .max_size(8)
        .min_idle(Some(1))
        .connection_timeout(BUSY_TIMEOUT)
        .build(manager)
        .map_err(|e| {
            StorageError::Unavailable(format!(
                "cannot open SQLite database {}: {e}",
                path.display()
            ))
        })?;
    Ok(SqlitePool {
        pool,
        path: path.to_path_buf(),
    })
}

impl SqlitePool {
    pub fn tx<T>(
        &self,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let mut conn = self
            .pool
            .get()
            .map_err(|e| StorageError::Unavailable(format!("sqlite pool: {e}")))?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(map_err)?;
        let mut w = SqliteTx { tx: &tx };
        let out = f(&mut w)?;
        tx.commit().map_err(map_err)?;
        Ok(out)
    }

    pub fn state(&self) -> (u32, u32) {
        let s = self.pool.state();
        (s.connections, s.idle_connections)
    }
}

struct SqliteTx<'a> {
    tx: &'a rusqlite::Transaction<'a>,
}

/// `$N` placeholders become SQLite's numbered `?N`.
fn rewrite(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

fn to_sql(v: &Val) -> SqlValue {
    match v {
        Val::Null => SqlValue::Null,
        Val::I64(i) => SqlValue::Integer(*i),
        Val::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Val::Text(s) => SqlValue::Text(s.clone()),
    }
}

impl Tx for SqliteTx<'_> {
    fn execute(&mut self, sql: &str, params: &[Val]) -> Result<u64, StorageError> {
        let mut stmt = self.tx.prepare_cached(&rewrite(sql)).map_err(map_err)?;
        let params: Vec<SqlValue> = params.iter().map(to_sql).collect();
        let n = stmt
            .execute(rusqlite::params_from_iter(params))
            .map_err(map_err)?;
        Ok(n as u64)
    }

    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Row>, StorageError> {
        let mut stmt = self.tx.prepare_cached(&rewrite(sql)).map_err(map_err)?;
        let cols = stmt.column_count();
        let params: Vec<SqlValue> = params.iter().map(to_sql).collect();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params))
            .map_err(map_err)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(map_err)? {
            let mut vals = Vec::with_capacity(cols);
            for i in 0..cols {
                vals.push(match r.get_ref(i).map_err(map_err)? {
                    ValueRef::Null => Val::Null,
                    ValueRef::Integer(v) => Val::I64(v),
                    ValueRef::Real(f) => Val::Text(f.to_string()),
                    ValueRef::Text(t) => Val::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Val::Text(String::from_utf8_lossy(b).into_owned()),
                });
            }
            out.push(Row(vals));
        }
        Ok(out)
    }

    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }
}

fn map_err(e: rusqlite::Error) -> StorageError {
    match &e {
        rusqlite::Error::QueryReturnedNoRows => StorageError::NotFound,
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::ConstraintViolation => StorageError::Conflict(e.to_string()),
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::CannotOpen
            | ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure
            | ErrorCode::OutOfMemory
            | ErrorCode::ReadOnly => StorageError::Unavailable(e.to_string()),
            _ => StorageError::Internal(e.to_string()),
        },
        _ => StorageError::Internal(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_rewritten() {
        assert_eq!(
            rewrite("a = $1 AND b = $12 AND c = '$'"),
            "a = ?1 AND b = ?12 AND c = '$'"
        );
    }
}
