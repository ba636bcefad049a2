//! PostgreSQL backend: an r2d2 pool bounded by `max-open-connections`, TLS per `ssl-mode`
//! (`disable`, `require` = encrypted without verification, `verify-ca`, `verify-full`).
//! Every connection keeps its prepared statements by SQL text, so a statement costs one round
//! trip (Bind/Execute) after its first use on that connection instead of two (Parse, then Bind).

use std::error::Error as _;
use std::time::Duration;

use bytes::BytesMut;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use postgres::error::SqlState;
use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use postgres_openssl::MakeTlsConnector;

use super::{Dialect, Row, StorageError, Tx, Val};
use crate::config::PostgresSettings;

/// Most prepared statements one connection keeps; the cache starts over beyond (list queries
/// vary with their filters).
const STATEMENT_CACHE_MAX: usize = 256;

/// A pooled connection and its prepared statements.
pub struct PgConn {
    client: postgres::Client,
    statements: std::collections::HashMap<String, postgres::Statement>,
}

/// Opens [`PgConn`]s for r2d2.
struct Manager {
    config: postgres::Config,
    tls: MakeTlsConnector,
}

impl r2d2::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = postgres::Error;

    fn connect(&self) -> Result<PgConn, postgres::Error> {
        Ok(PgConn {
            client: self.config.connect(self.tls.clone())?,
            statements: std::collections::HashMap::new(),
        })
    }

    fn is_valid(&self, conn: &mut PgConn) -> Result<(), postgres::Error> {
        conn.client.simple_query("").map(|_| ())
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.client.is_closed()
    }
}

pub struct PgPool {
    pool: r2d2::Pool<Manager>,
    pub acquire_timeout: Duration,
    label: String,
    /// How the pool connects, for a connection of its own ([`PgPool::session_lock`]).
    direct: Box<(postgres::Config, MakeTlsConnector)>,
}

/// A PostgreSQL session advisory lock held on a connection outside the pool: released when
/// dropped, and by the server when the process dies with it.
pub struct SessionLock {
    client: postgres::Client,
    key: i64,
}

impl Drop for SessionLock {
    fn drop(&mut self) {
        // Closing the connection releases the lock too; unlocking first frees it at once.
        let _ = self
            .client
            .execute("SELECT pg_advisory_unlock($1)", &[&self.key]);
    }
}

fn tls(settings: &PostgresSettings) -> Result<MakeTlsConnector, StorageError> {
    let internal =
        |e: openssl::error::ErrorStack| StorageError::Internal(format!("tls setup: {e}"));
    let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(internal)?;
    match settings.ssl_mode.as_str() {
        "verify-ca" | "verify-full" => {
            builder.set_verify(SslVerifyMode::PEER);
            match &settings.ssl_root_cert {
                Some(p) => builder.set_ca_file(p).map_err(|e| {
                    StorageError::Unavailable(format!(
                        "cannot read PostgreSQL root certificate {}: {e}",
                        p.display()
                    ))
                })?,
                None => builder.set_default_verify_paths().map_err(internal)?,
            }
        }
        _ => builder.set_verify(SslVerifyMode::NONE),
    }
    let mut connector = MakeTlsConnector::new(builder.build());
    let verify_hostname = settings.ssl_mode == "verify-full";
    connector.set_callback(move |cfg, _| {
        cfg.set_verify_hostname(verify_hostname);
        Ok(())
    });
    Ok(connector)
}

fn pg_config(settings: &PostgresSettings) -> postgres::Config {
    let mut c = postgres::Config::new();
    c.host(&settings.host)
        .port(settings.port)
        .user(&settings.username)
        .password(settings.password.expose())
        .dbname(&settings.database)
        .application_name("kaa-iam")
        .connect_timeout(settings.connect_timeout)
        .options(&format!(
            "-c statement_timeout={}",
            settings.statement_timeout.as_millis()
        ))
        .ssl_mode(if settings.ssl_mode == "disable" {
            postgres::config::SslMode::Disable
        } else {
            postgres::config::SslMode::Require
        });
    c
}

/// Connect once (for a clear error naming host and database), then build the pool.
pub fn open(settings: &PostgresSettings) -> Result<PgPool, StorageError> {
    let label = format!(
        "PostgreSQL at {}:{}, database `{}`, user `{}`",
        settings.host, settings.port, settings.database, settings.username
    );
    let connector = tls(settings)?;
    let config = pg_config(settings);
    match config.connect(connector.clone()) {
        Ok(client) => drop(client),
        Err(e) => {
            let msg = format!("cannot connect to {label}: {}", describe(&e));
            return Err(if refused(&e) {
                StorageError::Refused(msg)
            } else {
                StorageError::Unavailable(msg)
            });
        }
    }
    let manager = Manager {
        config: config.clone(),
        tls: connector.clone(),
    };
    let pool = r2d2::Pool::builder()
        .max_size(settings.max_open_connections)
        .min_idle(Some(1))
        .connection_timeout(settings.connect_timeout)
        .test_on_check_out(true)
        .build_unchecked(manager);
    Ok(PgPool {
        pool,
        acquire_timeout: settings.connect_timeout,
        label,
        direct: Box::new((config, connector)),
    })
}

