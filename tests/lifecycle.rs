#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The binaries' life as an orchestrator sees it, driven as a user would (real processes, HTTP):
//!
//! * a start while PostgreSQL cannot be reached yet: the port answers at once, `/health` 200,
//!   `/health/ready` and the API 503 while the first connection is retried; ready once PostgreSQL
//!   is reachable, without a restart (`postgresql.startup-wait`); a start that waits longer than
//!   that gives up with one line;
//! * SIGTERM under load: readiness 503 at once while every request keeps being answered for
//!   `service.shutdown-delay` (a second signal ends that window), then the server stops accepting
//!   and requests in flight finish; no request sent before the window ended goes unanswered.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::proc::{self, Resp};

const IAM: &str = env!("CARGO_BIN_EXE_iam");
const TM: &str = env!("CARGO_BIN_EXE_tenant-manager");

/// Polls `cond` until it holds; fails the test, naming `what`, only if it never does.
fn wait_for(what: &str, bound: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + bound;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> std::io::Result<Resp> {
    proc::call_json_with(addr, method, path, None, &[], body, Duration::from_secs(20))
}

fn body_text(r: &Resp) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// The message of an error body in either style (`message`, or the Tenant Manager's `error`).
fn message(r: &Resp) -> String {
    let v = r.json();
    v["message"]
        .as_str()
        .or_else(|| v["error"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn policy(name: &str) -> Value {
    json!({"name": name, "tenantID": "t1", "statements": [
        {"effect": "allow", "actions": ["iam:user:read"], "resources": ["krn:iam:t1::user/*"]}]})
}

/// The service's start against a PostgreSQL that is down (a proxy refusing every connection)
/// and comes up later.
fn start_before_postgresql(bin: &str, name: &str, api: &str, create: Value, created: u16) {
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip(name);
    };
    let upstream = (pg.settings.host.as_str(), pg.settings.port)
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap();
    let proxy = support::proxy::Proxy::start(upstream);
    proxy.set_down();
    let dir = support::TempDir::new();
    let cfg = dir.0.join("c.yml");
    std::fs::write(&cfg, "postgresql:\n  connect-timeout: 1\n").unwrap();
    let port = proxy.addr.port().to_string();
    let svc = proc::start_until(
        bin,
        &dir.0,
        &[
            ("APP_CONFIG_PATH", cfg.to_str().unwrap()),
            ("SERVER_PORT", "0"),
            ("KAA_POSTGRESQL_HOST", "127.0.0.1"),
            ("KAA_POSTGRESQL_PORT", &port),
            ("KAA_POSTGRESQL_USERNAME", &pg.settings.username),
            ("KAA_POSTGRESQL_PASSWORD", pg.settings.password.expose()),
            ("KAA_POSTGRESQL_DATABASE", &pg.name),
            ("KAA_POSTGRESQL_STARTUP_WAIT", "300"),
        ],
        " accepting on ",
    )
    .unwrap_or_else(|(status, log)| panic!("{name}: exited {status}: {log:?}"));
    let addr = svc.addr;
    let pid = svc.child.id();

    // Waiting: alive, not ready (saying why), the API refused with a JSON 503.
    let r = proc::get(addr, "/health");
    assert_eq!(
        r.status,
        200,
        "{name}: liveness while waiting: {}",
        body_text(&r)
    );
    assert_eq!(r.json()["status"], "UP");
    wait_for(
        &format!("{name}: readiness naming the storage it waits for"),
        Duration::from_secs(30),
        || {
            let r = proc::get(addr, "/health/ready");
            assert_eq!(
                r.status,
                503,
                "{name}: ready without storage: {}",
                body_text(&r)
            );
            message(&r).contains("waiting for storage")
        },
    );
    wait_for(
        &format!("{name}: a second connection attempt"),
        Duration::from_secs(30),
        || svc.log_text().contains("storage: attempt 2:"),
    );
    let r = call(addr, "POST", api, Some(&create)).unwrap();
    assert_eq!(
        r.status,
        503,
        "{name}: API while waiting: {}",
        body_text(&r)
    );
    assert!(
        message(&r).contains("starting"),
        "{name}: {}",
        body_text(&r)
    );
    assert_eq!(r.header("Retry-After"), Some("5"));
    assert!(
        !svc.log_text().contains(" listening on "),
        "{name}: announced ready without storage: {}",
        svc.log_text()
    );

    // PostgreSQL becomes reachable: ready, serving, the same process.
    proxy.set_up();
    wait_for(
        &format!("{name}: ready once PostgreSQL is reachable"),
        Duration::from_secs(60),
        || proc::get(addr, "/health/ready").status == 200,
    );
    assert!(
        svc.log_text().contains(" listening on "),
        "{}",
        svc.log_text()
    );
    let r = call(addr, "POST", api, Some(&create)).unwrap();
    assert_eq!(r.status, created, "{name}: {}", body_text(&r));
    assert_eq!(svc.child.id(), pid, "never restarted");
    assert!(svc.terminate(Duration::from_secs(15)).success());
}

#[test]
fn iam_started_before_postgresql_becomes_ready_once_it_is_reachable() {
    start_before_postgresql(
        IAM,
        "iam_started_before_postgresql_becomes_ready_once_it_is_reachable",
        "/api/v1/policies",
        policy("after-the-wait"),
        201,
    );
}

#[test]
fn tenant_manager_started_before_postgresql_becomes_ready_once_it_is_reachable() {
    start_before_postgresql(
        TM,
        "tenant_manager_started_before_postgresql_becomes_ready_once_it_is_reachable",
        "/api/v1/tenants",
        json!({"id": "after-the-wait"}),
        202,
    );
}

#[test]
fn a_start_gives_up_after_the_startup_wait_and_at_once_on_a_missing_database() {
    let name = "a_start_gives_up_after_the_startup_wait_and_at_once_on_a_missing_database";
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip(name);
    };
    let upstream = (pg.settings.host.as_str(), pg.settings.port)
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap();
    let proxy = support::proxy::Proxy::start(upstream);
    proxy.set_down();
    let dir = support::TempDir::new();
    let port = proxy.addr.port().to_string();
    let run = |wait: &str, database: &str| {
        let env = [
            ("SERVER_PORT", "0"),
            ("KAA_POSTGRESQL_HOST", "127.0.0.1"),
            ("KAA_POSTGRESQL_PORT", port.as_str()),
            ("KAA_POSTGRESQL_USERNAME", pg.settings.username.as_str()),
            ("KAA_POSTGRESQL_PASSWORD", pg.settings.password.expose()),
            ("KAA_POSTGRESQL_DATABASE", database),
            ("KAA_POSTGRESQL_STARTUP_WAIT", wait),
        ];
        let (status, _, err) = proc::run(IAM, &dir.0, &env, &[]);
        (status, err)
    };

    // Never reachable within the wait: exit 1, one error line naming the setting.
    let (status, err) = run("1", &pg.name);
    assert_eq!(status.code(), Some(1), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(
        errors[0].contains("postgresql.startup-wait") && errors[0].contains(&pg.name),
        "{err}"
    );
    assert!(
        err.contains("storage: attempt 1:"),
        "retried meanwhile: {err}"
    );

    // Reachable, but the database is missing: refused without waiting, whatever the wait allows.
    proxy.set_up();
    let (status, err) = run("300", "kaa_no_such_database");
    assert_eq!(status.code(), Some(1), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains("kaa_no_such_database"), "{err}");
    assert!(
        !err.contains("storage: attempt"),
        "a refusal is not retried: {err}"
    );
}

/// One request of the load: when it was sent (relative to the signals) and what came back.
#[derive(Debug, Clone)]
struct Shot {
    key: String,
    during_window: bool,
    outcome: Result<u16, String>,
}

#[test]
fn sigterm_under_load_answers_every_request_sent_before_the_window_ended() {
    let dir = support::TempDir::new();
    let cfg = dir.0.join("c.yml");
    // A window far longer than the test: the second signal ends it.
    std::fs::write(
        &cfg,
        "service:\n  shutdown-delay: 300\n  graceful-shutdown: 60\nserver:\n  read-timeout: 60\n",
    )
    .unwrap();
    let db = dir.0.join("iam.db");
    let svc = proc::start(
        IAM,
        &dir.0,
        &[
            ("APP_CONFIG_PATH", cfg.to_str().unwrap()),
            ("SERVER_PORT", "0"),
            ("KAA_SQLITE_PATH", db.to_str().unwrap()),
        ],
    )
    .unwrap_or_else(|(status, log)| panic!("exited {status}: {log:?}"));
    let addr = svc.addr;

    // Writers and readers on fresh connections until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let window = Arc::new(AtomicBool::new(false));
    let shots: Arc<Mutex<Vec<Shot>>> = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..6)
        .map(|w| {
            let (stop, window, shots) =
                (Arc::clone(&stop), Arc::clone(&window), Arc::clone(&shots));
            thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let key = format!("w{w}-{i}");
                    let during_window = window.load(Ordering::SeqCst);
                    let outcome = if i % 3 == 0 {
                        call(addr, "GET", "/api/v1/policies?tenantID=t1&pageSize=5", None)
                            .map(|r| r.status)
                    } else {
                        call(addr, "POST", "/api/v1/policies", Some(&policy(&key)))
                            .map(|r| r.status)
                    }
                    .map_err(|e| e.to_string());
                    shots.lock().unwrap().push(Shot {
                        key,
                        during_window,
                        outcome,
                    });
                }
            })
        })
        .collect();
    let answered = |in_window: bool| {
        shots
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.during_window == in_window && s.outcome.is_ok())
            .count()
    };
    wait_for("load before the signal", Duration::from_secs(30), || {
        answered(false) >= 30
    });

    // First SIGTERM: not ready at once, alive, and still serving.
    svc.signal("TERM");
    wait_for(
        "readiness 503 after SIGTERM",
        Duration::from_secs(10),
        || proc::get(addr, "/health/ready").status == 503,
    );
    let r = proc::get(addr, "/health/ready");
    assert_eq!(r.status, 503);
    assert!(message(&r).contains("shutting down"), "{}", body_text(&r));
    assert_eq!(
        proc::get(addr, "/health").status,
        200,
        "alive during the window"
    );
    window.store(true, Ordering::SeqCst);
    wait_for(
        "load answered during the window",
        Duration::from_secs(30),
        || answered(true) >= 60,
    );

    // Requests in flight when the window ends: heads and half the bodies sent now.
    let slow: Vec<(TcpStream, Vec<u8>)> = (0..3)
        .map(|i| {
            let body = policy(&format!("slow-{i}")).to_string().into_bytes();
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let head = format!(
                "POST /api/v1/policies HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n",
                body.len()
            );
            s.write_all(head.as_bytes()).unwrap();
            let half = body.len() / 2;
            s.write_all(&body[..half]).unwrap();
            (s, body[half..].to_vec())
        })
        .collect();
    let sent_half: usize = slow.iter().map(|(_, rest)| rest.len()).sum::<usize>() - 3;
    wait_for(
        "the server reading the three half-sent bodies",
        Duration::from_secs(10),
        || {
            let m = String::from_utf8_lossy(&proc::get(addr, "/metrics").body).into_owned();
            m.lines()
                .find(|l| l.starts_with("service_gauge{name=\"http_body_bytes_in_flight\""))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|n| n >= sent_half)
        },
    );

    // The load stops (every request of it answered or failed by now), then the window ends.
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    svc.signal("TERM");
    wait_for("the listener closing", Duration::from_secs(10), || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err()
    });
    for (i, (mut s, rest)) in slow.into_iter().enumerate() {
        s.write_all(&rest).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8_lossy(&raw);
        assert!(
            text.starts_with("HTTP/1.1 201 "),
            "slow request {i}: {text}"
        );
        assert!(
            text.to_ascii_lowercase().contains("connection: close"),
            "slow request {i}: {text}"
        );
    }
    let log = Arc::clone(&svc.log);
    let status = svc.wait_exit(Duration::from_secs(30));
    let text = || log.lock().unwrap().join("\n");
    assert!(status.success(), "exit {status}: {}", text());
    wait_for("the shutdown report", Duration::from_secs(10), || {
        text().contains("iam stopped: ")
    });
    assert!(text().contains("cut_off: 0"), "{}", text());

    let shots = shots.lock().unwrap().clone();
    let lost: Vec<String> = shots
        .iter()
        .filter(|s| !matches!(s.outcome, Ok(200 | 201)))
        .map(|s| {
            format!(
                "{} (during the window: {}): {:?}",
                s.key, s.during_window, s.outcome
            )
        })
        .collect();
    assert!(lost.is_empty(), "requests without a good answer: {lost:?}");
    let in_window = shots.iter().filter(|s| s.during_window).count();
    assert!(
        in_window >= 60,
        "{in_window} requests sent during the window"
    );
    eprintln!(
        "measured: sigterm under load: {} requests ({} sent during the window) and 3 in flight \
         at its end, all answered",
        shots.len(),
        in_window
    );
}
