//! Run a service binary as a user would: environment in, stderr log watched, HTTP on loopback.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Service {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

/// Environment variables of the parent that would leak into the service's configuration.
fn scrub(cmd: &mut Command) {
    for (k, _) in std::env::vars() {
        if k.starts_with("KAA_")
            || k == "APP_CONFIG_PATH"
            || k == "SERVER_PORT"
            || k.starts_with("SERVICE_")
        {
            cmd.env_remove(k);
        }
    }
}

/// A command for `bin` with a clean configuration environment, run in `cwd`.
pub fn command(bin: &str, cwd: &std::path::Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(bin);
    scrub(&mut cmd);
    cmd.current_dir(cwd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Start and wait for the "listening on" line, logged once the service is ready (or the process
/// ending).
pub fn start(
    bin: &str,
    cwd: &std::path::Path,
    env: &[(&str, &str)],
) -> Result<Service, (ExitStatus, Vec<String>)> {
    start_until(bin, cwd, env, " listening on ")
}

/// Start and wait for the first log line holding `marker` followed by the address (" listening
/// on " once ready, " accepting on " as soon as the port is bound), or the process ending.
pub fn start_until(
    bin: &str,
    cwd: &std::path::Path,
    env: &[(&str, &str)],
    marker: &'static str,
) -> Result<Service, (ExitStatus, Vec<String>)> {
    let mut cmd = command(bin, cwd, env);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let log2 = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split(marker).nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                let _ = tx.send(addr);
            }
            log2.lock().unwrap().push(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(addr) = rx.recv_timeout(Duration::from_millis(20)) {
            let mut addr: SocketAddr = addr.parse().unwrap();
            if addr.ip().is_unspecified() {
                addr.set_ip([127, 0, 0, 1].into());
            }
            return Ok(Service { child, addr, log });
        }
        if let Some(status) = child.try_wait().unwrap() {
            std::thread::sleep(Duration::from_millis(50));
            let lines = log.lock().unwrap().clone();
            return Err((status, lines));
        }
        assert!(
            Instant::now() < deadline,
            "service did not start: {:?}",
            log.lock().unwrap()
        );
    }
}

/// Run to completion and return (status, stderr lines).
pub fn run(
    bin: &str,
    cwd: &std::path::Path,
    env: &[(&str, &str)],
    args: &[&str],
) -> (ExitStatus, String, String) {
    let out = command(bin, cwd, env).args(args).output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Service {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Send SIGTERM and wait for the exit status (bounded).
    pub fn terminate(self, within: Duration) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(within)
    }

    /// Send a signal by name (`TERM`, `INT`) and return at once.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
    }

    /// Wait for the exit status (bounded: killed and a panic past `within`).
    pub fn wait_exit(mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("service did not stop within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 client response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One request on a fresh connection (`Connection: close`), with a read timeout.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    // A server may answer (413) before the whole body is sent and close: ignore write errors.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .or_else(|e| if raw.is_empty() { Err(e) } else { Ok(0) })?;
    parse(&raw).ok_or_else(|| {
        std::io::Error::other(format!("bad response: {}", String::from_utf8_lossy(&raw)))
    })
}

fn parse(raw: &[u8]) -> Option<Resp> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Some(Resp {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    })
}

/// The timeout of [`call_json`] and [`call_json_as`]: ample for a service on loopback.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A call to a JSON API: `Content-Type: application/json`, `body` serialized (no body when
/// `None`), [`CALL_TIMEOUT`]. Panics, naming the request, when there is no response.
pub fn call_json(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Resp {
    call_json_as(addr, method, path, None, body)
}

/// [`call_json`] with `Authorization: Bearer <token>` when a token is given.
pub fn call_json_as(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Resp {
    call_json_with(addr, method, path, token, &[], body, CALL_TIMEOUT)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// The general JSON call: `Content-Type: application/json`, then the bearer `token` if any,
/// then `headers`; `body` serialized (no body when `None`). I/O errors (a refused connection,
/// a timeout) are returned, for tests that expect them.
pub fn call_json_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&Value>,
    timeout: Duration,
) -> std::io::Result<Resp> {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut h = vec![("Content-Type", "application/json")];
    h.extend(bearer.as_deref().map(|b| ("Authorization", b)));
    h.extend_from_slice(headers);
    let text = body.map(Value::to_string).unwrap_or_default();
    request(addr, method, path, &h, text.as_bytes(), timeout)
}

pub fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, &[], b"", Duration::from_secs(10)).unwrap()
}

pub fn post_json(addr: SocketAddr, path: &str, body: &Value) -> Resp {
    call_json(addr, "POST", path, Some(body))
}
