#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The connection layer (`kaa::http::server`) over real sockets bound to port 0: keep-alive bursts,
//! body limits, protocol errors, panics, pipelining, HEAD, `100 Continue`, slow clients, graceful
//! shutdown, request ids, the connection limit and the access log. No sleeps wait for readiness:
//! the server queues connections from `bind` on, and handlers signal over channels.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex, Once};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use kaa::http::error::ErrorStyle;
use kaa::http::message::{Request, Response};
use kaa::http::server::{
    Handler, Server, ServerConfig, ServerStats, ShutdownHandle, ShutdownReport,
};

const GRACE: Duration = Duration::from_secs(5);
/// Far beyond any healthy run: a bound that fails a test only when what it waits for never comes.
const LIVENESS: Duration = Duration::from_secs(30);

/// A server running on its own thread; shut down and joined on drop.
struct Running {
    addr: SocketAddr,
    handle: ShutdownHandle,
    stats: ServerStats,
    thread: Option<JoinHandle<ShutdownReport>>,
}

impl Running {
    fn start(config: ServerConfig, handler: impl Handler) -> Running {
        let server = Server::bind(config, Arc::new(handler)).unwrap();
        let addr = server.local_addr();
        let handle = server.shutdown_handle();
        let stats = server.stats();
        let thread = thread::spawn(move || server.run(GRACE));
        Running {
            addr,
            handle,
            stats,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> ShutdownReport {
        self.handle.shutdown();
        self.thread.take().unwrap().join().unwrap()
    }

    fn client(&self) -> Client {
        Client::connect(self.addr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Echoes method, path, body and request id; `/sleep/N` sleeps N ms, `/panic` panics.
fn echo(req: Request) -> Response {
    if let Some(ms) = req.path.strip_prefix("/sleep/") {
        thread::sleep(Duration::from_millis(ms.parse().unwrap()));
    }
    if req.path == "/panic" {
        panic!("secret internal detail");
    }
    Response::json(
        200,
        &serde_json::json!({
            "method": req.method,
            "path": req.path,
            "query": req.query,
            "body": String::from_utf8_lossy(&req.body),
            "id": req.request_id,
        }),
    )
}

fn config() -> ServerConfig {
    ServerConfig::default()
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// A JSON error of the connection layer: status, `{"message"}`, JSON type, `Connection: close`.
    fn assert_error(&self, status: u16) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        assert!(self.json()["message"].is_string(), "{self:?}");
        assert_eq!(self.header("connection"), Some("close"), "{self:?}");
        assert!(self.header("x-request-id").is_some(), "{self:?}");
    }

    /// A head hyper could not parse: answered by hyper itself, with the status and
    /// `Connection: close` but no body (docs/DECISIONS.md, 2026-12-07).
    fn assert_refused(&self, status: u16) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.header("connection"), Some("close"), "{self:?}");
        assert!(self.body.is_empty(), "{self:?}");
    }
}

/// A raw HTTP/1.1 client over one connection.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    fn get(&mut self, path: &str) -> Resp {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        self.response()
    }

    fn response(&mut self) -> Resp {
        self.try_response(false)
            .unwrap()
            .expect("connection closed before a response")
    }

    fn head_response(&mut self) -> Resp {
        self.try_response(true)
            .unwrap()
            .expect("connection closed before a response")
    }

    /// The next response; `None` when the connection ends before its first byte.
    fn try_response(&mut self, head_only: bool) -> io::Result<Option<Resp>> {
        loop {
            let mut slots = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut slots);
            if let httparse::Status::Complete(len) = parsed.parse(&self.buf).unwrap() {
                let status = parsed.code.unwrap();
                let headers: Vec<(String, String)> = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8(h.value.to_vec()).unwrap(),
                        )
                    })
                    .collect();
                self.buf.drain(..len);
                let length: usize = if head_only || status < 200 || status == 204 {
                    0
                } else {
                    headers
                        .iter()
                        .find(|(n, _)| n == "content-length")
                        .map(|(_, v)| v.parse().unwrap())
                        .expect("no content-length")
                };
                while self.buf.len() < length {
                    if self.fill()? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
                let body = self.buf.drain(..length).collect();
                return Ok(Some(Resp {
                    status,
                    headers,
                    body,
                }));
            }
            if self.fill()? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
        }
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Whether the server closed the connection (end of stream or reset) with nothing more sent.
    fn closed(&mut self) -> bool {
        match self.try_response(false) {
            Ok(None) => true,
            Ok(Some(resp)) => panic!("unexpected response {resp:?}"),
            Err(e) => e.kind() != io::ErrorKind::WouldBlock && e.kind() != io::ErrorKind::TimedOut,
        }
    }
}

