//! A session's ENet control channel, in its session process on its own UDP port. One OS thread
//! owns the ENet host: it takes the one peer that presents the connect data handed out in the
//! session's RTSP SETUP, decrypts control messages, turns IDR and reference-frame-invalidation
//! requests into keyframe requests, hands input to the session's injector (`input`), counts what it
//! gets, relays rumble, and sends the termination message when the session ends. A connect that
//! names other connect data is dropped at the socket, before ENet gives it a peer slot.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusty_enet::{Event, Host, HostSettings, MTU_MAX, Packet, PacketReceived, PeerID, SocketOptions};

use crate::metrics::Metrics;
use crate::session_process::stream::Client;
use crate::watchdog::{Heartbeat, Heartbeats};
use wolf_protocol::control::{self, Direction};

/// Channels Moonlight opens (CTRL_CHANNEL_COUNT).
pub const CHANNELS: usize = 0x30;
/// Peer slots: the session's client, and room for its reconnects while an old peer times out.
pub const MAX_PEERS: usize = 4;
/// How often the thread wakes to run ENet's timers when idle.
const TICK: Duration = Duration::from_millis(5);
/// How long a termination gets to reach the client before the channel closes.
const TERMINATION_GRACE: Duration = Duration::from_millis(300);

/// Datagrams dropped per `receive` call at most, so a flood of bad connects cannot keep the thread
/// (and its watchdog heartbeat) in one call.
const DROPS_PER_RECEIVE: usize = 256;

/// What the rest of the session process asks of the control thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlCommand {
    /// Tell the client, on its peer, that the stream ended (`reason`: its termination code); then
    /// disconnect it.
    Terminate { reason: u32 },
    /// Rumble the client's pad `number` (the app played force feedback on its virtual pad).
    Rumble { number: u8, low: u16, high: u16 },
    /// The session's sources changed: the injector ends (the next event makes one on the new display).
    CloseInput,
}

/// What the control thread tells the session process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEvent {
    Connected,
    /// The client's peer left: its streams stop, the session pauses.
    Disconnected,
}

/// The control socket as ENet sees it. Only a CONNECT carrying the session's connect data (handed
/// out in its RTSP SETUP, sealed when the client encrypts RTSP) reaches ENet: a stranger's
/// connects never hold a peer slot, however many it sends.
struct ConnectGate {
    socket: UdpSocket,
    client: Arc<Client>,
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
            let ours = |d: u32| self.client.negotiated().is_some_and(|n| n.connect_data == d);
            if !control::is_enet_connect(datagram) || control::enet_connect_data(datagram).is_some_and(ours) {
                return Ok(Some((from, PacketReceived::Complete(n))));
            }
            self.metrics.control_messages.with_label_values(&["unknown_connect"]).inc();
            tracing::trace!(%from, "ENet connect naming other connect data: dropped");
        }
        Ok(None)
    }
}

/// The session's client's peer.
struct Peer {
    id: PeerID,
    rikey: [u8; 16],
    seq: u32,
}

