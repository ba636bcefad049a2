//! The bare server of the HTTP bench (scripts/bench-http.sh): `kaa::http::server` answering every
//! request with the same 60-byte JSON, so the figures measure the connection layer alone.
//!
//! `cargo run --release --example bare_server -- [ADDR]` (default `127.0.0.1:8089`); prints
//! `listening on ADDR` once bound and serves until killed. `BENCH_WORKERS` sets the handler slots.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kaa::http::message::{Request, Response};
use kaa::http::server::{Server, ServerConfig};

const BODY: &[u8] = br#"{"data":{"allowed":true,"reason":"allow","policy":"p-0001"}}"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bind: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8089".into())
        .parse()?;
    let workers = match std::env::var("BENCH_WORKERS") {
        Ok(n) => n.parse()?,
        Err(_) => ServerConfig::default().workers,
    };
    let config = ServerConfig {
        bind,
        workers,
        ..ServerConfig::default()
    };
    let server = Server::bind(
        config,
        Arc::new(|_req: Request| Response::text(200, "application/json", BODY)),
    )?;
    let mut out = std::io::stdout();
    writeln!(out, "listening on {}", server.local_addr())?;
    out.flush()?;
    server.run(Duration::from_secs(1));
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_body_is_60_bytes() {
        assert_eq!(super::BODY.len(), 60);
    }
}