#[test]
fn a_burst_of_64_keep_alive_connections_is_answered_in_every_round() {
    let server = Running::start(config(), |req: Request| {
        thread::sleep(Duration::from_millis(1));
        echo(req)
    });
    // All 64 connections are open before any of them sends a request.
    let clients: Vec<Client> = (0..64).map(|_| server.client()).collect();
    let barrier = Arc::new(Barrier::new(clients.len()));
    let threads: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut client)| {
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                for round in 0..3 {
                    barrier.wait();
                    let path = format!("/c{i}/r{round}");
                    let resp = client.get(&path);
                    assert_eq!(resp.status, 200, "connection {i} round {round}");
                    assert_eq!(resp.json()["path"], path.as_str());
                    assert_eq!(resp.header("connection"), Some("keep-alive"));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // The same 64 connections served all three rounds.
    assert_eq!(server.stats.connections_total(), 64);
    assert_eq!(server.stats.requests_total(), 192);
    assert_eq!(server.stats.workers(), 16);
}

#[test]
fn workers_bound_running_handlers_but_never_connection_io() {
    use std::sync::Condvar;
    use std::sync::atomic::AtomicUsize;

    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let started_tx = Mutex::new(started_tx);
    let handler = {
        let (gate, running, most) = (Arc::clone(&gate), Arc::clone(&running), Arc::clone(&most));
        move |req: Request| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            started_tx.lock().unwrap().send(()).unwrap();
            let mut open = gate.0.lock().unwrap();
            while !*open {
                open = gate.1.wait(open).unwrap();
            }
            drop(open);
            running.fetch_sub(1, Ordering::SeqCst);
            echo(req)
        }
    };
    let server = Running::start(
        ServerConfig {
            workers: 2,
            ..config()
        },
        handler,
    );
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let mut client = server.client();
            thread::spawn(move || client.get(&format!("/held/{i}")).status)
        })
        .collect();
    // Both slots are taken and held.
    started_rx.recv().unwrap();
    started_rx.recv().unwrap();
    assert_eq!(server.stats.busy_workers(), 2);
    // The connection layer still answers what needs no handler, at once.
    let mut other = server.client();
    other.send(b"BROKEN\r\n\r\n");
    other.response().assert_refused(400);

    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
    for client in clients {
        assert_eq!(client.join().unwrap(), 200);
    }
    assert_eq!(most.load(Ordering::SeqCst), 2);
    assert_eq!(server.stats.busy_workers(), 0);
    assert_eq!(server.stats.queued_requests(), 0);
}

