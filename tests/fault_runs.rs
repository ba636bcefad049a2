//! Fault runs with counts: each run drives load through a fault and prints
//! `measured: <run>: sent .. answered .. failed .. acknowledged .. verified .. lost ..`, where an
//! acknowledged write is a 2xx answer to a write and `verified` counts those read back
//! afterwards (lost must be 0).
//!
//! * PostgreSQL cut (TCP proxy) under write load, for `iam` and for `tenant-manager`: only 503
//!   during the outage, recovery without a restart.
//! * NATS cut during tenant changes: the outbox drains and every event arrives, decoded.
//! * Keycloak answering 500, hanging past the timeout and refusing connections during
//!   provisioning: no duplicates, every tenant AVAILABLE.
//! * SIGKILL of the `tenant-manager` binary mid-provisioning: resumed on the next start.
//! * `iam` on SQLite on a full disk (a small tmpfs; needs root): a clear 503, reads still
//!   served, no corruption and writes again once space returns, without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kaa::clients::nats::NatsClient;
use kaa::clients::tle::LifecycleEvent;
use serde_json::{Value, json};
use support::keycloak::{ADMIN_PASSWORD, ADMIN_USER, Keycloak};
use support::proc::{self, Resp};

const IAM: &str = env!("CARGO_BIN_EXE_iam");
const TM: &str = env!("CARGO_BIN_EXE_tenant-manager");

fn measured(line: &str) {
    let _ = writeln!(std::io::stderr(), "measured: {line}");
}

