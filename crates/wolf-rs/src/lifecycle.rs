//! The persisted lifecycle log, `<state>/events.log`: one JSON line per control-plane start, ready
//! and exit (with its code and, after a watchdog exit, the step that hung) and per session start,
//! adoption and end (with its reason), so an operator can see what the host did across restarts
//! (`wolf-rs events`). One writer thread appends; callers never block on the disk and, when the
//! writer falls behind, a line is dropped and counted rather than queued without bound. The log
//! rotates to `events.log.1` at [`MAX_BYTES`]: it never holds more than two files.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use serde::{Deserialize, Serialize};

/// A log file is rotated once it would grow past this.
pub const MAX_BYTES: u64 = 1024 * 1024;
/// Lines waiting for the writer at most.
const QUEUE: usize = 1024;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Entry {
    ControlPlaneStart {
        version: String,
    },
    /// Every port is served.
    ControlPlaneReady,
    /// `wolf-rs serve` started: the control plane runs as its child from now on.
    SupervisorStart,
    /// The supervisor starts the control plane again after `after_ms`: its backoff, the longer
    /// pause of a crash loop, or at once when a restart was asked for.
    ControlPlaneRestart {
        after_ms: u64,
        crash_loop: bool,
        requested: bool,
    },
    /// How the previous or this control plane ended: `code` is `None` when it was killed (or
    /// crashed) without a word; `hung` names what the watchdog found stuck.
    ControlPlaneExit {
        code: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hung: Option<String>,
        /// The exit was found at the next start (the line's pid is the new process's).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        found_at_start: bool,
    },
    SessionStart {
        session: u32,
        app_id: String,
    },
    /// A session found running after a restart was taken over.
    SessionAdopted {
        session: u32,
    },
    SessionEnd {
        session: u32,
        reason: String,
    },
    /// A session's session process started (`process`: its pid).
    SessionProcessStart {
        session: u32,
        process: i32,
    },
    /// A control plane attached to a session process that outlived the previous one.
    SessionProcessAdopted {
        session: u32,
        process: i32,
    },
    /// A session process ended: `lost` when it died on its own (a crash, a kill), `hung` when it
    /// stopped answering or its watchdog ended it; else it ended with its session.
    SessionProcessExit {
        session: u32,
        process: i32,
        how: String,
    },
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub unix_ms: u64,
    pub pid: u32,
    #[serde(flatten)]
    pub entry: Entry,
}

/// `events.log` in `state_dir`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("events.log")
}

fn rotated(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".1");
    path.with_file_name(name)
}

/// The handle the host records through; cheap to clone.
#[derive(Clone)]
pub struct Lifecycle {
    tx: Option<mpsc::SyncSender<Msg>>,
    dropped: Arc<AtomicU64>,
}

enum Msg {
    Line(Record),
    /// Answered once every line before it is written.
    Flush(mpsc::SyncSender<()>),
}

