//! The connection layer under every HTTP handler. HTTP/1.1 itself (parsing, framing, chunked
//! bodies, keep-alive, pipelining, `Expect: 100-continue`) is hyper's, on a small tokio runtime of
//! `io_threads` threads; this file is what sits around it (DESIGN.md §3.11):
//!
//! * admission: at most `max_connections` open connections, a JSON 503 beyond it;
//! * timing: `read_timeout` for a request's head (hyper's header timer) and for its body, an
//!   `idle_timeout` between requests and a `write_timeout` per answer ([`io::TimedStream`]);
//! * bodies read frame by frame under `max_body_bytes`, never allocated from the declared
//!   length, and under a budget shared by all requests (`max_body_bytes_in_flight`), so that
//!   many slow uploads cannot exhaust memory;
//! * where handlers run: a handler that only reads memory ([`Handler::inline`]) runs on the
//!   runtime's thread; every other one takes one of `workers` slots (a fair semaphore: in
//!   arrival order, waiting at most `queue_timeout`) and runs on a blocking thread, so that its
//!   waiting on storage or another service never stalls connection I/O;
//! * what users see: JSON errors for what this layer refuses, in the service's style
//!   ([`Handler::error`], `http::error`), `X-Request-Id` on every answer, `Connection` stated on
//!   every answer, a 500 for a handler that panics, one access-log line per exchange (target
//!   `access`), and a graceful shutdown.
//!
//! Heads that hyper cannot parse are answered by hyper itself (400, 431, 414) with no body.

mod io;

use std::convert::Infallible;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{Semaphore, watch};

use super::error::ErrorStyle;
use super::message::{Request, Response};

/// Header fields a request may carry at most (more: 431 by hyper).
const MAX_HEADERS: usize = 100;
/// hyper's smallest read buffer; the head limit cannot be set below it.
const MIN_HEAD_BUFFER: usize = 8192;
/// At most this much of a body is reserved before it arrives.
const INITIAL_BODY_CAPACITY: usize = 64 * 1024;
const MAX_REQUEST_ID_LEN: usize = 64;

const MSG_BODY_TOO_LARGE: &str = "request body too large";
const MSG_TIMEOUT: &str = "request timeout";
const MSG_INTERNAL: &str = "internal error";
const MSG_MALFORMED_BODY: &str = "malformed request body";

/// A request handler: a plain function from request to response.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: Request) -> Response;

    /// Whether answering `req` only reads memory (no storage, no other service, no waiting):
    /// such a request is handled on the connection's I/O thread without a hand-off.
    fn inline(&self, _req: &Request) -> bool {
        false
    }

    /// The answer to a request this server refuses itself (a body too large, a timeout, no
    /// worker slot, a handler that panicked), in the service's error style; IAM's by default.
    fn error(&self, status: u16, message: &str) -> Response {
        ErrorStyle::Message.refuse(status, message)
    }
}

impl<F> Handler for F
where
    F: Fn(Request) -> Response + Send + Sync + 'static,
{
    fn handle(&self, req: Request) -> Response {
        self(req)
    }
}

/// Limits and timeouts of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig {
    /// Address to listen on (port 0: any free port, see [`Server::local_addr`]).
    pub bind: SocketAddr,
    /// Handlers running at once on blocking threads; further requests wait in arrival order.
    pub workers: usize,
    /// Threads that run connection I/O and inline handlers (0: one per core).
    pub io_threads: usize,
    /// Open connections; beyond it a connection gets 503 and is closed.
    pub max_connections: usize,
    /// Largest request body; beyond it 413 and close.
    pub max_body_bytes: usize,
    /// Request body bytes held at once by all requests together; beyond it 503 and close.
    pub max_body_bytes_in_flight: usize,
    /// Largest request head (request line and header fields); beyond it 431 and close.
    pub max_header_bytes: usize,
    /// A request that started arriving must be complete (head and body) within this time.
    pub read_timeout: Duration,
    /// A keep-alive connection without a request for this long is closed.
    pub idle_timeout: Duration,
    /// Writing one response must make progress within this time.
    pub write_timeout: Duration,
    /// A request waits at most this long for a handler slot; then 503.
    pub queue_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            workers: 16,
            io_threads: 0,
            max_connections: 1024,
            max_body_bytes: 1024 * 1024,
            max_body_bytes_in_flight: 64 * 1024 * 1024,
            max_header_bytes: 16 * 1024,
            read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            queue_timeout: Duration::from_secs(30),
        }
    }
}

