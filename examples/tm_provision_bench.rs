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
//!
//! With `IAM_TEST_KEYCLOAK_URL` set (`scripts/dev-services.sh`), the same runs go against the real
//! Keycloak as well, beside the stand-in, SQLite only; then `KC_REALMS` (default 200) realms
//! are reached in steps of TENANTS, printing after each step the tenants per second of that
//! step and Keycloak's resident memory (`VmRSS` of the PID in `$KAA_DEV_DIR/keycloak.pid`,
//! default `/tmp/kaa-dev`), the POST-to-AVAILABLE times of the step and of one tenant made
//! alone after it, and every tenant of the run is deleted at the end (`KC_ONLY=1`: only these
//! steps).

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

/// The Keycloak a run provisions on: the stand-in (which counts admin calls) or the real server.
enum Target {
    StandIn(Keycloak),
    Real(support::RealKeycloak),
}

impl Target {
    fn yaml(&self, workers: usize) -> String {
        let (url, user, password) = match self {
            Target::StandIn(kc) => (kc.url(), ADMIN_USER.to_string(), ADMIN_PASSWORD.to_string()),
            Target::Real(kc) => (
                kc.url.clone(),
                kc.admin_username.clone(),
                kc.admin_password.clone(),
            ),
        };
        format!(
            "tenant-manager:\n  keycloak:\n    url: {url}\n    username: {user}\n    password: {password}\n  tasks:\n    workers: {workers}\n    backoff-ms: 50\n    max-backoff-ms: 500\n"
        )
    }

    fn calls(&self) -> usize {
        match self {
            Target::StandIn(kc) => kc.calls().len(),
            Target::Real(_) => 0,
        }
    }
}

