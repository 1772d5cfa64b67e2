//! Streaming: each client's UDP addresses learned from its pings, and per session one sender
//! thread for video and one for audio, started by PLAY and stopped (joined) by /cancel.

pub mod audio;
pub mod video;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::commands::{Ends, StreamCommand};
use crate::config::Config;
use crate::media::pipeline::{EncoderPipeline, Ended, Handoff, Reporting};
use crate::media::{EncoderChoice, MediaError};
use crate::sessions::Sessions;
use crate::sessions::live::{Channel, Live, StreamRun};

/// How long a started stream waits for the client's first ping on a port.
pub const PING_WAIT: Duration = Duration::from_secs(20);

/// A ping's payload: the 16-byte `X-SS-Ping-Payload` of a 20-byte SS_PING. A bare `PING` (clients
/// that were given no payload) has none, so it can never be tied to a session.
pub fn ping_payload(datagram: &[u8]) -> Option<&[u8]> {
    match datagram.len() {
        20 => Some(&datagram[..16]),
        _ => None,
    }
}

/// Reads pings on one stream socket and records the sender of each session's payload: only the
/// session's client knows it (RTSP handed it over, sealed when the client encrypts RTSP), so the
/// stream goes where it asks, whatever address it pings from, and nowhere a stranger asks.
pub async fn read_pings(
    socket: Arc<tokio::net::UdpSocket>,
    channel: Channel,
    sessions: Arc<Sessions>,
    shutdown: CancellationToken,
) {
    let mut buf = [0u8; 64];
    loop {
        let got = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = socket.recv_from(&mut buf) => r,
        };
        let Ok((n, from)) = got else { continue };
        let Some(payload) = ping_payload(&buf[..n]) else {
            continue;
        };
        if let Some((id, live)) = sessions.live_by_ping_payload(payload)
            && live.set_addr(channel, from)
        {
            tracing::debug!(session = id, ?channel, %from, "ping: client address learned");
        }
    }
}

/// Wait (bounded) until the client's address on a port is known.
async fn wait_for_ping(
    live: &Live,
    channel: Channel,
    session_id: u32,
    cancel: &CancellationToken,
) -> Option<SocketAddr> {
    let found = tokio::time::timeout(PING_WAIT, async {
        loop {
            if let Some(a) = live.addr(channel) {
                return Some(a);
            }
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = live.ended().cancelled() => return None,
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    })
    .await;
    match found {
        Ok(a) => a,
        Err(_) => {
            tracing::warn!(session = session_id, "no ping from the client within {} s", PING_WAIT.as_secs());
            None
        }
    }
}

/// One UDP port's socket (the client's address on it is in the session's `Live`).
pub struct Port {
    pub socket: UdpSocket,
}

/// Starts and stops the streams of each session on command.
pub struct Streams {
    pub config: Arc<Config>,
    /// Where a session's app (and its sources) is looked up.
    pub apps: Arc<crate::state::apps::AppCatalog>,
    pub sessions: Arc<Sessions>,
    pub video: Port,
    pub audio: Port,
    pub encoder: EncoderChoice,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub beats: Arc<crate::watchdog::Heartbeats>,
    /// Where a failed stream asks for its session's end.
    pub ends: Ends,
    /// The display captures and the audio server the pipelines read.
    pub runners: Arc<crate::runners::Runners>,
}

impl Streams {
    /// Serve stream commands; a session's running streams are held by its `Live`.
    pub async fn run(
        self,
        mut commands: tokio::sync::mpsc::UnboundedReceiver<StreamCommand>,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) {
        let this = Arc::new(self);
        loop {
            let cmd = tokio::select! {
                _ = shutdown.cancelled() => break,
                c = commands.recv() => c,
            };
            match cmd {
                None => break,
                Some(StreamCommand::Start { session_id }) => this.start(session_id, &shutdown, &tracker),
                Some(StreamCommand::Restart { session_id, done }) => {
                    // Only streams that run; the client's addresses are kept.
                    if let Some(run) = this.sessions.live(session_id).and_then(|l| l.take_streams()) {
                        stop(&run).await;
                        tracing::info!(session = session_id, "streams restart with the session's new sources");
                        this.start(session_id, &shutdown, &tracker);
                    }
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                }
                Some(StreamCommand::Stop { session_id, done }) => {
                    if let Some(live) = this.sessions.live(session_id)
                        && let Some(run) = live.take_streams()
                    {
                        stop(&run).await;
                        live.forget_client();
                        tracing::info!(session = session_id, "streams stopped");
                    }
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                }
            }
        }
        for (_, live) in this.sessions.lives() {
            if let Some(run) = live.take_streams() {
                stop(&run).await;
            }
        }
    }

    /// Start the session's streams unless they run (or it has ended).
    fn start(self: &Arc<Self>, session_id: u32, shutdown: &CancellationToken, tracker: &TaskTracker) {
        let Some(run) = self.sessions.live(session_id).and_then(|l| l.start_streams(shutdown)) else {
            return;
        };
        let (v, a) = (self.clone(), self.clone());
        let (rv, ra) = (run.clone(), run);
        tracker.spawn(async move { v.start_stream(Kind::Video, session_id, rv).await });
        tracker.spawn(async move { a.start_stream(Kind::Audio, session_id, ra).await });
    }

    /// Once the client pings the stream's port, its sender thread.
    async fn start_stream(self: Arc<Self>, kind: Kind, session_id: u32, run: Arc<StreamRun>) {
        let cancel = run.cancel().clone();
        let Some(live) = self.sessions.live(session_id) else { return };
        let Some(addr) = wait_for_ping(&live, kind.channel(), session_id, &cancel).await else {
            return;
        };
        let Some(session) = self.sessions.by_id(session_id) else {
            return;
        };
        let started = match kind {
            Kind::Video => video::spawn(&self, &session, addr, cancel),
            Kind::Audio => audio::spawn(&self, &session, addr, cancel),
        };
        match started {
            Ok(t) => run.add(t),
            Err(e) => {
                self.metrics.pipeline_errors.inc();
                self.ends.fail(session_id, &format!("{kind} stream did not start: {e}"));
            }
        }
    }
}

/// One of a session's two streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Video,
    Audio,
}