impl ServerConfig {
    fn validate(&self) -> std::io::Result<()> {
        let invalid = |what: &str| {
            Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                what.to_string(),
            ))
        };
        if self.workers == 0 {
            return invalid("server config: `workers` must be at least 1");
        }
        if self.max_connections == 0 {
            return invalid("server config: `max_connections` must be at least 1");
        }
        if self.max_header_bytes < 256 {
            return invalid("server config: `max_header_bytes` must be at least 256");
        }
        if self.max_body_bytes_in_flight < self.max_body_bytes {
            return invalid(
                "server config: `max_body_bytes_in_flight` must be at least `max_body_bytes`",
            );
        }
        if self.read_timeout.is_zero()
            || self.idle_timeout.is_zero()
            || self.write_timeout.is_zero()
            || self.queue_timeout.is_zero()
        {
            return invalid("server config: timeouts must be longer than zero");
        }
        Ok(())
    }

    fn io_threads(&self) -> usize {
        match self.io_threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }
}

/// Counters shared by the server and its [`ServerStats`] handles.
#[derive(Debug, Default)]
struct Counters {
    open_connections: AtomicUsize,
    busy_workers: AtomicUsize,
    queued_requests: AtomicUsize,
    body_bytes_in_flight: AtomicUsize,
    connections_total: AtomicU64,
    connections_rejected: AtomicU64,
    requests_total: AtomicU64,
    handler_panics: AtomicU64,
    busy_rejections: AtomicU64,
}

/// Live gauges and counters of a server, for `/metrics`. Cheap to clone and to read.
#[derive(Clone)]
pub struct ServerStats {
    counters: Arc<Counters>,
    workers: usize,
    max_connections: usize,
}

impl ServerStats {
    /// Connections open now (idle keep-alive ones included).
    pub fn open_connections(&self) -> usize {
        self.counters.open_connections.load(Ordering::Relaxed)
    }
    /// Handler slots in use now.
    pub fn busy_workers(&self) -> usize {
        self.counters.busy_workers.load(Ordering::Relaxed)
    }
    /// Requests fully read and waiting for a handler slot now.
    pub fn queued_requests(&self) -> usize {
        self.counters.queued_requests.load(Ordering::Relaxed)
    }
    /// Request body bytes held now by requests being read or handled.
    pub fn body_bytes_in_flight(&self) -> usize {
        self.counters.body_bytes_in_flight.load(Ordering::Relaxed)
    }
    /// Configured handler slots.
    pub fn workers(&self) -> usize {
        self.workers
    }
    /// Configured connection limit.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }
    /// Connections accepted since start (turned-away ones not included).
    pub fn connections_total(&self) -> u64 {
        self.counters.connections_total.load(Ordering::Relaxed)
    }
    /// Connections turned away with 503 because `max_connections` were open.
    pub fn connections_rejected(&self) -> u64 {
        self.counters.connections_rejected.load(Ordering::Relaxed)
    }
    /// Requests answered by a handler since start.
    pub fn requests_total(&self) -> u64 {
        self.counters.requests_total.load(Ordering::Relaxed)
    }
    /// Handler calls that panicked (answered 500).
    pub fn handler_panics(&self) -> u64 {
        self.counters.handler_panics.load(Ordering::Relaxed)
    }
    /// Requests answered 503 because the body budget or the handler queue was full.
    pub fn busy_rejections(&self) -> u64 {
        self.counters.busy_rejections.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for ServerStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerStats")
            .field("open_connections", &self.open_connections())
            .field("busy_workers", &self.busy_workers())
            .field("queued_requests", &self.queued_requests())
            .field("workers", &self.workers)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// What [`Server::run`] did after shutdown was asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Requests still being read, waiting for a slot or being handled when the grace period ran
    /// out: their connections were closed without an answer.
    pub cut_off: usize,
    /// Idle keep-alive connections closed when shutdown began.
    pub idle_closed: usize,
    /// Requests answered (with `Connection: close`) after shutdown began.
    pub finished: usize,
    /// Time from the shutdown call to `run` returning.
    pub elapsed: Duration,
}

/// Asks a running (or not yet running) server to shut down. Clone it freely.
#[derive(Clone)]
pub struct ShutdownHandle {
    shared: Arc<Shared>,
}

impl ShutdownHandle {
    /// Stops accepting, lets in-flight requests finish and makes [`Server::run`] return within its
    /// grace period. Returns at once; calling it again does nothing.
    pub fn shutdown(&self) {
        self.shared.request_shutdown();
    }

