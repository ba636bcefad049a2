//! A small stderr logger for the `log` facade: one line per record, UTC timestamp, level,
//! target. `SERVICE_DEBUG` (service.debug) turns on debug level.
//!
//! Access-log lines (target `access`, one per HTTP exchange) are formatted into a shared buffer
//! that a writer thread hands to stderr in one `write` per batch: a busy server writes its access
//! log in a few large writes instead of one system call per request under the stderr lock, and
//! an idle one still writes each line within 2 ms (the writer wakes on the first line and lets
//! others gather for that long). Every
//! other record drains that buffer and is written at once, so nothing is held back behind it
//! (docs/DECISIONS.md, 2026-11-26).

use std::io::Write;
use std::sync::{Condvar, Mutex, OnceLock};

use log::{Level, LevelFilter, Log, Metadata, Record};

struct StderrLogger;

/// Access-log lines not yet written, and the writer's wake-up.
struct Batch {
    lines: Mutex<Vec<u8>>,
    ready: Condvar,
}

/// Beyond this many buffered bytes an access line is written by its own thread (the writer is
/// behind: stderr is slow), so the buffer stays bounded.
const BATCH_MAX: usize = 1 << 20;

static BATCH: OnceLock<Batch> = OnceLock::new();

/// How long the writer lets access lines gather after the first one arrives.
const GATHER: std::time::Duration = std::time::Duration::from_millis(2);

thread_local! {
    /// Each thread's access line, formatted before the shared buffer is locked.
    static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn batch() -> &'static Batch {
    BATCH.get_or_init(|| {
        let _ = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(write_batches);
        Batch {
            lines: Mutex::new(Vec::with_capacity(64 * 1024)),
            ready: Condvar::new(),
        }
    })
}

/// The writer thread: wait for lines, take them all, write them in one go.
fn write_batches() {
    let b = batch();
    let mut spare: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        {
            let mut lines = b.lines.lock().unwrap_or_else(|p| p.into_inner());
            while lines.is_empty() {
                lines = b.ready.wait(lines).unwrap_or_else(|p| p.into_inner());
            }
        }
        // Let a busy server's lines gather for a moment: one wake-up and one write per
        // `GATHER` instead of one per request (each wake-up is a context switch on a core the
        // requests need).
        std::thread::sleep(GATHER);
        // stderr first, then the buffer (as `drain` does), so batches keep their order.
        let mut err = std::io::stderr().lock();
        std::mem::swap(
            &mut *b.lines.lock().unwrap_or_else(|p| p.into_inner()),
            &mut spare,
        );
        let _ = err.write_all(&spare);
        drop(err);
        spare.clear();
        if spare.capacity() > 4 * 64 * 1024 {
            spare.shrink_to(64 * 1024);
        }
    }
}

/// Write the buffered access lines now (before another record, and on `flush`).
fn drain(out: &mut impl Write) {
    let Some(b) = BATCH.get() else { return };
    let mut lines = b.lines.lock().unwrap_or_else(|p| p.into_inner());
    if !lines.is_empty() {
        let _ = out.write_all(&lines);
        lines.clear();
    }
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        // Driver internals (postgres, tokio) only when debugging.
        let driver = metadata.target().starts_with("postgres")
            || metadata.target().starts_with("tokio")
            || metadata.target().starts_with("r2d2");
        metadata.level() <= log::max_level()
            && (!driver
                || log::max_level() >= LevelFilter::Debug
                || metadata.level() <= Level::Warn)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            Level::Error => "ERROR",
            Level::Warn => "WARN ",
            Level::Info => "INFO ",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        };
        let stamp = crate::clock::rfc3339_ms(crate::clock::now_ms());
        if record.target() == "access" {
            // Formatted outside the lock, which is then held for a copy only: a thread
            // descheduled while holding it would stall every other request's answer.
            let written = LINE.with(|line| {
                let mut line = line.borrow_mut();
                line.clear();
                let _ = writeln!(line, "{stamp} {level} access: {}", record.args());
                let b = batch();
                let mut lines = b.lines.lock().unwrap_or_else(|p| p.into_inner());
                if lines.len() >= BATCH_MAX {
                    return false;
                }
                let was_empty = lines.is_empty();
                lines.extend_from_slice(&line);
                drop(lines);
                if was_empty {
                    b.ready.notify_one();
                }
                true
            });
            if written {
                return;
            }
        }
        let line = format!("{stamp} {level} {}: {}\n", record.target(), record.args());
        let mut err = std::io::stderr().lock();
        drain(&mut err);
        let _ = err.write_all(line.as_bytes());
    }

    fn flush(&self) {
        let mut err = std::io::stderr().lock();
        drain(&mut err);
        let _ = err.flush();
    }
}

/// Install the logger once; later calls only change the level.
pub fn init(debug: bool) {
    let level = if debug {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    };
    let _ = log::set_boxed_logger(Box::new(StderrLogger));
    log::set_max_level(level);
}
