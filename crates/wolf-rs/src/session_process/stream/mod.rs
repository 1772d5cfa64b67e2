//! Streaming, inside a session process: the client's UDP addresses learned from its pings, and one
//! sender thread for video and one for audio, started by the control plane's `Start` (PLAY) and
//! stopped (joined) by a switch of sources, the client leaving, or the session's end.

pub mod audio;
pub mod video;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::media::MediaError;
use crate::media::pipeline::{EncoderPipeline, Ended, Handoff, Reporting};
use crate::session_process::wire::{Negotiated, StreamPlan};

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

/// A stream port the client pings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Video,
    Audio,
}

/// What a session's streams hand to the next ones when they restart (a lobby joined or left):
/// frame and sequence numbers and the encryption counters go on, so the client sees one stream and
/// no nonce is used twice under its key. Forgotten when the client leaves.
#[derive(Default)]
pub struct Carry {
    pub video: Option<(wolf_protocol::video::Packetizer, Option<wolf_protocol::video::VideoSealer>)>,
    pub audio: Option<wolf_protocol::audio::AudioPacketizer>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the session's client is to its streams: what it negotiated, where it pings from, its
/// pending keyframe request, what the last streams carried, when it was last heard from.
#[derive(Default)]
pub struct Client {
    negotiated: Mutex<Option<Arc<Negotiated>>>,
    video_addr: Mutex<Option<SocketAddr>>,
    audio_addr: Mutex<Option<SocketAddr>>,
    keyframe: AtomicBool,
    carry: Mutex<Carry>,
    activity_ms: std::sync::atomic::AtomicU64,
}

impl Client {
    pub fn negotiated(&self) -> Option<Arc<Negotiated>> {
        lock(&self.negotiated).clone()
    }

    /// PLAY: the client's keys and the payloads it will present.
    pub fn set_negotiated(&self, n: Negotiated) {
        *lock(&self.negotiated) = Some(Arc::new(n));
    }

    fn addr_slot(&self, channel: Channel) -> &Mutex<Option<SocketAddr>> {
        match channel {
            Channel::Video => &self.video_addr,
            Channel::Audio => &self.audio_addr,
        }
    }

    /// A ping arrived on `channel`: its sender is the client when it carries the client's payload
    /// (only the client learned it, sealed when it encrypts RTSP). `true` when the address is new.
    pub fn pinged(&self, channel: Channel, datagram: &[u8], from: SocketAddr) -> bool {
        let ours =
            ping_payload(datagram).is_some_and(|p| self.negotiated().is_some_and(|n| n.ping_payload.as_bytes() == p));
        if !ours {
            return false;
        }
        self.touch();
        lock(self.addr_slot(channel)).replace(from) != Some(from)
    }

    pub fn addr(&self, channel: Channel) -> Option<SocketAddr> {
        *lock(self.addr_slot(channel))
    }

    /// The client left: what it negotiated, its addresses, keyframe request and carried numbering
    /// are forgotten; it negotiates again when it comes back.
    pub fn forget(&self) {
        *lock(&self.negotiated) = None;
        *lock(&self.video_addr) = None;
        *lock(&self.audio_addr) = None;
        self.keyframe.store(false, Ordering::Relaxed);
        *lock(&self.carry) = Carry::default();
    }

    pub fn carry(&self) -> std::sync::MutexGuard<'_, Carry> {
        lock(&self.carry)
    }

    /// The client asked for a keyframe (IDR request on the control channel).
    pub fn request_keyframe(&self) {
        self.keyframe.store(true, Ordering::Relaxed);
    }

    /// Taken by the video sender each turn.
    pub fn take_keyframe(&self) -> bool {
        self.keyframe.swap(false, Ordering::Relaxed)
    }

    pub fn touch(&self) {
        self.activity_ms.store(crate::metrics::unix_ms(), Ordering::Relaxed);
    }

    /// When the client was last heard from (ms since the Unix epoch).
    pub fn activity_unix_ms(&self) -> Option<u64> {
        let ms = self.activity_ms.load(Ordering::Relaxed);
        (ms != 0).then_some(ms)
    }
}

/// Read pings on one stream socket until `stop` (blocking; the socket has a read timeout).
pub fn read_pings(socket: &UdpSocket, channel: Channel, client: &Client, stop: &AtomicBool) {
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
        if client.pinged(channel, &buf[..n], from) {
            tracing::debug!(?channel, %from, "ping: client address learned");
        }
    }
}

/// What the sender threads of a session run with.
#[derive(Clone)]
pub struct Senders {
    pub session_id: u32,
    pub video: Arc<UdpSocket>,
    pub audio: Arc<UdpSocket>,
    pub client: Arc<Client>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub beats: Arc<crate::watchdog::Heartbeats>,
    /// Starts the display captures.
    pub process: Arc<crate::runners::process::ProcessRunner>,
    /// Where a stream that failed says why (the session then ends).
    pub failed: Arc<dyn Fn(String) + Send + Sync>,
}