/// How long [`Lifecycle::flush`] waits for the writer.
const FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Lifecycle {
    /// Start the writer thread appending to `path` (its folder exists); it ends when the last
    /// handle goes. Blocking: spawns a thread.
    pub fn open(path: PathBuf) -> std::io::Result<Lifecycle> {
        let (tx, rx) = mpsc::sync_channel::<Msg>(QUEUE);
        std::thread::Builder::new().name("lifecycle-log".into()).spawn(move || {
            let log = Appender::new(path);
            for msg in rx {
                match msg {
                    Msg::Line(record) => {
                        if let Err(e) = log.append(&record) {
                            tracing::warn!(file = %log.path.display(), error = %e, "lifecycle log: line not written");
                        }
                    }
                    Msg::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        })?;
        Ok(Lifecycle { tx: Some(tx), dropped: Arc::default() })
    }

    /// Wait (bounded) until every line recorded so far is written: before the process exits.
    /// Blocking.
    pub fn flush(&self) {
        let Some(tx) = &self.tx else { return };
        let (done, written) = mpsc::sync_channel(1);
        if tx.send(Msg::Flush(done)).is_ok() {
            let _ = written.recv_timeout(FLUSH_WAIT);
        }
    }

    /// A handle that records nothing (tools and tests without a state folder).
    pub fn disabled() -> Lifecycle {
        Lifecycle { tx: None, dropped: Arc::default() }
    }

    /// Record `entry` now, never blocking: a full queue drops it (counted).
    pub fn record(&self, entry: Entry) {
        let Some(tx) = &self.tx else { return };
        let record = Record { unix_ms: crate::metrics::unix_ms(), pid: std::process::id(), entry };
        if tx.try_send(Msg::Line(record)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines dropped because the writer fell behind (or is gone).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Log the sessions' starts and ends as the host announces them, until `until` fires (after the
/// drain, so the ends at shutdown are in); events missed by falling behind are counted as dropped.
pub async fn follow(
    mut events: tokio::sync::broadcast::Receiver<crate::events::Event>,
    log: Lifecycle,
    until: tokio_util::sync::CancellationToken,
) {
    use crate::events::Event;
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    let note = |e: Event| match e {
        Event::StreamSession(s) => log.record(Entry::SessionStart { session: s.id, app_id: s.app_id }),
        Event::SessionEnded { id, reason, .. } => log.record(Entry::SessionEnd { session: id, reason }),
        _ => {}
    };
    loop {
        tokio::select! {
            _ = until.cancelled() => break,
            e = events.recv() => match e {
                Ok(e) => note(e),
                Err(RecvError::Lagged(n)) => {
                    log.dropped.fetch_add(n, Ordering::Relaxed);
                }
                Err(RecvError::Closed) => return,
            },
        }
    }
    loop {
        match events.try_recv() {
            Ok(e) => note(e),
            Err(TryRecvError::Lagged(n)) => {
                log.dropped.fetch_add(n, Ordering::Relaxed);
            }
            Err(_) => return,
        }
    }
}

/// Appends lines to the log, one open, write and close each (lines are rare), so that two
/// processes (the supervisor and its control plane) may share the file and either may rotate it.
pub struct Appender {
    path: PathBuf,
}

impl Appender {
    pub fn new(path: PathBuf) -> Appender {
        Appender { path }
    }

    /// Record `entry` for this process now (blocking; logged when it cannot be written).
    pub fn record(&self, entry: Entry) {
        self.record_for(std::process::id(), entry);
    }

    /// Record `entry` for process `pid` (a child the supervisor saw end).
    pub fn record_for(&self, pid: impl TryInto<u32>, entry: Entry) {
        let record = Record { unix_ms: crate::metrics::unix_ms(), pid: pid.try_into().unwrap_or(0), entry };
        if let Err(e) = self.append(&record) {
            tracing::warn!(file = %self.path.display(), error = %e, "lifecycle log: line not written");
        }
    }

    fn append(&self, record: &Record) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let len = match std::fs::metadata(&self.path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        if len > 0 && len + line.len() as u64 > MAX_BYTES {
            std::fs::rename(&self.path, rotated(&self.path))?;
        }
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        // One write per line: a reader (or a crash) never sees half of one.
        file.write_all(&line)
    }
}

/// Every record in the log, oldest first (the rotated file, then the current one), and how many
/// lines could not be read (cut by a crash, or not ours). Blocking.
pub fn read(path: &Path) -> std::io::Result<(Vec<Record>, usize)> {
    let mut records = Vec::new();
    let mut unreadable = 0;
    for p in [rotated(path), path.to_path_buf()] {
        let text = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            match serde_json::from_slice::<Record>(line) {
                Ok(r) => records.push(r),
                Err(_) => unreadable += 1,
            }
        }
    }
    Ok((records, unreadable))
}

/// How the previous control plane ended, from the log and the watchdog's crash marker: `None`
/// when the log shows it exited (or there was none).
pub fn previous_exit(records: &[Record], marker_line: Option<&str>) -> Option<Entry> {
    let last_start = records.iter().rposition(|r| matches!(r.entry, Entry::ControlPlaneStart { .. }))?;
    let started_pid = records[last_start].pid;
    let exited =
        records[last_start..].iter().any(|r| r.pid == started_pid && matches!(r.entry, Entry::ControlPlaneExit { .. }));
    if exited {
        return None;
    }
    let hung = marker_line.and_then(hung_step);
    let code = hung.as_ref().map(|_| crate::watchdog::EXIT_CODE);
    Some(Entry::ControlPlaneExit { code, hung, found_at_start: true })
}

/// What hung, from the watchdog's marker line (`... hung=<what> ...`).
pub fn hung_step(marker_line: &str) -> Option<String> {
    marker_line.split_whitespace().find_map(|w| w.strip_prefix("hung=")).map(str::to_owned)
}

impl std::fmt::Display for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.unix_ms) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_else(|| format!("{} ms", self.unix_ms));
        write!(f, "{at} pid {} ", self.pid)?;
        match &self.entry {
            Entry::ControlPlaneStart { version } => write!(f, "control plane started (wolf-rs {version})"),
            Entry::ControlPlaneReady => write!(f, "control plane ready"),
            Entry::SupervisorStart => write!(f, "supervisor started"),
            Entry::ControlPlaneRestart { after_ms, crash_loop, requested } => {
                let why = match (crash_loop, requested) {
                    (_, true) => "as asked",
                    (true, _) => "after a crash-loop pause",
                    _ => "after its backoff",
                };
                write!(f, "control plane restarts in {after_ms} ms, {why}")
            }
            Entry::ControlPlaneExit { code, hung, found_at_start } => {
                match code {
                    Some(c) => write!(f, "control plane exited with code {c}")?,
                    None => write!(f, "control plane ended without exiting (killed or crashed)")?,
                }
                if let Some(h) = hung {
                    write!(f, "; hung: {h}")?;
                }
                if *found_at_start {
                    write!(f, " (found at this start)")?;
                }
                Ok(())
            }
            Entry::SessionStart { session, app_id } => write!(f, "session {session} started (app {app_id})"),
            Entry::SessionAdopted { session } => write!(f, "session {session} adopted"),
            Entry::SessionEnd { session, reason } => write!(f, "session {session} ended: {reason}"),
            Entry::SessionProcessStart { session, process } => {
                write!(f, "session {session}: its process {process} started")
            }
            Entry::SessionProcessAdopted { session, process } => {
                write!(f, "session {session}: its process {process} adopted (the stream went on)")
            }
            Entry::SessionProcessExit { session, process, how } => {
                write!(f, "session {session}: its process {process} ended ({how})")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(pid: u32) -> Record {
        Record { unix_ms: 1, pid, entry: Entry::ControlPlaneStart { version: "1".into() } }
    }

    #[test]
    fn lines_are_written_in_order_and_rotate_into_two_files_at_most() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        let log = Lifecycle::open(p.clone()).unwrap();
        // Enough lines for more than two rotations, fed slower than the queue fills.
        let n = 3 * (MAX_BYTES as usize / 60);
        for i in 0..n {
            let session = u32::try_from(i).unwrap();
            let entry = Entry::SessionEnd { session, reason: "cancelled".into() };
            while log
                .tx
                .as_ref()
                .unwrap()
                .try_send(Msg::Line(Record { unix_ms: 1, pid: 2, entry: entry.clone() }))
                .is_err()
            {
                std::thread::yield_now();
            }
        }
        log.flush();
        let (records, unreadable) = read(&p).unwrap();
        assert_eq!(unreadable, 0);
        assert!(std::fs::metadata(&p).unwrap().len() <= MAX_BYTES);
        assert!(std::fs::metadata(rotated(&p)).unwrap().len() <= MAX_BYTES);
        assert!(records.len() < n, "the oldest lines went with the rotation");
        let sessions: Vec<u32> = records
            .iter()
            .map(|r| match r.entry {
                Entry::SessionEnd { session, .. } => session,
                _ => panic!("{r:?}"),
            })
            .collect();
        let last = u32::try_from(n - 1).unwrap();
        assert_eq!(sessions.last(), Some(&last), "the newest line is kept");
        assert!(sessions.windows(2).all(|w| w[1] == w[0] + 1), "in order, none missing between");
        let entries = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(entries, 2, "events.log and events.log.1, nothing else");
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let (tx, _rx) = mpsc::sync_channel(QUEUE);
        let log = Lifecycle { tx: Some(tx), dropped: Arc::default() };
        for _ in 0..QUEUE + 5 {
            log.record(Entry::ControlPlaneReady);
        }
        assert_eq!(log.dropped(), 5);
        Lifecycle::disabled().record(Entry::ControlPlaneReady);
    }

    #[test]
    fn a_cut_line_is_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        let mut text = serde_json::to_string(&start(7)).unwrap();
        text.push_str("\n{\"unix_ms\":2,\"pid\":7,\"ev");
        std::fs::write(&p, text).unwrap();
        let (records, unreadable) = read(&p).unwrap();
        assert_eq!((records, unreadable), (vec![start(7)], 1));
    }

    #[test]
    fn the_previous_exit_is_told_from_the_log_and_the_marker() {
        let exit = |pid| Record {
            unix_ms: 3,
            pid,
            entry: Entry::ControlPlaneExit { code: Some(0), hung: None, found_at_start: false },
        };
        assert_eq!(previous_exit(&[], None), None, "no earlier start");
        assert_eq!(previous_exit(&[start(1), exit(1)], None), None, "it said it exited");
        let killed = previous_exit(&[start(1), exit(1), start(2)], None);
        assert_eq!(killed, Some(Entry::ControlPlaneExit { code: None, hung: None, found_at_start: true }));
        let hung = previous_exit(&[start(2)], Some("unix_time=1 code=86 hung=event_loop silent_ms=31000"));
        assert_eq!(
            hung,
            Some(Entry::ControlPlaneExit { code: Some(86), hung: Some("event_loop".into()), found_at_start: true })
        );
        // Another process's exit line (a later start's) does not count for this start.
        assert!(previous_exit(&[start(2), exit(9)], None).is_some());
    }

    #[test]
    fn lines_read_as_an_operator_would() {
        let r = Record {
            unix_ms: 1_765_101_600_000,
            pid: 42,
            entry: Entry::ControlPlaneExit { code: Some(86), hung: Some("pipeline".into()), found_at_start: true },
        };
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"event\":\"control_plane_exit\""), "{json}");
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), r);
        assert_eq!(
            r.to_string(),
            "2025-12-07T10:00:00Z pid 42 control plane exited with code 86; hung: pipeline (found at this start)"
        );
    }
}
