//! The control plane's side of a session process: starting one, attaching to it (at its start, or
//! after a control-plane restart), sending it commands and hearing its reports. One task per
//! process owns the connection; a process that stops reporting for `beat_limit` is killed, and
//! one that is gone is told to the host, which ends its session with the reason.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::ProcessRecord;
use super::wire::{self, Command, Reply, Report, Request, UdpPorts, Welcome, WireError};
use crate::runners::process::{ProcessRunner, Role};

/// How long a new session process gets to listen on its socket.
const READY_WITHIN: Duration = Duration::from_secs(10);
/// How long a command may take to be answered.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// Why a session process could not be started or reached.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("starting the session process: {0}")]
    Start(#[from] crate::runners::process::StartError),
    #[error("the session process did not listen within {} s (see {})", READY_WITHIN.as_secs(), log.display())]
    NotReady { log: PathBuf },
    #[error("the session process's socket {}: {source}", path.display())]
    Connect { path: PathBuf, source: std::io::Error },
    #[error("the session process: {0}")]
    Wire(#[from] WireError),
    #[error("the session process speaks version {0}, this control plane {v}", v = wire::VERSION)]
    Version(u32),
    #[error("the session process is for session {0}")]
    WrongSession(u32),
    #[error("the session process is gone")]
    Gone,
    #[error("the session process did not answer within {} s", ANSWER_WITHIN.as_secs())]
    NoAnswer,
    #[error("the session process refused: {0}")]
    Refused(String),
    #[error("blocking task: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// What a link tells the host about its session process.
#[derive(Debug)]
pub enum Event {
    Report(Box<Report>),
    /// The process (`pid`) is gone (`hung`: it stopped reporting and was killed).
    Lost {
        hung: bool,
        pid: i32,
    },
}

/// Where links send their events: (session id, event).
pub type Events = mpsc::UnboundedSender<(u32, Event)>;

type Pending = (Command, oneshot::Sender<Result<(), LinkError>>);

/// A session process the control plane is attached to.
pub struct Link {
    pub session_id: u32,
    pub record: ProcessRecord,
    pub ports: UdpPorts,
    /// What its client negotiated, as the process said when attached.
    pub announced: Option<wolf_protocol::rtsp::StreamConfig>,
    requests: mpsc::UnboundedSender<Pending>,
    /// The control plane lets go of it (a restart in place): the process streams on.
    detach: CancellationToken,
}

impl Link {
    /// Ask the process and wait (bounded) for its answer.
    pub async fn request(&self, command: Command) -> Result<(), LinkError> {
        let (tx, rx) = oneshot::channel();
        self.requests.send((command, tx)).map_err(|_| LinkError::Gone)?;
        match tokio::time::timeout(ANSWER_WITHIN, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(LinkError::Gone),
            Err(_) => Err(LinkError::NoAnswer),
        }
    }

    /// Send without waiting for the answer (fault injection from the health thread).
    pub fn send(&self, command: Command) -> bool {
        let (tx, _) = oneshot::channel();
        self.requests.send((command, tx)).is_ok()
    }

    /// Let go of the process without touching it.
    pub fn detach(&self) {
        self.detach.cancel();
    }
}

/// Starts session processes and attaches to them.
pub struct Spawner {
    /// The `wolf-rs` binary.
    pub exe: PathBuf,
    pub process: Arc<ProcessRunner>,
    /// Where the sockets go.
    pub run_dir: PathBuf,
    pub bind: IpAddr,
    pub ports: crate::config::PortRange,
    pub owner: String,
    pub events: Events,
    /// A process silent this long is killed.
    pub beat_limit: Duration,
    /// The watchdog's thresholds, for the process's own threads.
    pub warn_after: Duration,
    pub exit_after: Duration,
}

impl Spawner {
    pub fn socket(&self, session_id: u32) -> PathBuf {
        self.run_dir.join(format!("session-{session_id}.sock"))
    }

    /// Start the session process of `session_id` and attach to it.
    pub async fn start(&self, session_id: u32) -> Result<Arc<Link>, LinkError> {
        let socket = self.socket(session_id);
        let command: Vec<String> = vec![
            self.exe.display().to_string(),
            "session-process".into(),
            "--session".into(),
            session_id.to_string(),
            "--socket".into(),
            socket.display().to_string(),
            "--bind".into(),
            self.bind.to_string(),
            "--udp-ports".into(),
            self.ports.to_string(),
            "--log-dir".into(),
            self.process.log_dir().display().to_string(),
            "--owner".into(),
            self.owner.clone(),
            "--warn-after-ms".into(),
            self.warn_after.as_millis().to_string(),
            "--exit-after-ms".into(),
            self.exit_after.as_millis().to_string(),
        ];
        let log = self.process.log_dir().join(format!("session-{session_id}-stream.log"));
        let (p, l) = (self.process.clone(), log.clone());
        let env = std::collections::BTreeMap::from([("WOLF_LOG_LEVEL".to_owned(), log_level())]);
        let (pid, start_time) =
            tokio::task::spawn_blocking(move || p.spawn(Role::Session, session_id, &command, &env, &l)).await??;
        let record = ProcessRecord { pid, start_time, socket };
        let deadline = tokio::time::Instant::now() + READY_WITHIN;
        loop {
            match self.attach(session_id, &record).await {
                Ok(link) => return Ok(link),
                Err(LinkError::Connect { .. }) if tokio::time::Instant::now() < deadline => {
                    if !self.alive(&record).await {
                        return Err(LinkError::NotReady { log });
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(LinkError::Connect { .. }) => {
                    self.kill(&record);
                    return Err(LinkError::NotReady { log });
                }
                Err(e) => {
                    self.kill(&record);
                    return Err(e);
                }
            }
        }
    }

    /// Attach to the running process of `record`.
    pub async fn attach(&self, session_id: u32, record: &ProcessRecord) -> Result<Arc<Link>, LinkError> {
        let (reader, writer, welcome) = connect(session_id, record).await?;
        let (requests, rx) = mpsc::unbounded_channel();
        let detach = CancellationToken::new();
        let link = Arc::new(Link {
            session_id,
            record: record.clone(),
            ports: welcome.ports,
            announced: welcome.announced,
            requests,
            detach: detach.clone(),
        });
        let task = Task {
            session_id,
            record: record.clone(),
            events: self.events.clone(),
            beat_limit: self.beat_limit,
            process: self.process.clone(),
        };
        tokio::spawn(task.run(reader, writer, rx, detach));
        Ok(link)
    }

    /// Is the recorded process still that process? (reaps it when it was our child).
    pub async fn alive(&self, record: &ProcessRecord) -> bool {
        let (p, r) = (self.process.clone(), record.clone());
        tokio::task::spawn_blocking(move || p.alive(r.pid, r.start_time)).await.unwrap_or(false)
    }

    /// SIGKILL to the process's group, when it is still that process.
    pub fn kill(&self, record: &ProcessRecord) {
        kill(record);
    }
}

/// The log level the control plane runs with, for its session processes.
fn log_level() -> String {
    std::env::var("WOLF_LOG_LEVEL").unwrap_or_else(|_| "info".to_owned())
}

fn kill(record: &ProcessRecord) {
    if crate::runners::process::start_time(record.pid) == Some(record.start_time) {
        // SAFETY: kill(2) on the process group of a pid whose start time we checked.
        unsafe { libc::kill(-record.pid, libc::SIGKILL) };
    }
}

async fn connect(
    session_id: u32,
    record: &ProcessRecord,
) -> Result<(OwnedReadHalf, OwnedWriteHalf, Welcome), LinkError> {
    let stream = UnixStream::connect(&record.socket)
        .await
        .map_err(|source| LinkError::Connect { path: record.socket.clone(), source })?;
    let (mut reader, writer) = stream.into_split();
    let welcome: Welcome =
        tokio::time::timeout(ANSWER_WITHIN, read_frame(&mut reader)).await.map_err(|_| LinkError::NoAnswer)??;
    if welcome.version != wire::VERSION {
        return Err(LinkError::Version(welcome.version));
    }
    if welcome.session_id != session_id {
        return Err(LinkError::WrongSession(welcome.session_id));
    }
    Ok((reader, writer, welcome))
}

async fn read_frame<T: for<'de> serde::Deserialize<'de>>(r: &mut OwnedReadHalf) -> Result<T, WireError> {
    let mut header = [0u8; 4];
    r.read_exact(&mut header).await.map_err(eof)?;
    let mut body = vec![0u8; wire::frame_len(header)?];
    r.read_exact(&mut body).await.map_err(eof)?;
    Ok(serde_json::from_slice(&body)?)
}

fn eof(e: std::io::Error) -> WireError {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => WireError::Closed,
        _ => WireError::Io(e),
    }
}

/// The task that owns one process's connection.
struct Task {
    session_id: u32,
    record: ProcessRecord,
    events: Events,
    beat_limit: Duration,
    process: Arc<ProcessRunner>,
}

impl Task {
    async fn run(
        self,
        reader: OwnedReadHalf,
        mut writer: OwnedWriteHalf,
        mut requests: mpsc::UnboundedReceiver<Pending>,
        detach: CancellationToken,
    ) {
        let id = self.session_id;
        let (frames_tx, mut frames) = mpsc::channel::<Result<Reply, WireError>>(64);
        let mut reading = tokio::spawn(read_replies(reader, frames_tx.clone()));
        let mut pending: HashMap<u64, oneshot::Sender<Result<(), LinkError>>> = HashMap::new();
        let mut next_id = 1u64;
        let mut heard = tokio::time::Instant::now();
        let lost = loop {
            tokio::select! {
                _ = detach.cancelled() => {
                    reading.abort();
                    return;
                }
                r = requests.recv() => {
                    let Some((command, done)) = r else {
                        // Every handle dropped: the control plane shuts down; the process streams on.
                        reading.abort();
                        return;
                    };
                    let rid = next_id;
                    next_id += 1;
                    let frame = wire::encode(&Request { id: rid, command });
                    let written = match frame {
                        Ok(f) => writer.write_all(&f).await.map_err(WireError::Io),
                        Err(e) => Err(e),
                    };
                    match written {
                        Ok(()) => {
                            pending.insert(rid, done);
                        }
                        Err(e) => {
                            let _ = done.send(Err(LinkError::Wire(e)));
                        }
                    }
                }
                f = tokio::time::timeout_at(heard + self.beat_limit, frames.recv()) => match f {
                    Ok(Some(Ok(Reply::Report(r)))) => {
                        heard = tokio::time::Instant::now();
                        let _ = self.events.send((id, Event::Report(r)));
                    }
                    Ok(Some(Ok(Reply::Done { id: rid, error }))) => {
                        if let Some(done) = pending.remove(&rid) {
                            let _ = done.send(error.map_or(Ok(()), |e| Err(LinkError::Refused(e))));
                        }
                    }
                    Ok(Some(Err(e))) => {
                        // The connection broke: the process ended, or it is to be reached again.
                        tracing::debug!(session = id, error = %e, "session process connection closed");
                        if !self.alive().await {
                            break false;
                        }
                        match self.reconnect(&detach).await {
                            Some((r, w)) => {
                                heard = tokio::time::Instant::now();
                                writer = w;
                                reading = tokio::spawn(read_replies(r, frames_tx.clone()));
                                for (_, done) in pending.drain() {
                                    let _ = done.send(Err(LinkError::Gone));
                                }
                            }
                            None if detach.is_cancelled() => return,
                            None => {
                                // Alive and not answering: hung.
                                let alive = self.alive().await;
                                if alive {
                                    kill(&self.record);
                                }
                                break alive;
                            }
                        }
                    }
                    Ok(None) => break false,
                    Err(_) => {
                        tracing::error!(session = id, pid = self.record.pid, limit_ms = self.beat_limit.as_millis() as u64,
                            "the session process stopped reporting: killing it");
                        kill(&self.record);
                        break true;
                    }
                }
            }
        };
        reading.abort();
        for (_, done) in pending.drain() {
            let _ = done.send(Err(LinkError::Gone));
        }
        let _ = self.events.send((id, Event::Lost { hung: lost, pid: self.record.pid }));
    }

    async fn alive(&self) -> bool {
        let (p, r) = (self.process.clone(), self.record.clone());
        tokio::task::spawn_blocking(move || p.alive(r.pid, r.start_time)).await.unwrap_or(false)
    }

    /// Connect again while the process lives (bounded by `beat_limit`).
    async fn reconnect(&self, detach: &CancellationToken) -> Option<(OwnedReadHalf, OwnedWriteHalf)> {
        let deadline = tokio::time::Instant::now() + self.beat_limit;
        while tokio::time::Instant::now() < deadline && !detach.is_cancelled() {
            if let Ok((r, w, _)) = connect(self.session_id, &self.record).await {
                return Some((r, w));
            }
            if !self.alive().await {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }
}

async fn read_replies(mut reader: OwnedReadHalf, to: mpsc::Sender<Result<Reply, WireError>>) {
    loop {
        let r = read_frame::<Reply>(&mut reader).await;
        let end = r.is_err();
        if to.send(r).await.is_err() || end {
            return;
        }
    }
}