#[test]
fn bodies_over_the_limit_get_413_with_content_length_chunked_and_expect() {
    let server = Running::start(config(), echo);
    let ten_mib = 10 * 1024 * 1024;

    // Content-Length: answered without reading the body; the client may still be sending it.
    let mut client = server.client();
    client.send(
        format!("POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: {ten_mib}\r\n\r\n").as_bytes(),
    );
    let mut writer = client.stream.try_clone().unwrap();
    let sender = thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..160 {
            if writer.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    client.response().assert_error(413);
    assert!(client.closed());
    sender.join().unwrap();

    // Chunked: decoded until past the limit.
    let mut client = server.client();
    client.send(b"POST /big HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    let mut writer = client.stream.try_clone().unwrap();
    let sender = thread::spawn(move || {
        let mut chunk = format!("{:x}\r\n", 64 * 1024).into_bytes();
        chunk.extend(vec![b'x'; 64 * 1024]);
        chunk.extend_from_slice(b"\r\n");
        for _ in 0..160 {
            if writer.write_all(&chunk).is_err() {
                return;
            }
        }
        let _ = writer.write_all(b"0\r\n\r\n");
    });
    client.response().assert_error(413);
    assert!(client.closed());
    sender.join().unwrap();

    // Expect: 100-continue with a body over the limit: 413 straight away, never 100.
    let mut client = server.client();
    client.send(
        format!(
            "POST /big HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: {ten_mib}\r\n\r\n"
        )
        .as_bytes(),
    );
    client.response().assert_error(413);
    assert!(client.closed());

    // A body at the limit is accepted.
    let mut client = server.client();
    let body = vec![b'y'; 1024 * 1024];
    client.send(
        format!(
            "POST /ok HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    client.send(&body);
    let resp = client.response();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["body"].as_str().unwrap().len(), body.len());
}

#[test]
fn protocol_errors_get_json_answers_and_a_closed_connection() {
    let server = Running::start(config(), echo);
    // Heads that do not parse: hyper answers them itself, without a body.
    let refused: &[(&str, u16)] = &[
        ("GARBAGE\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: t\r\nX: a\rb\r\n\r\n", 400),
        (
            "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n",
            400,
        ),
        // RFC 9112 §6.3: only digits frame a body; Unicode whitespace is not trimmed.
        (
            "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\u{a0}\r\n\r\nab",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\u{a0}\r\n\r\n2\r\nab\r\n0\r\n\r\n",
            400,
        ),
        ("GET / HTTP/2.0\r\nHost: t\r\n\r\n", 400),
        ("GET / HTTP/1.7\r\nHost: t\r\n\r\n", 400),
    ];
    for (raw, status) in refused {
        let mut client = server.client();
        client.send(raw.as_bytes());
        let resp = client.response();
        resp.assert_refused(*status);
        assert!(client.closed(), "{raw:?}");
    }
    // What the layer refuses after the head: JSON with a message.
    let cases: &[(&str, u16)] = &[
        ("GET nopath HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (
            "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            501,
        ),
        (
            "POST / HTTP/1.1\r\nHost: t\r\nExpect: magic\r\nContent-Length: 1\r\n\r\n",
            417,
        ),
    ];
    for (raw, status) in cases {
        let mut client = server.client();
        client.send(raw.as_bytes());
        let resp = client.response();
        assert_eq!(resp.status, *status, "{raw:?}: {resp:?}");
        resp.assert_error(*status);
        assert!(client.closed(), "{raw:?}");
    }

    // Content-Length and chunked together: chunked frames the body and the connection closes
    // after the answer (RFC 9112 §6.3), so nothing after it can be read as another request.
    let mut client = server.client();
    client.send(
        b"POST /both HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let resp = client.response();
    assert_eq!(resp.json()["body"], "abc");
    assert!(
        client.closed(),
        "a second request was read after an ambiguous body"
    );

    // Headers over max_header_bytes (16 KiB): 431.
    let mut client = server.client();
    let big = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "v".repeat(20 * 1024)
    );
    client.send(big.as_bytes());
    client.response().assert_refused(431);
    assert!(client.closed());

    // The server is still fine.
    assert_eq!(server.client().get("/after").status, 200);
}

#[test]
fn a_panicking_handler_gives_a_plain_500_and_the_server_goes_on() {
    let server = Running::start(config(), echo);
    let mut client = server.client();
    client.send(b"GET /panic HTTP/1.1\r\nHost: t\r\nX-Request-Id: panic-1\r\n\r\n");
    let resp = client.response();
    assert_eq!(resp.status, 500);
    assert_eq!(
        resp.json(),
        serde_json::json!({"message": "internal error"})
    );
    assert_eq!(resp.header("x-request-id"), Some("panic-1"));
    assert!(!String::from_utf8_lossy(&resp.body).contains("secret"));
    assert_eq!(server.stats.handler_panics(), 1);

    let resp = server.client().get("/fine");
    assert_eq!(resp.status, 200);
    // The connection that saw the panic is intact too.
    assert_eq!(client.get("/again").status, 200);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = Running::start(config(), echo);
    let mut client = server.client();
    client.send(
        b"GET /sleep/50 HTTP/1.1\r\nHost: t\r\n\r\n\
          POST /second HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello\
          HEAD /third HTTP/1.1\r\nHost: t\r\n\r\n\
          POST /fourth HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n\
          GET /fifth?x=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let first = client.response();
    assert_eq!(first.json()["path"], "/sleep/50");
    let second = client.response();
    assert_eq!(second.json()["path"], "/second");
    assert_eq!(second.json()["body"], "hello");
    let third = client.head_response();
    assert_eq!(third.status, 200);
    let fourth = client.response();
    assert_eq!(fourth.json()["path"], "/fourth");
    assert_eq!(fourth.json()["body"], "ok");
    let fifth = client.response();
    assert_eq!(fifth.json()["query"], "x=1");
    assert_eq!(fifth.header("connection"), Some("close"));
    assert!(client.closed());
}

#[test]
fn head_is_answered_without_a_body() {
    let server = Running::start(config(), echo);
    let mut client = server.client();
    client.send(b"GET /thing HTTP/1.1\r\nHost: t\r\nX-Request-Id: same\r\n\r\n");
    let get = client.response();
    client.send(b"HEAD /thing HTTP/1.1\r\nHost: t\r\nX-Request-Id: same\r\n\r\n");
    let head = client.head_response();
    assert_eq!(head.status, 200);
    let get_len: usize = get.header("content-length").unwrap().parse().unwrap();
    let head_len: usize = head.header("content-length").unwrap().parse().unwrap();
    // Same shape as the GET body (the method differs by one character).
    assert_eq!(head_len, get_len + 1);
    assert_eq!(head.header("content-type"), Some("application/json"));
    // No body bytes were sent: the next response on the connection parses cleanly.
    let next = client.get("/next");
    assert_eq!(next.status, 200);
    assert_eq!(next.json()["path"], "/next");
}

#[test]
fn expect_100_continue_for_a_small_body() {
    let server = Running::start(config(), echo);
    let mut client = server.client();
    client.send(
        b"POST /upload HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    );
    let interim = client.response();
    assert_eq!(interim.status, 100);
    client.send(b"hello");
    let resp = client.response();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["body"], "hello");

    // Chunked with Expect on the same connection.
    client.send(
        b"POST /upload HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert_eq!(client.response().status, 100);
    client.send(b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n");
    let resp = client.response();
    assert_eq!(resp.json()["body"], "hello world");
}

#[test]
fn slow_and_silent_clients_are_cut_off_without_blocking_others() {
    let server = Running::start(
        ServerConfig {
            read_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(300),
            ..config()
        },
        echo,
    );
    // Slowloris: a header line every 50 ms, never the end of the head, for as long as the
    // connection takes them: only the server's cut ends it.
    let mut slow = server.client();
    slow.send(b"GET / HTTP/1.1\r\nHost: t\r\n");
    let stop = Arc::new(AtomicBool::new(false));
    let mut writer = slow.stream.try_clone().unwrap();
    let trickle = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            for i in 0.. {
                if stop.load(Ordering::SeqCst)
                    || writer
                        .write_all(format!("X-{i}: v\r\n").as_bytes())
                        .is_err()
                {
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
        })
    };
    // A silent client: connected, never sends anything.
    let mut silent = server.client();

    // Others are served meanwhile.
    let mut other = server.client();
    for _ in 0..3 {
        assert_eq!(other.get("/other").status, 200);
    }

    // Cut off once read_timeout has passed since its first byte (hyper's header timer closes
    // the connection without an answer) while it still sends: nothing else would end it.
    slow.stream.set_read_timeout(Some(LIVENESS)).unwrap();
    assert!(slow.closed(), "slow client not cut off");
    stop.store(true, Ordering::SeqCst);
    trickle.join().unwrap();
    assert!(silent.closed(), "idle connection not closed");
}

#[test]
fn graceful_shutdown_finishes_requests_in_flight_and_refuses_new_ones() {
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let started_tx = Mutex::new(started_tx);
    let server = Running::start(config(), move |req: Request| {
        if req.path == "/slow" {
            started_tx.lock().unwrap().send(()).unwrap();
            thread::sleep(Duration::from_millis(300));
        }
        echo(req)
    });
    let mut idle = server.client();
    assert_eq!(idle.get("/warm").status, 200);

    let mut busy = server.client();
    busy.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n");
    started_rx.recv().unwrap();
    let addr = server.addr;
    server.handle.shutdown();

    // A new connection is refused, or accepted and closed without an answer.
    if let Ok(stream) = TcpStream::connect(addr) {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut late = Client {
            stream,
            buf: Vec::new(),
        };
        let _ = late
            .stream
            .write_all(b"GET /late HTTP/1.1\r\nHost: t\r\n\r\n");
        assert!(late.closed(), "a connection made after shutdown was served");
    }

    let resp = busy.response();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["path"], "/slow");
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(busy.closed());
    assert!(idle.closed(), "idle keep-alive connection left open");

    let report = server.stop();
    assert_eq!(report.cut_off, 0, "{report:?}");
    assert!(report.finished >= 1, "{report:?}");
}

#[test]
fn shutdown_cuts_off_what_outlives_the_grace_period() {
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let started_tx = Mutex::new(started_tx);
    // The handler holds on until the test lets it go, after the server has returned.
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let server = Server::bind(
        config(),
        Arc::new(move |req: Request| {
            started_tx.lock().unwrap().send(()).unwrap();
            let _ = release_rx.lock().unwrap().recv_timeout(LIVENESS);
            echo(req)
        }),
    )
    .unwrap();
    let addr = server.local_addr();
    let handle = server.shutdown_handle();
    let runner = thread::spawn(move || server.run(Duration::from_millis(200)));
    let mut client = Client::connect(addr);
    client.send(b"GET /stuck HTTP/1.1\r\nHost: t\r\n\r\n");
    started_rx.recv().unwrap();
    handle.shutdown();
    // `run` returns while the handler is still held: the grace period ended it, not the handler.
    let report = runner.join().unwrap();
    assert_eq!(report.cut_off, 1, "{report:?}");
    assert!(client.closed());
    release_tx.send(()).unwrap();
}

#[test]
fn request_ids_are_echoed_when_valid_and_generated_otherwise() {
    let server = Running::start(config(), echo);
    let mut client = server.client();
    let with_id = |client: &mut Client, id: &str| {
        client
            .send(format!("GET /id HTTP/1.1\r\nHost: t\r\nX-Request-Id: {id}\r\n\r\n").as_bytes());
        client.response()
    };
    let resp = with_id(&mut client, "abc-DEF_1.2");
    assert_eq!(resp.header("x-request-id"), Some("abc-DEF_1.2"));
    assert_eq!(resp.json()["id"], "abc-DEF_1.2");

    let valid = |id: &str| {
        !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    let mut generated = Vec::new();
    for bad in [
        "x".repeat(65),
        "bad!id".to_string(),
        "a/b".to_string(),
        String::new(),
    ] {
        let resp = with_id(&mut client, &bad);
        let id = resp.header("x-request-id").unwrap().to_string();
        assert_ne!(id, bad);
        assert!(valid(&id), "{id}");
        assert_eq!(resp.json()["id"], id.as_str());
        generated.push(id);
    }
    for _ in 0..2 {
        let resp = client.get("/none");
        generated.push(resp.header("x-request-id").unwrap().to_string());
    }
    let mut unique = generated.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), generated.len(), "{generated:?}");
}

#[test]
fn connections_beyond_max_connections_get_503() {
    let server = Running::start(
        ServerConfig {
            max_connections: 2,
            ..config()
        },
        echo,
    );
    let mut first = server.client();
    let mut second = server.client();
    assert_eq!(first.get("/1").status, 200);
    assert_eq!(second.get("/2").status, 200);
    assert_eq!(server.stats.open_connections(), 2);

    let mut third = server.client();
    third.send(b"GET /3 HTTP/1.1\r\nHost: t\r\n\r\n");
    let resp = third.response();
    resp.assert_error(503);
    assert!(third.closed());
    assert_eq!(server.stats.connections_rejected(), 1);

    assert_eq!(first.get("/1").status, 200);
    assert_eq!(second.get("/2").status, 200);
}

#[test]
fn http_1_0_keep_alive_and_connection_close_are_honoured() {
    let server = Running::start(config(), echo);

    let mut client = server.client();
    client.send(b"GET /a HTTP/1.0\r\n\r\n");
    let resp = client.response();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(client.closed());

    let mut client = server.client();
    for _ in 0..2 {
        client.send(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let resp = client.response();
        assert_eq!(resp.header("connection"), Some("keep-alive"));
    }

    let mut client = server.client();
    client.send(b"GET /a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let resp = client.response();
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(resp.header("date").is_some());
    assert!(client.closed());
}

#[test]
fn handlers_get_a_stack_deep_enough_for_serde_json() {
    let server = Running::start(config(), |req: Request| {
        match serde_json::from_slice::<serde_json::Value>(&req.body) {
            Ok(_) => Response::new(204),
            Err(e) => ErrorStyle::Message.refuse(400, &e.to_string()),
        }
    });
    let mut client = server.client();
    for (depth, status) in [(120, 204), (100_000, 400)] {
        let body = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        client.send(
            format!(
                "POST /deep HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        client.send(body.as_bytes());
        let resp = client.response();
        assert_eq!(resp.status, status, "depth {depth}: {resp:?}");
        if status == 204 {
            assert_eq!(resp.header("content-length"), None);
        }
    }
}

static ACCESS_LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.target() == "access"
    }
    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            ACCESS_LOG.lock().unwrap().push(record.args().to_string());
        }
    }
    fn flush(&self) {}
}

#[test]
fn the_access_log_has_one_line_per_exchange_without_query_strings() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        log::set_logger(&Capture).unwrap();
        log::set_max_level(log::LevelFilter::Info);
    });
    let server = Running::start(config(), echo);
    let mut client = server.client();
    client.send(
        b"GET /logged/path?token=hunter2 HTTP/1.1\r\nHost: t\r\nX-Request-Id: log-check-1\r\n\r\n",
    );
    assert_eq!(client.response().status, 200);
    // The connection's thread logs before it reads the next request.
    assert_eq!(client.get("/second").status, 200);
    let lines = ACCESS_LOG.lock().unwrap();
    let line = lines
        .iter()
        .find(|l| l.contains("id=log-check-1"))
        .expect("no access log line");
    assert!(line.contains("method=GET"), "{line}");
    assert!(line.contains("path=/logged/path "), "{line}");
    assert!(line.contains("status=200"), "{line}");
    assert!(line.contains("remote=127.0.0.1:"), "{line}");
    assert!(line.contains(" bytes="), "{line}");
    assert!(line.contains(" us="), "{line}");
    assert!(!line.contains("hunter2"), "{line}");
}