/// Calls return their I/O errors (outages make them fail), with a 20 s timeout.
fn call(a: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> std::io::Result<Resp> {
    proc::call_json_with(a, method, path, None, &[], body, Duration::from_secs(20))
}

/// The bound of [`wait_for`] where nothing but liveness is at stake.
const LIVENESS: Duration = Duration::from_secs(60);

/// Waits for `cond` and says how long it took (for the `measured:` lines); `bound` only fails a
/// run in which it never holds.
fn wait_for(what: &str, bound: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < bound, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
    t.elapsed()
}

/// One write of a load run.
#[derive(Debug, Clone)]
struct Shot {
    key: String,
    sent: Instant,
    done: Instant,
    status: Option<u16>,
}

/// Writers posting `make(key)` to `path` until `stop`; every shot is recorded.
fn write_load(
    addr: SocketAddr,
    path: &'static str,
    threads: usize,
    make: fn(&str) -> Value,
    stop: Arc<AtomicBool>,
) -> (Vec<thread::JoinHandle<()>>, Arc<Mutex<Vec<Shot>>>) {
    let shots = Arc::new(Mutex::new(Vec::new()));
    let handles = (0..threads)
        .map(|w| {
            let (stop, shots) = (Arc::clone(&stop), Arc::clone(&shots));
            thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let key = format!("w{w}-{i}");
                    let sent = Instant::now();
                    let status = call(addr, "POST", path, Some(&make(&key)))
                        .ok()
                        .map(|r| r.status);
                    shots.lock().unwrap().push(Shot {
                        key,
                        sent,
                        done: Instant::now(),
                        status,
                    });
                    thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();
    (handles, shots)
}

struct Tally {
    sent: usize,
    acked: Vec<String>,
    unavailable: usize,
    other: Vec<(String, Option<u16>)>,
}

fn tally(shots: &[Shot], ok: u16) -> Tally {
    let mut t = Tally {
        sent: shots.len(),
        acked: Vec::new(),
        unavailable: 0,
        other: Vec::new(),
    };
    for s in shots {
        match s.status {
            Some(c) if c == ok => t.acked.push(s.key.clone()),
            Some(503) => t.unavailable += 1,
            c => t.other.push((s.key.clone(), c)),
        }
    }
    t
}

fn pg_proxy(pg: &support::PgTestDb) -> support::proxy::Proxy {
    let upstream = (pg.settings.host.as_str(), pg.settings.port)
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap();
    support::proxy::Proxy::start(upstream)
}

/// A PostgreSQL outage of `outage` in the middle of a write load against `bin`; returns the
/// service (still running, never restarted), the shots, and the outage window.
fn postgres_cut_run(
    bin: &str,
    name: &str,
    path: &'static str,
    make: fn(&str) -> Value,
    ok: u16,
    read_back: fn(SocketAddr, &str) -> Result<(), String>,
) {
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip(name);
    };
    let proxy = pg_proxy(&pg);
    let dir = support::TempDir::new();
    let cfg = dir.0.join("c.yml");
    std::fs::write(&cfg, "postgresql:\n  connect-timeout: 1\n").unwrap();
    let port = proxy.addr.port().to_string();
    let svc = proc::start(
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
        ],
    )
    .unwrap();
    let addr = svc.addr;
    let pid = svc.child.id();
    let stop = Arc::new(AtomicBool::new(false));
    const WRITERS: usize = 4;
    let (handles, shots) = write_load(addr, path, WRITERS, make, Arc::clone(&stop));
    let count = |f: &dyn Fn(&Shot) -> bool| shots.lock().unwrap().iter().filter(|s| f(s)).count();
    wait_for("20 writes acknowledged before the cut", LIVENESS, || {
        count(&|s| s.status == Some(ok)) >= 20
    });
    let down_at = Instant::now();
    proxy.set_down();
    // The outage lasts until several writes were answered 503.
    wait_for("the outage noticed by 8 writes", LIVENESS, || {
        count(&|s| s.status == Some(503) && s.sent > down_at) >= 8
    });
    proxy.set_up();
    let up_at = Instant::now();
    let outage = up_at - down_at;
    let recovered = wait_for(
        "the first acknowledged write after the outage",
        LIVENESS,
        || count(&|s| s.sent > up_at && s.status == Some(ok)) >= 1,
    );
    // The load goes on until every writer had three writes acknowledged after the outage.
    wait_for("every writer recovered", LIVENESS, || {
        let shots = shots.lock().unwrap();
        (0..WRITERS).all(|w| {
            let prefix = format!("w{w}-");
            shots
                .iter()
                .filter(|s| s.key.starts_with(&prefix) && s.sent > up_at && s.status == Some(ok))
                .count()
                >= 3
        })
    });
    stop.store(true, Ordering::SeqCst);
    for h in handles {
        h.join().unwrap();
    }
    let shots = shots.lock().unwrap().clone();
    let t = tally(&shots, ok);
    assert!(
        t.other.is_empty(),
        "{name}: answers other than {ok} and 503: {:?}",
        t.other
    );
    // 503 only during the outage: none answered before the cut, and none to a writer once it
    // had a write acknowledged after the outage ended (it recovered; a write sent just before
    // the cut may fail, and each writer recovers with its first reconnect).
    for s in shots.iter().filter(|s| s.status == Some(503)) {
        assert!(s.done >= down_at, "{name}: a 503 before the cut: {s:?}");
    }
    let writer = |s: &Shot| s.key.split('-').next().unwrap_or("").to_string();
    let mut recovered_writers = BTreeSet::new();
    for s in &shots {
        // Each writer's shots are recorded in the order it sent them.
        if s.status == Some(503) {
            assert!(
                !recovered_writers.contains(&writer(s)),
                "{name}: a 503 after the writer's recovery: {s:?}"
            );
        }
        if s.status == Some(ok) && s.sent > up_at {
            recovered_writers.insert(writer(s));
        }
    }
    assert!(t.unavailable > 0, "{name}: the outage was never noticed");
    assert!(
        !recovered_writers.is_empty(),
        "{name}: no writes acknowledged after recovery"
    );
    let unverified: Vec<String> = t
        .acked
        .iter()
        .filter_map(|k| read_back(addr, k).err())
        .collect();
    let verified = t.acked.len() - unverified.len();
    assert_eq!(svc.child.id(), pid, "never restarted");
    measured(&format!(
        "{name}: sent {} answered {} (acknowledged {}, 503 {}) failed {} ; outage {outage:.1?}, first acknowledged write {:.1?} after it ended; acknowledged writes verified {}/{} lost {}",
        t.sent,
        t.acked.len() + t.unavailable,
        t.acked.len(),
        t.unavailable,
        t.other.len(),
        recovered,
        verified,
        t.acked.len(),
        t.acked.len() - verified
    ));
    assert!(
        unverified.is_empty(),
        "{name}: acknowledged writes lost: {unverified:?}"
    );
    assert!(svc.terminate(Duration::from_secs(15)).success());
}

fn policy_body(key: &str) -> Value {
    json!({"name": key, "tenantID": "t1", "statements": [
        {"effect": "allow", "actions": ["iam:user:read"], "resources": ["krn:iam:t1::user/*"]}]})
}

fn policy_id(key: &str) -> String {
    STANDARD
        .encode(format!("krn:iam:t1::policy/{key}"))
        .replace('/', "%2F")
        .replace('+', "%2B")
        .replace('=', "%3D")
}

fn policy_exists(addr: SocketAddr, key: &str) -> bool {
    policy_read_back(addr, key).is_ok()
}

fn policy_read_back(addr: SocketAddr, key: &str) -> Result<(), String> {
    match call(
        addr,
        "GET",
        &format!("/api/v1/policies/{}", policy_id(key)),
        None,
    ) {
        Ok(r) if r.status == 200 && r.json()["data"]["name"] == key => Ok(()),
        Ok(r) => Err(format!(
            "{key}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        )),
        Err(e) => Err(format!("{key}: {e}")),
    }
}

fn tenant_body(key: &str) -> Value {
    json!({"id": key})
}

fn tenant_exists(addr: SocketAddr, key: &str) -> bool {
    tenant_read_back(addr, key).is_ok()
}

/// The tenant is there and AVAILABLE (waiting up to 20 s for its provisioning).
fn tenant_read_back(addr: SocketAddr, key: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = call(addr, "GET", &format!("/api/v1/tenants/{key}"), None);
        match r {
            Ok(r) if r.status == 200 && r.json()["status"] == "AVAILABLE" => return Ok(()),
            Ok(r) if r.status == 200 && Instant::now() < deadline => {}
            Ok(r) => {
                return Err(format!(
                    "{key}: {} {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                ));
            }
            Err(e) => return Err(format!("{key}: {e}")),
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn iam_postgres_cut_under_write_load() {
    postgres_cut_run(
        IAM,
        "iam_postgres_cut_under_write_load",
        "/api/v1/policies",
        policy_body,
        201,
        policy_read_back,
    );
}

#[test]
fn tenant_manager_postgres_cut_under_write_load() {
    postgres_cut_run(
        TM,
        "tenant_manager_postgres_cut_under_write_load",
        "/api/v1/tenants",
        tenant_body,
        202,
        tenant_read_back,
    );
}

#[test]
fn nats_cut_during_tenant_changes_loses_no_event() {
    let Ok(url) = std::env::var("IAM_TEST_NATS_URL") else {
        return support::skip_because(
            "nats_cut_during_tenant_changes_loses_no_event",
            "set IAM_TEST_NATS_URL to run it",
        );
    };
    let upstream = url
        .trim_start_matches("nats://")
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap();
    let proxy = support::proxy::Proxy::start(upstream);
    let dir = support::TempDir::new();
    let instance = support::unique("tm").replace('_', "-");
    let via_proxy = format!("nats://{}", proxy.addr);
    let svc = proc::start(
        TM,
        &dir.0,
        &[
            ("SERVER_PORT", "0"),
            ("KAA_NATS_URLS", &via_proxy),
            ("SERVICE_INSTANCE_NAME", &instance),
        ],
    )
    .unwrap();
    let listener = NatsClient::connect(&[url], "", "", Duration::from_secs(3)).unwrap();
    let mut sub = listener
        .subscribe(&format!("kaa.v1.events.{instance}.tenant.lifecycle.>"))
        .unwrap();
    let schemas = [
        (
            "updated",
            apache_avro::Schema::parse_str(include_str!("../src/clients/tle/tenant-updated.avsc"))
                .unwrap(),
        ),
        (
            "unregistered",
            apache_avro::Schema::parse_str(include_str!(
                "../src/clients/tle/tenant-unregistered.avsc"
            ))
            .unwrap(),
        ),
    ];

    // 30 tenants created, every third one deleted; NATS cut from the 10th change to the 20th.
    let mut acked: Vec<(&str, String)> = Vec::new();
    let mut changes = 0;
    for i in 0..30 {
        if i == 10 {
            proxy.set_down();
        }
        if i == 20 {
            proxy.set_up();
        }
        let id = format!("nc-{i}");
        let r = call(
            svc.addr,
            "POST",
            "/api/v1/tenants",
            Some(&json!({"id": id})),
        )
        .unwrap();
        changes += 1;
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        acked.push(("updated", id.clone()));
        if i % 3 == 0 {
            assert!(tenant_exists(svc.addr, &id));
            let r = call(svc.addr, "DELETE", &format!("/api/v1/tenants/{id}"), None).unwrap();
            changes += 1;
            assert_eq!(r.status, 202);
            acked.push(("unregistered", id));
        }
    }
    let mut got: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut received = 0;
    let started = Instant::now();
    while acked
        .iter()
        .any(|(k, t)| !got.contains_key(&(k.to_string(), t.clone())))
    {
        let Some(m) = sub.next_timeout(Duration::from_secs(30)) else {
            let missing: Vec<_> = acked
                .iter()
                .filter(|(k, t)| !got.contains_key(&(k.to_string(), t.clone())))
                .collect();
            panic!("events never arrived: {missing:?}");
        };
        received += 1;
        let kind = m.subject.rsplit('.').next().unwrap().to_string();
        let schema = &schemas.iter().find(|(k, _)| *k == kind).unwrap().1;
        let avro = apache_avro::from_avro_datum(schema, &mut &m.payload[..], None)
            .unwrap_or_else(|e| panic!("{kind} event not Avro: {e}"));
        let ours = LifecycleEvent::decode(&m.payload).unwrap();
        let apache_avro::types::Value::Record(fields) = avro else {
            panic!("not a record")
        };
        assert!(fields.iter().any(|(k, v)| k == "tenantId"
            && *v == apache_avro::types::Value::String(ours.tenant_id.clone())));
        *got.entry((kind, ours.tenant_id)).or_default() += 1;
    }
    let drained = started.elapsed();
    let dup = got.values().filter(|n| **n > 1).count();
    measured(&format!(
        "nats_cut_during_tenant_changes: changes sent {changes} acknowledged {changes}; events expected (distinct) {} received {received} decoded {received} (Avro schema and ours) missing 0, duplicated {dup}; outbox drained {drained:.1?} after the last change",
        acked.len()
    ));
    assert!(svc.terminate(Duration::from_secs(10)).success());
}

fn tm_yaml(kc: &Keycloak, timeout_ms: u64, lease_seconds: u64) -> String {
    format!(
        "tenant-manager:\n  keycloak:\n    url: {}\n    username: {ADMIN_USER}\n    password: {ADMIN_PASSWORD}\n    timeout-ms: {timeout_ms}\n  tasks:\n    workers: 2\n    backoff-ms: 20\n    max-backoff-ms: 200\n    max-attempts: 1000\n    lease-seconds: {lease_seconds}\n",
        kc.url()
    )
}

fn assert_realms_whole(kc: &Keycloak, ids: &[String]) -> usize {
    let names = kc.realm_names();
    for id in ids {
        assert_eq!(
            names.iter().filter(|n| *n == id).count(),
            1,
            "realm {id}: {names:?}"
        );
        let snap = kc.realm_snapshot(id).unwrap();
        assert!(
            snap.duplicates().is_empty(),
            "{id}: duplicates {:?}",
            snap.duplicates()
        );
    }
    ids.len()
}

#[test]
fn keycloak_500s_hangs_and_refusals_during_provisioning() {
    let kc = Keycloak::start();
    let dir = support::TempDir::new();
    let tm = support::service::start_tm(&support::sqlite_settings(&dir), &tm_yaml(&kc, 400, 300));
    let a = tm.addr;
    let ids: Vec<String> = (0..9).map(|i| format!("kf-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let r = call(a, "POST", "/api/v1/tenants", Some(&json!({"id": id}))).unwrap();
        assert_eq!(r.status, 202);
        match i {
            // 500s, some after the work was done (the answer is lost).
            1 => {
                kc.fail_next(5, 500);
                kc.lose_after(3, 500);
                kc.lose_after(10, 502);
            }
            // Hanging past the 400 ms timeout.
            4 => kc.delay(Duration::from_millis(700)),
            // Refusing connections.
            6 => {
                kc.delay(Duration::ZERO);
                kc.set_down(true);
            }
            _ => {}
        }
        thread::sleep(Duration::from_millis(300));
    }
    thread::sleep(Duration::from_millis(500));
    kc.set_down(false);
    kc.delay(Duration::ZERO);
    let t = Instant::now();
    for id in &ids {
        assert!(tenant_exists(a, id), "{id} not AVAILABLE");
    }
    let settled = t.elapsed();
    let whole = assert_realms_whole(&kc, &ids);
    let calls = kc.calls();
    let by_status = calls.iter().fold(BTreeMap::new(), |mut m, c| {
        *m.entry(c.status).or_insert(0usize) += 1;
        m
    });
    measured(&format!(
        "keycloak faults during provisioning: tenants sent {} acknowledged {} AVAILABLE {} realms whole without duplicates {whole}; Keycloak calls by status {by_status:?}; settled {settled:.1?} after the faults ended",
        ids.len(),
        ids.len(),
        ids.len()
    ));
}

#[test]
fn sigkill_mid_provisioning_resumes_on_the_next_start() {
    let kc = Keycloak::start();
    let dir = support::TempDir::new();
    let cfg = dir.0.join("c.yml");
    // A short lease: the dead process's tasks are taken again after it (default 300 s).
    std::fs::write(&cfg, tm_yaml(&kc, 2000, 3)).unwrap();
    let env = [
        ("SERVER_PORT", "0"),
        ("APP_CONFIG_PATH", cfg.to_str().unwrap()),
    ];
    let ids: Vec<String> = (0..4).map(|i| format!("sk-{i}")).collect();
    // Slow calls so that the kill lands in the middle of the realm runs.
    kc.delay(Duration::from_millis(15));
    let svc = proc::start(TM, &dir.0, &env).unwrap();
    for id in &ids {
        let r = call(
            svc.addr,
            "POST",
            "/api/v1/tenants",
            Some(&json!({"id": id})),
        )
        .unwrap();
        assert_eq!(r.status, 202);
    }
    wait_for("provisioning under way", Duration::from_secs(20), || {
        kc.count_calls("POST", "/admin/realms/sk-", 201) >= 10
            || kc
                .calls()
                .iter()
                .filter(|c| c.path.contains("/sk-"))
                .count()
                >= 10
    });
    let calls_before = kc.calls().len();
    let creating: Vec<String> = ids
        .iter()
        .filter(|id| {
            call(svc.addr, "GET", &format!("/api/v1/tenants/{id}"), None)
                .is_ok_and(|r| r.json()["status"] == "CREATING")
        })
        .cloned()
        .collect();
    let mut svc = svc;
    svc.child.kill().unwrap(); // SIGKILL
    let _ = svc.child.wait();
    drop(svc);
    assert!(
        !creating.is_empty(),
        "every tenant was done before the kill"
    );
    kc.delay(Duration::from_millis(1));
    let svc = proc::start(TM, &dir.0, &env).unwrap();
    let t = Instant::now();
    for id in &ids {
        assert!(
            tenant_exists(svc.addr, id),
            "{id} not AVAILABLE after the restart"
        );
    }
    let resumed = t.elapsed();
    let whole = assert_realms_whole(&kc, &ids);
    measured(&format!(
        "SIGKILL mid-provisioning: tenants {} acknowledged {}, {} still CREATING at the kill (after {calls_before} Keycloak calls); after the restart all AVAILABLE within {resumed:.1?}, realms whole without duplicates {whole}, lost 0",
        ids.len(),
        ids.len(),
        creating.len()
    ));
    assert!(svc.terminate(Duration::from_secs(10)).success());
}

/// A run that outlasts its lease keeps it: its worker renews the lease, so a second replica
/// whose workers wait for due tasks never runs the same realm again (the slow run makes as many
/// Keycloak calls for its realm as a run alone on a fast Keycloak).
#[test]
fn a_run_longer_than_its_lease_is_not_taken_over() {
    let kc = Keycloak::start();
    let dir = support::TempDir::new();
    let cfg = dir.0.join("c.yml");
    // A 1 s lease, renewed every third of it.
    std::fs::write(&cfg, tm_yaml(&kc, 5000, 1)).unwrap();
    let env = [
        ("SERVER_PORT", "0"),
        ("APP_CONFIG_PATH", cfg.to_str().unwrap()),
    ];
    let one = proc::start(TM, &dir.0, &env).unwrap();
    let on_realm = |id: &str| {
        let part = format!("/{id}");
        kc.calls()
            .iter()
            .filter(|c| c.path.ends_with(&part) || c.path.contains(&format!("{part}/")))
            .count()
    };
    let post = |addr: SocketAddr, id: &str| {
        let r = call(addr, "POST", "/api/v1/tenants", Some(&tenant_body(id))).unwrap();
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    };
    post(one.addr, "ls-ref");
    assert!(tenant_exists(one.addr, "ls-ref"));
    let alone = on_realm("ls-ref");
    assert!(alone > 10, "only {alone} Keycloak calls for a realm");
    // The same database served by a second replica, whose workers poll for due tasks.
    let two = proc::start(TM, &dir.0, &env).unwrap();
    kc.delay(Duration::from_millis(80));
    let started = Instant::now();
    post(one.addr, "ls-slow");
    assert!(tenant_exists(one.addr, "ls-slow"));
    let took = started.elapsed();
    kc.delay(Duration::from_millis(0));
    assert!(
        took > Duration::from_millis(2500),
        "the run took {took:?}, not several leases"
    );
    let slow = on_realm("ls-slow");
    measured(&format!(
        "run longer than its lease: {took:.1?} against a 1 s lease, {slow} Keycloak calls for its realm (a run alone: {alone}), realms whole {}",
        assert_realms_whole(&kc, &["ls-ref".to_string(), "ls-slow".to_string()])
    ));
    assert!(
        slow <= alone + alone / 5,
        "{slow} Keycloak calls for the slow realm against {alone} alone: another worker ran it too"
    );
    assert!(tenant_exists(two.addr, "ls-slow"));
    assert!(one.terminate(Duration::from_secs(10)).success());
    assert!(two.terminate(Duration::from_secs(10)).success());
}

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the file system holding `path` with a file there until ENOSPC.
fn fill(path: &std::path::Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 4096];
    let mut written = 0u64;
    while f.write_all(&block).is_ok() {
        written += block.len() as u64;
    }
    let _ = f.sync_all();
    written
}

#[test]
fn iam_on_a_full_disk_answers_503_and_recovers_without_corruption() {
    let dir = support::TempDir::new();
    let data = dir.0.join("data");
    let fs = match Tmpfs::mount(&data, "8m") {
        Ok(fs) => fs,
        Err(e) => {
            return support::skip_because(
                "iam_on_a_full_disk_answers_503_and_recovers_without_corruption",
                &format!("mounting a tmpfs needs root: {e}"),
            );
        }
    };
    let svc = proc::start(IAM, &dir.0, &[("SERVER_PORT", "0")]).unwrap();
    let a = svc.addr;
    let mut acked = BTreeSet::new();
    let mut sent = 0;
    for i in 0..20 {
        let key = format!("before-{i}");
        sent += 1;
        let r = call(a, "POST", "/api/v1/policies", Some(&policy_body(&key))).unwrap();
        assert_eq!(r.status, 201);
        acked.insert(key);
    }
    let filler = fs.0.join("filler");
    let filled = fill(&filler);

    let mut full = BTreeMap::new();
    for i in 0..30 {
        let key = format!("full-{i}");
        // Bigger bodies so that some write needs a new page.
        let mut body = policy_body(&key);
        body["description"] = json!("x".repeat(2000));
        sent += 1;
        let r = call(a, "POST", "/api/v1/policies", Some(&body)).unwrap();
        *full.entry(r.status).or_insert(0usize) += 1;
        match r.status {
            201 => {
                acked.insert(key);
            }
            503 => {
                let msg = r.json()["message"].as_str().unwrap_or_default().to_string();
                assert!(!msg.is_empty(), "a 503 without a message");
            }
            s => panic!(
                "full disk answered {s}: {}",
                String::from_utf8_lossy(&r.body)
            ),
        }
    }
    assert!(
        full.contains_key(&503),
        "the disk never looked full: {full:?}"
    );
    let r = call(a, "GET", "/api/v1/policies?tenantID=t1&limit=5", None).unwrap();
    assert_eq!(r.status, 200, "reads while full");

    std::fs::remove_file(&filler).unwrap();
    let mut after = 0;
    for i in 0..20 {
        let key = format!("after-{i}");
        sent += 1;
        let r = call(a, "POST", "/api/v1/policies", Some(&policy_body(&key))).unwrap();
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        acked.insert(key);
        after += 1;
    }
    let verified = acked.iter().filter(|k| policy_exists(a, k)).count();
    assert!(svc.terminate(Duration::from_secs(10)).success());
    let conn = rusqlite::Connection::open(data.join("iam.db")).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    measured(&format!(
        "iam on a full disk (tmpfs 8 MiB, {} KiB filler): sent {sent}; while full: {full:?}; after space returned {after}/{after} acknowledged without a restart; acknowledged writes verified {verified}/{} lost {}; integrity_check {check}",
        filled / 1024,
        acked.len(),
        acked.len() - verified
    ));
    assert_eq!(verified, acked.len());
}