    /// Whether shutdown was asked for.
    pub fn is_shutdown(&self) -> bool {
        self.shared.stopping()
    }
}

impl fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownHandle")
            .field("shutdown", &self.is_shutdown())
            .finish()
    }
}

/// A bound listener and its runtime. Connections queue in the listen backlog until
/// [`Server::run`].
pub struct Server {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    listener: Option<std::net::TcpListener>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

struct Shared {
    config: ServerConfig,
    handler: Arc<dyn Handler>,
    counters: Arc<Counters>,
    slots: Semaphore,
    stopping: AtomicBool,
    stop_at: Mutex<Option<Instant>>,
    /// `true` once shutdown is asked for: connections stop taking requests.
    stop: watch::Sender<bool>,
    /// `true` once the grace period is over: connections still open are dropped.
    cut: watch::Sender<bool>,
    /// Requests between the service call and the end of their answer.
    in_flight: AtomicUsize,
    idle_closed: AtomicUsize,
    finished_while_stopping: AtomicUsize,
    /// Signalled whenever a connection ends.
    conn_ended: tokio::sync::Notify,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn request_shutdown(&self) {
        let mut at = self.stop_at.lock().unwrap_or_else(PoisonError::into_inner);
        if at.is_none() {
            *at = Some(Instant::now());
        }
        self.stopping.store(true, Ordering::SeqCst);
        self.stop.send_replace(true);
    }

    fn stop_at(&self) -> Instant {
        let at = self.stop_at.lock().unwrap_or_else(PoisonError::into_inner);
        at.unwrap_or_else(Instant::now)
    }

    /// Runs the handler; a panic (or an impossible status) becomes a plain 500.
    fn call(&self, req: Request, request_id: &str) -> Response {
        let outcome = catch_unwind(AssertUnwindSafe(|| self.handler.handle(req)));
        match outcome {
            Ok(resp) if (200..=999).contains(&resp.status) => resp,
            Ok(resp) => {
                log::error!(
                    "request {request_id}: handler returned status {}",
                    resp.status
                );
                self.handler.error(500, MSG_INTERNAL)
            }
            Err(payload) => {
                self.counters.handler_panics.fetch_add(1, Ordering::Relaxed);
                let what = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".to_string());
                log::error!("request {request_id}: handler panicked: {what}");
                self.handler.error(500, MSG_INTERNAL)
            }
        }
    }
}

impl Server {
    /// Binds the listener and builds the runtime (nothing is accepted before `run`).
    pub fn bind(config: ServerConfig, handler: Arc<dyn Handler>) -> std::io::Result<Server> {
        config.validate()?;
        let listener = std::net::TcpListener::bind(config.bind)?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.io_threads())
            .max_blocking_threads(config.workers + 4)
            .thread_name("http")
            .enable_io()
            .enable_time()
            .build()?;
        let shared = Arc::new(Shared {
            config,
            handler,
            counters: Arc::new(Counters::default()),
            slots: Semaphore::new(config.workers),
            stopping: AtomicBool::new(false),
            stop_at: Mutex::new(None),
            stop: watch::Sender::new(false),
            cut: watch::Sender::new(false),
            in_flight: AtomicUsize::new(0),
            idle_closed: AtomicUsize::new(0),
            finished_while_stopping: AtomicUsize::new(0),
            conn_ended: tokio::sync::Notify::new(),
        });
        Ok(Server {
            shared,
            local_addr,
            listener: Some(listener),
            runtime: Some(runtime),
        })
    }

