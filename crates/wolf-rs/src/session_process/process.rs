//! The session process (`wolf-rs session-process`, started by the control plane for one session):
//! its own UDP ports for video, audio and control, its control peer, input injection and rumble,
//! and its streams. It listens on its unix socket for the control plane, which may come and go
//! (restarts): the stream goes on without it. It ends when the control plane ends its session.
//! No async runtime: a few threads, each with a bounded wait.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::wire::{self, Command, Reply, Report, Request, UdpPorts, Welcome};
use crate::session_process::control::{ControlChannel, ControlCommand, PeerEvent};
use crate::session_process::stream::{Channel, Client, Senders, StreamRun};

/// How often the process reports when nothing changed.
pub const REPORT_EVERY: Duration = Duration::from_millis(500);
/// A report is not written to a control plane that does not read it for this long.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the control plane hands the process on its command line.
#[derive(Debug, Clone)]
pub struct Args {
    pub session_id: u32,
    /// Where it listens for the control plane.
    pub socket: PathBuf,
    pub bind: IpAddr,
    /// Where its UDP ports come from.
    pub ports: crate::config::PortRange,
    /// Where its display captures log, and whose they are (the control plane's state dir).
    pub log_dir: PathBuf,
    pub owner: String,
    /// A thread silent this long is reported stalled; this long, the process exits (0: never).
    pub warn_after: Duration,
    pub exit_after: Duration,
}

/// The exit code of a session process whose watchdog found a thread hung (the control plane's too).
pub const EXIT_HUNG: i32 = crate::watchdog::EXIT_CODE;

