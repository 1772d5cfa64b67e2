//! What one session has while it lives, in one value the session table makes with the session
//! and lets go of at its end: where its client's streams go (learned from pings), its pending
//! keyframe request, when its client was last heard from, its own RTSP port, what its streams
//! carry into a restart, and the token that
//! everything serving only this session waits on. Its end fires the token once, in one place
//! (`Sessions::begin_end`, or the session leaving the table), so nothing polls for it.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

/// A stream port the client pings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Video,
    Audio,
}

/// What a session's streams hand to the next ones when they restart (a lobby joined or left):
/// frame and sequence numbers and the encryption counters go on, so the client sees one stream and
/// no nonce is used twice under its key. Forgotten when the session's streams stop.
#[derive(Default)]
pub struct Carry {
    pub video: Option<(wolf_protocol::video::Packetizer, Option<wolf_protocol::video::VideoSealer>)>,
    pub audio: Option<wolf_protocol::audio::AudioPacketizer>,
}

#[derive(Default)]
pub struct Live {
    ended: CancellationToken,
    video_addr: Mutex<Option<SocketAddr>>,
    audio_addr: Mutex<Option<SocketAddr>>,
    keyframe: AtomicBool,
    activity: Mutex<Option<SystemTime>>,
    rtsp_port: Mutex<Option<u16>>,
    carry: Mutex<Carry>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Live {
    /// Cancelled when the session ends: its own RTSP port closes, its stream waits give up.
    pub fn ended(&self) -> &CancellationToken {
        &self.ended
    }

    /// The session ends: everything waiting on it lets go, and what it knew of its client is
    /// forgotten. A second call changes nothing.
    pub fn end(&self) {
        self.ended.cancel();
        self.forget_client();
    }

    fn addr_slot(&self, channel: Channel) -> &Mutex<Option<SocketAddr>> {
        match channel {
            Channel::Video => &self.video_addr,
            Channel::Audio => &self.audio_addr,
        }
    }

    /// Where the client pings `channel` from; `true` when that is new.
    pub fn set_addr(&self, channel: Channel, addr: SocketAddr) -> bool {
        lock(self.addr_slot(channel)).replace(addr) != Some(addr)
    }

    pub fn addr(&self, channel: Channel) -> Option<SocketAddr> {
        *lock(self.addr_slot(channel))
    }

    /// The client left (its streams stopped): its addresses and keyframe request are forgotten;
    /// it pings again when it comes back.
    pub fn forget_client(&self) {
        *lock(&self.video_addr) = None;
        *lock(&self.audio_addr) = None;
        self.keyframe.store(false, Ordering::Relaxed);
        *lock(&self.carry) = Carry::default();
    }

    /// What the session's last streams left for the next ones.
    pub fn carry(&self) -> std::sync::MutexGuard<'_, Carry> {
        lock(&self.carry)
    }

    /// The client asked for a keyframe (IDR request on the control channel).
    pub fn request_keyframe(&self) {
        self.keyframe.store(true, Ordering::Relaxed);
    }

    /// Taken by the video sender each turn.
    pub fn take_keyframe(&self) -> bool {
        self.keyframe.swap(false, Ordering::Relaxed)
    }

    pub fn touch(&self) {
        *lock(&self.activity) = Some(SystemTime::now());
    }

    pub fn last_activity(&self) -> Option<SystemTime> {
        *lock(&self.activity)
    }

    /// The session's own RTSP port, when it has one open.
    pub fn rtsp_port(&self) -> Option<u16> {
        *lock(&self.rtsp_port)
    }

    /// Open the session's own RTSP port with `open` unless it has one (or has ended); its port.
    pub fn rtsp_port_or(&self, open: impl FnOnce() -> Option<u16>) -> Option<u16> {
        let mut port = lock(&self.rtsp_port);
        if port.is_none() && !self.ended.is_cancelled() {
            *port = open();
        }
        *port
    }

    /// Its own RTSP port closed.
    pub fn rtsp_port_closed(&self) {
        *lock(&self.rtsp_port) = None;
    }
}