pub struct ControlChannel {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// What the control thread reads and where it hands what it gets.
pub struct Links {
    pub session_id: u32,
    pub client: Arc<Client>,
    pub metrics: Arc<Metrics>,
    pub beats: Arc<Heartbeats>,
    pub inputs: Arc<crate::input::Inputs>,
    /// The X display input goes to, as the session's current plan says.
    pub display: Arc<std::sync::Mutex<Option<String>>>,
    pub events: Box<dyn Fn(PeerEvent) + Send>,
}

impl ControlChannel {
    /// `commands`: the receiving end of what the session process asks (made first, so the
    /// senders can be handed out before the thread runs).
    pub fn spawn(
        socket: UdpSocket,
        commands: mpsc::Receiver<ControlCommand>,
        links: Links,
    ) -> std::io::Result<ControlChannel> {
        let gate = ConnectGate { socket, client: links.client.clone(), metrics: links.metrics.clone() };
        let host =
            Host::new(gate, HostSettings { peer_limit: MAX_PEERS, channel_limit: CHANNELS, ..Default::default() })
                .map_err(|e| std::io::Error::other(format!("ENet host: {e:?}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let beat = links.beats.register("control", format!("control:enet:session-{}", links.session_id));
        let worker = Worker { host, links, peer: None, slot: crate::input::Slot::default() };
        let s = stop.clone();
        let thread =
            std::thread::Builder::new().name("enet-control".into()).spawn(move || worker.run(commands, s, &beat))?;
        Ok(ControlChannel { stop, thread: Some(thread) })
    }

    /// Stop the thread (disconnecting the peer) and join it. Blocking.
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
    links: Links,
    peer: Option<Peer>,
    slot: crate::input::Slot,
}

impl Worker {
    fn run(mut self, commands: mpsc::Receiver<ControlCommand>, stop: Arc<AtomicBool>, beat: &Heartbeat) {
        let mut closing: Option<Instant> = None;
        while !stop.load(Ordering::Relaxed) && closing.is_none_or(|t| t.elapsed() < TERMINATION_GRACE) {
            beat.beat();
            while let Ok(cmd) = commands.try_recv() {
                if self.command(cmd) {
                    closing.get_or_insert_with(Instant::now);
                }
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
        self.slot.close();
        if let Some(p) = self.peer.take() {
            self.host.peer_mut(p.id).disconnect_now(0);
        }
        self.host.flush();
    }

    /// Seal `payload` as `msg_type` for the client's peer and send it reliably; false when it has none.
    fn send(&mut self, msg_type: u16, payload: &[u8]) -> bool {
        let Some(p) = self.peer.as_mut() else { return false };
        match control::seal(&p.rikey, p.seq, Direction::HostToClient, msg_type, payload) {
            Ok(msg) => {
                p.seq = p.seq.wrapping_add(1);
                if self.host.peer_mut(p.id).send(0, &Packet::reliable(msg.as_slice())).is_err() {
                    tracing::debug!(msg_type, "control message not queued");
                }
                true
            }
            Err(e) => {
                tracing::warn!(msg_type, error = %e, "control message");
                false
            }
        }
    }

    /// `true` when the channel is to close (after a termination).
    fn command(&mut self, cmd: ControlCommand) -> bool {
        match cmd {
            ControlCommand::Rumble { number, low, high } => {
                let payload = wolf_protocol::input::rumble_payload(u16::from(number), low, high);
                if self.send(wolf_protocol::input::MSG_RUMBLE, &payload) {
                    self.count("rumble");
                }
                false
            }
            ControlCommand::Terminate { reason } => {
                let payload = control::termination_payload(reason);
                if self.send(control::MSG_TERMINATION, &payload)
                    && let Some(p) = &self.peer
                {
                    self.host.peer_mut(p.id).disconnect_later(0);
                    tracing::info!("termination sent to the client");
                }
                true
            }
            ControlCommand::CloseInput => {
                self.slot.close();
                false
            }
        }
    }

    fn event(&mut self, event: rusty_enet::EventNoRef) {
        match event {
            rusty_enet::EventNoRef::Connect { peer, data } => self.connect(peer, data),
            rusty_enet::EventNoRef::Receive { peer, packet, .. } => self.receive(peer, packet.data()),
            rusty_enet::EventNoRef::Disconnect { peer, .. } => {
                if self.peer.as_ref().is_some_and(|p| p.id == peer) {
                    self.peer = None;
                    tracing::info!("control channel closed: stopping the streams");
                    // Nothing stays pressed after the client is gone.
                    self.slot.close();
                    (self.links.events)(PeerEvent::Disconnected);
                }
            }
        }
    }

    /// The peer that presents the session's connect data, from whatever address (only the client
    /// learned it, sealed when it encrypts RTSP). The first peer keeps it: a second one is refused.
    fn connect(&mut self, peer: PeerID, data: u32) {
        let from = self.host.peer(peer).address();
        let negotiated = self.links.client.negotiated().filter(|n| n.connect_data == data);
        let Some(n) = negotiated else {
            self.count("refused");
            tracing::info!(?from, "control connect with unknown connect data: refused");
            self.host.peer_mut(peer).disconnect_now(0);
            return;
        };
        if self.peer.is_some() {
            self.count("refused");
            tracing::warn!(?from, "second control connect for a connected session: refused");
            self.host.peer_mut(peer).disconnect_now(0);
            return;
        }
        if n.announced.encryption & wolf_protocol::rtsp::SS_ENC_CONTROL_V2 == 0 {
            self.count("refused");
            tracing::warn!("client did not negotiate encrypted control (CONTROL_V2): refused");
            self.host.peer_mut(peer).disconnect_now(0);
            return;
        }
        self.host.peer_mut(peer).set_timeout(2, 10_000, 10_000);
        self.peer = Some(Peer { id: peer, rikey: n.rikey, seq: 0 });
        self.links.client.touch();
        self.count("connected");
        tracing::info!("control channel connected");
        (self.links.events)(PeerEvent::Connected);
    }

    fn receive(&mut self, peer: PeerID, data: &[u8]) {
        let Some(p) = self.peer.as_ref().filter(|p| p.id == peer) else { return };
        let msg = match control::open(&p.rikey, Direction::ClientToHost, data) {
            Ok(m) => m,
            Err(e) => {
                self.count("undecryptable");
                tracing::debug!(error = %e, "control message dropped");
                return;
            }
        };
        self.links.client.touch();
        match msg.msg_type {
            control::MSG_IDR_REQUEST | control::MSG_RFI => {
                self.count("idr_request");
                self.links.client.request_keyframe();
            }
            control::MSG_PING => self.count("ping"),
            control::MSG_LOSS_STATS | control::MSG_FEC_STATUS => self.count("loss_stats"),
            control::MSG_INPUT => match wolf_protocol::input::decode(&msg.payload) {
                Ok(event) => {
                    self.count("input");
                    let display = self.links.display.clone();
                    let display = move || display.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
                    self.links.inputs.submit(self.links.session_id, &mut self.slot, display, event);
                }
                Err(e) => {
                    self.count("malformed");
                    self.links.inputs.dropped("malformed");
                    tracing::debug!(error = %e, "malformed input packet");
                }
            },
            _ => self.count("other"),
        }
    }

    fn count(&self, kind: &str) {
        self.links.metrics.control_messages.with_label_values(&[kind]).inc();
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
