//! The ENet control channel (47999). One OS thread owns the ENet host: it ties each peer to its
//! session by the connect data handed out in RTSP SETUP, decrypts control messages, turns IDR and
//! reference-frame-invalidation requests into keyframe requests, hands input to the session's
//! injector (`input`), counts what it gets, and sends
//! the termination message when a session ends. A connect that names no session's connect data is
//! dropped at the socket, before ENet gives it a peer slot.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use rusty_enet::{Event, Host, HostSettings, MTU_MAX, Packet, PacketReceived, PeerID, SocketOptions};

use crate::commands::{ControlCommand, StreamCommand};
use crate::metrics::Metrics;
use crate::sessions::Sessions;
use crate::watchdog::{Heartbeat, Heartbeats};
use wolf_protocol::control::{self, Direction};

/// Channels Moonlight opens (CTRL_CHANNEL_COUNT).
pub const CHANNELS: usize = 0x30;
/// Peers at once; each is one streaming client.
pub const MAX_PEERS: usize = 64;
/// How often the thread wakes to run ENet's timers when idle.
const TICK: Duration = Duration::from_millis(5);

/// Datagrams dropped per `receive` call at most, so a flood of bad connects cannot keep the thread
/// (and its watchdog heartbeat) in one call.
const DROPS_PER_RECEIVE: usize = 256;

/// The control socket as ENet sees it. Only a CONNECT carrying a launched session's connect data
/// (handed out in that session's RTSP SETUP, sealed when the client encrypts RTSP) reaches ENet:
/// a stranger's connects never hold a peer slot, however many it sends.
struct ConnectGate {
    socket: UdpSocket,
    sessions: Arc<Sessions>,
    metrics: Arc<Metrics>,
}

impl rusty_enet::Socket for ConnectGate {
    type Address = SocketAddr;
    type Error = std::io::Error;

    fn init(&mut self, options: SocketOptions) -> std::io::Result<()> {
        rusty_enet::Socket::init(&mut self.socket, options)
    }

    fn send(&mut self, address: SocketAddr, buffer: &[u8]) -> std::io::Result<usize> {
        rusty_enet::Socket::send(&mut self.socket, address, buffer)
    }

    fn receive(&mut self, buffer: &mut [u8; MTU_MAX]) -> std::io::Result<Option<(SocketAddr, PacketReceived)>> {
        for _ in 0..DROPS_PER_RECEIVE {
            let got = rusty_enet::Socket::receive(&mut self.socket, buffer)?;
            let Some((from, PacketReceived::Complete(n))) = got else { return Ok(got) };
            let datagram = &buffer[..n.min(MTU_MAX)];
            if !control::is_enet_connect(datagram)
                || control::enet_connect_data(datagram).is_some_and(|d| self.sessions.by_connect_data(d).is_some())
            {
                return Ok(Some((from, PacketReceived::Complete(n))));
            }
            self.metrics.control_messages.with_label_values(&["unknown_connect"]).inc();
            tracing::trace!(%from, "ENet connect naming no session: dropped");
        }
        Ok(None)
    }
}

struct PeerSession {
    session_id: u32,
    rikey: [u8; 16],
    seq: u32,
}

