//! The decision log: one JSON line per decision of the evaluate family (`/evaluate`,
//! `/resources/evaluate`, `/evaluate/actions`), naming the principal, action, resource, outcome,
//! the deciding statements and the version of the policy each belongs to.
//!
//! A decision never waits on the log: the handling thread formats the line and puts it in a
//! bounded buffer; a writer thread takes the buffered lines and writes them to the destination
//! (a file, or stdout). When the buffer is full the line is dropped and counted
//! (`iam_decision_log_dropped_total`), so a slow or blocked disk costs lines, never latency.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::caller::SYSTEM_TENANT;
use super::evaluate::Decided;
use crate::clock::{now_ms, rfc3339_ms};
use crate::config::IamDecisionLog;
use crate::policy::{Decision, Krn, Outcome};

/// Which decisions are logged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Off,
    /// Explicit and implicit denies.
    Denies,
    /// Each decision with this probability (0 to 1).
    Sampled(f64),
    All,
}

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    File(PathBuf),
}

/// `iam.decision-log`.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub mode: Mode,
    pub destination: Destination,
    /// Lines the buffer holds for the writer; beyond, lines are dropped and counted.
    pub buffer_lines: usize,
}

/// The default mode's share of decisions (`sampled`, 1 in 100).
pub const DEFAULT_SAMPLE_RATE: f64 = 0.01;
/// How long the writer lets lines gather after the first one arrives.
const GATHER: std::time::Duration = std::time::Duration::from_millis(2);

/// `iam.decision-log` as the configuration read it, its destination checked.
pub fn settings(c: &IamDecisionLog) -> Result<Settings, String> {
    let mode = match c.mode.as_str() {
        "off" => Mode::Off,
        "denies" => Mode::Denies,
        "all" => Mode::All,
        _ => Mode::Sampled(c.sample_rate),
    };
    let destination = match c.destination.as_str() {
        "stdout" => Destination::Stdout,
        p => {
            let path = PathBuf::from(p);
            if path.is_dir() {
                return Err(format!(
                    "config: `iam.decision-log.destination` (KAA_IAM_DECISION_LOG_DESTINATION) \
                     `{p}` is a directory: name a file"
                ));
            }
            let parent = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !parent.is_dir() {
                return Err(format!(
                    "config: `iam.decision-log.destination` (KAA_IAM_DECISION_LOG_DESTINATION) \
                     `{p}`: the directory `{}` does not exist",
                    parent.display()
                ));
            }
            Destination::File(path)
        }
    };
    Ok(Settings {
        mode,
        destination,
        buffer_lines: usize::try_from(c.buffer_lines).unwrap_or(usize::MAX),
    })
}

/// A deciding statement as the log names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoggedStatement {
    /// As in an explained decision: the policy's KRN, or a base policy's name.
    #[serde(rename = "policyID")]
    pub policy_id: String,
    /// The REST id of the policy (`GET /policies/{id}/versions/{version}`).
    pub id: String,
    /// A base policy from the service configuration.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub base: bool,
    /// The version of the policy that decided (`null`: not known).
    pub version: Option<i64>,
    /// The statement's index in that version, from 0.
    pub statement: usize,
}

/// One line of the decision log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoggedDecision {
    pub time: String,
    #[serde(rename = "requestID", default)]
    pub request_id: Option<String>,
    #[serde(rename = "tenantID")]
    pub tenant_id: String,
    pub principal: String,
    /// Roles the decision was made with beyond the principal's groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    pub action: String,
    pub resource: String,
    pub outcome: Outcome,
    /// `principal` or `resource` when a disabled one decided (no statement then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<String>,
    #[serde(default)]
    pub statements: Vec<LoggedStatement>,
    /// The request context (with `kaa:CurrentTime`), which conditions read.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub context: Map<String, Value>,
    /// The replica that decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
}

