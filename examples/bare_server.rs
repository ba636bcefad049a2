//! The bare server of the HTTP bench (scripts/bench-http.sh): `kaa::http::server` answering every
//! request with the same 60-byte JSON, so the figures measure the connection layer alone.
//!
//! `cargo run --release --example bare_server -- [ADDR]` (default `127.0.0.1:8089`); prints
//! `listening on ADDR` once bound and serves until killed. `BENCH_WORKERS` sets the handler slots;
//! the handler runs inline on the I/O threads, as IAM's decisions do, unless `BENCH_INLINE=0`
//! hands every request to a blocking thread, as storage-bound handlers are.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kaa::http::message::{Request, Response};
use kaa::http::server::{Handler, Server, ServerConfig};

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
    let inline = std::env::var("BENCH_INLINE").map_or(true, |v| v != "0");
    let server = Server::bind(config, Arc::new(Fixed { inline }))?;
    let mut out = std::io::stdout();
    writeln!(out, "listening on {}", server.local_addr())?;
    out.flush()?;
    server.run(Duration::from_secs(1));
    Ok(())
}

/// Answers every request with [`BODY`].
struct Fixed {
    inline: bool,
}

impl Handler for Fixed {
    fn handle(&self, _req: Request) -> Response {
        Response::text(200, "application/json", BODY)
    }

    fn inline(&self, _req: &Request) -> bool {
        self.inline
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_body_is_60_bytes() {
        assert_eq!(super::BODY.len(), 60);
    }
}