/// Whether a failed connection was refused for its settings (wrong user or password, missing
/// database, no permission to connect), which no retry mends; a server that cannot be reached,
/// is starting up or has no connection left is worth waiting for.
fn refused(e: &postgres::Error) -> bool {
    e.code().is_some_and(|code| {
        let c = code.code();
        c.starts_with("28")
            || *code == SqlState::INVALID_CATALOG_NAME
            || *code == SqlState::INSUFFICIENT_PRIVILEGE
    })
}

/// The driver's message without the "db error:" wrapper, one line.
fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_string();
    }
    let mut msg = e.to_string();
    if let Some(src) = e.source() {
        msg = format!("{msg}: {src}");
    }
    msg.lines().next().unwrap_or("").to_string()
}

impl PgPool {
    pub fn describe(&self) -> String {
        self.label.clone()
    }

    pub fn tx<T>(
        &self,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let mut conn = self.pool.get().map_err(|e| {
            StorageError::Unavailable(format!("{}: no connection: {e}", self.label))
        })?;
        let PgConn { client, statements } = &mut *conn;
        let mut tx = client.transaction().map_err(map_err)?;
        let out = {
            let mut w = PgTx {
                tx: &mut tx,
                statements,
            };
            f(&mut w)?
        };
        tx.commit().map_err(map_err)?;
        Ok(out)
    }

    /// Wait for the session advisory lock `key` on a connection of its own (not taken from the
    /// pool, so a pool of one connection still serves the holder's work). The wait is bounded
    /// by the connection's `statement_timeout`.
    pub fn session_lock(&self, key: i64) -> Result<SessionLock, StorageError> {
        let (config, tls) = &*self.direct;
        let mut client = config.connect(tls.clone()).map_err(|e| {
            StorageError::Unavailable(format!(
                "cannot connect to {}: {}",
                self.label,
                describe(&e)
            ))
        })?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&key])
            .map_err(map_err)?;
        Ok(SessionLock { client, key })
    }

    pub fn state(&self) -> (u32, u32) {
        let s = self.pool.state();
        (s.connections, s.idle_connections)
    }
}

struct PgTx<'a, 'b> {
    tx: &'a mut postgres::Transaction<'b>,
    statements: &'a mut std::collections::HashMap<String, postgres::Statement>,
}

impl PgTx<'_, '_> {
    /// The connection's prepared statement for `sql`, prepared now on first use.
    fn statement(&mut self, sql: &str) -> Result<postgres::Statement, StorageError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.tx.prepare(sql).map_err(map_err)?;
        if self.statements.len() >= STATEMENT_CACHE_MAX {
            self.statements.clear();
        }
        self.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }
}

impl Tx for PgTx<'_, '_> {
    fn execute(&mut self, sql: &str, params: &[Val]) -> Result<u64, StorageError> {
        let st = self.statement(sql)?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        self.tx.execute(&st, &refs).map_err(map_err)
    }

    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Row>, StorageError> {
        let st = self.statement(sql)?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        let rows = self.tx.query(&st, &refs).map_err(map_err)?;
        rows.iter().map(convert_row).collect()
    }

    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }
}

fn convert_row(r: &postgres::Row) -> Result<Row, StorageError> {
    let mut vals = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let v = match *col.type_() {
            Type::INT8 => r.try_get::<_, Option<i64>>(i).map(|v| v.map(Val::I64)),
            Type::INT4 => r
                .try_get::<_, Option<i32>>(i)
                .map(|v| v.map(|x| Val::I64(i64::from(x)))),
            Type::INT2 => r
                .try_get::<_, Option<i16>>(i)
                .map(|v| v.map(|x| Val::I64(i64::from(x)))),
            Type::BOOL => r.try_get::<_, Option<bool>>(i).map(|v| v.map(Val::Bool)),
            _ => r.try_get::<_, Option<String>>(i).map(|v| v.map(Val::Text)),
        }
        .map_err(|e| StorageError::Internal(format!("column {}: {e}", col.name())))?;
        vals.push(v.unwrap_or(Val::Null));
    }
    Ok(Row(vals))
}

impl ToSql for Val {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Val::Null => Ok(IsNull::Yes),
            Val::Bool(b) => match *ty {
                Type::BOOL => b.to_sql(ty, out),
                _ => i64::from(*b).to_sql(ty, out),
            },
            Val::I64(v) => match *ty {
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                Type::BOOL => (*v != 0).to_sql(ty, out),
                _ => v.to_sql(ty, out),
            },
            Val::Text(s) => s.to_sql(ty, out),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn map_err(e: postgres::Error) -> StorageError {
    if let Some(code) = e.code() {
        let c = code.code();
        if *code == SqlState::UNIQUE_VIOLATION || *code == SqlState::FOREIGN_KEY_VIOLATION {
            return StorageError::Conflict(describe(&e));
        }
        if *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::QUERY_CANCELED
            || c.starts_with("08")
            || c.starts_with("53")
            || c.starts_with("57")
        {
            return StorageError::Unavailable(describe(&e));
        }
        return StorageError::Internal(describe(&e));
    }
    // No SQLSTATE: the connection is closed or the I/O failed.
    StorageError::Unavailable(describe(&e))
}
