//! `active_sessions.json`: the sessions that must survive a crash. One writer thread owns the
//! file; every change is handed to it as a whole snapshot, written atomically (temp file, fsync,
//! rename, fsync of the directory), and the caller may wait for that write.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::runners::RunnerHandle;
use crate::state::versioned::{self, Loaded};

pub const VERSION: u32 = 1;
pub const FILE_NAME: &str = "active_sessions.json";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    /// The app is being started.
    #[default]
    Launching,
    /// RTSP reached PLAY: the stream runs.
    Streaming,
    /// The app runs with no stream (before PLAY, after the client left, or adopted after a restart).
    Paused,
    /// The app is being stopped. A session that ends leaves the table once its app is stopped;
    /// the reason is counted (`wolf_sessions_ended_total`), so no failed or interrupted state
    /// lingers.
    Stopping,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Launching => "launching",
            SessionState::Streaming => "streaming",
            SessionState::Paused => "paused",
            SessionState::Stopping => "stopping",
        }
    }
}

/// The host ports the session's client was sent to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionPorts {
    pub rtsp: u16,
    pub video: u16,
    pub audio: u16,
    pub control: u16,
}

/// One session as persisted. Keys are not: a client resumes with fresh ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRecord {
    pub id: u32,
    pub client_fingerprint: String,
    pub client_ip: IpAddr,
    pub app_id: u32,
    /// `WIDTHxHEIGHTxFPS`.
    pub mode: String,
    /// "h264" or "hevc" once the client announced it.
    pub codec: Option<String>,
    pub ports: SessionPorts,
    pub runner: RunnerHandle,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<crate::runners::display::DisplayHandle>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<crate::runners::audio::SinkHandle>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lobby: Option<super::LobbyLink>,
    /// Its session process (pid, start time, socket), adopted by the next control plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<crate::session_process::ProcessRecord>,
    /// The `uniqueid` the client launched with.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_unique_id: String,
    pub state: SessionState,
    pub surround_audio_info: u32,
    pub created_unix_ms: u64,
    pub updated_unix_ms: u64,
    pub last_activity_unix_ms: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SessionsFile {
    pub(crate) version: u32,
    pub(crate) sessions: Vec<SessionRecord>,
}

/// What start-up found in the file.
#[derive(Debug)]
pub struct LoadedSessions {
    pub records: Vec<SessionRecord>,
    /// Where a corrupt file was moved.
    pub moved_aside: Option<PathBuf>,
}

/// Read the file (blocking). See `state::versioned` for corrupt and newer files.
pub fn load(path: &Path) -> Result<LoadedSessions> {
    Ok(match versioned::read::<SessionsFile>(path, VERSION, "active sessions")? {
        Loaded::Read(f) => LoadedSessions { records: f.sessions, moved_aside: None },
        Loaded::Missing => LoadedSessions { records: Vec::new(), moved_aside: None },
        Loaded::MovedAside(p) => LoadedSessions { records: Vec::new(), moved_aside: Some(p) },
    })
}

/// Write the whole list atomically (blocking).
pub fn write(path: &Path, records: &[SessionRecord]) -> Result<()> {
    let file = SessionsFile { version: VERSION, sessions: records.to_vec() };
    let json = serde_json::to_vec_pretty(&file).or_err(ErrorKind::Store, || "encoding the sessions")?;
    crate::state::atomic::write_atomic(path, &json, 0o600)
}

/// Why a write the caller waited for is not on disk. Clone: one write's outcome answers every
/// waiter it covers.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Failed(Arc<Error>),
    #[error("the session-store thread is gone")]
    Gone,
}

/// A finished write: Ok, or why it failed.
pub type WriteResult = std::result::Result<(), WriteError>;

struct Job {
    records: Vec<SessionRecord>,
    done: Option<tokio::sync::oneshot::Sender<WriteResult>>,
}

/// The sender side of the writer thread. Snapshots are queued in the order they were taken;
/// the thread writes the newest it has and answers every waiter with that write's result.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
}