/// The statements of a decision with the versions of their policies.
pub fn logged_statements(d: &Decision, versions: &[Option<i64>]) -> Vec<LoggedStatement> {
    d.reasons
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let base = !r.policy_id.starts_with("krn:");
            let krn = if base {
                format!("krn:iam:{SYSTEM_TENANT}::policy/{}", r.policy_id)
            } else {
                r.policy_id.clone()
            };
            LoggedStatement {
                policy_id: r.policy_id.clone(),
                id: Krn::parse(&krn)
                    .map(|k| k.to_id())
                    .unwrap_or_else(|_| crate::iam::model::id_of(&krn)),
                base,
                version: versions.get(i).copied().flatten(),
                statement: r.statement,
            }
        })
        .collect()
}

/// The buffer between the handling threads and the writer.
struct Queue {
    lines: Mutex<Buffered>,
    ready: Condvar,
    /// Lines buffered now (read without the lock, to drop a line before formatting it).
    len: AtomicUsize,
    capacity: usize,
    written: AtomicU64,
    dropped: AtomicU64,
}

struct Buffered {
    lines: VecDeque<String>,
    closed: bool,
}

/// The decision log of one service: which decisions to keep, and the buffer to its writer.
pub struct DecisionLog {
    settings: Settings,
    replica: String,
    queue: Option<Arc<Queue>>,
}

impl std::fmt::Debug for DecisionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionLog")
            .field("settings", &self.settings)
            .finish()
    }
}

impl Drop for DecisionLog {
    fn drop(&mut self) {
        if let Some(q) = &self.queue {
            q.lines.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
            q.ready.notify_all();
        }
    }
}

thread_local! {
    /// Each thread's sampling state (xorshift64*), seeded from the std hasher's random keys.
    static RNG: std::cell::Cell<u64> = std::cell::Cell::new({
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(now_ms() as u64);
        h.finish() | 1
    });
}

/// A uniform draw in [0, 1).
fn draw() -> f64 {
    RNG.with(|c| {
        let mut x = c.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        c.set(x);
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    })
}

impl DecisionLog {
    /// The log as `settings` say; its writer thread starts unless the mode is `off`.
    pub fn start(settings: Settings, replica: &str) -> DecisionLog {
        let queue = (settings.mode != Mode::Off).then(|| {
            let q = Arc::new(Queue {
                lines: Mutex::new(Buffered {
                    lines: VecDeque::new(),
                    closed: false,
                }),
                ready: Condvar::new(),
                len: AtomicUsize::new(0),
                capacity: settings.buffer_lines,
                written: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
            });
            let writer = Arc::clone(&q);
            let destination = settings.destination.clone();
            let _ = std::thread::Builder::new()
                .name("decision-log".into())
                .spawn(move || write_lines(&writer, &destination));
            q
        });
        DecisionLog {
            settings,
            replica: replica.to_string(),
            queue,
        }
    }

    /// A log that keeps nothing.
    pub fn off() -> DecisionLog {
        DecisionLog {
            settings: Settings {
                mode: Mode::Off,
                destination: Destination::Stdout,
                buffer_lines: 1,
            },
            replica: String::new(),
            queue: None,
        }
    }

    pub fn mode(&self) -> Mode {
        self.settings.mode
    }

    /// The file this replica writes its lines to, if it writes to one.
    pub fn file(&self) -> Option<&Path> {
        match (&self.settings.mode, &self.settings.destination) {
            (Mode::Off, _) | (_, Destination::Stdout) => None,
            (_, Destination::File(p)) => Some(p),
        }
    }