    /// The address actually bound (the port chosen when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    pub fn stats(&self) -> ServerStats {
        ServerStats {
            counters: Arc::clone(&self.shared.counters),
            workers: self.shared.config.workers,
            max_connections: self.shared.config.max_connections,
        }
    }

    /// Serves until [`ShutdownHandle::shutdown`] is called; then stops accepting, closes idle
    /// connections, lets requests in flight finish (answered with `Connection: close`) and
    /// returns at the latest `grace` after the shutdown call, closing whatever is left.
    pub fn run(mut self, grace: Duration) -> ShutdownReport {
        let (Some(runtime), Some(listener)) = (self.runtime.take(), self.listener.take()) else {
            return ShutdownReport::default();
        };
        let shared = Arc::clone(&self.shared);
        let addr = self.local_addr;
        let report = runtime.block_on(serve(shared, listener, addr, grace));
        // Handlers still running on blocking threads are not waited for.
        runtime.shutdown_timeout(Duration::from_millis(50));
        if report.cut_off > 0 {
            log::warn!(
                "http server on {addr}: {} request(s) cut off after the grace period",
                report.cut_off
            );
        }
        log::info!("http server on {addr} stopped: {report:?}");
        report
    }
}

impl Drop for Server {
    /// A server dropped without `run` lets its runtime go.
    fn drop(&mut self) {
        self.shared.request_shutdown();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn serve(
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    addr: SocketAddr,
    grace: Duration,
) -> ShutdownReport {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("http server on {addr}: {e}");
            return ShutdownReport::default();
        }
    };
    let mut stop = shared.stop.subscribe();
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => admit(&shared, stream, remote),
                Err(e) => match e.kind() {
                    std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::WouldBlock => {}
                    _ => {
                        // Out of descriptors or memory: back off instead of spinning.
                        log::warn!("http accept: {e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                },
            },
        }
    }
    drop(listener);
    let stop_at = shared.stop_at();
    log::info!(
        "http server on {addr} shutting down (grace {} ms)",
        grace.as_millis()
    );
    let deadline = tokio::time::Instant::from_std(stop_at + grace);
    loop {
        let ended = shared.conn_ended.notified();
        if shared.counters.open_connections.load(Ordering::SeqCst) == 0 {
            break;
        }
        tokio::select! {
            _ = ended => {}
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    let cut_off = shared.in_flight.load(Ordering::SeqCst);
    shared.cut.send_replace(true);
    // Let the connection tasks see the cut and drop their sockets.
    for _ in 0..50 {
        if shared.counters.open_connections.load(Ordering::SeqCst) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    ShutdownReport {
        cut_off,
        idle_closed: shared.idle_closed.load(Ordering::SeqCst),
        finished: shared.finished_while_stopping.load(Ordering::SeqCst),
        elapsed: stop_at.elapsed(),
    }
}

/// Counts an open connection until dropped.
struct ConnGuard(Arc<Shared>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0
            .counters
            .open_connections
            .fetch_sub(1, Ordering::SeqCst);
        self.0.conn_ended.notify_waiters();
    }
}

/// Starts serving a connection, or turns it away at the limit.
fn admit(shared: &Arc<Shared>, stream: tokio::net::TcpStream, remote: SocketAddr) {
    // Only the accept loop increments, so the check and the increment cannot race each other.
    if shared.counters.open_connections.load(Ordering::SeqCst) >= shared.config.max_connections {
        shared
            .counters
            .connections_rejected
            .fetch_add(1, Ordering::Relaxed);
        tokio::spawn(reject(Arc::clone(shared), stream, remote));
        return;
    }
    shared
        .counters
        .open_connections
        .fetch_add(1, Ordering::SeqCst);
    shared
        .counters
        .connections_total
        .fetch_add(1, Ordering::Relaxed);
    let guard = ConnGuard(Arc::clone(shared));
    tokio::spawn(serve_connection(guard, stream, remote));
}

/// Answers one request with 503 (a connection beyond `max_connections`) and closes.
async fn reject(shared: Arc<Shared>, stream: tokio::net::TcpStream, remote: SocketAddr) {
    let busy = Arc::new(AtomicBool::new(false));
    let io = io::TimedStream::new(
        stream,
        Arc::clone(&busy),
        shared.config.read_timeout,
        shared.config.write_timeout,
    );
    let handler = Arc::clone(&shared.handler);
    let svc = service_fn(move |req: hyper::Request<Incoming>| {
        let start = Instant::now();
        let request_id = pick_request_id(req.headers());
        let resp = handler.error(503, "too many connections");
        let logged = Logged {
            request_id: &request_id,
            remote,
            method: req.method().as_str(),
            path: req.uri().path(),
            start,
        };
        access_log(&logged, 503, sent_bytes(&resp, false));
        let out = to_hyper(resp, &request_id, false, false);
        async move { Ok::<_, Infallible>(out) }
    });
    let conn = builder(&shared.config)
        .keep_alive(false)
        .serve_connection(TokioIo::new(io), svc);
    let _ = tokio::time::timeout(
        shared.config.read_timeout + shared.config.write_timeout,
        conn,
    )
    .await;
}

fn builder(config: &ServerConfig) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(config.read_timeout)
        .max_headers(MAX_HEADERS)
        .max_buf_size(config.max_header_bytes.max(MIN_HEAD_BUFFER))
        .keep_alive(true)
        .half_close(false);
    b
}

/// Clears a connection's busy flag (and the in-flight count) when a request ends, however it
/// ends.
struct InFlight {
    shared: Arc<Shared>,
    busy: Arc<AtomicBool>,
}

impl InFlight {
    fn enter(shared: &Arc<Shared>, busy: &Arc<AtomicBool>) -> InFlight {
        busy.store(true, Ordering::Release);
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight {
            shared: Arc::clone(shared),
            busy: Arc::clone(busy),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.busy.store(false, Ordering::Release);
    }
}

async fn serve_connection(guard: ConnGuard, stream: tokio::net::TcpStream, remote: SocketAddr) {
    let shared = Arc::clone(&guard.0);
    let _ = stream.set_nodelay(true);
    let busy = Arc::new(AtomicBool::new(false));
    let io = io::TimedStream::new(
        stream,
        Arc::clone(&busy),
        shared.config.idle_timeout,
        shared.config.write_timeout,
    );
    let svc = {
        let shared = Arc::clone(&shared);
        let busy = Arc::clone(&busy);
        service_fn(move |req| {
            let shared = Arc::clone(&shared);
            let in_flight = InFlight::enter(&shared, &busy);
            async move {
                let resp = exchange(&shared, remote, req).await;
                drop(in_flight);
                resp
            }
        })
    };
    let conn = builder(&shared.config).serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let mut stop = shared.stop.subscribe();
    let mut cut = shared.cut.subscribe();
    tokio::select! {
        done = conn.as_mut() => {
            if let Err(e) = done {
                log::debug!("http connection from {remote}: {e}");
            }
            return;
        }
        _ = stop.wait_for(|s| *s) => {}
    }
    if !busy.load(Ordering::Acquire) {
        shared.idle_closed.fetch_add(1, Ordering::SeqCst);
    }
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = cut.wait_for(|c| *c) => {}
    }
    drop(guard);
}

/// Why a request body could not be read.
enum BodyFail {
    TooLarge,
    Busy,
    Malformed,
    /// The client went away: nothing to answer.
    Gone,
}

/// Body bytes reserved against the server's budget, given back when dropped.
struct BodyBudget {
    shared: Arc<Shared>,
    bytes: usize,
}

impl BodyBudget {
    fn take(&mut self, n: usize) -> bool {
        let limit = self.shared.config.max_body_bytes_in_flight;
        let counter = &self.shared.counters.body_bytes_in_flight;
        let mut current = counter.load(Ordering::Relaxed);
        loop {
            let Some(next) = current.checked_add(n).filter(|next| *next <= limit) else {
                return false;
            };
            match counter.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.bytes += n;
                    return true;
                }
                Err(seen) => current = seen,
            }
        }
    }
}

