//! A small stderr logger for the `log` facade: one line per record, UTC timestamp, level,
//! target. `SERVICE_DEBUG` (service.debug) turns on debug level.

use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct StderrLogger;

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
        let line = format!(
            "{} {level} {}: {}\n",
            crate::clock::rfc3339_ms(crate::clock::now_ms()),
            record.target(),
            record.args()
        );
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
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
