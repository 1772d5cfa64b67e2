//! Streaming: learning each client's UDP address from its pings, and one sender thread per
//! session that turns encoded frames into RTP video datagrams.

pub mod video;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

/// What RTSP and the HTTPS handlers ask of the streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamCommand {
    /// PLAY arrived: start streaming this session.
    Start { session_id: u32 },
    /// The session ended (/cancel, app exit): stop and clean up.
    Stop { session_id: u32 },
}

/// Client addresses learned from pings, by session id.
#[derive(Debug, Default)]
pub struct PingTable {
    video: Mutex<HashMap<u32, SocketAddr>>,
}

impl PingTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, SocketAddr>> {
        match self.video.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub fn set_video(&self, session_id: u32, addr: SocketAddr) {
        self.lock().insert(session_id, addr);
    }

    pub fn video(&self, session_id: u32) -> Option<SocketAddr> {
        self.lock().get(&session_id).copied()
    }

    pub fn forget(&self, session_id: u32) {
        self.lock().remove(&session_id);
    }
}

/// A ping's payload: the 16-byte `X-SS-Ping-Payload` of a 20-byte SS_PING, or none for `PING`.
pub fn ping_payload(datagram: &[u8]) -> Option<Option<&[u8]>> {
    match datagram.len() {
        4 if datagram == b"PING" => Some(None),
        20 => Some(Some(&datagram[..16])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pings() {
        assert_eq!(super::ping_payload(b"PING"), Some(None));
        let mut p = b"ABCDEFGHIJKLMNOP".to_vec();
        p.extend_from_slice(&7u32.to_be_bytes());
        assert_eq!(super::ping_payload(&p), Some(Some(&b"ABCDEFGHIJKLMNOP"[..])));
        assert_eq!(super::ping_payload(b"nope"), None);
        assert_eq!(super::ping_payload(&[0u8; 64]), None);
    }
}