/// Why a session process could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("no free UDP port for its {what} stream in {range}")]
    NoPort { what: &'static str, range: String },
    #[error("{what} socket: {source}")]
    Socket { what: &'static str, source: std::io::Error },
    #[error("listening on {}: {source}", path.display())]
    Listen { path: PathBuf, source: std::io::Error },
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

enum Msg {
    /// A control plane connected (the newest one is the one answered).
    Attached(UnixStream),
    Request(Request),
    Peer(PeerEvent),
    Failed(String),
    PadsChanged,
}

/// Bind `n` UDP sockets on `bind` from `range` (the next port is tried when one is taken).
fn bind_udp(bind: IpAddr, range: crate::config::PortRange) -> Result<[UdpSocket; 3], StartError> {
    let what = ["video", "audio", "control"];
    let mut out = Vec::with_capacity(3);
    let mut ports = range.ports();
    for w in what {
        let socket = loop {
            let Some(p) = ports.next() else {
                return Err(StartError::NoPort { what: w, range: range.to_string() });
            };
            if let Ok(s) = UdpSocket::bind(SocketAddr::new(bind, p)) {
                break s;
            }
        };
        out.push(socket);
        if range == crate::config::PortRange::Any {
            ports = range.ports();
        }
    }
    let [v, a, c]: [UdpSocket; 3] =
        out.try_into().map_err(|_| StartError::NoPort { what: "video", range: range.to_string() })?;
    Ok([v, a, c])
}

fn port(s: &UdpSocket, what: &'static str) -> Result<u16, StartError> {
    s.local_addr().map(|a| a.port()).map_err(|source| StartError::Socket { what, source })
}

/// Run the session process until its session ends (blocking). Returns once everything it started
/// is stopped.
pub fn run(args: Args) -> Result<(), StartError> {
    let id = args.session_id;
    let [video, audio, control] = bind_udp(args.bind, args.ports)?;
    let ports =
        UdpPorts { video: port(&video, "video")?, audio: port(&audio, "audio")?, control: port(&control, "control")? };
    for (s, what) in [(&video, "video"), (&audio, "audio")] {
        s.set_read_timeout(Some(Duration::from_millis(200))).map_err(|source| StartError::Socket { what, source })?;
    }
    let listen_err = |source| StartError::Listen { path: args.socket.clone(), source };
    if let Some(dir) = args.socket.parent() {
        std::fs::create_dir_all(dir).map_err(listen_err)?;
    }
    let _ = std::fs::remove_file(&args.socket);
    let listener = UnixListener::bind(&args.socket).map_err(listen_err)?;
    // Only the host's own user may command the session (end it, stall it, rumble its client).
    std::fs::set_permissions(&args.socket, std::os::unix::fs::PermissionsExt::from_mode(0o600)).map_err(listen_err)?;
    let metrics = crate::metrics::Metrics::new()?;
    let beats = crate::watchdog::Heartbeats::new();
    let client = Arc::new(Client::default());
    let (tx, rx) = mpsc::channel::<Msg>();
    let (control_tx, control_rx) = mpsc::channel::<ControlCommand>();
    let pads: Arc<Mutex<Vec<crate::runners::DeviceNode>>> = Arc::default();
    let display: Arc<Mutex<Option<String>>> = Arc::default();
    let hooks = input_hooks(&control_tx, &pads, &tx);
    let inputs = Arc::new(crate::input::Inputs::new(metrics.clone(), hooks));
    let peer_tx = tx.clone();
    let links = crate::session_process::control::Links {
        session_id: id,
        client: client.clone(),
        metrics: metrics.clone(),
        beats: beats.clone(),
        inputs,
        display: display.clone(),
        events: Box::new(move |e| {
            let _ = peer_tx.send(Msg::Peer(e));
        }),
    };
    let mut control = ControlChannel::spawn(control, control_rx, links)
        .map_err(|source| StartError::Socket { what: "control", source })?;
    let video = Arc::new(video);
    let audio = Arc::new(audio);
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for (socket, channel) in [(video.clone(), Channel::Video), (audio.clone(), Channel::Audio)] {
        let (client, stop) = (client.clone(), stop.clone());
        let t = std::thread::Builder::new()
            .name(format!("pings-{id}"))
            .spawn(move || crate::session_process::stream::read_pings(&socket, channel, &client, &stop))
            .map_err(|source| StartError::Socket { what: "ping", source })?;
        threads.push(t);
    }
    listener.set_nonblocking(true).map_err(|source| StartError::Listen { path: args.socket.clone(), source })?;
    {
        let (tx, stop) = (tx.clone(), stop.clone());
        let accept = std::thread::Builder::new()
            .name(format!("attach-{id}"))
            .spawn(move || accept_loop(&listener, &tx, &stop))
            .map_err(|source| StartError::Socket { what: "attach", source })?;
        threads.push(accept);
    }
    let failed_tx = tx.clone();
    let senders = Senders {
        session_id: id,
        video,
        audio,
        client: client.clone(),
        metrics: metrics.clone(),
        beats: beats.clone(),
        process: Arc::new(crate::runners::process::ProcessRunner::new(args.log_dir.clone(), args.owner.clone())),
        failed: Arc::new(move |why| {
            let _ = failed_tx.send(Msg::Failed(why));
        }),
    };
    tracing::info!(session = id, ?ports, socket = %args.socket.display(), "session process ready");
    let mut state = State {
        id,
        ports,
        senders,
        control_tx,
        display,
        pads,
        metrics,
        beats,
        report: Report::default(),
        run: None,
        plan: None,
        conn: None,
        tx,
        warn_after: args.warn_after,
        exit_after: args.exit_after,
    };
    state.serve(&rx);
    stop.store(true, Ordering::Relaxed);
    control.shutdown();
    for t in threads {
        let _ = t.join();
    }
    let _ = std::fs::remove_file(&args.socket);
    tracing::info!(session = id, "session process ends");
    Ok(())
}

/// Accept control planes until `stop`; each connection is handed to the main loop.
fn accept_loop(listener: &UnixListener, tx: &mpsc::Sender<Msg>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((conn, _)) => {
                if tx.send(Msg::Attached(conn)).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                tracing::warn!(error = %e, "accepting the control plane");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// Reads one connection's requests into the main loop, until it closes.
fn read_requests(mut conn: UnixStream, tx: mpsc::Sender<Msg>, generation: Arc<AtomicU64>, mine: u64) {
    loop {
        match wire::read::<Request>(&mut conn) {
            Ok(r) if generation.load(Ordering::Relaxed) == mine => {
                if tx.send(Msg::Request(r)).is_err() {
                    return;
                }
            }
            // A newer control plane took over: this one's requests are not served.
            Ok(_) => return,
            Err(wire::WireError::Closed) => return,
            Err(e) => {
                tracing::warn!(error = %e, "the control plane's request does not read; detaching it");
                return;
            }
        }
    }
}

/// Where pads' rumble and device nodes go: rumble to the client's peer, nodes into the report.
fn input_hooks(
    control: &mpsc::Sender<ControlCommand>,
    pads: &Arc<Mutex<Vec<crate::runners::DeviceNode>>>,
    tx: &mpsc::Sender<Msg>,
) -> crate::input::Hooks {
    let (rumble_to, pads, changed) = (control.clone(), pads.clone(), tx.clone());
    crate::input::Hooks {
        rumble: Some(Arc::new(move |_session, number, low, high| {
            let _ = rumble_to.send(ControlCommand::Rumble { number, low, high });
        })),
        pad_nodes: Some(Arc::new(move |_session, change| {
            let mut p = pads.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match change {
                crate::input::PadChange::Added(n) => p.extend(n),
                crate::input::PadChange::Removed(n) => p.retain(|x| !n.contains(x)),
            }
            drop(p);
            let _ = changed.send(Msg::PadsChanged);
        })),
    }
}

/// This process's CPU seconds (its exited children's, the display captures, included) and
/// resident memory, from /proc.
fn resources() -> (f64, u64) {
    let Ok(stat) = procfs::process::Process::myself().and_then(|p| p.stat()) else { return (0.0, 0) };
    let ticks = stat.utime + stat.stime + (stat.cutime + stat.cstime).max(0) as u64;
    let tps = procfs::ticks_per_second().max(1) as f64;
    (ticks as f64 / tps, stat.rss * procfs::page_size())
}

struct Conn {
    stream: UnixStream,
}

struct State {
    id: u32,
    ports: UdpPorts,
    senders: Senders,
    control_tx: mpsc::Sender<ControlCommand>,
    display: Arc<Mutex<Option<String>>>,
    pads: Arc<Mutex<Vec<crate::runners::DeviceNode>>>,
    metrics: Arc<crate::metrics::Metrics>,
    beats: Arc<crate::watchdog::Heartbeats>,
    report: Report,
    run: Option<StreamRun>,
    plan: Option<wire::StreamPlan>,
    conn: Option<Conn>,
    /// The main loop's own sender, for the reader threads it starts.
    tx: mpsc::Sender<Msg>,
    warn_after: Duration,
    exit_after: Duration,
}

impl State {
    /// The main loop: requests, the control peer's events and failures, and a report whenever
    /// something changed or `REPORT_EVERY` passed. Returns when the session ends.
    fn serve(&mut self, rx: &mpsc::Receiver<Msg>) {
        let generation = Arc::new(AtomicU64::new(0));
        let mut last_report = Instant::now();
        loop {
            let msg = rx.recv_timeout(REPORT_EVERY.saturating_sub(last_report.elapsed()));
            let mut changed = false;
            match msg {
                Ok(Msg::Attached(conn)) => {
                    let mine = generation.fetch_add(1, Ordering::Relaxed) + 1;
                    if self.attach(conn, &generation, mine) {
                        changed = true;
                    }
                }
                Ok(Msg::Request(r)) => {
                    let (error, exit) = self.request(r.command);
                    self.send(&Reply::Done { id: r.id, error });
                    if exit {
                        self.send_report();
                        return;
                    }
                    changed = true;
                }
                Ok(Msg::Peer(PeerEvent::Connected)) => {
                    self.report.connected = true;
                    changed = true;
                }
                Ok(Msg::Peer(PeerEvent::Disconnected)) => {
                    self.report.connected = false;
                    self.report.disconnects += 1;
                    self.stop_streams();
                    self.senders.client.forget();
                    changed = true;
                }
                Ok(Msg::Failed(why)) => {
                    self.report.failed.get_or_insert(why);
                    changed = true;
                }
                Ok(Msg::PadsChanged) => changed = true,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            if changed || last_report.elapsed() >= REPORT_EVERY {
                self.send_report();
                last_report = Instant::now();
            }
            self.watch();
        }
    }

    /// A control plane connected: it gets the welcome and, from now on, the replies.
    fn attach(&mut self, conn: UnixStream, generation: &Arc<AtomicU64>, mine: u64) -> bool {
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_write_timeout(Some(WRITE_TIMEOUT));
        let Ok(reader) = conn.try_clone() else { return false };
        let welcome = Welcome {
            version: wire::VERSION,
            session_id: self.id,
            pid: std::process::id() as i32,
            ports: self.ports,
            announced: self.senders.client.negotiated().map(|n| n.announced.clone()),
        };
        let mut stream = conn;
        if let Err(e) = wire::write(&mut stream, &welcome) {
            tracing::warn!(error = %e, "welcoming the control plane");
            return false;
        }
        let (tx, generation) = (self.tx.clone(), generation.clone());
        if std::thread::Builder::new()
            .name(format!("requests-{}", self.id))
            .spawn(move || read_requests(reader, tx, generation, mine))
            .is_err()
        {
            return false;
        }
        tracing::info!(session = self.id, "control plane attached");
        self.conn = Some(Conn { stream });
        true
    }

    /// Apply one command; (its error, whether the process now exits).
    fn request(&mut self, command: Command) -> (Option<String>, bool) {
        match command {
            Command::Start { negotiated, plan } => {
                self.stop_streams();
                self.senders.client.set_negotiated(*negotiated);
                self.start(*plan);
                (None, false)
            }
            Command::Switch { plan } => {
                // Addresses and numbering are kept; input follows to the new display.
                self.stop_streams();
                let _ = self.control_tx.send(ControlCommand::CloseInput);
                if self.senders.client.negotiated().is_some() {
                    self.start(*plan);
                } else {
                    self.plan = Some(*plan);
                }
                (None, false)
            }
            Command::End { termination } => {
                let _ = self.control_tx.send(ControlCommand::Terminate { reason: termination });
                self.stop_streams();
                (None, true)
            }
            Command::Rumble { number, low, high } => {
                let _ = self.control_tx.send(ControlCommand::Rumble { number, low, high });
                (None, false)
            }
            Command::RequestIdr => {
                self.senders.client.request_keyframe();
                (None, false)
            }
            Command::Stall { kind, seconds } => match self.beats.stall(&kind, seconds) {
                Some(name) => {
                    tracing::warn!(thread = %name, seconds, "fault injection: stalling a thread");
                    (None, false)
                }
                None => (Some(format!("no {kind} thread runs")), false),
            },
        }
    }

    fn start(&mut self, plan: wire::StreamPlan) {
        *self.display.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = plan.input_display.clone();
        self.run = Some(self.senders.start(&plan));
        self.plan = Some(plan);
        self.report.streaming = true;
    }

    fn stop_streams(&mut self) {
        if let Some(run) = self.run.take() {
            run.stop();
        }
        self.report.streaming = false;
    }

    /// A thread silent past the exit threshold hangs the session: the control plane is told, and
    /// the process ends at once (its streams cannot be stopped in order with a thread stuck).
    fn watch(&mut self) {
        if self.exit_after.is_zero() {
            return;
        }
        let Some(hung) = self.beats.silent(self.exit_after).into_iter().next() else { return };
        tracing::error!(session = self.id, thread = %hung.name, silent_ms = hung.silent.as_millis() as u64,
            "a thread of the session process hangs: it exits");
        self.report.hung = Some(hung.name);
        self.send_report();
        // SAFETY: _exit ends the process without running anything else (a hung thread may hold a lock).
        unsafe { libc::_exit(EXIT_HUNG) }
    }

    fn send_report(&mut self) {
        self.report.figures = self.metrics.stream_counts();
        self.report.activity_unix_ms = self.senders.client.activity_unix_ms();
        (self.report.cpu_seconds, self.report.rss_bytes) = resources();
        self.report.stalled = self.beats.silent(self.warn_after).into_iter().map(|s| s.name).collect();
        self.report.pads = self
            .pads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|n| (n.path.clone(), n.major, n.minor))
            .collect();
        let report = Reply::Report(Box::new(self.report.clone()));
        self.send(&report);
    }

    /// To the attached control plane; one that does not read is detached (it attaches again).
    fn send(&mut self, reply: &Reply) {
        let Some(c) = self.conn.as_mut() else { return };
        if let Err(e) = wire::write(&mut c.stream, reply) {
            tracing::info!(session = self.id, error = %e, "control plane detached");
            self.conn = None;
        }
    }
}
