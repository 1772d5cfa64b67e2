//! The RTSP listener (48010): one request per TCP connection, answered, then closed. An encrypted
//! request (`rtspenc://`) belongs to the session whose rikey opens it, and its answer is sealed with
//! that key; a plain one to the plain-RTSP session of the client's address. The negotiation is a
//! small state machine over the session.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::commands::StreamCommand;
use crate::net::limit::{Budgets, ConnLimit, ConnSlot, Stage, TrustedProxies};
use crate::sessions::Sessions;
use wolf_protocol::gcm::Direction;
use wolf_protocol::pairing::random16;
use wolf_protocol::rtsp::{self, Request};

/// Largest sealed request accepted: Moonlight's biggest, ANNOUNCE, is a few KB, and each sealed
/// message may be tried with every encrypting session's key.
const MAX_SEALED: usize = 16 * 1024;
/// How long a client has to send its whole request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Open RTSP connections, and per client address (a trusted proxy may hold them all); at a cap a
/// connection that has not sent a whole request yet is closed, not the newcomer.
const MAX_CONNECTIONS: usize = 256;
const MAX_CONNECTIONS_PER_IP: usize = 64;

/// What DESCRIBE and SETUP tell the client about this host.
#[derive(Debug, Clone)]
pub struct HostInfo {
    pub hevc: bool,
    /// SS_ENC_* bits the host supports (control V2, video). None is requested: the client chooses.
    pub encryption_supported: u32,
    /// Gateways: their address may hold every RTSP connection.
    pub trusted: TrustedProxies,
    /// `[stream] shared_rtsp_fallback`: the shared port also finds, by address, plain-RTSP
    /// sessions that have a port of their own.
    pub shared_fallback: bool,
}

fn reply(code: u16, reason: &str, cseq: u32, headers: &[(&str, String)], body: &str) -> Vec<u8> {
    rtsp::response(code, reason, cseq, headers, body)
}

fn describe_sdp(host: &HostInfo) -> String {
    let mut sdp = String::from("v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=wolf-rs\r\nt=0 0\r\n");
    sdp.push_str("a=x-ss-general.featureFlags:0\r\n");
    sdp.push_str(&format!("a=x-ss-general.encryptionSupported:{}\r\n", host.encryption_supported));
    sdp.push_str("a=x-ss-general.encryptionRequested:0\r\n");
    if host.hevc {
        // The client looks for this exact string to know HEVC is offered.
        sdp.push_str("a=fmtp:96 sprop-parameter-sets=AAAAAU\r\n");
    }
    // Normal-quality surround layouts only: high quality would need more than opusenc's 650 kbit/s.
    for c in wolf_protocol::audio::SURROUND_CHANNELS {
        sdp.push_str(&wolf_protocol::audio::surround_params(c));
        sdp.push_str("\r\n");
    }
    sdp.push_str("m=video 0 RTP/AVP 96\r\n");
    sdp
}

fn random_hex(n: usize) -> String {
    random16().map(hex::encode_upper).unwrap_or_else(|_| "0".repeat(32)).chars().take(n).collect()
}

/// Which session a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressed {
    /// Encrypted: the session whose key opened it.
    Key(u32),
    /// Plain, on the session's own port.
    Port(u32),
    /// Plain, on the shared port: the plain-RTSP session of this client address that has not
    /// been reached on its own port.
    Address(IpAddr),
}

