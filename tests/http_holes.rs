//! The holes an attacker found in the old hand-written HTTP/1.1 layer, tried again against the
//! real `iam` binary with its shipped limits: request smuggling by chunk-size overflow, memory
//! reserved from a declared `Content-Length`, Unicode whitespace around framing values, requests
//! without exactly one `Host`, and empty path segments that pass a front proxy's path rule. Each
//! must be refused (or harmless) and change nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::json;
use support::proc::{self, Service, get, post_json};

const IAM: &str = env!("CARGO_BIN_EXE_iam");

fn start(dir: &support::TempDir) -> Service {
    proc::start(IAM, &dir.0, &[("SERVER_PORT", "0")]).unwrap()
}

/// Sends `raw` on a fresh connection and reads until the server closes it (or 10 s pass);
/// returns everything it answered.
fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn statuses(answer: &str) -> Vec<u16> {
    answer
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| answer.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

fn policy(name: &str) -> String {
    json!({"name": name, "tenantID": "t1", "statements": [
        {"effect": "allow", "actions": ["iam:user:read"], "resources": ["krn:iam:t1::user/*"]}
    ]})
    .to_string()
}

fn policy_exists(addr: SocketAddr, name: &str) -> bool {
    let list = get(addr, "/api/v1/policies?tenantID=t1&pageSize=100");
    assert_eq!(
        list.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&list.body)
    );
    list.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == name)
}

#[test]
fn a_chunk_size_near_2_pow_64_is_refused_and_nothing_after_it_is_served() {
    let dir = support::TempDir::new();
    let svc = start(&dir);
    let inner = policy("smuggled");
    let outer = policy("carrier");
    for size in ["fffffffffffffff6", "ffffffffffffffff", "10000000000000000"] {
        let raw = format!(
            "POST /api/v1/policies HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\n\r\n{size}\r\n{outer}\r\n0\r\n\r\n\
             POST /api/v1/policies HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{inner}",
            inner.len()
        );
        let answer = exchange(svc.addr, raw.as_bytes());
        let got = statuses(&answer);
        assert_eq!(
            got.len(),
            1,
            "one answer, then the connection closes: {answer}"
        );
        assert!(
            (400..500).contains(&got[0]),
            "chunk size {size} must be refused: {answer}"
        );
    }
    assert!(!policy_exists(svc.addr, "carrier"));
    assert!(!policy_exists(svc.addr, "smuggled"));
    // The service is fine and writes through a well-framed request.
    assert_eq!(
        post_json(
            svc.addr,
            "/api/v1/policies",
            &serde_json::from_str(&policy("plain")).unwrap()
        )
        .status,
        201
    );
    assert!(policy_exists(svc.addr, "plain"));
}

fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn gauge(addr: SocketAddr, name: &str) -> i64 {
    let text = String::from_utf8(get(addr, "/metrics").body).unwrap();
    let needle = format!("name=\"{name}\"");
    text.lines()
        .filter(|l| !l.starts_with('#') && l.contains(&needle))
        .find_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .map(|v| v as i64)
        .unwrap_or_else(|| panic!("no gauge {name} in {text}"))
}

#[test]
fn declared_content_lengths_reserve_no_memory_before_the_bytes_arrive() {
    let dir = support::TempDir::new();
    let svc = start(&dir);
    let before = resident_kib(svc.child.id());
    let mut held = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(svc.addr).unwrap();
        s.write_all(
            b"POST /api/v1/policies HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
              Content-Length: 1048576\r\n\r\n{\"name\": \"slow\", \"tenantID\": \"t1\", \"x\": \"",
        )
        .unwrap();
        held.push(s);
    }
    // Every connection is open and its 41 body bytes have arrived.
    let deadline = Instant::now() + Duration::from_secs(10);
    while gauge(svc.addr, "http_open_connections") < 301 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let in_flight = gauge(svc.addr, "http_body_bytes_in_flight");
    let during = resident_kib(svc.child.id());
    let _ = writeln!(
        std::io::stderr(),
        "measured: 300 connections declaring 1 MiB each: resident {before} KiB -> {during} KiB, \
         body bytes held {in_flight}"
    );
    assert!(in_flight <= 300 * 64, "body bytes held: {in_flight}");
    // The old layer reserved the declared length: +300 MiB here.
    assert!(
        during < before + 64 * 1024,
        "resident {before} KiB -> {during} KiB"
    );
    drop(held);
    assert_eq!(get(svc.addr, "/health").status, 200);
}

#[test]
fn unicode_whitespace_never_frames_a_body() {
    let dir = support::TempDir::new();
    let svc = start(&dir);
    let body = policy("unicode");
    for framing in [
        format!("Content-Length: {}\u{a0}", body.len()),
        format!("Content-Length: \u{a0}{}", body.len()),
        "Transfer-Encoding: chunked\u{a0}".to_string(),
        "Transfer-Encoding: \u{2003}chunked".to_string(),
    ] {
        let chunked = framing.contains("chunked");
        let payload = if chunked {
            format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len())
        } else {
            body.clone()
        };
        let raw = format!(
            "POST /api/v1/policies HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             {framing}\r\n\r\n{payload}"
        );
        let answer = exchange(svc.addr, raw.as_bytes());
        assert_eq!(statuses(&answer), vec![400], "{framing:?}: {answer}");
    }
    assert!(!policy_exists(svc.addr, "unicode"));
}

#[test]
fn a_request_needs_exactly_one_host_and_a_path_without_empty_segments() {
    let dir = support::TempDir::new();
    let svc = start(&dir);
    for raw in [
        "GET /health HTTP/1.1\r\n\r\n",
        "GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ] {
        let answer = exchange(svc.addr, raw.as_bytes());
        assert_eq!(statuses(&answer), vec![400], "{raw:?}: {answer}");
        assert!(
            answer.contains("Host"),
            "the message names the problem: {answer}"
        );
    }
    let body = policy("hostless");
    let raw = format!(
        "POST /api/v1/policies HTTP/1.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(statuses(&exchange(svc.addr, raw.as_bytes())), vec![400]);
    assert!(!policy_exists(svc.addr, "hostless"));

    for path in [
        "//health",
        "/health//",
        "//api/v1/policies",
        "/api//v1/policies",
        "/api/v1//policies",
    ] {
        let r = get(svc.addr, path);
        assert_eq!(r.status, 404, "{path}");
        assert!(r.json()["message"].is_string());
    }
    assert_eq!(get(svc.addr, "/health").status, 200);
    assert_eq!(get(svc.addr, "/health/").status, 200);
}
