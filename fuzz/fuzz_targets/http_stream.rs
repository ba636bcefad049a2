//! Fuzz target: raw HTTP/1.1 byte streams sent to the real connection layer (hyper framing and
//! the project's checks around it) on a loopback socket, once whole and once split at points the
//! input chooses. Input: one byte `n` (cuts, 0-7), `n` little-endian u16 cut positions, then the
//! stream. One connection's bytes must always make the same requests, whatever the split: if
//! they did not, a front proxy that reads them whole and this server could disagree about where
//! a request ends (request smuggling). Nothing may panic or hang.

#![no_main]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use kaa::http::message::{Request, Response};
use kaa::http::server::{Server, ServerConfig};
use libfuzzer_sys::fuzz_target;

type Seen = Arc<Mutex<Vec<String>>>;

fn server() -> &'static (SocketAddr, Seen) {
    static S: OnceLock<(SocketAddr, Seen)> = OnceLock::new();
    S.get_or_init(|| {
        let seen: Seen = Arc::default();
        let record = Arc::clone(&seen);
        let config = ServerConfig {
            read_timeout: Duration::from_millis(200),
            idle_timeout: Duration::from_millis(200),
            write_timeout: Duration::from_millis(500),
            ..ServerConfig::default()
        };
        let server = Server::bind(
            config,
            Arc::new(move |req: Request| {
                record.lock().unwrap().push(format!(
                    "{} {}?{} {:?}",
                    req.method, req.path, req.query, req.body
                ));
                Response::new(204)
            }),
        )
        .unwrap();
        let addr = server.local_addr();
        std::thread::spawn(move || server.run(Duration::from_millis(100)));
        (addr, seen)
    })
}

/// The requests the handler saw for `stream` sent in the pieces `cuts` makes.
fn replay(stream: &[u8], cuts: &[usize]) -> Vec<String> {
    let (addr, seen) = server();
    seen.lock().unwrap().clear();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut at = 0;
    for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
        let cut = cut.clamp(at, stream.len());
        if cut > at {
            if s.write_all(&stream[at..cut]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        at = cut;
    }
    // Read until the server closes (its idle or read timer ends the connection at the latest).
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
    seen.lock().unwrap().clone()
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 8);
    if rest.len() < 2 * n {
        return;
    }
    let (cut_bytes, stream) = rest.split_at(2 * n);
    let mut cuts: Vec<usize> = cut_bytes
        .chunks(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();
    let whole = replay(stream, &[]);
    let split = replay(stream, &cuts);
    assert_eq!(whole, split, "cuts {cuts:?}");
});
