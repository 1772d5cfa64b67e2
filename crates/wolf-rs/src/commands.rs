//! The commands the planes send each other (RTSP and HTTPS to the streams, streams and sessions to
//! the control thread) and the keyframe requests control hands to video: a leaf, so the planes that
//! exchange them need not import each other.

use std::sync::Mutex;

/// What the rest of the host asks of the control thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlCommand {
    /// Tell the session's client that the stream ended, then disconnect it.
    Terminate { session_id: u32, reason: u32 },
}

/// What RTSP and the HTTPS handlers ask of the streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamCommand {
    /// PLAY arrived: start streaming this session.
    Start { session_id: u32 },
    /// The session ended (/cancel, app exit): stop and clean up.
    Stop { session_id: u32 },
}

/// Keyframes asked for by clients (IDR requests on the control channel), by session id; the video
/// sender thread takes them each turn.
#[derive(Debug, Default)]
pub struct KeyframeRequests {
    pending: Mutex<std::collections::HashSet<u32>>,
}

impl KeyframeRequests {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<u32>> {
        match self.pending.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub fn request(&self, session_id: u32) {
        self.lock().insert(session_id);
    }

    pub fn take(&self, session_id: u32) -> bool {
        self.lock().remove(&session_id)
    }
}
