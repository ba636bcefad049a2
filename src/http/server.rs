//! The connection layer under every HTTP handler: a `std::net` listener, one small I/O thread per
//! open connection (capped by `max_connections`, 503 beyond it), HTTP/1.x request heads parsed
//! with `httparse`, bodies framed by Content-Length or chunked coding, and a fair counting
//! semaphore of `workers` handler slots that bounds how many handlers run at once. Connection I/O
//! never waits for a slot, so a burst of keep-alive connections cannot starve; only handler calls
//! queue (docs/DECISIONS.md, 2026-11-25, says why this replaced tiny_http).
//!
//! Every response carries `Content-Length` (except 204), `Connection`, `Date` and `X-Request-Id`;
//! every error the layer itself produces is JSON `{"message": ...}`; every handler call runs
//! behind `catch_unwind`; every exchange is logged at info level on the `access` target.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::{self, Thread};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::message::{Request, Response, reason};

/// Stack of a connection thread, which also runs the handler: enough for serde_json's recursion
/// limit (128) in debug builds with room for the router and the policy engine.
const CONNECTION_STACK_BYTES: usize = 512 * 1024;
/// Stack of the accept thread and of the threads that turn away connections beyond the limit.
const SMALL_STACK_BYTES: usize = 128 * 1024;
/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 8 * 1024;
/// Header fields accepted in one request head (more: 431).
const MAX_HEADERS: usize = 100;
/// Longest chunk-size line of a chunked body (extensions included).
const MAX_CHUNK_LINE: usize = 4096;
/// After an error or a `Connection: close` answer, unread input is drained this long (and at most
/// `LINGER_BYTES`) before the socket closes, so the client reads the answer instead of a reset.
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 << 20;
/// Threads that may be turning away connections beyond `max_connections` at once; further
/// excess connections are closed without an answer.
const MAX_REJECTERS: usize = 64;
/// Longest incoming `X-Request-Id` taken as is.
const MAX_REQUEST_ID_LEN: usize = 64;
/// Bodies up to this size are sent in the same write as the head.
const INLINE_BODY_BYTES: usize = 16 * 1024;

const MSG_MALFORMED: &str = "malformed request";
const MSG_HEADERS_TOO_LARGE: &str = "request header fields too large";
const MSG_BODY_TOO_LARGE: &str = "request body too large";
const MSG_TIMEOUT: &str = "request timeout";
const MSG_INTERNAL: &str = "internal error";

// Connection states, as seen by the shutdown logic.
/// Waiting for the first byte of the next request.
const IDLE: u8 = 0;
/// A request has started arriving.
const READING: u8 = 1;
/// A request was read: waiting for a handler slot, in the handler, or writing the answer.
const HANDLING: u8 = 2;
/// Closing (draining unread input, or shut down).
const CLOSING: u8 = 3;

/// A request handler: a plain function from request to response.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: Request) -> Response;
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
    /// Handlers running at once; further requests wait for a slot in arrival order.
    pub workers: usize,
    /// Open connections; beyond it a connection gets 503 and is closed.
    pub max_connections: usize,
    /// Largest request body (Content-Length or decoded chunked); beyond it 413 and close.
    pub max_body_bytes: usize,
    /// Largest request head (request line and header fields); beyond it 431 and close.
    pub max_header_bytes: usize,
    /// A request that started arriving must be complete (head and body) within this time.
    pub read_timeout: Duration,
    /// A keep-alive connection without a request for this long is closed.
    pub idle_timeout: Duration,
    /// Writing one response (or a `100 Continue`) must finish within this time.
    pub write_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            workers: 16,
            max_connections: 1024,
            max_body_bytes: 1024 * 1024,
            max_header_bytes: 16 * 1024,
            read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
        }
    }
}