/// What the handler saw of each request on a connection, by the client's port.
type Seen = Arc<Mutex<Vec<(u16, String)>>>;

fn recording(seen: &Seen) -> impl Handler + use<> {
    let seen = Arc::clone(seen);
    move |req: Request| {
        let port = req.remote.map_or(0, |r| r.port());
        let line = format!(
            "{} {}?{} {:?}",
            req.method,
            req.path,
            req.query,
            String::from_utf8_lossy(&req.body)
        );
        seen.lock().unwrap().push((port, line));
        Response::new(204)
    }
}

/// Sends `stream` and a last request that asks to close on one connection, in the pieces `cuts`
/// makes, pausing between pieces so that the server reads them apart; returns the requests the
/// handler saw and the statuses answered.
fn replay(server: &Running, seen: &Seen, stream: &[u8], cuts: &[usize]) -> (Vec<String>, Vec<u16>) {
    let mut stream = stream.to_vec();
    stream.extend_from_slice(b"GET /end HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let stream = &stream[..];
    seen.lock().unwrap().clear();
    let mut client = server.client();
    client.stream.set_nodelay(true).unwrap();
    let port = client.stream.local_addr().unwrap().port();
    let mut at = 0;
    for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
        let cut = cut.clamp(at, stream.len());
        if cut > at {
            let _ = client.stream.write_all(&stream[at..cut]);
            thread::sleep(Duration::from_millis(2));
        }
        at = cut;
    }
    let mut statuses = Vec::new();
    while let Ok(Some(resp)) = client.try_response(false) {
        statuses.push(resp.status);
    }
    let lines = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| *p == port)
        .map(|(_, l)| l.clone())
        .collect();
    (lines, statuses)
}

