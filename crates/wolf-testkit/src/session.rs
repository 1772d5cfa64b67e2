//! One streaming session as a Moonlight client runs it after `/launch`: RTSP through PLAY, the
//! ENet control channel, pings, and receiving its own video and audio (with its own rikey).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use wolf_client::RtspSession;
use wolf_protocol::control::{self, Direction};
use wolf_protocol::video::{parse_packet, reassemble};

/// What RTSP handed the client: where to ping and what with, and the control channel.
#[derive(Debug, Clone)]
pub struct Played {
    pub video: SocketAddr,
    pub audio: SocketAddr,
    pub ping: String,
    pub control: SocketAddr,
    pub connect_data: u32,
    /// The DESCRIBE answer's SDP.
    pub describe: String,
}

/// RTSP as Moonlight runs it: DESCRIBE, SETUP audio/video/control, ANNOUNCE `sdp`, PLAY. Errors
/// name the step and its status.
pub async fn rtsp_to_play(rtsp: &RtspSession, sdp: &str) -> Result<Played, String> {
    let step = |what: &str, r: Result<wolf_client::RtspReply, wolf_client::error::Error>| match r {
        Ok(r) if r.code == 200 => Ok(r),
        Ok(r) => Err(format!("{what}: RTSP {}", r.code)),
        Err(e) => Err(format!("{what}: {e}")),
    };
    let port = |r: &wolf_client::RtspReply, what: &str| {
        r.header("Transport")
            .and_then(|t| t.trim_start_matches("server_port=").parse::<u16>().ok())
            .ok_or(format!("{what}: no server_port"))
    };
    let d = step("DESCRIBE", rtsp.request("DESCRIBE", "/", 1, &[], "").await)?;
    let a = step("SETUP audio", rtsp.request("SETUP", "streamid=audio/0/0", 2, &[], "").await)?;
    let session = a.header("Session").and_then(|s| s.split(';').next()).unwrap_or("").to_owned();
    let ping = a.header("X-SS-Ping-Payload").ok_or("SETUP audio: no ping payload")?.to_owned();
    let audio = port(&a, "SETUP audio")?;
    let sh = [("Session", session.as_str())];
    let v = step("SETUP video", rtsp.request("SETUP", "streamid=video/0/0", 3, &sh, "").await)?;
    let video = port(&v, "SETUP video")?;
    let c = step("SETUP control", rtsp.request("SETUP", "streamid=control/13/0", 4, &sh, "").await)?;
    let control = port(&c, "SETUP control")?;
    let connect_data =
        c.header("X-SS-Connect-Data").and_then(|v| v.parse().ok()).ok_or("SETUP control: no connect data")?;
    step("ANNOUNCE", rtsp.request("ANNOUNCE", "streamid=control/13/0", 5, &sh, sdp).await)?;
    step("PLAY", rtsp.request("PLAY", "/", 6, &sh, "").await)?;
    let ip = rtsp.addr.ip();
    Ok(Played {
        video: SocketAddr::new(ip, video),
        audio: SocketAddr::new(ip, audio),
        ping,
        control: SocketAddr::new(ip, control),
        connect_data,
        describe: d.body,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlEvent {
    Connected,
    Message(u16, Vec<u8>),
    Disconnected,
}

/// Sent through the outgoing queue to leave gracefully, as Moonlight does when the user leaves the
/// stream without quitting the app.
const LEAVE: u16 = u16::MAX;

/// The client side of the control channel: ENet (rusty_enet, wire-compatible with Moonlight's
/// enet) on its own thread, AES-GCM control messages under the launch's rikey. The thread ends
/// on disconnect, when this is dropped, or after two minutes.
pub struct EnetClient {
    pub events: std::sync::mpsc::Receiver<ControlEvent>,
    outgoing: std::sync::mpsc::Sender<(u16, Vec<u8>)>,
}

impl EnetClient {
    pub fn connect(addr: SocketAddr, connect_data: u32, key: [u8; 16]) -> EnetClient {
        Self::connect_from(IpAddr::from([127, 0, 0, 1]), addr, connect_data, key)
    }

    /// As `connect`, from the source address `local`.
    pub fn connect_from(local: IpAddr, addr: SocketAddr, connect_data: u32, key: [u8; 16]) -> EnetClient {
        let (ev_tx, events) = std::sync::mpsc::channel();
        let (outgoing, out_rx) = std::sync::mpsc::channel::<(u16, Vec<u8>)>();
        std::thread::spawn(move || {
            let Ok(socket) = std::net::UdpSocket::bind((local, 0)) else { return };
            let settings = rusty_enet::HostSettings { peer_limit: 1, channel_limit: 0x30, ..Default::default() };
            let Ok(mut host) = rusty_enet::Host::new(socket, settings) else { return };
            let Ok(peer) = host.connect(addr, 0x30, connect_data).map(|p| p.id()) else { return };
            let mut seq = 0u32;
            let started = std::time::Instant::now();
            while started.elapsed() < Duration::from_secs(120) {
                loop {
                    match out_rx.try_recv() {
                        Ok((LEAVE, _)) => host.peer_mut(peer).disconnect(0),
                        Ok((t, payload)) => {
                            let Ok(msg) = control::seal(&key, seq, Direction::ClientToHost, t, &payload) else {
                                return;
                            };
                            seq += 1;
                            let _ = host.peer_mut(peer).send(1, &rusty_enet::Packet::reliable(msg.as_slice()));
                        }
                        Err(std::sync::mpsc::TryRecvError::Empty) => break,
                        Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
                    }
                }
                while let Ok(Some(e)) = host.service() {
                    let event = match e.no_ref() {
                        rusty_enet::EventNoRef::Connect { .. } => ControlEvent::Connected,
                        rusty_enet::EventNoRef::Disconnect { .. } => ControlEvent::Disconnected,
                        rusty_enet::EventNoRef::Receive { packet, .. } => {
                            match control::open(&key, Direction::HostToClient, packet.data()) {
                                Ok(m) => ControlEvent::Message(m.msg_type, m.payload),
                                // Not under our key: nothing a test could use.
                                Err(_) => continue,
                            }
                        }
                    };
                    let end = event == ControlEvent::Disconnected;
                    if ev_tx.send(event).is_err() || end {
                        return;
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        EnetClient { events, outgoing }
    }

    pub fn send(&self, msg_type: u16, payload: &[u8]) {
        let _ = self.outgoing.send((msg_type, payload.to_vec()));
    }

    /// Leave gracefully and wait (bounded) until the host confirms; true when it did.
    pub fn leave(self) -> bool {
        let _ = self.outgoing.send((LEAVE, Vec::new()));
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            match self.events.recv_timeout(Duration::from_secs(1)) {
                Ok(ControlEvent::Disconnected) => return true,
                Ok(_) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return false,
            }
        }
        false
    }
}

/// Ping `to` from `sock` with the session's payload, as Moonlight does.
pub async fn ping(sock: &tokio::net::UdpSocket, to: SocketAddr, payload: &str, seq: u32) {
    let mut p = payload.as_bytes().to_vec();
    p.extend_from_slice(&seq.to_be_bytes());
    let _ = sock.send_to(&p, to).await;
}

/// Ping the video port and collect whole frames (index → (frame type, Annex B bitstream)) until
/// `frames` have arrived or `limit` passes; `opener` opens sealed video. A frame that cannot be
/// put back together (packets lost beyond its FEC) is left out, as a client leaves it out.
pub async fn receive_video(
    local: IpAddr,
    to: SocketAddr,
    payload: &str,
    opener: &wolf_client::video::VideoOpener,
    frames: usize,
    limit: Duration,
) -> Result<BTreeMap<u32, (u8, Vec<u8>)>, String> {
    let sock = tokio::net::UdpSocket::bind((local, 0)).await.map_err(|e| e.to_string())?;
    receive_video_on(&sock, to, payload, opener, frames, limit).await
}

/// As [`receive_video`], from a socket the caller keeps (a client whose stream goes on).
pub async fn receive_video_on(
    sock: &tokio::net::UdpSocket,
    to: SocketAddr,
    payload: &str,
    opener: &wolf_client::video::VideoOpener,
    frames: usize,
    limit: Duration,
) -> Result<BTreeMap<u32, (u8, Vec<u8>)>, String> {
    let mut buf = vec![0u8; 4096];
    let mut out = BTreeMap::new();
    let mut current: Option<u32> = None;
    let mut packets: Vec<Vec<u8>> = Vec::new();
    let mut seq = 0;
    let mut last = None;
    let collect = async {
        while out.len() < frames {
            if last.is_none_or(|t: std::time::Instant| t.elapsed() >= Duration::from_millis(500)) {
                ping(sock, to, payload, seq).await;
                seq += 1;
                last = Some(std::time::Instant::now());
            }
            let Ok(Ok((n, _))) = tokio::time::timeout(Duration::from_millis(100), sock.recv_from(&mut buf)).await
            else {
                continue;
            };
            // As a client does: a datagram that does not open under this session's key is not its
            // video (a late packet of an ended session to a reused port, say) and is dropped.
            let Ok(p) = opener.open(&buf[..n]).map(std::borrow::Cow::into_owned) else { continue };
            let info = parse_packet(&p).map_err(|e| e.to_string())?;
            if let Some(f) = current.filter(|f| *f != info.frame_index) {
                // A frame that lost more packets than its FEC repairs (UDP under load) is dropped,
                // as a client drops it; what arrives must still parse.
                if let Ok((kind, bits)) = reassemble(&std::mem::take(&mut packets)) {
                    out.insert(f, (kind, bits));
                }
            }
            current = Some(info.frame_index);
            packets.push(p);
        }
        Ok::<_, String>(())
    };
    match tokio::time::timeout(limit, collect).await {
        Ok(r) => r.map(|()| out),
        Err(_) => Err(format!("{} of {frames} frames within {limit:?}", out.len())),
    }
}

/// The frames a decoder can take: from the first IDR on, as long as they follow each other.
pub fn from_first_idr(frames: &BTreeMap<u32, (u8, Vec<u8>)>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut next = None;
    for (index, (kind, bits)) in frames {
        if next.is_none() && *kind != 2 {
            continue;
        }
        if next.is_some_and(|n| n != *index) {
            break;
        }
        next = Some(index + 1);
        out.push(bits.clone());
    }
    out
}

/// Ping the audio port and collect `n` data packets (RTP payload type 97): (sequence, payload).
pub async fn receive_audio(
    local: IpAddr,
    to: SocketAddr,
    payload: &str,
    n: usize,
    limit: Duration,
) -> Result<Vec<(u16, Vec<u8>)>, String> {
    let sock = tokio::net::UdpSocket::bind((local, 0)).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4096];
    let mut out = Vec::new();
    let mut seq = 0;
    let mut last = None;
    let collect = async {
        while out.len() < n {
            if last.is_none_or(|t: std::time::Instant| t.elapsed() >= Duration::from_millis(500)) {
                ping(&sock, to, payload, seq).await;
                seq += 1;
                last = Some(std::time::Instant::now());
            }
            let Ok(Ok((len, _))) = tokio::time::timeout(Duration::from_millis(100), sock.recv_from(&mut buf)).await
            else {
                continue;
            };
            if len > 12 && buf[1] == 97 {
                out.push((u16::from_be_bytes([buf[2], buf[3]]), buf[12..len].to_vec()));
            }
        }
    };
    match tokio::time::timeout(limit, collect).await {
        Ok(()) => Ok(out),
        Err(_) => Err(format!("{} of {n} audio packets within {limit:?}", out.len())),
    }
}
