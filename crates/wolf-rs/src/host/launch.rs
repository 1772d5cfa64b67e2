//! Launch and resume: what a client asks for, parsed once whichever front-end it came through, and
//! the session that starts from it (its display, sink and app started, saved before it is answered).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::SystemTime;

use super::Host;
use crate::runners::{Part, RunnerHandle};
use crate::sessions::{Mode, RtspProgress, Session, SessionPorts, SessionState};
use crate::state::clients::PairedClient;

/// `surroundAudioInfo` when the client sends none: stereo.
pub const STEREO: u32 = (0x3 << 16) | 2;

/// What a client's stream is to be: its mode, its keys, its audio channels and how it speaks RTSP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamParams {
    pub mode: Mode,
    /// AES key for the control, video, audio and input streams, and its id.
    pub rikey: [u8; 16],
    pub rikeyid: i32,
    /// `surroundAudioInfo`: the channel count, with the channel mask above it.
    pub surround: u32,
    /// The client encrypts RTSP (`corever` >= 1).
    pub encrypted: bool,
}

/// Why a launch's request is malformed; the text is what the client is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRequest {
    AppId,
    Mode,
    RikeyMissing,
    Rikey,
    RikeyIdMissing,
    RikeyId,
}

impl BadRequest {
    pub fn message(self) -> &'static str {
        match self {
            BadRequest::AppId => "Missing or malformed appid",
            BadRequest::Mode => "Missing or malformed mode; expected WIDTHxHEIGHTxFPS",
            BadRequest::RikeyMissing => "Missing rikey",
            BadRequest::Rikey => "rikey must be 32 hex characters",
            BadRequest::RikeyIdMissing => "Missing rikeyid",
            BadRequest::RikeyId => "rikeyid must be a 32-bit integer",
        }
    }
}

impl std::fmt::Display for BadRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

/// The rikey (32 hex digits) and its id (a signed or unsigned 32-bit decimal: clients send either).
pub fn parse_rikey(key: Option<&str>, id: Option<&str>) -> Result<([u8; 16], i32), BadRequest> {
    let key = key.ok_or(BadRequest::RikeyMissing)?;
    let key: [u8; 16] = hex::decode(key).ok().and_then(|k| k.try_into().ok()).ok_or(BadRequest::Rikey)?;
    let id = id.ok_or(BadRequest::RikeyIdMissing)?;
    let id = id.parse::<i32>().or_else(|_| id.parse::<u32>().map(|u| u as i32)).map_err(|_| BadRequest::RikeyId)?;
    Ok((key, id))
}

/// `surroundAudioInfo` for a channel count (the API gives a count; Moonlight the whole value).
pub fn surround_for_channels(channels: u32) -> u32 {
    match channels {
        6 => (0x3F << 16) | 6,
        8 => (0x63F << 16) | 8,
        _ => STEREO,
    }
}

impl StreamParams {
    /// From a `/launch` or `/resume` query (`mode`, `rikey`, `rikeyid`, `surroundAudioInfo`,
    /// `corever`). Moonlight sends `corever=1` when it can encrypt RTSP, and then encrypts every RTSP
    /// message with the rikey if `sessionUrl0` says `rtspenc://`.
    pub fn from_query(q: &HashMap<String, String>) -> Result<StreamParams, BadRequest> {
        let mode = q.get("mode").and_then(|m| Mode::parse(m)).ok_or(BadRequest::Mode)?;
        let (rikey, rikeyid) = parse_rikey(q.get("rikey").map(String::as_str), q.get("rikeyid").map(String::as_str))?;
        let surround = q.get("surroundAudioInfo").and_then(|v| v.parse::<u32>().ok()).unwrap_or(STEREO);
        let encrypted = q.get("corever").and_then(|v| v.parse::<u32>().ok()).is_some_and(|v| v >= 1);
        Ok(StreamParams { mode, rikey, rikeyid, surround, encrypted })
    }
}