#[test]
fn the_same_bytes_split_anywhere_make_the_same_requests() {
    let seen: Seen = Arc::default();
    // A chunk that declares 2^64 - 10 bytes waits for them until the read timeout: keep it short.
    let server = Running::start(
        ServerConfig {
            read_timeout: Duration::from_millis(300),
            ..config()
        },
        recording(&seen),
    );
    let streams: &[&[u8]] = &[
        b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nPOST /b?x=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhelloGET /c HTTP/1.1\r\nHost: t\r\n\r\n",
        b"POST /chunks HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nT: v\r\n\r\nGET /next HTTP/1.1\r\nHost: t\r\n\r\n",
        b"POST /smuggle HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffff6\r\nabc\r\n0\r\n\r\nGET /hidden HTTP/1.1\r\nHost: t\r\n\r\n",
        b"POST /both HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\nGET /after HTTP/1.1\r\nHost: t\r\n\r\n",
        b"POST /e HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nokGET /f HTTP/1.1\r\nHost: t\r\n\r\n",
    ];
    // A small deterministic generator: the split points differ per round, the run does not.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |bound: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % bound as u64) as usize
    };
    for stream in streams {
        let (whole, whole_statuses) = replay(&server, &seen, stream, &[]);
        assert!(
            !whole.iter().any(|l| l.contains("/hidden")),
            "bytes after a refused body were served: {whole:?}"
        );
        for _ in 0..12 {
            let mut cuts: Vec<usize> = (0..1 + next(6)).map(|_| next(stream.len())).collect();
            cuts.sort_unstable();
            let (split, split_statuses) = replay(&server, &seen, stream, &cuts);
            assert_eq!(
                split,
                whole,
                "cuts {cuts:?} of {:?}",
                String::from_utf8_lossy(stream)
            );
            assert_eq!(split_statuses, whole_statuses, "cuts {cuts:?}");
        }
    }
}
