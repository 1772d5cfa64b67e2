//! The commands the planes send each other (RTSP and lobbies to the streams, threads to the host): a leaf, so the planes that
//! exchange them need not import each other.

/// Why a session ended: each maps to the termination code its client is sent, here and nowhere
/// else, and is counted in `wolf_sessions_ended_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// `/cancel`, `wolf-rs sessions stop`, or the client's quit.
    Cancelled,
    /// The session's app exited (or its container stopped).
    AppExited,
    /// No client activity for `sessions.idle_timeout_s`.
    Idle,
    /// A video or audio pipeline failed or would not start.
    StreamFailed,
    /// The host is shutting down with `stop_apps_on_shutdown`.
    Shutdown,
    /// The session's virtual display (X server) died.
    DisplayLost,
    /// The session's audio sink (or the audio server) went away.
    AudioLost,
    /// The session's session process died (a crash, a kill).
    ProcessLost,
    /// The session's session process stopped reporting and was killed.
    ProcessHung,
}

impl EndReason {
    pub const ALL: [EndReason; 9] = [
        EndReason::Cancelled,
        EndReason::AppExited,
        EndReason::Idle,
        EndReason::StreamFailed,
        EndReason::Shutdown,
        EndReason::DisplayLost,
        EndReason::AudioLost,
        EndReason::ProcessLost,
        EndReason::ProcessHung,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Cancelled => "cancelled",
            EndReason::AppExited => "app_exited",
            EndReason::Idle => "idle",
            EndReason::StreamFailed => "stream_failed",
            EndReason::Shutdown => "shutdown",
            EndReason::DisplayLost => "display_lost",
            EndReason::AudioLost => "audio_lost",
            EndReason::ProcessLost => "process_lost",
            EndReason::ProcessHung => "process_hung",
        }
    }

    /// What the client is told (moonlight-common-c shows the encoder error as such; the rest as a
    /// graceful end of the stream).
    pub fn termination(self) -> u32 {
        match self {
            // The stream cannot go on: not a graceful end.
            EndReason::StreamFailed
            | EndReason::DisplayLost
            | EndReason::AudioLost
            | EndReason::ProcessLost
            | EndReason::ProcessHung => wolf_protocol::control::TERMINATION_ENCODER_ERROR,
            EndReason::Cancelled | EndReason::AppExited | EndReason::Idle | EndReason::Shutdown => {
                wolf_protocol::control::TERMINATION_GRACEFUL
            }
        }
    }
}

/// Where stream commands go. Unbounded so a stop can never be lost: starts are bounded by the
/// sessions (PLAY queues one only for a session not already playing), stops by the ends.
pub type StreamCommands = tokio::sync::mpsc::UnboundedSender<StreamCommand>;

/// What RTSP and the HTTPS handlers ask of the streams.
#[derive(Debug)]
pub enum StreamCommand {
    /// PLAY arrived: its session process starts streaming this session; `done` is told once it
    /// took the command (so the PLAY answer goes out after, and the client's connect finds it ready).
    Start { session_id: u32, done: Option<tokio::sync::oneshot::Sender<()>> },
    /// The session's sources changed (it joined or left a lobby): its running streams stop and
    /// start again to the same client, numbering and encryption carried on; `done` is told once
    /// the old streams are joined (so the display they captured may go).
    Restart { session_id: u32, done: Option<tokio::sync::oneshot::Sender<()>> },
}