impl Kind {
    fn channel(self) -> Channel {
        match self {
            Kind::Video => Channel::Video,
            Kind::Audio => Channel::Audio,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Kind::Video => "video",
            Kind::Audio => "audio",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The sender thread of one stream, the same for both kinds: it starts the
/// pipeline (frames counted, beats watched), runs `send` until the stream ends, and ends the session
/// when the pipeline fails.
fn spawn_sender(
    streams: &Streams,
    kind: Kind,
    id: u32,
    pipeline_text: String,
    capture: Option<crate::runners::display::CaptureSpec>,
    send: impl FnOnce(EncoderPipeline, &crate::metrics::Metrics, &crate::watchdog::Heartbeat) -> Ended + Send + 'static,
) -> Result<JoinHandle<()>, MediaError> {
    let metrics = streams.metrics.clone();
    let video = kind == Kind::Video;
    let handoff = if video { Handoff::VIDEO } else { Handoff::DropNewest };
    let reporting = Reporting {
        frames: Some(metrics.encoder_frames.clone()),
        video_drops: video.then(|| metrics.video_frames_dropped.clone()),
        heartbeat: Some((streams.beats.clone(), crate::watchdog::thread_name("pipeline", kind.as_str(), id))),
    };
    let (beats, ends) = (streams.beats.clone(), streams.ends.clone());
    std::thread::Builder::new()
        .name(format!("{kind}-{id}"))
        .spawn(move || {
            // Every line this thread logs names its session.
            let _span = tracing::info_span!("stream", session = id, kind = kind.as_str()).entered();
            let beat = beats.register("stream", crate::watchdog::thread_name("stream", kind.as_str(), id));
            // Lives as long as the stream: dropped (the child stopped) when this thread ends.
            let _capture = match capture.map(crate::runners::display::Capture::start).transpose() {
                Ok(c) => c,
                Err(e) => {
                    metrics.pipeline_errors.inc();
                    ends.fail(id, &format!("{kind} capture did not start: {e}"));
                    return;
                }
            };
            let pipeline = match EncoderPipeline::start(pipeline_text, handoff, reporting) {
                Ok(p) => p,
                Err(e) => {
                    metrics.pipeline_errors.inc();
                    ends.fail(id, &format!("{kind} pipeline did not start: {e}"));
                    return;
                }
            };
            metrics.streams_started.inc();
            if let Ended::Error(e) = send(pipeline, &metrics, &beat) {
                metrics.pipeline_errors.inc();
                ends.fail(id, &format!("{kind} pipeline error: {e}"));
            }
        })
        .map_err(|source| MediaError::Spawn { what: kind.as_str(), source })
}

/// Cancel and join, off the async workers.
pub async fn stop(run: &StreamRun) {
    let threads = run.stop();
    if !threads.is_empty() {
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// Sockets are non-blocking (tokio reads pings from them): retry a full send buffer briefly.
fn send(socket: &UdpSocket, packet: &[u8], addr: SocketAddr) -> bool {
    for _ in 0..20 {
        match socket.send_to(packet, addr) {
            Ok(_) => return true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_micros(200)),
            Err(_) => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn pings() {
        assert_eq!(super::ping_payload(b"PING"), None, "no payload: never tied to a session");
        let mut p = b"ABCDEFGHIJKLMNOP".to_vec();
        p.extend_from_slice(&7u32.to_be_bytes());
        assert_eq!(super::ping_payload(&p), Some(&b"ABCDEFGHIJKLMNOP"[..]));
        assert_eq!(super::ping_payload(b"nope"), None);
        assert_eq!(super::ping_payload(&[0u8; 64]), None);
    }
}
