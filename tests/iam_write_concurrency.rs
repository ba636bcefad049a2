//! Concurrent writes into one replica never make it read the whole tenant again: every revision
//! a write takes is announced by the store before it commits, so neither another write nor the
//! refresher (which runs every 500 ms, and whose passes `/metrics` counts) takes it for another replica's. Checked over HTTP on
//! SQLite and PostgreSQL, through the index counters of `/metrics`, with every write decided on
//! by the replica right after it answers and by a replica that loads the tenant afresh.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kaa::config::StorageSettings;
use serde_json::{Value, json};
use support::proc::{Resp, call_json_with};

/// `call_json` with this file's 30 s timeout (longer than `CALL_TIMEOUT`).
fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Resp {
    call_json_with(addr, method, path, None, &[], body, Duration::from_secs(30)).unwrap()
}

/// A counter of `/metrics`, exported under its own name.
fn counter(addr: SocketAddr, name: &str) -> u64 {
    let r = call(addr, "GET", "/metrics", None);
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body).unwrap();
    assert!(
        text.contains(&format!("# TYPE {name} counter")),
        "{name} is not a counter:\n{text}"
    );
    let key = format!("{name}{{");
    text.lines()
        .find(|l| l.starts_with(&key))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no counter {name} in /metrics:\n{text}"))
}

fn allowed(addr: SocketAddr, k: &str) -> bool {
    let body = json!({"principal": format!("krn:iam:wc::user/u{k}"), "action": "iam:user:read",
        "resources": [format!("krn:iam:wc::user/target{k}")]});
    let r = call(addr, "POST", "/api/v1/evaluate", Some(&body));
    assert!(
        r.status == 200 || r.status == 403,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    r.status == 200
}

fn policy(k: &str) -> Value {
    json!({"name": format!("p{k}"), "tenantID": "wc", "statements": [
        {"effect": "allow", "actions": ["iam:user:read"], "resources": [format!("krn:iam:wc::user/target{k}")],
         "principals": [format!("krn:iam:wc::user/u{k}")]}]})
}

const CLIENTS: usize = 8;
/// Writes per client at least; they go on until the refresher has looked several times.
const AT_LEAST: usize = 5;

fn writes_apply_without_reloads(storage: &StorageSettings) {
    let one = support::service::start_iam(storage, "");
    // The tenant exists and is loaded before the counters are read.
    assert_eq!(
        call(one.addr, "POST", "/api/v1/policies", Some(&policy("seed"))).status,
        201
    );
    let reloads = counter(one.addr, "iam_index_reloads_total");
    let updates = counter(one.addr, "iam_index_updates_total");
    let passes = counter(one.addr, "iam_index_refresh_passes_total");
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let addr = one.addr;
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut written = Vec::new();
                let mut i = 0;
                while i < AT_LEAST || !stop.load(Ordering::SeqCst) {
                    let k = format!("c{c}n{i}");
                    let r = call(addr, "POST", "/api/v1/policies", Some(&policy(&k)));
                    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
                    // Every tenth is checked at once: the write's own replica decides on it.
                    if i % 10 == 0 {
                        assert!(allowed(addr, &k), "write {k} not decided on at once");
                    }
                    written.push(k);
                    i += 1;
                }
                written
            })
        })
        .collect();
    // The refresher looks several times while writes are committing.
    support::wait_until("three refresher passes while writing", || {
        counter(one.addr, "iam_index_refresh_passes_total") >= passes + 3
    });
    stop.store(true, Ordering::SeqCst);
    let written: Vec<String> = clients
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    // Two refresher passes after the last write: the second began after it answered, so it
    // compared every tenant's revision with what the writes left in the database.
    let passes = counter(one.addr, "iam_index_refresh_passes_total");
    support::wait_until("two refresher passes after the last write", || {
        counter(one.addr, "iam_index_refresh_passes_total") >= passes + 2
    });
    assert_eq!(
        counter(one.addr, "iam_index_reloads_total"),
        reloads,
        "{} concurrent writes made the replica reload the tenant",
        written.len()
    );
    assert_eq!(
        counter(one.addr, "iam_index_updates_total") - updates,
        written.len() as u64,
        "each write applies as one incremental update"
    );
    let fresh = support::service::start_iam(storage, "");
    for k in &written {
        assert!(allowed(one.addr, k), "{k} lost by the writing replica");
        assert!(allowed(fresh.addr, k), "{k} lost by the database");
    }
    assert!(!allowed(one.addr, "never-written"));
}

#[test]
fn sqlite_concurrent_writes_apply_without_reloads() {
    let dir = support::TempDir::new();
    writes_apply_without_reloads(&support::sqlite_settings(&dir));
}