impl ServerConfig {
    fn validate(&self) -> io::Result<()> {
        let invalid = |what: &str| {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
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
        if self.read_timeout.is_zero()
            || self.idle_timeout.is_zero()
            || self.write_timeout.is_zero()
        {
            return invalid("server config: timeouts must be longer than zero");
        }
        Ok(())
    }
}

/// Counters shared by the server and its [`ServerStats`] handles.
#[derive(Debug, Default)]
struct Counters {
    open_connections: AtomicUsize,
    busy_workers: AtomicUsize,
    queued_requests: AtomicUsize,
    connections_total: AtomicU64,
    connections_rejected: AtomicU64,
    requests_total: AtomicU64,
    handler_panics: AtomicU64,
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
    /// Connections turned away with 503 (or closed) because `max_connections` were open.
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

/// A bound listener and its state. Connections queue in the listen backlog until [`Server::run`].
pub struct Server {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("config", &self.shared.config)
            .finish()
    }
}

impl Server {
    /// Binds the listener (the accept thread starts, but waits for `run`).
    pub fn bind(config: ServerConfig, handler: Arc<dyn Handler>) -> io::Result<Server> {
        config.validate()?;
        let listener = TcpListener::bind(config.bind)?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config,
            handler,
            counters: Arc::new(Counters::default()),
            permits: Mutex::new(PermitState {
                available: config.workers,
                waiters: VecDeque::new(),
            }),
            stopping: AtomicBool::new(false),
            phase: Mutex::new(Phase::default()),
            phase_cv: Condvar::new(),
            conns: Mutex::new(HashMap::new()),
            conns_cv: Condvar::new(),
            next_conn: AtomicU64::new(0),
            rejecters: AtomicUsize::new(0),
            finished_while_stopping: AtomicUsize::new(0),
        });
        let accept_shared = Arc::clone(&shared);
        thread::Builder::new()
            .name("http-accept".into())
            .stack_size(SMALL_STACK_BYTES)
            .spawn(move || accept_loop(listener, &accept_shared))?;
        Ok(Server { shared, local_addr })
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
    pub fn run(self, grace: Duration) -> ShutdownReport {
        let shared = &self.shared;
        let stop_at = {
            let mut phase = lock(&shared.phase);
            phase.running = true;
            shared.phase_cv.notify_all();
            loop {
                if let Some(at) = phase.stop_at {
                    break at;
                }
                phase = shared
                    .phase_cv
                    .wait(phase)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        let deadline = stop_at + grace;
        log::info!(
            "http server on {} shutting down (grace {} ms)",
            self.local_addr,
            grace.as_millis()
        );

        let idle_closed = shared.close_idle();
        shared.wake_acceptor(self.local_addr, deadline);
        {
            let mut phase = lock(&shared.phase);
            while !phase.accept_done {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                phase = match shared.phase_cv.wait_timeout(phase, left) {
                    Ok((guard, _)) => guard,
                    Err(poisoned) => poisoned.into_inner().0,
                };
            }
        }

        let cut_off = {
            let mut conns = lock(&shared.conns);
            loop {
                let busy = conns.values().filter(|c| c.in_flight()).count();
                let left = deadline.saturating_duration_since(Instant::now());
                if busy == 0 || left.is_zero() {
                    break;
                }
                conns = match shared.conns_cv.wait_timeout(conns, left) {
                    Ok((guard, _)) => guard,
                    Err(poisoned) => poisoned.into_inner().0,
                };
            }
            let mut cut_off = 0;
            for conn in conns.values() {
                if conn.in_flight() {
                    cut_off += 1;
                }
                conn.state.store(CLOSING, Ordering::SeqCst);
                // Wakes the connection's thread wherever it blocks on the socket.
                let _ = conn.stream.shutdown(Shutdown::Both);
            }
            cut_off
        };
        let report = ShutdownReport {
            cut_off,
            idle_closed,
            finished: shared.finished_while_stopping.load(Ordering::SeqCst),
            elapsed: stop_at.elapsed(),
        };
        if report.cut_off > 0 {
            log::warn!(
                "http server on {}: {} request(s) cut off after the grace period",
                self.local_addr,
                report.cut_off
            );
        }
        log::info!("http server on {} stopped: {report:?}", self.local_addr);
        report
    }
}

impl Drop for Server {
    /// A server dropped without `run` (or after it) lets its accept thread go.
    fn drop(&mut self) {
        self.shared.request_shutdown();
    }
}

#[derive(Debug, Default)]
struct Phase {
    running: bool,
    stop_at: Option<Instant>,
    accept_done: bool,
}

struct PermitState {
    available: usize,
    waiters: VecDeque<Arc<Waiter>>,
}

/// A request waiting for a handler slot; slots are handed over in arrival order.
struct Waiter {
    granted: AtomicBool,
    thread: Thread,
}

/// An open connection as the shutdown logic sees it.
struct ConnEntry {
    /// A second handle on the connection's socket, to shut it down from outside.
    stream: TcpStream,
    state: AtomicU8,
}

impl ConnEntry {
    fn in_flight(&self) -> bool {
        matches!(self.state.load(Ordering::SeqCst), READING | HANDLING)
    }
}

struct Shared {
    config: ServerConfig,
    handler: Arc<dyn Handler>,
    counters: Arc<Counters>,
    permits: Mutex<PermitState>,
    stopping: AtomicBool,
    phase: Mutex<Phase>,
    phase_cv: Condvar,
    conns: Mutex<HashMap<u64, Arc<ConnEntry>>>,
    conns_cv: Condvar,
    next_conn: AtomicU64,
    rejecters: AtomicUsize,
    finished_while_stopping: AtomicUsize,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn request_shutdown(&self) {
        let mut phase = lock(&self.phase);
        if phase.stop_at.is_none() {
            phase.stop_at = Some(Instant::now());
        }
        self.stopping.store(true, Ordering::SeqCst);
        self.phase_cv.notify_all();
    }

    /// Wakes `run` if it waits for in-flight requests to finish.
    fn notify_conns(&self) {
        drop(lock(&self.conns));
        self.conns_cv.notify_all();
    }

    /// Closes every connection waiting for its next request; returns how many.
    fn close_idle(&self) -> usize {
        let conns = lock(&self.conns);
        let mut closed = 0;
        for conn in conns.values() {
            if conn
                .state
                .compare_exchange(IDLE, CLOSING, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                let _ = conn.stream.shutdown(Shutdown::Both);
                closed += 1;
            }
        }
        closed
    }

    /// Unblocks the accept thread's `accept` with a connection of our own.
    fn wake_acceptor(&self, addr: SocketAddr, deadline: Instant) {
        if lock(&self.phase).accept_done {
            return;
        }
        let ip = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let timeout = deadline
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), Duration::from_millis(250));
        if let Err(e) = TcpStream::connect_timeout(&SocketAddr::new(ip, addr.port()), timeout) {
            log::debug!("http server on {addr}: waking the accept thread: {e}");
        }
    }

    /// Takes a handler slot, waiting in arrival order when all are busy.
    fn acquire(&self) -> Permit<'_> {
        let waiter = {
            let mut permits = lock(&self.permits);
            if permits.available > 0 && permits.waiters.is_empty() {
                permits.available -= 1;
                self.counters.busy_workers.fetch_add(1, Ordering::Relaxed);
                return Permit { shared: self };
            }
            let waiter = Arc::new(Waiter {
                granted: AtomicBool::new(false),
                thread: thread::current(),
            });
            permits.waiters.push_back(Arc::clone(&waiter));
            self.counters
                .queued_requests
                .fetch_add(1, Ordering::Relaxed);
            waiter
        };
        while !waiter.granted.load(Ordering::Acquire) {
            thread::park();
        }
        Permit { shared: self }
    }

    /// Gives a slot back, straight to the longest waiting request if there is one.
    fn release(&self) {
        let mut permits = lock(&self.permits);
        match permits.waiters.pop_front() {
            Some(waiter) => {
                self.counters
                    .queued_requests
                    .fetch_sub(1, Ordering::Relaxed);
                waiter.granted.store(true, Ordering::Release);
                waiter.thread.unpark();
            }
            None => {
                permits.available += 1;
                self.counters.busy_workers.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Runs the handler in a slot; a panic (or an impossible status) becomes a plain 500.
    fn call(&self, req: Request, request_id: &str) -> Response {
        let permit = self.acquire();
        let outcome = catch_unwind(AssertUnwindSafe(|| self.handler.handle(req)));
        drop(permit);
        match outcome {
            Ok(resp) if (200..=999).contains(&resp.status) => resp,
            Ok(resp) => {
                log::error!(
                    "request {request_id}: handler returned status {}",
                    resp.status
                );
                Response::error(500, MSG_INTERNAL)
            }
            Err(payload) => {
                self.counters.handler_panics.fetch_add(1, Ordering::Relaxed);
                let what = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".to_string());
                log::error!("request {request_id}: handler panicked: {what}");
                Response::error(500, MSG_INTERNAL)
            }
        }
    }
}

struct Permit<'a> {
    shared: &'a Shared,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.shared.release();
    }
}

