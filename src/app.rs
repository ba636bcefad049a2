//! The composition root shared by both binaries: parse the command line, load and validate the
//! configuration, check the license, listen, open storage (waiting up to
//! `postgresql.startup-wait` for PostgreSQL, not ready meanwhile), wire the service (`iam`,
//! `tenant_manager`: config -> stores -> clients -> domains -> routers), serve until
//! SIGTERM/SIGINT, go on serving for `service.shutdown-delay` while not ready, then drain within
//! `service.graceful-shutdown`. Only this module names concrete backends.

pub mod generate;
pub mod iam;
pub mod tenant_manager;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::config::{self, Config, ServiceKind};
use crate::http::error::{ApiError, ErrorStyle};
use crate::http::message::{Request, Response};
use crate::http::metrics::Metrics;
use crate::http::ops::{Ops, is_probe};
use crate::http::server::{Handler, Server, ServerConfig, ServerStats, ShutdownHandle};
use crate::license::{self, LicenseState};
use crate::storage::{Database, HealthStore};

/// Keeps `not_ready_reason` in step with storage: pings it every `every` (a ping that cannot
/// connect takes up to `postgresql.connect-timeout`) and logs each change. Stops when `ops` is
/// dropped.
pub fn spawn_storage_watch(ops: &Arc<Ops>, every: Duration) {
    let weak = Arc::downgrade(ops);
    let _ = std::thread::Builder::new()
        .name("storage-watch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                let Some(ops) = weak.upgrade() else { return };
                let now = ops.db.ping().err().map(|e| e.to_string());
                let mut reason = ops
                    .not_ready_reason
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                match (&*reason, &now) {
                    (None, Some(e)) => log::warn!("readiness: storage unreachable: {e}"),
                    (Some(_), None) => log::info!("readiness: storage reachable again"),
                    _ => {}
                }
                *reason = now.map(|_| "storage unreachable".to_string());
            }
        });
}

/// Exit codes: 0 clean stop, 1 runtime failure (storage, port, license), 2 bad configuration
/// or usage.
pub fn main_for(kind: ServiceKind) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("serve") => serve(kind),
        Some("check-config") => check_config(kind, args.get(1).map(String::as_str)),
        Some("generate") if kind == ServiceKind::Iam => generate::main(&args[1..]),
        Some("--version" | "version") => {
            println!("{} {}", kind.name(), env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("--help" | "-h" | "help") => {
            println!(
                "usage: {0} [serve]              run the service (config: APP_CONFIG_PATH, env vars)\n       \
                 {0} check-config [PATH]  validate a config file (and the environment) and exit\n       \
                 {0} --version{1}",
                kind.name(),
                if kind == ServiceKind::Iam {
                    "\n       iam generate [OPTIONS]  fill a tenant with generated data for load tests \
                     (iam generate --help)"
                } else {
                    ""
                }
            );
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!(
                "{}: unknown command `{other}` (try `{} --help`)",
                kind.name(),
                kind.name()
            );
            ExitCode::from(2)
        }
    }
}