impl Drop for BodyBudget {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.shared
                .counters
                .body_bytes_in_flight
                .fetch_sub(self.bytes, Ordering::AcqRel);
        }
    }
}

async fn read_body(
    shared: &Arc<Shared>,
    mut body: Incoming,
    declared: Option<u64>,
    budget: &mut BodyBudget,
) -> Result<Vec<u8>, BodyFail> {
    let limit = shared.config.max_body_bytes;
    let capacity = declared.map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let mut out = Vec::with_capacity(capacity.min(INITIAL_BODY_CAPACITY));
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) if e.is_incomplete_message() || e.is_canceled() || e.is_closed() => {
                return Err(BodyFail::Gone);
            }
            Err(e) => {
                log::debug!("request body: {e}");
                return Err(BodyFail::Malformed);
            }
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers are read and dropped
        };
        if out.len().saturating_add(data.len()) > limit {
            return Err(BodyFail::TooLarge);
        }
        if !budget.take(data.len()) {
            return Err(BodyFail::Busy);
        }
        out.extend_from_slice(&data);
    }
    Ok(out)
}

/// One request: checks, body, handler, answer.
async fn exchange(
    shared: &Arc<Shared>,
    remote: SocketAddr,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, std::io::Error> {
    let start = Instant::now();
    let config = &shared.config;
    let (parts, body) = req.into_parts();
    let request_id = pick_request_id(&parts.headers);
    let method = parts.method.as_str().to_string();
    let head_only = parts.method == hyper::Method::HEAD;
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let http10 = parts.version == hyper::Version::HTTP_10;
    let logged = Logged {
        request_id: &request_id,
        remote,
        method: &method,
        path: &path,
        start,
    };
    let fail = |status: u16, message: &str| {
        let resp = shared.handler.error(status, message);
        access_log(&logged, status, sent_bytes(&resp, head_only));
        Ok(to_hyper(resp, &request_id, false, head_only))
    };

    // Origin form (`/path`), absolute form (`http://host/path`) or `*`; never authority form.
    if !(path.starts_with('/') || path == "*") {
        return fail(400, "malformed request target");
    }
    // RFC 9112 §3.2: exactly one Host in HTTP/1.1 (at most one in 1.0).
    let hosts = parts.headers.get_all(hyper::header::HOST).iter().count();
    if hosts > 1 || (hosts == 0 && !http10) {
        return fail(400, "a request must carry exactly one Host header");
    }
    // hyper frames chunked bodies only when chunked is the last coding; any other coding is
    // one we do not decode.
    let codings: Vec<&str> = parts
        .headers
        .get_all(hyper::header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("?").split(','))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    if codings.iter().any(|c| !c.eq_ignore_ascii_case("chunked")) || codings.len() > 1 {
        return fail(501, "transfer coding not supported");
    }
    for expect in parts.headers.get_all(hyper::header::EXPECT) {
        if !expect.as_bytes().eq_ignore_ascii_case(b"100-continue") || http10 {
            return fail(417, "unsupported expectation");
        }
    }
    // hyper has checked that a Content-Length is digits only and consistent.
    let declared = parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > config.max_body_bytes as u64) {
        return fail(413, MSG_BODY_TOO_LARGE);
    }

    let mut keep_alive = {
        let (close, keep) = connection_options(&parts.headers);
        if http10 { keep && !close } else { !close }
    };
    let mut budget = BodyBudget {
        shared: Arc::clone(shared),
        bytes: 0,
    };
    let read_deadline = tokio::time::Instant::from_std(start + config.read_timeout);
    let body = match tokio::time::timeout_at(
        read_deadline,
        read_body(shared, body, declared, &mut budget),
    )
    .await
    {
        Ok(Ok(body)) => body,
        Ok(Err(BodyFail::TooLarge)) => return fail(413, MSG_BODY_TOO_LARGE),
        Ok(Err(BodyFail::Malformed)) => return fail(400, MSG_MALFORMED_BODY),
        Ok(Err(BodyFail::Busy)) => {
            shared
                .counters
                .busy_rejections
                .fetch_add(1, Ordering::Relaxed);
            return fail(503, "server busy: too many request bodies in flight");
        }
        Err(_) => return fail(408, MSG_TIMEOUT),
        Ok(Err(BodyFail::Gone)) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "client went away",
            ));
        }
    };

    let headers = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let req = Request {
        method: method.clone(),
        path: path.clone(),
        query,
        headers,
        body,
        remote: Some(remote),
        request_id: request_id.clone(),
    };
    let resp = if shared.handler.inline(&req) {
        shared.call(req, &request_id)
    } else {
        match run_in_slot(shared, req, &request_id).await {
            Some(resp) => resp,
            None => {
                shared
                    .counters
                    .busy_rejections
                    .fetch_add(1, Ordering::Relaxed);
                return fail(503, "server busy: no handler slot in time");
            }
        }
    };
    drop(budget);
    shared
        .counters
        .requests_total
        .fetch_add(1, Ordering::Relaxed);
    if resp
        .headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("connection") && has_token(v, "close"))
    {
        keep_alive = false;
    }
    if shared.stopping() {
        keep_alive = false;
        shared
            .finished_while_stopping
            .fetch_add(1, Ordering::SeqCst);
    }
    access_log(&logged, resp.status, sent_bytes(&resp, head_only));
    Ok(to_hyper(resp, &request_id, keep_alive, head_only))
}

