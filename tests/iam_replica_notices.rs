//! Two IAM replicas on one PostgreSQL database: a write acknowledged by replica A shows in the
//! decisions of replica B. With NATS, A announces each committed revision and B reads the tenant
//! again at once (the lag is printed as `measured:`); without NATS, B's polling still gets there.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kaa::config::StorageSettings;
use serde_json::{Value, json};
use support::proc::{Resp, call_json_with};

fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Resp {
    call_json_with(addr, method, path, None, &[], body, Duration::from_secs(10)).unwrap()
}

/// A counter of `/metrics` (0 when the service does not export it).
fn counter(addr: SocketAddr, name: &str) -> u64 {
    let text = String::from_utf8(call(addr, "GET", "/metrics", None).body).unwrap();
    let key = format!("{name}{{");
    text.lines()
        .find(|l| l.starts_with(&key))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn allowed(addr: SocketAddr, k: &str) -> bool {
    let body = json!({"principal": format!("krn:iam:rn::user/u{k}"), "action": "iam:user:read",
        "resources": [format!("krn:iam:rn::user/target{k}")]});
    let r = call(addr, "POST", "/api/v1/evaluate", Some(&body));
    assert!(r.status == 200 || r.status == 403, "{}", r.status);
    r.status == 200
}

fn policy(k: &str) -> Value {
    json!({"name": format!("p{k}"), "tenantID": "rn", "statements": [
        {"effect": "allow", "actions": ["iam:user:read"], "resources": [format!("krn:iam:rn::user/target{k}")],
         "principals": [format!("krn:iam:rn::user/u{k}")]}]})
}

/// Well beyond any lag, polling included: only a replica that never catches up fails it.
const LIVENESS: Duration = Duration::from_secs(10);

/// Write `n` policies on `a`, and for each the time from A's answer until B decides by it.
fn lags(a: SocketAddr, b: SocketAddr, label: &str, n: usize) -> Vec<Duration> {
    let mut lags = Vec::new();
    for i in 0..n {
        let k = format!("{label}{i}");
        assert!(!allowed(b, &k));
        let r = call(a, "POST", "/api/v1/policies", Some(&policy(&k)));
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let acked = Instant::now();
        assert!(allowed(a, &k), "the writing replica decides by its write");
        while !allowed(b, &k) {
            assert!(
                acked.elapsed() < LIVENESS,
                "replica B does not see write {k} after {LIVENESS:?}"
            );
            std::thread::sleep(Duration::from_micros(500));
        }
        lags.push(acked.elapsed());
        // Apart from each other, so that one write's notice is not another's.
        std::thread::sleep(Duration::from_millis(20));
    }
    lags
}

fn report(what: &str, mut lags: Vec<Duration>) {
    use std::io::Write;
    lags.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let _ = writeln!(
        std::io::stderr(),
        "measured: {what}: write on A to decision on B over {} writes: median {:.1} ms, max {:.1} ms",
        lags.len(),
        ms(lags[lags.len() / 2]),
        ms(lags[lags.len() - 1])
    );
}

fn replicas(storage: &StorageSettings, yaml: &str) -> [support::service::Running; 2] {
    let a = support::service::start_iam(storage, yaml);
    let b = support::service::start_iam(storage, yaml);
    // The tenant exists and both replicas hold it.
    let r = call(a.addr, "POST", "/api/v1/policies", Some(&policy("seed")));
    assert_eq!(r.status, 201);
    let started = Instant::now();
    while !allowed(b.addr, "seed") {
        assert!(started.elapsed() < LIVENESS);
        std::thread::sleep(Duration::from_millis(10));
    }
    [a, b]
}

#[test]
fn a_write_on_one_replica_reaches_the_other_through_a_nats_notice() {
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip("a_write_on_one_replica_reaches_the_other_through_a_nats_notice");
    };
    let Ok(url) = std::env::var("IAM_TEST_NATS_URL") else {
        return support::skip_because(
            "a_write_on_one_replica_reaches_the_other_through_a_nats_notice",
            "set IAM_TEST_NATS_URL to run it",
        );
    };
    // An instance of its own: other tests' replicas announce on other subjects.
    let instance = support::unique("iam").replace('_', "-");
    let yaml = format!("service:\n  instance:\n    name: {instance}\nnats:\n  urls: {url}\n");
    let [a, b] = replicas(&pg.storage(), &yaml);
    let notices = counter(b.addr, "iam_revision_notices_total");
    let n = 20;
    report("NATS up", lags(a.addr, b.addr, "n", n));
    // B heard of A's writes from A, not only from polling.
    let heard = counter(b.addr, "iam_revision_notices_total") - notices;
    assert!(
        heard >= n as u64,
        "replica B received {heard} revision notices for {n} writes of A"
    );
    // And B's own writes do not come back to it as notices.
    let before = counter(a.addr, "iam_revision_notices_total");
    let r = call(b.addr, "POST", "/api/v1/policies", Some(&policy("fromb")));
    assert_eq!(r.status, 201);
    let started = Instant::now();
    while !allowed(a.addr, "fromb") {
        assert!(started.elapsed() < LIVENESS);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(counter(a.addr, "iam_revision_notices_total") > before);
}

#[test]
fn without_nats_replicas_converge_by_polling() {
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip("without_nats_replicas_converge_by_polling");
    };
    let [a, b] = replicas(&pg.storage(), "");
    report("NATS absent (polling)", lags(a.addr, b.addr, "p", 5));
    assert_eq!(counter(b.addr, "iam_revision_notices_total"), 0);
}