/// What a launch asks for, from `/launch` or the API's `sessions/add`.
#[derive(Debug, Clone)]
pub struct LaunchRequest {
    pub client: PairedClient,
    pub client_ip: IpAddr,
    /// The `uniqueid` it launched with (empty through the API unless given).
    pub client_unique_id: String,
    pub app_id: u32,
    pub params: StreamParams,
}

/// Why a launch was refused; counted as `wolf_session_creation_errors_total{reason}`.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("the host is shutting down")]
    Draining,
    #[error("no app with id {0}")]
    UnknownApp(u32),
    #[error("app {app_id} is already running for this client")]
    AlreadyRunning { app_id: u32 },
    /// The session could not be saved.
    #[error("the session could not be saved: {0}")]
    Store(#[source] crate::sessions::store::WriteError),
    /// A part of the session did not start.
    #[error("the session's {} did not start: {source}", part.as_str())]
    Runner {
        part: Part,
        #[source]
        source: crate::runners::RunnerError,
    },
    /// The session ended while its app started.
    #[error("the session ended while its app started")]
    EndedWhileStarting,
    /// Its session process did not start.
    #[error("the session's stream did not start: {0}")]
    SessionProcess(#[source] crate::session_process::link::LinkError),
    /// `[stream] encryption = "required"` and the client speaks plain RTSP.
    #[error(
        "this host requires encrypted streaming and this client speaks plain RTSP: update Moonlight (every version since 2020 encrypts)"
    )]
    PlainRtsp,
}

impl From<crate::sessions::AddError> for LaunchError {
    fn from(e: crate::sessions::AddError) -> LaunchError {
        match e {
            crate::sessions::AddError::AlreadyRunning { app_id } => LaunchError::AlreadyRunning { app_id },
            crate::sessions::AddError::Store(e) => LaunchError::Store(e),
        }
    }
}

impl LaunchError {
    /// As counted in `wolf_session_creation_errors_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            LaunchError::Draining => "draining",
            LaunchError::UnknownApp(_) => "unknown_app",
            LaunchError::AlreadyRunning { .. } => "already_running",
            LaunchError::Store(_) => "store",
            LaunchError::Runner { part, .. } => part.as_str(),
            LaunchError::EndedWhileStarting => Part::Runner.as_str(),
            LaunchError::SessionProcess(_) => "session_process",
            LaunchError::PlainRtsp => "plain_rtsp",
        }
    }
}

impl Host {
    /// Whether the client's RTSP is encrypted under `[stream] encryption`, from whether it can
    /// encrypt; refused when it cannot and the config requires it.
    pub fn rtsp_encrypted(&self, client_can: bool) -> Result<bool, LaunchError> {
        use crate::config::Encryption;
        match self.stream.encryption {
            Encryption::Required if !client_can => Err(LaunchError::PlainRtsp),
            Encryption::Off => Ok(false),
            _ => Ok(client_can),
        }
    }

    /// A new session for the client, its app started and saved; counted, logged and announced.
    pub async fn launch(&self, r: LaunchRequest) -> Result<Session, LaunchError> {
        let launched = self.launch_inner(&r).await;
        let client_id = crate::events::wolf_client_id(&r.client.cert_pem);
        // Configured for a lobby: in it before the client's PLAY plans its streams.
        if let Ok(s) = &launched
            && let Some(lobby) = self.configured.take(&r.client_unique_id)
        {
            match self.lobbies.join_configured(&lobby, s.id).await {
                Ok(()) => tracing::info!(session = s.id, %lobby, "configured launch joined its lobby"),
                Err(e) => tracing::warn!(session = s.id, %lobby, error = %e, "configured lobby not joined"),
            }
        }
        match &launched {
            Ok(s) => {
                self.metrics.sessions_created.inc();
                tracing::info!(session = s.id, app = s.app_id, client = %r.client.name, mode = ?s.mode, "session launched");
                self.events
                    .publish(crate::events::Event::StreamSession(crate::events::StreamSession::of(s, client_id)));
            }
            Err(e) => {
                self.metrics.launch_failed(e.reason());
                match e {
                    LaunchError::Store(e) => {
                        tracing::error!(error = %e, "launch refused: the session could not be saved")
                    }
                    LaunchError::Runner { part, source } => {
                        tracing::error!(error = %source, part = part.as_str(), app = r.app_id, "launch failed: the session did not start")
                    }
                    LaunchError::PlainRtsp => {
                        tracing::warn!(client = %r.client.name, ip = %r.client_ip, "launch refused: plain RTSP, and [stream] encryption is required")
                    }
                    _ => {}
                }
                if !matches!(e, LaunchError::Draining | LaunchError::UnknownApp(_)) {
                    self.events.publish(crate::events::Event::SessionFailed {
                        client_id,
                        app_id: r.app_id.to_string(),
                        reason: e.reason().to_owned(),
                    });
                }
            }
        }
        launched
    }

