//! The socket under one hyper connection, with the timing hyper leaves to us: a connection
//! waiting for its next request is closed after `idle_timeout`, a write that makes no progress
//! for `write_timeout` fails, and closing lingers (FIN first, then what the client still sends is
//! read and dropped for a short while) so that a client still sending a body reads our answer
//! rather than a reset.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// How long a closing connection keeps reading what the client still sends.
const LINGER_TIME: Duration = Duration::from_secs(1);
/// How much a closing connection reads at most before it gives up lingering.
const LINGER_BYTES: usize = 64 << 20;

/// Where the linger after `shutdown` stands.
enum Closing {
    Open,
    /// FIN sent; reading until end of stream, `LINGER_BYTES` or the deadline.
    Draining {
        drained: usize,
    },
    Done,
}

/// A TCP stream with idle, write and linger timing.
pub struct TimedStream {
    inner: TcpStream,
    /// Set while a request of this connection is being served (its handler runs, or its body is
    /// read by the service): no idle timeout applies then.
    busy: Arc<AtomicBool>,
    idle_timeout: Duration,
    write_timeout: Duration,
    read_timer: Pin<Box<Sleep>>,
    read_armed: bool,
    write_timer: Pin<Box<Sleep>>,
    write_armed: bool,
    /// The idle timer ended the connection: nothing is on its way, so closing does not linger.
    idle_expired: bool,
    closing: Closing,
}

impl TimedStream {
    pub fn new(
        inner: TcpStream,
        busy: Arc<AtomicBool>,
        idle_timeout: Duration,
        write_timeout: Duration,
    ) -> TimedStream {
        let now = Instant::now();
        TimedStream {
            inner,
            busy,
            idle_timeout,
            write_timeout,
            read_timer: Box::pin(tokio::time::sleep_until(now + idle_timeout)),
            read_armed: false,
            write_timer: Box::pin(tokio::time::sleep_until(now + write_timeout)),
            write_armed: false,
            idle_expired: false,
            closing: Closing::Open,
        }
    }
}

impl AsyncRead for TimedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.read_armed = false;
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                if this.busy.load(Ordering::Acquire) {
                    this.read_armed = false;
                    return Poll::Pending;
                }
                if !this.read_armed {
                    this.read_armed = true;
                    let at = Instant::now() + this.idle_timeout;
                    this.read_timer.as_mut().reset(at);
                }
                ready!(this.read_timer.as_mut().poll(cx));
                // Idle for too long: end of stream, which hyper takes as a clean close.
                this.read_armed = false;
                this.idle_expired = true;
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl AsyncWrite for TimedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, data) {
            Poll::Ready(r) => {
                this.write_armed = false;
                Poll::Ready(r)
            }
            Poll::Pending => this.write_stalled(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                this.write_armed = false;
                Poll::Ready(r)
            }
            Poll::Pending => this.write_stalled(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match this.closing {
                Closing::Open => {
                    ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
                    if this.idle_expired {
                        this.closing = Closing::Done;
                        continue;
                    }
                    this.closing = Closing::Draining { drained: 0 };
                    this.read_timer.as_mut().reset(Instant::now() + LINGER_TIME);
                }
                Closing::Draining { drained } => {
                    if drained >= LINGER_BYTES || this.read_timer.as_mut().poll(cx).is_ready() {
                        this.closing = Closing::Done;
                        continue;
                    }
                    let mut scratch = [0u8; 8192];
                    let mut buf = ReadBuf::new(&mut scratch);
                    match ready!(Pin::new(&mut this.inner).poll_read(cx, &mut buf)) {
                        Ok(()) if buf.filled().is_empty() => this.closing = Closing::Done,
                        Ok(()) => {
                            this.closing = Closing::Draining {
                                drained: drained + buf.filled().len(),
                            }
                        }
                        Err(_) => this.closing = Closing::Done,
                    }
                }
                Closing::Done => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl TimedStream {
    fn write_stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if !self.write_armed {
            self.write_armed = true;
            let at = Instant::now() + self.write_timeout;
            self.write_timer.as_mut().reset(at);
        }
        ready!(self.write_timer.as_mut().poll(cx));
        self.write_armed = false;
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "client did not read the answer in time",
        )))
    }
}