/// Answer one request. Pure apart from the session registry. PLAY also returns the command that
/// starts the stream.
pub fn answer(req: &Request, to: Addressed, sessions: &Sessions, host: &HostInfo) -> (Vec<u8>, Option<StreamCommand>) {
    let cseq = req.cseq;
    let mut command = None;
    let session_header = req.header("Session").map(|s| s.split(';').next().unwrap_or("").trim().to_owned());
    let mut negotiate = |s: &mut crate::sessions::Session| {
        let progress = &mut s.rtsp;
        // Once the first SETUP handed out the RTSP session id, every step that changes the
        // negotiation must carry it: whoever did not get it (a stranger on the client's address,
        // for plain RTSP) learns no ping payload or connect data and changes nothing.
        let changes = matches!(req.method.as_str(), "SETUP" | "ANNOUNCE" | "PLAY");
        if let Some(ours) = &progress.rtsp_session
            && (session_header.as_ref().is_some_and(|given| given != ours) || (changes && session_header.is_none()))
        {
            return reply(454, "Session Not Found", cseq, &[], "");
        }
        match req.method.as_str() {
            "OPTIONS" => reply(200, "OK", cseq, &[("Public", "OPTIONS, DESCRIBE, SETUP, ANNOUNCE, PLAY".into())], ""),
            "DESCRIBE" => reply(200, "OK", cseq, &[("Content-Type", "application/sdp".into())], &describe_sdp(host)),
            "SETUP" => {
                let id = progress.rtsp_session.get_or_insert_with(|| random_hex(16)).clone();
                if progress.ping_payload.is_empty() {
                    progress.ping_payload = random_hex(16);
                    progress.connect_data =
                        random16().map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).unwrap_or(0);
                }
                let session = ("Session", format!("{id};timeout = 90"));
                let t = req.target.as_str();
                if t.contains("streamid=audio") {
                    progress.setup_audio = true;
                    let h = [
                        session,
                        ("Transport", format!("server_port={}", s.ports.audio)),
                        ("X-SS-Ping-Payload", progress.ping_payload.clone()),
                    ];
                    reply(200, "OK", cseq, &h, "")
                } else if t.contains("streamid=video") {
                    progress.setup_video = true;
                    let h = [
                        session,
                        ("Transport", format!("server_port={}", s.ports.video)),
                        ("X-SS-Ping-Payload", progress.ping_payload.clone()),
                    ];
                    reply(200, "OK", cseq, &h, "")
                } else if t.contains("streamid=control") {
                    progress.setup_control = true;
                    let h = [
                        session,
                        ("Transport", format!("server_port={}", s.ports.control)),
                        ("X-SS-Connect-Data", progress.connect_data.to_string()),
                    ];
                    reply(200, "OK", cseq, &h, "")
                } else {
                    reply(404, "Not Found", cseq, &[], "")
                }
            }
            "ANNOUNCE" => {
                if !(progress.setup_audio && progress.setup_video && progress.setup_control) {
                    return reply(455, "Method Not Valid in This State", cseq, &[], "");
                }
                let body = String::from_utf8_lossy(&req.body);
                match rtsp::parse_announce(&body) {
                    Ok(cfg) => {
                        tracing::info!(session = s.id, ?cfg, "stream negotiated");
                        progress.stream = Some(cfg);
                        reply(200, "OK", cseq, &[], "")
                    }
                    Err(e) => {
                        tracing::info!(session = s.id, error = %e, "ANNOUNCE refused");
                        reply(400, "Bad Request", cseq, &[], "")
                    }
                }
            }
            "PLAY" => {
                if progress.stream.is_none() {
                    return reply(455, "Method Not Valid in This State", cseq, &[], "");
                }
                if progress.playing {
                    // Already started: a repeated PLAY queues nothing more.
                    return reply(200, "OK", cseq, &[], "");
                }
                if !s.enter(crate::sessions::SessionState::Streaming) {
                    // Stopping (or never launched): no stream for it.
                    return reply(455, "Method Not Valid in This State", cseq, &[], "");
                }
                s.rtsp.playing = true;
                command = Some(StreamCommand::Start { session_id: s.id, done: None });
                tracing::info!(session = s.id, "PLAY: stream starts");
                reply(200, "OK", cseq, &[], "")
            }
            _ => reply(501, "Not Implemented", cseq, &[], ""),
        }
    };
    let outcome = match to {
        Addressed::Key(id) => sessions.update_by_id(id, negotiate),
        Addressed::Port(id) => sessions.update_by_id(id, |s| {
            // From now on only this port finds it.
            s.rtsp.own_port_used = true;
            negotiate(s)
        }),
        Addressed::Address(ip) => {
            // A session with a port of its own is found there only: on the shared port anyone on
            // its client's address could set it up first.
            let own: Vec<u32> = if host.shared_fallback {
                Vec::new()
            } else {
                sessions.lives().into_iter().filter(|(_, l)| l.rtsp_port().is_some()).map(|(id, _)| id).collect()
            };
            sessions.update_plain_rtsp(ip, |s| !own.contains(&s.id), negotiate)
        }
    };
    (outcome.unwrap_or_else(|| reply(454, "Session Not Found", cseq, &[], "")), command)
}

