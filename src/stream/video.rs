//! The video side of a session: wait for the client's ping, run the pipeline, packetize every
//! frame and send it to the address the pings came from, on a thread of its own.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{PingTable, StreamCommand, ping_payload};
use crate::config::Config;
use crate::media::pipeline::VideoPipeline;
use crate::media::{self, EncoderChoice, VideoSpec};
use crate::protocol::annexb::{NAL_AUD, NAL_SEI, strip_h264};
use crate::protocol::video::{FrameType, Packetizer, VideoParams};
use crate::sessions::Sessions;

/// How long a started stream waits for the client's first video ping.
pub const PING_WAIT: Duration = Duration::from_secs(20);

/// Counters across all video streams.
#[derive(Debug, Default)]
pub struct VideoStats {
    pub frames_sent: AtomicU64,
    pub packets_sent: AtomicU64,
    pub packets_dropped: AtomicU64,
    pub streams_started: AtomicU64,
    pub stream_errors: AtomicU64,
}

/// Reads pings on the video socket and records the sender of each session's payload.
pub async fn read_pings(
    socket: Arc<tokio::net::UdpSocket>,
    sessions: Arc<Sessions>,
    pings: Arc<PingTable>,
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
        let ip = from.ip().to_canonical();
        let session = sessions.list().into_iter().find(|s| match payload {
            Some(p) => s.rtsp.ping_payload.as_bytes() == p && s.client_ip == ip,
            None => s.client_ip == ip,
        });
        if let Some(s) = session
            && pings.video(s.id) != Some(from)
        {
            tracing::debug!(session = s.id, %from, "video ping: client address learned");
            pings.set_video(s.id, from);
        }
    }
}

struct Running {
    cancel: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

/// Starts and stops the video stream of each session on command.
pub struct VideoStreams {
    pub config: Arc<Config>,
    pub sessions: Arc<Sessions>,
    pub pings: Arc<PingTable>,
    pub socket: UdpSocket,
    pub encoder: EncoderChoice,
    pub stats: Arc<VideoStats>,
}

impl VideoStreams {
    pub async fn run(
        self,
        mut commands: tokio::sync::mpsc::Receiver<StreamCommand>,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) {
        let this = Arc::new(self);
        let mut running: HashMap<u32, Arc<std::sync::Mutex<Running>>> = HashMap::new();
        loop {
            let cmd = tokio::select! {
                _ = shutdown.cancelled() => break,
                c = commands.recv() => c,
            };
            match cmd {
                None => break,
                Some(StreamCommand::Start { session_id }) => {
                    if running.contains_key(&session_id) {
                        continue;
                    }
                    let r = Arc::new(std::sync::Mutex::new(Running {
                        cancel: shutdown.child_token(),
                        thread: None,
                    }));
                    running.insert(session_id, r.clone());
                    tracker.spawn(this.clone().start(session_id, r));
                }
                Some(StreamCommand::Stop { session_id }) => {
                    if let Some(r) = running.remove(&session_id) {
                        stop(r).await;
                        this.pings.forget(session_id);
                        tracing::info!(session = session_id, "video stream stopped");
                    }
                }
            }
        }
        for (_, r) in running.drain() {
            stop(r).await;
        }
    }