/// Counts a request waiting for a slot until dropped.
struct Queued(Arc<Shared>);

impl Drop for Queued {
    fn drop(&mut self) {
        self.0
            .counters
            .queued_requests
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs the handler on a blocking thread once a slot is free; `None` when none freed up within
/// `queue_timeout`. The slot is held until the handler returns, even if the connection is gone.
async fn run_in_slot(shared: &Arc<Shared>, req: Request, request_id: &str) -> Option<Response> {
    let permit = match shared.slots.try_acquire() {
        Ok(permit) => permit,
        Err(_) => {
            shared
                .counters
                .queued_requests
                .fetch_add(1, Ordering::Relaxed);
            let queued = Queued(Arc::clone(shared));
            let waited =
                tokio::time::timeout(shared.config.queue_timeout, shared.slots.acquire()).await;
            drop(queued);
            match waited {
                Ok(Ok(permit)) => permit,
                _ => return None,
            }
        }
    };
    permit.forget();
    shared.counters.busy_workers.fetch_add(1, Ordering::Relaxed);
    let worker = Arc::clone(shared);
    let id = request_id.to_string();
    let joined = tokio::task::spawn_blocking(move || {
        let resp = worker.call(req, &id);
        worker.counters.busy_workers.fetch_sub(1, Ordering::Relaxed);
        worker.slots.add_permits(1);
        resp
    })
    .await;
    Some(joined.unwrap_or_else(|_| shared.handler.error(500, MSG_INTERNAL)))
}

fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// `(close, keep-alive)` as the request's Connection fields ask.
fn connection_options(headers: &hyper::HeaderMap) -> (bool, bool) {
    let (mut close, mut keep) = (false, false);
    for v in headers.get_all(hyper::header::CONNECTION) {
        let v = String::from_utf8_lossy(v.as_bytes());
        close |= has_token(&v, "close");
        keep |= has_token(&v, "keep-alive");
    }
    (close, keep)
}

/// The hyper response for `resp`: the handler's fields, minus those the server owns, plus
/// `X-Request-Id` and `Connection`; hyper adds `Date` and the length.
fn to_hyper(
    resp: Response,
    request_id: &str,
    keep_alive: bool,
    head_only: bool,
) -> hyper::Response<Full<Bytes>> {
    let status = hyper::StatusCode::from_u16(resp.status)
        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let mut out = hyper::Response::new(Full::new(Bytes::new()));
    *out.status_mut() = status;
    let headers = out.headers_mut();
    let mut has_content_type = false;
    let mut declared_length: Option<u64> = None;
    for (name, value) in &resp.headers {
        if name.eq_ignore_ascii_case("content-length") {
            declared_length = value.trim().parse().ok();
        }
        if server_owned(name) {
            continue;
        }
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(n), Ok(v)) => {
                has_content_type |= n == hyper::header::CONTENT_TYPE;
                headers.append(n, v);
            }
            _ => log::warn!("request {request_id}: dropped invalid response header `{name}`"),
        }
    }
    let no_body = matches!(resp.status, 204 | 304);
    if !has_content_type && !resp.body.is_empty() && !no_body {
        headers.insert(
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(HeaderName::from_static("x-request-id"), v);
    }
    headers.insert(
        hyper::header::CONNECTION,
        HeaderValue::from_static(if keep_alive { "keep-alive" } else { "close" }),
    );
    // RFC 9110 §8.6: on HEAD the length of the full representation, which a handler may declare
    // itself when it leaves the body out.
    if head_only && resp.body.is_empty() && !no_body {
        headers.insert(
            hyper::header::CONTENT_LENGTH,
            HeaderValue::from(declared_length.unwrap_or(0)),
        );
    }
    if !no_body {
        *out.body_mut() = Full::new(Bytes::from(resp.body));
    }
    out
}

/// One line per exchange; `bytes` is the length of the body sent.
fn access_log(exchange: &Logged<'_>, status: u16, bytes: usize) {
    log::info!(
        target: "access",
        "id={} remote={} method={} path={} status={status} bytes={bytes} us={}",
        exchange.request_id,
        exchange.remote,
        exchange.method,
        exchange.path,
        exchange.start.elapsed().as_micros()
    );
}

/// What the access log says about a request.
struct Logged<'a> {
    request_id: &'a str,
    remote: SocketAddr,
    method: &'a str,
    path: &'a str,
    start: Instant,
}