    async fn launch_inner(&self, r: &LaunchRequest) -> Result<Session, LaunchError> {
        if self.shutdown.is_cancelled() {
            return Err(LaunchError::Draining);
        }
        let app = self.apps.get(r.app_id).ok_or(LaunchError::UnknownApp(r.app_id))?;
        let mut p = r.params;
        p.encrypted = self.rtsp_encrypted(p.encrypted)?;
        let session = Session {
            id: 0,
            client_fingerprint: r.client.fingerprint.clone(),
            client_ip: r.client_ip,
            app_id: app.id,
            mode: p.mode,
            rikey: p.rikey,
            rikeyid: p.rikeyid,
            surround_audio_info: p.surround,
            created: SystemTime::now(),
            updated: SystemTime::now(),
            state: SessionState::Launching,
            runner: RunnerHandle::None,
            display: None,
            sink: None,
            // The stream ports are the session process's, known once it runs.
            ports: SessionPorts { rtsp: self.ports.rtsp, ..SessionPorts::default() },
            rtsp: RtspProgress { encrypted: p.encrypted, ..RtspProgress::default() },
            lobby: None,
            process: None,
            client_unique_id: r.client_unique_id.clone(),
        };
        let s = self.sessions.launch(session).await?;
        let s = self.start_app(s, &app).await?;
        match self.ensure_process(s.id).await {
            Ok(s) => Ok(s),
            Err(e) => {
                // No stream without it: the session's app goes too.
                self.sessions.remove_by_id(s.id);
                if let Err(stop) = self.planes.runners.stop_session(s.id, &s.parts()).await {
                    tracing::error!(error = %stop, "stopping the app of a session whose stream did not start");
                }
                Err(LaunchError::SessionProcess(e))
            }
        }
    }

    /// Start the session's display, sink and app and save their handles; on failure the session is
    /// taken back out.
    async fn start_app(&self, s: Session, app: &crate::config::App) -> Result<Session, LaunchError> {
        let spec = crate::runners::LaunchSpec {
            session_id: s.id,
            app,
            mode: s.mode,
            client: &s.client_fingerprint,
            channels: s.channels(),
        };
        let parts = match self.planes.runners.start_session(&spec).await {
            Ok(p) => p,
            Err(f) => {
                self.sessions.remove_by_id(s.id);
                return Err(LaunchError::Runner { part: f.part, source: f.error });
            }
        };
        let saved = self
            .sessions
            .update_by_id_saved(s.id, |s| {
                s.runner = parts.app.clone();
                s.display = parts.display.clone();
                s.sink = parts.sink.clone();
                s.enter(SessionState::Paused);
                s.clone()
            })
            .await;
        match saved {
            Ok(Some(s)) => Ok(s),
            Ok(None) => {
                if let Err(stop) = self.planes.runners.stop_session(s.id, &parts).await {
                    tracing::error!(error = %stop, "stopping the app of a session that ended while it started");
                }
                Err(LaunchError::EndedWhileStarting)
            }
            Err(e) => {
                // Not on disk: a crash now would leak the app, so stop it before refusing.
                if let Err(stop) = self.planes.runners.stop_session(s.id, &parts).await {
                    tracing::error!(error = %stop, "stopping an app whose session could not be saved");
                }
                self.sessions.remove_by_id(s.id);
                Err(LaunchError::Store(e))
            }
        }
    }

