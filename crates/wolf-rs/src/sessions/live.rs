//! What one session has while it lives, in one value the session table makes with the session
//! and lets go of at its end: its running streams, where they go (learned from pings), its pending
//! keyframe request, its control peer, its input injector, when its client was last heard from,
//! its own RTSP port, what its streams carry into a restart, and the token that everything serving
//! only this session waits on. Its end releases them once, in one place and in a fixed order
//! (`Sessions::begin_end`, or the session leaving the table), so nothing polls for it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
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

/// A session's running streams: the token that stops them and their sender threads, joined by
/// whoever takes them (off the async workers). A restart makes a new one, so a late thread of the
/// old streams never lands in the new.
#[derive(Default)]
pub struct StreamRun {
    cancel: CancellationToken,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl StreamRun {
    /// Cancelled when the streams stop or the session ends.
    pub fn cancel(&self) -> &CancellationToken {
        &self.cancel
    }

    /// A sender thread started; a stream that stopped meanwhile still has it joined.
    pub fn add(&self, thread: JoinHandle<()>) {
        lock(&self.threads).push(thread);
    }

    /// Cancel the streams; the threads to join.
    pub fn stop(&self) -> Vec<JoinHandle<()>> {
        self.cancel.cancel();
        std::mem::take(&mut *lock(&self.threads))
    }
}

#[derive(Default)]
pub struct Live {
    ended: CancellationToken,
    streams: Mutex<Option<Arc<StreamRun>>>,
    control_peer: Mutex<Option<usize>>,
    input: Mutex<crate::input::Slot>,
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

    /// The session ends, in this order: everything waiting on it lets go (its RTSP port closes),
    /// its streams are cancelled (their threads are joined by the stream manager), its injector
    /// releases what is held, and what it knew of its client is forgotten. A second call changes
    /// nothing.
    pub fn end(&self) {
        self.ended.cancel();
        if let Some(run) = lock(&self.streams).as_ref() {
            run.cancel().cancel();
        }
        self.close_input();
        self.forget_client();
    }

    /// Streams start: a new run under `parent`, or `None` when they run already or the session
    /// has ended.
    pub fn start_streams(&self, parent: &CancellationToken) -> Option<Arc<StreamRun>> {
        let mut run = lock(&self.streams);
        if run.is_some() || self.ended.is_cancelled() {
            return None;
        }
        let new = Arc::new(StreamRun { cancel: parent.child_token(), ..StreamRun::default() });
        *run = Some(new.clone());
        Some(new)
    }

    /// The running streams, taken to be stopped.
    pub fn take_streams(&self) -> Option<Arc<StreamRun>> {
        lock(&self.streams).take()
    }

    /// Its client's control peer (ENet's peer index), when connected.
    pub fn control_peer(&self) -> Option<usize> {
        *lock(&self.control_peer)
    }

    /// Its client's control peer connected (`Some`) or left; `false` when one is connected already
    /// (the first keeps it) or the session has ended.
    pub fn set_control_peer(&self, peer: Option<usize>) -> bool {
        let mut p = lock(&self.control_peer);
        if peer.is_some() && (p.is_some() || self.ended.is_cancelled()) {
            return false;
        }
        *p = peer;
        true
    }

    /// Its input injector, made by its first event; `None` once the session has ended.
    pub fn input(&self) -> Option<std::sync::MutexGuard<'_, crate::input::Slot>> {
        let slot = lock(&self.input);
        (!self.ended.is_cancelled()).then_some(slot)
    }

    /// Its client left or its sources changed: the injector releases what is held and ends (the
    /// next event makes a new one).
    pub fn close_input(&self) {
        lock(&self.input).close();
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

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("ended", &self.ended.is_cancelled())
            .field("video_addr", &self.addr(Channel::Video))
            .field("audio_addr", &self.addr(Channel::Audio))
            .field("control_peer", &self.control_peer())
            .field("rtsp_port", &self.rtsp_port())
            .finish_non_exhaustive()
    }
}
