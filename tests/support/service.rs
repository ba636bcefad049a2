//! An IAM service in this process on a real socket (port 0), over a given storage.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kaa::config::{self, ServiceKind, StorageSettings};
use kaa::http::metrics::Metrics;
use kaa::http::ops::Ops;
use kaa::http::server::{Server, ServerConfig, ShutdownHandle};
use kaa::storage::Database;

pub struct Running {
    pub addr: SocketAddr,
    pub ops: Arc<Ops>,
    shutdown: ShutdownHandle,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Start IAM over `storage` with the `iam` config section `iam_yaml` (may be empty).
pub fn start_iam(storage: &StorageSettings, iam_yaml: &str) -> Running {
    let mut env = std::collections::BTreeMap::new();
    // The decision log's default writes sampled lines to the process's stdout, which the test
    // harness does not capture: off unless the test configures it.
    if !iam_yaml.contains("decision-log") {
        env.insert("KAA_IAM_DECISION_LOG_MODE".to_string(), "off".to_string());
    }
    let dir = std::env::temp_dir().join(super::unique("kaa-cfg"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("c.yml");
    std::fs::write(&file, format!("server:\n  maxPageSize: 50\n{iam_yaml}")).unwrap();
    let mut cfg = config::load(ServiceKind::Iam, &env, file.to_str())
        .unwrap()
        .config;
    std::fs::remove_dir_all(&dir).ok();
    cfg.storage = storage.clone();
    let cfg = Arc::new(cfg);
    let db = Database::open(&cfg.storage).unwrap();
    let ops = Arc::new(Ops {
        kind: ServiceKind::Iam,
        db: Arc::new(db),
        metrics: Arc::new(Metrics::new("iam").unwrap()),
        license: RwLock::new(kaa::license::check(
            std::path::Path::new("/nonexistent"),
            "",
        )),
        started: Instant::now(),
        not_ready_reason: RwLock::new(None),
        server: OnceLock::new(),
        scrape: OnceLock::new(),
    });
    let handler = kaa::app::iam::build(&cfg, &ops).unwrap();
    let server = Server::bind(
        ServerConfig {
            workers: 4,
            max_body_bytes: 1 << 20,
            ..ServerConfig::default()
        },
        handler,
    )
    .unwrap();
    let addr = server.local_addr();
    let shutdown = server.shutdown_handle();
    let thread = std::thread::spawn(move || {
        server.run(Duration::from_secs(2));
    });
    Running {
        addr,
        ops,
        shutdown,
        thread: Some(thread),
    }
}

/// A Tenant Manager in this process (its workers stop when it drops).
pub struct RunningTm {
    pub addr: SocketAddr,
    pub ops: Arc<Ops>,
    signal: Arc<kaa::tenants::worker::Signal>,
    server: Running,
}

impl Drop for RunningTm {
    fn drop(&mut self) {
        self.signal.stop();
        self.server.shutdown.shutdown();
        if let Some(t) = self.server.thread.take() {
            let _ = t.join();
        }
    }
}

/// Start the Tenant Manager over `storage` with the config `yaml` (may be empty): bootstrap,
/// task workers, API, as `kaa::app::tenant_manager::build` wires them.
pub fn start_tm(storage: &StorageSettings, yaml: &str) -> RunningTm {
    let env = std::collections::BTreeMap::new();
    let dir = std::env::temp_dir().join(super::unique("kaa-tm-cfg"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("c.yml");
    std::fs::write(&file, yaml).unwrap();
    let mut cfg = config::load(ServiceKind::TenantManager, &env, file.to_str())
        .unwrap()
        .config;
    std::fs::remove_dir_all(&dir).ok();
    cfg.storage = storage.clone();
    let cfg = Arc::new(cfg);
    let db = Database::open(&cfg.storage).unwrap();
    let ops = Arc::new(Ops {
        kind: ServiceKind::TenantManager,
        db: Arc::new(db),
        metrics: Arc::new(Metrics::new("tenant-manager").unwrap()),
        license: RwLock::new(kaa::license::check(
            std::path::Path::new("/nonexistent"),
            "",
        )),
        started: Instant::now(),
        not_ready_reason: RwLock::new(None),
        server: OnceLock::new(),
        scrape: OnceLock::new(),
    });
    let (handler, signal) = kaa::app::tenant_manager::build_with_signal(&cfg, &ops).unwrap();
    let server = Server::bind(
        ServerConfig {
            workers: 4,
            max_body_bytes: 1 << 20,
            ..ServerConfig::default()
        },
        handler,
    )
    .unwrap();
    let addr = server.local_addr();
    let shutdown = server.shutdown_handle();
    let thread = std::thread::spawn(move || {
        server.run(Duration::from_secs(2));
    });
    RunningTm {
        addr,
        ops: Arc::clone(&ops),
        signal,
        server: Running {
            addr,
            ops,
            shutdown,
            thread: Some(thread),
        },
    }
}