/// A session's running streams: the token that stops them and their sender threads, joined by
/// whoever stops them. A switch makes a new one, so a late thread of the old streams never lands
/// in the new.
#[derive(Default)]
pub struct StreamRun {
    cancel: CancellationToken,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl StreamRun {
    /// Cancel the streams and join their threads (blocking).
    pub fn stop(&self) {
        self.cancel.cancel();
        for t in std::mem::take(&mut *lock(&self.threads)) {
            let _ = t.join();
        }
    }
}

impl Senders {
    /// Start both streams of `plan`: each waits for the client's first ping on its port, then runs.
    pub fn start(&self, plan: &StreamPlan) -> StreamRun {
        let run = StreamRun::default();
        for kind in [Kind::Video, Kind::Audio] {
            let (this, plan, cancel) = (self.clone(), plan.clone(), run.cancel.clone());
            let started = std::thread::Builder::new()
                .name(format!("{kind}-{}", self.session_id))
                .spawn(move || this.run_stream(kind, &plan, &cancel));
            match started {
                Ok(t) => lock(&run.threads).push(t),
                Err(source) => (self.failed)(format!("{}", MediaError::Spawn { what: kind.as_str(), source })),
            }
        }
        run
    }

    /// One stream's thread: the client's address, then the sender until cancelled.
    fn run_stream(&self, kind: Kind, plan: &StreamPlan, cancel: &CancellationToken) {
        let id = self.session_id;
        // Every line this thread logs names its session.
        let _span = tracing::info_span!("stream", session = id, kind = kind.as_str()).entered();
        let deadline = Instant::now() + PING_WAIT;
        let addr = loop {
            if cancel.is_cancelled() {
                return;
            }
            if let Some(a) = self.client.addr(kind.channel()) {
                break a;
            }
            if Instant::now() > deadline {
                tracing::warn!("no ping from the client within {} s", PING_WAIT.as_secs());
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let Some(negotiated) = self.client.negotiated() else { return };
        let result = match kind {
            Kind::Video => video::run(self, &plan.video, &negotiated, addr, cancel),
            Kind::Audio => audio::run(self, &plan.audio, &negotiated, addr, cancel),
        };
        if let Err(why) = result {
            self.metrics.pipeline_errors.inc();
            tracing::error!(why, "stream failed: ending the session");
            (self.failed)(why);
        }
    }

    /// Start the pipeline (frames counted, beats watched) and run `send` until the stream ends;
    /// `Err` says why the stream failed.
    fn run_pipeline(
        &self,
        kind: Kind,
        pipeline_text: String,
        capture: Option<crate::runners::display::CaptureSpec>,
        send: impl FnOnce(EncoderPipeline, &crate::watchdog::Heartbeat) -> Ended,
    ) -> Result<(), String> {
        let (metrics, id) = (&self.metrics, self.session_id);
        let video = kind == Kind::Video;
        let handoff = if video { Handoff::VIDEO } else { Handoff::DropNewest };
        let reporting = Reporting {
            frames: Some(metrics.encoder_frames.clone()),
            video_drops: video.then(|| metrics.video_frames_dropped.clone()),
            heartbeat: Some((self.beats.clone(), crate::watchdog::thread_name("pipeline", kind.as_str(), id))),
        };
        let beat = self.beats.register("stream", crate::watchdog::thread_name("stream", kind.as_str(), id));
        // Lives as long as the stream: dropped (the child stopped) when this returns.
        let _capture = capture
            .map(crate::runners::display::Capture::start)
            .transpose()
            .map_err(|e| format!("{kind} capture did not start: {e}"))?;
        let pipeline = EncoderPipeline::start(pipeline_text, handoff, reporting)
            .map_err(|e| format!("{kind} pipeline did not start: {e}"))?;
        metrics.streams_started.inc();
        match send(pipeline, &beat) {
            Ended::Error(e) => Err(format!("{kind} pipeline error: {e}")),
            _ => Ok(()),
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

/// Sockets have a read timeout (the ping readers share them): retry a full send buffer briefly.
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
    use super::*;

    #[test]
    fn pings() {
        assert_eq!(ping_payload(b"PING"), None, "no payload: never tied to a session");
        let mut p = b"ABCDEFGHIJKLMNOP".to_vec();
        p.extend_from_slice(&7u32.to_be_bytes());
        assert_eq!(ping_payload(&p), Some(&b"ABCDEFGHIJKLMNOP"[..]));
        assert_eq!(ping_payload(b"nope"), None);
        assert_eq!(ping_payload(&[0u8; 64]), None);
    }

    #[test]
    fn only_a_ping_with_the_clients_payload_names_its_address() {
        let client = Client::default();
        let mut ping = b"ABCDEFGHIJKLMNOP".to_vec();
        ping.extend_from_slice(&1u32.to_be_bytes());
        let from: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert!(!client.pinged(Channel::Video, &ping, from), "nothing negotiated yet");
        client.set_negotiated(Negotiated {
            rikey: [0; 16],
            rikeyid: 0,
            ping_payload: "ABCDEFGHIJKLMNOP".into(),
            connect_data: 1,
            announced: crate::session_process::tests::announced(),
        });
        let stranger: SocketAddr = "127.0.0.9:6000".parse().unwrap();
        let mut other = b"QQQQQQQQQQQQQQQQ".to_vec();
        other.extend_from_slice(&1u32.to_be_bytes());
        assert!(!client.pinged(Channel::Video, &other, stranger));
        assert!(client.pinged(Channel::Video, &ping, from));
        assert_eq!(client.addr(Channel::Video), Some(from));
        assert_eq!(client.addr(Channel::Audio), None);
        client.request_keyframe();
        client.forget();
        assert_eq!(client.addr(Channel::Video), None);
        assert!(!client.take_keyframe() && client.negotiated().is_none());
    }
}
