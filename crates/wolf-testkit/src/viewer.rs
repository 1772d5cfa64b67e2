//! A viewer: a paired client that launches the test pattern, runs RTSP to PLAY, connects its
//! control channel and then keeps receiving its video and audio in the background (each frame's
//! index and arrival time, the frames themselves, the audio packets, the control channel's
//! events), for tests in which the host restarts or fails under a stream.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wolf_client::GameStreamClient;
use wolf_protocol::video::{parse_packet, reassemble};

use crate::session::{ControlEvent, EnetClient, Played, ping};

/// What a viewer received so far.
#[derive(Debug, Default, Clone)]
pub struct Received {
    /// Every whole frame's index and when its first packet arrived, in arrival order.
    pub arrivals: Vec<(u32, Instant)>,
    /// The frames (index → (frame type, Annex B bitstream)).
    pub frames: BTreeMap<u32, (u8, Vec<u8>)>,
    /// Audio data packets (RTP payload type 97).
    pub audio: usize,
}

impl Received {
    /// Frames that arrived after `t`.
    pub fn frames_after(&self, t: Instant) -> usize {
        self.arrivals.iter().filter(|(_, at)| *at > t).count()
    }

    /// The largest run of frame indexes missing between two frames that arrived.
    pub fn largest_index_gap(&self) -> u32 {
        self.arrivals.windows(2).map(|w| w[1].0.saturating_sub(w[0].0).saturating_sub(1)).max().unwrap_or(0)
    }

    /// The longest time between two frames.
    pub fn longest_pause(&self) -> Duration {
        self.arrivals.windows(2).map(|w| w[1].1.duration_since(w[0].1)).max().unwrap_or_default()
    }
}

/// A client streaming one session, received in the background until [`Viewer::stop`].
pub struct Viewer {
    pub client: GameStreamClient,
    /// Its launch's key (each viewer its own: encrypted RTSP finds a session by its key).
    pub rikey: [u8; 16],
    pub played: Played,
    pub control: EnetClient,
    received: Arc<Mutex<Received>>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What the viewer announces: small and light, so that several streams fit a CI machine.
pub fn small_sdp() -> String {
    wolf_client::video::announce_sdp(640, 360, 30, 2000, wolf_client::video::SS_ENC_CONTROL_V2)
}

impl Viewer {
    /// Pair `c`, launch app 1 (the test pattern) at 640x360x30, PLAY, connect the control channel
    /// (asserting it connects) and start receiving.
    pub async fn start(mut c: GameStreamClient) -> Viewer {
        let mut rikey = [0u8; 16];
        aws_lc_rs::rand::fill(&mut rikey).expect("random bytes");
        assert_eq!(c.pair(crate::PIN).await.expect("pairing runs"), wolf_client::PairOutcome::Paired);
        let reply = c.https_get(&c.launch_url("1", "640x360x30", &hex::encode(rikey))).await.expect("launch");
        let url = reply.field("sessionUrl0").unwrap_or_else(|| panic!("sessionUrl0 in {}", reply.text()));
        let mut rtsp = wolf_client::RtspSession::from_url(&url, rikey).expect("sessionUrl0");
        rtsp.local = c.local_ip;
        let played = crate::session::rtsp_to_play(&rtsp, &small_sdp()).await.expect("RTSP to PLAY");
        let control = EnetClient::connect(played.control, played.connect_data, rikey);
        let control = tokio::task::spawn_blocking(move || {
            let e = control.events.recv_timeout(Duration::from_secs(20));
            assert_eq!(e, Ok(ControlEvent::Connected), "the control channel connects");
            control
        })
        .await
        .expect("control connects");
        let received = Arc::new(Mutex::new(Received::default()));
        let stop = CancellationToken::new();
        let tasks = vec![
            tokio::spawn(receive_video(played.video, played.ping.clone(), received.clone(), stop.clone())),
            tokio::spawn(receive_audio(played.audio, played.ping.clone(), received.clone(), stop.clone())),
        ];
        Viewer { client: c, rikey, played, control, received, stop, tasks }
    }

    pub fn received(&self) -> Received {
        self.received.lock().unwrap().clone()
    }

    /// Wait (bounded: 60 s) until `n` frames arrived after `t`.
    pub async fn frames_after(&self, t: Instant, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.received().frames_after(t) < n {
            assert!(Instant::now() < deadline, "{} of {n} frames within 60 s", self.received().frames_after(t));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The control channel's events so far (a stream that goes on has none after `Connected`).
    pub fn control_events(&self) -> Vec<ControlEvent> {
        self.control.events.try_iter().collect()
    }

    /// Stop receiving; what arrived.
    pub async fn stop(self) -> (Received, EnetClient) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        let r = self.received.lock().unwrap().clone();
        (r, self.control)
    }
}

/// Pings every 500 ms, as Moonlight does, between waits of at most 100 ms for a datagram.
struct Pinger {
    to: SocketAddr,
    payload: String,
    seq: u32,
    last: Option<Instant>,
}

impl Pinger {
    /// The next datagram's length, after a ping when one is due; `None` when none came.
    async fn next(&mut self, sock: &tokio::net::UdpSocket, buf: &mut [u8]) -> Option<usize> {
        if self.last.is_none_or(|t| t.elapsed() >= Duration::from_millis(500)) {
            ping(sock, self.to, &self.payload, self.seq).await;
            self.seq += 1;
            self.last = Some(Instant::now());
        }
        match tokio::time::timeout(Duration::from_millis(100), sock.recv_from(buf)).await {
            Ok(Ok((n, _))) => Some(n),
            _ => None,
        }
    }
}

async fn receive_video(to: SocketAddr, payload: String, into: Arc<Mutex<Received>>, stop: CancellationToken) {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("a UDP socket");
    let mut buf = vec![0u8; 4096];
    let (mut current, mut first_at): (Option<u32>, Instant) = (None, Instant::now());
    let mut packets: Vec<Vec<u8>> = Vec::new();
    let mut pinger = Pinger { to, payload, seq: 0, last: None };
    while !stop.is_cancelled() {
        let Some(n) = pinger.next(&sock, &mut buf).await else { continue };
        let p = buf[..n].to_vec();
        let Ok(info) = parse_packet(&p) else { continue };
        if let Some(f) = current.filter(|f| *f != info.frame_index) {
            if let Ok((kind, bits)) = reassemble(&std::mem::take(&mut packets)) {
                let mut r = into.lock().unwrap();
                r.arrivals.push((f, first_at));
                r.frames.insert(f, (kind, bits));
            }
        }
        if current != Some(info.frame_index) {
            first_at = Instant::now();
        }
        current = Some(info.frame_index);
        packets.push(p);
    }
}

async fn receive_audio(to: SocketAddr, payload: String, into: Arc<Mutex<Received>>, stop: CancellationToken) {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("a UDP socket");
    let mut buf = vec![0u8; 4096];
    let mut pinger = Pinger { to, payload, seq: 0, last: None };
    while !stop.is_cancelled() {
        let Some(n) = pinger.next(&sock, &mut buf).await else { continue };
        if n > 12 && buf[1] == 97 {
            into.lock().unwrap().audio += 1;
        }
    }
}