#[test]
fn postgres_concurrent_writes_apply_without_reloads() {
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip("postgres_concurrent_writes_apply_without_reloads");
    };
    writes_apply_without_reloads(&pg.storage());
}

/// Path of the policy `policy(name)` creates (its id: the KRN in base64, percent-encoded).
fn policy_path(name: &str) -> String {
    let id = kaa::policy::Krn::parse(&format!("krn:iam:wc::policy/p{name}"))
        .unwrap()
        .to_id()
        .replace('/', "%2F")
        .replace('+', "%2B")
        .replace('=', "%3D");
    format!("/api/v1/policies/{id}")
}

/// Clients replace the same two policies in opposite orders at once, so concurrent grouped
/// commits lock their rows in opposite orders: every replacement that asked for no particular
/// version is answered 200 (never a spurious 409 or 412; a group PostgreSQL aborts runs again
/// write by write), none is lost (each policy's version counts every 200 it got), and the replica
/// decides as the database says. The same for unconditional PATCHes of one user.
fn opposite_order_replacements_all_land(storage: &StorageSettings) {
    let one = support::service::start_iam(storage, "");
    for name in ["x", "y"] {
        let r = call(one.addr, "POST", "/api/v1/policies", Some(&policy(name)));
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    }
    const ROUNDS: usize = 25;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let addr = one.addr;
            std::thread::spawn(move || {
                let order = if c % 2 == 0 { ["x", "y"] } else { ["y", "x"] };
                for i in 0..ROUNDS {
                    for name in order {
                        let body = json!({"statements": [{"effect": "allow",
                            "actions": ["iam:user:read"],
                            "resources": [format!("krn:iam:wc::user/target{name}")],
                            "principals": [format!("krn:iam:wc::user/u{name}c{c}r{i}")]}]});
                        let r = call(addr, "PUT", &policy_path(name), Some(&body));
                        assert_eq!(
                            r.status,
                            200,
                            "{name} by client {c}, round {i}: {}",
                            String::from_utf8_lossy(&r.body)
                        );
                    }
                }
            })
        })
        .collect();
    for h in clients {
        h.join().unwrap();
    }
    // The same for a user's unconditional PATCHes.
    let r = call(
        one.addr,
        "POST",
        "/api/v1/users",
        Some(
            &json!({"username": "pat", "tenantID": "wc", "password": "pat-password-1", "confirmPassword": "pat-password-1"}),
        ),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let user = r.json()["data"]["id"]
        .as_str()
        .unwrap()
        .replace('/', "%2F")
        .replace('+', "%2B")
        .replace('=', "%3D");
    let user_path = format!("/api/v1/users/{user}");
    let patchers: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (addr, path) = (one.addr, user_path.clone());
            std::thread::spawn(move || {
                for i in 0..ROUNDS {
                    let body = json!({"firstName": format!("c{c}r{i}")});
                    let r = call(addr, "PATCH", &path, Some(&body));
                    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
                }
            })
        })
        .collect();
    for h in patchers {
        h.join().unwrap();
    }
    let u = call(one.addr, "GET", &user_path, None).json()["data"].clone();
    assert_eq!(
        u["version"].as_i64(),
        Some(1 + (CLIENTS * ROUNDS) as i64),
        "a PATCH answered 200 was lost: {u}"
    );
    let fresh = support::service::start_iam(storage, "");
    for name in ["x", "y"] {
        let r = call(one.addr, "GET", &policy_path(name), None);
        assert_eq!(r.status, 200);
        let p = r.json()["data"].clone();
        assert_eq!(
            p["version"].as_i64(),
            Some(1 + (CLIENTS * ROUNDS) as i64),
            "policy {name}: a replacement answered 200 was lost: {p}"
        );
        let principal = p["statements"][0]["principals"][0]
            .as_str()
            .unwrap()
            .to_string();
        let body = json!({"principal": principal, "action": "iam:user:read",
            "resources": [format!("krn:iam:wc::user/target{name}")]});
        for addr in [one.addr, fresh.addr] {
            let r = call(addr, "POST", "/api/v1/evaluate", Some(&body));
            assert_eq!(
                r.status, 200,
                "{principal} on {name}: the replica lags the database"
            );
        }
    }
}

#[test]
fn sqlite_opposite_order_replacements_all_land() {
    let dir = support::TempDir::new();
    opposite_order_replacements_all_land(&support::sqlite_settings(&dir));
}

#[test]
fn postgres_opposite_order_replacements_all_land() {
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip("postgres_opposite_order_replacements_all_land");
    };
    opposite_order_replacements_all_land(&pg.storage());
}