/// Keycloak's resident memory in MiB (the dev-services PID file), if it can be read: the
/// process named there and its children (`kc.sh` starts the JVM as its child).
fn keycloak_rss_mib() -> Option<u64> {
    let dir = std::env::var("KAA_DEV_DIR").unwrap_or_else(|_| "/tmp/kaa-dev".into());
    let pid: u32 = std::fs::read_to_string(format!("{dir}/keycloak.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let rss_kib = |p: u32| -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    let parent_of = |p: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        // `pid (comm) state ppid ...`: the fields after the last `)`.
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let children: u64 = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| parent_of(*p) == Some(pid))
        .filter_map(rss_kib)
        .sum();
    Some((rss_kib(pid)? + children) / 1024)
}

fn run(storage: &kaa::config::StorageSettings, tenants: usize, workers: usize) -> Run {
    let kc = Target::StandIn(Keycloak::start());
    run_on(&kc, storage, tenants, workers, "t")
}

fn run_on(
    kc: &Target,
    storage: &kaa::config::StorageSettings,
    tenants: usize,
    workers: usize,
    prefix: &str,
) -> Run {
    let yaml = kc.yaml(workers);
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
    let warmup = format!("{prefix}-warmup");
    assert_eq!(post(a, &json!({"id": warmup})), 202);
    while available(&warmup) < 1 {
        std::thread::sleep(Duration::from_millis(5));
    }
    // One at a time: the latency of a tenant with nothing queued before it.
    let mut alone_ms = Vec::new();
    for i in 0..10 {
        let id = format!("{prefix}-solo{i:02}");
        let t0 = Instant::now();
        assert_eq!(post(a, &json!({ "id": id })), 202);
        while available(&id) < 1 && t0.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_micros(500));
        }
        alone_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    alone_ms.sort_by(f64::total_cmp);
    let calls_before = kc.calls();

    let started = Instant::now();
    let batch = format!("{prefix}-t");
    for i in 0..tenants {
        let status = post(a, &json!({"id": format!("{batch}{i:04}")}));
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
    while available(&batch) + failed_now() < tenants && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let wall = started.elapsed();
    let (list, _) = db
        .list_tenants(&TenantFilter::default(), 0, None)
        .expect("tenants");
    let mut latencies_ms: Vec<i64> = list
        .iter()
        .filter(|t| t.id.starts_with(&batch) && t.status == "AVAILABLE")
        .map(|t| t.updated_ms - t.created_ms)
        .collect();
    latencies_ms.sort_unstable();
    let calls = kc.calls() - calls_before;
    let failed = failed_now();
    // The real server is shared with the test suites: it is left without this run's realms.
    if matches!(kc, Target::Real(_)) {
        delete_all(a, db, prefix);
    }
    Run {
        wall,
        alone_ms,
        latencies_ms,
        calls,
        failed,
    }
}

/// Delete every tenant whose id starts with `prefix` and wait until all are gone (their realms
/// removed); how long that took.
fn delete_all(a: SocketAddr, db: &kaa::storage::Database, prefix: &str) -> Duration {
    let left = || {
        db.list_tenants(&TenantFilter::default(), 0, None)
            .map(|(l, _)| {
                l.into_iter()
                    .filter(|t| t.id.starts_with(prefix))
                    .map(|t| t.id)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let started = Instant::now();
    for id in left() {
        let _ = request(
            a,
            "DELETE",
            &format!("/api/v1/tenants/{id}"),
            &[],
            b"",
            Duration::from_secs(10),
        );
    }
    while !left().is_empty() && started.elapsed() < Duration::from_secs(1800) {
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
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
    let kc_only = std::env::var("KC_ONLY").is_ok_and(|v| v == "1");
    for name in backends.into_iter().filter(|_| !kc_only) {
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
    real_keycloak(tenants, &workers);
}

/// The same runs against the real Keycloak, then realms up to `KC_REALMS` with Keycloak's memory.
fn real_keycloak(tenants: usize, workers: &[usize]) {
    let Some(kc) = support::real_keycloak("provisioning against the real Keycloak") else {
        return;
    };
    let target = Target::Real(kc);
    let run_id = std::process::id();
    println!(
        "\ntenants provisioned end to end against the real Keycloak ({tenants} tenants per run, \
         SQLite; Keycloak resident before: {} MiB)",
        keycloak_rss_mib().map_or("?".into(), |m| m.to_string())
    );
    let kc_only = std::env::var("KC_ONLY").is_ok_and(|v| v == "1");
    for &w in workers.iter().filter(|_| !kc_only) {
        let dir = support::TempDir::new();
        let prefix = format!("b{run_id}w{w}");
        let r = run_on(
            &target,
            &support::sqlite_settings(&dir),
            tenants,
            w,
            &prefix,
        );
        let secs = r.wall.as_secs_f64();
        println!(
            "real      workers {w}: wall {secs:.1} s, {:.2} tenants/s, POST to AVAILABLE p50 {} ms \
             p99 {} ms max {} ms, failed {}, alone p50 {:.0} ms; Keycloak resident {} MiB",
            r.latencies_ms.len() as f64 / secs,
            percentile(&r.latencies_ms, 0.5),
            percentile(&r.latencies_ms, 0.99),
            r.latencies_ms.last().copied().unwrap_or(0),
            r.failed,
            r.alone_ms[r.alone_ms.len() / 2],
            keycloak_rss_mib().map_or("?".into(), |m| m.to_string())
        );
        drop(dir);
    }
    // Realms up to KC_REALMS in steps, on one Tenant Manager, then all deleted.
    let goal: usize = std::env::var("KC_REALMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = support::TempDir::new();
    let tm = support::service::start_tm(&support::sqlite_settings(&dir), &target.yaml(2));
    let a = tm.addr;
    let db = &tm.ops.db;
    let count = |status: &str| {
        db.list_tenants(
            &TenantFilter {
                status: Some(status.into()),
                ..TenantFilter::default()
            },
            0,
            None,
        )
        .map(|(l, _)| l.len())
        .unwrap_or(0)
    };
    // The system tenant is there from the start; every realm of the run is one more tenant.
    let base = count("AVAILABLE") + count("FAILED");
    let mut made = 0;
    while made < goal {
        // A step: `step - 1` tenants POSTed at once, then one more alone (nothing queued before
        // it), whose POST to AVAILABLE shows how long a realm takes at this many realms.
        let step = tenants.min(goal - made);
        let started = Instant::now();
        let ids: Vec<String> = (made..made + step - 1)
            .map(|i| format!("m{run_id}-{i:04}"))
            .collect();
        for id in &ids {
            assert_eq!(post(a, &json!({ "id": id })), 202);
        }
        while count("AVAILABLE") + count("FAILED") < base + made + step - 1
            && started.elapsed() < Duration::from_secs(1800)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let batch_secs = started.elapsed().as_secs_f64();
        let solo = format!("m{run_id}-{:04}", made + step - 1);
        let t0 = Instant::now();
        assert_eq!(post(a, &json!({ "id": solo })), 202);
        while count("AVAILABLE") + count("FAILED") < base + made + step
            && t0.elapsed() < Duration::from_secs(600)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let alone = t0.elapsed().as_secs_f64();
        made += step;
        let (list, _) = db
            .list_tenants(&TenantFilter::default(), 0, None)
            .expect("tenants");
        let mut latencies: Vec<i64> = list
            .iter()
            .filter(|t| ids.contains(&t.id) && t.status == "AVAILABLE")
            .map(|t| t.updated_ms - t.created_ms)
            .collect();
        latencies.sort_unstable();
        println!(
            "real      {made} realms of this run: {} at once at {:.2} tenants/s (POST to \
             AVAILABLE p50 {:.1} s, max {:.1} s), one alone {alone:.2} s, failed {}, Keycloak \
             resident {} MiB",
            step - 1,
            (step - 1) as f64 / batch_secs,
            percentile(&latencies, 0.5) as f64 / 1000.0,
            latencies.last().copied().unwrap_or(0) as f64 / 1000.0,
            count("FAILED"),
            keycloak_rss_mib().map_or("?".into(), |m| m.to_string())
        );
    }
    let took = delete_all(a, db, &format!("m{run_id}-"));
    println!(
        "real      {made} realms deleted in {:.1} s; Keycloak resident {} MiB",
        took.as_secs_f64(),
        keycloak_rss_mib().map_or("?".into(), |m| m.to_string())
    );
}
