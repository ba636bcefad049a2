//! Tenants provisioned per second, end to end: the Tenant Manager in this process (SQLite, or
//! PostgreSQL with `IAM_TEST_POSTGRES_URL`) against the Keycloak admin-API stand-in of
//! `tests/support`, both on real sockets. N tenants are POSTed over HTTP at once; the figures are
//! the wall time until all are AVAILABLE (tenants per second), and per tenant the time from its
//! insert (the POST) to the commit that made it AVAILABLE (median, p99, max), from the tenants'
//! own timestamps; before that, 10 tenants one at a time (POST to AVAILABLE with nothing queued
//! ahead, polled every 0.5 ms). Each tenant costs about 95 admin calls (realm, 5 roles, 2
//! clients, 38 scopes, a resource, 5 role policies, 38 scope permissions).
//!
//! `cargo run --release --example tm_provision_bench -- [TENANTS] [WORKERS]...`
//! (defaults: 50 tenants; workers 2 and 4, the task workers of `tenant-manager.tasks.workers`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kaa::storage::{TenantFilter, TenantStore};
use serde_json::json;
use support::keycloak::{ADMIN_PASSWORD, ADMIN_USER, Keycloak};
use support::proc::request;

fn post(a: SocketAddr, body: &serde_json::Value) -> u16 {
    request(
        a,
        "POST",
        "/api/v1/tenants",
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
        Duration::from_secs(10),
    )
    .map(|r| r.status)
    .unwrap_or(0)
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Run {
    wall: Duration,
    /// POST to AVAILABLE (seen by polling every 0.5 ms) of 10 tenants made one at a time.
    alone_ms: Vec<f64>,
    latencies_ms: Vec<i64>,
    calls: usize,
    failed: usize,
}

fn run(storage: &kaa::config::StorageSettings, tenants: usize, workers: usize) -> Run {
    let kc = Keycloak::start();
    let yaml = format!(
        "tenant-manager:\n  keycloak:\n    url: {}\n    username: {ADMIN_USER}\n    password: {ADMIN_PASSWORD}\n  tasks:\n    workers: {workers}\n    backoff-ms: 50\n    max-backoff-ms: 500\n",
        kc.url()
    );
    let tm = support::service::start_tm(storage, &yaml);
    let a = tm.addr;
    let db = &tm.ops.db;
    let available = |prefix: &str| -> usize {
        db.list_tenants(
            &TenantFilter {
                status: Some("AVAILABLE".into()),
                ..TenantFilter::default()
            },
            0,
            None,
        )
        .map(|(list, _)| list.iter().filter(|t| t.id.starts_with(prefix)).count())
        .unwrap_or(0)
    };
    // Warm up: the admin token, the master realm's key, connections.
    assert_eq!(post(a, &json!({"id": "warmup"})), 202);
    while available("warmup") < 1 {
        std::thread::sleep(Duration::from_millis(5));
    }
    // One at a time: the latency of a tenant with nothing queued before it.
    let mut alone_ms = Vec::new();
    for i in 0..10 {
        let id = format!("solo{i:02}");
        let t0 = Instant::now();
        assert_eq!(post(a, &json!({ "id": id })), 202);
        while available(&id) < 1 && t0.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_micros(500));
        }
        alone_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    alone_ms.sort_by(f64::total_cmp);
    let calls_before = kc.calls().len();

    let started = Instant::now();
    for i in 0..tenants {
        let status = post(a, &json!({"id": format!("t{i:04}")}));
        assert_eq!(status, 202, "POST tenant {i}");
    }
    let deadline = started + Duration::from_secs(600);
    let failed_now = || {
        db.list_tenants(
            &TenantFilter {
                status: Some("FAILED".into()),
                ..TenantFilter::default()
            },
            0,
            None,
        )
        .map(|(l, _)| l.len())
        .unwrap_or(0)
    };
    while available("t") + failed_now() < tenants && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let wall = started.elapsed();
    let (list, _) = db
        .list_tenants(&TenantFilter::default(), 0, None)
        .expect("tenants");
    let mut latencies_ms: Vec<i64> = list
        .iter()
        .filter(|t| t.id.starts_with('t') && t.status == "AVAILABLE")
        .map(|t| t.updated_ms - t.created_ms)
        .collect();
    latencies_ms.sort_unstable();
    Run {
        wall,
        alone_ms,
        latencies_ms,
        calls: kc.calls().len() - calls_before,
        failed: failed_now(),
    }
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let tenants = args.first().copied().unwrap_or(50);
    let workers: Vec<usize> = if args.len() > 1 {
        args[1..].to_vec()
    } else {
        vec![2, 4]
    };
    let mut backends = vec!["sqlite"];
    if support::pg_url().is_some() {
        backends.push("postgres");
    }
    println!(
        "tenants provisioned end to end against the Keycloak stand-in ({tenants} tenants, \
         POSTed at once; latency = insert to AVAILABLE commit)"
    );
    println!(
        "{:<9} {:>7} {:>8} {:>10} {:>9} {:>9} {:>9} {:>11} {:>6} {:>13} {:>13}",
        "storage",
        "workers",
        "wall s",
        "tenants/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "admin req/s",
        "failed",
        "alone p50 ms",
        "alone max ms"
    );
    for name in backends {
        for &w in &workers {
            let dir = support::TempDir::new();
            let pg_db;
            let storage = if name == "postgres" {
                pg_db = support::PgTestDb::create().expect("IAM_TEST_POSTGRES_URL");
                pg_db.storage()
            } else {
                support::sqlite_settings(&dir)
            };
            let r = run(&storage, tenants, w);
            let secs = r.wall.as_secs_f64();
            println!(
                "{:<9} {:>7} {:>8.2} {:>10.1} {:>9} {:>9} {:>9} {:>11.0} {:>6} {:>13.1} {:>13.1}",
                name,
                w,
                secs,
                r.latencies_ms.len() as f64 / secs,
                percentile(&r.latencies_ms, 0.5),
                percentile(&r.latencies_ms, 0.99),
                r.latencies_ms.last().copied().unwrap_or(0),
                r.calls as f64 / secs,
                r.failed,
                r.alone_ms[r.alone_ms.len() / 2],
                r.alone_ms.last().copied().unwrap_or(0.0),
            );
        }
    }
}