/// Removes a connection from the registry when its thread ends (or never starts).
struct ConnGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut conns = lock(&self.shared.conns);
        conns.remove(&self.id);
        self.shared
            .counters
            .open_connections
            .fetch_sub(1, Ordering::SeqCst);
        drop(conns);
        self.shared.conns_cv.notify_all();
    }
}

struct RejecterGuard(Arc<Shared>);

impl Drop for RejecterGuard {
    fn drop(&mut self) {
        self.0.rejecters.fetch_sub(1, Ordering::SeqCst);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn accept_loop(listener: TcpListener, shared: &Arc<Shared>) {
    {
        let mut phase = lock(&shared.phase);
        while !phase.running && phase.stop_at.is_none() {
            phase = shared
                .phase_cv
                .wait(phase)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
    while !shared.stopping() {
        match listener.accept() {
            Ok((stream, remote)) => {
                if shared.stopping() {
                    break;
                }
                admit(shared, stream, remote);
            }
            Err(e) => match e.kind() {
                io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::Interrupted
                | io::ErrorKind::WouldBlock => {}
                _ => {
                    // Out of descriptors or memory: back off instead of spinning.
                    log::warn!("http accept: {e}");
                    thread::sleep(Duration::from_millis(20));
                }
            },
        }
    }
    drop(listener);
    lock(&shared.phase).accept_done = true;
    shared.phase_cv.notify_all();
}

/// Starts a connection's thread, or turns the connection away at the limit.
fn admit(shared: &Arc<Shared>, stream: TcpStream, remote: SocketAddr) {
    // Only this thread increments, so the check and the increment cannot race each other.
    if shared.counters.open_connections.load(Ordering::SeqCst) >= shared.config.max_connections {
        reject(shared, stream, remote);
        return;
    }
    let twin = match stream.try_clone() {
        Ok(twin) => twin,
        Err(e) => {
            log::warn!("http accept: cannot register connection from {remote}: {e}");
            return;
        }
    };
    shared
        .counters
        .open_connections
        .fetch_add(1, Ordering::SeqCst);
    shared
        .counters
        .connections_total
        .fetch_add(1, Ordering::Relaxed);
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let entry = Arc::new(ConnEntry {
        stream: twin,
        state: AtomicU8::new(IDLE),
    });
    lock(&shared.conns).insert(id, Arc::clone(&entry));
    let guard = ConnGuard {
        shared: Arc::clone(shared),
        id,
    };
    let spawned = thread::Builder::new()
        .name("http-conn".into())
        .stack_size(CONNECTION_STACK_BYTES)
        .spawn(move || {
            let shared = Arc::clone(&guard.shared);
            Conn::new(shared, entry, stream, remote).serve();
            drop(guard);
        });
    if let Err(e) = spawned {
        // The closure, and with it the guard and the socket, is dropped.
        log::warn!("http accept: cannot start a thread for {remote}: {e}");
    }
}

/// Answers 503 on a short-lived thread (bounded by `MAX_REJECTERS`) and closes.
fn reject(shared: &Arc<Shared>, stream: TcpStream, remote: SocketAddr) {
    shared
        .counters
        .connections_rejected
        .fetch_add(1, Ordering::Relaxed);
    if shared.rejecters.fetch_add(1, Ordering::SeqCst) >= MAX_REJECTERS {
        shared.rejecters.fetch_sub(1, Ordering::SeqCst);
        return;
    }
    let guard = RejecterGuard(Arc::clone(shared));
    let spawned = thread::Builder::new()
        .name("http-reject".into())
        .stack_size(SMALL_STACK_BYTES)
        .spawn(move || {
            let start = Instant::now();
            let mut stream = stream;
            let request_id = generate_request_id();
            let resp = Response::error(503, "too many connections").with_header("Retry-After", "1");
            let mut out = render_head(&resp, &request_id, false, false);
            out.extend_from_slice(&resp.body);
            let _ = stream.set_write_timeout(Some(guard.0.config.write_timeout));
            let written = stream.write_all(&out).is_ok();
            access_log(
                &request_id,
                remote,
                "-",
                "-",
                503,
                if written { resp.body.len() } else { 0 },
                start,
            );
            linger_close(&mut stream);
            drop(guard);
        });
    if let Err(e) = spawned {
        log::warn!("http accept: cannot answer 503 to {remote}: {e}");
    }
}

/// Sends FIN, then reads and discards what the client still sends for a short while, so that the
/// client reads our answer rather than a reset caused by its unread data.
fn linger_close(stream: &mut TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    if stream.set_read_timeout(Some(LINGER_TIME)).is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER_TIME;
    let mut scratch = [0u8; 16 * 1024];
    let mut drained = 0usize;
    while drained < LINGER_BYTES && Instant::now() < deadline {
        match stream.read(&mut scratch) {
            Ok(0) => break,
            Ok(n) => drained += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

fn access_log(
    request_id: &str,
    remote: SocketAddr,
    method: &str,
    path: &str,
    status: u16,
    bytes: usize,
    start: Instant,
) {
    log::info!(
        target: "access",
        "id={request_id} remote={remote} method={method} path={path} status={status} bytes={bytes} us={}",
        start.elapsed().as_micros()
    );
}

/// Why reading from the socket stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadFail {
    Timeout,
    Eof,
    Io,
}

/// Why reading a request body stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyFail {
    Read(ReadFail),
    TooLarge,
    Bad(&'static str),
    TrailersTooLarge,
}

impl From<ReadFail> for BodyFail {
    fn from(fail: ReadFail) -> BodyFail {
        BodyFail::Read(fail)
    }
}

/// What to do with the connection after one exchange.
enum Next {
    KeepAlive,
    /// Close at once (client gone, idle, or nothing more to say).
    Close,
    /// Close after draining unread input (we answered and announced `Connection: close`).
    Linger,
}

/// Bytes read from the socket and not consumed yet: `data[start..end]`.
struct InBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl InBuf {
    fn new() -> InBuf {
        InBuf {
            data: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    fn len(&self) -> usize {
        self.end - self.start
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Free space after the unread bytes (at least half a read chunk).
    fn spare(&mut self) -> &mut [u8] {
        if self.data.len() - self.end < READ_CHUNK / 2 {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.data.len() - self.end < READ_CHUNK / 2 {
                self.data.resize(self.end + READ_CHUNK, 0);
            }
        }
        &mut self.data[self.end..]
    }

    fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.data.len());
    }
}

/// One read with the socket's read timeout set to `timeout` (set only when it changes).
fn read_with_timeout(
    stream: &mut TcpStream,
    current: &mut Option<Duration>,
    dst: &mut [u8],
    timeout: Duration,
) -> Result<usize, ReadFail> {
    if dst.is_empty() {
        return Ok(0);
    }
    if *current != Some(timeout) {
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|_| ReadFail::Io)?;
        *current = Some(timeout);
    }
    loop {
        match stream.read(dst) {
            Ok(0) => return Err(ReadFail::Eof),
            Ok(n) => return Ok(n),
            Err(e) => match e.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    return Err(ReadFail::Timeout);
                }
                _ => return Err(ReadFail::Io),
            },
        }
    }
}

fn remaining(deadline: Instant) -> Result<Duration, ReadFail> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(ReadFail::Timeout)
    } else {
        Ok(left.max(Duration::from_millis(1)))
    }
}

/// What the log and the error answers know about the request being served.
struct Exchange {
    request_id: String,
    method: String,
    path: String,
    head_only: bool,
    start: Instant,
}

impl Exchange {
    fn unparsed(start: Instant) -> Exchange {
        Exchange {
            request_id: generate_request_id(),
            method: "-".into(),
            path: "-".into(),
            head_only: false,
            start,
        }
    }
}

/// One connection, served by its own thread.
struct Conn {
    shared: Arc<Shared>,
    entry: Arc<ConnEntry>,
    stream: TcpStream,
    remote: SocketAddr,
    inbuf: InBuf,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl Conn {
    fn new(
        shared: Arc<Shared>,
        entry: Arc<ConnEntry>,
        stream: TcpStream,
        remote: SocketAddr,
    ) -> Conn {
        Conn {
            shared,
            entry,
            stream,
            remote,
            inbuf: InBuf::new(),
            read_timeout: None,
            write_timeout: None,
        }
    }

    fn serve(mut self) {
        let _ = self.stream.set_nodelay(true);
        loop {
            match self.serve_one() {
                Next::KeepAlive => {}
                Next::Close => break,
                Next::Linger => {
                    self.set_state(CLOSING);
                    linger_close(&mut self.stream);
                    break;
                }
            }
        }
        self.set_state(CLOSING);
    }

    fn set_state(&self, state: u8) {
        self.entry.state.store(state, Ordering::SeqCst);
        if self.shared.stopping() {
            self.shared.notify_conns();
        }
    }

    fn fill(&mut self, timeout: Duration) -> Result<usize, ReadFail> {
        let spare = self.inbuf.spare();
        let n = read_with_timeout(&mut self.stream, &mut self.read_timeout, spare, timeout)?;
        self.inbuf.commit(n);
        Ok(n)
    }

    fn fill_until(&mut self, deadline: Instant) -> Result<usize, ReadFail> {
        let left = remaining(deadline)?;
        self.fill(left)
    }

    /// Reads, handles and answers one request.
    fn serve_one(&mut self) -> Next {
        let config = self.shared.config;
        if self.inbuf.is_empty() {
            self.set_state(IDLE);
            if self.shared.stopping() {
                return Next::Close;
            }
            if self.fill(config.idle_timeout).is_err() {
                return Next::Close;
            }
            // Shutdown may have claimed the idle connection meanwhile: then it is closed.
            if self
                .entry
                .state
                .compare_exchange(IDLE, READING, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                return Next::Close;
            }
        } else {
            self.entry.state.store(READING, Ordering::SeqCst);
        }
        let start = Instant::now();
        let deadline = start + config.read_timeout;

        let head = loop {
            match parse_head(self.inbuf.bytes(), config.max_header_bytes) {
                HeadParse::Complete(head, len) => {
                    self.inbuf.consume(len);
                    break head;
                }
                HeadParse::Partial => {
                    if self.inbuf.len() >= config.max_header_bytes {
                        return self.fail(&Exchange::unparsed(start), 431, MSG_HEADERS_TOO_LARGE);
                    }
                    match self.fill_until(deadline) {
                        Ok(_) => {}
                        Err(ReadFail::Timeout) => {
                            return self.fail(&Exchange::unparsed(start), 408, MSG_TIMEOUT);
                        }
                        Err(_) => return Next::Close,
                    }
                }
                HeadParse::Fail(status, message) => {
                    return self.fail(&Exchange::unparsed(start), status, message);
                }
            }
        };

        let request_id = pick_request_id(&head.headers);
        let Some((path, query)) = split_target(&head.target) else {
            let ex = Exchange {
                request_id,
                method: head.method,
                path: "-".into(),
                head_only: false,
                start,
            };
            return self.fail(&ex, 400, "malformed request target");
        };
        let ex = Exchange {
            request_id,
            method: head.method.clone(),
            path: path.clone(),
            head_only: head.method == "HEAD",
            start,
        };
        let options = connection_options(&head.headers);
        let mut keep_alive = if head.minor >= 1 {
            !options.close
        } else {
            options.keep_alive && !options.close
        };
        let framing = match body_framing(&head.headers, head.minor) {
            Ok(framing) => framing,
            Err((status, message)) => return self.fail(&ex, status, message),
        };
        let expect_continue = match expects_continue(&head.headers, head.minor) {
            Ok(expect) => expect,
            Err((status, message)) => return self.fail(&ex, status, message),
        };
        if let Framing::Length(n) = framing {
            if n > config.max_body_bytes as u64 {
                return self.fail(&ex, 413, MSG_BODY_TOO_LARGE);
            }
        }
        if expect_continue && framing.has_body() && self.inbuf.is_empty() {
            let write_deadline = Instant::now() + config.write_timeout;
            if self
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n", write_deadline)
                .is_err()
            {
                return Next::Close;
            }
        }
        let body = match framing {
            Framing::None => Ok(Vec::new()),
            // Bounded by max_body_bytes above, so it fits in usize.
            Framing::Length(n) => self.read_body(n as usize, deadline),
            Framing::Chunked => self.read_chunked(deadline),
        };
        let body = match body {
            Ok(body) => body,
            Err(BodyFail::Read(ReadFail::Timeout)) => return self.fail(&ex, 408, MSG_TIMEOUT),
            Err(BodyFail::Read(_)) => return Next::Close,
            Err(BodyFail::TooLarge) => return self.fail(&ex, 413, MSG_BODY_TOO_LARGE),
            Err(BodyFail::Bad(message)) => return self.fail(&ex, 400, message),
            Err(BodyFail::TrailersTooLarge) => {
                return self.fail(&ex, 431, MSG_HEADERS_TOO_LARGE);
            }
        };

        self.entry.state.store(HANDLING, Ordering::SeqCst);
        let req = Request {
            method: head.method,
            path,
            query,
            headers: head.headers,
            body,
            remote: Some(self.remote),
            request_id: ex.request_id.clone(),
        };
        let resp = self.shared.call(req, &ex.request_id);
        self.shared
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
        let stopping = self.shared.stopping();
        if stopping {
            keep_alive = false;
        }
        let written = self.respond(&ex, &resp, keep_alive);
        if stopping && written.is_ok() {
            self.shared
                .finished_while_stopping
                .fetch_add(1, Ordering::SeqCst);
        }
        match written {
            Err(_) => Next::Close,
            Ok(()) if keep_alive => Next::KeepAlive,
            Ok(()) => Next::Linger,
        }
    }

    /// Answers an error produced by this layer, always closing the connection afterwards.
    fn fail(&mut self, ex: &Exchange, status: u16, message: &str) -> Next {
        self.entry.state.store(HANDLING, Ordering::SeqCst);
        let resp = Response::error(status, message);
        match self.respond(ex, &resp, false) {
            Ok(()) => Next::Linger,
            Err(_) => Next::Close,
        }
    }

    /// Writes a response and logs the exchange.
    fn respond(&mut self, ex: &Exchange, resp: &Response, keep_alive: bool) -> io::Result<()> {
        let deadline = Instant::now() + self.shared.config.write_timeout;
        let mut out = render_head(resp, &ex.request_id, keep_alive, ex.head_only);
        let body: &[u8] = if ex.head_only || matches!(resp.status, 204 | 304) {
            &[]
        } else {
            &resp.body
        };
        let result = if body.len() <= INLINE_BODY_BYTES {
            out.extend_from_slice(body);
            self.write_all(&out, deadline)
        } else {
            self.write_all(&out, deadline)
                .and_then(|()| self.write_all(body, deadline))
        };
        let sent = if result.is_ok() { body.len() } else { 0 };
        access_log(
            &ex.request_id,
            self.remote,
            &ex.method,
            &ex.path,
            resp.status,
            sent,
            ex.start,
        );
        result
    }

    /// Writes everything before `deadline`. The socket's write timeout is reset only when it
    /// differs from the time left by more than a little, so the usual one-write answer costs no
    /// extra system call.
    fn write_all(&mut self, mut data: &[u8], deadline: Instant) -> io::Result<()> {
        const SLACK: Duration = Duration::from_millis(20);
        while !data.is_empty() {
            let left = remaining(deadline).map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?;
            if self.write_timeout.is_none_or(|t| t.abs_diff(left) > SLACK) {
                self.stream.set_write_timeout(Some(left))?;
                self.write_timeout = Some(left);
            }
            match self.stream.write(data) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads a body of exactly `len` bytes.
    fn read_body(&mut self, len: usize, deadline: Instant) -> Result<Vec<u8>, BodyFail> {
        let mut body = Vec::with_capacity(len);
        self.read_exact_into(&mut body, len, deadline)?;
        Ok(body)
    }

    /// Appends exactly `len` more bytes of input to `dst`.
    fn read_exact_into(
        &mut self,
        dst: &mut Vec<u8>,
        len: usize,
        deadline: Instant,
    ) -> Result<(), ReadFail> {
        let buffered = len.min(self.inbuf.len());
        dst.extend_from_slice(&self.inbuf.bytes()[..buffered]);
        self.inbuf.consume(buffered);
        let mut filled = dst.len();
        let target = filled + (len - buffered);
        dst.resize(target, 0);
        while filled < target {
            let left = remaining(deadline)?;
            filled += read_with_timeout(
                &mut self.stream,
                &mut self.read_timeout,
                &mut dst[filled..target],
                left,
            )?;
        }
        Ok(())
    }

    /// One CRLF-terminated line (without the CRLF) of at most `limit` bytes.
    fn read_line(&mut self, limit: usize, deadline: Instant) -> Result<Vec<u8>, LineFail> {
        loop {
            let bytes = self.inbuf.bytes();
            if let Some(i) = bytes.iter().position(|&b| b == b'\n') {
                if i == 0 || bytes[i - 1] != b'\r' {
                    return Err(LineFail::Bad);
                }
                if i - 1 > limit {
                    return Err(LineFail::TooLong);
                }
                let line = bytes[..i - 1].to_vec();
                self.inbuf.consume(i + 1);
                return Ok(line);
            }
            if bytes.len() > limit + 1 {
                return Err(LineFail::TooLong);
            }
            self.fill_until(deadline).map_err(LineFail::Read)?;
        }
    }

    /// Decodes a chunked body, trailers read and dropped.
    fn read_chunked(&mut self, deadline: Instant) -> Result<Vec<u8>, BodyFail> {
        const BAD_CHUNK: &str = "malformed chunked body";
        let max = self.shared.config.max_body_bytes as u64;
        let mut body = Vec::new();
        loop {
            let line = match self.read_line(MAX_CHUNK_LINE, deadline) {
                Ok(line) => line,
                Err(LineFail::Read(fail)) => return Err(fail.into()),
                Err(LineFail::Bad | LineFail::TooLong) => return Err(BodyFail::Bad(BAD_CHUNK)),
            };
            let size = match parse_chunk_size(&line) {
                ChunkSize::Size(size) => size,
                ChunkSize::Overflow => return Err(BodyFail::TooLarge),
                ChunkSize::Bad => return Err(BodyFail::Bad(BAD_CHUNK)),
            };
            if size == 0 {
                break;
            }
            if body.len() as u64 + size > max {
                return Err(BodyFail::TooLarge);
            }
            // Bounded by max_body_bytes, so it fits in usize.
            self.read_exact_into(&mut body, size as usize, deadline)?;
            match self.read_line(0, deadline) {
                Ok(_) => {}
                Err(LineFail::Read(fail)) => return Err(fail.into()),
                Err(LineFail::Bad | LineFail::TooLong) => return Err(BodyFail::Bad(BAD_CHUNK)),
            }
        }
        let mut trailer_bytes = 0usize;
        loop {
            let limit = self
                .shared
                .config
                .max_header_bytes
                .saturating_sub(trailer_bytes);
            match self.read_line(limit, deadline) {
                Ok(line) if line.is_empty() => return Ok(body),
                Ok(line) => trailer_bytes += line.len() + 2,
                Err(LineFail::Read(fail)) => return Err(fail.into()),
                Err(LineFail::TooLong) => return Err(BodyFail::TrailersTooLarge),
                Err(LineFail::Bad) => return Err(BodyFail::Bad(BAD_CHUNK)),
            }
        }
    }
}

enum LineFail {
    Read(ReadFail),
    Bad,
    TooLong,
}

/// A parsed request head.
#[derive(Debug)]
struct Head {
    method: String,
    target: String,
    /// HTTP/1.minor
    minor: u8,
    /// Names lower-cased, values trimmed (lossy UTF-8).
    headers: Vec<(String, String)>,
}

#[derive(Debug)]
enum HeadParse {
    Complete(Head, usize),
    Partial,
    Fail(u16, &'static str),
}

fn parse_head(buf: &[u8], max_header_bytes: usize) -> HeadParse {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            if len > max_header_bytes {
                return HeadParse::Fail(431, MSG_HEADERS_TOO_LARGE);
            }
            let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version)
            else {
                return HeadParse::Fail(400, MSG_MALFORMED);
            };
            let headers = req
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).trim().to_string(),
                    )
                })
                .collect();
            HeadParse::Complete(
                Head {
                    method: method.to_string(),
                    target: target.to_string(),
                    minor,
                    headers,
                },
                len,
            )
        }
        Ok(httparse::Status::Partial) => HeadParse::Partial,
        Err(httparse::Error::Version) if names_other_http_version(buf) => {
            HeadParse::Fail(505, "unsupported http version")
        }
        Err(httparse::Error::TooManyHeaders) => HeadParse::Fail(431, MSG_HEADERS_TOO_LARGE),
        Err(_) => HeadParse::Fail(400, MSG_MALFORMED),
    }
}

