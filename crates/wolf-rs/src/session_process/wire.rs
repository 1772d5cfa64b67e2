//! The messages between the control plane and a session process, and their framing on the
//! session's unix socket: a 4-byte big-endian length, then one JSON object. The session process
//! speaks first ([`Welcome`], with [`VERSION`]); the control plane then sends [`Request`]s, each
//! answered by a [`Reply::Done`] with its id, while the process sends its [`Report`] twice a second
//! and at once on every change. A report is the whole state, not an edge, so a control plane that
//! attaches late (after a restart) learns everything from the first one.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

/// The protocol's version: a control plane attaches only to a session process that speaks it.
pub const VERSION: u32 = 1;
/// A frame larger than this is refused (a report with every counter is a few KiB).
pub const MAX_FRAME: usize = 1 << 20;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("the peer closed the socket")]
    Closed,
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes (at most {MAX_FRAME})")]
    TooLarge(usize),
    #[error("frame does not decode: {0}")]
    Decode(#[from] serde_json::Error),
}

/// One frame: length, then the JSON.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, WireError> {
    let body = serde_json::to_vec(msg)?;
    if body.len() > MAX_FRAME {
        return Err(WireError::TooLarge(body.len()));
    }
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// The length a frame's header announces, refused when too large.
pub fn frame_len(header: [u8; 4]) -> Result<usize, WireError> {
    let n = u32::from_be_bytes(header) as usize;
    if n > MAX_FRAME {
        return Err(WireError::TooLarge(n));
    }
    Ok(n)
}

/// Write one frame (blocking).
pub fn write<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<(), WireError> {
    w.write_all(&encode(msg)?)?;
    Ok(w.flush()?)
}

/// Read one frame (blocking).
pub fn read<T: for<'de> Deserialize<'de>>(r: &mut impl Read) -> Result<T, WireError> {
    let mut header = [0u8; 4];
    r.read_exact(&mut header).map_err(closed)?;
    let mut body = vec![0u8; frame_len(header)?];
    r.read_exact(&mut body).map_err(closed)?;
    Ok(serde_json::from_slice(&body)?)
}

fn closed(e: std::io::Error) -> WireError {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => WireError::Closed,
        _ => WireError::Io(e),
    }
}

/// The UDP ports a session process streams from (told to the client in RTSP SETUP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UdpPorts {
    pub video: u16,
    pub audio: u16,
    pub control: u16,
}

/// The first frame on every connection, from the session process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Welcome {
    pub version: u32,
    pub session_id: u32,
    pub pid: i32,
    pub ports: UdpPorts,
    /// What its client negotiated, when it streams (a control plane that attaches after a restart
    /// learns it here).
    pub announced: Option<wolf_protocol::rtsp::StreamConfig>,
}

/// What the client negotiated in RTSP, for the process's control peer and streams.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Negotiated {
    pub rikey: [u8; 16],
    pub rikeyid: i32,
    /// `X-SS-Ping-Payload`: only pings carrying it name the client's addresses.
    pub ping_payload: String,
    /// `X-SS-Connect-Data`: only an ENet connect carrying it gets a peer.
    pub connect_data: u32,
    pub announced: wolf_protocol::rtsp::StreamConfig,
}

/// A session's video stream, decided by the control plane (which knows the app, the encoder and
/// the templates): the process runs it as given.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VideoPlan {
    /// The GStreamer pipeline, rendered.
    pub pipeline: String,
    pub encoder: String,
    pub hevc: bool,
    /// The display to capture in a child process, when the pipeline reads one.
    pub capture: Option<CapturePlan>,
    pub fec_percent: u8,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CapturePlan {
    pub display: crate::runners::display::DisplayHandle,
    pub fps: u32,
    pub socket: std::path::PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AudioPlan {
    pub pipeline: String,
    pub packet_ms: u32,
}

/// Both streams and where input goes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamPlan {
    pub video: VideoPlan,
    pub audio: AudioPlan,
    /// The X display input goes to (`:N`), when the session has one.
    pub input_display: Option<String>,
}

/// What the control plane asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum Command {
    /// PLAY: stream to the client that negotiated this, once it pings.
    Start { negotiated: Box<Negotiated>, plan: Box<StreamPlan> },
    /// The session's sources changed (a lobby joined or left): the streams start again on them,
    /// numbering and encryption carried on. Done once the old ones are joined.
    Switch { plan: Box<StreamPlan> },
    /// The session ends: the client is told why (`termination`), everything stops, the process
    /// exits after answering.
    End { termination: u32 },
    /// Rumble the client's pad `number` (force feedback for it from outside the session process).
    Rumble { number: u8, low: u16, high: u16 },
    /// The next video frame is a keyframe.
    RequestIdr,
    /// Fault injection: the first thread of `kind` stalls for `seconds`.
    Stall { kind: String, seconds: u64 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    pub command: Command,
}

/// The whole state of a session process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Its client's control peer is connected.
    pub connected: bool,
    /// Times its client's control peer left (the control plane pauses the session on each).
    pub disconnects: u64,
    /// Its streams run (PLAY arrived and no disconnect since).
    pub streaming: bool,
    /// Why a stream failed: the session must end.
    pub failed: Option<String>,
    /// When its client was last heard from (ms since the Unix epoch).
    pub activity_unix_ms: Option<u64>,
    /// Device nodes of its virtual pads (for an app in a container).
    pub pads: Vec<(std::path::PathBuf, u32, u32)>,
    /// Its threads that have not beaten for the watchdog's warn threshold.
    pub stalled: Vec<String>,
    /// The thread silent past the watchdog's exit threshold: the process exits after this report.
    pub hung: Option<String>,
    /// Its stream counters and frame-send histogram, cumulative.
    pub figures: crate::metrics::StreamFigures,
    /// CPU time it used (user + system, its display captures included) and its resident memory.
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "is", rename_all = "snake_case")]
pub enum Reply {
    Done { id: u64, error: Option<String> },
    Report(Box<Report>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_oversized_ones_are_refused() {
        let r = Request { id: 7, command: Command::Stall { kind: "pipeline".into(), seconds: 3 } };
        let bytes = encode(&r).unwrap();
        let back: Request = read(&mut bytes.as_slice()).unwrap();
        assert_eq!(back.id, 7);
        assert!(matches!(back.command, Command::Stall { seconds: 3, .. }));
        let huge = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert!(matches!(read::<Request>(&mut huge.as_slice()), Err(WireError::TooLarge(_))));
        assert!(matches!(read::<Request>(&mut &bytes[..3]), Err(WireError::Closed)));
        let mut bad = 4u32.to_be_bytes().to_vec();
        bad.extend_from_slice(b"nope");
        assert!(matches!(read::<Request>(&mut bad.as_slice()), Err(WireError::Decode(_))));
    }
}
