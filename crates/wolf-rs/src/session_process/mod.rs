//! Session processes: one per session, streaming it (video, audio, its control peer, input and
//! rumble) on UDP ports of its own, so that a restart or crash of the control plane costs its
//! viewer nothing, and a crash of one session's pipeline costs only that session.
//! - `wire`    the versioned messages on each session's unix socket, and their framing
//! - `process` the session process itself (`wolf-rs session-process`): no async runtime
//! - `stream`  its video and audio sender threads, client addresses from pings
//! - `control` its ENet control channel: connect data, control messages, input, rumble, termination
//! - `link`    the control plane's side: start, attach (also after a restart), command, hear
//!
//! What its streams are to be is decided by the control plane (`host::plan`).

pub mod control;
pub mod link;
pub mod process;
pub mod stream;
pub mod wire;

use serde::{Deserialize, Serialize};

/// A session process as the session file records it: adopted by the next control plane while
/// the pid has this start time and answers on the socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessRecord {
    pub pid: i32,
    /// Clock ticks after boot: tells it from a later process on the pid.
    pub start_time: u64,
    pub socket: std::path::PathBuf,
}

#[cfg(test)]
pub(crate) mod tests {
    /// What a typical client announces.
    pub(crate) fn announced() -> wolf_protocol::rtsp::StreamConfig {
        wolf_protocol::rtsp::StreamConfig {
            width: 1280,
            height: 720,
            fps: 60,
            packet_size: 1024,
            video_format: 0,
            bitrate_kbps: 10_000,
            min_fec_packets: 2,
            slices_per_frame: 1,
            encoder_csc_mode: 0,
            dynamic_range: 0,
            audio_channels: 2,
            audio_channel_mask: 3,
            audio_packet_ms: 5,
            feature_flags: 0,
            encryption: 1,
        }
    }
}