/// Whether the request line ends in a well-formed version other than 1.0/1.1 (`HTTP/2.0`).
fn names_other_http_version(buf: &[u8]) -> bool {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let line = &buf[start..];
    let line = match line.iter().position(|&b| b == b'\n') {
        Some(end) => &line[..end],
        None => line,
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.splitn(3, |&b| b == b' ');
    let (Some(_method), Some(_target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    match version.strip_prefix(b"HTTP/") {
        Some(rest) => {
            !rest.is_empty()
                && rest.len() <= 3
                && rest.first().is_some_and(u8::is_ascii_digit)
                && rest.iter().all(|&b| b.is_ascii_digit() || b == b'.')
        }
        None => false,
    }
}

/// Path and query of a request target (origin form, absolute form, or `*`).
fn split_target(target: &str) -> Option<(String, String)> {
    let lower_prefix = |p: &str| {
        target
            .get(..p.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(p))
    };
    let rest = if target.starts_with('/') || target == "*" {
        target
    } else if lower_prefix("http://") || lower_prefix("https://") {
        let after_scheme = &target[target.find("//").map_or(0, |i| i + 2)..];
        match after_scheme.find(['/', '?']) {
            Some(i) if after_scheme[i..].starts_with('/') => &after_scheme[i..],
            Some(i) => return Some(("/".into(), after_scheme[i + 1..].into())),
            None => "/",
        }
    } else {
        return None;
    };
    Some(match rest.split_once('?') {
        Some((path, query)) => (path.to_string(), query.to_string()),
        None => (rest.to_string(), String::new()),
    })
}

#[derive(Debug, Default, PartialEq, Eq)]
struct ConnectionOptions {
    close: bool,
    keep_alive: bool,
}

fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn connection_options(headers: &[(String, String)]) -> ConnectionOptions {
    let mut options = ConnectionOptions::default();
    for (_, value) in headers.iter().filter(|(n, _)| n == "connection") {
        options.close |= has_token(value, "close");
        options.keep_alive |= has_token(value, "keep-alive");
    }
    options
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
}

impl Framing {
    fn has_body(self) -> bool {
        matches!(self, Framing::Length(1..) | Framing::Chunked)
    }
}

/// Body framing from Content-Length / Transfer-Encoding (RFC 9112 §6), or the error answer.
fn body_framing(headers: &[(String, String)], minor: u8) -> Result<Framing, (u16, &'static str)> {
    let mut length: Option<u64> = None;
    let mut codings: Vec<String> = Vec::new();
    let mut transfer_encoding = false;
    for (name, value) in headers {
        if name == "content-length" {
            for part in value.split(',') {
                let part = part.trim();
                if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                    return Err((400, "invalid content-length"));
                }
                // All digits: only overflow fails, and that is far beyond any body limit.
                let n = part.parse::<u64>().unwrap_or(u64::MAX);
                match length {
                    Some(prev) if prev != n => return Err((400, "conflicting content-length")),
                    _ => length = Some(n),
                }
            }
        } else if name == "transfer-encoding" {
            transfer_encoding = true;
            codings.extend(
                value
                    .split(',')
                    .map(|c| c.trim().to_ascii_lowercase())
                    .filter(|c| !c.is_empty()),
            );
        }
    }
    if transfer_encoding {
        if length.is_some() {
            return Err((400, "both content-length and transfer-encoding"));
        }
        if minor == 0 {
            return Err((400, "transfer-encoding in an http/1.0 request"));
        }
        let chunked = codings.iter().filter(|c| *c == "chunked").count();
        return match codings.last() {
            Some(last) if last == "chunked" && codings.len() == 1 => Ok(Framing::Chunked),
            Some(last) if last == "chunked" && chunked == 1 => {
                Err((501, "unsupported transfer-encoding"))
            }
            _ => Err((400, "invalid transfer-encoding")),
        };
    }
    Ok(match length {
        None | Some(0) => Framing::None,
        Some(n) => Framing::Length(n),
    })
}

/// Whether the client waits for `100 Continue` (HTTP/1.1 only); another expectation is 417.
fn expects_continue(headers: &[(String, String)], minor: u8) -> Result<bool, (u16, &'static str)> {
    if minor == 0 {
        return Ok(false);
    }
    let mut expect = false;
    for (_, value) in headers.iter().filter(|(n, _)| n == "expect") {
        if value.eq_ignore_ascii_case("100-continue") {
            expect = true;
        } else {
            return Err((417, "unsupported expectation"));
        }
    }
    Ok(expect)
}

#[derive(Debug, PartialEq, Eq)]
enum ChunkSize {
    Size(u64),
    Overflow,
    Bad,
}

/// `1*HEXDIG [ BWS ";" ext ]`, the line without its CRLF.
fn parse_chunk_size(line: &[u8]) -> ChunkSize {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return ChunkSize::Bad;
    }
    let rest = &line[digits..];
    let rest_start = rest
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(rest.len());
    let rest = &rest[rest_start..];
    if !rest.is_empty() && rest[0] != b';' {
        return ChunkSize::Bad;
    }
    if rest.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f) {
        return ChunkSize::Bad;
    }
    let mut size: u64 = 0;
    for &b in &line[..digits] {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => b - b'A' + 10,
        };
        size = match size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(digit)))
        {
            Some(size) => size,
            None => return ChunkSize::Overflow,
        };
    }
    ChunkSize::Size(size)
}