pub struct ControlChannel {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// What the control thread reads and where it hands what it gets.
pub struct Links {
    pub sessions: Arc<Sessions>,
    pub streams: crate::commands::StreamCommands,
    pub metrics: Arc<Metrics>,
    pub beats: Arc<Heartbeats>,
    pub inputs: Arc<crate::input::Inputs>,
}

impl ControlChannel {
    /// `commands`: the receiving end of what the rest of the host asks (made first, so the
    /// senders can be handed out before the thread runs).
    pub fn spawn(
        socket: UdpSocket,
        commands: mpsc::Receiver<ControlCommand>,
        links: Links,
    ) -> std::io::Result<ControlChannel> {
        let Links { sessions, streams, metrics, beats, inputs } = links;
        let gate = ConnectGate { socket, sessions: sessions.clone(), metrics: metrics.clone() };
        let host =
            Host::new(gate, HostSettings { peer_limit: MAX_PEERS, channel_limit: CHANNELS, ..Default::default() })
                .map_err(|e| std::io::Error::other(format!("ENet host: {e:?}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let worker = Worker { host, sessions, streams, metrics, inputs, peers: HashMap::new() };
        let s = stop.clone();
        let thread = std::thread::Builder::new().name("enet-control".into()).spawn(move || {
            let beat = beats.register("control", "control:enet");
            worker.run(commands, s, &beat)
        })?;
        Ok(ControlChannel { stop, thread: Some(thread) })
    }

    /// Stop the thread (disconnecting every peer) and join it. Blocking.
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ControlChannel {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Worker {
    host: Host<ConnectGate>,
    sessions: Arc<Sessions>,
    streams: crate::commands::StreamCommands,
    metrics: Arc<Metrics>,
    inputs: Arc<crate::input::Inputs>,
    peers: HashMap<PeerID, PeerSession>,
}

impl Worker {
    fn run(mut self, commands: mpsc::Receiver<ControlCommand>, stop: Arc<AtomicBool>, beat: &Heartbeat) {
        while !stop.load(Ordering::Relaxed) {
            beat.beat();
            while let Ok(cmd) = commands.try_recv() {
                self.command(cmd);
            }
            let mut busy = false;
            loop {
                let next = match self.host.service() {
                    Ok(event) => event.map(Event::no_ref),
                    Err(e) => {
                        tracing::warn!(error = ?e, "ENet service error");
                        None
                    }
                };
                let Some(event) = next else { break };
                busy = true;
                self.event(event);
            }
            if !busy {
                std::thread::sleep(TICK);
            }
        }
        let ids: Vec<PeerID> = self.peers.keys().copied().collect();
        for id in ids {
            self.host.peer_mut(id).disconnect_now(0);
        }
        self.host.flush();
    }

    /// Seal `payload` as `msg_type` for the session's peer `id` and send it reliably; false when
    /// that peer is not the session's (any more).
    fn send_to(&mut self, id: PeerID, session_id: u32, msg_type: u16, payload: &[u8]) -> bool {
        let Some(p) = self.peers.get_mut(&id).filter(|p| p.session_id == session_id) else { return false };
        match control::seal(&p.rikey, p.seq, Direction::HostToClient, msg_type, payload) {
            Ok(msg) => {
                p.seq = p.seq.wrapping_add(1);
                if self.host.peer_mut(id).send(0, &Packet::reliable(msg.as_slice())).is_err() {
                    tracing::debug!(session = session_id, msg_type, "control message not queued");
                }
                true
            }
            Err(e) => {
                tracing::warn!(session = session_id, msg_type, error = %e, "control message");
                false
            }
        }
    }

    fn command(&mut self, cmd: ControlCommand) {
        match cmd {
            ControlCommand::Rumble { session_id, number, low, high } => {
                let payload = wolf_protocol::input::rumble_payload(u16::from(number), low, high);
                let Some(peer) = self.sessions.live(session_id).and_then(|l| l.control_peer()) else { return };
                if self.send_to(PeerID(peer), session_id, wolf_protocol::input::MSG_RUMBLE, &payload) {
                    self.count("rumble");
                }
            }
            ControlCommand::Terminate { session_id, peer, reason } => {
                let payload = control::termination_payload(reason);
                if self.send_to(PeerID(peer), session_id, control::MSG_TERMINATION, &payload) {
                    self.host.peer_mut(PeerID(peer)).disconnect_later(0);
                    tracing::info!(session = session_id, "termination sent to the client");
                }
            }
        }
    }

    fn event(&mut self, event: rusty_enet::EventNoRef) {
        match event {
            rusty_enet::EventNoRef::Connect { peer, data } => self.connect(peer, data),
            rusty_enet::EventNoRef::Receive { peer, packet, .. } => self.receive(peer, packet.data()),
            rusty_enet::EventNoRef::Disconnect { peer, .. } => {
                if let Some(p) = self.peers.remove(&peer) {
                    tracing::info!(session = p.session_id, "control channel closed: stopping the streams");
                    if let Some(live) = self.sessions.live(p.session_id) {
                        live.set_control_peer(None);
                        // Nothing stays pressed after the client is gone.
                        live.close_input();
                    }
                    // The app keeps running; the client may come back with /resume.
                    let _ = self.streams.send(StreamCommand::Stop { session_id: p.session_id, done: None });
                    self.sessions.update_by_id(p.session_id, |s| {
                        // The next RTSP negotiation starts over; how the client speaks it does not change.
                        s.rtsp = crate::sessions::RtspProgress {
                            encrypted: s.rtsp.encrypted,
                            own_port_used: s.rtsp.own_port_used,
                            ..Default::default()
                        };
                        s.enter(crate::sessions::SessionState::Paused);
                    });
                }
            }
        }
    }

    /// A peer is bound to the session whose connect data it presents, from whatever address (only
    /// that session's client learned it, sealed when it encrypts RTSP). The first peer keeps it: a
    /// second one for a session that has one is refused.
    fn connect(&mut self, peer: PeerID, data: u32) {
        let from = self.host.peer(peer).address();
        let Some(s) = self.sessions.by_connect_data(data) else {
            self.count("refused");
            tracing::info!(?from, "control connect with unknown connect data: refused");
            self.host.peer_mut(peer).disconnect_now(0);
            return;
        };
        let Some(live) = self.sessions.live(s.id) else {
            self.host.peer_mut(peer).disconnect_now(0);
            return;
        };
        if live.control_peer().is_some() {
            self.count("refused");
            tracing::warn!(session = s.id, ?from, "second control connect for a connected session: refused");
            self.host.peer_mut(peer).disconnect_now(0);
            return;
        }
        let v2 = s.rtsp.stream.as_ref().is_some_and(|c| c.encryption & 0x1 != 0);
        if !v2 {
            self.count("refused");
            tracing::warn!(session = s.id, "client did not negotiate encrypted control (CONTROL_V2): refused");
            self.host.peer_mut(peer).disconnect_now(0);
            return;
        }
        if !live.set_control_peer(Some(peer.0)) {
            // It ended (or another peer won) meanwhile.
            self.count("refused");
            self.host.peer_mut(peer).disconnect_now(0);
            return;
        }
        self.host.peer_mut(peer).set_timeout(2, 10_000, 10_000);
        self.peers.insert(peer, PeerSession { session_id: s.id, rikey: s.rikey, seq: 0 });
        self.count("connected");
        tracing::info!(session = s.id, "control channel connected");
    }

    fn receive(&mut self, peer: PeerID, data: &[u8]) {
        let Some(p) = self.peers.get(&peer) else { return };
        let msg = match control::open(&p.rikey, Direction::ClientToHost, data) {
            Ok(m) => m,
            Err(e) => {
                self.count("undecryptable");
                tracing::debug!(session = p.session_id, error = %e, "control message dropped");
                return;
            }
        };
        let live = self.sessions.live(p.session_id);
        if let Some(l) = &live {
            l.touch();
        }
        match msg.msg_type {
            control::MSG_IDR_REQUEST | control::MSG_RFI => {
                self.count("idr_request");
                if let Some(l) = &live {
                    l.request_keyframe();
                }
            }
            control::MSG_PING => self.count("ping"),
            control::MSG_LOSS_STATS | control::MSG_FEC_STATUS => self.count("loss_stats"),
            control::MSG_INPUT => match wolf_protocol::input::decode(&msg.payload) {
                Ok(event) => {
                    self.count("input");
                    if let Some(mut slot) = live.as_ref().and_then(|l| l.input()) {
                        let sessions = &self.sessions;
                        let display =
                            || sessions.by_id(p.session_id).and_then(|s| s.streamed_display().map(|d| d.name()));
                        self.inputs.submit(p.session_id, &mut slot, display, event);
                    }
                }
                Err(e) => {
                    self.count("malformed");
                    self.inputs.dropped("malformed");
                    tracing::debug!(session = p.session_id, error = %e, "malformed input packet");
                }
            },
            _ => self.count("other"),
        }
    }

    fn count(&self, kind: &str) {
        self.metrics.control_messages.with_label_values(&[kind]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The connect data is read where a real ENet (rusty_enet, wire-compatible with Moonlight's)
    /// puts it; its other datagrams are not connects.
    #[test]
    fn a_real_enet_connect_carries_its_data_where_the_gate_reads_it() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let settings = HostSettings { peer_limit: 1, channel_limit: CHANNELS, ..Default::default() };
        let mut client = Host::new(socket, settings).unwrap();
        client.connect(server.local_addr().unwrap(), CHANNELS, 0xDEAD_BEEF).unwrap();
        let _ = client.service();
        let mut buf = [0u8; 2048];
        let (n, _) = server.recv_from(&mut buf).unwrap();
        assert!(control::is_enet_connect(&buf[..n]));
        assert_eq!(control::enet_connect_data(&buf[..n]), Some(0xDEAD_BEEF));
        assert_eq!(control::enet_connect_data(&buf[..n.min(40)]), None, "cut short");
        assert!(!control::is_enet_connect(&[0x80]) && control::enet_connect_data(&[]).is_none());
    }
}