fn check_config(kind: ServiceKind, path: Option<&str>) -> ExitCode {
    let env = std::env::vars().collect();
    match config::load(kind, &env, path) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("warning: {w}");
            }
            let checked = match kind {
                ServiceKind::Iam => crate::iam::validate_config(&loaded.config),
                ServiceKind::TenantManager => crate::tenants::validate_config(&loaded.config),
            };
            if let Err(e) = checked {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
            let source = loaded
                .config
                .source
                .as_ref()
                .map_or("built-in defaults".to_string(), |p| p.display().to_string());
            println!("config ok: {source}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

fn serve(kind: ServiceKind) -> ExitCode {
    let loaded = match config::load_from_env(kind) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    crate::logging::init(loaded.config.service.debug);
    for w in &loaded.warnings {
        log::warn!("{w}");
    }
    let config = Arc::new(loaded.config);
    match run(kind, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(msg)) => {
            log::error!("{msg}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(msg)) => {
            log::error!("{msg}");
            ExitCode::from(1)
        }
    }
}

enum Failure {
    Config(String),
    Runtime(String),
}

fn run(kind: ServiceKind, config: Arc<Config>) -> Result<(), Failure> {
    let started = Instant::now();
    let lic = license::check(
        &config.license.cert_path,
        config.license.cert_password.expose(),
    );
    if !lic.is_valid() {
        let problem = lic.problem.clone().unwrap_or_default();
        if config.license.required {
            return Err(Failure::Runtime(format!("license: {problem}")));
        }
        log::warn!(
            "license: {} ({problem}); not required by this configuration",
            lic.status
        );
    } else {
        log::info!(
            "license: valid until {}",
            lic.not_after.clone().unwrap_or_default()
        );
    }

    let style = match kind {
        ServiceKind::Iam => ErrorStyle::Message,
        ServiceKind::TenantManager => ErrorStyle::ErrorDetails,
    };
    let gate = Arc::new(Gate::new(kind, started, lic.clone(), style));
    let s = &config.server;
    let server_config = ServerConfig {
        bind: std::net::SocketAddr::new(s.host, s.port),
        workers: s.workers,
        io_threads: s.io_threads,
        max_connections: s.max_connections,
        max_body_bytes: s.max_body_bytes,
        max_body_bytes_in_flight: s.max_body_bytes_in_flight.max(s.max_body_bytes),
        queue_timeout: s.queue_timeout,
        max_header_bytes: 16 * 1024,
        read_timeout: s.read_timeout,
        idle_timeout: s.idle_timeout,
        write_timeout: s.write_timeout,
    };
    let server = Server::bind(server_config, Arc::clone(&gate) as Arc<dyn Handler>)
        .map_err(|e| Failure::Runtime(format!("cannot listen on {}:{}: {e}", s.host, s.port)))?;
    let addr = server.local_addr();
    let shutdown = server.shutdown_handle();
    watch_signals(
        Arc::clone(&gate),
        shutdown.clone(),
        config.service.shutdown_delay,
    )
    .map_err(|e| Failure::Runtime(format!("signals: {e}")))?;
    log::info!(
        "{} {} accepting on {addr} (starting: /health answers, /health/ready is 503 until \
         storage is open)",
        kind.name(),
        env!("CARGO_PKG_VERSION"),
    );

    // Storage and wiring on a thread of their own, while the server answers the probes.
    let failed: Arc<Mutex<Option<Failure>>> = Arc::new(Mutex::new(None));
    let stats = server.stats();
    {
        let (config, gate, failed) = (Arc::clone(&config), Arc::clone(&gate), Arc::clone(&failed));
        std::thread::Builder::new()
            .name("start".into())
            .spawn(move || match start(kind, &config, &gate, lic, stats) {
                Ok(true) => log::info!(
                    "{} {} listening on {addr} (instance {}, replica {}) in {} ms",
                    kind.name(),
                    env!("CARGO_PKG_VERSION"),
                    config.service.instance_name,
                    config.service.replica_id,
                    started.elapsed().as_millis()
                ),
                Ok(false) => log::info!("start abandoned: stopping"),
                Err(f) => {
                    *failed.lock().unwrap_or_else(PoisonError::into_inner) = Some(f);
                    shutdown.shutdown();
                }
            })
            .map_err(|e| Failure::Runtime(format!("start thread: {e}")))?;
    }
    let report = server.run(config.service.graceful_shutdown);
    log::info!("{} stopped: {report:?}", kind.name());
    match failed.lock().unwrap_or_else(PoisonError::into_inner).take() {
        Some(f) => Err(f),
        None => Ok(()),
    }
}

/// Open storage, wire the service and hand it to the gate. `Ok(false)`: a signal came first.
fn start(
    kind: ServiceKind,
    config: &Arc<Config>,
    gate: &Gate,
    lic: LicenseState,
    stats: ServerStats,
) -> Result<bool, Failure> {
    let Some(db) = open_storage(config, gate)? else {
        return Ok(false);
    };
    log::info!("storage: {}", db.describe());
    let metrics =
        Metrics::new(kind.name()).map_err(|e| Failure::Runtime(format!("metrics: {e}")))?;
    let ops = Arc::new(Ops {
        kind,
        db: Arc::new(db),
        metrics: Arc::new(metrics),
        license: RwLock::new(lic),
        started: gate.started,
        not_ready_reason: RwLock::new(None),
        server: OnceLock::new(),
        scrape: OnceLock::new(),
    });
    let _ = ops.server.set(stats);
    spawn_license_recheck(config, &ops);
    spawn_storage_watch(&ops, Duration::from_secs(1));
    let handler: Arc<dyn Handler> = match kind {
        ServiceKind::Iam => iam::build(config, &ops).map_err(Failure::Config)?,
        ServiceKind::TenantManager => {
            tenant_manager::build(config, &ops).map_err(Failure::Config)?
        }
    };
    Ok(gate.open(handler))
}

/// Open the database. PostgreSQL that cannot be reached yet (not started, not resolvable, out of
/// connections) is tried again with a growing pause, up to `postgresql.startup-wait`; a refused
/// login or a missing database stops at once. `None`: a signal came while waiting.
fn open_storage(config: &Config, gate: &Gate) -> Result<Option<Database>, Failure> {
    let wait = match &config.storage {
        crate::config::StorageSettings::Postgres(p) => p.startup_wait,
        crate::config::StorageSettings::Sqlite(_) => Duration::ZERO,
    };
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_millis(250);
    let mut attempt = 1u32;
    loop {
        match Database::open(&config.storage) {
            Ok(db) => return Ok(Some(db)),
            Err(e) if e.is_unavailable() && Instant::now() < deadline => {
                log::warn!(
                    "storage: attempt {attempt}: {e}; trying again in {} ms (for up to {} s in \
                     all, postgresql.startup-wait)",
                    pause.as_millis(),
                    wait.as_secs()
                );
                gate.set_waiting(format!("waiting for storage: {e}"));
            }
            Err(e) if e.is_unavailable() && !wait.is_zero() => {
                return Err(Failure::Runtime(format!(
                    "storage: {e} (still unreachable after {} s, postgresql.startup-wait)",
                    wait.as_secs()
                )));
            }
            Err(e) => return Err(Failure::Runtime(format!("storage: {e}"))),
        }
        let resume = (Instant::now() + pause).min(deadline);
        while Instant::now() < resume {
            if gate.stopping() {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(50).min(resume - Instant::now()));
        }
        if gate.stopping() {
            return Ok(None);
        }
        pause = (pause * 2).min(Duration::from_secs(5));
        attempt += 1;
    }
}

/// What the server calls: answers the probes (and 503 to everything else) until the service is
/// wired, then passes every request on; from the first signal on, readiness answers 503 and
/// every answer closes its connection.
struct Gate {
    kind: ServiceKind,
    started: Instant,
    style: ErrorStyle,
    /// The license as checked at start, for `/health` until the service is wired.
    license: LicenseState,
    /// Why the service is not ready yet.
    waiting: RwLock<String>,
    service: OnceLock<Arc<dyn Handler>>,
    stopping: AtomicBool,
}

impl Gate {
    fn new(kind: ServiceKind, started: Instant, license: LicenseState, style: ErrorStyle) -> Gate {
        Gate {
            kind,
            started,
            style,
            license,
            waiting: RwLock::new("starting".into()),
            service: OnceLock::new(),
            stopping: AtomicBool::new(false),
        }
    }

    fn set_waiting(&self, why: String) {
        *self.waiting.write().unwrap_or_else(PoisonError::into_inner) = why;
    }

    /// Starts passing requests to `service`; `false` when stopping already.
    fn open(&self, service: Arc<dyn Handler>) -> bool {
        let _ = self.service.set(service);
        !self.stopping()
    }

    fn serving(&self) -> bool {
        self.service.get().is_some()
    }

    fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Before the service is wired.
    fn starting(&self, req: &Request) -> Response {
        if req.method == "GET" && req.path == "/health" {
            return Response::json(
                200,
                &json!({
                    "status": "UP",
                    "service": self.kind.name(),
                    "version": env!("CARGO_PKG_VERSION"),
                    "uptimeSeconds": self.started.elapsed().as_secs(),
                    "license": self.license,
                }),
            );
        }
        let why = self
            .waiting
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if req.method == "GET" && req.path == "/health/ready" {
            return self.style.refuse(503, &format!("not ready: {why}"));
        }
        self.style.render(
            ApiError::unavailable(format!(
                "the service is starting ({why}): try again shortly"
            ))
            .with_header("Retry-After", "5"),
        )
    }
}

impl Handler for Gate {
    fn inline(&self, req: &Request) -> bool {
        is_probe(req) || self.service.get().is_none_or(|s| s.inline(req))
    }

    fn error(&self, status: u16, message: &str) -> Response {
        self.style.refuse(status, message)
    }

    fn handle(&self, req: Request) -> Response {
        let Some(service) = self.service.get() else {
            return self.starting(&req);
        };
        if !self.stopping() {
            return service.handle(req);
        }
        if req.method == "GET" && req.path == "/health/ready" {
            return self.style.refuse(503, "not ready: shutting down");
        }
        // Clients holding a connection open come back on another replica.
        service.handle(req).with_header("Connection", "close")
    }
}

/// On the first SIGTERM or SIGINT: readiness turns 503 at once; a wired service goes on
/// accepting and serving for `delay` (a second signal ends that early), then the server stops
/// accepting and drains.
fn watch_signals(
    gate: Arc<Gate>,
    shutdown: ShutdownHandle,
    delay: Duration,
) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let Some(sig) = signals.forever().next() else {
                return;
            };
            gate.stop();
            if gate.serving() && !delay.is_zero() {
                log::info!(
                    "signal {sig} received: not ready; serving for {} ms more \
                     (service.shutdown-delay), then draining",
                    delay.as_millis()
                );
                let end = Instant::now() + delay;
                loop {
                    if let Some(again) = signals.pending().next() {
                        log::info!("signal {again} received: no more waiting");
                        break;
                    }
                    let now = Instant::now();
                    if now >= end {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20).min(end - now));
                }
            }
            log::info!("signal {sig}: draining in-flight requests");
            shutdown.shutdown();
        })?;
    Ok(())
}

fn spawn_license_recheck(config: &Arc<Config>, ops: &Arc<Ops>) {
    let config = Arc::clone(config);
    let ops = Arc::downgrade(ops);
    let _ = std::thread::Builder::new()
        .name("license".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(24 * 3600));
                let Some(ops) = ops.upgrade() else { return };
                let state = license::check_with_issuer(
                    &config.license.cert_path,
                    config.license.cert_password.expose(),
                    config.license.trusted_issuer.as_deref(),
                );
                if !state.is_valid() {
                    log::warn!(
                        "license: {} ({})",
                        state.status,
                        state.problem.clone().unwrap_or_default()
                    );
                }
                if let Ok(mut l) = ops.license.write() {
                    *l = state;
                }
            }
        });
}