/// Bytes of body an answer carries on the wire.
fn sent_bytes(resp: &Response, head_only: bool) -> usize {
    if head_only || matches!(resp.status, 204 | 304) {
        0
    } else {
        resp.body.len()
    }
}

/// An incoming `X-Request-Id` if it is 1 to 64 characters of `[A-Za-z0-9._-]`, else a new one.
fn pick_request_id(headers: &hyper::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| valid_request_id(v))
        .map_or_else(generate_request_id, str::to_string)
}

fn valid_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A process-unique id: a random per-process prefix and a counter.
fn generate_request_id() -> String {
    static PREFIX: OnceLock<String> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let prefix = PREFIX.get_or_init(|| {
        // RandomState is seeded from the OS; the pid and the clock make it differ across runs
        // even where that seed would not.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        hasher.write_u128(nanos);
        format!("{:016x}", hasher.finish())
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{n:x}")
}

/// Header fields the server writes itself; the handler's copies are dropped.
fn server_owned(name: &str) -> bool {
    [
        "content-length",
        "connection",
        "transfer-encoding",
        "date",
        "x-request-id",
        "keep-alive",
    ]
    .iter()
    .any(|owned| name.eq_ignore_ascii_case(owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> hyper::HeaderMap {
        let mut m = hyper::HeaderMap::new();
        for (n, v) in pairs {
            m.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn request_ids_are_validated_and_generated_unique() {
        assert!(valid_request_id("abc-DEF_1.2"));
        assert!(!valid_request_id(""));
        assert!(!valid_request_id(&"x".repeat(65)));
        assert!(!valid_request_id("a b"));
        let a = generate_request_id();
        let b = generate_request_id();
        assert_ne!(a, b);
        assert!(valid_request_id(&a), "{a}");
        assert_eq!(
            pick_request_id(&headers(&[("x-request-id", "given-1")])),
            "given-1"
        );
        assert_ne!(
            pick_request_id(&headers(&[("x-request-id", "bad id")])),
            "bad id"
        );
    }

    #[test]
    fn connection_options_read_every_field() {
        assert_eq!(
            connection_options(&headers(&[("connection", "Keep-Alive, foo")])),
            (false, true)
        );
        assert_eq!(
            connection_options(&headers(&[("connection", "x"), ("connection", "close")])),
            (true, false)
        );
    }

    #[test]
    fn answers_carry_the_server_fields_and_drop_the_handlers_copies() {
        let resp = Response::json(200, &serde_json::json!({"a": 1}))
            .with_header("Connection", "upgrade")
            .with_header("Content-Length", "999")
            .with_header("X-Bad", "a\r\nb")
            .with_header("X-Good", "ok");
        let out = to_hyper(resp, "rid-1", true, false);
        let h = out.headers();
        assert_eq!(h["connection"], "keep-alive");
        assert_eq!(h["x-request-id"], "rid-1");
        assert_eq!(h["x-good"], "ok");
        assert!(h.get("x-bad").is_none());
        assert!(h.get("content-length").is_none(), "hyper writes the length");
        assert_eq!(h["content-type"], "application/json");

        let head = to_hyper(
            Response::new(200).with_header("Content-Length", "42"),
            "rid-2",
            false,
            true,
        );
        assert_eq!(head.headers()["content-length"], "42");
        assert_eq!(head.headers()["connection"], "close");
    }

    #[test]
    fn the_body_budget_is_shared_and_given_back() {
        let config = ServerConfig {
            max_body_bytes: 10,
            max_body_bytes_in_flight: 15,
            ..ServerConfig::default()
        };
        let server = Server::bind(config, Arc::new(|_: Request| Response::new(204))).unwrap();
        let shared = Arc::clone(&server.shared);
        let mut a = BodyBudget {
            shared: Arc::clone(&shared),
            bytes: 0,
        };
        let mut b = BodyBudget {
            shared: Arc::clone(&shared),
            bytes: 0,
        };
        assert!(a.take(10));
        assert!(!b.take(6));
        assert!(b.take(5));
        drop(a);
        assert_eq!(
            shared.counters.body_bytes_in_flight.load(Ordering::SeqCst),
            5
        );
        assert!(b.take(10));
        drop(b);
        assert_eq!(
            shared.counters.body_bytes_in_flight.load(Ordering::SeqCst),
            0
        );
    }
}