/// An incoming `X-Request-Id` if it is 1 to 64 characters of `[A-Za-z0-9._-]`, else a new one.
fn pick_request_id(headers: &[(String, String)]) -> String {
    headers
        .iter()
        .find(|(n, _)| n == "x-request-id")
        .map(|(_, v)| v.as_str())
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

fn valid_header(name: &str, value: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        && value.bytes().all(|b| b != b'\r' && b != b'\n' && b != 0)
}

/// The status line and header fields of `resp` (the body is not included).
fn render_head(resp: &Response, request_id: &str, keep_alive: bool, head_only: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let status = resp.status;
    let _ = write!(out, "HTTP/1.1 {status} {}\r\n", reason(status));
    let mut has_content_type = false;
    let mut declared_length: Option<u64> = None;
    for (name, value) in &resp.headers {
        if name.eq_ignore_ascii_case("content-length") {
            declared_length = value.trim().parse().ok();
        }
        if server_owned(name) {
            continue;
        }
        if !valid_header(name, value) {
            log::warn!("request {request_id}: dropped invalid response header `{name}`");
            continue;
        }
        has_content_type |= name.eq_ignore_ascii_case("content-type");
        let _ = write!(out, "{name}: {value}\r\n");
    }
    if !has_content_type && !resp.body.is_empty() && status != 204 {
        out.extend_from_slice(b"Content-Type: application/octet-stream\r\n");
    }
    // RFC 9110 §8.6: none on 204; on HEAD and 304 the length of the full representation, which a
    // handler may declare itself when it leaves the body out.
    let length = match status {
        204 => None,
        304 if resp.body.is_empty() => declared_length,
        _ if head_only && resp.body.is_empty() => Some(declared_length.unwrap_or(0)),
        _ => Some(resp.body.len() as u64),
    };
    if let Some(length) = length {
        let _ = write!(out, "Content-Length: {length}\r\n");
    }
    let _ = write!(
        out,
        "Date: {}\r\nX-Request-Id: {request_id}\r\nConnection: {}\r\n\r\n",
        current_http_date(),
        if keep_alive { "keep-alive" } else { "close" }
    );
    out
}

/// The current time as an IMF-fixdate, formatted at most once a second per thread.
fn current_http_date() -> String {
    thread_local! {
        static CACHE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != secs {
            *cache = (secs, http_date(secs));
        }
        cache.1.clone()
    })
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` for seconds since the Unix epoch.
fn http_date(secs: u64) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let time = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year:04} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        time / 3_600,
        time % 3_600 / 60,
        time % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn http_dates_are_imf_fixdates() {
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(http_date(1_795_651_199), "Wed, 25 Nov 2026 23:59:59 GMT");
    }

    #[test]
    fn request_ids_are_validated_and_generated_unique() {
        assert!(valid_request_id("abc-DEF_1.2"));
        assert!(valid_request_id(&"a".repeat(64)));
        assert!(!valid_request_id(&"a".repeat(65)));
        assert!(!valid_request_id(""));
        assert!(!valid_request_id("a b"));
        assert!(!valid_request_id("a\u{e9}"));
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
    fn framing_follows_rfc_9112() {
        let f = |h: &[(&str, &str)]| body_framing(&headers(h), 1);
        assert_eq!(f(&[]), Ok(Framing::None));
        assert_eq!(f(&[("content-length", "0")]), Ok(Framing::None));
        assert_eq!(f(&[("content-length", "12")]), Ok(Framing::Length(12)));
        assert_eq!(
            f(&[("content-length", "12"), ("content-length", "12")]),
            Ok(Framing::Length(12))
        );
        assert_eq!(f(&[("content-length", "12, 12")]), Ok(Framing::Length(12)));
        assert_eq!(
            f(&[("content-length", "12, 13")]).map_err(|e| e.0),
            Err(400)
        );
        assert_eq!(
            f(&[("content-length", "1"), ("content-length", "2")]).map_err(|e| e.0),
            Err(400)
        );
        assert_eq!(f(&[("content-length", "-1")]).map_err(|e| e.0), Err(400));
        assert_eq!(f(&[("content-length", "+1")]).map_err(|e| e.0), Err(400));
        assert_eq!(f(&[("content-length", "")]).map_err(|e| e.0), Err(400));
        assert_eq!(
            f(&[("content-length", "99999999999999999999999")]),
            Ok(Framing::Length(u64::MAX))
        );
        assert_eq!(f(&[("transfer-encoding", "chunked")]), Ok(Framing::Chunked));
        assert_eq!(f(&[("transfer-encoding", "Chunked")]), Ok(Framing::Chunked));
        assert_eq!(
            f(&[("transfer-encoding", "chunked"), ("content-length", "3")]).map_err(|e| e.0),
            Err(400)
        );
        assert_eq!(
            f(&[("transfer-encoding", "gzip, chunked")]).map_err(|e| e.0),
            Err(501)
        );
        assert_eq!(
            f(&[("transfer-encoding", "chunked, gzip")]).map_err(|e| e.0),
            Err(400)
        );
        assert_eq!(
            f(&[("transfer-encoding", "chunked, chunked")]).map_err(|e| e.0),
            Err(400)
        );
        assert_eq!(
            body_framing(&headers(&[("transfer-encoding", "chunked")]), 0).map_err(|e| e.0),
            Err(400)
        );
    }

    #[test]
    fn chunk_sizes_are_strict() {
        assert_eq!(parse_chunk_size(b"1a"), ChunkSize::Size(26));
        assert_eq!(parse_chunk_size(b"0"), ChunkSize::Size(0));
        assert_eq!(parse_chunk_size(b"A ; name=value"), ChunkSize::Size(10));
        assert_eq!(parse_chunk_size(b"ffffffffffffffffff"), ChunkSize::Overflow);
        assert_eq!(parse_chunk_size(b""), ChunkSize::Bad);
        assert_eq!(parse_chunk_size(b"; ext"), ChunkSize::Bad);
        assert_eq!(parse_chunk_size(b"0x10"), ChunkSize::Bad);
        assert_eq!(parse_chunk_size(b"-1"), ChunkSize::Bad);
        assert_eq!(parse_chunk_size(b"1 2"), ChunkSize::Bad);
    }

    #[test]
    fn targets_split_into_path_and_query() {
        let s = |t: &str| split_target(t).map(|(p, q)| format!("{p}|{q}"));
        assert_eq!(s("/a/b?x=1&y").as_deref(), Some("/a/b|x=1&y"));
        assert_eq!(s("/").as_deref(), Some("/|"));
        assert_eq!(s("*").as_deref(), Some("*|"));
        assert_eq!(s("http://h:1/p?q").as_deref(), Some("/p|q"));
        assert_eq!(s("HTTPS://h").as_deref(), Some("/|"));
        assert_eq!(s("http://h?q=1").as_deref(), Some("/|q=1"));
        assert_eq!(s("p"), None);
        assert_eq!(s("ftp://h/p"), None);
    }

    #[test]
    fn heads_parse_or_fail_with_the_right_status() {
        match parse_head(
            b"GET /x?y HTTP/1.1\r\nHost: a\r\nX-A:  b \r\n\r\nrest",
            1024,
        ) {
            HeadParse::Complete(head, len) => {
                assert_eq!(head.method, "GET");
                assert_eq!(head.target, "/x?y");
                assert_eq!(head.minor, 1);
                assert_eq!(head.headers, headers(&[("host", "a"), ("x-a", "b")]));
                assert_eq!(len, 40);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_head(b"GET / HTTP/1.1\r\nHo", 1024),
            HeadParse::Partial
        ));
        assert!(matches!(
            parse_head(b"GET / HTTP/2.0\r\n\r\n", 1024),
            HeadParse::Fail(505, _)
        ));
        assert!(matches!(
            parse_head(b"GET / HTTP/3", 1024),
            HeadParse::Fail(505, _)
        ));
        assert!(matches!(
            parse_head(b"GET / HTTX/1.1\r\n\r\n", 1024),
            HeadParse::Fail(400, _)
        ));
        assert!(matches!(
            parse_head(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 1024),
            HeadParse::Fail(400, _)
        ));
        assert!(matches!(
            parse_head(b"\x00\x01\r\n\r\n", 1024),
            HeadParse::Fail(400, _)
        ));
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "v".repeat(2000));
        assert!(matches!(
            parse_head(long.as_bytes(), 1024),
            HeadParse::Fail(431, _)
        ));
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(matches!(
            parse_head(many.as_bytes(), 1 << 20),
            HeadParse::Fail(431, _)
        ));
    }

    #[test]
    fn expectations() {
        let h = headers(&[("expect", "100-Continue")]);
        assert_eq!(expects_continue(&h, 1), Ok(true));
        assert_eq!(expects_continue(&h, 0), Ok(false));
        let h = headers(&[("expect", "something")]);
        assert_eq!(expects_continue(&h, 1).map_err(|e| e.0), Err(417));
    }

    #[test]
    fn rendered_heads_carry_the_server_fields() {
        let text = |resp: &Response, keep: bool, head: bool| {
            String::from_utf8(render_head(resp, "rid-1", keep, head)).unwrap()
        };
        let resp = Response::json(201, &serde_json::json!({"a": 1}))
            .with_header("Content-Length", "999")
            .with_header("X-Evil", "a\r\nSet-Cookie: x")
            .with_header("X-Fine", "yes");
        let head = text(&resp, true, false);
        assert!(head.starts_with("HTTP/1.1 201 Created\r\n"), "{head}");
        assert!(
            head.contains("Content-Type: application/json\r\n"),
            "{head}"
        );
        assert!(head.contains("Content-Length: 7\r\n"), "{head}");
        assert!(!head.contains("999"), "{head}");
        assert!(!head.contains("X-Evil"), "{head}");
        assert!(head.contains("X-Fine: yes\r\n"), "{head}");
        assert!(head.contains("X-Request-Id: rid-1\r\n"), "{head}");
        assert!(head.contains("Connection: keep-alive\r\n"), "{head}");
        assert!(head.contains("Date: "), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "{head}");

        let mut bare = Response::new(200);
        bare.body = b"xyz".to_vec();
        let head = text(&bare, false, false);
        assert!(
            head.contains("Content-Type: application/octet-stream\r\n"),
            "{head}"
        );
        assert!(head.contains("Connection: close\r\n"), "{head}");

        let empty = Response::new(204);
        let head = text(&empty, true, false);
        assert!(!head.contains("Content-Length"), "{head}");
        assert!(!head.contains("Content-Type"), "{head}");

        let declared = Response::new(200).with_header("Content-Length", "42");
        assert!(text(&declared, true, true).contains("Content-Length: 42\r\n"));
        assert!(text(&Response::new(200), true, false).contains("Content-Length: 0\r\n"));
    }

    #[test]
    fn slots_are_handed_over_in_arrival_order() {
        let config = ServerConfig {
            workers: 1,
            ..ServerConfig::default()
        };
        let handler: Arc<dyn Handler> = Arc::new(|_req: Request| Response::new(200));
        let server = Server::bind(config, handler).unwrap();
        let shared = Arc::clone(&server.shared);
        let first = shared.acquire();
        assert_eq!(server.stats().busy_workers(), 1);
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for i in 0..4 {
            let shared = Arc::clone(&shared);
            let order = Arc::clone(&order);
            threads.push(thread::spawn(move || {
                let _permit = shared.acquire();
                order.lock().unwrap().push(i);
            }));
            // Each waiter is queued before the next one starts.
            while server.stats().queued_requests() < i + 1 {
                thread::yield_now();
            }
        }
        drop(first);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(server.stats().busy_workers(), 0);
        assert_eq!(server.stats().queued_requests(), 0);
    }
}