/// The session whose key opens `msg`, with the message's sequence number, plaintext and key. At
/// most one key can: GCM's tag makes a wrong key fail.
fn open_encrypted(msg: &[u8], sessions: &Sessions) -> Option<(u32, u32, Vec<u8>, [u8; 16])> {
    sessions.rtsp_keys().into_iter().find_map(|(id, key)| {
        rtsp::open(&key, Direction::ClientToHost, msg).ok().map(|(seq, plain)| (id, seq, plain, key))
    })
}

/// What one connection sent: a plain request, or an encrypted message (whole, still sealed).
enum Incoming {
    Plain(Request),
    Sealed(Vec<u8>),
}

/// Read one request (bounded in size and time), answer, close. `own`: the session whose own port
/// this connection came in on.
async fn serve(mut stream: TcpStream, peer: SocketAddr, serving: Arc<Serving>, own: Option<u32>, slot: &ConnSlot) {
    let Serving { sessions, host, streams, .. } = &*serving;
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            if rtsp::is_encrypted(&buf) {
                match rtsp::encrypted_len(&buf) {
                    // Every session's key may be tried on it: only requests of a real size are.
                    Ok(Some(n)) if n > MAX_SEALED => return Err(None),
                    Ok(Some(n)) if buf.len() >= n => return Ok(Incoming::Sealed(buf)),
                    Ok(_) => {}
                    Err(e) => return Err(Some(e)),
                }
            } else {
                match rtsp::parse_request(&buf) {
                    Ok(Some(req)) => return Ok(Incoming::Plain(req)),
                    Ok(None) => {}
                    Err(e) => return Err(Some(e)),
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return Err(None),
                Ok(n) => {
                    slot.set(Stage::Started);
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
    };
    let incoming = tokio::time::timeout(READ_TIMEOUT, read).await;
    slot.set(Stage::Busy);
    let (out, command) = match incoming {
        Ok(Ok(Incoming::Plain(req))) => {
            let to = own.map_or(Addressed::Address(peer.ip().to_canonical()), Addressed::Port);
            answer(&req, to, sessions, host)
        }
        Ok(Ok(Incoming::Sealed(msg))) => {
            // Nothing but the key ties the message to a session; an answer to a stranger would
            // tell it nothing either, so one that opens with no key is just closed.
            let Some((id, seq, plain, key)) = open_encrypted(&msg, sessions) else {
                tracing::debug!(%peer, "encrypted RTSP message that no session's key opens; closing");
                return;
            };
            let (plain_out, command) = match rtsp::parse_request(&plain) {
                Ok(Some(req)) => {
                    tracing::debug!(session = id, method = %req.method, seq, "encrypted RTSP request");
                    answer(&req, Addressed::Key(id), sessions, host)
                }
                _ => (rtsp::response(400, "Bad Request", 0, &[], ""), None),
            };
            match rtsp::seal(&key, seq, Direction::HostToClient, &plain_out) {
                Ok(sealed) => (sealed, command),
                Err(e) => {
                    tracing::warn!(session = id, error = %e, "sealing the RTSP answer failed");
                    return;
                }
            }
        }
        Ok(Err(Some(e))) => {
            tracing::debug!(%peer, error = %e, "malformed RTSP request");
            (rtsp::response(400, "Bad Request", 0, &[], ""), None)
        }
        Ok(Err(None)) => return,
        Err(_) => {
            tracing::debug!(%peer, "RTSP client silent; closing");
            return;
        }
    };
    if let Some(StreamCommand::Start { session_id, .. }) = command {
        // The answer goes out once the session process took it: the client connects right after.
        let (done, started) = tokio::sync::oneshot::channel();
        if streams.send(StreamCommand::Start { session_id, done: Some(done) }).is_err() {
            tracing::error!(%peer, "the stream manager is not taking commands");
        } else if tokio::time::timeout(READ_TIMEOUT, started).await.is_err() {
            tracing::warn!(session = session_id, "the session process did not take PLAY in time");
        }
    }
    let write = async {
        stream.write_all(&out).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(READ_TIMEOUT, write).await;
}

/// What every RTSP port serves with.
struct Serving {
    sessions: Arc<Sessions>,
    host: HostInfo,
    streams: crate::commands::StreamCommands,
    /// Budgets shared by the shared port and the sessions' own ports.
    limit: Arc<ConnLimit>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

/// Accept and serve until `stop`; `own`: the session this port belongs to.
async fn accept_loop(
    listener: TcpListener,
    serving: Arc<Serving>,
    own: Option<u32>,
    beat: Option<crate::watchdog::Heartbeat>,
    stop: CancellationToken,
) {
    while let Some((stream, peer)) = crate::net::accept_next(&listener, &stop, "RTSP", beat.as_ref()).await {
        let Some(slot) = serving.limit.admit(peer.ip()) else {
            continue;
        };
        let (serving, stop) = (serving.clone(), stop.clone());
        serving.tracker.clone().spawn(async move {
            tokio::select! {
                _ = serve(stream, peer, serving.clone(), own, &slot) => {}
                _ = stop.cancelled() => {}
                // A newcomer needed the slot more: this one had not sent a whole request yet.
                _ = slot.evicted().cancelled() => {}
            }
        });
    }
}

/// Ports of their own for sessions whose client speaks plain RTSP: `sessionUrl0` names the port,
/// clients since 2020 connect to it, and it serves only its session, so two plain-RTSP clients on
/// one address are never confused. Each closes once its session is gone.
pub struct SessionPorts {
    range: crate::config::PortRange,
    bind: IpAddr,
    serving: Arc<Serving>,
}

impl SessionPorts {
    /// What serves RTSP, on the shared port ([`run`]) and on the sessions' own ports.
    pub fn new(
        range: crate::config::PortRange,
        bind: IpAddr,
        sessions: Arc<Sessions>,
        host: HostInfo,
        streams: crate::commands::StreamCommands,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> Arc<SessionPorts> {
        let limit = ConnLimit::new(Budgets {
            per_source: MAX_CONNECTIONS_PER_IP,
            per_trusted_proxy: MAX_CONNECTIONS,
            total: MAX_CONNECTIONS,
            trusted: host.trusted.clone(),
            idle_grace: crate::net::limit::IDLE_GRACE,
        });
        let serving = Arc::new(Serving { sessions, host, streams, limit, shutdown, tracker });
        Arc::new(SessionPorts { range, bind, serving })
    }

    /// The session's own RTSP port, opened now if it has none; `None` when ports of their own are
    /// off, the session is gone, or no port of the range is free (the shared port then finds the
    /// session by its client's address, as before). The port closes when the session ends.
    pub fn port_for(&self, session_id: u32) -> Option<u16> {
        let live = self.serving.sessions.live(session_id)?;
        live.rtsp_port_or(|| self.open(session_id, &live))
    }

    fn open(&self, session_id: u32, live: &Arc<crate::sessions::live::Live>) -> Option<u16> {
        // A port another session holds does not bind: the next one is tried.
        let listener = self.range.ports().find_map(|p| {
            let std = std::net::TcpListener::bind(SocketAddr::new(self.bind, p)).ok()?;
            std.set_nonblocking(true).ok()?;
            TcpListener::from_std(std).ok()
        });
        let Some(listener) = listener else {
            tracing::warn!(
                session = session_id,
                "no RTSP port of its own is free: the shared port serves it by address"
            );
            return None;
        };
        let port = listener.local_addr().ok()?.port();
        let serving = &self.serving;
        let stop = serving.shutdown.child_token();
        serving.tracker.spawn(accept_loop(listener, serving.clone(), Some(session_id), None, stop.clone()));
        let live = live.clone();
        serving.tracker.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = live.ended().cancelled() => {}
            }
            stop.cancel();
            live.rtsp_port_closed();
            tracing::debug!(session = session_id, port, "session's own RTSP port closed");
        });
        tracing::info!(session = session_id, port, "plain-RTSP session gets its own RTSP port");
        Some(port)
    }
}

/// Serve RTSP on the shared port until shutdown (the sessions' own ports are opened through
/// `ports`).
pub async fn run(listener: TcpListener, beat: crate::watchdog::Heartbeat, ports: Arc<SessionPorts>) {
    let serving = ports.serving.clone();
    let shutdown = serving.shutdown.clone();
    accept_loop(listener, serving, None, Some(beat), shutdown).await;
}