    /// Which decisions of a request to log, asked per decision with its outcome: `None` when
    /// none can be (the log is off, or samples nothing), so that decisions pay nothing then. A
    /// decision picked while the buffer is full is dropped and counted here, before its line
    /// is built.
    pub fn picker(&self) -> Option<impl FnMut(Outcome) -> bool + '_> {
        let q = self.queue.as_deref()?;
        let mode = self.settings.mode;
        if let Mode::Sampled(r) = mode
            && r <= 0.0
        {
            return None;
        }
        let full = q.len.load(Ordering::Relaxed) >= q.capacity;
        Some(move |o: Outcome| {
            let keep = match mode {
                Mode::Off => false,
                Mode::All => true,
                Mode::Denies => o != Outcome::Allow,
                Mode::Sampled(r) => r >= 1.0 || draw() < r,
            };
            if keep && full {
                q.dropped.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            keep
        })
    }

    /// Lines written, and lines dropped (the buffer was full, or the destination failed).
    pub fn counts(&self) -> (u64, u64) {
        self.queue.as_ref().map_or((0, 0), |q| {
            (
                q.written.load(Ordering::Relaxed),
                q.dropped.load(Ordering::Relaxed),
            )
        })
    }

    /// Log the decisions `d` picked, of the request `request_id`.
    pub fn emit(&self, d: &Decided, request_id: &str) {
        let Some(q) = &self.queue else { return };
        if d.picked.is_empty() {
            return;
        }
        let time = rfc3339_ms(now_ms());
        let principal = d
            .eval
            .principals
            .first()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default();
        let roles: Vec<String> = d
            .eval
            .roles
            .iter()
            .map(|r| r.as_str().to_string())
            .collect();
        for p in &d.picked {
            if q.len.load(Ordering::Relaxed) >= q.capacity {
                q.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let line = LoggedDecision {
                time: time.clone(),
                request_id: Some(request_id.to_string()).filter(|r| !r.is_empty()),
                tenant_id: d.eval.tenant.clone(),
                principal: principal.clone(),
                roles: roles.clone(),
                action: d.eval.actions[p.action].as_str().to_string(),
                resource: d.eval.resources[p.resource].as_str().to_string(),
                outcome: p.decision.outcome,
                disabled: d
                    .disabled
                    .get(p.resource)
                    .and_then(Option::as_ref)
                    .map(|x| x.kind().to_string()),
                statements: logged_statements(&p.decision, &p.versions),
                context: d.eval.context.clone(),
                replica: Some(self.replica.clone()).filter(|r| !r.is_empty()),
            };
            match serde_json::to_string(&line) {
                Ok(text) => push(q, text),
                Err(e) => {
                    q.dropped.fetch_add(1, Ordering::Relaxed);
                    log::warn!("decision log: a line could not be written: {e}");
                }
            }
        }
    }
}

fn push(q: &Queue, line: String) {
    let mut b = q.lines.lock().unwrap_or_else(|p| p.into_inner());
    if b.lines.len() >= q.capacity {
        drop(b);
        q.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let was_empty = b.lines.is_empty();
    b.lines.push_back(line);
    q.len.store(b.lines.len(), Ordering::Relaxed);
    drop(b);
    if was_empty {
        q.ready.notify_one();
    }
}

/// The writer thread: wait for lines, take all buffered, write them and flush; until the log
/// is dropped. The destination is opened here, so that one that blocks (a FIFO nobody reads)
/// or fails never holds up the start or a decision: lines wait in the buffer meanwhile, and
/// beyond it are dropped.
fn write_lines(q: &Queue, destination: &Destination) {
    let mut file: Option<std::fs::File> = None;
    let mut warned = false;
    loop {
        let batch: Vec<String> = {
            let mut b = q.lines.lock().unwrap_or_else(|p| p.into_inner());
            while b.lines.is_empty() && !b.closed {
                b = q.ready.wait(b).unwrap_or_else(|p| p.into_inner());
            }
            if b.lines.is_empty() && b.closed {
                return;
            }
            if !b.closed && b.lines.len() < q.capacity / 2 {
                // Let a busy service's lines gather for a moment: one wake-up and one write per
                // `GATHER` rather than one per line (each a context switch on a core the
                // decisions need).
                drop(b);
                std::thread::sleep(GATHER);
                b = q.lines.lock().unwrap_or_else(|p| p.into_inner());
            }
            let taken: Vec<String> = b.lines.drain(..).collect();
            q.len.store(0, Ordering::Relaxed);
            taken
        };
        let n = batch.len() as u64;
        let result = match destination {
            Destination::Stdout => write_batch(&mut std::io::stdout().lock(), &batch),
            Destination::File(path) => {
                if file.as_ref().is_some_and(|f| rotated(f, path)) {
                    // Moved or deleted by a log rotation: go on in a new file at the path.
                    file = None;
                }
                if file.is_none() {
                    match std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                    {
                        Ok(f) => file = Some(f),
                        Err(e) => {
                            if !warned {
                                log::error!(
                                    "decision log: cannot open `{}`: {e}; lines are dropped \
                                     until it opens",
                                    path.display()
                                );
                                warned = true;
                            }
                        }
                    }
                }
                match file.as_mut() {
                    Some(f) => write_batch(f, &batch),
                    None => Err(std::io::Error::other("not open")),
                }
            }
        };
        match result {
            Ok(()) => {
                q.written.fetch_add(n, Ordering::Relaxed);
                warned = false;
            }
            Err(e) => {
                q.dropped.fetch_add(n, Ordering::Relaxed);
                if !warned {
                    log::error!("decision log: {n} lines not written: {e}");
                    warned = true;
                }
                if matches!(destination, Destination::File(_)) {
                    file = None;
                    // Not in a tight loop on a failing disk.
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
            }
        }
    }
}

/// Whether the file open for writing is no longer the one at `path` (renamed or deleted by a
/// log rotation, so that `logrotate`'s default `create` works without a signal; with
/// `copytruncate` the file stays the same and appends go on at its new end).
fn rotated(open: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (open.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) != (b.dev(), b.ino()),
        (Ok(_), Err(_)) => true,
        // The open file cannot be asked: keep it, a write error reopens it.
        (Err(_), _) => false,
    }
}

fn write_batch(w: &mut dyn Write, batch: &[String]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, w);
    for line in batch {
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Section, Tree};

    /// `iam.decision-log` read from `yaml` (its keys) the way the configuration reads it, then
    /// checked.
    fn read(yaml: &str) -> Result<Settings, String> {
        let text = format!("iam:\n  decision-log:\n{yaml}");
        let mut t = Tree::from_yaml(&text, "test").map_err(|e| e.to_string())?;
        let c = IamDecisionLog::read(&mut t, "iam.decision-log").map_err(|e| e.to_string())?;
        settings(&c)
    }

    #[test]
    fn settings_defaults_and_refusals() {
        let s = settings(&IamDecisionLog::defaults().unwrap()).unwrap();
        assert_eq!(s.mode, Mode::Sampled(DEFAULT_SAMPLE_RATE));
        assert_eq!(s.destination, Destination::Stdout);
        assert_eq!(s.buffer_lines, 8192);
        let s = read("    mode: denies\n    buffer-lines: '4'\n").unwrap();
        assert_eq!((s.mode, s.buffer_lines), (Mode::Denies, 4));
        let s = read("    sample-rate: '0.5'\n").unwrap();
        assert_eq!(s.mode, Mode::Sampled(0.5));
        for (bad, key) in [
            ("mode: some", "mode"),
            ("sample-rate: 2", "sample-rate"),
            ("sample-rate: x", "sample-rate"),
            ("destination: /nonexistent-dir/x.log", "destination"),
            ("destination: /tmp", "destination"),
            ("buffer-lines: 0", "buffer-lines"),
        ] {
            let e = read(&format!("    {bad}\n")).unwrap_err();
            assert!(e.contains(&format!("`iam.decision-log.{key}`")), "{e}");
        }
    }

    #[test]
    fn draws_are_in_the_unit_interval() {
        for _ in 0..1000 {
            let x = draw();
            assert!((0.0..1.0).contains(&x));
        }
    }
}