    async fn start(self: Arc<Self>, session_id: u32, slot: Arc<std::sync::Mutex<Running>>) {
        let cancel = match slot.lock() {
            Ok(g) => g.cancel.clone(),
            Err(p) => p.into_inner().cancel.clone(),
        };
        // The client pings from its video socket once RTSP is done; wait for that address.
        let mut addr = None;
        let waited = tokio::time::timeout(PING_WAIT, async {
            loop {
                if let Some(a) = self.pings.video(session_id) {
                    addr = Some(a);
                    return;
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
        })
        .await;
        let Some(addr) = addr else {
            if waited.is_err() {
                tracing::warn!(
                    session = session_id,
                    "no video ping from the client within {} s",
                    PING_WAIT.as_secs()
                );
            }
            return;
        };
        let Some(session) = self.sessions.list().into_iter().find(|s| s.id == session_id) else {
            return;
        };
        let Some(cfg) = session.rtsp.stream.clone() else { return };
        let source = self
            .config
            .app(session.app_id)
            .map_or_else(|| "videotestsrc is-live=true".to_owned(), |a| a.video_source.clone());
        let spec = VideoSpec {
            source,
            width: cfg.width,
            height: cfg.height,
            fps: cfg.fps,
            bitrate_kbps: cfg.bitrate_kbps.max(500),
            slices: cfg.slices_per_frame,
        };
        let dir = (!self.config.video.pipelines_dir.is_empty())
            .then(|| std::path::PathBuf::from(&self.config.video.pipelines_dir));
        let candidate = self.encoder.h264;
        let params = VideoParams {
            packet_size: cfg.packet_size,
            fec_percent: self.config.video.fec_percentage,
            min_parity: cfg.min_fec_packets,
        };
        let socket = match self.socket.try_clone() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(session = session_id, error = %e, "cannot clone the video socket");
                return;
            }
        };
        let stats = self.stats.clone();
        let thread = std::thread::Builder::new()
            .name(format!("video-{session_id}"))
            .spawn(move || {
                let text = match media::template(&candidate, dir.as_deref()).and_then(|t| media::render(&t, &spec)) {
                    Ok(t) => t,
                    Err(e) => {
                        stats.stream_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(session = session_id, error = %e, "video pipeline text");
                        return;
                    }
                };
                let (pipeline, packetizer) = match (VideoPipeline::start(text), Packetizer::new(params)) {
                    (Ok(p), Ok(k)) => (p, k),
                    (Err(e), _) => {
                        stats.stream_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(session = session_id, error = %e, "video pipeline did not start");
                        return;
                    }
                    (_, Err(e)) => {
                        stats.stream_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(session = session_id, error = %e, "video parameters");
                        return;
                    }
                };
                stats.streams_started.fetch_add(1, Ordering::Relaxed);
                tracing::info!(session = session_id, %addr, encoder = candidate.name, "video stream started");
                send_loop(pipeline, packetizer, socket, addr, cancel, stats);
            });
        match thread {
            Ok(t) => match slot.lock() {
                Ok(mut g) => g.thread = Some(t),
                Err(p) => p.into_inner().thread = Some(t),
            },
            Err(e) => tracing::error!(session = session_id, error = %e, "cannot spawn the video thread"),
        }
    }
}

/// Cancel and join, off the async workers.
async fn stop(r: Arc<std::sync::Mutex<Running>>) {
    let thread = {
        let mut g = match r.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.cancel.cancel();
        g.thread.take()
    };
    if let Some(t) = thread {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
}

fn send_loop(
    pipeline: VideoPipeline,
    mut packetizer: Packetizer,
    socket: UdpSocket,
    addr: SocketAddr,
    cancel: CancellationToken,
    stats: Arc<VideoStats>,
) {
    while !cancel.is_cancelled() {
        let frame = match pipeline.frames.recv_timeout(Duration::from_millis(100)) {
            Ok(f) => f,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if pipeline.has_ended() {
                    break;
                }
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let kind = if frame.keyframe { FrameType::Idr } else { FrameType::P };
        let data = strip_h264(&frame.data, &[NAL_AUD, NAL_SEI]);
        let latency = (frame.produced.elapsed().as_micros() / 100).min(u16::MAX as u128) as u16;
        let packets = match packetizer.packetize(&data, kind, frame.pts_90k, latency) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "frame not sent");
                stats.stream_errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        for p in &packets {
            if send(&socket, p, addr) {
                stats.packets_sent.fetch_add(1, Ordering::Relaxed);
            } else {
                stats.packets_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        stats.frames_sent.fetch_add(1, Ordering::Relaxed);
    }
    let ended = pipeline.stop();
    tracing::debug!(?ended, "video pipeline ended");
}

/// The socket is non-blocking (tokio reads pings from it): retry a full send buffer briefly.
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
