//! What one session has while it lives, in one value the session table makes with the session
//! and lets go of at its end: the link to its session process (which streams it), when its client
//! was last heard from, its own RTSP port, and the token that everything serving only this session
//! waits on. Its end fires the token once, in one place (`Sessions::begin_end`, or the session
//! leaving the table), so nothing polls for it.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use crate::session_process::link::Link;

#[derive(Default)]
pub struct Live {
    ended: CancellationToken,
    link: Mutex<Option<Arc<Link>>>,
    activity: Mutex<Option<SystemTime>>,
    rtsp_port: Mutex<Option<u16>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Live {
    /// Cancelled when the session ends: its own RTSP port closes.
    pub fn ended(&self) -> &CancellationToken {
        &self.ended
    }

    /// The session ends: everything waiting on it lets go. A second call changes nothing. (Its
    /// session process is told by the host, which also waits for it to stop.)
    pub fn end(&self) {
        self.ended.cancel();
    }

    /// Its session process, once attached.
    pub fn link(&self) -> Option<Arc<Link>> {
        lock(&self.link).clone()
    }

    /// Attach its session process; `false` (and nothing changed) once the session has ended.
    pub fn set_link(&self, link: Arc<Link>) -> bool {
        if self.ended.is_cancelled() {
            return false;
        }
        *lock(&self.link) = Some(link);
        true
    }

    pub fn touch(&self) {
        self.set_activity(SystemTime::now());
    }

    /// Its client was heard from at `at` (a later time than known only).
    pub fn set_activity(&self, at: SystemTime) {
        let mut a = lock(&self.activity);
        if a.is_none_or(|was| at > was) {
            *a = Some(at);
        }
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
            .field("process", &self.link().map(|l| l.record.pid))
            .field("rtsp_port", &self.rtsp_port())
            .finish_non_exhaustive()
    }
}