    /// New keys for the client's running session (`/resume`); a display that follows the client's
    /// mode is set to the new one while nothing captures it. `None`: the client has no session.
    pub async fn resume(&self, client: &PairedClient, p: ResumeParams) -> Option<Session> {
        let mut display = None;
        if let (Some(s), Some(mode)) = (self.sessions.for_client(&client.fingerprint), p.mode)
            && let Some(d) = &s.display
            && mode != s.mode
            && s.state == SessionState::Paused
            && self.apps.get(s.app_id).is_some_and(|a| a.display.resize)
        {
            match self.planes.runners.resize_display(d, mode).await {
                Ok(resized) => display = Some(resized),
                Err(e) => {
                    tracing::warn!(session = s.id, error = %e, "the display keeps its size; the stream is scaled")
                }
            }
        }
        let s = self.sessions.resume(&client.fingerprint, p.rikey, p.rikeyid, p.encrypted, p.mode, display)?;
        // Its session process streams on from before; one that is gone (a session adopted from an
        // older host) is started again.
        let s = match self.ensure_process(s.id).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(session = s.id, error = %e, "the session's stream cannot start");
                return None;
            }
        };
        tracing::info!(session = s.id, client = %client.name, mode = %s.mode, "session resumed");
        Some(s)
    }

    /// The session's own RTSP port when its client speaks plain RTSP (opened now if it has none).
    pub fn own_rtsp_port(&self, session_id: u32) -> Option<u16> {
        self.planes.rtsp_ports.port_for(session_id)
    }
}

/// What `/resume` asks for: new keys, and maybe a new mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeParams {
    pub mode: Option<Mode>,
    pub rikey: [u8; 16],
    pub rikeyid: i32,
    pub encrypted: bool,
}

impl ResumeParams {
    pub fn from_query(q: &HashMap<String, String>) -> Result<ResumeParams, BadRequest> {
        let (rikey, rikeyid) = parse_rikey(q.get("rikey").map(String::as_str), q.get("rikeyid").map(String::as_str))?;
        let encrypted = q.get("corever").and_then(|v| v.parse::<u32>().ok()).is_some_and(|v| v >= 1);
        Ok(ResumeParams { mode: q.get("mode").and_then(|m| Mode::parse(m)), rikey, rikeyid, encrypted })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_launch_query_is_parsed_once_with_each_fault_named() {
        let q = |s: &str| -> HashMap<String, String> { form_urlencoded::parse(s.as_bytes()).into_owned().collect() };
        let p = StreamParams::from_query(&q(
            "mode=1280x720x60&rikey=000102030405060708090a0b0c0d0e0f&rikeyid=-1&corever=1&surroundAudioInfo=393222",
        ))
        .unwrap();
        assert_eq!((p.mode.width, p.rikey[15], p.rikeyid, p.encrypted, p.surround), (1280, 15, -1, true, 393222));
        let p = StreamParams::from_query(&q("mode=1x1x1&rikey=000102030405060708090a0b0c0d0e0f&rikeyid=4294967295"))
            .unwrap();
        assert_eq!((p.rikeyid, p.encrypted, p.surround), (-1, false, STEREO));
        for (query, fault) in [
            ("rikey=00&rikeyid=1", BadRequest::Mode),
            ("mode=1x1x1&rikeyid=1", BadRequest::RikeyMissing),
            ("mode=1x1x1&rikey=00&rikeyid=1", BadRequest::Rikey),
            ("mode=1x1x1&rikey=000102030405060708090a0b0c0d0e0f", BadRequest::RikeyIdMissing),
            ("mode=1x1x1&rikey=000102030405060708090a0b0c0d0e0f&rikeyid=x", BadRequest::RikeyId),
        ] {
            assert_eq!(StreamParams::from_query(&q(query)), Err(fault), "{query}");
        }
        assert_eq!(surround_for_channels(6) & 0xffff, 6);
        assert_eq!(surround_for_channels(3), STEREO);
    }
}