impl Writer {
    /// Start the writer thread for `path`; `on_error` is called (on that thread) for each failed write.
    /// `on_write` hears every write's outcome (the health model and the error count).
    pub fn spawn(path: PathBuf, on_write: impl Fn(std::result::Result<(), &Error>) + Send + 'static) -> Result<Writer> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("session-store".into())
            .spawn(move || {
                // Ends when every Writer is dropped.
                while let Ok(first) = rx.recv() {
                    let mut jobs = vec![first];
                    jobs.extend(rx.try_iter());
                    let newest = jobs.last().map(|j| j.records.clone()).unwrap_or_default();
                    let written = write(&path, &newest);
                    on_write(written.as_ref().map(|_| ()));
                    let result = written.map_err(|e| {
                        tracing::error!(file = %path.display(), error = %e, "could not write the sessions file");
                        WriteError::Failed(Arc::new(e))
                    });
                    for j in jobs {
                        if let Some(done) = j.done {
                            let _ = done.send(result.clone());
                        }
                    }
                }
            })
            .or_err(ErrorKind::Io, || "starting the session-store thread")?;
        Ok(Writer { tx })
    }

    /// Queue a snapshot; the receiver, if asked for, gets the result of the write that covers it.
    pub fn submit(
        &self,
        records: Vec<SessionRecord>,
        wait: bool,
    ) -> Option<tokio::sync::oneshot::Receiver<WriteResult>> {
        let (done, rx) = if wait {
            let (t, r) = tokio::sync::oneshot::channel();
            (Some(t), Some(r))
        } else {
            (None, None)
        };
        if self.tx.send(Job { records, done }).is_err() {
            tracing::error!("the session-store thread is gone; sessions are not being saved");
        }
        rx
    }

    /// Wait until everything queued so far is written (blocking).
    pub fn flush_blocking(&self, records: Vec<SessionRecord>) -> WriteResult {
        match self.submit(records, true) {
            Some(rx) => rx.blocking_recv().unwrap_or(Err(WriteError::Gone)),
            None => Err(WriteError::Gone),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u32) -> SessionRecord {
        SessionRecord {
            id,
            client_fingerprint: format!("fp{id}"),
            client_ip: "127.0.0.1".parse().unwrap(),
            app_id: 1,
            mode: "1280x720x60".into(),
            codec: None,
            ports: SessionPorts::default(),
            runner: RunnerHandle::Process { pid: 42, start_time: 7 },
            display: None,
            sink: None,
            lobby: None,
            process: None,
            client_unique_id: String::new(),
            state: SessionState::Paused,
            surround_audio_info: 196_610,
            created_unix_ms: 1,
            updated_unix_ms: 2,
            last_activity_unix_ms: None,
        }
    }

    #[test]
    fn round_trip_and_an_unknown_state_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE_NAME);
        write(&p, &[record(1), record(2)]).unwrap();
        assert_eq!(load(&p).unwrap().records, vec![record(1), record(2)]);
        let text = std::fs::read_to_string(&p).unwrap().replace("\"paused\"", "\"hibernating\"");
        std::fs::write(&p, text).unwrap();
        let loaded = load(&p).unwrap();
        assert!(loaded.records.is_empty() && loaded.moved_aside.is_some(), "{loaded:?}");
    }

    #[tokio::test]
    async fn writer_answers_each_waiter() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE_NAME);
        let w = Writer::spawn(p.clone(), |_| {}).unwrap();
        let a = w.submit(vec![record(1)], true).unwrap();
        let b = w.submit(vec![record(1), record(2)], true).unwrap();
        assert!(a.await.unwrap().is_ok());
        assert!(b.await.unwrap().is_ok());
        assert_eq!(load(&p).unwrap().records.len(), 2, "the newest snapshot is on disk");
        // A path that cannot be written: the waiter gets the error.
        let bad = Writer::spawn(dir.path().join(FILE_NAME).join("x"), |_| {}).unwrap();
        let e = bad.submit(vec![record(1)], true).unwrap().await.unwrap().unwrap_err();
        assert!(matches!(&e, WriteError::Failed(e) if e.kind == ErrorKind::Io), "{e}");
    }
}
